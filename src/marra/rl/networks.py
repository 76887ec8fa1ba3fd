"""Networks of the learners: grouped MLPs (parameter sharing), normalisers, heads, critics.

Shapes: observations are ``(..., num_agents, obs_dim)``; leading dimensions are batch
dimensions (``(num_envs,)`` during rollouts, ``(minibatch,)`` during updates).

Parameter sharing is a mapping from agents to parameter *groups* (:mod:`marra.rl.sharing`).
:class:`GroupedLinear` holds one weight matrix per group, ``(G, in, out)``, and evaluates every
agent with its group's weights in ONE batched call (a gather by group index and a batched
matrix product, never a Python loop over agents or groups). With one group it is a plain
``Linear`` (the fast path of full sharing); with one group per agent and the identity mapping
it is a batched matrix product over agents (no gather).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "GroupedLinear",
    "GroupedMLP",
    "ObsNorm",
    "RunningNorm",
    "ValueNorm",
    "ValueNormalizer",
    "Actor",
    "Critic",
    "gaussian_log_prob",
    "masked_logits",
    "mlp",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


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
    zero biases, as is usual for PPO.
    """
    _check_activation(activation)
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


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits with masked-out actions at the smallest float: their probability is exactly 0 in
    float32 and they are never sampled (even when one action is left)."""
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


# --------------------------------------------------------------------------- grouped layers
class GroupedLinear(nn.Module):
    """``y_i = x_i W_{g(i)} + b_{g(i)}`` for every agent ``i`` with group ``g(i)``.

    ``weight (G, in, out)``, ``bias (G, out)``. ``forward(x (..., N, in), groups (N,))``. Each
    group's matrix is initialised orthogonally with ``gain`` (as :func:`mlp`), the bias at 0.
    """

    def __init__(self, in_dim: int, out_dim: int, num_groups: int, gain: float) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_groups = int(in_dim), int(out_dim), int(num_groups)
        weight = torch.empty(self.num_groups, self.in_dim, self.out_dim)
        for g in range(self.num_groups):  # initialisation only, once
            matrix = torch.empty(self.out_dim, self.in_dim)  # as nn.Linear stores it
            nn.init.orthogonal_(matrix, gain)
            weight[g] = matrix.T
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(self.num_groups, self.out_dim))

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        if self.num_groups == 1:
            return torch.matmul(x, self.weight[0]) + self.bias[0]
        if groups is None:  # identity mapping: agent i uses group i
            weight, bias = self.weight, self.bias
        else:
            weight, bias = self.weight[groups], self.bias[groups]  # (N, in, out), (N, out)
        lead = x.shape[:-2]
        n = x.shape[-2]
        flat = x.reshape(-1, n, self.in_dim).transpose(0, 1)  # (N, B, in)
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight)  # (N, B, out)
        return out.transpose(0, 1).reshape(*lead, n, self.out_dim)


class GroupedMLP(nn.Module):
    """An MLP whose every layer is a :class:`GroupedLinear` (same grouping for all layers)."""

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        out_dim: int,
        num_groups: int,
        *,
        out_gain: float,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_activation(activation)
        widths = (int(in_dim), *(int(h) for h in hidden))
        self.layers = nn.ModuleList(
            [
                GroupedLinear(a, b, num_groups, math.sqrt(2.0))
                for a, b in zip(widths, widths[1:], strict=False)
            ]
            + [GroupedLinear(widths[-1], out_dim, num_groups, out_gain)]
        )
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x, groups))
        return self.layers[-1](x, groups)


# --------------------------------------------------------------------------- normalisers
class ObsNorm(nn.Module):
    """Per-feature running mean and variance of observations, ``x -> clip((x - mu) / sd, +-c)``.

    The statistics are float64 buffers (so checkpoints and policy files hold them), pooled over
    every agent row seen (one set of statistics per feature, shared by all agents, so a policy
    with shared parameters still runs on any number of agents). ``update`` merges a batch with
    the parallel-variance formula (Chan, Golub and LeVeque); ``sd = sqrt(var + floor^2)`` keeps
    near-constant features (the budget, the time left at one step) from being blown up. With
    ``enabled=False`` the map is the identity, ``update`` does nothing and the buffers are not
    part of the state dict.

    Why: features of very different scales (the hospital's gap ``(c - t) / s`` is of order 0.03
    next to features of order 1) are equally visible to the first layer once scaled
    (``docs/environment.md``).
    """

    def __init__(self, dim: int, enabled: bool = True, clip: float = 10.0, floor: float = 1e-2):
        super().__init__()
        self.enabled = bool(enabled)
        self.clip = float(clip)
        self.floor = float(floor)
        keep = self.enabled  # only an enabled normaliser is saved
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


RunningNorm = ObsNorm  # the name of marra 0.1


class ValueNorm(nn.Module):
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


ValueNormalizer = ValueNorm  # the name of marra 0.1


# --------------------------------------------------------------------------- identities
class AgentIdentity(nn.Module):
    """Features that tell agents apart, appended to each agent's input (PS-id sharing).

    ``kind="onehot"``: the one-hot of the agent index (``num_agents`` features);
    ``kind="embedding"``: a learned embedding of ``dim`` features (for many agents, where a
    one-hot would dwarf the observation); ``kind="none"``: no features.
    ``forward(lead_shape) -> (*lead, N, width)``.
    """

    def __init__(self, kind: str, num_agents: int, dim: int = 16) -> None:
        super().__init__()
        if kind not in ("none", "onehot", "embedding"):
            raise ValueError(f"identity: 'none', 'onehot' or 'embedding', got {kind!r}")
        self.kind = kind
        self.num_agents = int(num_agents)
        if kind == "onehot":
            self.width = self.num_agents
            self.register_buffer("table", torch.eye(self.num_agents), persistent=False)
        elif kind == "embedding":
            self.width = int(dim)
            self.embedding = nn.Embedding(self.num_agents, self.width)
            nn.init.normal_(self.embedding.weight, std=1.0)
        else:
            self.width = 0

    def table_(self) -> torch.Tensor:
        if self.kind == "onehot":
            return self.table
        return self.embedding.weight

    def append(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., N, d) -> (..., N, d + width)``."""
        if self.kind == "none":
            return x
        if x.shape[-2] != self.num_agents:
            raise ValueError(
                f"identity features were built for {self.num_agents} agents, got {x.shape[-2]}"
            )
        ids = self.table_().to(x.dtype).expand(*x.shape[:-1], self.width)
        return torch.cat([x, ids], dim=-1)


