"""Experience for on-policy learners: the rollout buffer, its collection, and GAE.

One iteration resets every copy of the environment with a seed derived from ``(run seed,
iteration)`` and runs the stochastic policy for ``rollout_steps`` steps (by default the
environment's horizon, so every iteration is one whole episode of every copy). Copies whose
episode ends earlier are reset inside ``step`` (auto-reset) and go on with a new episode; the
rollout records where episodes ended, and GAE never bootstraps across an episode's end. An
episode cut by the end of the rollout (only when ``rollout_steps`` is not the horizon) is
bootstrapped with the critic's value of the last observation.

The end of the horizon is treated as the end of the task (nothing is bootstrapped past it):
marra's environments observe the time left where it matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Rollout", "compute_gae", "collect_rollout", "iteration_seed", "episode_seed"]


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets.

    Args:
        rewards: ``(T, ...)``, r_t received after the action at step t.
        values: ``(T, ...)``, V(s_t).
        dones: ``(T, ...)``, 1 where the episode ended with step t (s_{t+1} is final: nothing is
            bootstrapped from it), else 0.
        last_value: ``(...)``, V(s_T), bootstrapped after the last step unless ``dones[T-1]``.
        gamma, lam: discount and GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``(T, ...)``:

        - delta_t = r_t + gamma V(s_{t+1}) (1 - d_t) - V(s_t)  # paper 000 Eq. (3)
        - A_t = sum_l (gamma lam)^l delta_{t+l}, computed backwards as
          A_t = delta_t + gamma lam (1 - d_t) A_{t+1}  # paper 000 Eq. (4)
        - returns R_t = A_t + V(s_t), the lambda-return, the critic's target in Eq. (7) (it
          equals the discounted return sum_l gamma^l r_{t+l} when lam = 1).
    """
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(rewards.shape[0])):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]  # paper 000 Eq. (3)
        next_advantage = delta + gamma * lam * not_done * next_advantage  # paper 000 Eq. (4)
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages, advantages + values


def iteration_seed(seed: int, iteration: int) -> int:
    """The seed that resets the environment copies at ``iteration``: independent streams per
    iteration, and all the environment state a resumed run needs."""
    return int(np.random.SeedSequence([int(seed), int(iteration)]).generate_state(1)[0])


episode_seed = iteration_seed  # the name of marra 0.1


@dataclass
class Rollout:
    """One iteration of experience: ``T`` steps of ``E`` copies of ``N`` agents.

    ``obs (T, E, N, obs_dim)``; ``state (T, E, state_dim)`` or None; ``masks (T, E, N, n)`` bool
    or None; ``actions (T, E, N, dim)`` float (policy units) or ``(T, E, N)`` int64;
    ``log_probs (T, E, N)``; ``values``, ``rewards`` and ``dones``: ``(T, E)`` with a team
    critic (one value per state), else ``(T, E, N)``; ``last_value`` ``(E,)`` or ``(E, N)``;
    ``metrics``: means over the episodes that ended in the rollout (``return``, ``team_return``
    and the environment's ``episode_metrics``), plus ``episodes``; ``episode_outcomes``: the
    finished episodes' ``info["episode_outcome"]`` rows ``(k, N)``, one tensor per step at which
    some episode ended, and ``episode_ends``: for each of them ``(t, copies)``, the rollout step
    and the ``(k,)`` copy indices of those rows (constraints such as ELD need to know which steps
    belong to which episode); ``final_obs (E, N, obs_dim)``, ``final_state`` and ``final_mask``:
    what follows the last step (for learners that bootstrap from it with their own critic).
    """

    obs: torch.Tensor
    state: torch.Tensor | None
    masks: torch.Tensor | None
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    last_value: torch.Tensor
    metrics: dict[str, float]
    episode_outcomes: list[torch.Tensor] = field(default_factory=list)
    infos: dict[str, Any] = field(default_factory=dict)
    episode_ends: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    final_obs: torch.Tensor | None = None
    final_state: torch.Tensor | None = None
    final_mask: torch.Tensor | None = None


