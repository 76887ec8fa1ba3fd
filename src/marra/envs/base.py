"""The multi-agent environment contract: specs, the step record and the batched base class.

Every marra environment is ONE batched torch implementation of its dynamics: ``num_envs``
independent copies stepped at once, tensors shaped ``(num_envs, num_agents, ...)``, no Python
loop over copies or agents in ``step``. What every environment needs besides its dynamics is
written here once, in :class:`MultiAgentEnv`:

- seeding: copy ``i`` of episode ``k`` draws from ``SeedSequence(seed, spawn_key=(i, k))``
  (machine-independent, so a run on another machine or a Ray worker sees the same episodes);
  ``reset(seed=s)`` restarts the episode counters at 0, ``reset()`` advances them;
- the guards: stepping before ``reset``, stepping a finished copy without ``autoreset``, action
  shapes, dtypes, ranges and masks, NaN and infinite continuous actions (treated as 0, then
  clipped to the bounds: never propagated);
- the clock: ``t`` per copy, ``truncated`` at ``spec.horizon`` unless the copy terminated;
- the episode record: each agent's undiscounted return, ``info["episode_outcome"]`` and
  ``info["episode_metrics"]`` at the step that ends an episode;
- auto-reset (``info["final_obs"]``, ``info["final_state"]``, ``info["reset_mask"]``);
- the ``random`` baseline.

A subclass writes only :meth:`~MultiAgentEnv._reset_copies`, :meth:`~MultiAgentEnv._transition`,
:meth:`~MultiAgentEnv._observe`, :meth:`~MultiAgentEnv.state` and, where it has them,
:meth:`~MultiAgentEnv._action_mask`, :meth:`~MultiAgentEnv._episode_metrics`,
:meth:`~MultiAgentEnv._episode_outcome` and :meth:`~MultiAgentEnv.baseline`. ``docs/envs.md``
shows a complete example; :func:`marra.envs.register` makes it available to every view,
learner and command.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import numpy as np
import torch

from .errors import EnvError, EnvStateError

__all__ = [
    "ActionSpec",
    "EnvSpec",
    "Step",
    "MultiAgentEnv",
    "Baseline",
    "RandomBaseline",
    "EnvError",
    "check_int",
    "check_number",
    "check_choice",
]


# --------------------------------------------------------------------------- argument checks
def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; raises :class:`EnvError` naming ``name``."""
    try:
        whole = int(value)
        ok = not isinstance(value, bool) and whole == value and whole >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if ok and maximum is not None and whole > maximum:
        ok = False
    if not ok:
        upper = "" if maximum is None else f" and <= {maximum:,}"
        raise EnvError(f"{name}: must be an integer >= {minimum}{upper}, got {value!r}")
    return whole


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float within the bounds (``strict``: ``> minimum``)."""
    try:
        number = float(value)
        ok = not isinstance(value, bool) and not math.isnan(number)
    except (TypeError, ValueError, OverflowError):
        ok, number = False, float("nan")
    if ok and finite and not math.isfinite(number):
        ok = False
    if ok and minimum is not None and (number < minimum or (strict and number == minimum)):
        ok = False
    if ok and maximum is not None and number > maximum:
        ok = False
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if strict else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        what = "a finite number" if finite else "a number"
        suffix = f" {' and '.join(bounds)}" if bounds else ""
        raise EnvError(f"{name}: must be {what}{suffix}, got {value!r}")
    return number


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise EnvError(f"{name}: must be one of {', '.join(map(str, choices))}; got {value!r}")
    return str(value)


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ActionSpec:
    """What one agent sends per step.

    ``kind="discrete"``: one of ``n`` actions, an int64 per agent (the joint action is
    ``(num_envs, num_agents)``). ``kind="continuous"``: ``dim`` floats per agent in
    ``[low, high]`` (the joint action is ``(num_envs, num_agents, dim)``).
    """

    kind: Literal["discrete", "continuous"]
    n: int | None = None
    dim: int | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "discrete":
            if self.n is None or int(self.n) < 1:
                raise EnvError(f"action.n: a discrete action needs n >= 1, got {self.n!r}")
            if self.dim is not None or self.low is not None or self.high is not None:
                raise EnvError("action: dim/low/high are for continuous actions only")
        elif self.kind == "continuous":
            if self.dim is None or int(self.dim) < 1:
                raise EnvError(f"action.dim: a continuous action needs dim >= 1, got {self.dim!r}")
            if self.n is not None:
                raise EnvError("action.n: is for discrete actions only")
            low = -math.inf if self.low is None else float(self.low)
            high = math.inf if self.high is None else float(self.high)
            if not low < high:
                raise EnvError(f"action: low must be < high, got [{low}, {high}]")
            object.__setattr__(self, "low", low)
            object.__setattr__(self, "high", high)
        else:
            raise EnvError(f"action.kind: 'discrete' or 'continuous', got {self.kind!r}")

    @classmethod
    def discrete(cls, n: int) -> ActionSpec:
        return cls("discrete", n=int(n))

    @classmethod
    def continuous(cls, dim: int = 1, low: float = -1.0, high: float = 1.0) -> ActionSpec:
        return cls("continuous", dim=int(dim), low=low, high=high)

    @property
    def is_discrete(self) -> bool:
        return self.kind == "discrete"

    def describe(self) -> str:
        if self.is_discrete:
            return f"discrete({self.n})"
        return f"continuous(dim={self.dim}, [{self.low:g}, {self.high:g}])"


@dataclass(frozen=True)
class EnvSpec:
    """Everything a learner, a view or a command needs to know about an environment.

    Attributes:
        name: the registry name (``marra.envs.make(name)``).
        num_agents: agents per copy.
        agent_ids: one name per agent (the PettingZoo agent names).
        obs_dim: observation features per agent.
        state_dim: features of the global state (:meth:`MultiAgentEnv.state`).
        action: the :class:`ActionSpec` of one agent.
        horizon: steps per episode (an episode ends earlier only if it terminates).
        reward: ``"agent"`` (each agent its own reward) or ``"team"`` (one shared reward, given
            to every agent).
        metrics: names of the domain metrics in ``info["episode_metrics"]``.
        baselines: names of the environment's rule-based or classical methods
            (:meth:`MultiAgentEnv.baseline`).
        obs_names: optional names of the observation features.
        outcome: what ``info["episode_outcome"]`` holds (a short phrase, for docs and tables).
        any_num_agents: a policy without per-agent parameters runs on any ``num_agents``.
        action_scale: for continuous actions, the typical size of a useful action: learners
            scale their unit Gaussian outputs by it (None: half the action range).
        critic: the centralised critic input that MAPPO uses on this environment when its
            config says ``critic="auto"``: ``"state"`` or ``"pool"`` (None: MAPPO's default,
            ``"state"``). An explicit ``critic`` in the config always wins.
    """

    name: str
    num_agents: int
    agent_ids: tuple[str, ...]
    obs_dim: int
    state_dim: int
    action: ActionSpec
    horizon: int
    reward: Literal["agent", "team"]
    metrics: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ("random",)
    obs_names: tuple[str, ...] | None = None
    outcome: str = "each agent's undiscounted return"
    any_num_agents: bool = True
    action_scale: float | None = None
    critic: Literal["state", "pool"] | None = None

    def __post_init__(self) -> None:
        check_int("spec.num_agents", self.num_agents)
        check_int("spec.obs_dim", self.obs_dim)
        check_int("spec.state_dim", self.state_dim)
        check_int("spec.horizon", self.horizon)
        object.__setattr__(self, "agent_ids", tuple(str(a) for a in self.agent_ids))
        if len(self.agent_ids) != self.num_agents or len(set(self.agent_ids)) != self.num_agents:
            raise EnvError(
                f"spec.agent_ids: need {self.num_agents} distinct names, got {len(self.agent_ids)}"
            )
        if self.critic not in (None, "state", "pool"):
            raise ValueError(f"spec.critic: 'state', 'pool' or None, got {self.critic!r}")
        if self.reward not in ("agent", "team"):
            raise EnvError(f"spec.reward: 'agent' or 'team', got {self.reward!r}")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if self.obs_names is not None:
            object.__setattr__(self, "obs_names", tuple(self.obs_names))
            if len(self.obs_names) != self.obs_dim:
                raise EnvError(
                    f"spec.obs_names: {len(self.obs_names)} names for obs_dim {self.obs_dim}"
                )


class Step(NamedTuple):
    """What :meth:`MultiAgentEnv.step` returns (unpacks like Gymnasium's 5-tuple).

    ``obs (num_envs, num_agents, obs_dim)`` float32; ``reward (num_envs, num_agents)`` float32;
    ``terminated``, ``truncated`` ``(num_envs,)`` bool; ``info`` a dict of tensors with leading
    dimension ``num_envs`` (``episode_metrics`` is a dict of ``(num_envs,)`` tensors).
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, Any]


