"""One training loop for every learner: run folder, resume, logs, timers, evaluation hook.

``train(config, env_kwargs, env="roles", out_dir=...)`` builds the environment from the registry,
the model from the config, then repeats: rollout -> update -> log -> (atomic) checkpoint. It
writes to ``out_dir``:

- ``checkpoint.pt``: everything a resume needs (model, optimiser, every RNG, counters, the log
  rows so far), written atomically every ``checkpoint_every`` iterations and at the end;
- ``train_log.csv``: one row per iteration (appended after the checkpoint; rewritten from the
  checkpoint's rows on resume, so the log always matches the checkpoint it resumes from);
- ``tensorboard/``: the same rows as TensorBoard scalars (resume purges the replayed steps);
- ``policy.pt``: the trained policy (:mod:`marra.rl.policy`) once training ends.

Seeded and deterministic on CPU: the same config gives bitwise the same parameters, and an
interrupted run resumed with ``resume=True`` ends with exactly those of an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marra._io import OutputPathError, atomic_write_text, check_output_dir
from marra.envs.base import MultiAgentEnv
from marra.envs.errors import EnvError

from .algorithm import Algorithm, Constraint, PPOAlgorithm
from .checkpoint import (
    CheckpointError,
    describe_settings,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from .config import ALGORITHMS, PPOConfig
from .grouping import GROUPS_NAME, GroupsLog
from .policy import save_policy
from .ppo import ActorCritic, TrainingError

__all__ = [
    "train",
    "TrainResult",
    "RunExistsError",
    "MemoryEstimateError",
    "LOG_NAME",
    "CHECKPOINT_NAME",
    "POLICY_NAME",
    "estimate_rollout_bytes",
    "make_training_env",
]

LOG_NAME = "train_log.csv"
CHECKPOINT_NAME = "checkpoint.pt"
POLICY_NAME = "policy.pt"
TENSORBOARD_DIR = "tensorboard"

#: settings that do not change the numbers a run produces, so a resume may change them
_FREE_ON_RESUME = {"checkpoint_every", "torch_threads", "total_steps"}


class RunExistsError(ValueError):
    """``out_dir`` already holds a run and neither resume nor overwrite was asked for."""


class MemoryEstimateError(ValueError):
    """A run whose buffers would not fit in this machine's memory (refused before allocating)."""


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
    agent_steps_per_s: float = float("nan")
    env_name: str = ""
    env_options: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> ActorCritic:
        """The trained actor-critic (``agent`` is its name of marra 0.1)."""
        return self.agent

    @property
    def final(self) -> dict[str, float]:
        """The last logged row (empty if no iteration ran in this call)."""
        return self.history[-1] if self.history else {}


def _physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate_rollout_bytes(
    *, steps: int, num_envs: int, num_agents: int, obs_dim: int, state_dim: int, actions: int
) -> int:
    """Bytes of one rollout's buffers and of the update's working copies (about 3x the buffer:
    flattened views, minibatch gathers, activations)."""
    per_agent = obs_dim + actions + 6  # obs, action(s)/mask, log-prob, value, reward, done...
    buffer = steps * num_envs * (num_agents * per_agent + state_dim) * 4
    return int(3 * buffer)


def _check_memory(estimate: int, what: str) -> None:
    total = _physical_memory_bytes()
    if total is not None and estimate > 0.8 * total:
        raise MemoryEstimateError(
            f"{what}: needs about {estimate / 2**30:,.1f} GiB for its rollout buffers, but this "
            f"machine has {total / 2**30:,.1f} GiB; use fewer copies, agents or steps"
        )


