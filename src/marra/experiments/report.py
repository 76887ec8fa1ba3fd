"""``marra report DIR``: a sweep's statistical comparison, with honest intervals.

The score of one run (a cell: one method, one environment, one seed) on a metric is the mean of
that metric over the run's evaluation episodes. Over the seeds of a method, per environment and
metric, ``DIR/report.md`` gives:

- mean ± standard deviation (sample, n - 1) over seeds;
- the interquartile mean (IQM): the mean of the middle 50% of the runs, ``scipy.stats.trim_mean``
  with 25% cut at each end (Agarwal et al., 2021, "Deep RL at the edge of the statistical
  precipice", the rliable paper);
- a 95% confidence interval of the IQM by the percentile stratified bootstrap: runs are
  resampled with replacement within each stratum (here: each environment), 10,000 times, with
  ``scipy.stats.bootstrap`` (independent resampling of each sample is exactly rliable's
  stratification; rliable itself needs arch and seaborn, which marra does not otherwise use).

The best method per column is in bold (by the metric's direction: ``mae`` lower is better,
``accuracy`` higher; :data:`LOWER_IS_BETTER`, overridable in the SPEC's ``[report]`` table).
Across environments, each metric they share is min-max normalised per environment (1 = the best
run of any method there; the practice of Gorsane et al., 2022, for cooperative MARL) and
summarised by the IQM with environments as the bootstrap strata.

PNGs next to the report: ``curves_<env>.png`` (learning curves from each learner cell's
``train_log.csv``: mean over seeds, band = min..max) and ``profile_<env>.png`` (performance
profiles: the fraction of runs scoring better than tau, per metric).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marra._io import atomic_write_text

__all__ = [
    "iqm",
    "stratified_bootstrap_ci",
    "metric_direction",
    "seed_scores",
    "summarise",
    "write_report",
    "LOWER_IS_BETTER",
    "NO_DIRECTION",
    "Summary",
]

#: Metrics where a smaller value is better (every other metric: larger is better, unless in
#: :data:`NO_DIRECTION`).
LOWER_IS_BETTER = frozenset({
    "mae", "gini", "coverage_gini", "mre", "mre_normalised", "minima_shortfall",
    "minima_shortfall_count", "cv", "theil", "atkinson", "inc_rate", "infections",
    "peak_prevalence", "dose_gini", "attack_rate", "wasted_doses", "expired", "overflow",
})  # fmt: skip
#: Metrics that describe a run without ranking it (no best is marked).
NO_DIRECTION = frozenset({"length", "moved", "doses", "orders"})
CONFIDENCE = 0.95
RESAMPLES = 10_000


def iqm(scores: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean after cutting 25% of the values at each end
    (``scipy.stats.trim_mean(scores, 0.25)``; with fewer than 4 values nothing is cut)."""
    from scipy.stats import trim_mean

    return trim_mean(np.asarray(scores, dtype=float), 0.25, axis=axis)


