"""PPO for the hospital network, written once: rollouts, GAE, the clipped update, the training loop.

Paper 000 (section 3, Algorithm 1) trains one PPO agent with a Gaussian policy, GAE (Eq. 3-4), the
clipped surrogate (Eq. 5-6) and a squared-error critic (Eq. 7), gamma = 0.99, lambda = 0.95,
epsilon = 0.2. marra runs it as multi-agent PPO with parameter sharing (MAPPO):

- every hospital is an agent; ONE actor, shared by all, acts on each hospital's own observation;
- with ``reward_mode="team"`` all hospitals share the team reward of the environment (paper 000
  Eq. 1), hence one team advantage per network state, estimated with a centralised critic (or a
  local one, see :class:`PPOConfig.critic`); with ``reward_mode="agent"`` each hospital i gets
  its own share r_i of Eq. (1) (they sum to the team reward), its own value V_i(s) from the
  centralised critic and its own GAE, as paper 000's Algorithm 1 gives each agent its reward;
- the ratio in Eq. 5 is taken per hospital, r_i = pi(a_i|o_i) / pi_old(a_i|o_i), each multiplied
  by the team advantage and clipped on its own, then averaged over hospitals (as in MAPPO). The
  alternative, the joint ratio prod_i r_i, is the product of n = 150 ratios: its spread grows
  with n, so nearly every sample would be clipped and the effective step vanishes. The per-agent
  ratio keeps each clip decision at the scale of one hospital's policy change, which is what
  epsilon = 0.2 was chosen for.

The environment is batched, ``(num_envs, n, ...)`` tensors throughout: no python loop over
hospitals or copies. One iteration resets every copy (seeded from ``(seed, iteration)``), rolls
the whole episode of ``horizon`` steps, then updates. Because the observation carries the time
left, the end of the horizon is the end of the task: GAE does not bootstrap past it.
"""

from __future__ import annotations

import csv
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marra._io import atomic_write_text
from marra.envs.hospital import HospitalEnv
from marra.metrics import gini

