"""marra PPO against Stable-Baselines3 and TorchRL PPO on the hospital environment: speed, quality.

Both learners train on the same environment: shifting targets, ``--n-hospitals`` (150) random
hospitals per episode, horizon 50, a per-step transfer budget ``--transfer-budget`` (150: one
staff per hospital per step, the default of ``marra train``), continuous staff.

- **marra**: :func:`marra.rl.train` with the default :class:`marra.rl.PPOConfig` (only
  ``seed`` and ``total_steps`` are set) on the batched :class:`marra.envs.HospitalEnv`: one
  actor shared by all hospitals, a centralised critic.
- **SB3**: ``stable_baselines3.PPO("MlpPolicy", vec_env)`` with its default hyperparameters on
  ``make_vec_env("marra/Hospital-v0", n_envs=8)`` (the Gymnasium view, one network per copy,
  observation flattened to ``n * obs_dim``, one action per hospital, ``DummyVecEnv``), device
  cpu. Its MLP has the hidden widths of marra's actor (``--sb3-net-arch``, default 32, 32, for
  the policy and the value network). The parameter counts of both sides are reported: on the
  flat view the first layer alone has ``n * obs_dim * width`` weights, so an MLP of marra's
  width has many more parameters (and no MLP on the flat view can match marra's count without
  shrinking to a handful of hidden units); per env-step it does less arithmetic than marra's
  actor, which runs once per hospital.

``torch.set_num_threads(1)`` for both: the networks are small and each step runs many short
ops, where OpenMP threads mostly wait on each other; on the shared 2-core benchmark machine a
second thread made marra's training far slower (see ``PPOConfig.torch_threads``), and SB3 gets
the same setting so neither side is favoured.

Two measurements:

(a) **Throughput**: env-steps per second (one env-step = one step of one network copy, all its
    hospitals) over a fixed budget of ``--throughput-steps`` env-steps per side (50,000; 10,000
    with ``--quick``), training only (no evaluation). marra rounds the budget down to whole
    iterations (``num_envs * horizon`` = 800 steps), SB3 up to whole rollouts (``n_steps *
    n_envs`` = 16,384); the steps actually run are reported. Timed: marra's training loop
    (``TrainResult.wall_s``, which includes its checkpoints, CSV and TensorBoard logs) and
    SB3's ``learn`` call; building the environments and networks is timed on neither side. The
    time is split into rollout (acting + environment) and update (gradient steps) by timing
    marra's ``collect_rollout`` / ``ppo_update`` and SB3's ``collect_rollouts`` / ``train``.

(b) **Time to quality**: a fresh run per side, evaluated periodically on a FIXED evaluation set
    (``--eval-episodes`` seeded episodes, the same draws for both sides and every reference):
    the current policy acts deterministically (its Gaussian mean) through the batched
    environment, and the score is the mean over episodes and steps of the step MAE
    ``mean_i |y_i - t_i|`` (paper 000 Eq. 8). The reference is the budgeted QP re-planned at
    every step (``ClassicalMethod("qp", transfer_budget=B, integer=False)``, shortfall plans)
    on the same networks and realisations; a side reaches quality when its score is at most
    ``--target-factor`` (1.1) times the QP's. Also reported: *hold* (do nothing) and the *rule*
    "request t - c if below target, offer c - t if above" through the environment's clearing
    rule. Evaluation time is excluded from training time. marra is evaluated at its checkpoints
    (every ``--eval-every`` = 8,000 env-steps = its default ``checkpoint_every`` of 10
    iterations); SB3 after every update (its policy changes only then: every 16,384 env-steps).
    Each side stops when it reaches quality, at the first evaluation after ``--cap-seconds`` of
    training (300 s; 30 s with ``--quick``), or after ``--total-steps`` env-steps (marra's
    default ``total_steps``, the same for both); otherwise it is reported as "not reached in
    X s" with the best score seen. ``--sb3-cap-seconds`` / ``--sb3-total-steps`` give SB3 a
    longer run than marra's (marra keeps its own budget, which also sets its learning-rate
    schedule): when only marra reaches the target, SB3's training time at its stop over
    marra's time to the target is a lower bound on the time-to-quality ratio, and a longer SB3
    run makes that bound tighter.

Two consistency checks go into the JSON: *hold* scored through the environment equals
``ClassicalMethod("hold")`` on the same draws (same draws, same MAE), and marra's final policy
scored through :class:`marra.experiments.policy_method.PolicyMethod` equals its batched score.

**TorchRL peers** (``--peers``; extra ``marra[torchrl]``): TorchRL's multi-agent PPO
(:class:`TorchRLPeer`: ``MultiAgentMLP`` actor with shared parameters, a centralised critic on
the global state, ``ClipPPOLoss``, ``GAE``, its ``Collector``) with every hyperparameter of
marra's default :class:`~marra.rl.PPOConfig` that TorchRL has, the same network sizes and
initialisation, by two routes: ``torchrl-wrapper``, TorchRL's ``PettingZooWrapper`` around
``marra.envs.parallel_env("hospital", ...)`` (what a TorchRL user gets without marra's view;
one copy, per-agent Python dicts), and ``torchrl-native``, the batched environment through
``marra.envs.torchrl_env("hospital", num_envs=16, ...)``. Each route is measured like SB3:
(a) throughput over ``--throughput-steps`` (the wrapper route, which runs at tens of env-steps
per second, over ``--torchrl-wrapper-throughput-steps``, 2,400), (b) time to quality on the
same evaluation set, its deterministic actions through the batched environment, evaluation
time excluded, the same cap; the native route is scored every ``--eval-every`` env-steps, the
wrapper route after every update. The ratios against marra are in ``ratios_torchrl_wrapper`` /
``ratios_torchrl_native``, issue 9's aims in ``torchrl_aims``.

Usage::

    python benchmarks/training.py               # full run (every installed peer), writes the JSON
    python benchmarks/training.py --quick       # 10k-step throughput, 30-s caps
    python benchmarks/training.py --peers torchrl-wrapper,torchrl-native   # no SB3
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import marra.envs  # noqa: F401  (registers marra/Hospital-v0 with Gymnasium)
from marra._io import atomic_write_text
from marra.envs.hospital import HospitalEnv
from marra.experiments.policy_method import PolicyMethod
from marra.experiments.simulate import ClassicalMethod
from marra.rl import ActorCritic, PPOConfig, build_model, save_policy, train
from marra.rl.policy import LearnedPolicy

#: An evaluation policy: ``act(obs (E, n, obs_dim), env) -> action (E, n)`` in staff units.
Act = Callable[[torch.Tensor, HospitalEnv], torch.Tensor]


class _Stop(Exception):
    """Raised from marra's ``log_fn`` to end a time-to-quality run early."""


# --------------------------------------------------------------------------- evaluation
class EvalSet:
    """The fixed evaluation set: ``episodes`` seeded episodes of the training environment.

    The batched environment is reset with ``seed`` every time, so every policy and every
    reference sees the same networks and scenario realisations (``networks``,
    ``realisations``). ``score(act)`` is the mean over episodes and steps of the step MAE
    ``mean_i |y_i - t_i|`` (the environment's ``info["mae"]``).
    """

    def __init__(self, env_kwargs: dict[str, Any], episodes: int, seed: int):
        self.seed = int(seed)
        self.env = HospitalEnv(num_envs=episodes, **env_kwargs)
        self.env.reset(seed=self.seed)
        self.networks = list(self.env.networks)
        self.realisations = list(self.env.realisations)

    @torch.no_grad()
    def score(self, act: Act) -> tuple[float, list[float]]:
        """``(mean MAE, MAE per episode)`` of ``act`` over the evaluation set."""
        env = self.env
        obs = env.reset(seed=self.seed)
        total = torch.zeros(env.num_envs, dtype=torch.float64)
        for _ in range(env.horizon):
            obs, _, _, _, info = env.step(act(obs, env))
            total += info["mae"].cpu()
        per_episode = (total / env.horizon).tolist()
        return float(np.mean(per_episode)), per_episode

    def score_method(self, method: Any) -> tuple[float, list[float]]:
        """The same score for a simulation method (``run_episode(network, realisation, steps)``)
        played on the evaluation set's networks and realisations."""
        horizon = self.env.horizon
        per_episode = [
            float(method.run_episode(network, realisation, horizon)["mae"].mean())
            for network, realisation in zip(self.networks, self.realisations, strict=True)
        ]
        return float(np.mean(per_episode)), per_episode


