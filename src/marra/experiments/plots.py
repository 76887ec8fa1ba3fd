"""Plots drawn from a tidy results table (never from in-memory state).

Each line is one method: the mean over seeds at every step, with a band of ±1 standard deviation
over seeds (the number of seeds is printed in the title).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marra._io import atomic_savefig

METRIC_LABELS = {
    "mae": "MAE to target (paper 000 Eq. 8)",
    "gini": "Gini index on staff (paper 000 Eq. 9)",
    "coverage_gini": "Gini of coverage y/t",
    "mre_normalised": "normalised MRE of coverage (paper 003)",
    "minima_shortfall": "staff missing below minima",
    "moved": "staff moved per step",
    "decision_seconds": "decision time per step (s)",
}


#: Line styles cycled per method so that methods with identical curves stay visible.
_LINESTYLES = ("-", "--", "-.", ":")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Save atomically (:func:`marra._io.atomic_savefig`)."""
    atomic_savefig(fig, path, dpi=120, bbox_inches="tight")


def _colours(methods: Sequence[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def draw_metric(
    ax: Any, frame: Any, metric: str, colours: dict[str, Any], methods: Sequence[str] | None = None
) -> int:
    """Draw mean ± std over seeds of ``metric`` per method on ``ax``; return the seed count."""
    sub = frame[frame["metric"] == metric]
    if methods is None:
        methods = list(dict.fromkeys(sub["method"]))
    seeds = 0
    for method in methods:
        rows = sub[sub["method"] == method]
        if rows.empty:
            continue
        stats = rows.groupby("step")["value"].agg(["mean", "std", "count"]).sort_index()
        stats["std"] = stats["std"].fillna(0.0)
        seeds = max(seeds, int(stats["count"].max()))
        colour = colours.get(method)
        style = _LINESTYLES[list(methods).index(method) % len(_LINESTYLES)]
        ax.plot(
            stats.index, stats["mean"], label=method, color=colour, linewidth=1.6, linestyle=style
        )
        ax.fill_between(
            stats.index,
            stats["mean"] - stats["std"],
            stats["mean"] + stats["std"],
            color=colour,
            alpha=0.10,
            linewidth=0,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(True, alpha=0.3)
    return seeds


def _finish(fig: Any, axes: Any, title: str, path: Path) -> Path:
    """Title above, one shared legend below the panels, an atomic save."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=min(len(labels), 6),
        bbox_to_anchor=(0.5, 0.0),
        frameon=False,
    )
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    _pyplot().close(fig)
    return path


def plot_metric(frame: Any, metric: str, path: str | Path, *, title: str | None = None) -> Path:
    """One PNG for ``metric``: one panel per scenario, one line per method."""
    plt = _pyplot()
    scenarios = list(dict.fromkeys(frame["scenario"]))
    methods = list(dict.fromkeys(frame["method"]))
    colours = _colours(methods)
    fig, axes = plt.subplots(1, len(scenarios), figsize=(7 * len(scenarios), 4.5), squeeze=False)
    seeds = 0
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        seeds = draw_metric(ax, frame[frame["scenario"] == scenario], metric, colours, methods)
        ax.set_title(f"{scenario}")
    title = (title or METRIC_LABELS.get(metric, metric)) + f" — mean ± 1 std over {seeds} seeds"
    return _finish(fig, axes, title, Path(path))


def plot_panels(frame: Any, metrics: Sequence[str], path: str | Path, *, title: str) -> Path:
    """One PNG with a panel per metric (e.g. MAE and Gini, as paper 000 Figure 1)."""
    plt = _pyplot()
    methods = list(dict.fromkeys(frame["method"]))
    colours = _colours(methods)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    seeds = 0
    for ax, metric in zip(axes[0], metrics, strict=True):
        seeds = max(seeds, draw_metric(ax, frame, metric, colours, methods))
        ax.set_title(METRIC_LABELS.get(metric, metric))
    return _finish(fig, axes, f"{title} — mean ± 1 std over {seeds} runs", Path(path))


def plot_run(folder: str | Path, metrics: Sequence[str] = ("mae", "gini")) -> list[Path]:
    """Re-plot a saved run: ``folder/<metric>.png`` for each metric, from ``results.csv``."""
    from marra.experiments.results import ResultsError, read_results

    folder = Path(folder)
    frame = read_results(folder)
    written = []
    for metric in metrics:
        if metric not in set(frame["metric"]):
            raise ResultsError(f"{folder / 'results.csv'}: no rows for metric {metric!r}")
        written.append(plot_metric(frame, metric, folder / f"{metric}.png"))
    return written
