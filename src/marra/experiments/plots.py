"""Plots drawn from a tidy results table (never from in-memory state).

Each line is one method: the mean over seeds at every step, with a band of ±1 standard deviation
over seeds (the number of seeds is printed in the title). Every method has its own colour, line
style and marker (markers placed at staggered steps, lines drawn thinner one after another), so
two methods with identical curves stay visible; the fixed events of the scenario (the shock, the
target shifts, the start of an outbreak) are marked; every axis names its unit, and decision
times are in milliseconds. Every metric is non-negative, so the bands stop at zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marra._io import atomic_savefig

#: Axis labels, with units.
METRIC_LABELS = {
    "mae": "MAE to target (staff per hospital; paper 000 Eq. 8)",
    "gini": "Gini index of staff (0 = equal; paper 000 Eq. 9)",
    "coverage_gini": "Gini index of coverage y/t (0 = equal)",
    "cv": "CV of coverage y/t (unitless)",
    "jain": "Jain index of coverage (1 = equal)",
    "theil": "Theil T of coverage (0 = equal)",
    "atkinson": "Atkinson 1/2 of coverage (0 = equal)",
    "mre": "MRE of coverage (coverage units; paper 003)",
    "mre_normalised": "normalised MRE of coverage (per hospital; paper 003)",
    "inc_rate": "share of hospitals outside the band (0-1)",
    "minima_shortfall": "staff missing below minima (staff)",
    "minima_shortfall_count": "hospitals below their minimum",
    "moved": "staff moved per step (staff)",
    "total_staff": "staff in the network (staff)",
    "decision_seconds": "decision time per step (ms)",
}
#: Metrics stored in seconds but drawn in milliseconds.
_MILLISECONDS = {"decision_seconds"}
#: Short titles for panels.
_TITLES = {
    "mae": "MAE to target",
    "gini": "Gini index of staff",
    "decision_seconds": "decision time per step",
}

#: Twelve distinct colours (Okabe-Ito and Tableau, no two alike), then the cycle restarts with
#: other line styles, so (colour, line style, marker) never repeats.
_COLOURS = (
    "#0072B2",  # blue
    "#D55E00",  # vermilion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#8C564B",  # brown
    "#7F7F7F",  # grey
    "#BCBD22",  # olive
    "#9467BD",  # purple
    "#E41A1C",  # red
)
_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_EVENT_STYLE = {
    "shock": {"color": "#B00000", "linestyle": "--", "linewidth": 1.3, "alpha": 0.8},
    "outbreak starts": {"color": "#B00000", "linestyle": "-.", "linewidth": 1.2, "alpha": 0.8},
}
_DEFAULT_EVENT_STYLE = {"color": "#888888", "linestyle": ":", "linewidth": 0.9, "alpha": 0.7}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Save atomically (:func:`marra._io.atomic_savefig`)."""
    atomic_savefig(fig, path, dpi=120, bbox_inches="tight")


def method_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct (colour, line style, marker) per method, stable in the order given."""
    styles = {}
    for i, method in enumerate(methods):
        lap = i // len(_COLOURS)
        styles[method] = {
            "color": _COLOURS[i % len(_COLOURS)],
            "linestyle": _LINESTYLES[(i + lap) % len(_LINESTYLES)],
            "marker": _MARKERS[i % len(_MARKERS)],
            "index": i,
        }
    return styles


def scenario_events(scenario: str, horizon: int) -> tuple[tuple[int, str], ...]:
    """The fixed event steps of a scenario named in a results table (none for a name that is
    not a scenario spec, e.g. ``ablation``)."""
    from marra.hospital.scenarios import ScenarioError, make_scenario

    try:
        return make_scenario(scenario, horizon=max(int(horizon), 1)).events()
    except (ScenarioError, OSError, ValueError):
        return ()


def mark_events(ax: Any, events: Sequence[tuple[int, str]]) -> None:
    """Vertical lines at the event steps, labelled at the top of the panel."""
    labelled: set[str] = set()
    for step, label in events:
        style = _EVENT_STYLE.get(label, _DEFAULT_EVENT_STYLE)
        ax.axvline(step, zorder=0.5, **style)
        if label not in labelled:
            labelled.add(label)
            ax.annotate(
                f"{label} (t={step})" if label in _EVENT_STYLE else label,
                xy=(step, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                ha="left",
                va="top",
                fontsize=8,
                color=style["color"],
            )


def draw_metric(
    ax: Any,
    frame: Any,
    metric: str,
    styles: dict[str, dict[str, Any]] | None = None,
    methods: Sequence[str] | None = None,
) -> int:
    """Draw mean ± std over seeds of ``metric`` per method on ``ax``; return the seed count.

    ``styles`` maps a method to its style (default: :func:`method_styles` of ``methods``).
    """
    sub = frame[frame["metric"] == metric]
    if methods is None:
        methods = list(dict.fromkeys(sub["method"]))
    scale = 1000.0 if metric in _MILLISECONDS else 1.0
    steps = max(int(sub["step"].max()) + 1, 1) if len(sub) else 1
    every = max(1, steps // 8)
    shown = [m for m in methods if (sub["method"] == m).any()]
    styles = styles or method_styles(methods)
    seeds = 0
    for order, method in enumerate(shown):
        rows = sub[sub["method"] == method]
        stats = rows.groupby("step")["value"].agg(["mean", "std", "count"]).sort_index()
        stats["std"] = stats["std"].fillna(0.0)
        seeds = max(seeds, int(stats["count"].max()))
        style = styles[method]
        mean = stats["mean"] * scale
        spread = stats["std"] * scale
        index = int(style.get("index", order))
        ax.plot(
            stats.index,
            mean,
            label=method,
            color=style["color"],
            linestyle=style["linestyle"],
            marker=style["marker"],
            markersize=4.5,
            markevery=(index % every, every),
            # earlier lines wider: a later method with the same curve draws on top, thinner
            linewidth=max(2.8 - 0.15 * order, 1.1),
            zorder=2 + 0.01 * order,
        )
        ax.fill_between(
            stats.index,
            (mean - spread).clip(lower=0.0),
            mean + spread,
            color=style["color"],
            alpha=0.08,
            linewidth=0,
        )
    ax.set_xlabel("time step t")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    if metric in _MILLISECONDS:
        ax.set_ylim(bottom=0.0)
    ax.grid(True, alpha=0.3)
    return seeds


def _finish(fig: Any, axes: Any, title: str, path: Path) -> Path:
    """Title above, one shared legend below the panels, an atomic save."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=min(len(labels), 4),
        bbox_to_anchor=(0.5, 0.0),
        frameon=False,
        handlelength=3.5,
    )
    fig.suptitle(title)
    fig.tight_layout()
    try:
        _save(fig, path)
    finally:
        _pyplot().close(fig)
    return path


