"""Evaluate policies and baselines on the same seeded episodes of any registered environment.

``evaluate(env, options, methods, episodes=K, seed=S)`` builds the environment with ``K`` copies
and resets it with ``seed``, so copy ``i`` plays episode ``SeedSequence(S, spawn_key=(i, 0))``
for EVERY method: the methods are compared on identical draws. Each method plays until every
copy has finished its first episode; the record of that episode is kept (a copy that ends early
is reset and its later steps are ignored).

Per episode and method: every metric of ``spec.metrics`` (``info["episode_metrics"]``),
``return`` (the undiscounted episode return averaged over agents) and ``team_return`` (its sum
over agents), plus the episode length ``length``, and for every environment the equity of the
episode outcomes ``x`` (``info["episode_outcome"]``, one value per agent; paper 003):
``mre_normalised`` (H/N, section 3.2.3, tolerance :data:`OUTCOME_TAU`), ``inc_rate`` (Eq. 3),
``cv`` (Eq. 7a), ``outcome_min`` and ``outcome_max`` (:func:`outcome_metrics`). MRE and CV are
defined for non-negative outcomes: an episode with a negative outcome (a negative return) gets
NaN for those three. Where an environment's own metric has one of these names (the hospital's
``mre_normalised`` is the mean over steps of the coverage MRE), the environment's value keeps
the name and the outcome-based one is reported as ``outcome_<name>`` (the hospital's
``outcome_mre_normalised`` is the MRE of the last step's coverage). Results are tidy rows
``method,env,seed,episode,metric,value`` and a summary ``{method: {metric: {"mean", "std"}}}``
(population std over episodes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from marra._io import atomic_write_text

__all__ = [
    "EvaluationResult",
    "evaluate",
    "PolicyRunner",
    "policy_runner",
    "BaselineRunner",
    "RESULT_COLUMNS",
    "OUTCOME_METRICS",
    "outcome_metrics",
    "write_evaluation",
]

RESULT_COLUMNS = ("method", "env", "seed", "episode", "metric", "value")
#: The outcome-equity metrics every evaluation reports (paper 003), and their tolerance tau.
OUTCOME_METRICS = ("mre_normalised", "inc_rate", "cv", "outcome_min", "outcome_max")
OUTCOME_TAU = 0.1


def outcome_metrics(outcomes: torch.Tensor, tau: float = OUTCOME_TAU) -> dict[str, torch.Tensor]:
    """The equity of episode outcomes ``(K, N)`` (one row per episode): ``{name: (K,)}``
    float64 for :data:`OUTCOME_METRICS`, by :mod:`marra.metrics_torch`; NaN for the MRE, the
    incidence and the CV of a row with a negative value (they are defined for outcomes >= 0)."""
    from marra import metrics_torch

    x = outcomes.to(torch.float64)
    h, _, inc_rate = metrics_torch.mre(x.clamp(min=0.0), tau)
    negative = (x < 0).any(dim=-1)
    nan = torch.full_like(h, math.nan)
    return {
        "mre_normalised": torch.where(negative, nan, h / x.shape[-1]),
        "inc_rate": torch.where(negative, nan, inc_rate),
        "cv": torch.where(negative, nan, metrics_torch.cv(x.clamp(min=0.0))),
        "outcome_min": x.amin(dim=-1),
        "outcome_max": x.amax(dim=-1),
    }


class PolicyRunner:
    """A learned policy as a method: deterministic actions, masks passed through.

    A method is ``start(env)``, ``act(obs) -> actions`` and optionally ``observe(step)``, called
    with every :class:`~marra.envs.base.Step` (for methods that learn from their own rewards,
    such as FEN's controller, :class:`marra.rl.fen.FENRunner`)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def start(self, env: Any) -> None:
        self.env = env

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act(obs, deterministic=True, mask=self.env.action_mask())


def policy_runner(path: Any, seed: int = 0) -> Any:
    """The method that plays the policy of a run (``policy.pt`` or its run folder): a
    :class:`PolicyRunner`, or for a FEN run the whole hierarchy from its checkpoint
    (:func:`marra.rl.fen.load_fen_runner`; its ``policy.pt`` alone holds the sub-policies).

    Raises:
        PolicyFileError, ValueError: an unusable policy file or a FEN run without checkpoint.
    """
    from marra.rl import load_policy

    policy = load_policy(path)
    if policy.algorithm == "fen":
        from marra.rl.fen import load_fen_runner

        return load_fen_runner(path, seed=seed)
    return PolicyRunner(policy)


class BaselineRunner:
    """A baseline of the environment (``spec.baselines``) as a method."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.seed = int(seed)

    def start(self, env: Any) -> None:
        self.method = env.baseline(self.name, seed=self.seed)
        self.method.reset()

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.method.act(obs)


@dataclass
class EvaluationResult:
    """Tidy rows and the per-method summary of one evaluation."""

    env: str
    episodes: int
    seed: int
    rows: list[tuple[str, str, int, int, str, float]] = field(default_factory=list)
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"env": NAME, "episodes": K, "methods": {METHOD: {METRIC: {"mean", "std"}}}}``."""
        return {"env": self.env, "episodes": self.episodes, "methods": self.summary}


def _play(env: Any, runner: Any, seed: int) -> dict[str, torch.Tensor]:
    """One first episode of every copy; ``{metric: (num_envs,)}``."""
    e = env.num_envs
    obs = env.reset(seed=seed)
    runner.start(env)
    finished = torch.zeros(e, dtype=torch.bool)
    record: dict[str, torch.Tensor] = {}
    observe = getattr(runner, "observe", None)
    for _ in range(10 * int(env.spec.horizon) + 10):
        step = env.step(runner.act(obs))
        if observe is not None:
            observe(step)
        obs = step.obs
        done = (step.terminated | step.truncated).cpu() & ~finished
        if bool(done.any()):
            info = step.info
            values = {
                **{k: v.cpu().to(torch.float64) for k, v in info["episode_metrics"].items()},
                "return": info["episode_return"].cpu().to(torch.float64).mean(-1),
                "team_return": info["episode_return"].cpu().to(torch.float64).sum(-1),
                "length": info["episode_length"].cpu().to(torch.float64),
            }
            if "episode_outcome" in info:
                for key, value in outcome_metrics(info["episode_outcome"].cpu()).items():
                    values[_outcome_name(key, env.spec.metrics)] = value
            for key, value in values.items():
                if key not in record:
                    record[key] = torch.full((e,), math.nan, dtype=torch.float64)
                record[key][done] = value[done]
            finished |= done
        if bool(finished.all()):
            return record
    raise RuntimeError(f"evaluate: episodes did not end within {10 * env.spec.horizon} steps")


def evaluate(
    env_name: str,
    options: Mapping[str, Any],
    methods: Mapping[str, Any],
    *,
    episodes: int = 10,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = 1,
) -> EvaluationResult:
    """Run every method (``label -> PolicyRunner | BaselineRunner``) on the same ``episodes``
    seeded episodes of ``env_name`` with ``options``; see the module docstring.

    ``threads``: torch threads while evaluating (one by default: small networks run faster
    and report fair decision times that way; restored afterwards).
    """
    from marra.envs.registry import make

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        env = make(env_name, num_envs=episodes, seed=seed, device=device, autoreset=True,
                   **dict(options))  # fmt: skip
        metrics = (
            *env.spec.metrics, "return", "team_return", "length",
            *(_outcome_name(key, env.spec.metrics) for key in OUTCOME_METRICS),
        )  # fmt: skip
        result = EvaluationResult(env=env_name, episodes=episodes, seed=seed, metrics=metrics)
        with torch.inference_mode():
            for label, runner in methods.items():
                record = _play(env, runner, seed)
                summary: dict[str, dict[str, float]] = {}
                for metric in metrics:
                    values = record.get(metric)
                    if values is None:
                        continue
                    for episode, value in enumerate(values.tolist()):
                        result.rows.append((label, env_name, seed, episode, metric, value))
                    mean = float(values.mean())
                    std = float(values.std(correction=0)) if values.numel() > 1 else 0.0
                    summary[metric] = {"mean": mean, "std": std}
                result.summary[label] = summary
        env.close()
    finally:
        torch.set_num_threads(previous)
    return result


def _outcome_name(key: str, env_metrics: Sequence[str]) -> str:
    """``key``, or ``outcome_<key>`` where the environment has a metric of that name."""
    return f"outcome_{key}" if key in env_metrics else key


def write_evaluation(
    result: EvaluationResult, out_dir: str | Path, manifest: Mapping[str, Any]
) -> tuple[Path, Path]:
    """``out_dir/results.csv`` (tidy, :data:`RESULT_COLUMNS`) and ``out_dir/manifest.json``,
    both atomic."""
    from marra.experiments.results import git_revision, versions

    out_dir = Path(out_dir)
    lines = [",".join(RESULT_COLUMNS)]
    for method, env, seed, episode, metric, value in result.rows:
        lines.append(f"{_csv(method)},{env},{seed},{episode},{metric},{value!r}")
    results = out_dir / "results.csv"
    atomic_write_text(results, "\n".join(lines) + "\n")
    manifest_path = out_dir / "manifest.json"
    payload = {
        "versions": versions(),
        "git_revision": git_revision(),
        **dict(manifest),
        "summary": result.summary,
    }
    atomic_write_text(manifest_path, json.dumps(payload, indent=2, default=str) + "\n")
    return results, manifest_path


def _csv(text: str) -> str:
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def method_labels(values: Sequence[str]) -> list[str]:
    """Distinct labels (``a``, ``a (2)``, ...) for repeated names."""
    seen: dict[str, int] = {}
    out = []
    for value in values:
        seen[value] = seen.get(value, 0) + 1
        out.append(value if seen[value] == 1 else f"{value} ({seen[value]})")
    return out
