"""Value-based learners on the training loop: IQL, VDN, QMIX and CW-QMIX (weighted QMIX).

Every agent ``i`` has utilities ``Q_{g(i)}(o_i, .)`` over its discrete actions, from the
parameters of its group under the sharing scheme (:mod:`marra.rl.sharing`; the grouped networks
of :mod:`marra.rl.networks` evaluate every agent in one batched call). Acting is epsilon-greedy
over the allowed actions (``action_mask()``); the trained policy is the greedy one. The four
learners differ in what the utilities are trained to fit:

- ``iql`` (independent Q-learning, Tan 1993): each agent's own TD target,
  ``Q_i(o, a_i) <- r_i + gamma max_a Q'_i(o'_i, a)``; ``r_i`` is the agent's reward (the team
  reward where the environment has one);
- ``vdn`` (Sunehag et al. 2018): ``Q_tot = sum_i Q_i(o_i, a_i)`` fits the team target;
- ``qmix`` (Rashid et al. 2018): ``Q_tot = f_s(Q_1, ..., Q_N)`` with a mixing network whose
  weights are produced from ``env.state()`` by hypernetworks and kept non-negative (absolute
  values), so ``Q_tot`` is monotonic in every ``Q_i`` and the greedy joint action is every
  agent's own greedy action: ``Q_tot = |W_2(s)|^T elu(|W_1(s)|^T q + b_1(s)) + V(s)``;
- ``wqmix`` (centrally-weighted QMIX, Rashid et al. 2020, "CW-QMIX"): QMIX plus an
  unrestricted central estimate ``Q*(s, u)`` (a second set of agent utilities mixed by a
  feed-forward network of the state and the utilities, not monotonic). Both fit the target
  ``y = r + gamma Q*'(s', u_hat')``, where ``u_hat'`` is the QMIX agents' greedy joint action;
  QMIX's squared error is weighted by ``w = 1`` where the taken joint action is the greedy one
  or ``y > Q*'(s, u_hat)``, else ``wqmix_alpha`` (the paper's alpha, 0.1 in the authors'
  configuration ``cw_qmix.yaml``), so that the monotonic projection puts its accuracy on the
  better joint actions.

The team reward of the mixing learners is the mean of the agents' rewards (the team reward
itself where ``spec.reward == "team"``). All four use double Q-learning (the online network
picks the next action, the target network values it), target networks copied every
``target_update_every`` gradient steps, an episode replay buffer on the device
(:mod:`marra.rl.replay`) and Adam with gradient-norm clipping. The networks are feed-forward
(the observation only; pymarl's defaults use a GRU agent fed the last action and the agent id:
marra's environments are Markov in their observations where it matters, and ``--sharing id``
adds the identity).

Observation (and state) normalisation: running statistics of everything collected before the
first gradient step, then frozen, so that the TD targets of stored transitions do not drift.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from marra.envs.base import EnvSpec, MultiAgentEnv

from .algorithm import Algorithm, Constraint
from .config import ALGORITHMS, AlgorithmInfo
from .networks import Actor, AgentIdentity, ObsNorm, masked_logits
from .ppo import CompatibilityError, TrainingError
from .replay import (
    EpisodeBuffer,
    ReplaySignals,
    Segment,
    buffer_bytes,
    check_segment,
    collect_segment,
    gradient_steps,
    linear_schedule,
)
from .rollout import iteration_seed
from .sharing import SHARING_SCHEMES, SharingScheme, make_sharing

__all__ = [
    "QConfig",
    "QModel",
    "QLearning",
    "QMixer",
    "CentralMixer",
    "build_q_model",
    "Q_ALGORITHMS",
    "check_replay_memory",
    "replay_constraint",
    "standardise",
    "ReplayELD",
    "check_fixed_groups",
]

#: The value-based learners and whether their mixer reads ``env.state()``.
Q_ALGORITHMS = {"iql": False, "vdn": False, "qmix": True, "wqmix": True}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def _check_run_fields(config: Any, algos: tuple[str, ...]) -> None:
    """The run fields every learner config shares (as :class:`marra.rl.PPOConfig`)."""
    if config.algo not in algos:
        raise ValueError(f"algo: one of {', '.join(algos)} for this config, got {config.algo!r}")
    if config.sharing not in SHARING_SCHEMES:
        raise ValueError(
            f"sharing: unknown scheme {config.sharing!r}; choose one of "
            f"{', '.join(SHARING_SCHEMES)}"
        )
    for name in ("total_steps", "num_envs", "checkpoint_every"):
        _positive_int(name, getattr(config, name))
    if config.rollout_steps is not None:
        _positive_int("rollout_steps", config.rollout_steps)
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed: must be an integer in [0, 2**63), got {seed!r}")
    if config.torch_threads is not None and config.torch_threads < 1:
        raise ValueError(f"torch_threads: must be >= 1 or None, got {config.torch_threads!r}")
    if not 0.0 <= config.gamma <= 1.0:
        raise ValueError(f"gamma: must lie in [0, 1], got {config.gamma!r}")
    if config.activation not in ("relu", "tanh"):
        raise ValueError(f"activation: must be 'relu' or 'tanh', got {config.activation!r}")


def _widths(config: Any, name: str) -> None:
    widths = tuple(getattr(config, name))
    if not widths or any(isinstance(w, bool) or int(w) != w or w < 1 for w in widths):
        raise ValueError(f"{name}: must be a non-empty tuple of positive ints, got {widths}")
    object.__setattr__(config, name, tuple(int(w) for w in widths))


class _ConfigMixin:
    """``to_dict`` / ``from_dict`` / ``replace`` as :class:`marra.rl.PPOConfig` has them."""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (tuples as lists) that :meth:`from_dict` turns back into the config."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()  # type: ignore[call-overload]
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class QConfig(_ConfigMixin):
    """Every hyperparameter of the value-based learners (``algo`` iql, vdn, qmix, wqmix).

    One iteration resets ``num_envs`` copies and runs the epsilon-greedy policy for
    ``rollout_steps`` steps (default: the horizon, one whole episode per copy), stores every
    copy's episode in the replay buffer, then (once ``learning_starts`` env-steps are stored)
    takes ``ceil(replay_ratio x env-steps of the iteration / batch_size)`` gradient steps on
    batches of ``batch_size`` transitions. Defaults follow pymarl's QMIX configuration where it
    has one (gamma, epsilon 1 -> 0.05 over 50,000 env-steps, target copies every 200 updates,
    learning rate 5e-4, gradient clip 10, mixing width 32, hypernetwork width 64; the central
    mixer of CW-QMIX 256 wide, alpha 0.1), except Adam for RMSprop and transitions for whole
    episodes in a batch (feed-forward networks need no history).
    """

    # --- algorithm ---------------------------------------------------------------------------
    algo: str = "qmix"
    """``"iql"``, ``"vdn"``, ``"qmix"`` or ``"wqmix"`` (module docstring)."""
    sharing: str = "full"
    """Parameter sharing of the agent networks: ``"none"``, ``"full"``, ``"id"``."""

    # --- run (as PPOConfig) --------------------------------------------------------------------
    seed: int = 1
    """Seed of everything: initialisation, exploration, sampling and the environment seeds."""
    total_steps: int = 200_000
    """Env-steps to train for (one env-step = one step of one copy); rounded up to iterations."""
    num_envs: int = 16
    """Environment copies stepped together."""
    rollout_steps: int | None = None
    """Steps per copy per iteration; None: the environment's horizon (one whole episode)."""
    device: str = "cpu"
    """Torch device of the networks, the environment and the replay buffer."""
    torch_threads: int | None = 1
    """``torch.set_num_threads`` during training (None leaves it alone)."""
    checkpoint_every: int = 10
    """Write ``checkpoint.pt`` (with the replay buffer) every this many iterations."""

    # --- TD learning ----------------------------------------------------------------------------
    gamma: float = 0.99
    """Discount factor."""
    double_q: bool = True
    """Double Q-learning: the online network picks the next action, the target network values
    it (False: the target network does both)."""
    target_update_every: int = 200
    """Gradient steps between copies of the online networks into the target networks."""
    learning_rate: float = 5e-4
    """Adam step size of every network (agents, mixer, central Q)."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip over all parameters."""
    reward_normalisation: bool = False
    """Standardise the rewards of every sampled batch (mean 0, standard deviation 1) before the
    TD targets, as MAPDN's ``reward_normalisation`` (its default): the targets lose the large
    common offset of always-negative rewards."""

    # --- replay ---------------------------------------------------------------------------------
    buffer_episodes: int = 1000
    """Capacity of the replay buffer in segments (whole episodes by default) of one copy."""
    batch_size: int = 256
    """Transitions per gradient step."""
    learning_starts: int = 1000
    """Env-steps stored before the first gradient step (observation statistics freeze then)."""
    replay_ratio: float = 8.0
    """How often each collected transition is sampled on average (sets the gradient steps per
    iteration)."""

    # --- exploration ----------------------------------------------------------------------------
    epsilon_start: float = 1.0
    """Probability of a uniformly random allowed action at the start."""
    epsilon_finish: float = 0.05
    """... and after ``epsilon_anneal_steps`` env-steps (linear in between)."""
    epsilon_anneal_steps: int = 50_000
    """Env-steps over which epsilon anneals (counted from the start of the run, so extending a
    run does not change its schedule)."""

    # --- networks -------------------------------------------------------------------------------
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the agent networks."""
    activation: str = "relu"
    """Hidden activation of the agent networks."""
    obs_norm: bool = True
    """Normalise observations (and the mixer's state) by the statistics of the experience
    collected before learning starts (then frozen)."""
    mixing_embed_dim: int = 32
    """QMIX: width of the mixing network."""
    hypernet_embed: int = 64
    """QMIX: hidden width of the hypernetworks that produce the mixing weights."""
    central_embed_dim: int = 256
    """CW-QMIX: width of the feed-forward central mixer of Q*."""
    wqmix_alpha: float = 0.1
    """CW-QMIX: weight of the joint actions that are neither greedy nor underestimated."""
    id_onehot_max: int = 64
    """``sharing="id"``: one-hot identities up to this many agents, a learned embedding above."""
    id_embedding_dim: int = 16
    """``sharing="id"``: width of the learned identity embedding."""

    # --- equity constraint (ELD for replay-based learners, :class:`ReplayELD`) -------------
    equity: str = "none"
    """``"eld"``: ELD (paper 003 section 4.2) with its signals stored with each episode
    (:class:`ReplayELD`); the fields below mean what they mean in :class:`marra.rl.PPOConfig`."""
    equity_tau: float = 0.1
    """ELD: tolerance band tau of the excess (paper 003 Eq. 2)."""
    equity_budget: float = 0.0
    """ELD: the budget epsilon of the normalised MRE H/N (paper 003 Eq. 8)."""
    dual_lr: float = 1.0
    """ELD: step size of the dual ascent (paper 003 Eq. 10)."""
    dual_every: int = 16
    """ELD: K, finished episodes per dual step."""
    lambda_max: float = 12.0
    """ELD: the cap of the dual variable."""
    equity_alpha: float = 0.0
    """ELD: the centred identity term's weight; must be 0 here (it is a statistic of an
    on-policy rollout)."""
    equity_form: str = "auto"
    """ELD: ``"fd"`` (each agent's signal ``s_i`` is its cost), ``"ctde"`` (the team's ``H/N``
    is every agent's cost), ``"auto"``: ``fd`` for iql, ``ctde`` for the mixing learners."""

    @property
    def critic_kind(self) -> str:
        """``"local"`` for IQL, ``"state"`` for the mixing learners (ELD's ``auto`` form)."""
        return "local" if self.algo == "iql" else "state"

    def __post_init__(self) -> None:
        from .config import PPOConfig

        PPOConfig._check_equity(self)  # type: ignore[arg-type]  (the same fields, one check)
        if self.equity_alpha != 0.0:
            raise ValueError(
                "equity_alpha: must be 0 for a replay-based learner (the centred term is a "
                f"batch statistic of on-policy rollouts), got {self.equity_alpha!r}"
            )
        _check_run_fields(self, tuple(Q_ALGORITHMS))
        for name in ("target_update_every", "buffer_episodes", "batch_size",
                     "mixing_embed_dim", "hypernet_embed", "central_embed_dim", "id_onehot_max",
                     "id_embedding_dim"):  # fmt: skip
            _positive_int(name, getattr(self, name))
        for name in ("learning_starts", "epsilon_anneal_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        for name in ("learning_rate", "max_grad_norm", "replay_ratio"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("epsilon_start", "epsilon_finish", "wqmix_alpha"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must lie in [0, 1], got {getattr(self, name)!r}")
        _widths(self, "hidden")


# --------------------------------------------------------------------------- mixers
class QMixer(nn.Module):
    """QMIX's monotonic mixing network (Rashid et al. 2018, section 4; two-layer hypernetworks
    as in pymarl's ``hypernet_layers: 2``): ``forward(q (..., N), state (..., S)) -> (...)``.

    ``Q_tot = |w_2(s)| . elu(q |W_1(s)| + b_1(s)) + V(s)``: the weights are produced from the
    state by hypernetworks and made non-negative by an absolute value, so ``dQ_tot / dQ_i >= 0``.
    """

    def __init__(self, num_agents: int, state_dim: int, embed_dim: int, hypernet_embed: int):
        super().__init__()
        self.num_agents, self.embed_dim = int(num_agents), int(embed_dim)
        s, h, e = int(state_dim), int(hypernet_embed), self.embed_dim
        self.hyper_w1 = nn.Sequential(nn.Linear(s, h), nn.ReLU(), nn.Linear(h, e * num_agents))
        self.hyper_b1 = nn.Linear(s, e)
        self.hyper_w2 = nn.Sequential(nn.Linear(s, h), nn.ReLU(), nn.Linear(h, e))
        self.value = nn.Sequential(nn.Linear(s, e), nn.ReLU(), nn.Linear(e, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        lead = q.shape[:-1]
        q = q.reshape(-1, 1, self.num_agents)
        s = state.reshape(q.shape[0], -1)
        w1 = self.hyper_w1(s).abs().view(-1, self.num_agents, self.embed_dim)
        hidden = F.elu(torch.bmm(q, w1).squeeze(1) + self.hyper_b1(s))  # (B, embed)
        w2 = self.hyper_w2(s).abs()
        return ((hidden * w2).sum(-1) + self.value(s).squeeze(-1)).reshape(lead)


class CentralMixer(nn.Module):
    """CW-QMIX's unrestricted central mixer (pymarl's ``QMixerCentralFF``): three ReLU layers
    of ``embed_dim`` on ``[state, q]`` plus a state value, ``forward(q (..., N), state) ->
    (...)``; not monotonic, so it can represent any joint action-value."""

    def __init__(self, num_agents: int, state_dim: int, embed_dim: int) -> None:
        super().__init__()
        s, e = int(state_dim), int(embed_dim)
        self.net = nn.Sequential(
            nn.Linear(s + int(num_agents), e), nn.ReLU(), nn.Linear(e, e), nn.ReLU(),
            nn.Linear(e, e), nn.ReLU(), nn.Linear(e, 1),
        )  # fmt: skip
        self.value = nn.Sequential(nn.Linear(s, e), nn.ReLU(), nn.Linear(e, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([state, q], dim=-1)
        return (self.net(joint) + self.value(state)).squeeze(-1)


# --------------------------------------------------------------------------- the model
class SharingStateMixin(nn.Module):
    """``state_dict`` also holds the sharing scheme's groups (as :class:`ActorCritic`)."""

    sharing: SharingScheme

    def groups(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        return self.sharing.groups(device)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key, value in self.sharing.state_dict().items():
            if value is not None:
                state[f"{prefix}sharing.{key}"] = value
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        sharing = {
            k[len("sharing.") :]: v for k, v in state_dict.items() if k.startswith("sharing.")
        }
        rest = {k: v for k, v in state_dict.items() if not k.startswith("sharing.")}
        if sharing:
            self.sharing.load_state_dict(sharing)
        return super().load_state_dict(rest, strict=strict, assign=assign)


class QModel(SharingStateMixin):
    """The trained parameters of a value-based learner.

    ``actor``: the agent utilities ``Q_{g(i)}(o_i, .)`` as an :class:`~marra.rl.networks.Actor`
    of discrete kind (its outputs are the utilities, so its greedy ``act`` is the greedy policy
    and the policy file needs nothing new); ``mixer`` (QMIX, CW-QMIX) or None; ``central``
    and ``central_mixer`` (CW-QMIX's Q*) or None; ``state_norm`` the mixer's state statistics;
    ``sharing`` the scheme.
    """

    def __init__(
        self,
        actor: Actor,
        sharing: SharingScheme,
        *,
        mixer: nn.Module | None,
        central: Actor | None,
        central_mixer: nn.Module | None,
        state_norm: ObsNorm,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.sharing = sharing
        self.mixer = mixer
        self.central = central
        self.central_mixer = central_mixer
        self.state_norm = state_norm

    def utilities(self, obs: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        """``Q_i(o_i, .)`` of every agent: ``(..., N, num_actions)``."""
        return self.actor(obs, groups)

    def central_utilities(self, obs: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        assert self.central is not None
        return self.central(self.actor.obs_norm(obs), groups)


def standardise(rewards: torch.Tensor) -> torch.Tensor:
    """``(r - mean) / std`` over the whole batch (``std`` floored at 1e-8)."""
    return (rewards - rewards.mean()) / rewards.std().clamp_min(1e-8)


def check_replay_memory(nbytes: int, device: str, what: str) -> None:
    """Refuse a replay buffer that would not fit in the device's memory (before allocating)."""
    from .loop import MemoryEstimateError

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(dev).total_memory
    else:
        try:
            total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return
    if nbytes > 0.6 * total:
        raise MemoryEstimateError(
            f"{what}: its replay buffer needs about {nbytes / 2**30:,.1f} GiB, but this device "
            f"has {total / 2**30:,.1f} GiB; lower buffer_episodes, or use fewer copies or agents"
        )


def _check_q_compatible(config: Any, spec: EnvSpec) -> None:
    if not isinstance(config, QConfig):
        raise CompatibilityError(
            f"algo {config.algo!r}: configured by marra.rl.QConfig, not {type(config).__name__}"
        )
    if not spec.action.is_discrete:
        raise CompatibilityError(
            f"algo {config.algo!r} supports discrete actions only; {spec.name} has continuous "
            "actions (use maddpg, ippo or mappo, or discretise the actions)"
        )


def check_fixed_groups(name: str, algo: str) -> None:
    """Refuse a sharing scheme that regroups agents during training (its class overrides the
    hooks ``before_iteration`` or ``after_rollout``): a replay-based learner's target networks
    and stored experience assume each agent keeps its parameter group."""
    scheme = SHARING_SCHEMES.get(name)
    if scheme is None:
        return  # make_sharing names the valid ones
    regroups = (
        scheme.before_iteration is not SharingScheme.before_iteration
        or scheme.after_rollout is not SharingScheme.after_rollout
    )
    if regroups:
        raise CompatibilityError(
            f"algo {algo!r}: sharing {name!r} regroups agents during training, which a "
            "replay-based learner's target networks and stored experience do not follow; use "
            "a scheme with fixed groups (none, full, id)"
        )


def build_q_model(spec: EnvSpec, config: QConfig) -> QModel:
    """The networks ``config`` describes for an environment with ``spec``.

    Raises:
        CompatibilityError: a continuous-action environment or a config of another family.
    """
    _check_q_compatible(config, spec)
    check_fixed_groups(config.sharing, config.algo)
    n, actions = spec.num_agents, int(spec.action.n)
    sharing = make_sharing(
        config.sharing, n, id_onehot_max=config.id_onehot_max,
        id_embedding_dim=config.id_embedding_dim,
    )  # fmt: skip

    def agent_net(obs_norm: bool) -> Actor:
        return Actor(
            spec.obs_dim, action_kind="discrete", action_dim=actions, hidden=config.hidden,
            num_groups=sharing.num_groups,
            identity=AgentIdentity(sharing.identity, n, sharing.id_dim or 16),
            activation=config.activation, obs_norm=obs_norm, init_log_std=0.0,
        )  # fmt: skip

    actor = agent_net(config.obs_norm)
    mixer: nn.Module | None = None
    central = central_mixer = None
    if config.algo in ("qmix", "wqmix"):
        mixer = QMixer(n, spec.state_dim, config.mixing_embed_dim, config.hypernet_embed)
    if config.algo == "wqmix":
        central = agent_net(False)
        central_mixer = CentralMixer(n, spec.state_dim, config.central_embed_dim)
    state_norm = ObsNorm(spec.state_dim, enabled=config.obs_norm)
    model = QModel(actor, sharing, mixer=mixer, central=central, central_mixer=central_mixer,
                   state_norm=state_norm)  # fmt: skip
    return model.to(config.device)


def _episode_ends(segment: Segment) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(outcomes (K, N), copies (K,), steps (K,))`` of the episodes that ended in
    ``segment``, in the order :class:`~marra.rl.rollout.EpisodeStats` recorded them (by step,
    then copy)."""
    if not segment.episode_outcomes:
        return None
    done = segment.dones > 0  # (E, T)
    copies, steps = [], []
    for t in range(done.shape[1]):  # a loop over steps, not over copies
        rows = done[:, t].nonzero().squeeze(-1)
        if rows.numel():
            copies.append(rows.cpu())
            steps.append(torch.full((rows.numel(),), t, dtype=torch.int64))
    outcomes = torch.cat(segment.episode_outcomes, dim=0)
    if not copies or sum(len(c) for c in copies) != outcomes.shape[0]:
        raise TrainingError("internal: episode outcomes do not match the segment's ends")
    return outcomes, torch.cat(copies), torch.cat(steps)


class ReplayELD(ReplaySignals):
    """ELD (paper 003 section 4.2) for replay-based learners, on :class:`marra.rl.eld.ELD`'s
    reducer, dual step and state.

    Paper 003: "for replay-based training, signals are computed at collection time and stored
    with the episode for consistent off-policy updates". At collection, the episode reducer
    (:func:`marra.rl.eld.reduce_outcomes`) turns each finished episode's outcomes into its
    identity signals ``s_i`` (Eq. 11) and ``H/N``; the cost ``c`` is stored with the episode at
    its last step: ``s_i`` for agent ``i`` (FD form) or ``H/N`` for every agent (CTDE form), so
    that its discounted sum from step ``t`` is ``G^id_t = gamma^(T-1-t) s_i`` (``G^eq_t``;
    Eq. 12b-c). Every sampled batch is shaped with the current dual variable,
    ``r - lambda c``, so the utilities learn the Lagrangian ``Q^eff - lambda Q^eq`` (the value
    analogue of Eq. 13; a TD target is not a score-function estimate, so no baseline is
    needed). The dual ascent (Eq. 10) runs every ``K`` finished episodes, as
    :meth:`marra.rl.eld.ELD.update`, whose log values (``eld_*``) it returns.
    """

    name = "eld"

    def __init__(self, eld: Any) -> None:
        self.eld = eld
        self._episodes: Any = None

    def signals(self, segment: Segment) -> dict[str, torch.Tensor]:
        from .eld import reduce_outcomes

        cost = torch.zeros_like(segment.rewards)  # (E, T, N)
        self._episodes = None
        ends = _episode_ends(segment)
        if ends is not None:
            outcomes, copies, steps = ends
            self._episodes = reduce_outcomes(outcomes, self.eld.tau)
            if self.eld.form == "fd":
                value = self._episodes.signal
            else:
                value = self._episodes.mre_normalised.unsqueeze(-1).expand(-1, cost.shape[-1])
            cost[copies.to(cost.device), steps.to(cost.device)] = value.to(cost)
        return {"eld_cost": cost}

    def observe(self, segment: Segment) -> None:
        # the reducer's output, for ELD's dual step and logs (its own rollout hook is PPO's)
        self.eld._episodes, self.eld._ends = self._episodes, None
        if self._episodes is not None:
            self.eld.pending.extend(self._episodes.mre_normalised.tolist())

    def shape_rewards(self, rewards: torch.Tensor, batch: Any) -> torch.Tensor:
        if self.eld.lam == 0.0:
            return rewards
        return rewards - self.eld.lam * batch.signals["eld_cost"]

    def update(self, iteration: int) -> dict[str, float]:
        return self.eld.update(iteration)

    def state_dict(self) -> dict[str, Any]:
        return self.eld.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eld.load_state_dict(state)


def replay_constraint(constraint: Constraint | None, algo: str) -> ReplaySignals | None:
    """The constraint as a replay-based learner uses it: None for no constraint (or the base
    :class:`Constraint`), :class:`ReplayELD` around an :class:`marra.rl.eld.ELD`, itself when
    it implements :class:`ReplaySignals`' methods.

    Raises:
        CompatibilityError: a constraint that only shapes on-policy advantages.
    """
    from .eld import ELD

    if constraint is None or type(constraint) is Constraint:
        return None
    if isinstance(constraint, ELD):
        if constraint.alpha != 0.0:
            raise CompatibilityError(
                f"algo {algo!r}: ELD's centred identity term (alpha {constraint.alpha}) is for "
                "on-policy rollouts; use alpha 0 with a replay-based learner"
            )
        return ReplayELD(constraint)
    needed = ("signals", "shape_rewards")

    if all(callable(getattr(constraint, name, None)) for name in needed):
        return constraint  # type: ignore[return-value]
    raise CompatibilityError(
        f"algo {algo!r}: constraint {getattr(constraint, 'name', type(constraint).__name__)!r} "
        "shapes on-policy advantages only; a replay-based learner needs its signals stored "
        "with the episodes (methods signals() and shape_rewards(), marra.rl.replay.ReplaySignals)"
    )


# --------------------------------------------------------------------------- the learner
class QLearning(Algorithm):
    """IQL / VDN / QMIX / CW-QMIX behind the :class:`~marra.rl.algorithm.Algorithm` interface."""

    def __init__(
        self, spec: EnvSpec, config: QConfig, constraint: Constraint | None = None
    ) -> None:
        _check_q_compatible(config, spec)
        self.spec, self.config = spec, config
        self.constraint = constraint  # as given (the loop checks that it was taken)
        self.signals = replay_constraint(constraint, config.algo)
        self.rollout_steps = int(config.rollout_steps or spec.horizon)
        self.steps_per_iteration = self.rollout_steps * config.num_envs
        self.needs_state = Q_ALGORITHMS[config.algo]
        nbytes = buffer_bytes(
            capacity=config.buffer_episodes, steps=self.rollout_steps,
            num_agents=spec.num_agents, obs_dim=spec.obs_dim,
            state_dim=spec.state_dim if self.needs_state else 0,
            num_actions=int(spec.action.n), action_dim=None,
        )  # fmt: skip
        check_replay_memory(
            nbytes, config.device,
            f"{config.algo} on {spec.name} ({spec.num_agents} agents, {config.buffer_episodes} "
            f"segments of {self.rollout_steps} steps)",
        )  # fmt: skip
        if config.buffer_episodes < config.num_envs:
            raise ValueError(
                f"buffer_episodes: {config.buffer_episodes} cannot hold one iteration of "
                f"{config.num_envs} copies"
            )
        self.model = build_q_model(spec, config)
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.buffer = EpisodeBuffer(
            config.buffer_episodes, self.rollout_steps, num_agents=spec.num_agents,
            obs_dim=spec.obs_dim, state_dim=spec.state_dim if self.needs_state else 0,
            num_actions=int(spec.action.n), device=config.device,
        )  # fmt: skip
        self.updates = 0  # gradient steps so far

    # ----------------------------------------------------------------- acting
    def epsilon(self, env_steps: int) -> float:
        c = self.config
        return linear_schedule(c.epsilon_start, c.epsilon_finish, c.epsilon_anneal_steps,
                               env_steps)  # fmt: skip

    def _explore(self, epsilon: float, generator: torch.Generator) -> Any:
        model = self.model

        def act(obs: torch.Tensor, state: Any, mask: torch.Tensor) -> tuple[Any, Any]:
            groups = model.groups(obs.device)
            greedy = masked_logits(model.utilities(obs, groups), mask).argmax(dim=-1)
            e, n, k = mask.shape
            explore = torch.rand((e, n), generator=generator).to(obs.device) < epsilon
            scores = torch.rand((e, n, k), generator=generator).to(obs.device)
            uniform = scores.masked_fill(~mask, -1.0).argmax(dim=-1)  # uniform over allowed
            action = torch.where(explore, uniform, greedy)
            return action, action

        return act

    # ----------------------------------------------------------------- one iteration
    def iteration(
        self, env: MultiAgentEnv, iteration: int, num_iterations: int, generator: torch.Generator
    ) -> dict[str, Any]:
        config, model = self.config, self.model
        tick = time.perf_counter()
        epsilon = self.epsilon((iteration - 1) * self.steps_per_iteration)
        model.sharing.before_iteration(iteration, model)
        with torch.no_grad():
            segment = collect_segment(
                env, self._explore(epsilon, generator), steps=self.rollout_steps,
                seed=iteration_seed(config.seed, iteration), with_state=self.needs_state,
            )  # fmt: skip
        check_segment(segment, iteration)
        if self.signals is not None:  # computed at collection, stored with the episode
            segment.signals = dict(self.signals.signals(segment))
            self.signals.observe(segment)
        sharing_stats = model.sharing.after_rollout(segment, model)
        self.buffer.add(segment)
        if self.updates == 0:  # statistics of the experience before learning, then frozen
            model.actor.obs_norm.update(segment.obs)
            if segment.state is not None:
                model.state_norm.update(segment.state)
            self.target.load_state_dict(model.state_dict())
        rollout_s = time.perf_counter() - tick
        stats: dict[str, float] = {}
        if self.buffer.transitions >= max(config.learning_starts, 1):
            count = gradient_steps(config.replay_ratio, self.steps_per_iteration,
                                   config.batch_size)  # fmt: skip
            totals: dict[str, float] = {}
            for _ in range(count):
                for key, value in self.update(generator).items():
                    totals[key] = totals.get(key, 0.0) + value
            stats = {key: value / count for key, value in totals.items()}
            stats["gradient_steps"] = float(count)
        constraint_stats = self.signals.update(iteration) if self.signals else {}
        return {
            "rollout_s": rollout_s,
            "update_s": time.perf_counter() - tick - rollout_s,
            **segment.metrics,
            **stats,
            **sharing_stats,
            **constraint_stats,
            "epsilon": epsilon,
            "buffer_episodes": float(len(self.buffer)),
            "learning_rate": config.learning_rate,
        }

    # ----------------------------------------------------------------- one gradient step
    def update(self, generator: torch.Generator) -> dict[str, float]:
        """One gradient step on a sampled batch; returns its statistics."""
        config, model, target = self.config, self.model, self.target
        batch = self.buffer.sample(config.batch_size, generator)
        rewards = batch.rewards
        if self.signals is not None:
            rewards = self.signals.shape_rewards(rewards, batch)
        if config.reward_normalisation:
            rewards = standardise(rewards)
        groups = model.groups(batch.obs.device)
        actions = batch.actions  # (B, N)
        q_all = model.utilities(batch.obs, groups)  # (B, N, n)
        q_taken = q_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (B, N)
        not_done = 1.0 - batch.dones  # (B,)
        with torch.no_grad():
            target_next = target.utilities(batch.next_obs, groups)
            chooser = model.utilities(batch.next_obs, groups) if config.double_q else target_next
            next_action = masked_logits(chooser, batch.next_mask).argmax(dim=-1, keepdim=True)
            q_next = target_next.gather(-1, next_action).squeeze(-1)  # (B, N)
        out: dict[str, float] = {}
        algo = config.algo
        if algo == "iql":  # each agent its own target
            targets = rewards + config.gamma * not_done.unsqueeze(-1) * q_next
            td = q_taken - targets
            loss = (td**2).mean()
            q_mean = q_taken.mean()
        else:
            team = rewards.mean(dim=-1)  # (B,): the team reward where the env has one
            state = next_state = None
            if self.needs_state:
                assert batch.state is not None and batch.next_state is not None
                state = model.state_norm(batch.state)
                next_state = model.state_norm(batch.next_state)
            if algo == "vdn":
                q_tot = q_taken.sum(-1)
                with torch.no_grad():
                    targets = team + config.gamma * not_done * q_next.sum(-1)
            elif algo == "qmix":
                assert model.mixer is not None and target.mixer is not None
                q_tot = model.mixer(q_taken, state)
                with torch.no_grad():
                    targets = team + config.gamma * not_done * target.mixer(q_next, next_state)
            else:  # CW-QMIX (Rashid et al. 2020, section 5; pymarl's max_q_learner)
                assert model.mixer is not None and target.central_mixer is not None
                q_tot = model.mixer(q_taken, state)
                central_taken = model.central_utilities(batch.obs, groups).gather(
                    -1, actions.unsqueeze(-1)).squeeze(-1)  # fmt: skip
                q_star = model.central_mixer(central_taken, state)  # type: ignore[misc]
                with torch.no_grad():
                    central_next = target.central_utilities(batch.next_obs, groups).gather(
                        -1, next_action).squeeze(-1)  # fmt: skip
                    targets = team + config.gamma * not_done * target.central_mixer(
                        central_next, next_state)  # fmt: skip
                    greedy = masked_logits(q_all.detach(), batch.mask).argmax(-1, keepdim=True)
                    central_greedy = target.central_utilities(batch.obs, groups).gather(
                        -1, greedy).squeeze(-1)  # fmt: skip
                    q_star_greedy = target.central_mixer(central_greedy, state)
                    is_greedy = (actions == greedy.squeeze(-1)).all(dim=-1)
                    weights = torch.where(
                        is_greedy | (targets > q_star_greedy), 1.0, config.wqmix_alpha
                    )
                central_loss = ((q_star - targets) ** 2).mean()
                out["central_loss"] = central_loss.item()
                out["wqmix_weight"] = weights.mean().item()
            td = q_tot - targets
            if algo == "wqmix":
                loss = (weights * td**2).mean() + central_loss
            else:
                loss = (td**2).mean()
            q_mean = q_tot.mean()
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite TD loss ({loss.item()}) at gradient step {self.updates + 1}; lower "
                "learning_rate or check the environment's reward scale"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % config.target_update_every == 0:
            self.target.load_state_dict(model.state_dict())
        out.update(
            loss=loss.item(), td_error_abs=td.detach().abs().mean().item(),
            q_mean=q_mean.item(), grad_norm=float(grad_norm),
        )  # fmt: skip
        return out

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "updates": self.updates,
            "constraint": self.signals.state_dict() if self.signals else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.updates = int(state["updates"])
        if self.signals is not None:
            self.signals.load_state_dict(state.get("constraint", {}))


def build_q_learner(spec: EnvSpec, config: Any, constraint: Constraint | None) -> QLearning:
    """The :data:`~marra.rl.config.ALGORITHMS` builder of iql, vdn, qmix and wqmix."""
    return QLearning(spec, config, constraint)


_DESCRIPTIONS = {
    "iql": "independent Q-learning: each agent's utilities fit its own TD target",
    "vdn": "value decomposition: the sum of the agents' utilities fits the team TD target",
    "qmix": "QMIX: a monotonic mixing network with hypernetworks on env.state()",
    "wqmix": "centrally-weighted QMIX: QMIX weighted towards better joint actions by a central Q*",
}
for _name, _needs_state in Q_ALGORITHMS.items():
    ALGORITHMS[_name] = AlgorithmInfo(
        _name, "q-learning", _DESCRIPTIONS[_name], discrete=True, continuous=False,
        needs_state=_needs_state, on_policy=False, default_critic="none",
        builder=build_q_learner, config_cls=QConfig,
    )  # fmt: skip
del _name, _needs_state

__all__ += ["build_q_learner"]
