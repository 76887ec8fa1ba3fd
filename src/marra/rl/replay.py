"""Experience for replay-based learners: collected segments, the episode replay buffer on the
device, and the hook that stores constraint signals with each episode.

One iteration of a replay-based learner resets every copy of the environment with the seed of
``(run seed, iteration)`` (as the PPO family does, so the iteration counter is all the
environment state a resume needs) and runs its exploration policy for ``rollout_steps`` steps,
by default the horizon: every iteration adds one whole episode per copy. Each copy's part of the
iteration is one *segment* and one entry of the buffer:

- ``obs (T + 1, N, obs_dim)``: the observation before every step and the one after the last;
- ``state (T + 1, state_dim)`` and ``masks (T + 1, N, n)`` likewise (where the learner needs
  them);
- ``actions (T, N)`` (int) or ``(T, N, dim)`` (float, policy units), ``rewards (T, N)``,
  ``dones (T,)`` (1 where the episode ended with that step: terminated or at the horizon;
  nothing is bootstrapped past it, as in :mod:`marra.rl.rollout`);
- ``signals``: named ``(T, ...)`` tensors a constraint computed when the segment was collected
  (paper 003 section 4.2: "for replay-based training, signals are computed at collection time and
  stored with the episode for consistent off-policy updates").

Where an episode ends inside a segment (an early termination with auto-reset), the next step's
observation is the next episode's first one; it is never used, since ``dones`` stops the
bootstrap there. Updates sample *transitions* uniformly from the stored segments (the learners'
networks are feed-forward, so a transition needs no history).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .rollout import EpisodeStats

__all__ = [
    "Segment",
    "Transitions",
    "EpisodeBuffer",
    "ReplaySignals",
    "collect_segment",
    "buffer_bytes",
]


@dataclass
class Segment:
    """``T`` steps of ``E`` copies (see the module docstring for the shapes, with a leading
    ``E``); ``metrics`` as :attr:`marra.rl.rollout.Rollout.metrics`; ``episode_outcomes`` the
    ``info["episode_outcome"]`` rows of the episodes that ended."""

    obs: torch.Tensor
    state: torch.Tensor | None
    masks: torch.Tensor | None
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    metrics: dict[str, float]
    episode_outcomes: list[torch.Tensor] = field(default_factory=list)
    signals: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Transitions:
    """A sampled batch of ``B`` transitions: ``obs``/``next_obs (B, N, obs_dim)``,
    ``state``/``next_state (B, state_dim)`` or None, ``mask``/``next_mask (B, N, n)`` or None,
    ``actions (B, N)`` int64 or ``(B, N, dim)``, ``rewards (B, N)``, ``dones (B,)`` and the
    stored ``signals`` at the sampled steps."""

    obs: torch.Tensor
    next_obs: torch.Tensor
    state: torch.Tensor | None
    next_state: torch.Tensor | None
    mask: torch.Tensor | None
    next_mask: torch.Tensor | None
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    signals: dict[str, torch.Tensor] = field(default_factory=dict)


class ReplaySignals:
    """The extension point for constraints on replay-based learners (ELD, paper 003 section
    4.2).

    A constraint that supports replay-based learners implements these methods; the base class
    changes nothing. The learner calls :meth:`signals` on every collected segment (their values
    are stored with it in the buffer), :meth:`observe` with its finished episodes' outcomes,
    :meth:`shape_rewards` on every sampled batch before the TD targets are formed, and
    :meth:`update` once an iteration (periodic dual ascent).
    """

    def signals(self, segment: Segment) -> dict[str, torch.Tensor]:
        """Named ``(E, T, ...)`` tensors computed at collection time, stored with the segment."""
        return {}

    def observe(self, segment: Segment) -> None:
        """Take in a segment's finished episodes (``segment.episode_outcomes``)."""

    def shape_rewards(self, rewards: torch.Tensor, batch: Transitions) -> torch.Tensor:
        """The rewards ``(B, N)`` the TD targets use."""
        return rewards

    def update(self, iteration: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""


def _action_dtype(num_actions: int) -> torch.dtype:
    return torch.int16 if num_actions <= 2**15 - 1 else torch.int64


def buffer_bytes(
    *, capacity: int, steps: int, num_agents: int, obs_dim: int, state_dim: int,
    num_actions: int | None, action_dim: int | None,
) -> int:  # fmt: skip
    """Bytes of an :class:`EpisodeBuffer` of ``capacity`` segments of ``steps`` steps."""
    per_step = num_agents * (obs_dim * 4 + 4) + state_dim * 4 + 4  # obs, reward, state, done
    if num_actions is not None:
        per_step += num_agents * (num_actions + _action_dtype(num_actions).itemsize)
    else:
        per_step += num_agents * int(action_dim or 1) * 4
    return int(capacity * (steps + 1) * per_step)


class EpisodeBuffer:
    """A ring buffer of ``capacity`` segments on ``device`` (the oldest is overwritten first).

    Args:
        capacity: segments kept (whole episodes with the default ``rollout_steps``).
        steps: steps per segment ``T``.
        num_agents, obs_dim, state_dim: the environment's sizes (``state_dim`` 0: no state).
        num_actions: discrete actions (the masks are stored), or None for continuous ones of
            ``action_dim`` floats.
        device: where every tensor lives.
    """

    def __init__(
        self,
        capacity: int,
        steps: int,
        *,
        num_agents: int,
        obs_dim: int,
        state_dim: int,
        num_actions: int | None,
        action_dim: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.capacity, self.steps = int(capacity), int(steps)
        c, t, n = self.capacity, self.steps, int(num_agents)
        self.device = torch.device(device)
        kw = {"device": self.device}
        self.obs = torch.zeros((c, t + 1, n, int(obs_dim)), dtype=torch.float32, **kw)
        self.state = (
            torch.zeros((c, t + 1, int(state_dim)), dtype=torch.float32, **kw)
            if state_dim
            else None
        )
        self.discrete = num_actions is not None
        if num_actions is not None:
            self.masks: torch.Tensor | None = torch.zeros(
                (c, t + 1, n, int(num_actions)), dtype=torch.bool, **kw
            )
            self.actions = torch.zeros((c, t, n), dtype=_action_dtype(int(num_actions)), **kw)
        else:
            self.masks = None
            self.actions = torch.zeros((c, t, n, int(action_dim or 1)), **kw)
        self.rewards = torch.zeros((c, t, n), **kw)
        self.dones = torch.zeros((c, t), **kw)
        self.signals: dict[str, torch.Tensor] = {}
        self.size = 0  # filled entries
        self.next = 0  # where the next segment goes
        self.added = 0  # segments ever added

    def __len__(self) -> int:
        return self.size

    @property
    def transitions(self) -> int:
        """Stored transitions (env-steps of one copy)."""
        return self.size * self.steps

    def nbytes(self) -> int:
        tensors = [self.obs, self.actions, self.rewards, self.dones, *self.signals.values()]
        tensors += [x for x in (self.state, self.masks) if x is not None]
        return sum(x.numel() * x.element_size() for x in tensors)

    def add(self, segment: Segment) -> None:
        """Store every copy's part of ``segment`` (``E`` entries)."""
        e = int(segment.obs.shape[0])
        if e > self.capacity:
            raise ValueError(
                f"buffer: a segment of {e} copies does not fit a buffer of {self.capacity}"
            )
        rows = (torch.arange(e) + self.next) % self.capacity
        rows = rows.to(self.device)
        self.obs[rows] = segment.obs
        if self.state is not None:
            assert segment.state is not None
            self.state[rows] = segment.state
        if self.masks is not None:
            assert segment.masks is not None
            self.masks[rows] = segment.masks
        self.actions[rows] = segment.actions.to(self.actions.dtype)
        self.rewards[rows] = segment.rewards
        self.dones[rows] = segment.dones
        for name, values in segment.signals.items():
            if name not in self.signals:
                self.signals[name] = torch.zeros(
                    (self.capacity, *values.shape[1:]), dtype=values.dtype, device=self.device
                )
            self.signals[name][rows] = values.to(self.device)
        self.next = (self.next + e) % self.capacity
        self.size = min(self.capacity, self.size + e)
        self.added += e

    def sample(self, batch_size: int, generator: torch.Generator) -> Transitions:
        """``batch_size`` transitions drawn uniformly (with replacement) from the stored ones."""
        if self.size == 0:
            raise ValueError("buffer: sample() from an empty buffer")
        flat = torch.randint(self.size * self.steps, (int(batch_size),), generator=generator)
        flat = flat.to(self.device)
        entry, t = flat // self.steps, flat % self.steps
        nxt = t + 1
        pick = lambda x, when: None if x is None else x[entry, when]  # noqa: E731
        return Transitions(
            obs=self.obs[entry, t],
            next_obs=self.obs[entry, nxt],
            state=pick(self.state, t),
            next_state=pick(self.state, nxt),
            mask=pick(self.masks, t),
            next_mask=pick(self.masks, nxt),
            actions=self.actions[entry, t].to(torch.int64 if self.discrete else torch.float32),
            rewards=self.rewards[entry, t],
            dones=self.dones[entry, t],
            signals={k: v[entry, t] for k, v in self.signals.items()},
        )

    def state_dict(self) -> dict[str, Any]:
        """The filled entries (in ring order) and the counters: checkpoints hold the buffer so
        that a resumed run samples exactly what an uninterrupted one would."""
        n = self.size
        out: dict[str, Any] = {
            "size": n, "next": self.next, "added": self.added,
            "obs": self.obs[:n].cpu(), "actions": self.actions[:n].cpu(),
            "rewards": self.rewards[:n].cpu(), "dones": self.dones[:n].cpu(),
            "signals": {k: v[:n].cpu() for k, v in self.signals.items()},
        }  # fmt: skip
        if self.state is not None:
            out["state"] = self.state[:n].cpu()
        if self.masks is not None:
            out["masks"] = self.masks[:n].cpu()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"buffer: the checkpoint holds {n} segments, capacity {self.capacity}")
        for name in ("obs", "actions", "rewards", "dones", "state", "masks"):
            target = getattr(self, name)
            if target is not None:
                target[:n] = state[name].to(self.device)
        for name, values in state.get("signals", {}).items():
            self.signals[name] = torch.zeros(
                (self.capacity, *values.shape[1:]), dtype=values.dtype, device=self.device
            )
            self.signals[name][:n] = values.to(self.device)
        self.size, self.next, self.added = n, int(state["next"]), int(state["added"])


@torch.no_grad()
def collect_segment(
    env: Any,
    act: Any,
    *,
    steps: int,
    seed: int | None,
    with_state: bool,
) -> Segment:
    """Reset every copy of ``env`` with ``seed`` and run ``act`` for ``steps`` steps.

    ``act(obs, state, mask) -> (env_action, stored_action)``: the action the environment
    receives and the one the buffer stores (policy units for continuous actions). The final
    step is taken without auto-reset (the episodes a reset would start are never used).
    """
    obs = env.reset(seed=seed)
    spec = env.spec
    e, n, obs_dim = obs.shape
    device = obs.device
    discrete = spec.action.is_discrete
    obs_buf = torch.empty((e, steps + 1, n, obs_dim), dtype=torch.float32, device=device)
    state_buf = (
        torch.empty((e, steps + 1, spec.state_dim), dtype=torch.float32, device=device)
        if with_state
        else None
    )
    masks = (
        torch.empty((e, steps + 1, n, int(spec.action.n)), dtype=torch.bool, device=device)
        if discrete
        else None
    )
    if discrete:
        actions = torch.empty((e, steps, n), dtype=torch.int64, device=device)
    else:
        actions = torch.empty((e, steps, n, int(spec.action.dim)), device=device)
    rewards = torch.empty((e, steps, n), device=device)
    dones = torch.empty((e, steps), device=device)
    stats = EpisodeStats()
    autoreset = env.autoreset
    state = env.state() if with_state else None
    mask = env.action_mask() if discrete else None
    try:
        for t in range(steps):
            obs_buf[:, t] = obs
            if with_state:
                state_buf[:, t] = state  # type: ignore[index]
            if discrete:
                masks[:, t] = mask  # type: ignore[index]
            env_action, stored = act(obs, state, mask)
            if t == steps - 1:
                env.autoreset = False
            step = env.step(env_action)
            actions[:, t] = stored
            rewards[:, t] = step.reward
            done = step.terminated | step.truncated
            dones[:, t] = done.to(dones.dtype)
            stats.add(step.info, done)
            obs = step.obs
            state = env.state() if with_state else None
            mask = env.action_mask() if discrete else None
    finally:
        env.autoreset = autoreset
    obs_buf[:, steps] = obs
    if with_state:
        state_buf[:, steps] = state  # type: ignore[index]
    if discrete:
        masks[:, steps] = mask  # type: ignore[index]
    return Segment(
        obs_buf, state_buf, masks, actions, rewards, dones, stats.means(), stats.outcomes
    )


def check_segment(segment: Segment, iteration: int) -> None:
    """Stop training on non-finite rewards or observations (naming where)."""
    from .ppo import TrainingError

    for name in ("rewards", "obs"):
        tensor = getattr(segment, name)
        if not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
            raise TrainingError(
                f"iteration {iteration}: the environment returned non-finite {name} "
                f"(first at copy {bad[0]}, step {bad[1]}); training stopped and no policy file "
                "was written"
            )


def linear_schedule(start: float, finish: float, steps: int, t: int) -> float:
    """``start`` moving linearly to ``finish`` over ``steps`` env-steps, then ``finish``."""
    if steps <= 0:
        return float(finish)
    frac = min(1.0, max(0.0, t / steps))
    return float(start + frac * (finish - start))


def gradient_steps(replay_ratio: float, transitions: int, batch_size: int) -> int:
    """Gradient steps per iteration so that each new transition is sampled ``replay_ratio``
    times on average: ``ceil(replay_ratio * transitions / batch_size)`` (at least 1)."""
    return max(1, math.ceil(replay_ratio * transitions / batch_size))