class EpisodeStats:
    """Sums of the episode records (``episode_return``, ``episode_metrics``) of the episodes
    that end during a rollout, for the iteration's log row."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, float] = {}
        self.outcomes: list[torch.Tensor] = []
        self.ends: list[tuple[int, torch.Tensor]] = []

    def add(self, info: dict[str, Any], done: torch.Tensor, t: int = -1) -> None:
        if "episode_return" not in info:
            return
        rows = done.nonzero().squeeze(-1)
        k = int(rows.numel())
        if k == 0:
            return
        self.count += k
        returns = info["episode_return"][rows].to(torch.float64)  # (k, N)
        values = {"return": returns.mean(-1), "team_return": returns.sum(-1)}
        for key, tensor in info.get("episode_metrics", {}).items():
            values[key] = tensor[rows].to(torch.float64)
        outcome = info.get("episode_outcome")
        if outcome is not None:
            self.outcomes.append(outcome[rows].detach().cpu())
            self.ends.append((int(t), rows.detach().cpu()))
        for key, tensor in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(tensor.sum())

    def means(self) -> dict[str, float]:
        if self.count == 0:
            return {"episodes": 0.0}
        return {"episodes": float(self.count), **{k: v / self.count for k, v in self.sums.items()}}


@torch.no_grad()
def collect_rollout(
    env: Any,
    model: Any,
    *,
    steps: int,
    generator: torch.Generator,
    seed: int | None,
    warm_obs_norm: bool = False,
    with_values: bool = True,
) -> Rollout:
    """Reset every copy of ``env`` with ``seed`` and run ``model``'s stochastic policy for
    ``steps`` steps; record what PPO needs (see :class:`Rollout`).

    ``with_values=False`` skips the critic (``values`` and ``last_value`` are zeros): for
    learners whose critic needs the actions taken (COMA's Q) and is evaluated afterwards.

    ``env`` must be built with ``autoreset=True`` when episodes may end before ``steps``; the
    final step of the rollout is taken without auto-reset (nothing would use the new episodes).
    With ``warm_obs_norm`` the actor's observation statistics first take in the reset
    observations (the first iteration of a run, so it does not act on unnormalised inputs).
    """
    obs = env.reset(seed=seed)
    if warm_obs_norm:
        model.actor.obs_norm.update(obs)
    spec = env.spec
    e, n, obs_dim = obs.shape
    device = obs.device
    discrete = spec.action.is_discrete
    needs_state = model.needs_state
    team = model.team_value
    groups = model.groups(device)
    obs_buf = torch.empty((steps, e, n, obs_dim), dtype=obs.dtype, device=device)
    state_buf = (
        torch.empty((steps, e, spec.state_dim), dtype=torch.float32, device=device)
        if needs_state
        else None
    )
    if discrete:
        actions = torch.empty((steps, e, n), dtype=torch.int64, device=device)
        masks = torch.empty((steps, e, n, int(spec.action.n)), dtype=torch.bool, device=device)
    else:
        actions = torch.empty((steps, e, n, int(spec.action.dim)), device=device)
        masks = None
    log_probs = torch.empty((steps, e, n), device=device)
    shape = (steps, e) if team else (steps, e, n)
    values = torch.empty(shape, device=device)
    rewards = torch.empty(shape, device=device)
    dones = torch.empty(shape, device=device)
    stats = EpisodeStats()
    autoreset = env.autoreset
    state = env.state() if needs_state else None
    try:
        for t in range(steps):
            obs_buf[t] = obs
            mask = env.action_mask() if discrete else None
            if discrete:
                masks[t] = mask  # type: ignore[index]
            if needs_state:
                state_buf[t] = state  # type: ignore[index]
            action, log_prob = model.actor.sample(obs, groups, generator, mask)
            if with_values:
                values[t] = model.critic_value(obs, state, groups)  # normalised units
            if t == steps - 1:
                env.autoreset = False  # the episodes a reset would start are never used
            step = env.step(model.actor.env_action(action))
            actions[t], log_probs[t] = action, log_prob
            done = step.terminated | step.truncated
            if team:
                rewards[t] = step.reward[:, 0]
                dones[t] = done.to(dones.dtype)
            else:
                rewards[t] = step.reward
                dones[t] = done.to(dones.dtype).unsqueeze(-1)
            stats.add(step.info, done, t)
            obs = step.obs
            state = env.state() if needs_state else None
    finally:
        env.autoreset = autoreset
    if with_values:
        values = model.value_norm.denormalize(values)
        last_value = model.value(obs, state, groups)
    else:
        values.zero_()
        last_value = torch.zeros(values.shape[1:], device=device)
    metrics = stats.means()
    return Rollout(
        obs_buf, state_buf, masks, actions, log_probs, values, rewards, dones, last_value,
        metrics, stats.outcomes, episode_ends=stats.ends, final_obs=obs, final_state=state,
        final_mask=env.action_mask() if discrete else None,
    )  # fmt: skip