def make_training_env(
    env: str,
    options: Mapping[str, Any],
    config: PPOConfig,
    make_env: Callable[..., MultiAgentEnv] | None = None,
) -> MultiAgentEnv:
    """The environment a run trains on: ``config.num_envs`` copies with auto-reset."""
    options = dict(options)
    for key, value in (("num_envs", config.num_envs), ("device", config.device)):
        if key in options and options[key] != value:
            raise ValueError(
                f"env option {key}={options[key]!r} conflicts with the training setting "
                f"{value!r}; set it in the training config"
            )
        options.pop(key, None)
    for key in ("auto_reset", "autoreset"):
        options.pop(key, None)
    seed = options.pop("seed", config.seed)
    if make_env is not None:
        return make_env(
            num_envs=config.num_envs, device=config.device, seed=seed, autoreset=True, **options
        )
    from marra.envs.registry import make

    return make(
        env, num_envs=config.num_envs, device=config.device, seed=seed, autoreset=True, **options
    )


class _RunLog:
    """``train_log.csv`` (one row per iteration) and TensorBoard scalars when available.

    The TensorBoard writer is created at the first row, so a run that fails before its first
    iteration leaves no event file."""

    def __init__(self, out_dir: Path, columns: list[str], rows: list[dict[str, Any]],
                 purge_step: int | None, notes: list[str]) -> None:  # fmt: skip
        self.out_dir = out_dir
        self.path = out_dir / LOG_NAME
        self.columns = columns
        self.notes = notes
        self.purge_step = purge_step
        self.writer: Any = None
        self._tried_writer = False
        self.rows = list(rows)
        for row in self.rows:
            self._extend(row)
        self._rewrite()

    def _extend(self, row: dict[str, Any]) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns.extend(new)
        return bool(new)

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        atomic_write_text(self.path, buffer.getvalue())

    def _tensorboard(self) -> Any:
        if self._tried_writer:
            return self.writer
        self._tried_writer = True
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(self.out_dir / TENSORBOARD_DIR), purge_step=self.purge_step
            )
        except ImportError:
            self.notes.append(
                "TensorBoard logging skipped: the tensorboard package is not installed"
            )
        except Exception as exc:  # a broken tensorboard install must not stop training
            self.notes.append(f"TensorBoard logging skipped: {exc}")
        return self.writer

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._extend(row):  # a new column (e.g. the first evaluation): rewrite the table
            self._rewrite()
        else:
            with self.path.open("a", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
                writer.writerow({k: _csv_value(v) for k, v in row.items()})
        tensorboard = self._tensorboard()
        if tensorboard is not None:
            for key, value in row.items():
                if key not in ("iteration", "env_steps") and isinstance(value, int | float):
                    if math.isfinite(float(value)):
                        tensorboard.add_scalar(f"train/{key}", value, int(row["env_steps"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _progress_bar(enabled: bool, label: str, metric: str | None, total: int, completed: int
                  ) -> tuple[Any, Any]:  # fmt: skip
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("env-steps"),
        TextColumn("{task.fields[asps]:>8,.0f} agent-steps/s"),
    ]
    if metric:
        columns.append(TextColumn(f"{metric} {{task.fields[metric]:.3f}}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    bar = Progress(*columns, disable=not enabled)
    task = bar.add_task("train", total=total, completed=completed, asps=0.0, metric=float("nan"))
    return bar, task


def _check_same_run(state: dict[str, Any], config: PPOConfig, env_settings: Any, path: Path,
                    env_name: str) -> None:  # fmt: skip
    saved_algo = state["config"].get("algo", "mappo")
    if saved_algo != config.algo:
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} was written by algo {saved_algo!r}, not "
            f"{config.algo!r}"
        )
    # each learner's own config class (PPOConfig, or ALGORITHMS[algo].config_cls)
    saved = type(config).from_dict(_upgrade_config(state["config"])).to_dict()
    current = config.to_dict()
    keys = (set(saved) | set(current)) - _FREE_ON_RESUME
    changed = sorted(k for k in keys if saved.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} was written with other settings ({details}); "
            "only the number of steps may change on resume"
        )
    saved_env = state.get("env_name", "hospital")
    if saved_env != env_name:
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} trained env {saved_env!r}, not {env_name!r}"
        )
    if state["env_settings"] != env_settings:
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} was written with other environment options "
            f"({state['env_settings']!r}, now {env_settings!r})"
        )