def stratified_bootstrap_ci(
    strata: Sequence[Any],
    statistic: Callable[..., Any] = iqm,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic`` over the pooled runs of ``strata``,
    resampling runs with replacement within each stratum (rliable's stratified bootstrap), by
    ``scipy.stats.bootstrap`` with ``paired=False``.

    ``statistic(values, axis=-1)`` reduces the last axis (:func:`iqm`, ``np.mean``). A stratum
    of one run is a constant (resampling it always gives that run). Fewer than two runs in
    every stratum: ``(nan, nan)``.
    """
    from scipy.stats import bootstrap

    arrays = [np.asarray(s, dtype=float).ravel() for s in strata]
    arrays = [a[np.isfinite(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    varying = [a for a in arrays if a.size >= 2]
    fixed = np.concatenate([a for a in arrays if a.size == 1] or [np.empty(0)])
    if not varying:
        return math.nan, math.nan

    def pooled(*samples: Any, axis: int = -1) -> Any:
        values = np.concatenate(samples, axis=-1)
        if fixed.size:
            constant = np.broadcast_to(fixed, (*values.shape[:-1], fixed.size))
            values = np.concatenate([values, constant], axis=-1)
        return statistic(values, axis=-1)

    kwargs: dict[str, Any] = {
        "statistic": pooled, "paired": False, "vectorized": True, "axis": -1,
        "confidence_level": confidence, "n_resamples": n_resamples, "method": "percentile",
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all-equal) samples are fine here
        try:
            result = bootstrap(tuple(varying), rng=np.random.default_rng(seed), **kwargs)
        except TypeError:  # scipy < 1.15 names the generator random_state
            result = bootstrap(tuple(varying), random_state=np.random.default_rng(seed), **kwargs)
    low, high = result.confidence_interval
    return float(low), float(high)


def metric_direction(metric: str, lower: Sequence[str] = (), higher: Sequence[str] = ()) -> int:
    """+1 when larger is better, -1 when smaller is better, 0 when neither (``length``)."""
    if metric in lower:
        return -1
    if metric in higher:
        return 1
    if metric in NO_DIRECTION:
        return 0
    return -1 if metric in LOWER_IS_BETTER else 1


def seed_scores(frame: Any) -> Any:
    """Per-run scores: the mean over episodes of ``value`` per (env, method, metric, seed)."""
    return (
        frame.groupby(["env", "method", "metric", "seed"], sort=False)["value"].mean().reset_index()
    )


@dataclass
class Summary:
    """One method on one metric: its runs and their statistics."""

    method: str
    runs: int
    mean: float
    std: float
    iqm: float
    ci: tuple[float, float]


def summarise(scores: Sequence[float] | Sequence[Sequence[float]], method: str = "",
              *, seed: int = 0) -> Summary:  # fmt: skip
    """Mean ± std (n - 1), IQM and its 95% stratified bootstrap CI of one method's runs: a flat
    list (one stratum) or a list of strata."""
    strata = [np.asarray(s, dtype=float).ravel() for s in _as_strata(scores)]
    pooled = np.concatenate(strata) if strata else np.empty(0)
    pooled = pooled[np.isfinite(pooled)]
    n = int(pooled.size)
    mean = float(pooled.mean()) if n else math.nan
    std = float(pooled.std(ddof=1)) if n > 1 else math.nan
    center = float(iqm(pooled)) if n else math.nan
    return Summary(method, n, mean, std, center, stratified_bootstrap_ci(strata, seed=seed))


def _as_strata(scores: Any) -> list[Any]:
    items = list(scores)
    if items and all(np.ndim(item) == 0 for item in items):
        return [items]
    return items


# ---------------------------------------------------------------------------------- the report
def write_report(out: str | Path) -> Path:
    """Write ``out/report.md`` and its PNGs from a sweep folder (``sweep.json``,
    ``results.csv``, the cells' ``train_log.csv``); return the report's path.

    Raises:
        SpecError: ``out`` holds no sweep.
        ResultsError: the sweep has no results yet.
    """
    import pandas as pd

    from marra.experiments.results import ResultsError
    from marra.experiments.sweep import RESULT_COLUMNS, SpecError, read_sweep

    out = Path(out)
    sweep = read_sweep(out)
    results = out / "results.csv"
    if not results.exists():
        raise SpecError(f"DIR: {out} has no results.csv yet; run (or resume) the sweep first")
    frame = pd.read_csv(results, dtype={"env": str, "method": str, "metric": str, "cell": str},
                        float_precision="round_trip")  # fmt: skip
    if tuple(frame.columns) != RESULT_COLUMNS:
        raise ResultsError(f"{results}: expected columns {','.join(RESULT_COLUMNS)}")
    spec = sweep["spec"]
    report = sweep.get("report", {})
    lower = report.get("lower_is_better", [])
    higher = report.get("higher_is_better", [])
    env_names = {e["label"]: e for e in spec["envs"]}
    methods = [m["label"] for m in spec["methods"]]
    learners = {m["label"] for m in spec["methods"] if m.get("baseline") is None}
    scores = seed_scores(frame) if len(frame) else frame
    lines = [f"# {sweep.get('title', 'sweep')}: report", ""]
    lines += _method_notes(spec, sweep)
    failures = _read_failures(out)
    images: list[Path] = []
    per_env_scores: dict[str, Any] = {}
    for label in env_names:
        env = env_names[label]
        options = ", ".join(f"{k}={v!r}" for k, v in env["options"].items()) or "defaults"
        lines += [f"## {label}", "", f"Environment `{env['name']}` ({options}).", ""]
        sub = scores[scores["env"] == label] if len(scores) else scores
        if not len(sub):
            lines += ["No finished cell.", ""]
            continue
        per_env_scores[label] = sub
        shown = [m for m in dict.fromkeys(sub["metric"]) if m != "length"
                 or sub[sub["metric"] == m]["value"].nunique() > 1]  # fmt: skip
        for metric in shown:
            direction = metric_direction(metric, lower, higher)
            lines += _metric_table(sub, metric, methods, direction)
        slug = _slug(label)
        curves = _plot_curves(out, sweep, label, [m for m in methods if m in learners],
                              out / f"curves_{slug}.png")  # fmt: skip
        if curves is not None:
            images.append(curves)
            lines += [f"![learning curves on {label}]({curves.name})", ""]
        profile = _plot_profiles(sub, [m for m in shown if m not in NO_DIRECTION
                                       and m != "team_return"], methods, lower, higher,
                                 label, out / f"profile_{slug}.png")  # fmt: skip
        if profile is not None:
            images.append(profile)
            lines += [f"![performance profiles on {label}]({profile.name})", ""]
    if len(per_env_scores) > 1:
        lines += _aggregate(per_env_scores, methods, lower, higher)
    lines += _skipped_and_failed(sweep, failures)
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _method_notes(spec: Mapping[str, Any], sweep: Mapping[str, Any]) -> list[str]:
    seeds = spec["seeds"]
    lines = [
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); {spec['episodes']} evaluation "
        "episodes per run, the same seeded episodes for every method. A run's score is the mean "
        "over its episodes. **mean ± std**: over seeds (sample std, n - 1). **IQM**: "
        "interquartile mean over seeds (25% cut at each end; nothing is cut below 4 seeds). "
        f"**95% CI**: percentile stratified bootstrap of the IQM ({RESAMPLES:,} resamples, "
        "scipy.stats.bootstrap; rliable's method). **Bold**: best in its column (for the CI: "
        "the interval whose worse end is best).",
        "",
        "| method | kind |",
        "| --- | --- |",
    ]
    for method in spec["methods"]:
        if method.get("baseline") is not None:
            kind = f"baseline `{method['baseline']}`"
        else:
            train = method.get("train", {})
            kind = "learner: " + (", ".join(f"{k}={v}" for k, v in train.items()) or "defaults")
        if method.get("env_options"):
            kind += f"; env options {method['env_options']}"
        if method.get("seeds"):
            kind += f"; seeds {', '.join(map(str, method['seeds']))}"
        if method.get("envs"):
            kind += f"; only on {', '.join(method['envs'])}"
        lines.append(f"| {method['label']} | {kind} |")
    return [*lines, ""]


def _metric_table(sub: Any, metric: str, methods: Sequence[str], direction: int) -> list[str]:
    rows = sub[sub["metric"] == metric]
    summaries = []
    for method in methods:
        values = rows[rows["method"] == method]["value"].to_numpy(dtype=float)
        if values.size:
            summaries.append(summarise(values, method))
    if not summaries:
        return []
    word = {1: "higher is better", -1: "lower is better", 0: "no direction"}[direction]
    best_mean = _best([s.mean for s in summaries], direction)
    best_iqm = _best([s.iqm for s in summaries], direction)
    worse_end = [s.ci[0] if direction > 0 else s.ci[1] for s in summaries]
    best_ci = _best(worse_end, direction)
    lines = [f"### {metric} ({word})", "",
             "| method | runs | mean ± std | IQM | 95% CI of IQM |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for i, s in enumerate(summaries):
        mean = f"{_num(s.mean)} ± {_num(s.std)}"
        ci = "n/a" if math.isnan(s.ci[0]) else f"[{_num(s.ci[0])}, {_num(s.ci[1])}]"
        lines.append(
            f"| {s.method} | {s.runs} | {_bold(mean, i in best_mean)} | "
            f"{_bold(_num(s.iqm), i in best_iqm)} | {_bold(ci, i in best_ci)} |"
        )
    return [*lines, ""]


def _best(values: Sequence[float], direction: int) -> set[int]:
    finite = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if direction == 0 or len(finite) < 2:
        return set()
    target = max(v * direction for _, v in finite)
    return {i for i, v in finite if math.isclose(v * direction, target, rel_tol=1e-12,
                                                    abs_tol=1e-12)}  # fmt: skip


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _num(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _aggregate(per_env: Mapping[str, Any], methods: Sequence[str], lower: Sequence[str],
               higher: Sequence[str]) -> list[str]:  # fmt: skip
    """IQM over environments of min-max normalised run scores, environments as strata."""
    metrics: dict[str, list[str]] = {}
    for env, sub in per_env.items():
        for metric in dict.fromkeys(sub["metric"]):
            metrics.setdefault(metric, []).append(env)
    lines: list[str] = []
    for metric, envs in metrics.items():
        direction = metric_direction(metric, lower, higher)
        if len(envs) < 2 or direction == 0:
            continue
        strata: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        used = []
        for env in envs:
            rows = per_env[env][per_env[env]["metric"] == metric]
            values = rows["value"].to_numpy(dtype=float) * direction
            low, high = np.nanmin(values), np.nanmax(values)
            if not math.isfinite(low) or not math.isfinite(high) or high <= low:
                continue
            used.append(env)
            for method in methods:
                mine = rows[rows["method"] == method]["value"].to_numpy(dtype=float) * direction
                if mine.size:
                    strata[method].append((mine - low) / (high - low))
        if len(used) < 2:
            continue
        if not lines:
            lines = ["## All environments", "",
                     "Run scores min-max normalised per environment over every method's runs "
                     "(1 = the best run there, 0 = the worst; lower-is-better metrics flipped), "
                     "then the IQM over all runs with environments as the bootstrap strata.",
                     ""]  # fmt: skip
        summaries = [(m, summarise(strata[m], m), len(strata[m])) for m in methods if strata[m]]
        best = _best([s.iqm for _, s, _ in summaries], 1)
        lines += [f"### {metric} (normalised, higher is better; {len(used)} environments)", "",
                  "| method | environments | runs | IQM | 95% CI of IQM |",
                  "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for i, (method, s, count) in enumerate(summaries):
            ci = "n/a" if math.isnan(s.ci[0]) else f"[{_num(s.ci[0])}, {_num(s.ci[1])}]"
            lines.append(f"| {method} | {count} of {len(used)} | {s.runs} | "
                         f"{_bold(_num(s.iqm), i in best)} | {ci} |")  # fmt: skip
        lines.append("")
    return lines


def _read_failures(out: Path) -> list[dict[str, str]]:
    import csv

    path = out / "failures.csv"
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _skipped_and_failed(sweep: Mapping[str, Any], failures: Sequence[Mapping[str, str]]
                        ) -> list[str]:  # fmt: skip
    lines: list[str] = []
    skipped = sweep.get("skipped", [])
    if skipped:
        lines += ["## Skipped", "", "| method | environment | why |", "| --- | --- | --- |"]
        lines += [f"| {s['method']} | {s['env']} | {s['reason']} |" for s in skipped]
        lines.append("")
    if failures:
        lines += [
            "## Failed cells (rerun the sweep to retry them)",
            "",
            "| environment | method | seed | error |",
            "| --- | --- | ---: | --- |",
        ]
        for f in failures:
            message = f["message"].replace("|", "\\|")[:300]
            lines.append(f"| {f['env']} | {f['method']} | {f['seed']} | {f['error']}: {message} |")
        lines.append("")
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "env"


# ---------------------------------------------------------------------------------- plots
def _plot_curves(out: Path, sweep: Mapping[str, Any], env: str, methods: Sequence[str],
                 path: Path) -> Path | None:  # fmt: skip
    """Learning curves of the learners on ``env``: mean over seeds, band min..max."""
    import pandas as pd

    from marra.experiments.plots import _pyplot, atomic_savefig, method_styles
    from marra.experiments.sweep import CELLS_DIR

    logs: dict[str, list[Any]] = {}
    for entry in sweep.get("grid", []):
        if entry["env"] != env or entry["method"] not in methods:
            continue
        log = out / CELLS_DIR / entry["cell"] / "train_log.csv"
        if log.exists():
            logs.setdefault(entry["method"], []).append(pd.read_csv(log))
    if not logs:
        return None
    first = next(iter(logs.values()))[0]
    columns = list(first.columns)
    start = columns.index("return") if "return" in columns else 0
    end = columns.index("policy_loss") if "policy_loss" in columns else len(columns)
    panels = [c for c in columns[start:end] if c != "team_return"] or ["return"]
    plt = _pyplot()
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    styles = method_styles(list(methods))
    for ax, column in zip(axes.ravel(), panels, strict=False):
        for order, method in enumerate(m for m in methods if m in logs):
            frames = [f[["env_steps", column]] for f in logs[method] if column in f]
            if not frames:
                continue
            stacked = pd.concat(frames).groupby("env_steps")[column].agg(["mean", "min", "max"])
            style = styles[method]
            ax.plot(stacked.index, stacked["mean"], label=f"{method} ({len(frames)} seeds)",
                    color=style["color"], linestyle=style["linestyle"], marker=style["marker"],
                    markersize=4, markevery=max(1, len(stacked) // 8),
                    linewidth=max(2.4 - 0.2 * order, 1.1))  # fmt: skip
            ax.fill_between(stacked.index, stacked["min"], stacked["max"], color=style["color"],
                            alpha=0.12, linewidth=0)  # fmt: skip
        ax.set_xlabel("training env-steps")
        ax.set_ylabel("training " + column if column == "return" else column)
        ax.set_title(f"{column} during training")
        ax.grid(True, alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(labels), 4), frameon=False, handlelength=3.5)  # fmt: skip
    fig.suptitle(f"{env}: learning curves (mean over seeds; band: min to max)")
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _plot_profiles(sub: Any, metrics: Sequence[str], methods: Sequence[str],
                   lower: Sequence[str], higher: Sequence[str], env: str,
                   path: Path) -> Path | None:  # fmt: skip
    """Performance profiles (rliable): per metric, the fraction of a method's runs that score
    better than tau, for tau over the range of every run's score."""
    from marra.experiments.plots import _pyplot, atomic_savefig, method_styles

    if not metrics:
        return None
    plt = _pyplot()
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    present = [m for m in methods if (sub["method"] == m).any()]
    styles = method_styles(present)
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        rows = sub[sub["metric"] == metric]
        direction = metric_direction(metric, lower, higher)
        values = rows["value"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        low, high = float(values.min()), float(values.max())
        pad = 0.05 * (high - low) if high > low else max(abs(low) * 0.05, 0.05)
        taus = np.linspace(low - pad, high + pad, 400)
        for order, method in enumerate(present):
            mine = rows[rows["method"] == method]["value"].to_numpy(dtype=float)
            mine = mine[np.isfinite(mine)]
            if not mine.size:
                continue
            if direction >= 0:
                fraction = (mine[None, :] > taus[:, None]).mean(axis=1)
            else:
                fraction = (mine[None, :] < taus[:, None]).mean(axis=1)
            style = styles[method]
            ax.step(taus, fraction, where="post", label=f"{method} ({mine.size} runs)",
                    color=style["color"], linestyle=style["linestyle"],
                    linewidth=max(2.4 - 0.2 * order, 1.1))  # fmt: skip
        word = "above" if direction >= 0 else "below"
        ax.set_xlabel(f"{metric} threshold tau ({'lower' if direction < 0 else 'higher'} "
                      "is better)")  # fmt: skip
        ax.set_ylabel(f"fraction of runs {word} tau")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
    for ax in axes.ravel()[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(labels), 4), frameon=False, handlelength=3.5)  # fmt: skip
    fig.suptitle(f"{env}: performance profiles (a run = one seed, its mean over episodes)")
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