def hold_act(obs: torch.Tensor, env: HospitalEnv) -> torch.Tensor:
    """Move nothing."""
    return torch.zeros(obs.shape[:-1], dtype=torch.float64)


def rule_act(obs: torch.Tensor, env: HospitalEnv) -> torch.Tensor:
    """Request ``t - c`` below target, offer ``c - t`` above: the action ``t - c``."""
    return env.target - env.current


def references(eval_set: EvalSet, transfer_budget: float | None) -> dict[str, Any]:
    """Scores of hold, the rule and the budgeted QP on the evaluation set, plus the check that
    hold through the environment equals ``ClassicalMethod("hold")`` on the same draws."""
    started = time.perf_counter()
    qp = ClassicalMethod("qp", transfer_budget=transfer_budget, integer=False)
    qp_mae, qp_episodes = eval_set.score_method(qp)
    hold_mae, hold_episodes = eval_set.score(hold_act)
    rule_mae, rule_episodes = eval_set.score(rule_act)
    hold_classical, _ = eval_set.score_method(ClassicalMethod("hold", integer=False))
    return {
        "qp": qp_mae,
        "qp_per_episode": qp_episodes,
        "qp_label": qp.label,
        "hold": hold_mae,
        "hold_per_episode": hold_episodes,
        "rule": rule_mae,
        "rule_per_episode": rule_episodes,
        "hold_via_classical_method": hold_classical,
        "same_draws_check": abs(hold_classical - hold_mae) < 1e-9,
        "seconds": time.perf_counter() - started,
    }


def marra_act(policy: LearnedPolicy) -> Act:
    return lambda obs, env: policy.act(obs, deterministic=True)


def sb3_act(model: Any) -> Act:
    """Run an SB3 policy on the batched environment: each copy's ``(n, obs_dim)`` observation
    flattened as the Gymnasium view does, the deterministic action clipped to the view's action
    space by ``predict``, as SB3 does when it steps an environment."""

    def act(obs: torch.Tensor, env: HospitalEnv) -> torch.Tensor:
        flat = obs.reshape(obs.shape[0], -1).cpu().numpy()
        action, _ = model.policy.predict(flat, deterministic=True)
        return torch.as_tensor(np.asarray(action, dtype=np.float64))

    return act


# --------------------------------------------------------------------------- marra side
def marra_config(args: argparse.Namespace, total_steps: int, **changes: Any) -> PPOConfig:
    critic = {} if args.critic is None else {"critic": args.critic}
    return PPOConfig(seed=args.seed, total_steps=total_steps, **critic, **changes)