def _upgrade_config(values: dict[str, Any]) -> dict[str, Any]:
    """A marra 0.1 checkpoint config, in today's fields (``critic="central"`` is ``"pool"``;
    ``reward_mode`` moved into the environment)."""
    values = dict(values)
    values.pop("reward_mode", None)
    if values.get("critic") == "central":
        values["critic"] = "pool"
    return values


def build_algorithm(spec: Any, config: Any, constraint: Constraint | None = None) -> Algorithm:
    """The learner ``config.algo`` names, for an environment with ``spec``: the registered
    ``builder`` of :data:`~marra.rl.config.ALGORITHMS`, or the PPO family. Without
    ``constraint``, the one ``config.equity`` names (:func:`marra.rl.eld.make_constraint`).

    Raises:
        CompatibilityError: a constraint for a learner that takes none.
        ValueError: a constraint given both here and by ``config.equity``.
    """
    from .eld import make_constraint
    from .ppo import CompatibilityError

    if constraint is None:
        constraint = make_constraint(config, spec)
    elif getattr(config, "equity", "none") != "none":
        raise ValueError(
            f"constraint: given as an argument and as equity={config.equity!r}; choose one"
        )
    info = ALGORITHMS.get(config.algo)
    builder = getattr(info, "builder", None)
    if builder is not None:
        algorithm = builder(spec, config, constraint)
    else:
        algorithm = PPOAlgorithm(spec, config, constraint)
    if constraint is not None and getattr(algorithm, "constraint", None) is not constraint:
        raise CompatibilityError(
            f"algo {config.algo!r} takes no constraint on its advantages ({constraint.name} "
            "needs a policy-gradient learner)"
        )
    return algorithm


def _remove_run_files(out_dir: Path) -> None:
    for name in (CHECKPOINT_NAME, POLICY_NAME, LOG_NAME, GROUPS_NAME):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / TENSORBOARD_DIR, ignore_errors=True)


