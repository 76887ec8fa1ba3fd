"""Actor and critics of the PPO learner.

Shapes: ``obs`` is ``(..., n, obs_dim)``, one row per hospital (its own normalised state plus the
network-wide context the environment broadcasts); leading dimensions are batch dimensions, e.g.
``(num_envs,)`` during rollouts or ``(minibatch,)`` during updates.

- :class:`SharedActor`: ONE network applied to every hospital's row (parameter sharing), giving
  the mean of a Gaussian over that hospital's action, with a learned state-independent log-std.
  It never mixes hospitals, so a policy trained on 20 hospitals runs on 500.
- :class:`CentralCritic`: the value of the whole network state (CTDE): a per-hospital encoder,
  mean and max pooling over hospitals (permutation-invariant), then an MLP. With
  ``per_agent=True`` it gives one value per hospital, from that hospital's encoding and the
  pooled context (still centralised: every value sees the whole network).
- :class:`LocalCritic`: each hospital estimates the team value from its own row; the estimates
  are averaged (independent learners), or, with ``per_agent=True``, kept per hospital.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "SharedActor",
    "CentralCritic",
    "LocalCritic",
    "ActorCritic",
    "ValueNormalizer",
    "mlp",
    "ACTIVATIONS",
    "gaussian_log_prob",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(
    in_dim: int,
    hidden: tuple[int, ...],
    out_dim: int,
    *,
    out_gain: float,
    activation: str = "relu",
) -> nn.Sequential:
    """``Linear -> activation`` for each hidden width, then a linear output layer.

    Orthogonal initialisation (gain sqrt(2) for hidden layers, ``out_gain`` for the output),
    zero biases, as is usual for PPO. ``activation`` is ``"relu"`` or ``"tanh"``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [_init(nn.Linear(width, h), math.sqrt(2.0)), ACTIVATIONS[activation]()]
        width = h
    layers.append(_init(nn.Linear(width, out_dim), out_gain))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_std)^2) = -(x-mean)^2 / (2 std^2) - log_std - log sqrt(2 pi)."""
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - _LOG_SQRT_2PI


class SharedActor(nn.Module):
    """pi_theta(a_i | o_i) = N(mu_theta(o_i), sigma^2), the same theta for every hospital i.

    ``forward(obs (..., n, obs_dim)) -> mean (..., n)`` in policy units; sigma = exp(log_std) is
    one learned scalar (state-independent). The environment receives ``action_scale * a``.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: tuple[int, ...] = (64, 64),
        init_log_std: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.mean_net = mlp(self.obs_dim, self.hidden, 1, out_gain=0.01, activation=activation)
        self.log_std = nn.Parameter(torch.full((1,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_net(obs).squeeze(-1)

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``a ~ pi(.|obs)``; returns ``(action, log_prob)``, both ``(..., n)``."""
        mean = self(obs)
        device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
        noise = noise.to(mean.device)  # a CPU generator keeps runs reproducible on any device
        action = mean + torch.exp(self.log_std) * noise
        return action, gaussian_log_prob(action, mean, self.log_std)

    def evaluate(
        self, obs: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob (..., n), entropy ())`` of given actions under the current parameters.

        The entropy of N(mu, sigma^2) is ``0.5 + log sqrt(2 pi) + log sigma``, the same for every
        hospital because sigma is state-independent.
        """
        log_prob = gaussian_log_prob(action, self(obs), self.log_std)
        entropy = (0.5 + _LOG_SQRT_2PI + self.log_std).sum()
        return log_prob, entropy


class ValueNormalizer(nn.Module):
    """Running mean/std of the value targets (returns), kept as buffers so checkpoints hold them.

    The critic predicts normalised values ``(R - mu) / sigma``; ``denormalize`` maps predictions
    back. Statistics are exponential moving averages with bias correction (as in MAPPO's value
    normalisation): ``m <- beta m + (1-beta) mean(R)``, ``mu = m / (1 - beta^k)`` after k updates.
    With ``enabled=False`` both maps are the identity.
    """

    def __init__(self, enabled: bool = True, beta: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.enabled = bool(enabled)
        self.beta = float(beta)
        self.eps = float(eps)
        self.register_buffer("running_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("running_mean_sq", torch.zeros((), dtype=torch.float64))
        self.register_buffer("debias", torch.zeros((), dtype=torch.float64))

    def update(self, returns: torch.Tensor) -> None:
        if not self.enabled:
            return
        values = returns.detach().to(torch.float64)
        self.running_mean.mul_(self.beta).add_((1.0 - self.beta) * values.mean())
        self.running_mean_sq.mul_(self.beta).add_((1.0 - self.beta) * (values**2).mean())
        self.debias.mul_(self.beta).add_(1.0 - self.beta)

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        debias = self.debias.clamp(min=self.eps)
        mean = self.running_mean / debias
        var = (self.running_mean_sq / debias - mean**2).clamp(min=1e-2)
        return mean.float(), var.sqrt().float()

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return values
        mean, std = self._stats()
        return (values - mean) / std

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return values
        mean, std = self._stats()
        return values * std + mean


class CentralCritic(nn.Module):
    """V_phi(s) = rho([mean_i phi(o_i), max_i phi(o_i)]): the whole network state, CTDE.

    ``forward(obs (..., n, obs_dim)) -> value (...,)`` in normalised units (see
    :class:`ValueNormalizer`). Mean and max pooling make it invariant to the order of hospitals
    and defined for any n. With ``per_agent=True``:
    V_i(s) = rho([phi(o_i), mean_j phi(o_j), max_j phi(o_j)]), ``value (..., n)``, hospital i's
    own return (equivariant: permuting hospitals permutes the values).
    """

    def __init__(
        self,
        obs_dim: int,
        encoder_hidden: tuple[int, ...] = (64,),
        hidden: tuple[int, ...] = (64,),
        activation: str = "relu",
        per_agent: bool = False,
    ):
        super().__init__()
        self.per_agent = bool(per_agent)
        *enc_hidden, enc_out = encoder_hidden
        self.encoder = nn.Sequential(
            mlp(
                obs_dim, tuple(enc_hidden), enc_out, out_gain=math.sqrt(2.0), activation=activation
            ),
            ACTIVATIONS[activation](),
        )
        inputs = (3 if self.per_agent else 2) * enc_out
        self.head = mlp(inputs, tuple(hidden), 1, out_gain=1.0, activation=activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(obs)  # (..., n, width)
        pooled = torch.cat([encoded.mean(dim=-2), encoded.amax(dim=-2)], dim=-1)
        if self.per_agent:  # (..., n, 3 width): own encoding next to the pooled context
            context = pooled.unsqueeze(-2).expand(*encoded.shape[:-1], pooled.shape[-1])
            pooled = torch.cat([encoded, context], dim=-1)
        return self.head(pooled).squeeze(-1)


class LocalCritic(nn.Module):
    """V(s) = (1/n) sum_i v_phi(o_i): each hospital's own estimate of the team value, averaged
    (independent learners). ``forward(obs (..., n, obs_dim)) -> value (...,)``; with
    ``per_agent=True`` the estimates v_phi(o_i) of each hospital's own return, ``(..., n)``."""

    def __init__(
        self,
        obs_dim: int,
        encoder_hidden: tuple[int, ...] = (64,),
        hidden: tuple[int, ...] = (64,),
        activation: str = "relu",
        per_agent: bool = False,
    ):
        super().__init__()
        self.per_agent = bool(per_agent)
        widths = tuple(encoder_hidden) + tuple(hidden)
        self.value_net = mlp(obs_dim, widths, 1, out_gain=1.0, activation=activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        values = self.value_net(obs).squeeze(-1)
        return values if self.per_agent else values.mean(dim=-1)


class ActorCritic(nn.Module):
    """The trained parameters of one run: ``actor``, ``critic`` and the ``value_norm`` stats."""

    def __init__(
        self,
        obs_dim: int,
        *,
        actor_hidden: tuple[int, ...] = (64, 64),
        critic: str = "central",
        critic_encoder_hidden: tuple[int, ...] = (64,),
        critic_hidden: tuple[int, ...] = (64,),
        init_log_std: float = 0.0,
        norm_value: bool = True,
        activation: str = "relu",
        per_agent_value: bool = False,
    ):
        super().__init__()
        self.actor = SharedActor(obs_dim, actor_hidden, init_log_std, activation)
        critic_cls = {"central": CentralCritic, "local": LocalCritic}[critic]
        self.critic = critic_cls(
            obs_dim, critic_encoder_hidden, critic_hidden, activation, per_agent=per_agent_value
        )
        self.value_norm = ValueNormalizer(enabled=norm_value)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) in reward units, ``(...,)`` (``(..., n)`` with ``per_agent_value``)."""
        return self.value_norm.denormalize(self.critic(obs))
