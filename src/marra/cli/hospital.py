"""Commands of the hospital domain: recommend, demo, simulate, plot, reproduce."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from marra.cli._app import (
    EXIT_INFEASIBLE,
    _fail,
    _fmt,
    _load_network,
    _num,
    app,
    console,
)

STRATEGY_HELP = {
    "qp": "quadratic programme: minimise sum (y-t)^2 with minima and capacities (exact)",
    "nwo": "Nash welfare: maximise sum w log(y - m + 1) (w = 1: equal surplus over minima)",
    "taxation": "progressive taxation: hospitals above target pay bracketed tax to fill gaps",
    "hybrid": "taxation decides who pays, Nash welfare decides who receives",
    "greedy": "one unit at a time from the largest surplus to the largest deficit",
    "hold": "move nothing (the floor every method must beat)",
}

#: Metrics shown in the before/after table, in order, with their labels.
TABLE_METRICS = (
    ("mae", "MAE to target"),
    ("gini", "Gini (staff)"),
    ("coverage_gini", "Gini (coverage y/t)"),
    ("cv", "CV (coverage)"),
    ("jain", "Jain (coverage)"),
    ("theil", "Theil T (coverage)"),
    ("atkinson", "Atkinson 1/2 (coverage)"),
    ("mre_normalised", "MRE / N (coverage)"),
    ("inc_rate", "outside tolerance band"),
    ("minima_shortfall", "staff missing below minima"),
    ("moved", "staff moved"),
)


@app.command()
def recommend(
    file: Annotated[
        Path, typer.Argument(help="CSV with columns name,current,minimum,target[,capacity,lat,lon]")
    ],
    strategy: Annotated[str, typer.Option(help="qp, nwo, taxation, hybrid, greedy or hold")] = "qp",
    budget: Annotated[
        float | None, typer.Option(help="at most this many staff change hospital (default: no cap)")
    ] = None,
    continuous: Annotated[
        bool,
        typer.Option("--continuous", help="fractional staff (paper 000) instead of whole people"),
    ] = False,
    shortfall: Annotated[
        bool,
        typer.Option(
            "--shortfall", help="if minima cannot all be met, cover them as far as possible"
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option(help="write the transfers to this CSV")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object and nothing else")
    ] = False,
    tau: Annotated[float, typer.Option(help="MRE tolerance band around mean coverage")] = 0.1,
    weights: Annotated[
        str, typer.Option(help="NWO/hybrid weights: none (paper) or target")
    ] = "none",
) -> None:
    """Recommend who should lend how many staff to whom, with before/after metrics."""
    from marra.hospital.network import InfeasibleError, NetworkError
    from marra.hospital.strategies import STRATEGIES, allocate, plan, write_plan_csv
    from marra.metrics import mre, report

    if strategy not in STRATEGIES:
        raise _fail(
            f"--strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if budget is not None and (not math.isfinite(budget) or budget < 0):
        raise _fail(f"--budget: must be a non-negative number, got {budget:g}")
    if not (math.isfinite(tau) and tau >= 0):
        raise _fail(f"--tau: must be a non-negative number, got {tau:g}")
    if weights not in ("none", "target"):
        raise _fail(f"--weights: must be 'none' or 'target', got {weights!r}")
    if out is not None and out.is_dir():
        raise _fail(f"--out: {out} is a folder, expected a file path")
    integer = not continuous
    network = _load_network(file, integer=integer)
    options: dict[str, Any] = {}
    if strategy in ("nwo", "hybrid"):
        options["weights"] = weights
    started = time.perf_counter()
    try:
        allocation = allocate(
            network,
            strategy,
            transfer_budget=budget,
            integer=integer,
            shortfall=shortfall,
            **options,
        )
    except InfeasibleError as exc:
        raise _fail(str(exc), EXIT_INFEASIBLE) from None
    except (NetworkError, ValueError) as exc:
        raise _fail(str(exc)) from None
    decision_seconds = time.perf_counter() - started
    transfers = plan(network, allocation)
    before = report(network, network.current, tau=tau)
    after = report(network, allocation, tau=tau)
    if out is not None:
        write_plan_csv(transfers, out)

    if as_json:
        payload = {
            "allocation": {
                name: _num(v) for name, v in zip(network.names, allocation, strict=True)
            },
            "transfers": [
                {"from": r["from"], "to": r["to"], "count": _num(r["count"])}
                for r in transfers.records()
            ],
            "metrics": {
                "before": {k: _num(v) for k, v in before.items()},
                "after": {k: _num(v) for k, v in after.items()},
            },
            "strategy": strategy,
            "transfer_budget": None if budget is None else _num(budget),
            "integer": integer,
            "tau": tau,
            "total_distance_km": None
            if transfers.total_distance_km is None
            else _num(round(transfers.total_distance_km, 3)),
        }
        sys.stdout.write(json.dumps(payload, allow_nan=False) + "\n")
        return

    cap = "no cap" if budget is None else f"budget {_fmt(budget)} staff"
    console.print(
        f"[bold]{file.name}[/]: {network.n} hospitals, {_fmt(network.total)} staff, minima need "
        f"{_fmt(network.minimum.sum())}, targets ask {_fmt(network.target.sum())}"
    )
    console.print(
        f"strategy [bold]{strategy}[/] ({STRATEGY_HELP[strategy]}); {cap}; "
        f"{'whole staff' if integer else 'fractional staff'}; "
        f"decided in {decision_seconds * 1000:.1f} ms"
    )
    _print_transfers(transfers)
    table = Table(title="Before and after", title_justify="left")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key, label in TABLE_METRICS:
        table.add_row(label, _fmt(before[key]), _fmt(after[key]))
    console.print(table)
    _print_equity(network, allocation, tau, mre)
    if out is not None:
        console.print(f"plan written to [bold]{out}[/] ({len(transfers)} transfers)")


def _print_transfers(transfers: Any, limit: int = 25) -> None:
    if len(transfers) == 0:
        console.print("No transfers: the allocation stays as it is.")
        return
    records = transfers.records()
    table = Table(
        title=f"{len(records)} transfers, {_fmt(transfers.total_moved)} staff moved"
        + (
            f", {transfers.total_distance_km:,.0f} km in all"
            if transfers.total_distance_km is not None
            else ""
        ),
        title_justify="left",
    )
    table.add_column("from")
    table.add_column("to")
    table.add_column("count", justify="right")
    has_km = transfers.distance_km is not None
    if has_km:
        table.add_column("km", justify="right")
    for k, record in enumerate(records[:limit]):
        row = [record["from"], record["to"], _fmt(record["count"])]
        if has_km:
            row.append(f"{transfers.distance_km[k]:,.0f}")
        table.add_row(*row)
    if len(records) > limit:
        table.add_row(f"... {len(records) - limit} more (use --out or --json)", "", "")
    console.print(table)


def _print_equity(network: Any, allocation: Any, tau: float, mre: Any) -> None:
    from marra.metrics import coverage

    result = mre(coverage(allocation, network.target), tau=tau, names=network.names)
    outside = list(result.outside_names or [])
    band = f"coverage within ±{tau:.0%} of the mean coverage {result.mean:.3f}"
    if not outside:
        console.print(f"Equity (MRE): every hospital has {band}.")
        return
    above = [network.names[i] for i in result.above]
    below = [network.names[i] for i in result.below]

    def _names(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")

    console.print(
        f"Equity (MRE, tau={tau:g}): {len(outside)} of {network.n} hospitals fall outside {band}; "
        f"moving {result.h:.3f} units of coverage excess would share the violations evenly "
        f"(normalised MRE {result.h_normalised:.4f})."
    )
    if below:
        console.print(f"  under-served: {_names(below)}")
    if above:
        console.print(f"  over-served:  {_names(above)}")


@app.command()
def demo(
    budget: Annotated[
        float | None, typer.Option(help="also cap the staff moved per plan (default: no cap)")
    ] = None,
    simulate_steps: Annotated[
        int, typer.Option("--steps", help="steps of the shifting+shock simulation shown after")
    ] = 50,
) -> None:
    """Compare every strategy on the built-in network of 150 hospitals."""
    from marra.hospital.network import default_network
    from marra.hospital.strategies import STRATEGIES, allocate, plan
    from marra.metrics import report

    network = default_network()
    console.print(
        f"Built-in network: {network.n} hospitals, {_fmt(network.total)} staff, minima need "
        f"{_fmt(network.minimum.sum())}, targets ask {_fmt(network.target.sum())}"
        + ("" if budget is None else f"; transfer budget {_fmt(budget)}")
    )
    table = Table(title="Every strategy on the built-in network", title_justify="left")
    for column in (
        "strategy",
        "MAE",
        "Gini",
        "cov. Gini",
        "MRE/N",
        "below min",
        "moved",
        "transfers",
        "km",
        "ms",
    ):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    base = report(network, network.current)
    table.add_row(
        "(now)",
        _fmt(base["mae"]),
        _fmt(base["gini"]),
        _fmt(base["coverage_gini"]),
        _fmt(base["mre_normalised"], 4),
        _fmt(base["minima_shortfall"]),
        "0",
        "0",
        "",
        "",
    )
    for name in STRATEGIES:
        started = time.perf_counter()
        allocation = allocate(network, name, transfer_budget=budget)
        elapsed = time.perf_counter() - started
        transfers = plan(network, allocation)
        metrics = report(network, allocation)
        km = transfers.total_distance_km
        table.add_row(
            name,
            _fmt(metrics["mae"]),
            _fmt(metrics["gini"]),
            _fmt(metrics["coverage_gini"]),
            _fmt(metrics["mre_normalised"], 4),
            _fmt(metrics["minima_shortfall"]),
            _fmt(metrics["moved"]),
            str(len(transfers)),
            "" if km is None else f"{km:,.0f}",
            f"{elapsed * 1000:.1f}",
        )
    console.print(table)
    console.print(
        "MAE: mean |y - t| (paper 000 Eq. 8); Gini on staff (Eq. 9); cov. Gini on y/t; MRE/N: "
        "normalised Minimum Reallocation of Excess of coverage (paper 003), tau 0.1. Lower is "
        "better for all."
    )
    if simulate_steps > 0:
        _demo_simulation(network, simulate_steps)


def _parse_methods(strategies: list[str], budget: float | None, integer: bool) -> list[Any]:
    """Turn ``--strategy`` values into methods: classical names or ``policy:PATH``."""
    from marra.experiments.simulate import ClassicalMethod
    from marra.hospital.strategies import STRATEGIES

    methods: list[Any] = []
    for value in strategies:
        if value.startswith("policy:"):
            from marra.experiments.policy_method import PolicyMethod

            path = Path(value.split(":", 1)[1])
            try:
                methods.append(
                    PolicyMethod.from_file(path, transfer_budget=budget, integer=integer)
                )
            except (OSError, ValueError) as exc:
                raise _fail(f"--strategy {value}: {exc}") from None
        elif value in STRATEGIES:
            methods.append(ClassicalMethod(value, transfer_budget=budget, integer=integer))
        else:
            raise _fail(
                f"--strategy: unknown strategy {value!r}; choose from {', '.join(STRATEGIES)} "
                "or policy:PATH/policy.pt"
            )
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise _fail(f"--strategy: given more than once: {labels}")
    return methods


@app.command()
def simulate(
    scenario: Annotated[
        str, typer.Option(help="static, shifting, shock, seasonal, outbreak, a+b, or csv:FILE")
    ] = "shifting",
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            help="repeat to compare: qp, nwo, taxation, hybrid, greedy, hold, policy:FILE"
        ),
    ] = None,
    budget: Annotated[float | None, typer.Option(help="staff that may move per step")] = None,
    hospitals: Annotated[int, typer.Option(help="random hospitals per seed (no --network)")] = 150,
    network_file: Annotated[
        Path | None, typer.Option("--network", help="CSV network used for every seed")
    ] = None,
    steps: Annotated[int, typer.Option(help="time steps T")] = 50,
    seeds: Annotated[int, typer.Option(help="independent runs (seeds 0..N-1)")] = 20,
    continuous: Annotated[bool, typer.Option("--continuous", help="fractional staff")] = False,
    tau: Annotated[float, typer.Option(help="MRE tolerance band")] = 0.1,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/simulate"),
    plots: Annotated[bool, typer.Option(help="draw mae.png and gini.png")] = True,
) -> None:
    """Simulate strategies over a dynamic scenario; write results.csv, manifest.json and plots."""
    import numpy as np

    from marra.experiments.results import ResultsError
    from marra.experiments.simulate import SimulationError, SimulationSpec, run_simulation

    if steps < 1:
        raise _fail(f"--steps: must be at least 1, got {steps}")
    if seeds < 1:
        raise _fail(f"--seeds: must be at least 1, got {seeds}")
    if hospitals < 1:
        raise _fail(f"--hospitals: must be at least 1, got {hospitals}")
    if budget is not None and (not math.isfinite(budget) or budget < 0):
        raise _fail(f"--budget: must be a non-negative number, got {budget:g}")
    if out.exists() and not out.is_dir():
        raise _fail(f"--out: {out} exists and is not a folder")
    integer = not continuous
    methods = _parse_methods(strategy or ["qp"], budget, integer)
    network = None
    if network_file is not None:
        network = _load_network(network_file, integer=integer)
    spec = SimulationSpec(
        scenario=scenario,
        seeds=list(range(seeds)),
        steps=steps,
        hospitals=hospitals if network is None else network.n,
        network=network,
        network_source=None if network_file is None else str(network_file),
        integer=integer,
        tau=tau,
    )
    arguments = {
        "scenario": scenario,
        "strategy": [m.label for m in methods],
        "budget": budget,
        "hospitals": spec.hospitals,
        "network": None if network_file is None else str(network_file),
        "steps": steps,
        "seeds": seeds,
        "continuous": continuous,
        "tau": tau,
    }
    try:
        results = run_simulation(spec, methods, out, progress=True, arguments=arguments)
    except (SimulationError, ResultsError) as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:  # scenario parsing and validation name their own field
        raise _fail(f"--scenario {scenario}: {exc}") from None
    from marra.experiments.results import read_results

    frame = read_results(results)
    table = Table(
        title=f"{scenario}: mean over {seeds} seeds and {steps} steps (± std over seeds)",
        title_justify="left",
    )
    from marra.experiments.simulate import CORE_METRICS as shown

    table.add_column("method")
    for metric in shown:
        table.add_column("decision ms" if metric == "decision_seconds" else metric, justify="right")
    for method in dict.fromkeys(frame["method"]):
        cells = [method]
        for metric in shown:
            rows = frame[(frame["method"] == method) & (frame["metric"] == metric)]
            per_seed = rows.groupby("seed")["value"].mean().to_numpy()
            scale = 1000.0 if metric == "decision_seconds" else 1.0
            mean, std = float(np.mean(per_seed)) * scale, float(np.std(per_seed)) * scale
            cells.append(f"{mean:.3f} ± {std:.3f}")
        table.add_row(*cells)
    console.print(table)
    if plots:
        from marra.experiments.plots import plot_run

        written = plot_run(out)
        console.print("plots: " + ", ".join(str(p) for p in written))
    console.print(f"results: {results} ({len(frame):,} rows); manifest: {out / 'manifest.json'}")


@app.command()
def plot(
    folder: Annotated[Path, typer.Argument(help="a folder written by marra simulate")],
    metric: Annotated[
        list[str] | None, typer.Option(help="metrics to plot (default: mae and gini)")
    ] = None,
) -> None:
    """Re-draw the plots of a saved run from its results.csv."""
    from marra.experiments.plots import plot_run
    from marra.experiments.results import ResultsError

    try:
        written = plot_run(folder, metric or ["mae", "gini"])
    except ResultsError as exc:
        raise _fail(str(exc)) from None
    console.print("plots: " + ", ".join(str(p) for p in written))


@app.command()
def reproduce(
    paper: Annotated[str, typer.Argument(help="which paper: paper000")],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/paper000"),
    quick: Annotated[
        bool, typer.Option("--quick", help="fewer seeds and training steps (minutes, for CI)")
    ] = False,
) -> None:
    """Reproduce a paper's experiments: paper000 gives Figures 1 and 2 and summary.md."""
    if paper != "paper000":
        raise _fail(f"paper: unknown paper {paper!r}; available: paper000")
    if out.exists() and not out.is_dir():
        raise _fail(f"--out: {out} exists and is not a folder")
    from marra.experiments.reproduce import reproduce_paper000

    reproduce_paper000(out, quick=quick)


def _demo_simulation(network: Any, steps: int) -> None:
    """A short shifting+shock simulation on the built-in network (hook for the learned policy)."""
    from marra.experiments.demo import demo_simulation

    demo_simulation(network, steps=steps, console=console)