# --------------------------------------------------------------------------- baselines
class Baseline(Protocol):
    """A rule-based or classical method of an environment: ``act(obs) -> actions`` for every
    copy of the environment it was made for (it may read that environment's state)."""

    def reset(self) -> None:
        """Called after every ``env.reset`` (for methods with memory)."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Joint actions for every copy, as ``env.step`` takes them."""
        ...


class RandomBaseline:
    """Uniformly random actions: among the allowed actions (discrete, respecting the mask) or
    uniform in ``[low, high]`` (continuous; ``[-1, 1]`` where a bound is infinite). Seeded by
    ``seed`` so that evaluations are repeatable."""

    def __init__(self, env: MultiAgentEnv, seed: int = 0) -> None:
        self.env = env
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    def reset(self) -> None:
        self.generator.manual_seed(self.seed)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        spec = self.env.spec
        e, n = self.env.num_envs, spec.num_agents
        if spec.action.is_discrete:
            mask = self.env.action_mask()
            scores = torch.rand((e, n, int(spec.action.n)), generator=self.generator)
            if mask is not None:
                scores = torch.where(mask.cpu(), scores, -1.0)
            return scores.argmax(dim=-1).to(self.env.device)
        low = spec.action.low if math.isfinite(spec.action.low) else -1.0
        high = spec.action.high if math.isfinite(spec.action.high) else 1.0
        u = torch.rand((e, n, int(spec.action.dim)), generator=self.generator)
        return (low + (high - low) * u).to(self.env.device)