from .checkpoint import (
    CheckpointError,
    describe_settings,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from .config import PPOConfig
from .networks import ActorCritic
from .policy import save_policy

__all__ = [
    "TrainingError",
    "TrainResult",
    "Rollout",
    "compute_gae",
    "collect_rollout",
    "ppo_update",
    "train",
    "evaluate_policy",
    "episode_seed",
]

EnvFactory = Callable[..., Any]
LOG_NAME = "train_log.csv"
CHECKPOINT_NAME = "checkpoint.pt"
POLICY_NAME = "policy.pt"


class TrainingError(ValueError):
    """Training produced non-finite numbers (rewards, losses or parameters) and was stopped.

    The last checkpoint written before the failure is kept; no policy file is written.
    """


# --------------------------------------------------------------------------- advantages
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
          equals paper 000's discounted return sum_l gamma^l r_{t+l} when lam = 1).
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


# --------------------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """One iteration of experience: ``T = horizon`` steps of ``E = num_envs`` copies of n hospitals.

    ``obs (T, E, n, obs_dim)``, ``actions (T, E, n)`` (policy units, before ``action_scale``),
    ``log_probs (T, E, n)``, ``values (T, E)``, ``rewards (T, E)``, ``dones (T, E)``,
    ``last_value (E,)`` and ``metrics`` (episode summaries, floats). With per-hospital rewards
    (``reward_mode="agent"``) ``values``, ``rewards`` and ``dones`` are ``(T, E, n)`` and
    ``last_value`` is ``(E, n)``.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    last_value: torch.Tensor
    metrics: dict[str, float]


_STEP_METRICS = ("target_error", "minima_violation", "fairness", "moved", "reward_raw")


def episode_seed(seed: int, iteration: int) -> int:
    """The seed that resets the environment copies at ``iteration``: independent streams per
    iteration, and all the environment state a resumed run needs."""
    return int(np.random.SeedSequence([int(seed), int(iteration)]).generate_state(1)[0])


@torch.no_grad()
def collect_rollout(
    env: Any,
    agent: ActorCritic,
    *,
    action_scale: float,
    generator: torch.Generator,
    seed: int | None,
    agent_rewards: bool = False,
    warm_obs_norm: bool = False,
) -> Rollout:
    """Reset every copy of ``env`` with ``seed``, run the stochastic policy for ``env.horizon``
    steps and record what PPO needs. The last step ends every episode (``dones[-1] = 1``).

    With ``agent_rewards`` each hospital's reward is ``info["agent_reward"]`` ``(E, n)`` (the
    team reward for every hospital when the environment has none) and ``agent.critic`` must give
    one value per hospital; values, rewards and dones are then ``(T, E, n)``.

    With ``warm_obs_norm`` the actor's observation statistics first take in the reset
    observations (the first iteration of a run, so it does not act on unnormalised inputs)."""
    obs = env.reset(seed=seed)
    if warm_obs_norm:
        agent.actor.obs_norm.update(obs)
    horizon, (num_envs, n, obs_dim) = int(env.horizon), obs.shape
    obs_buf = torch.empty((horizon, num_envs, n, obs_dim), dtype=obs.dtype, device=obs.device)
    actions = torch.empty((horizon, num_envs, n), device=obs.device)
    log_probs = torch.empty_like(actions)
    values = torch.empty((horizon, num_envs, n) if agent_rewards else (horizon, num_envs),
                         device=obs.device)  # fmt: skip
    rewards = torch.empty_like(values)
    dones = torch.empty_like(values)
    team_return = torch.zeros(num_envs, device=obs.device)
    sums = {key: torch.zeros(num_envs, device=obs.device) for key in (*_STEP_METRICS, "mae")}
    info: dict[str, Any] = {}
    for t in range(horizon):
        obs_buf[t] = obs
        action, log_prob = agent.actor.sample(obs, generator)
        values[t] = agent.critic_value(obs)  # normalised units; mapped back once, after the loop
        obs, reward, terminated, truncated, info = env.step(action_scale * action)
        reward = info.get("team_reward", reward[:, 0] if reward.ndim == 2 else reward)
        actions[t], log_probs[t], team_return = action, log_prob, team_return + reward
        done = torch.logical_or(terminated, truncated).to(dones.dtype)
        if agent_rewards:
            own = info.get("agent_reward")
            rewards[t] = own if own is not None else reward.unsqueeze(-1)  # (E, n)
            dones[t] = done.unsqueeze(-1)
        else:
            rewards[t], dones[t] = reward, done
        for key, total in sums.items():
            if key in info:
                total += info[key]
    dones[-1] = 1.0  # the horizon ends the task (the observation carries the time left)
    values = agent.value_norm.denormalize(values)
    last_value = agent.value(obs)

    metrics = {"episode_reward": team_return.mean().item()}
    if "reward_raw" in info:
        metrics["episode_reward_raw"] = (sums.pop("reward_raw")).mean().item()
    if "mae" in info:
        metrics["mae"] = info["mae"].mean().item()  # at the end of the episode
        metrics["mae_mean"] = (sums.pop("mae") / horizon).mean().item()  # over the episode
    for key in _STEP_METRICS:
        if key in info and key in sums:
            metrics[key] = (sums[key] / horizon).mean().item()  # mean per step
    current = getattr(env, "current", None)
    if isinstance(current, torch.Tensor):
        metrics["gini"] = _mean_gini(current)
    return Rollout(obs_buf, actions, log_probs, values, rewards, dones, last_value, metrics)


def _mean_gini(staff: torch.Tensor) -> float:
    """Mean over copies of the Gini index (paper 000 Eq. 9, :func:`marra.metrics.gini`) of
    each copy's allocation ``(num_envs, n)``; once per iteration, outside the hot path."""
    return float(np.mean([gini(row) for row in staff.detach().cpu().double().numpy()]))


# --------------------------------------------------------------------------- the update
def ppo_update(
    agent: ActorCritic,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    config: PPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """K epochs of minibatch updates on one rollout; returns the iteration's loss statistics.

    ``advantages`` and ``returns`` are ``(T, E)``: one team advantage per network state, shared
    by all hospitals of that state; or ``(T, E, n)``: one advantage per hospital (its own
    reward, ``reward_mode="agent"``), then A_s below is A_{s,i} and the critic gives one value
    per hospital. Advantages are normalised over every entry (step, copy and hospital). A
    sample is one network state (all n hospitals), so the centralised critic always sees a
    whole network.

    Loss per minibatch (minimised):
        ``- L^CLIP + vf_coef * L^VF - ent_coef * H``, where
        L^CLIP = mean_{s,i} min(r_i A_s, clip(r_i, 1-eps, 1+eps) A_s)   # paper 000 Eq. (5)
        r_i = exp(log pi(a_i|o_i) - log pi_old(a_i|o_i)), one ratio per hospital i,
        L^VF = 0.5 mean_s (V(s) - R_s)^2                                # paper 000 Eq. (7)
    and one Adam step on it (Eq. 6 for the actor, Eq. 7 for the critic), after clipping the
    actor's and the critic's gradient norms separately to ``max_grad_norm``.

    Raises:
        TrainingError: when a loss or, after the update, a parameter is not finite.
    """
    # flatten (T, E) into one batch of B network states
    obs = rollout.obs.flatten(0, 1)  # (B, n, obs_dim)
    actions = rollout.actions.flatten(0, 1)  # (B, n)
    old_log_probs = rollout.log_probs.flatten(0, 1)  # (B, n)
    old_values = rollout.values.flatten(0, 1)  # (B,) or (B, n)
    advantages = advantages.flatten(0, 1)  # (B,) team or (B, n) per hospital
    returns = returns.flatten(0, 1)  # like advantages
    if config.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    agent.value_norm.update(returns)
    value_targets = agent.value_norm.normalize(returns)

    batch_size = obs.shape[0]
    minibatch_size = math.ceil(batch_size / config.num_minibatches)
    actor_params = list(agent.actor.parameters())
    critic_params = list(agent.critic.parameters())
    totals = {
        "policy_loss": 0.0,
        "value_loss": 0.0,
        "entropy": 0.0,
        "approx_kl": 0.0,
        "clipfrac": 0.0,
    }
    updates = 0
    for epoch in range(config.update_epochs):
        order = torch.randperm(batch_size, generator=generator).to(obs.device)
        epoch_kl = 0.0
        for start in range(0, batch_size, minibatch_size):
            idx = order[start : start + minibatch_size]
            new_log_probs, entropy = agent.actor.evaluate(obs[idx], actions[idx])  # (mb, n), ()
            log_ratio = new_log_probs - old_log_probs[idx]
            ratio = log_ratio.exp()
            team_advantage = advantages[idx]  # (mb, n) per hospital, or (mb,) team:
            if team_advantage.ndim == 1:
                team_advantage = team_advantage.unsqueeze(-1)  # (mb, 1) every hospital shares

            # clipped surrogate, paper 000 Eq. (5), as a loss to minimise
            surrogate = team_advantage * ratio
            clipped = team_advantage * ratio.clamp(1.0 - config.clip_coef, 1.0 + config.clip_coef)
            policy_loss = -torch.min(surrogate, clipped).mean()
            # critic regression onto the returns, paper 000 Eq. (7)
            value_loss = 0.5 * ((agent.critic_value(obs[idx]) - value_targets[idx]) ** 2).mean()
            loss = policy_loss - config.ent_coef * entropy + config.vf_coef * value_loss
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss in epoch {epoch + 1} (policy_loss={policy_loss.item()}, "
                    f"value_loss={value_loss.item()}); lower learning_rate / "
                    "critic_learning_rate or check the environment's reward scale"
                )

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(actor_params, config.max_grad_norm)
            nn.utils.clip_grad_norm_(critic_params, config.max_grad_norm)
            optimizer.step()

            with torch.no_grad():  # http://joschu.net/blog/kl-approx.html estimator k3
                approx_kl = ((ratio - 1.0) - log_ratio).mean().item()
                clipfrac = ((ratio - 1.0).abs() > config.clip_coef).float().mean().item()
            epoch_kl = max(epoch_kl, approx_kl)
            for key, value in (
                ("policy_loss", policy_loss.item()),
                ("value_loss", value_loss.item()),
                ("entropy", entropy.item()),
                ("approx_kl", approx_kl),
                ("clipfrac", clipfrac),
            ):
                totals[key] += value
            updates += 1
        if config.target_kl is not None and epoch_kl > config.target_kl:
            break

    for name, param in agent.named_parameters():
        if not torch.isfinite(param).all():
            raise TrainingError(f"parameter {name!r} became non-finite during the update")
    stats = {key: value / updates for key, value in totals.items()}
    var_returns = returns.var().item()
    stats["explained_variance"] = (
        1.0 - (returns - old_values).var().item() / var_returns if var_returns > 0 else float("nan")
    )
    stats["log_std"] = agent.actor.log_std.mean().item()
    return stats


# --------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train` produced: files, counters, throughput and the per-iteration history."""

    out_dir: Path
    policy_path: Path
    checkpoint_path: Path
    log_path: Path
    iterations: int
    env_steps: int
    wall_s: float
    steps_per_s: float
    history: list[dict[str, float]]
    agent: ActorCritic
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        """The last logged row (empty if no iteration ran in this call)."""
        return self.history[-1] if self.history else {}


def build_agent(obs_dim: int, config: PPOConfig) -> ActorCritic:
    """The actor-critic that ``config`` describes, for observations of ``obs_dim`` features."""
    return ActorCritic(
        obs_dim,
        actor_hidden=config.actor_hidden,
        critic=config.critic,
        critic_encoder_hidden=config.critic_encoder_hidden,
        critic_hidden=config.critic_hidden,
        init_log_std=config.init_log_std,
        norm_value=config.norm_value,
        activation=config.activation,
        per_agent_value=config.reward_mode == "agent",
        obs_norm=config.obs_norm,
    )


def _env_arguments(config: PPOConfig, env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(env_kwargs or {})
    for key, value in (("num_envs", config.num_envs), ("device", config.device)):
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"env_kwargs[{key!r}]={kwargs[key]!r} conflicts with PPOConfig.{key}={value!r}; "
                "set it in the config"
            )
        kwargs[key] = value
    if kwargs.get("auto_reset"):
        raise ValueError(
            "env_kwargs['auto_reset']: train() resets every copy at each iteration itself; "
            "leave it out or pass False"
        )
    kwargs["auto_reset"] = False
    kwargs.setdefault("seed", config.seed)
    return kwargs


class _RunLog:
    """``train_log.csv`` (one row per iteration) and TensorBoard scalars when available."""

    def __init__(self, out_dir: Path, *, keep_through: int | None, notes: list[str]):
        self.path = out_dir / LOG_NAME
        self.columns: list[str] | None = None
        if keep_through is None:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():  # resume: drop rows the checkpoint does not cover
            with self.path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or []) or None
                rows = [row for row in reader if int(float(row["iteration"])) <= keep_through]
            if self.columns:
                lines = [",".join(self.columns)]
                lines += [",".join(row.get(c, "") or "" for c in self.columns) for row in rows]
                atomic_write_text(self.path, "\n".join(lines) + "\n")
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            notes.append("TensorBoard logging skipped: the tensorboard package is not installed")
        except Exception as exc:  # a broken tensorboard install must not stop training
            notes.append(f"TensorBoard logging skipped: {exc}")

    def write(self, row: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = list(row)
        new_file = not self.path.is_file()
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("iteration", "env_steps"):
                    self.writer.add_scalar(f"train/{key}", value, int(row["env_steps"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _progress_bar(enabled: bool, total: int, completed: int) -> tuple[Any, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]PPO"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("env-steps"),
        TextColumn("{task.fields[sps]:>6.0f} steps/s"),
        TextColumn("MAE {task.fields[mae]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
    task = bar.add_task("train", total=total, completed=completed, sps=0.0, mae=float("nan"))
    return bar, task


def train(
    config: PPOConfig,
    env_kwargs: dict[str, Any] | None = None,
    *,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log_fn: Callable[[dict[str, float]], None] | None = None,
    make_env: EnvFactory | None = None,
) -> TrainResult:
    """Train a shared policy with PPO and write ``policy.pt``, ``checkpoint.pt`` and
    ``train_log.csv`` (plus TensorBoard logs when ``tensorboard`` is installed) to ``out_dir``.

    Args:
        config: the hyperparameters.
        env_kwargs: arguments of the environment (``HospitalEnv`` by default), e.g.
            ``{"n_hospitals": 150, "scenario": "shifting"}``; ``num_envs``, ``device`` come from
            ``config``, ``seed`` defaults to ``config.seed``, ``auto_reset`` is always False.
        out_dir: the run folder.
        resume: continue the run whose checkpoint is in ``out_dir`` (same config and environment
            required); the final parameters equal those of an uninterrupted run.
        overwrite: start afresh even if ``out_dir`` holds a run (its checkpoint and policy
            are deleted first).
        progress: show a live ``rich`` progress bar (steps/s, current MAE).
        log_fn: called with each iteration's log row (a dict of floats).
        make_env: environment factory ``make_env(**env_kwargs)``, for other environments with the
            same batched contract.

    Raises:
        TrainingError: non-finite rewards, observations, losses or parameters.
        CheckpointError: ``resume`` without a usable checkpoint, or one from a different run.
        ValueError: conflicting arguments, or an existing checkpoint without ``resume`` or
            ``overwrite``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, policy_path = out_dir / CHECKPOINT_NAME, out_dir / POLICY_NAME
    if checkpoint_path.exists() and not resume and not overwrite:
        raise ValueError(
            f"out_dir: {str(out_dir)!r} already holds a run ({CHECKPOINT_NAME}); pass resume=True "
            "to continue it or overwrite=True to start afresh"
        )
    if overwrite and not resume:  # never leave another run's files next to this one's
        checkpoint_path.unlink(missing_ok=True)
        policy_path.unlink(missing_ok=True)
    env_kwargs = _env_arguments(config, env_kwargs)
    env_settings = describe_settings(env_kwargs)
    env = (make_env or HospitalEnv)(**env_kwargs)
    steps_per_iteration = int(env.horizon) * config.num_envs
    num_iterations = max(1, config.total_steps // steps_per_iteration)

    previous_threads = torch.get_num_threads()
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    notes: list[str] = []
    try:
        # seeding: network initialisation from the global RNGs, everything else from `generator`
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        agent = build_agent(int(env.obs_dim), config).to(config.device)
        optimizer = torch.optim.Adam(
            [
                {"params": agent.actor.parameters(), "lr": config.learning_rate},
                {"params": agent.critic.parameters(), "lr": config.critic_learning_rate},
            ],
            eps=1e-5,
        )
        base_lrs = (config.learning_rate, config.critic_learning_rate)

        iteration, env_steps, elapsed_before = 0, 0, 0.0
        if resume:
            if not checkpoint_path.exists():
                raise CheckpointError(
                    f"resume: no checkpoint at {str(checkpoint_path)!r} to continue from"
                )
            state = load_checkpoint(checkpoint_path)
            _check_same_run(state, config, env_settings, checkpoint_path)
            agent.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            restore_rng(state["rng"], generator)
            iteration, env_steps = int(state["iteration"]), int(state["env_steps"])
            elapsed_before = float(state["elapsed_s"])
        run_log = _RunLog(out_dir, keep_through=iteration if resume else None, notes=notes)

        history: list[dict[str, float]] = []
        start = time.perf_counter()
        session_steps = 0
        bar, task = _progress_bar(progress, num_iterations * steps_per_iteration, env_steps)
        with bar:
            for note in notes:
                bar.console.print(f"[yellow]note:[/] {note}")
            while iteration < num_iterations:
                iteration += 1
                tick = time.perf_counter()
                if config.anneal_lr:  # linear anneal to 0 over the run
                    frac = 1.0 - (iteration - 1) / num_iterations
                    for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                        group["lr"] = frac * base_lr

                rollout = collect_rollout(
                    env,
                    agent,
                    action_scale=config.action_scale,
                    generator=generator,
                    seed=episode_seed(config.seed, iteration),
                    agent_rewards=config.reward_mode == "agent",
                    warm_obs_norm=iteration == 1,
                )
                _check_rollout(rollout, iteration)
                advantages, returns = compute_gae(
                    rollout.rewards,
                    rollout.values,
                    rollout.dones,
                    rollout.last_value,
                    config.gamma,
                    config.gae_lambda,
                )
                try:
                    stats = ppo_update(
                        agent, optimizer, rollout, advantages, returns, config, generator
                    )
                except TrainingError as exc:
                    raise TrainingError(
                        f"iteration {iteration}: {exc}; the checkpoint in {str(out_dir)!r} "
                        "(if any) is from before the failure and no policy file was written"
                    ) from exc
                # observation statistics change between iterations only, never inside one:
                # the update above saw the normalisation the rollout was collected with
                agent.actor.obs_norm.update(rollout.obs)
                env_steps += steps_per_iteration
                session_steps += steps_per_iteration
                now = time.perf_counter()
                row = {
                    "iteration": iteration,
                    "env_steps": env_steps,
                    "elapsed_s": elapsed_before + now - start,
                    "steps_per_s": steps_per_iteration / (now - tick),
                    **rollout.metrics,
                    **stats,
                    "learning_rate": optimizer.param_groups[0]["lr"],
                }
                if iteration % config.checkpoint_every == 0 or iteration == num_iterations:
                    save_checkpoint(
                        checkpoint_path,
                        model=agent,
                        optimizer=optimizer,
                        generator=generator,
                        iteration=iteration,
                        env_steps=env_steps,
                        elapsed_s=row["elapsed_s"],
                        config=config.to_dict(),
                        env_settings=env_settings,
                    )
                history.append(row)
                run_log.write(row)
                if log_fn is not None:
                    log_fn(row)
                bar.update(
                    task,
                    completed=env_steps,
                    sps=session_steps / (now - start),
                    mae=row.get("mae", float("nan")),
                )
        run_log.close()
        wall_s = time.perf_counter() - start
        if iteration == num_iterations and not checkpoint_path.exists():
            raise CheckpointError(f"internal: no checkpoint written to {str(checkpoint_path)!r}")
        save_policy(
            policy_path,
            agent.actor,
            action_scale=config.action_scale,
            obs_spec=_obs_spec(env),
            env_settings=env_settings,
            metadata={
                "seed": config.seed,
                "iterations": iteration,
                "env_steps": env_steps,
                "config": config.to_dict(),
            },
        )
        return TrainResult(
            out_dir=out_dir,
            policy_path=policy_path,
            checkpoint_path=checkpoint_path,
            log_path=run_log.path,
            iterations=iteration,
            env_steps=env_steps,
            wall_s=wall_s,
            steps_per_s=session_steps / wall_s if wall_s > 0 else float("nan"),
            history=history,
            agent=agent,
            notes=notes,
        )
    finally:
        torch.set_num_threads(previous_threads)


# settings that do not change the numbers a run produces, so a resume may change them
_FREE_ON_RESUME = {"checkpoint_every", "torch_threads"}


def _check_same_run(
    state: dict[str, Any], config: PPOConfig, env_settings: Any, path: Path
) -> None:
    saved = {"reward_mode": "team", **state["config"]}  # checkpoints from before reward_mode
    current = config.to_dict()
    keys = (set(saved) | set(current)) - _FREE_ON_RESUME
    changed = sorted(k for k in keys if saved.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} was written with a different config ({details})"
        )
    if state["env_settings"] != env_settings:
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} was written with different env_kwargs "
            f"({state['env_settings']!r}, now {env_settings!r})"
        )


def _obs_spec(env: Any) -> dict[str, Any]:
    """``obs_dim`` and, where known, the names of the observation columns: the environment's
    ``obs_features``, or its module's ``LOCAL_FEATURES + CONTEXT_FEATURES`` (HospitalEnv)."""
    spec: dict[str, Any] = {"obs_dim": int(env.obs_dim)}
    features = getattr(env, "obs_features", None)
    if features is None:
        module = sys.modules.get(type(env).__module__)
        local = getattr(module, "LOCAL_FEATURES", None)
        context = getattr(module, "CONTEXT_FEATURES", None)
        if local is not None and context is not None:
            features = (*local, *context)
    if features is not None and len(features) == spec["obs_dim"]:
        spec["features"] = [str(f) for f in features]
    return spec


def _check_rollout(rollout: Rollout, iteration: int) -> None:
    for name in ("rewards", "obs"):
        tensor = getattr(rollout, name)
        if not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
            raise TrainingError(
                f"iteration {iteration}: the environment returned non-finite {name} "
                f"(first at step {bad[0]}, copy {bad[1]}); training stopped and no policy file "
                "was written"
            )


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_policy(
    act: Callable[[torch.Tensor], torch.Tensor], env: Any, *, seed: int | None = None
) -> dict[str, float]:
    """Run ``act(obs (num_envs, n, obs_dim)) -> action (num_envs, n)`` for one episode of every
    copy of ``env`` (reset with ``seed``); returns the final-step means over copies of the
    environment's ``info`` metrics (``mae``, ...) and the mean ``episode_reward``.

    ``act = lambda obs: torch.zeros(obs.shape[:-1])`` evaluates doing nothing.
    """
    obs = env.reset(seed=seed)
    total_reward = torch.zeros(obs.shape[0], dtype=torch.float64)
    info: dict[str, Any] = {}
    for _ in range(int(env.horizon)):
        obs, reward, _, _, info = env.step(act(obs))
        reward = info.get("team_reward", reward[:, 0] if reward.ndim == 2 else reward)
        total_reward += reward.to(torch.float64).cpu()
    result = {"episode_reward": total_reward.mean().item()}
    for key, value in info.items():
        if isinstance(value, torch.Tensor) and value.ndim == 1 and value.is_floating_point():
            result[key] = value.to(torch.float64).mean().item()
    current = getattr(env, "current", None)
    if isinstance(current, torch.Tensor):
        result["gini"] = _mean_gini(current)
    return result