def count_parameters(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def marra_parameters(config: PPOConfig, env_kwargs: dict[str, Any]) -> dict[str, int]:
    model = build_model(HospitalEnv(**env_kwargs).spec, config)
    actor, critic = count_parameters(model.actor), count_parameters(model.critic)
    return {"actor": actor, "critic": critic, "total": actor + critic}


class _PhaseTimer:
    """Wraps functions and adds their wall time to named totals (rollout / update)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds.setdefault(name, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


def marra_throughput(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Train for ``args.throughput_steps`` env-steps with the default config; no evaluation.
    The rollout / update split comes from the training loop's own timers (``train_log.csv``)."""
    config = marra_config(args, args.throughput_steps)
    with tempfile.TemporaryDirectory(prefix="marra-bench-") as out_dir:
        start = time.perf_counter()
        result = train(config, env_kwargs, out_dir=out_dir, progress=False)
        wall = time.perf_counter() - start
    loop = result.wall_s  # the training loop, without building the env, networks, logger
    rollout_s = sum(row["rollout_s"] for row in result.history)
    update_s = sum(row["update_s"] for row in result.history)
    return {
        "env_steps": result.env_steps,
        "seconds": loop,
        "env_steps_per_s": result.env_steps / loop,
        "call_seconds": wall,
        "rollout_s": rollout_s,
        "update_s": update_s,
        "other_s": loop - rollout_s - update_s,
        "final_train_mae_mean": result.final.get("mae"),
    }


def _policy_of(model: ActorCritic) -> LearnedPolicy:
    """The current actor as a policy (a copy, so later updates do not change it)."""
    import copy

    return LearnedPolicy(copy.deepcopy(model.actor), sharing=model.sharing.describe())


def marra_time_to_quality(
    args: argparse.Namespace,
    env_kwargs: dict[str, Any],
    eval_set: EvalSet,
    target_mae: float,
) -> dict[str, Any]:
    """Train with the default config; score the policy every ``--eval-every`` env-steps through
    the training loop's evaluation hook (its time is not training time); stop at the target, at
    the first evaluation after the cap, or after ``total_steps``."""
    horizon = int(env_kwargs.get("horizon", 50))
    steps_per_iteration = PPOConfig().num_envs * horizon
    evaluate_every = max(1, round(args.eval_every / steps_per_iteration))
    config = marra_config(args, args.total_steps)
    curve: list[dict[str, float]] = []
    state: dict[str, Any] = {"eval_s": 0.0, "stopped_by": "total_steps", "policy": None}

    def evaluator(model: ActorCritic, iteration: int) -> dict[str, float]:
        policy = _policy_of(model)
        mae, _ = eval_set.score(marra_act(policy))
        state["policy"] = policy
        return {"mae": mae}

    def log_fn(row: dict[str, Any]) -> None:
        if "eval_mae" not in row:
            return
        state["eval_s"] += row["eval_s"]
        train_s, mae = float(row["elapsed_s"]), float(row["eval_mae"])
        curve.append({"train_s": train_s, "env_steps": int(row["env_steps"]), "mae": mae})
        print(f"  marra {int(row['env_steps']):>8,} steps {train_s:6.1f} s  MAE {mae:.3f}")
        if mae <= target_mae:
            state["stopped_by"] = "target"
            raise _Stop
        if train_s >= args.cap_seconds:
            state["stopped_by"] = "cap"
            raise _Stop

    with tempfile.TemporaryDirectory(prefix="marra-bench-") as tmp:
        try:
            train(config, env_kwargs, out_dir=tmp, progress=False, log_fn=log_fn,
                  evaluate_every=evaluate_every, evaluator=evaluator)  # fmt: skip
        except _Stop:
            pass
    result = _summarise(curve, target_mae, state["stopped_by"], args.cap_seconds)
    result["config"] = config.to_dict()
    result["eval_every_env_steps"] = evaluate_every * steps_per_iteration
    result["eval_s"] = state["eval_s"]
    if state["policy"] is not None:
        result["crosscheck"] = _policy_method_check(state["policy"], eval_set, env_kwargs)
    return result


def _policy_method_check(
    policy: LearnedPolicy, eval_set: EvalSet, env_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """marra's last evaluated policy scored through ``PolicyMethod`` (one episode at a time,
    from a policy file) and through the batched evaluation: the two must agree."""
    batched, _ = eval_set.score(marra_act(policy))
    with tempfile.TemporaryDirectory(prefix="marra-bench-") as tmp:
        path = Path(tmp) / "policy.pt"
        holder = torch.nn.Module()
        holder.actor = policy.actor
        holder.sharing = _FullSharingRecord(policy.sharing)
        save_policy(
            path,
            holder,
            spec=eval_set.env.spec,
            env_name="hospital",
            env_settings={"max_action": eval_set.env.max_action},
        )
        method = PolicyMethod.from_file(
            path, transfer_budget=env_kwargs.get("transfer_budget"), integer=False
        )
        via_method, _ = eval_set.score_method(method)
    return {
        "batched_eval_mae": batched,
        "policy_method_mae": via_method,
        "agree": abs(batched - via_method) < 1e-6 * max(1.0, batched),
    }


class _FullSharingRecord:
    def __init__(self, described: dict[str, Any]) -> None:
        self.described = described

    def describe(self) -> dict[str, Any]:
        return self.described


def _summarise(
    curve: list[dict[str, float]], target_mae: float, stopped_by: str, cap_seconds: float
) -> dict[str, Any]:
    reached = next((p for p in curve if p["mae"] <= target_mae), None)
    best = min(curve, key=lambda p: p["mae"]) if curve else None
    last = curve[-1] if curve else None
    return {
        "reached": reached is not None,
        "train_s_to_target": None if reached is None else reached["train_s"],
        "env_steps_to_target": None if reached is None else reached["env_steps"],
        "best_mae": None if best is None else best["mae"],
        "best_at_env_steps": None if best is None else best["env_steps"],
        "final_mae": None if last is None else last["mae"],
        "train_s": None if last is None else last["train_s"],
        "env_steps": None if last is None else last["env_steps"],
        "stopped_by": stopped_by,
        "cap_seconds": cap_seconds,
        "env_steps_per_train_s": None if last is None else last["env_steps"] / last["train_s"],
        "curve": curve,
    }


# --------------------------------------------------------------------------- SB3 side
def import_sb3() -> Any:
    try:
        import stable_baselines3
    except ImportError as exc:  # pragma: no cover - the bench extra installs it
        raise SystemExit(
            "stable-baselines3 is not installed: pip install -e '.[bench]' "
            f"(benchmark-only dependency) ({exc})"
        ) from exc
    return stable_baselines3


def sb3_model(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> Any:
    """SB3 PPO with its defaults (``n_steps`` only with ``--sb3-n-steps``) on ``n_envs`` copies
    of the Gymnasium view, an MLP with ``--sb3-net-arch`` hidden widths, device cpu."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    # make_vec_env asks for render_mode="rgb_array" unless told otherwise; the view renders nothing
    vec_env = make_vec_env(
        marra.envs.HOSPITAL_ENV_ID,
        n_envs=args.sb3_envs,
        seed=args.seed,
        env_kwargs={**env_kwargs, "render_mode": None},
    )
    widths = [int(w) for w in args.sb3_net_arch.split(",")]
    kwargs: dict[str, Any] = {}
    if args.sb3_n_steps is not None:
        kwargs["n_steps"] = args.sb3_n_steps
    return PPO(
        "MlpPolicy",
        vec_env,
        policy_kwargs={"net_arch": {"pi": widths, "vf": list(widths)}},
        device="cpu",
        seed=args.seed,
        verbose=0,
        **kwargs,
    )


def sb3_parameters(model: Any) -> dict[str, int]:
    policy = model.policy
    actor = sum(
        count_parameters(m)
        for m in (policy.mlp_extractor.policy_net, policy.action_net)
        if m is not None
    ) + int(policy.log_std.numel())
    critic = count_parameters(policy.mlp_extractor.value_net) + count_parameters(policy.value_net)
    total = count_parameters(policy)
    return {"actor": actor, "critic": critic, "total": total}


def sb3_settings(model: Any) -> dict[str, Any]:
    return {
        "n_envs": model.n_envs,
        "n_steps": model.n_steps,
        "batch_size": model.batch_size,
        "n_epochs": model.n_epochs,
        "learning_rate": model.learning_rate,
        "gamma": model.gamma,
        "gae_lambda": model.gae_lambda,
        "clip_range": float(model.clip_range(1.0)),
        "ent_coef": model.ent_coef,
        "vf_coef": model.vf_coef,
        "max_grad_norm": model.max_grad_norm,
        "net_arch": model.policy_kwargs.get("net_arch"),
        "vec_env": type(model.env).__name__,
        "device": str(model.device),
    }


def sb3_throughput(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    model = sb3_model(args, env_kwargs)
    timer = _PhaseTimer()
    model.collect_rollouts = timer.wrap("rollout", model.collect_rollouts)
    model.train = timer.wrap("update", model.train)
    start = time.perf_counter()
    model.learn(total_timesteps=args.throughput_steps)
    wall = time.perf_counter() - start
    return {
        "env_steps": int(model.num_timesteps),
        "seconds": wall,
        "env_steps_per_s": model.num_timesteps / wall,
        "rollout_s": timer.seconds["rollout"],
        "update_s": timer.seconds["update"],
        "other_s": wall - timer.seconds["rollout"] - timer.seconds["update"],
        "parameters": sb3_parameters(model),
        "settings": sb3_settings(model),
    }


def sb3_time_to_quality(
    args: argparse.Namespace,
    env_kwargs: dict[str, Any],
    eval_set: EvalSet,
    target_mae: float,
) -> dict[str, Any]:
    """Train SB3; score the policy after every update (at the start of each rollout) and stop
    at the target, at the cap, or after ``total_steps``."""
    from stable_baselines3.common.callbacks import BaseCallback

    curve: list[dict[str, float]] = []

    class Tracker(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.eval_s = 0.0
            self.stopped_by = "total_steps"
            self.stop = False
            self.evaluated_at = -1

        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def train_s(self) -> float:
            return time.perf_counter() - self.start - self.eval_s

        def _on_rollout_start(self) -> None:
            # the policy changes only in updates: score it once after each
            steps = int(self.num_timesteps)
            if steps == self.evaluated_at or self.stop:
                return
            train_s = self.train_s()
            tick = time.perf_counter()
            mae, _ = eval_set.score(sb3_act(self.model))
            self.eval_s += time.perf_counter() - tick
            self.evaluated_at = steps
            curve.append({"train_s": train_s, "env_steps": steps, "mae": mae})
            print(f"  SB3   {steps:>8,} steps {train_s:6.1f} s  MAE {mae:.3f}")
            if mae <= target_mae:
                self.stopped_by, self.stop = "target", True
            elif train_s >= args.sb3_cap_seconds:
                self.stopped_by, self.stop = "cap", True

        def _on_step(self) -> bool:
            if not self.stop and self.train_s() >= args.sb3_cap_seconds:
                # the policy has not changed since its last score: that score is final
                self.stopped_by, self.stop = "cap", True
            return not self.stop

    model = sb3_model(args, env_kwargs)
    tracker = Tracker()
    model.learn(total_timesteps=args.sb3_total_steps, callback=tracker)
    if not tracker.stop:  # total_steps ended the run after an update: score the last policy
        tracker._on_rollout_start()
    result = _summarise(curve, target_mae, tracker.stopped_by, args.sb3_cap_seconds)
    result["eval_s"] = tracker.eval_s
    result["train_s_at_stop"] = tracker.train_s()
    result["env_steps_at_stop"] = int(model.num_timesteps)
    result["env_steps_per_train_s"] = model.num_timesteps / result["train_s_at_stop"]
    result["eval_every_env_steps"] = model.n_steps * model.n_envs
    return result


# --------------------------------------------------------------------------- TorchRL side
#: The TorchRL peers of ``--peers`` and their routes to the hospital environment.
TORCHRL_ROUTES = {"torchrl-wrapper": "wrapper", "torchrl-native": "native"}
#: Every peer ``--peers`` knows (marra always runs).
PEERS = ("sb3", *TORCHRL_ROUTES)


def import_torchrl() -> Any | None:
    """The ``torchrl`` module, or None when it (or marra's TorchRL view) cannot be imported."""
    try:
        import torchrl

        from marra.envs.torchrl_env import TorchRLView  # noqa: F401
    except ImportError:
        return None
    return torchrl


def _orthogonal_init(module: torch.nn.Module, out_gain: float) -> None:
    """marra's initialisation (:func:`marra.rl.networks.mlp`): orthogonal weights, gain
    sqrt(2) for hidden layers and ``out_gain`` for the last, zero biases."""
    layers = [p for name, p in module.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in module.named_parameters() if name.endswith("bias")]
    with torch.no_grad():
        for i, weight in enumerate(layers):
            torch.nn.init.orthogonal_(weight, out_gain if i == len(layers) - 1 else math.sqrt(2))
        for bias in biases:
            bias.zero_()


class _GaussianHead(torch.nn.Module):
    """``mu (..., N, dim) -> (loc, scale)``: marra's Gaussian policy in environment units,
    ``loc = center + action_scale * mu`` and ``scale = action_scale * exp(log_std)`` with a
    learned state-independent ``log_std`` (its PPO ratios and clipping are those of marra's
    policy-unit Gaussian: the affine map cancels in every ratio)."""

    def __init__(self, dim: int, center: float, scale: float, init_log_std: float) -> None:
        super().__init__()
        self.center, self.scale = float(center), float(scale)
        self.log_std = torch.nn.Parameter(torch.full((dim,), float(init_log_std)))

    def forward(self, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.center + self.scale * mu
        return loc, (self.scale * self.log_std.exp()).expand_as(loc)


class _StateCritic(torch.nn.Module):
    """marra's MAPPO critic with a team reward: one value ``V(s)`` from the global state
    ``state (..., state_dim)``, given to every agent ``(..., N, 1)`` as TorchRL's per-agent
    value key expects."""

    def __init__(self, state_dim: int, hidden: tuple[int, ...], num_agents: int) -> None:
        super().__init__()
        widths = (state_dim, *hidden)
        layers: list[torch.nn.Module] = []
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 1))
        _orthogonal_init(self.net, 1.0)
        self.num_agents = int(num_agents)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        value = self.net(state).unsqueeze(-2)
        return value.expand(*value.shape[:-2], self.num_agents, 1)


class TorchRLPeer:
    """TorchRL's multi-agent PPO on the hospital task, by one of two routes.

    - ``route="wrapper"``: ``PettingZooWrapper(marra.envs.parallel_env("hospital", ...),
      return_state=True)``, what a TorchRL user gets today (one copy, agents stepped through
      PettingZoo's per-agent dicts); a batch of ``frames_per_batch`` env-steps is
      ``frames_per_batch / horizon`` episodes one after the other (default: marra's iteration,
      ``num_envs * horizon``).
    - ``route="native"``: ``marra.envs.torchrl_env("hospital", num_envs=config.num_envs)``, the
      batched environment as a TorchRL ``EnvBase``; a batch is one episode of every copy, as
      in marra.

    Both: a ``VecNorm`` transform on the agents' observations (running mean and variance, no
    decay, scale floored at 1e-2 like marra's ``ObsNorm``); the actor a ``MultiAgentMLP``
    (``centralized=False, share_params=True``, marra's hidden widths and ReLU) into a Gaussian
    ``ProbabilisticActor`` (``IndependentNormal``) with marra's state-independent log-std,
    initial value and action scale; the critic marra's centralised one, an MLP on the global
    state ``"state"`` (one value per state, given to every agent); ``ClipPPOLoss`` (clip,
    squared-error value loss weighted as marra's ``0.5 * vf_coef``, entropy weight, advantage
    normalisation) with TorchRL's ``GAE`` (gamma, lambda); the ``Collector``, a
    ``ReplayBuffer`` sampled without replacement into ``num_minibatches`` minibatches for
    ``update_epochs`` epochs; Adam (eps 1e-5) with marra's step sizes annealed linearly to 0
    over ``total_steps``, the actor's and the critic's gradient norms clipped separately. All
    numbers come from ``config`` (marra's :class:`~marra.rl.PPOConfig`), so both sides share
    every hyperparameter TorchRL has. What TorchRL does its own way: the advantage is normalised
    per minibatch; the end of the horizon is a truncation (GAE bootstraps from the final state
    where marra does not); the observation statistics update at every step; there is no value
    normalisation (marra's ``norm_value``).
    """

    def __init__(
        self,
        route: str,
        config: PPOConfig,
        env_kwargs: dict[str, Any],
        *,
        seed: int,
        total_steps: int,
        frames_per_batch: int | None = None,
    ) -> None:
        import warnings

        from tensordict.nn import TensorDictModule
        from torchrl.collectors import Collector
        from torchrl.data import LazyTensorStorage, ReplayBuffer, SamplerWithoutReplacement
        from torchrl.envs import TransformedEnv, VecNorm
        from torchrl.modules import IndependentNormal, MultiAgentMLP, ProbabilisticActor
        from torchrl.objectives import ClipPPOLoss, ValueEstimators

        from marra.rl.ppo import action_scaling

        if route not in ("wrapper", "native"):
            raise ValueError(f"route: 'wrapper' or 'native', got {route!r}")
        self.route, self.config = route, config
        torch.manual_seed(seed)  # TorchRL draws initial weights and actions from torch's RNG
        spec = HospitalEnv(**env_kwargs).spec
        horizon = spec.horizon
        if route == "wrapper":
            from torchrl.envs.libs.pettingzoo import PettingZooWrapper

            with warnings.catch_warnings():  # "tested with PettingZoo 1.24.3"
                warnings.simplefilter("ignore", UserWarning)
                base = PettingZooWrapper(
                    marra.envs.parallel_env("hospital", **env_kwargs), return_state=True,
                    seed=seed,
                )  # fmt: skip
            (self.group,) = base.group_map  # "hospital": hospital_0 .. hospital_{n-1}
            self.frames_per_batch = int(frames_per_batch or config.num_envs * horizon)
        else:
            base = marra.envs.torchrl_env(
                "hospital", num_envs=config.num_envs, seed=seed, **env_kwargs
            )
            self.group = base.group
            self.frames_per_batch = config.num_envs * horizon
        group = self.group
        self.vecnorm = VecNorm(
            in_keys=[(group, "observation")], new_api=True, decay=1.0, eps=1e-2,
            reduce_batch_dims=True,
        )  # fmt: skip
        self.env = TransformedEnv(base, self.vecnorm)

        n, dim = spec.num_agents, int(spec.action.dim)
        center, scale = action_scaling(config, spec)
        body = MultiAgentMLP(
            n_agent_inputs=spec.obs_dim, n_agent_outputs=dim, n_agents=n, centralized=False,
            share_params=True, depth=len(config.actor_hidden),
            num_cells=list(config.actor_hidden), activation_class=torch.nn.ReLU,
        )  # fmt: skip
        _orthogonal_init(body, 0.01)
        self.actor_net = torch.nn.Sequential(
            body, _GaussianHead(dim, center, scale, config.init_log_std)
        )
        self.loc_module = TensorDictModule(
            self.actor_net,
            in_keys=[(group, "observation")],
            out_keys=[(group, "loc"), (group, "scale")],
        )
        self.policy = ProbabilisticActor(
            self.loc_module,
            in_keys=[(group, "loc"), (group, "scale")],
            out_keys=[(group, "action")],
            distribution_class=IndependentNormal,
            return_log_prob=True,
        )
        hidden = (*config.critic_encoder_hidden, *config.critic_hidden)
        self.critic_net = _StateCritic(spec.state_dim, hidden, n)
        critic = TensorDictModule(
            self.critic_net, in_keys=["state"], out_keys=[(group, "state_value")]
        )
        self.loss = ClipPPOLoss(
            self.policy, critic, clip_epsilon=config.clip_coef,
            entropy_bonus=config.ent_coef > 0, entropy_coeff=config.ent_coef or None,
            critic_coeff=0.5 * config.vf_coef, loss_critic_type="l2",
            normalize_advantage=config.norm_adv,
        )  # fmt: skip
        self.loss.set_keys(
            reward=(group, "reward"), action=(group, "action"),
            value=(group, "state_value"), done=(group, "done"),
            terminated=(group, "terminated"),
        )  # fmt: skip
        self.loss.make_value_estimator(
            ValueEstimators.GAE, gamma=config.gamma, lmbda=config.gae_lambda
        )
        self.actor_params = list(self.loss.actor_network_params.values(True, True))
        self.critic_params = list(self.loss.critic_network_params.values(True, True))
        self.base_lrs = (config.learning_rate, config.critic_learning_rate)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.actor_params, "lr": config.learning_rate},
                {"params": self.critic_params, "lr": config.critic_learning_rate},
            ],
            eps=1e-5,
        )
        self.num_iterations = max(1, math.ceil(total_steps / self.frames_per_batch))
        self.collector = Collector(
            self.env, self.policy, frames_per_batch=self.frames_per_batch,
            total_frames=self.num_iterations * self.frames_per_batch,
            auto_register_policy_transforms=False,  # the policy needs no InitTracker
        )  # fmt: skip
        self.buffer = ReplayBuffer(
            storage=LazyTensorStorage(self.frames_per_batch),
            sampler=SamplerWithoutReplacement(),
            batch_size=math.ceil(self.frames_per_batch / config.num_minibatches),
        )
        self.env_steps = 0
        self.rollout_s = 0.0
        self.update_s = 0.0

    def parameters(self) -> dict[str, int]:
        actor, critic = count_parameters(self.actor_net), count_parameters(self.critic_net)
        return {"actor": actor, "critic": critic, "total": actor + critic}

    def settings(self) -> dict[str, Any]:
        config = self.config
        return {
            "route": self.route,
            "env": "PettingZooWrapper(marra.envs.parallel_env('hospital'), return_state=True)"
            if self.route == "wrapper"
            else f"marra.envs.torchrl_env('hospital', num_envs={config.num_envs})",
            "group": self.group,
            "frames_per_batch": self.frames_per_batch,
            "minibatch_size": self.buffer._batch_size,
            "update_epochs": config.update_epochs,
            "num_minibatches": config.num_minibatches,
            "gamma": config.gamma,
            "gae_lambda": config.gae_lambda,
            "clip_epsilon": config.clip_coef,
            "learning_rate": config.learning_rate,
            "critic_learning_rate": config.critic_learning_rate,
            "anneal_lr": config.anneal_lr,
            "max_grad_norm": config.max_grad_norm,
            "entropy_coeff": config.ent_coef,
            "critic_coeff": 0.5 * config.vf_coef,
            "normalize_advantage": config.norm_adv,
            "actor": f"MultiAgentMLP(share_params=True, centralized=False, num_cells="
            f"{list(config.actor_hidden)}, ReLU) -> IndependentNormal",
            "critic": f"MLP on 'state' {[*config.critic_encoder_hidden, *config.critic_hidden]}",
            "observation_norm": "VecNorm(decay=1.0, eps=1e-2)",
            "value_norm": False,
            "loss": "ClipPPOLoss(loss_critic_type='l2') + GAE",
            "collector": "torchrl.collectors.Collector",
        }

    def run(self, after_update: Callable[[int], bool] | None = None) -> None:
        """Train for ``num_iterations`` batches; ``after_update(iteration)`` may return True to
        stop (its time is not counted in ``rollout_s`` / ``update_s``)."""
        import warnings

        batches = iter(self.collector)
        with warnings.catch_warnings():
            # normalising over agents too is intended: a team advantage is every agent's
            warnings.filterwarnings("ignore", message="You requested advantage normalization")
            try:
                self._run(batches, after_update)
            finally:
                self.collector.shutdown()

    def _run(self, batches: Any, after_update: Callable[[int], bool] | None) -> None:
        """One collection and one update per iteration (see :meth:`run`)."""
        config = self.config
        for iteration in range(1, self.num_iterations + 1):
            tick = time.perf_counter()
            data = next(batches)
            self.rollout_s += time.perf_counter() - tick
            tick = time.perf_counter()
            if config.anneal_lr:  # linear anneal to 0 over the run, as marra
                frac = 1.0 - (iteration - 1) / self.num_iterations
                for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                    group["lr"] = frac * base_lr
            with torch.no_grad():
                self.loss.value_estimator(
                    data,
                    params=self.loss.critic_network_params,
                    target_params=self.loss.target_critic_network_params,
                )
            self.buffer.empty()
            self.buffer.extend(data.reshape(-1))
            for _ in range(config.update_epochs):
                for _ in range(config.num_minibatches):
                    losses = self.loss(self.buffer.sample())
                    total = losses["loss_objective"] + losses["loss_critic"]
                    if "loss_entropy" in losses.keys():
                        total = total + losses["loss_entropy"]
                    self.optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    torch.nn.utils.clip_grad_norm_(self.actor_params, config.max_grad_norm)
                    torch.nn.utils.clip_grad_norm_(self.critic_params, config.max_grad_norm)
                    self.optimizer.step()
            self.collector.update_policy_weights_()
            self.update_s += time.perf_counter() - tick
            self.env_steps += int(data.numel())
            if after_update is not None and after_update(iteration):
                break

    def train_s(self) -> float:
        return self.rollout_s + self.update_s

    @torch.no_grad()
    def act(self) -> Act:
        """The current policy's deterministic action (the Gaussian mean) on raw observations,
        normalised with the current ``VecNorm`` statistics (frozen during the evaluation)."""
        from tensordict import TensorDict

        key = (self.group, "observation")
        loc = self.vecnorm.loc.get(key).clone()
        scale = self.vecnorm.scale.get(key).clone()
        group, module = self.group, self.loc_module

        def act(obs: torch.Tensor, env: HospitalEnv) -> torch.Tensor:
            inner = TensorDict({"observation": (obs - loc) / scale}, batch_size=obs.shape[:2])
            td = module(TensorDict({group: inner}, batch_size=obs.shape[:1]))
            return td[group, "loc"].to(torch.float64)

        return act