# --------------------------------------------------------------------------- the base class
class MultiAgentEnv(ABC):
    """Base class of every batched multi-agent environment (see the module docstring).

    Args (every subclass passes them through):
        num_envs: copies stepped at once.
        device: torch device of every tensor.
        seed: seed of the first ``reset()`` without one (None: fresh OS entropy).
        autoreset: reset copies whose episode ended inside ``step`` (the returned observation is
            the next episode's first; the final one is in ``info["final_obs"]``). Without it,
            stepping a finished copy raises :class:`EnvError`.

    Subclass hooks (all tensors on ``self.device``):
        ``_reset_copies(rows, seeds)``: start new episodes of copies ``rows`` (int64 numpy
        array), one :class:`numpy.random.SeedSequence` per row.
        ``_transition(actions) -> (reward, terminated, info)``: advance every copy by one step
        (actions already checked and cleaned); ``reward (num_envs, num_agents)``,
        ``terminated (num_envs,)`` bool, ``info`` dict of ``(num_envs, ...)`` tensors.
        ``_observe() -> (num_envs, num_agents, obs_dim)``; ``state() -> (num_envs, state_dim)``.
        ``_action_mask() -> (num_envs, num_agents, n)`` bool or None (all allowed).
        ``_episode_metrics(done) -> {name: (num_envs,)}``; ``_episode_outcome(done)``.
    """

    #: registry name of the class (set by ``marra.envs.register``; informative only)
    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        self.num_envs = check_int("num_envs", num_envs)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise EnvError(f"device: {device!r} is not a torch device ({exc})") from None
        if seed is not None:
            seed = check_int("seed", seed, minimum=0, maximum=2**63 - 1)
        self._default_seed = seed
        self.autoreset = bool(autoreset)
        self._base_seed: int | None = None
        self._episode = np.zeros(self.num_envs, dtype=np.int64)
        self._t_host = np.zeros(self.num_envs, dtype=np.int64)
        self._done_host = np.zeros(self.num_envs, dtype=bool)
        self.t = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._returns: torch.Tensor | None = None

    # ---------------------------------------------------------------- what subclasses give
    @property
    @abstractmethod
    def spec(self) -> EnvSpec:
        """The :class:`EnvSpec` of this instance."""

    @abstractmethod
    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None: ...

    @abstractmethod
    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]: ...

    @abstractmethod
    def _observe(self) -> torch.Tensor: ...

    @abstractmethod
    def state(self) -> torch.Tensor:
        """The global state ``(num_envs, state_dim)`` float32 a centralised critic sees."""

    def _action_mask(self) -> torch.Tensor | None:
        return None

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def _episode_outcome(self, done: torch.Tensor) -> torch.Tensor:
        """Each agent's outcome of the episode ``(num_envs, num_agents)``; default: its
        undiscounted return."""
        assert self._returns is not None
        return self._returns.to(torch.float32)

    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        """The rule-based method ``name`` (one of ``spec.baselines``) for this instance."""
        if name == "random" and "random" in self.spec.baselines:
            return RandomBaseline(self, seed=seed)
        raise EnvError(
            f"baseline: {self.spec.name} has no baseline {name!r}; "
            f"its baselines are {', '.join(self.spec.baselines) or '(none)'}"
        )

    # ---------------------------------------------------------------- public API
    @property
    def num_agents(self) -> int:
        return self.spec.num_agents

    @property
    def horizon(self) -> int:
        return self.spec.horizon

    @property
    def obs_dim(self) -> int:
        return self.spec.obs_dim

    @property
    def state_dim(self) -> int:
        return self.spec.state_dim

    def action_mask(self) -> torch.Tensor | None:
        """Allowed actions ``(num_envs, num_agents, n)`` bool (discrete actions), or None for
        continuous actions."""
        if not self.spec.action.is_discrete:
            return None
        mask = self._action_mask()
        if mask is None:
            n = int(self.spec.action.n)
            mask = torch.ones(
                (self.num_envs, self.spec.num_agents, n), dtype=torch.bool, device=self.device
            )
        return mask

    def copy_seeds(self, rows: np.ndarray) -> list[np.random.SeedSequence]:
        """The seed sequences of the current episodes of copies ``rows``."""
        assert self._base_seed is not None
        return [
            np.random.SeedSequence(self._base_seed, spawn_key=(int(i), int(self._episode[i])))
            for i in rows
        ]

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> torch.Tensor:
        """Start a new episode in every copy; returns obs ``(num_envs, num_agents, obs_dim)``.

        ``seed`` given: copy ``i`` draws from ``SeedSequence(seed, spawn_key=(i, 0))`` (the same
        seed gives the same episodes). No seed: every copy's episode counter advances (the first
        call uses the constructor's ``seed``, or OS entropy when that is None).
        ``options`` is accepted for Gymnasium compatibility and unused.
        """
        if seed is not None:
            self._base_seed = check_int("seed", seed, minimum=0, maximum=2**63 - 1)
            self._episode[:] = 0
        elif self._base_seed is None:
            self._base_seed = (
                int(self._default_seed)
                if self._default_seed is not None
                else int(np.random.SeedSequence().entropy % (2**63))
            )
            self._episode[:] = 0
        else:
            self._episode += 1
        self._begin_episodes(np.arange(self.num_envs))
        return self._observe()

    def reset_done(self, mask: torch.Tensor | np.ndarray | Sequence[bool]) -> torch.Tensor:
        """Start the next episode of the copies where ``mask (num_envs,)`` is True; returns obs
        of every copy."""
        mask_np = np.asarray(
            mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask, dtype=bool
        )
        if mask_np.shape != (self.num_envs,):
            raise EnvError(f"mask: expected shape ({self.num_envs},), got {mask_np.shape}")
        if self._base_seed is None:
            raise EnvStateError("reset_done() called before reset()")
        rows = np.flatnonzero(mask_np)
        if rows.size:
            self._episode[rows] += 1
            self._begin_episodes(rows)
        return self._observe()

    def _begin_episodes(self, rows: np.ndarray) -> None:
        if self._returns is None:
            self._returns = torch.zeros(
                (self.num_envs, self.spec.num_agents), dtype=torch.float64, device=self.device
            )
        index = torch.as_tensor(rows, device=self.device)
        self._reset_copies(rows, self.copy_seeds(rows))
        self._t_host[rows] = 0
        self._done_host[rows] = False
        self.t = _writable(self.t)
        self.t[index] = 0
        self._returns = _writable(self._returns)
        self._returns[index] = 0.0

    def _check_actions(self, actions: Any) -> torch.Tensor:
        spec = self.spec
        e, n = self.num_envs, spec.num_agents
        actions = torch.as_tensor(actions, device=self.device)
        if spec.action.is_discrete:
            if tuple(actions.shape) != (e, n):
                raise EnvError(
                    f"actions: expected shape ({e}, {n}) (num_envs, num_agents) of action "
                    f"indices, got {tuple(actions.shape)}"
                )
            if actions.is_floating_point() or actions.dtype == torch.bool:
                if actions.dtype == torch.bool or not torch.all(actions == actions.round()):
                    raise EnvError(f"actions: expected integer action indices, got {actions.dtype}")
            actions = actions.to(torch.int64)
            bad = (actions < 0) | (actions >= int(spec.action.n))
            if bool(bad.any()):
                copy, agent = (int(v) for v in bad.nonzero()[0])
                raise EnvError(
                    f"actions: copy {copy}, agent {spec.agent_ids[agent]!r} sent action "
                    f"{int(actions[copy, agent])}, outside 0..{int(spec.action.n) - 1}"
                )
            mask = self._action_mask()
            if mask is not None:
                allowed = mask.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
                if not bool(allowed.all()):
                    copy, agent = (int(v) for v in (~allowed).nonzero()[0])
                    raise EnvError(
                        f"actions: copy {copy}, agent {spec.agent_ids[agent]!r} sent masked "
                        f"action {int(actions[copy, agent])} (see action_mask())"
                    )
            return actions
        dim = int(spec.action.dim)
        if dim == 1 and tuple(actions.shape) == (e, n):
            actions = actions.unsqueeze(-1)
        if tuple(actions.shape) != (e, n, dim):
            raise EnvError(
                f"actions: expected shape ({e}, {n}, {dim}) (num_envs, num_agents, dim), "
                f"got {tuple(actions.shape)}"
            )
        actions = actions.to(torch.float64)
        actions = torch.where(torch.isfinite(actions), actions, 0.0)  # NaN / inf: a no-op
        return actions.clamp(spec.action.low, spec.action.high)

    def step(self, actions: Any) -> Step:
        """Advance every copy by one step (see :class:`Step`)."""
        if self._base_seed is None:
            raise EnvStateError("step() called before reset()")
        if self._done_host.any():
            finished = np.flatnonzero(self._done_host).tolist()
            raise EnvStateError(
                f"step() called on copies {finished[:10]} whose episode ended (terminated or "
                "reached the horizon); call reset() or reset_done(mask), or construct with "
                "autoreset=True"
            )
        actions = self._check_actions(actions)
        reward, terminated, info = self._transition(actions)
        shape = (self.num_envs, self.spec.num_agents)
        if tuple(reward.shape) != shape or tuple(terminated.shape) != (self.num_envs,):
            raise EnvError(
                f"{type(self).__name__}._transition: reward must be {shape} (num_envs, "
                f"num_agents) and terminated ({self.num_envs},); got {tuple(reward.shape)} and "
                f"{tuple(terminated.shape)}"
            )
        reward = reward.to(torch.float32)
        terminated = terminated.to(torch.bool)
        assert self._returns is not None
        self._returns = self._returns + reward.to(torch.float64)
        self.t = self.t + 1
        self._t_host += 1
        truncated = (self.t >= self.spec.horizon) & ~terminated
        done = terminated | truncated
        done_host = done.cpu().numpy()
        if done_host.any():
            info["episode_outcome"] = self._episode_outcome(done).to(torch.float32)
            info["episode_return"] = self._returns.to(torch.float32)
            info["episode_length"] = self.t.clone()
            info["episode_metrics"] = {
                k: v.to(torch.float32) for k, v in self._episode_metrics(done).items()
            }
        obs = self._observe()
        if self.autoreset:
            info["final_obs"] = obs
            info["final_state"] = self.state()
            info["reset_mask"] = done
            if done_host.any():
                self._done_host[:] = done_host
                obs = self.reset_done(done_host)
        else:
            self._done_host[:] = done_host
        return Step(obs, reward, terminated, truncated, info)

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources (worker processes of adapters); nothing for batched envs."""

    def render_text(self, copy: int = 0) -> str:
        """A short text picture of copy ``copy`` (used by the views' ``ansi``/``human`` modes)."""
        spec = self.spec
        return f"{spec.name}: copy {copy}, step {int(self._t_host[copy])}/{spec.horizon}"

    def __repr__(self) -> str:
        spec = self.spec
        return (
            f"{type(self).__name__}(name={spec.name!r}, num_envs={self.num_envs}, "
            f"num_agents={spec.num_agents}, obs_dim={spec.obs_dim}, "
            f"action={spec.action.describe()}, horizon={spec.horizon}, device={self.device})"
        )


def _writable(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor made under ``torch.inference_mode`` cannot be written in place outside it."""
    if tensor.is_inference() and not torch.is_inference_mode_enabled():
        return tensor.clone()
    return tensor


@dataclass
class EpisodeAccumulator:
    """Running sums of per-step ``(num_envs,)`` values over the current episode of each copy,
    for environments whose episode metrics are means over steps."""

    names: tuple[str, ...]
    num_envs: int
    device: torch.device
    sums: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sums = {
            k: torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)
            for k in self.names
        }

    def reset(self, rows: np.ndarray) -> None:
        index = torch.as_tensor(rows, device=self.device)
        for k in self.names:
            self.sums[k] = _writable(self.sums[k])
            self.sums[k][index] = 0.0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k in self.names:
            self.sums[k] = self.sums[k] + values[k].to(torch.float64)

    def means(self, steps: torch.Tensor) -> dict[str, torch.Tensor]:
        count = steps.to(torch.float64).clamp_min(1.0)
        return {k: self.sums[k] / count for k in self.names}