# --------------------------------------------------------------------------- actor
class Actor(nn.Module):
    """pi(a_i | o_i) for every agent, with the parameters of its group.

    ``action_kind="continuous"``: a Gaussian over ``action_dim`` values with mean
    ``mu_{g(i)}(o_i)`` and a learned state-independent log-std per group and action dimension;
    the environment receives ``action_center + action_scale * a``. ``"discrete"``: a
    categorical over ``num_actions`` with logits ``f_{g(i)}(o_i)``, masked by the environment's
    ``action_mask`` (masked actions have probability 0 and are never sampled).

    The raw observation first goes through :class:`ObsNorm` (its statistics are part of the
    actor, so a saved policy normalises exactly as in training), then gets the identity
    features of the sharing scheme appended.
    """

    def __init__(
        self,
        obs_dim: int,
        *,
        action_kind: str,
        action_dim: int,
        hidden: tuple[int, ...],
        num_groups: int,
        identity: AgentIdentity,
        activation: str,
        obs_norm: bool,
        init_log_std: float,
        action_scale: float = 1.0,
        action_center: float = 0.0,
    ) -> None:
        super().__init__()
        if action_kind not in ("continuous", "discrete"):
            raise ValueError(f"action_kind: 'continuous' or 'discrete', got {action_kind!r}")
        self.obs_dim = int(obs_dim)
        self.action_kind = action_kind
        self.action_dim = int(action_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.num_groups = int(num_groups)
        self.action_scale = float(action_scale)
        self.action_center = float(action_center)
        self.obs_norm = ObsNorm(self.obs_dim, enabled=obs_norm)
        self.identity = identity
        in_dim = self.obs_dim + identity.width
        gain = 0.01
        self.body = GroupedMLP(
            in_dim, self.hidden, self.action_dim, self.num_groups, out_gain=gain,
            activation=activation,
        )  # fmt: skip
        if action_kind == "continuous":
            self.log_std = nn.Parameter(
                torch.full((self.num_groups, self.action_dim), float(init_log_std))
            )

    @property
    def discrete(self) -> bool:
        return self.action_kind == "discrete"

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.identity.append(self.obs_norm(obs))

    def forward(self, obs: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        """Gaussian means or logits ``(..., N, action_dim)``."""
        return self.body(self.features(obs), groups)

    def _log_std(self, groups: torch.Tensor | None, n: int) -> torch.Tensor:
        if self.num_groups == 1:
            return self.log_std[0].expand(n, self.action_dim)
        return self.log_std if groups is None else self.log_std[groups]

    def sample(
        self,
        obs: torch.Tensor,
        groups: torch.Tensor | None,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``a ~ pi(.|obs)``: ``(action, log_prob (..., N))``; continuous actions are
        ``(..., N, action_dim)`` in policy units, discrete ones ``(..., N)`` int64."""
        out = self(obs, groups)
        device = generator.device if generator is not None else out.device
        if self.discrete:
            logits = masked_logits(out, mask)
            u = torch.rand(logits.shape, generator=generator, device=device, dtype=logits.dtype)
            u = u.to(logits.device).clamp_min(1e-20)
            gumbel = -torch.log((-torch.log(u)).clamp_min(1e-20))  # Gumbel(0, 1) noise
            scores = logits + gumbel
            if mask is not None:
                scores = scores.masked_fill(~mask, -math.inf)
            action = scores.argmax(dim=-1)
            log_prob = torch.log_softmax(logits, dim=-1).gather(-1, action.unsqueeze(-1))
            return action, log_prob.squeeze(-1)
        log_std = self._log_std(groups, out.shape[-2])
        noise = torch.randn(out.shape, generator=generator, device=device, dtype=out.dtype)
        action = out + torch.exp(log_std) * noise.to(out.device)
        return action, gaussian_log_prob(action, out, log_std).sum(-1)

    def evaluate(
        self,
        obs: torch.Tensor,
        groups: torch.Tensor | None,
        action: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob (..., N), entropy ())`` of given actions under the current parameters;
        the entropy is the mean over agents (and samples) of each agent's policy entropy."""
        out = self(obs, groups)
        if self.discrete:
            log_p = torch.log_softmax(masked_logits(out, mask), dim=-1)
            log_prob = log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1)
            entropy = -(log_p.exp() * log_p).sum(-1).mean()
            return log_prob, entropy
        log_std = self._log_std(groups, out.shape[-2])
        log_prob = gaussian_log_prob(action, out, log_std).sum(-1)
        entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum(-1).mean()
        return log_prob, entropy

    def act(
        self,
        obs: torch.Tensor,
        groups: torch.Tensor | None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The deterministic action in environment units: the Gaussian mean mapped by
        ``center + scale * mu``, or the most likely allowed discrete action."""
        out = self(obs, groups)
        if self.discrete:
            return masked_logits(out, mask).argmax(dim=-1)
        return self.action_center + self.action_scale * out

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """A sampled action (policy units) in environment units."""
        if self.discrete:
            return action
        return self.action_center + self.action_scale * action


# --------------------------------------------------------------------------- critics
class Critic(nn.Module):
    """The value function of a PPO learner, one of three inputs:

    - ``"local"`` (IPPO): ``V_i(o_i)``, each agent's own observation (plus the identity features
      of the sharing scheme), with its group's parameters; ``(..., N)``.
    - ``"state"`` (MAPPO): the environment's global state ``state()``. With a team reward one
      value ``V(s)`` per state, ``(...,)``; with per-agent rewards ``V_i(s, o_i)`` from the state
      and the agent's own observation (MAPPO's agent-specific global state), ``(..., N)``.
    - ``"pool"`` (MAPPO on many agents): a deep set over every agent's observation: an encoder
      per agent, mean and max pooling (permutation-invariant, any N), an MLP; ``(...,)``, or
      ``(..., N)`` from each agent's encoding next to the pooled context.

    ``shared_head=True`` (PSA sharing, :mod:`marra.rl.psa`; per-agent ``local`` or ``state``
    critics only): next to the grouped critic ``V_{g(i)}`` a second critic ``V_shared`` of the
    same inputs with ONE set of parameters for all agents; the value is their mean
    ``(V_{g(i)} + V_shared) / 2`` and :meth:`value_loss` trains each critic on the targets.

    Outputs are in normalised value units (see :class:`ValueNorm`).
    """

    def __init__(
        self,
        obs_dim: int,
        state_dim: int,
        *,
        kind: str,
        per_agent: bool,
        hidden: tuple[int, ...],
        encoder_hidden: tuple[int, ...],
        num_groups: int,
        identity: AgentIdentity,
        activation: str,
        shared_head: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("local", "state", "pool"):
            raise ValueError(f"critic: 'local', 'state' or 'pool', got {kind!r}")
        self.kind = kind
        self.per_agent = bool(per_agent) or kind == "local"
        self.shared_head = bool(shared_head)
        if self.shared_head and (kind == "pool" or not self.per_agent):
            raise ValueError(
                "critic: a shared second critic (sharing 'psa') needs per-agent 'local' or "
                f"'state' critics, got kind {kind!r}"
            )
        self.identity = identity
        self.num_groups = int(num_groups)
        width_id = identity.width
        if kind == "local":
            self.net = GroupedMLP(
                obs_dim + width_id, (*encoder_hidden, *hidden), 1, self.num_groups,
                out_gain=1.0, activation=activation,
            )  # fmt: skip
        elif kind == "state":
            in_dim = state_dim + (obs_dim + width_id if self.per_agent else 0)
            groups = self.num_groups if self.per_agent else 1
            self.net = GroupedMLP(
                in_dim, (*encoder_hidden, *hidden), 1, groups, out_gain=1.0,
                activation=activation,
            )  # fmt: skip
        else:
            *enc_hidden, enc_out = encoder_hidden
            self.encoder = nn.Sequential(
                mlp(obs_dim, tuple(enc_hidden), enc_out, out_gain=math.sqrt(2.0),
                    activation=activation),
                ACTIVATIONS[activation](),
            )  # fmt: skip
            inputs = (3 if self.per_agent else 2) * enc_out
            self.head = mlp(inputs, tuple(hidden), 1, out_gain=1.0, activation=activation)
        if self.shared_head:  # PSA: the same inputs, one set of parameters for every agent
            first = self.net.layers[0]
            self.shared_net = GroupedMLP(
                first.in_dim, (*encoder_hidden, *hidden), 1, 1, out_gain=1.0,
                activation=activation,
            )  # fmt: skip

    def heads(
        self, obs: torch.Tensor, state: torch.Tensor | None, groups: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PSA: ``(V_{g(i)}, V_shared)``, each ``(..., N)`` (``shared_head`` only)."""
        if self.kind == "local":
            joint = self.identity.append(obs)
        else:
            assert state is not None
            joint = torch.cat(
                [state.unsqueeze(-2).expand(*obs.shape[:-1], state.shape[-1]),
                 self.identity.append(obs)], dim=-1,
            )  # fmt: skip
        return self.net(joint, groups).squeeze(-1), self.shared_net(joint, None).squeeze(-1)

    def value_loss(
        self,
        obs: torch.Tensor,
        state: torch.Tensor | None,
        groups: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """``0.5 mean (V - R)^2`` (paper 000 Eq. 7) on normalised ``obs`` and targets; with a
        shared second critic the mean of both critics' losses, each regressed on ``R``."""
        if not self.shared_head:
            return 0.5 * ((self(obs, state, groups) - targets) ** 2).mean()
        own, shared = self.heads(obs, state, groups)
        return 0.25 * (((own - targets) ** 2).mean() + ((shared - targets) ** 2).mean())

    def forward(
        self,
        obs: torch.Tensor,
        state: torch.Tensor | None,
        groups: torch.Tensor | None,
    ) -> torch.Tensor:
        """``obs (..., N, obs_dim)`` (already normalised), ``state (..., state_dim)``."""
        if self.shared_head:
            own, shared = self.heads(obs, state, groups)
            return 0.5 * (own + shared)
        if self.kind == "local":
            return self.net(self.identity.append(obs), groups).squeeze(-1)
        if self.kind == "state":
            assert state is not None
            if not self.per_agent:
                return self.net(state.unsqueeze(-2), None).squeeze(-1).squeeze(-1)
            joint = torch.cat(
                [state.unsqueeze(-2).expand(*obs.shape[:-1], state.shape[-1]),
                 self.identity.append(obs)], dim=-1,
            )  # fmt: skip
            return self.net(joint, groups).squeeze(-1)
        encoded = self.encoder(obs)  # (..., N, width)
        pooled = torch.cat([encoded.mean(dim=-2), encoded.amax(dim=-2)], dim=-1)
        if self.per_agent:
            context = pooled.unsqueeze(-2).expand(*encoded.shape[:-1], pooled.shape[-1])
            pooled = torch.cat([encoded, context], dim=-1)
        return self.head(pooled).squeeze(-1)