def torchrl_throughput(
    peer: str, args: argparse.Namespace, env_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Train one route for its throughput budget with marra's config; no evaluation."""
    route = TORCHRL_ROUTES[peer]
    steps = args.torchrl_wrapper_throughput_steps if route == "wrapper" else args.throughput_steps
    config = marra_config(args, args.total_steps)
    side = TorchRLPeer(
        route, config, env_kwargs, seed=args.seed, total_steps=steps,
        frames_per_batch=args.torchrl_wrapper_frames_per_batch,
    )  # fmt: skip
    start = time.perf_counter()
    side.run()
    wall = time.perf_counter() - start
    return {
        "env_steps": side.env_steps,
        "seconds": wall,
        "env_steps_per_s": side.env_steps / wall,
        "rollout_s": side.rollout_s,
        "update_s": side.update_s,
        "other_s": wall - side.rollout_s - side.update_s,
        "parameters": side.parameters(),
        "settings": side.settings(),
    }


def torchrl_time_to_quality(
    peer: str,
    args: argparse.Namespace,
    env_kwargs: dict[str, Any],
    eval_set: EvalSet,
    target_mae: float,
) -> dict[str, Any]:
    """Train one route with marra's config and ``total_steps`` (its learning-rate schedule);
    score the policy on the evaluation set every ``--eval-every`` env-steps (native) or every
    ``--torchrl-wrapper-eval-every`` (wrapper: it is slow) and at the first update after the
    cap (``--torchrl-cap-seconds``); stop at the target, at that score, or after
    ``total_steps``."""
    route = TORCHRL_ROUTES[peer]
    side = TorchRLPeer(
        route, marra_config(args, args.torchrl_total_steps), env_kwargs, seed=args.seed,
        total_steps=args.torchrl_total_steps,
        frames_per_batch=args.torchrl_wrapper_frames_per_batch,
    )  # fmt: skip
    every_steps = args.torchrl_wrapper_eval_every if route == "wrapper" else args.eval_every
    every = max(1, round(every_steps / side.frames_per_batch))
    curve: list[dict[str, float]] = []
    state = {"stopped_by": "total_steps", "eval_s": 0.0}

    def after_update(iteration: int) -> bool:
        train_s = side.train_s()
        over_cap = train_s >= args.torchrl_cap_seconds
        last = iteration == side.num_iterations
        if iteration % every and not over_cap and not last:
            return False
        tick = time.perf_counter()
        mae, _ = eval_set.score(side.act())
        state["eval_s"] += time.perf_counter() - tick
        curve.append({"train_s": train_s, "env_steps": side.env_steps, "mae": mae})
        print(f"  {peer:<15} {side.env_steps:>8,} steps {train_s:6.1f} s  MAE {mae:.3f}")
        if mae <= target_mae:
            state["stopped_by"] = "target"
            return True
        if over_cap:
            state["stopped_by"] = "cap"
            return True
        return False

    side.run(after_update)
    result = _summarise(curve, target_mae, state["stopped_by"], args.torchrl_cap_seconds)
    result["eval_s"] = state["eval_s"]
    result["train_s_at_stop"] = side.train_s()
    result["env_steps_at_stop"] = side.env_steps
    result["env_steps_per_train_s"] = side.env_steps / max(side.train_s(), 1e-9)
    result["eval_every_env_steps"] = every * side.frames_per_batch
    return result


def compare_peer(marra_result: dict[str, Any], peer_result: dict[str, Any]) -> dict[str, Any]:
    """Ratios against one TorchRL route, as :func:`compare` for SB3: throughput marra/peer,
    time and env-steps to quality peer/marra (> 1: marra faster), with ``kind`` saying whether
    they are exact or bounds."""
    m, p = marra_result["time_to_quality"], peer_result["time_to_quality"]
    if m["reached"] and p["reached"]:
        kind = "exact"
        time_ratio = _ratio(p["train_s_to_target"], m["train_s_to_target"])
        steps_ratio = _ratio(p["env_steps_to_target"], m["env_steps_to_target"])
    elif m["reached"]:
        kind = "lower bound (the peer did not reach the target)"
        time_ratio = _ratio(p["train_s_at_stop"], m["train_s_to_target"])
        steps_ratio = _ratio(p["env_steps_at_stop"], m["env_steps_to_target"])
    elif p["reached"]:
        kind = "upper bound (marra did not reach the target)"
        time_ratio = _ratio(p["train_s_to_target"], m["train_s"])
        steps_ratio = _ratio(p["env_steps_to_target"], m["env_steps"])
    else:
        kind = "undefined (neither side reached the target)"
        time_ratio = steps_ratio = None
    return {
        "throughput_marra_over_peer": _ratio(
            marra_result["throughput"]["env_steps_per_s"],
            peer_result["throughput"]["env_steps_per_s"],
        ),
        "time_to_quality_peer_over_marra": time_ratio,
        "env_steps_to_quality_peer_over_marra": steps_ratio,
        "time_to_quality_kind": kind,
        "best_mae_peer_over_marra": _ratio(p["best_mae"], m["best_mae"]),
    }


def torchrl_aims(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 9's aims for the TorchRL peer: marra at least 2x faster to the target than the
    native route, which goes through ``marra.envs.torchrl_env``."""
    ratios = report.get("ratios_torchrl_native")
    if ratios is None:
        return {}
    time_ratio, kind = ratios["time_to_quality_peer_over_marra"], ratios["time_to_quality_kind"]
    return {
        "native_route_through_torchrl_env": report["torchrl_native"]["settings"]["env"].startswith(
            "marra.envs.torchrl_env"
        ),
        "marra_at_least_2x_faster_to_target_than_native": (
            time_ratio is not None and time_ratio >= 2.0 and not kind.startswith("upper")
        ),
    }


# --------------------------------------------------------------------------- report
def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def compare(marra_result: dict[str, Any], sb3_result: dict[str, Any]) -> dict[str, Any]:
    """Ratios: throughput marra/SB3, time and steps to quality SB3/marra (> 1: marra faster).

    When only marra reaches quality the SB3/marra ratios are lower bounds (SB3's training time
    / steps at its stop); when neither does, or only SB3 does, they are given as computed from
    what is known with ``kind`` saying so.
    """
    throughput = _ratio(
        marra_result["throughput"]["env_steps_per_s"], sb3_result["throughput"]["env_steps_per_s"]
    )
    m, s = marra_result["time_to_quality"], sb3_result["time_to_quality"]
    if m["reached"] and s["reached"]:
        kind = "exact"
        time_ratio = _ratio(s["train_s_to_target"], m["train_s_to_target"])
        steps_ratio = _ratio(s["env_steps_to_target"], m["env_steps_to_target"])
    elif m["reached"]:
        kind = "lower bound (SB3 did not reach the target)"
        time_ratio = _ratio(s["train_s_at_stop"], m["train_s_to_target"])
        steps_ratio = _ratio(s["env_steps_at_stop"], m["env_steps_to_target"])
    elif s["reached"]:
        kind = "upper bound (marra did not reach the target)"
        time_ratio = _ratio(s["train_s_to_target"], m["train_s"])
        steps_ratio = _ratio(s["env_steps_to_target"], m["env_steps"])
    else:
        kind = "undefined (neither side reached the target)"
        time_ratio = steps_ratio = None
    return {
        "throughput_marra_over_sb3": throughput,
        "time_to_quality_sb3_over_marra": time_ratio,
        "env_steps_to_quality_sb3_over_marra": steps_ratio,
        "time_to_quality_kind": kind,
        "best_mae_sb3_over_marra": _ratio(s["best_mae"], m["best_mae"]),
    }


def aims(report: dict[str, Any]) -> dict[str, Any]:
    ratios = report["ratios"]
    time_ratio = ratios["time_to_quality_sb3_over_marra"]
    kind = ratios["time_to_quality_kind"]
    return {
        "throughput_not_below_sb3": (ratios["throughput_marra_over_sb3"] or 0.0) >= 1.0,
        "marra_reached_target_within_cap": report["marra"]["time_to_quality"]["reached"],
        "time_to_quality_at_least_10x": (
            time_ratio is not None and time_ratio >= 10.0 and not kind.startswith("upper")
        ),
    }


def _fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _fmt_steps(value: float | None) -> str:
    return "" if value is None else f"{int(value):,}"


def _fmt_mae(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _reach_text(ttq: dict[str, Any]) -> str:
    if ttq["reached"]:
        return f"{ttq['train_s_to_target']:.1f} s"
    seconds = ttq.get("train_s_at_stop", ttq["train_s"]) or 0.0
    why = {"cap": "", "total_steps": " (total_steps ran out)"}.get(ttq["stopped_by"], "")
    return f"not reached in {seconds:.0f} s{why}"


def _fmt_ratio(value: float | None, kind: str = "exact") -> str:
    if value is None:
        return "n/a"
    prefix = ">= " if kind.startswith("lower") else "<= " if kind.startswith("upper") else ""
    return f"{prefix}{value:.2f}x"


def tables(report: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    refs = report["evaluation"]["references"]
    headers = [
        "learner",
        "params (actor + critic)",
        "env-steps/s",
        "rollout / update (s)",
        "time to MAE <= target",
        "env-steps to target",
        "best MAE",
        "last MAE (steps)",
    ]
    rows = []
    sides = (("marra PPO", "marra"), ("SB3 PPO", "sb3"), *TORCHRL_LABELS)
    for name, key in ((name, key) for name, key in sides if key in report):
        side = report[key]
        thr, ttq, par = side["throughput"], side["time_to_quality"], side["parameters"]
        rows.append(
            [
                name,
                f"{par['actor']:,} + {par['critic']:,}",
                f"{thr['env_steps_per_s']:,.0f}",
                f"{thr['rollout_s']:.1f} / {thr['update_s']:.1f}",
                _reach_text(ttq),
                _fmt_steps(ttq["env_steps_to_target"]),
                _fmt_mae(ttq["best_mae"]),
                f"{_fmt_mae(ttq['final_mae'])} ({_fmt_steps(ttq['env_steps'])})",
            ]
        )
    lines = [
        f"references on the evaluation set: hold {refs['hold']:.3f}, rule {refs['rule']:.3f}, "
        f"{refs['qp_label']} {refs['qp']:.3f}; target MAE "
        f"{report['evaluation']['target_mae']:.3f} "
        f"({report['evaluation']['target_factor']:g} x QP)",
    ]
    if "sb3" in report:
        ratios = report["ratios"]
        kind = ratios["time_to_quality_kind"]
        lines += [
            f"throughput marra / SB3: {_fmt_ratio(ratios['throughput_marra_over_sb3'])}",
            "time to quality SB3 / marra: "
            f"{_fmt_ratio(ratios['time_to_quality_sb3_over_marra'], kind)}; env-steps SB3 / "
            f"marra: {_fmt_ratio(ratios['env_steps_to_quality_sb3_over_marra'], kind)} ({kind})",
        ]
    lines += torchrl_lines(report)
    return headers, rows, lines


#: Table labels and report keys of the TorchRL peers.
TORCHRL_LABELS = (
    ("TorchRL MAPPO (PettingZooWrapper)", "torchrl_wrapper"),
    ("TorchRL MAPPO (torchrl_env)", "torchrl_native"),
)


def torchrl_lines(report: dict[str, Any]) -> list[str]:
    """The ratio lines of the TorchRL peers present in ``report``."""
    lines = []
    for label, key in TORCHRL_LABELS:
        ratios = report.get(f"ratios_{key}")
        if ratios is None:
            continue
        kind = ratios["time_to_quality_kind"]
        lines.append(
            f"{label}: throughput marra / peer "
            f"{_fmt_ratio(ratios['throughput_marra_over_peer'])}; time to quality peer / marra "
            f"{_fmt_ratio(ratios['time_to_quality_peer_over_marra'], kind)}; env-steps peer / "
            f"marra {_fmt_ratio(ratios['env_steps_to_quality_peer_over_marra'], kind)} ({kind})"
        )
    return lines


def markdown_table(headers: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def print_tables(report: dict[str, Any], *, markdown: bool) -> None:
    headers, rows, lines = tables(report)
    meta = report["meta"]
    title = (
        f"PPO training, shifting targets, n = {meta['n_hospitals']}, B = "
        f"{meta['transfer_budget']:g}, {meta['torch_threads']} torch thread(s), "
        f"cap {meta['cap_seconds']:g} s"
        + (
            f" (SB3 {meta['sb3_cap_seconds']:g} s)"
            if meta.get("sb3_cap_seconds", meta["cap_seconds"]) != meta["cap_seconds"]
            else ""
        )
        + (
            f" (TorchRL {meta['torchrl_cap_seconds']:g} s)"
            if meta.get("torchrl_cap_seconds", meta["cap_seconds"]) != meta["cap_seconds"]
            else ""
        )
    )
    if markdown:
        print(title + "\n")
        print(markdown_table(headers, rows) + "\n")
        print("\n".join(f"- {line}" for line in lines))
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for header in headers:
            table.add_column(header, justify="left" if header == "learner" else "right")
        for row in rows:
            table.add_row(*row)
        console = Console() if sys.stdout.isatty() else Console(width=150)
        console.print(table)
        for line in lines:
            console.print(line)
    except ImportError:  # pragma: no cover - rich is a dependency
        print(title)
        print(markdown_table(headers, rows))
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    defaults = PPOConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-hospitals", type=int, default=150)
    parser.add_argument("--scenario", default="shifting")
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--transfer-budget", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=1, help="training seed of both sides")
    parser.add_argument("--throughput-steps", type=int, default=None, help="(a): 50k; 10k quick")
    parser.add_argument("--cap-seconds", type=float, default=None, help="(b): 300; 30 quick")
    parser.add_argument(
        "--total-steps",
        type=int,
        default=defaults.total_steps,
        help="(b): env-step budget of both sides (marra's default total_steps)",
    )
    parser.add_argument("--target-factor", type=float, default=1.1, help="target = this x QP")
    parser.add_argument(
        "--critic", default=None, help="marra's critic input (default: PPOConfig's: mappo, state)"
    )
    parser.add_argument("--eval-episodes", type=int, default=8)
    parser.add_argument("--eval-seed", type=int, default=20_250)
    parser.add_argument(
        "--eval-every", type=int, default=8_000, help="marra: env-steps between scores"
    )
    parser.add_argument(
        "--sb3-cap-seconds",
        type=float,
        default=None,
        help="(b): SB3's own cap (default: --cap-seconds), to bound the ratio when it never "
        "reaches the target",
    )
    parser.add_argument(
        "--sb3-total-steps",
        type=int,
        default=None,
        help="(b): SB3's own env-step budget (default: --total-steps; marra keeps its own, "
        "which also sets its learning-rate schedule)",
    )
    parser.add_argument("--sb3-envs", type=int, default=8)
    parser.add_argument("--sb3-net-arch", default="32,32", help="hidden widths, pi and vf")
    parser.add_argument(
        "--sb3-n-steps", type=int, default=None, help="override SB3's n_steps (tests only)"
    )
    parser.add_argument(
        "--peers",
        default=None,
        help=f"comma-separated peers among {', '.join(PEERS)} (default: every one installed)",
    )
    parser.add_argument(
        "--torchrl-cap-seconds",
        type=float,
        default=None,
        help="(b): the TorchRL peers' cap (default: --cap-seconds); a longer one bounds the "
        "ratio tighter when a peer never reaches the target",
    )
    parser.add_argument(
        "--torchrl-total-steps",
        type=int,
        default=None,
        help="(b): the TorchRL peers' env-step budget (default: --total-steps; it also sets their "
        "learning-rate schedule); marra keeps its own",
    )
    parser.add_argument(
        "--torchrl-wrapper-throughput-steps",
        type=int,
        default=None,
        help="(a) of the PettingZooWrapper route (slow): 2,400; one batch quick",
    )
    parser.add_argument(
        "--torchrl-wrapper-frames-per-batch",
        type=int,
        default=None,
        help="PettingZooWrapper route: env-steps per update (default marra's num_envs x "
        "horizon; one episode with --quick)",
    )
    parser.add_argument(
        "--torchrl-wrapper-eval-every",
        type=int,
        default=None,
        help="PettingZooWrapper route: env-steps between scores (default: every update)",
    )
    parser.add_argument("--quick", action="store_true", help="10k-step throughput, 30-s caps")
    parser.add_argument("--out", default="benchmarks/results/training.json")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    if args.throughput_steps is None:
        args.throughput_steps = 10_000 if args.quick else 50_000
    if args.cap_seconds is None:
        args.cap_seconds = 30.0 if args.quick else 300.0
    if args.sb3_cap_seconds is None:
        args.sb3_cap_seconds = args.cap_seconds
    if args.sb3_total_steps is None:
        args.sb3_total_steps = args.total_steps

    if args.torchrl_cap_seconds is None:
        args.torchrl_cap_seconds = args.cap_seconds
    if args.torchrl_total_steps is None:
        args.torchrl_total_steps = args.total_steps
    peers = select_peers(args.peers)
    if "torchrl-wrapper" in peers:
        horizon = args.horizon
        if args.torchrl_wrapper_frames_per_batch is None:
            per_update = horizon if args.quick else PPOConfig().num_envs * horizon
            args.torchrl_wrapper_frames_per_batch = per_update
        if args.torchrl_wrapper_throughput_steps is None:
            quick_steps = args.torchrl_wrapper_frames_per_batch
            args.torchrl_wrapper_throughput_steps = quick_steps if args.quick else 2_400
        if args.torchrl_wrapper_eval_every is None:
            args.torchrl_wrapper_eval_every = args.torchrl_wrapper_frames_per_batch
    sb3 = import_sb3() if "sb3" in peers else None
    torchrl = import_torchrl() if any(p in TORCHRL_ROUTES for p in peers) else None
    torch.set_num_threads(1)
    started = time.perf_counter()
    load_before = list(os.getloadavg())
    env_kwargs: dict[str, Any] = {
        "n_hospitals": args.n_hospitals,
        "scenario": args.scenario,
        "transfer_budget": args.transfer_budget,
    }
    if args.horizon != 50:
        env_kwargs["horizon"] = args.horizon

    eval_set = EvalSet(env_kwargs, args.eval_episodes, args.eval_seed)
    refs = references(eval_set, args.transfer_budget)
    target_mae = args.target_factor * refs["qp"]
    print(
        f"references: hold {refs['hold']:.3f}  rule {refs['rule']:.3f}  qp {refs['qp']:.3f}  "
        f"-> target {target_mae:.3f}",
        flush=True,
    )

    print(f"(a) marra throughput, {args.throughput_steps:,} env-steps ...", flush=True)
    marra_thr = marra_throughput(args, env_kwargs)
    print(f"    {marra_thr['env_steps_per_s']:,.0f} env-steps/s", flush=True)
    if sb3 is not None:
        print(f"(a) SB3 throughput, {args.throughput_steps:,} env-steps ...", flush=True)
        sb3_thr = sb3_throughput(args, env_kwargs)
        print(f"    {sb3_thr['env_steps_per_s']:,.0f} env-steps/s", flush=True)
    torchrl_thr = {}
    for peer in (p for p in TORCHRL_ROUTES if p in peers):
        print(f"(a) {peer} throughput ...", flush=True)
        torchrl_thr[peer] = torchrl_throughput(peer, args, env_kwargs)
        print(f"    {torchrl_thr[peer]['env_steps_per_s']:,.0f} env-steps/s", flush=True)

    print(f"(b) marra time to quality (cap {args.cap_seconds:g} s) ...", flush=True)
    marra_ttq = marra_time_to_quality(args, env_kwargs, eval_set, target_mae)
    if sb3 is not None:
        print(f"(b) SB3 time to quality (cap {args.sb3_cap_seconds:g} s) ...", flush=True)
        sb3_ttq = sb3_time_to_quality(args, env_kwargs, eval_set, target_mae)
    torchrl_ttq = {}
    for peer in torchrl_thr:
        cap = args.torchrl_cap_seconds
        print(f"(b) {peer} time to quality (cap {cap:g} s) ...", flush=True)
        torchrl_ttq[peer] = torchrl_time_to_quality(peer, args, env_kwargs, eval_set, target_mae)

    config = marra_config(args, args.total_steps)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "n_hospitals": args.n_hospitals,
        "scenario": args.scenario,
        "horizon": args.horizon,
        "transfer_budget": args.transfer_budget,
        "integer": False,
        "seed": args.seed,
        "throughput_steps": args.throughput_steps,
        "cap_seconds": args.cap_seconds,
        "total_steps": args.total_steps,
        "sb3_cap_seconds": args.sb3_cap_seconds,
        "sb3_total_steps": args.sb3_total_steps,
        "torchrl_cap_seconds": args.torchrl_cap_seconds,
        "torchrl_total_steps": args.torchrl_total_steps,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "peers": list(peers),
        "stable_baselines3": None if sb3 is None else sb3.__version__,
        "torchrl": None if torchrl is None else torchrl.__version__,
        "tensordict": _version("tensordict") if torchrl is not None else None,
        "gymnasium": _version("gymnasium"),
        "marra": _version("marra"),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "elapsed_s": time.perf_counter() - started,
    }
    report: dict[str, Any] = {
        "meta": meta,
        "evaluation": {
            "episodes": args.eval_episodes,
            "seed": args.eval_seed,
            "mae": "mean over episodes and steps of mean_i |y_i - t_i| (paper 000 Eq. 8)",
            "policies_act": "deterministically (Gaussian mean)",
            "target_factor": args.target_factor,
            "target_mae": target_mae,
            "references": refs,
        },
        "marra": {
            "config": config.to_dict(),
            "parameters": marra_parameters(config, env_kwargs),
            "throughput": marra_thr,
            "time_to_quality": marra_ttq,
        },
    }
    if sb3 is not None:
        report["sb3"] = {
            "settings": sb3_thr.pop("settings"),
            "parameters": sb3_thr.pop("parameters"),
            "throughput": sb3_thr,
            "time_to_quality": sb3_ttq,
        }
        report["ratios"] = compare(report["marra"], report["sb3"])
        report["aims"] = aims(report)
    for peer, thr in torchrl_thr.items():
        key = peer.replace("-", "_")
        report[key] = {
            "settings": thr.pop("settings"),
            "parameters": thr.pop("parameters"),
            "throughput": thr,
            "time_to_quality": torchrl_ttq[peer],
        }
        report[f"ratios_{key}"] = compare_peer(report["marra"], report[key])
    if torchrl_thr:
        report["torchrl_aims"] = torchrl_aims(report)
    print_tables(report, markdown=args.markdown)
    atomic_write_text(Path(args.out), json.dumps(report, indent=2, default=_json_default) + "\n")
    print(f"wrote {args.out}")
    return report


def select_peers(spec: str | None) -> tuple[str, ...]:
    """The peers of ``--peers`` (None: every peer whose package is installed); a named peer
    that is not installed ends the run with the command that installs it."""
    if spec is None:
        installed = []
        if importlib.util.find_spec("stable_baselines3") is not None:
            installed.append("sb3")
        if import_torchrl() is not None:
            installed += list(TORCHRL_ROUTES)
        return tuple(installed)
    peers = tuple(p.strip() for p in spec.split(",") if p.strip())
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SystemExit(f"--peers: unknown peer {unknown[0]!r}; choose among {', '.join(PEERS)}")
    if any(p in TORCHRL_ROUTES for p in peers) and import_torchrl() is None:
        raise SystemExit("torchrl is not installed: pip install -e '.[torchrl]'")
    return peers


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return repr(value)


if __name__ == "__main__":
    main()