def _horizon(frame: Any) -> int:
    return int(frame["step"].max()) + 1 if len(frame) else 1


def plot_metric(frame: Any, metric: str, path: str | Path, *, title: str | None = None) -> Path:
    """One PNG for ``metric``: one panel per scenario, one line per method."""
    plt = _pyplot()
    scenarios = list(dict.fromkeys(frame["scenario"]))
    methods = list(dict.fromkeys(frame["method"]))
    styles = method_styles(methods)
    fig, axes = plt.subplots(1, len(scenarios), figsize=(7 * len(scenarios), 4.8), squeeze=False)
    seeds = 0
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        sub = frame[frame["scenario"] == scenario]
        seeds = max(seeds, draw_metric(ax, sub, metric, styles, methods))
        mark_events(ax, scenario_events(str(scenario), _horizon(sub)))
        ax.set_title(f"{scenario}")
    name = title or _TITLES.get(metric) or METRIC_LABELS.get(metric, metric)
    return _finish(fig, axes, f"{name} — mean ± 1 std over {seeds} seeds", Path(path))


def plot_panels(frame: Any, metrics: Sequence[str], path: str | Path, *, title: str) -> Path:
    """One PNG with a panel per metric (e.g. MAE and Gini, as paper 000 Figure 1)."""
    plt = _pyplot()
    methods = list(dict.fromkeys(frame["method"]))
    styles = method_styles(methods)
    scenarios = list(dict.fromkeys(frame["scenario"]))
    events = scenario_events(str(scenarios[0]), _horizon(frame)) if len(scenarios) == 1 else ()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.8), squeeze=False)
    seeds = 0
    for ax, metric in zip(axes[0], metrics, strict=True):
        seeds = max(seeds, draw_metric(ax, frame, metric, styles, methods))
        mark_events(ax, events)
        ax.set_title(_TITLES.get(metric) or METRIC_LABELS.get(metric, metric))
    return _finish(fig, axes, f"{title} — mean ± 1 std over {seeds} runs", Path(path))


def plot_run(folder: str | Path, metrics: Sequence[str] = ("mae", "gini")) -> list[Path]:
    """Re-plot a saved run: ``<metric>.png`` for each metric, from its ``results.csv``.

    ``folder`` is the run folder or its ``results.csv`` (the plots go next to the table).
    Every metric is checked before any plot is written, so a bad name replaces nothing.

    Raises:
        ResultsError: no usable results table, or a metric without rows (naming it and
            listing those present).
    """
    from marra.experiments.results import ResultsError, read_results, results_path

    table = results_path(folder)
    frame = read_results(table)
    present = list(dict.fromkeys(frame["metric"]))
    missing = [m for m in dict.fromkeys(metrics) if m not in set(present)]
    if missing:
        raise ResultsError(
            f"{table}: no rows for metric {missing[0]!r}; the table has {', '.join(present)}"
        )
    return [
        plot_metric(frame, metric, table.parent / f"{metric}.png")
        for metric in dict.fromkeys(metrics)
    ]
