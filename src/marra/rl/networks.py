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
    "RunningNorm",
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


class RunningNorm(nn.Module):
    """Per-feature running mean and variance of observations, ``x -> clip((x - mu) / sd, +-c)``.

    The statistics are float64 buffers (so checkpoints and policy files hold them), pooled over
    every hospital row seen (one set of statistics per feature, shared by all hospitals, so the
    policy still runs on any n). ``update`` merges a batch with the parallel-variance formula
    (Chan, Golub and LeVeque); ``sd = sqrt(var + floor^2)`` keeps near-constant features (the
    budget, the time left at one step) from being blown up. With ``enabled=False`` the map is
    the identity, ``update`` does nothing and the buffers are not part of the state dict.

    Why: the feature that matters most for tracking, the gap ``(c - t) / s``, is of order 0.03
    once targets are nearly met, next to features of order 1; scaled to unit variance it is as
    visible to the first layer as the others (``docs/environment.md``).
    """

    def __init__(self, dim: int, enabled: bool = True, clip: float = 10.0, floor: float = 1e-2):
        super().__init__()
        self.enabled = bool(enabled)
        self.clip = float(clip)
        self.floor = float(floor)
        # only an enabled normaliser is saved: policy files without one load unchanged
        keep = self.enabled
        self.register_buffer("count", torch.zeros((), dtype=torch.float64), persistent=keep)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64), persistent=keep)
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64), persistent=keep)

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge ``batch (..., dim)`` into the statistics."""
        if not self.enabled:
            return
        rows = batch.detach().reshape(-1, batch.shape[-1]).to(torch.float64)
        k = float(rows.shape[0])
        if k == 0:
            return
        batch_mean = rows.mean(dim=0)
        batch_var = rows.var(dim=0, correction=0)
        total = self.count + k
        delta = batch_mean - self.mean
        self.mean.add_(delta * (k / total))
        merged = self.var * self.count + batch_var * k + delta**2 * (self.count * k / total)
        self.var.copy_(merged / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        sd = torch.sqrt(self.var + self.floor**2)
        scaled = (obs - self.mean.to(obs.dtype)) / sd.to(obs.dtype)
        return scaled.clamp(-self.clip, self.clip)


class SharedActor(nn.Module):
    """pi_theta(a_i | o_i) = N(mu_theta(o_i), sigma^2), the same theta for every hospital i.

    ``forward(obs (..., n, obs_dim)) -> mean (..., n)`` in policy units; sigma = exp(log_std) is
    one learned scalar (state-independent). The environment receives ``action_scale * a``.
    With ``obs_norm`` the raw observation first goes through :class:`RunningNorm` (its
    statistics are part of the actor, so a saved policy normalises exactly as in training).
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: tuple[int, ...] = (64, 64),
        init_log_std: float = 0.0,
        activation: str = "relu",
        obs_norm: bool = False,
    ):
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.obs_norm = RunningNorm(self.obs_dim, enabled=obs_norm)
        self.mean_net = mlp(self.obs_dim, self.hidden, 1, out_gain=0.01, activation=activation)
        self.log_std = nn.Parameter(torch.full((1,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_net(self.obs_norm(obs)).squeeze(-1)

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
        obs_norm: bool = False,
    ):
        super().__init__()
        self.actor = SharedActor(obs_dim, actor_hidden, init_log_std, activation, obs_norm)
        critic_cls = {"central": CentralCritic, "local": LocalCritic}[critic]
        self.critic = critic_cls(
            obs_dim, critic_encoder_hidden, critic_hidden, activation, per_agent=per_agent_value
        )
        self.value_norm = ValueNormalizer(enabled=norm_value)

    def critic_value(self, obs: torch.Tensor) -> torch.Tensor:
        """The critic on raw ``obs``, normalised by the actor's :class:`RunningNorm` (the
        identity without ``obs_norm``); normalised value units."""
        return self.critic(self.actor.obs_norm(obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) in reward units, ``(...,)`` (``(..., n)`` with ``per_agent_value``)."""
        return self.value_norm.denormalize(self.critic_value(obs))