def train(
    config: PPOConfig,
    env_kwargs: Mapping[str, Any] | None = None,
    *,
    out_dir: str | Path,
    env: str = "hospital",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log_fn: Callable[[dict[str, Any]], None] | None = None,
    make_env: Callable[..., MultiAgentEnv] | None = None,
    evaluate_every: int | None = None,
    evaluator: Callable[[ActorCritic, int], Mapping[str, float]] | None = None,
    constraint: Constraint | None = None,
) -> TrainResult:
    """Train ``config.algo`` with ``config.sharing`` on environment ``env`` and write
    ``policy.pt``, ``checkpoint.pt``, ``train_log.csv`` and TensorBoard logs to ``out_dir``.

    Args:
        config: the hyperparameters (:class:`PPOConfig`).
        env_kwargs: the environment's options (``marra envs NAME`` lists them), e.g.
            ``{"n_hospitals": 150, "scenario": "shifting"}`` for the hospital; ``num_envs`` and
            ``device`` come from ``config``, ``seed`` defaults to ``config.seed``.
        out_dir: the run folder.
        env: the registered environment name (default ``"hospital"``).
        resume: continue the run whose checkpoint is in ``out_dir`` (same config and
            environment; ``total_steps`` may grow, which also extends a finished run); the
            final parameters equal those of an uninterrupted run.
        overwrite: start afresh even if ``out_dir`` holds a run (its files are deleted once
            everything else has been checked).
        progress: show a live progress bar (agent-steps/s, the environment's first metric).
        log_fn: called with each iteration's log row.
        make_env: a factory ``make_env(num_envs=, device=, seed=, autoreset=, **env_kwargs)``
            of an environment that is not registered.
        evaluate_every, evaluator: every ``evaluate_every`` iterations (and at the end) call
            ``evaluator(model, iteration)``; its values join the log row as ``eval_<key>``.
        constraint: a :class:`~marra.rl.algorithm.Constraint` shaping a policy-gradient
            learner's advantages (None: the backbone alone).

    Raises:
        TrainingError: non-finite rewards, observations, losses or parameters.
        CheckpointError: ``resume`` without a usable checkpoint, or one from a different run.
        RunExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``.
        MemoryEstimateError: the rollout buffers would not fit in memory.
        EnvError, CompatibilityError, ValueError: bad environment options or combinations.
    """
    out_dir = Path(out_dir)
    try:
        check_output_dir(out_dir)
    except OutputPathError as exc:
        raise ValueError(f"out_dir: {exc}") from None
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    checkpoint_path, policy_path = out_dir / CHECKPOINT_NAME, out_dir / POLICY_NAME
    if checkpoint_path.exists() and not resume and not overwrite:
        raise RunExistsError(
            f"{out_dir} already holds a run ({CHECKPOINT_NAME}); resume it or start afresh "
            "with overwrite"
        )
    if resume and not checkpoint_path.exists():
        raise CheckpointError(f"resume: no checkpoint at {str(checkpoint_path)!r} to continue from")
    options = dict(env_kwargs or {})
    env_settings = describe_settings(options)
    environment = make_training_env(env, options, config, make_env)
    spec = environment.spec
    from marra.rl.ppo import resolve_critic

    config = resolve_critic(config, spec)  # the checkpoint and policy record the critic used
    rollout_steps = int(getattr(config, "rollout_steps", None) or spec.horizon)
    steps_per_iteration = rollout_steps * config.num_envs
    num_iterations = max(1, math.ceil(config.total_steps / steps_per_iteration))
    notes: list[str] = []
    if num_iterations * steps_per_iteration != config.total_steps:
        notes.append(
            f"training {num_iterations * steps_per_iteration:,} env-steps: {config.total_steps:,}"
            f" rounded up to whole iterations of {config.num_envs} copies x {rollout_steps} steps"
        )
    action_width = int(spec.action.n) if spec.action.is_discrete else int(spec.action.dim)
    _check_memory(
        estimate_rollout_bytes(
            steps=rollout_steps, num_envs=config.num_envs, num_agents=spec.num_agents,
            obs_dim=spec.obs_dim, state_dim=spec.state_dim, actions=action_width,
        ),
        f"training {spec.name} with {config.num_envs} copies of {spec.num_agents} agents",
    )  # fmt: skip

    previous_threads = torch.get_num_threads()
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    run_log: _RunLog | None = None
    try:
        # seeding: network initialisation from the global RNGs, everything else from `generator`
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        algorithm = build_algorithm(spec, config, constraint)
        model = algorithm.model
        sharing = getattr(model, "sharing", None)
        if sharing is not None:  # the scheme reaches the learner's optimisers (SePS copies)
            sharing.bind(algorithm)
        if algorithm.steps_per_iteration != steps_per_iteration:
            raise ValueError(
                f"internal: {config.algo} takes {algorithm.steps_per_iteration} env-steps an "
                f"iteration, the loop planned {steps_per_iteration}"
            )

        iteration, env_steps, elapsed_before = 0, 0, 0.0
        rows: list[dict[str, Any]] = []
        if resume:
            state = load_checkpoint(checkpoint_path)
            _check_same_run(state, config, env_settings, checkpoint_path, env)
            done_steps = int(state["env_steps"])
            if num_iterations * steps_per_iteration < done_steps:
                raise CheckpointError(
                    f"resume: the run already trained {done_steps:,} env-steps; ask for at "
                    "least that many steps"
                )
            algorithm.load_state_dict(state)
            restore_rng(state["rng"], generator)
            iteration, env_steps = int(state["iteration"]), done_steps
            elapsed_before = float(state["elapsed_s"])
            rows = [dict(r) for r in state.get("log_rows", [])]
        elif overwrite:  # everything checked: only now remove the old run's files
            _remove_run_files(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        columns = _log_columns(spec, evaluator is not None, rows)
        # TensorBoard drops events at steps >= purge_step: those after the checkpoint
        run_log = _RunLog(out_dir, columns, rows, env_steps + 1 if resume else None, notes)
        rows = list(rows)
        groups_log = None  # groups.csv: the grouping of every iteration (SePS, DyPS)
        if getattr(sharing, "regroups", False):
            groups_log = GroupsLog(out_dir, state.get("groups_history") if resume else None,
                                   state.get("groups_iterations") if resume else None)  # fmt: skip

        history: list[dict[str, Any]] = []
        start = time.perf_counter()
        session_steps = 0
        metric = spec.metrics[0] if spec.metrics else "return"
        label = f"{config.algo.upper()}/{config.sharing}"
        bar, task = _progress_bar(progress, label, metric, num_iterations * steps_per_iteration,
                                  env_steps)  # fmt: skip
        with bar:
            for note in notes if progress else ():
                bar.console.print(f"[yellow]note:[/] {note}")
            while iteration < num_iterations:
                iteration += 1
                tick = time.perf_counter()
                try:
                    values = algorithm.iteration(environment, iteration, num_iterations, generator)
                except TrainingError as exc:
                    if str(exc).startswith(f"iteration {iteration}:"):
                        raise
                    raise TrainingError(
                        f"iteration {iteration}: {exc}; the checkpoint in {str(out_dir)!r} "
                        "(if any) is from before the failure and no policy file was written"
                    ) from exc
                env_steps += steps_per_iteration
                session_steps += steps_per_iteration
                now = time.perf_counter()
                row: dict[str, Any] = {
                    "iteration": iteration,
                    "env_steps": env_steps,
                    "agent_steps": env_steps * spec.num_agents,
                    "elapsed_s": elapsed_before + now - start,
                    "steps_per_s": steps_per_iteration / (now - tick),
                    "agent_steps_per_s": steps_per_iteration * spec.num_agents / (now - tick),
                    **values,
                }
                if (
                    evaluator is not None
                    and evaluate_every
                    and (iteration % evaluate_every == 0 or iteration == num_iterations)
                ):
                    tock = time.perf_counter()
                    for key, value in evaluator(model, iteration).items():
                        row[f"eval_{key}"] = float(value)
                    row["eval_s"] = time.perf_counter() - tock
                    start += row["eval_s"]  # evaluation time is not training time
                rows.append(row)
                if groups_log is not None:
                    groups_log.record(iteration, sharing.groups())
                if iteration % config.checkpoint_every == 0 or iteration == num_iterations:
                    save_checkpoint(
                        checkpoint_path,
                        state=algorithm.state_dict(),
                        generator=generator,
                        iteration=iteration,
                        env_steps=env_steps,
                        elapsed_s=row["elapsed_s"],
                        config=config.to_dict(),
                        env_settings=env_settings,
                        extra={"env_name": env, "log_rows": rows,
                               **(groups_log.state() if groups_log is not None else {})},
                    )  # fmt: skip
                history.append(row)
                run_log.write(row)
                if groups_log is not None:
                    groups_log.flush()
                if log_fn is not None:
                    log_fn(row)
                bar.update(
                    task, completed=env_steps,
                    asps=session_steps * spec.num_agents / max(now - start, 1e-9),
                    metric=row.get(metric, float("nan")),
                )  # fmt: skip
        wall_s = time.perf_counter() - start
        if iteration == num_iterations and not checkpoint_path.exists():
            raise CheckpointError(f"internal: no checkpoint written to {str(checkpoint_path)!r}")
        save_policy(
            policy_path,
            model,
            config=config,
            spec=spec,
            env_name=env,
            env_options=options,
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
            agent=model,
            notes=notes,
            agent_steps_per_s=session_steps * spec.num_agents / wall_s if wall_s > 0 else math.nan,
            env_name=env,
            env_options=options,
        )
    finally:
        if run_log is not None:
            run_log.close()
        environment.close()
        torch.set_num_threads(previous_threads)


def _log_columns(spec: Any, with_eval: bool, rows: list[dict[str, Any]]) -> list[str]:
    columns = [
        "iteration", "env_steps", "agent_steps", "elapsed_s", "steps_per_s", "agent_steps_per_s",
        "rollout_s", "update_s", "episodes", "return", "team_return", *spec.metrics,
        "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance",
        "log_std", "learning_rate",
    ]  # fmt: skip
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    if with_eval and "eval_s" not in columns:
        columns.append("eval_s")
    return list(dict.fromkeys(columns))


__all__ += ["EnvError"]
