"""Commands of the hospital domain: recommend, demo, simulate, plot, reproduce.

Every command validates all of its arguments (options, input files, output paths, the memory
the work needs) before it creates or writes anything, and writes every file through
:mod:`marra._io` (atomic, plain ``open()`` permissions, through symlinks, never onto special
files).
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from marra.cli._app import (
    BUDGET_HELP,
    BUDGET_METAVAR,
    EXIT_INFEASIBLE,
    SCENARIO_HELP,
    _check_memory,
    _fail,
    _fmt,
    _load_network,
    _note,
    _num,
    _plural,
    app,
    budget_text,
    check_count,
    check_output_file,
    check_output_folder,
    console,
    deprecated_alias,
    err_console,
    parse_budget,
)

STRATEGY_HELP = {
    "qp": "quadratic programme: minimise sum (y-t)^2 with minima and capacities (exact)",
    "nwo": "Nash welfare: maximise sum w log(y - m + 1) (w = 1: equal surplus over minima)",
    "taxation": "progressive taxation: hospitals above target pay bracketed tax to fill gaps",
    "hybrid": "taxation decides who pays, Nash welfare decides who receives",
    "greedy": "one unit at a time from the largest surplus to the largest deficit",
    "hold": "move nothing (the floor every method must beat)",
}
#: Strategies that use ``--weights``.
WEIGHTED_STRATEGIES = ("nwo", "hybrid")

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
#: Largest horizon, seed count and hospital count accepted before the memory estimate (one
#: number per option, far above any real run; the memory check refuses sooner in practice).
MAX_COUNT = 10**9
MAX_SEED = 2**63 - 1


@app.command()
def recommend(
    file: Annotated[
        Path, typer.Argument(help="CSV with columns name,current,minimum,target[,capacity,lat,lon]")
    ],
    strategy: Annotated[str, typer.Option(help="qp, nwo, taxation, hybrid, greedy or hold")] = "qp",
    budget: Annotated[
        str | None, typer.Option(help=BUDGET_HELP + " (default: no cap)", metavar=BUDGET_METAVAR)
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
    out: Annotated[
        Path | None, typer.Option(help="write the transfers to this CSV (from,to,count[,km])")
    ] = None,
    allocation_out: Annotated[
        Path | None,
        typer.Option(
            "--allocation-out",
            help="write each hospital before and after to this CSV "
            "(name,current,after,change,minimum,target[,capacity])",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object and nothing else")
    ] = False,
    tau: Annotated[float, typer.Option(help="MRE tolerance band around mean coverage")] = 0.1,
    weights: Annotated[
        str | None,
        typer.Option(help="nwo/hybrid only: none (paper 000, the default) or target"),
    ] = None,
    max_mre: Annotated[
        float | None,
        typer.Option(
            "--max-mre",
            help="qp only: the plan nearest the targets whose coverage has normalised MRE "
            "(H/N, tolerance --tau) at most this value, with its price of equity; needs "
            'pip install "marra\\[equity]"',
            metavar="EPS",
        ),
    ] = None,
    plan_seconds: Annotated[
        float | None,
        typer.Option(
            "--plan-seconds",
            help="with coordinates: stop the exact minimum-distance transfer plan after about "
            "this many seconds and report it with its certified optimality gap (default: run "
            "to the proven optimum)",
            metavar="SECONDS",
        ),
    ] = None,
) -> None:
    """Recommend who should lend how many staff to whom, with before/after metrics."""
    from marra.hospital.network import InfeasibleError, NetworkError
    from marra.hospital.strategies import STRATEGIES, WEIGHTS, allocate, plan, write_plan_csv
    from marra.metrics import mre, report

    if strategy not in STRATEGIES:
        raise _fail(
            f"--strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    integer = not continuous
    cap = parse_budget(budget, integer=integer)
    if not (math.isfinite(tau) and tau >= 0):
        raise _fail(f"--tau: must be a non-negative number, got {tau:g}")
    if plan_seconds is not None and not (math.isfinite(plan_seconds) and plan_seconds > 0):
        raise _fail(f"--plan-seconds: must be a positive number of seconds, got {plan_seconds:g}")
    if max_mre is not None:
        if strategy != "qp":
            raise _fail(
                f"--max-mre: only --strategy qp takes an equity bound, not --strategy {strategy}"
            )
        if not (math.isfinite(max_mre) and max_mre >= 0):
            raise _fail(f"--max-mre: must be a non-negative number, got {max_mre:g}")
    if weights is not None:
        if weights not in WEIGHTS:
            raise _fail(f"--weights: must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        if weights != "none" and strategy not in WEIGHTED_STRATEGIES:
            raise _fail(
                f"--weights {weights}: only {' and '.join(WEIGHTED_STRATEGIES)} use weights; "
                f"--strategy {strategy} would ignore it (leave --weights out)"
            )
    check_output_file(out, "--out")
    check_output_file(allocation_out, "--allocation-out")
    if out is not None and allocation_out is not None and out.resolve() == allocation_out.resolve():
        raise _fail("--allocation-out: is the same file as --out; give two different files")
    network = _load_network(file, integer=integer)
    options: dict[str, Any] = {}
    if strategy in WEIGHTED_STRATEGIES:
        options["weights"] = weights or "none"
    transfer_budget = None if cap is None or math.isinf(cap) else cap
    started = time.perf_counter()
    equity: Any = None
    try:
        if max_mre is None:
            allocation = allocate(
                network,
                strategy,
                transfer_budget=transfer_budget,
                integer=integer,
                shortfall=shortfall,
                **options,
            )
        else:
            equity = _allocate_within_mre(
                network, max_mre, tau, transfer_budget, integer=integer, shortfall=shortfall
            )
            allocation = equity.allocation
    except InfeasibleError as exc:
        raise _fail(str(exc), EXIT_INFEASIBLE) from None
    except (NetworkError, ValueError) as exc:
        raise _fail(str(exc)) from None
    decision_seconds = time.perf_counter() - started
    progress = _PlanProgress(err_console)
    try:
        transfers = plan(network, allocation, progress=progress, time_limit=plan_seconds)
    finally:
        progress.stop()
    before = report(network, network.current, tau=tau)
    after = report(network, allocation, tau=tau)
    if out is not None:
        write_plan_csv(transfers, out)
    if allocation_out is not None:
        _write_allocation_csv(network, allocation, allocation_out, integer=integer)

    if as_json:
        distances = transfers.distance_km
        records = []
        for k, r in enumerate(transfers.records()):
            record: dict[str, Any] = {"from": r["from"], "to": r["to"], "count": _num(r["count"])}
            if distances is not None:
                record["distance_km"] = _num(round(float(distances[k]), 3))
            records.append(record)
        payload = {
            "allocation": {
                name: _num(v) for name, v in zip(network.names, allocation, strict=True)
            },
            "transfers": records,
            "metrics": {
                "before": {k: _num(v) for k, v in before.items()},
                "after": {k: _num(v) for k, v in after.items()},
            },
            "strategy": strategy,
            "transfer_budget": None if transfer_budget is None else _num(transfer_budget),
            "integer": integer,
            "tau": tau,
            "total_distance_km": None
            if transfers.total_distance_km is None
            else _num(round(transfers.total_distance_km, 3)),
            "optimality_gap_km": None
            if transfers.optimality_gap_km is None
            else _num(transfers.optimality_gap_km),
        }
        if strategy in WEIGHTED_STRATEGIES:
            payload["weights"] = options["weights"]
        if equity is not None:
            payload["max_mre"] = max_mre
            payload["price_of_equity"] = _price_of_equity(equity)
        sys.stdout.write(json.dumps(payload, allow_nan=False, ensure_ascii=False) + "\n")
        return

    cap_text = (
        "no cap"
        if transfer_budget is None
        else f"budget {_plural(transfer_budget, 'staff', 'staff')}"
    )
    console.print(
        f"[bold]{_escape(file.name)}[/]: {_plural(network.n, 'hospital')}, "
        f"{_fmt(network.total)} staff, minima need {_fmt(network.minimum.sum())}, targets ask "
        f"{_fmt(network.target.sum())}"
    )
    weighting = f", weights {options['weights']}" if strategy in WEIGHTED_STRATEGIES else ""
    if equity is not None:
        weighting += f", normalised MRE of coverage <= {max_mre:g} (tau {tau:g})"
    console.print(
        f"strategy [bold]{strategy}[/] ({STRATEGY_HELP[strategy]}{weighting}); {cap_text}; "
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
    if equity is not None:
        _print_price_of_equity(equity)
    _print_equity(network, allocation, tau, mre)
    if out is not None:
        console.print(
            f"plan written to [bold]{_escape(str(out))}[/] ({_plural(len(transfers), 'transfer')})"
        )
    if allocation_out is not None:
        console.print(
            f"before and after per hospital written to [bold]{_escape(str(allocation_out))}[/]"
        )


#: Seconds of planning before ``recommend`` shows a progress line (short plans stay silent).
PROGRESS_DELAY_S = 1.0
#: Least seconds between two progress lines when stderr is not a terminal (a log file).
PROGRESS_LOG_EVERY_S = 5.0


class _PlanProgress:
    """The ``progress`` callback ``recommend`` gives :func:`marra.strategies.plan`.

    Silent for the first :data:`PROGRESS_DELAY_S` seconds; after that, on a terminal, a live
    ``rich`` status line on ``console`` that each later message replaces; when ``console`` is
    not a terminal (a log, a pipe), the messages as plain lines, at most one every
    :data:`PROGRESS_LOG_EVERY_S` seconds. :meth:`stop` ends the status line.
    """

    def __init__(self, console: Any) -> None:
        self.console = console
        self.started = time.perf_counter()
        self.status: Any = None
        self.last_line = -math.inf

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if now - self.started <= PROGRESS_DELAY_S:
            return
        if not self.console.is_terminal:
            if now - self.last_line >= PROGRESS_LOG_EVERY_S:
                self.last_line = now
                self.console.print(message, soft_wrap=True, markup=False, highlight=False)
        elif self.status is None:
            self.status = self.console.status(_escape(message))
            self.status.start()
        else:
            self.status.update(_escape(message))

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _allocate_within_mre(
    network: Any,
    max_mre: float,
    tau: float,
    transfer_budget: float | None,
    *,
    integer: bool,
    shortfall: bool,
) -> Any:
    """``recommend --max-mre``: the equity-bounded QP; an unmeetable bound exits 3 naming the
    smallest one, a missing solver exits 2 with the install line."""
    try:
        from marra.hospital.strategies.equity import MREInfeasibleError, allocate_within_mre

        return allocate_within_mre(
            network,
            max_mre,
            tau=tau,
            transfer_budget=transfer_budget,
            integer=integer,
            shortfall=shortfall,
        )
    except ImportError as exc:
        raise _fail(f"--max-mre: {exc}") from None
    except MREInfeasibleError as exc:
        named = f"the smallest feasible max_mre is {exc.smallest:g}"
        message = (
            str(exc)
            .removeprefix("max_mre: ")
            .replace(named, f"{named} (use --max-mre {exc.smallest:g} or more)")
        )
        raise _fail(f"--max-mre {max_mre:g}: {message}", EXIT_INFEASIBLE) from None


def _price_of_equity(equity: Any) -> dict[str, Any]:
    """The JSON ``price_of_equity`` object: both plans' MAE, squared deviation and MRE."""
    return {
        "mae": _num(equity.mae),
        "mae_without_bound": _num(equity.mae_unconstrained),
        "mae_increase": _num(equity.price_of_equity),
        "squared_deviation": _num(equity.squared_deviation),
        "squared_deviation_without_bound": _num(equity.squared_deviation_unconstrained),
        "mre_normalised": _num(equity.mre_normalised),
        "mre_normalised_without_bound": _num(equity.mre_normalised_unconstrained),
        "method": equity.method,
    }


def _print_price_of_equity(equity: Any) -> None:
    table = Table(
        title=f"Price of equity (normalised MRE <= {equity.max_mre:g})", title_justify="left"
    )
    table.add_column("metric")
    table.add_column("qp without bound", justify="right")
    table.add_column("qp with bound", justify="right")
    table.add_column("change", justify="right")
    rows = (
        ("MAE to target", equity.mae_unconstrained, equity.mae),
        ("sum (y - t)^2", equity.squared_deviation_unconstrained, equity.squared_deviation),
        ("MRE / N (coverage)", equity.mre_normalised_unconstrained, equity.mre_normalised),
    )
    for label, without, with_bound in rows:
        digits = 5 if label.startswith("MRE") else 3
        change = with_bound - without
        shown = f"{int(change):+,}" if float(change).is_integer() else f"{change:+,.{digits}f}"
        table.add_row(label, _fmt(without, digits), _fmt(with_bound, digits), shown)
    console.print(table)
    if equity.method == "unconstrained":
        console.print("The plan without the bound already meets it: equity costs nothing here.")


def _write_allocation_csv(network: Any, allocation: Any, path: Path, *, integer: bool) -> None:
    """Each hospital before and after: ``name,current,after,change,minimum,target[,capacity]``."""
    import csv

    from marra._io import atomic_write_text

    def cell(value: float) -> str:
        value = float(value)
        if math.isinf(value):
            return ""
        return str(int(value)) if integer and value.is_integer() else repr(value)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["name", "current", "after", "change", "minimum", "target"]
    if network.capacity is not None:
        header.append("capacity")
    writer.writerow(header)
    for i, name in enumerate(network.names):
        row = [
            name,
            cell(network.current[i]),
            cell(allocation[i]),
            cell(allocation[i] - network.current[i]),
            cell(network.minimum[i]),
            cell(network.target[i]),
        ]
        if network.capacity is not None:
            row.append(cell(network.capacity[i]))
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _optimality_text(transfers: Any) -> str:
    """``", optimal"`` for a minimum-distance plan proved optimal (its certified gap within
    the solver's float tolerance, 1e-7 km per staff moved), ``", optimal within X km
    (certified)"`` for one stopped early; empty for a largest-first plan."""
    gap = transfers.optimality_gap_km
    if gap is None:
        return ""
    if gap <= 1e-7 * transfers.total_moved + 1e-6:
        return ", optimal"
    share = gap / transfers.total_distance_km if transfers.total_distance_km else 0.0
    return f", optimal within {gap:,.3g} km ({100 * share:.2g}% of it, certified)"


def _print_transfers(transfers: Any, limit: int = 25) -> None:
    if len(transfers) == 0:
        console.print("No transfers: the allocation stays as it is.")
        return
    records = transfers.records()
    console.print(
        f"{_plural(len(records), 'transfer')}, {_fmt(transfers.total_moved)} staff moved"
        + (
            f", {transfers.total_distance_km:,.0f} km in all"
            if transfers.total_distance_km is not None
            else ""
        )
        + _optimality_text(transfers),
        soft_wrap=True,
    )
    table = Table()
    table.add_column("from")
    table.add_column("to")
    table.add_column("count", justify="right")
    has_km = transfers.distance_km is not None
    if has_km:
        table.add_column("km", justify="right")
    for k, record in enumerate(records[:limit]):
        row = [_escape(record["from"]), _escape(record["to"]), _fmt(record["count"])]
        if has_km:
            row.append(f"{transfers.distance_km[k]:,.0f}")
        table.add_row(*row)
    if len(records) > limit:
        table.add_row(f"... {len(records) - limit:,} more (use --out or --json)", "", "")
    console.print(table)


def _print_equity(network: Any, allocation: Any, tau: float, mre: Any) -> None:
    """The MRE band in words. A hospital's place in the band is about its coverage y/t next to
    the mean coverage, not about being served well: a hospital below its minimum is listed as
    such, whatever side of the band it is on."""
    import numpy as np

    from marra.metrics import coverage

    result = mre(coverage(allocation, network.target), tau=tau, names=network.names)
    outside = list(result.outside_names or [])
    short = np.flatnonzero(np.asarray(allocation) < network.minimum - 1e-9)
    short_names = [network.names[i] for i in short]
    band = f"coverage y/t within ±{tau:.0%} of the mean coverage {result.mean:.3f}"

    def _names(items: list[str]) -> str:
        shown = ", ".join(_escape(x) for x in items[:8])
        return shown + (f" and {len(items) - 8:,} more" if len(items) > 8 else "")

    if not outside:
        console.print(f"Equity (MRE): every hospital has {band}.")
    else:
        console.print(
            f"Equity (MRE, tau={tau:g}): {_fmt(len(outside))} of {_plural(network.n, 'hospital')} "
            f"fall outside {band}; moving {result.h:.3f} units of coverage excess would share the "
            f"violations evenly (normalised MRE {result.h_normalised:.4f})."
        )
        below_minimum = set(short_names)
        below = [network.names[i] for i in result.below]
        above = [network.names[i] for i in result.above if network.names[i] not in below_minimum]
        if below:
            console.print(f"  coverage below the band: {_names(below)}")
        if above:
            console.print(f"  coverage above the band: {_names(above)}")
    if short_names:
        console.print(
            f"  still below their minimum: {_names(short_names)} "
            f"({_fmt(float(np.sum(network.minimum[short] - np.asarray(allocation)[short])))} "
            "staff missing)"
        )


@app.command()
def demo(
    budget: Annotated[
        str | None,
        typer.Option(
            help="at most this many whole staff change hospital per plan and per step; 'none' "
            "(or 'inf') for no cap (default: no cap in the table, one staff per hospital in the "
            "simulation)",
            metavar=BUDGET_METAVAR,
        ),
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option(
            help="steps of the shifting+shock simulation shown after (default: 50; 0: none)"
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="deprecated spelling of --horizon")
    ] = None,
) -> None:
    """Compare every strategy on the built-in network of 150 hospitals."""
    from marra.experiments.demo import DEMO_METHODS, DEMO_SEEDS
    from marra.experiments.simulate import estimate_simulation_bytes
    from marra.hospital.network import default_network
    from marra.hospital.strategies import STRATEGIES, allocate, plan
    from marra.metrics import report

    cap = parse_budget(budget, integer=True)
    simulate_steps = deprecated_alias(
        horizon, steps, new="--horizon", old="--steps", default=50, low=0, high=MAX_COUNT
    )
    network = default_network()
    if simulate_steps > 0:
        _check_memory(
            estimate_simulation_bytes(network.n, simulate_steps, DEMO_SEEDS, DEMO_METHODS),
            f"--horizon {simulate_steps:,}: the demo simulation",
        )
    transfer_budget = None if cap is None or math.isinf(cap) else cap
    console.print(
        f"Built-in network: {_plural(network.n, 'hospital')}, {_fmt(network.total)} staff, "
        f"minima need {_fmt(network.minimum.sum())}, targets ask {_fmt(network.target.sum())}"
        + ("" if transfer_budget is None else f"; transfer budget {_fmt(transfer_budget)}")
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
        allocation = allocate(network, name, transfer_budget=transfer_budget)
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
            _fmt(len(transfers)),
            "" if km is None else f"{km:,.0f}",
            f"{elapsed * 1000:.1f}",
        )
    console.print(table)
    console.print(
        "MAE: mean |y - t| (paper 000 Eq. 8); Gini on staff (Eq. 9); cov. Gini on y/t; MRE/N: "
        "normalised Minimum Reallocation of Excess of coverage (paper 003), tau 0.1. Lower is "
        "better for MAE, Gini, cov. Gini, MRE/N and below min; moved, transfers, km and ms are "
        "what a plan costs."
    )
    if simulate_steps > 0:
        _demo_simulation(network, simulate_steps, cap)


def _split_policy(value: str) -> tuple[Path, str | None]:
    """``policy:PATH`` or ``policy:PATH@label`` -> (PATH, label or None). A path that exists as
    given wins over a split at ``@``."""
    spec = value.split(":", 1)[1]
    if "@" in spec and not Path(spec).exists():
        path, label = spec.rsplit("@", 1)
        if not label.strip():
            raise _fail(f"--strategy {value}: empty label after '@' (policy:PATH@label)")
        return Path(path), label.strip()
    return Path(spec), None


def _parse_methods(strategies: list[str], budget: float | None, integer: bool) -> list[Any]:
    """Turn ``--strategy`` values into methods: classical names or ``policy:PATH[@label]``.

    ``budget`` as :func:`marra.cli._app.parse_budget` returns it. Without ``--budget``, a
    learned policy plays at the budget it was trained with, and so do the classical methods (a
    note says so), so that every method is compared under the same cap; ``--budget none``
    lifts the cap for every method, the policy included.
    """
    from marra.experiments.simulate import ClassicalMethod
    from marra.hospital.strategies import STRATEGIES

    policies: list[Any] = []
    entries: list[tuple[str, Any]] = []
    for value in strategies:
        if value.startswith("policy:"):
            from marra.experiments.policy_method import PolicyMethod

            path, label = _split_policy(value)
            try:
                method = PolicyMethod.from_file(
                    path, transfer_budget=budget, integer=integer, label=label
                )
            except (OSError, ValueError) as exc:
                raise _fail(f"--strategy {value}: {exc}") from None
            policies.append(method)
            entries.append(("policy", method))
        elif value in STRATEGIES:
            entries.append(("classical", value))
        else:
            raise _fail(
                f"--strategy: unknown strategy {value!r}; choose from {', '.join(STRATEGIES)} "
                "or policy:PATH/policy.pt[@label]"
            )
    classical_budget = budget
    classical = [value for kind, value in entries if kind == "classical"]
    if budget is None and policies and classical:
        trained = {p.budget for p in policies}
        if len(trained) == 1:
            classical_budget = trained.pop()
            if classical_budget is not None:
                _note(
                    f"--budget not given: {', '.join(classical)} "
                    f"{'plays' if len(classical) == 1 else 'play'} under "
                    f"B={classical_budget:g} staff a step, the budget "
                    f"{policies[0].label} was trained with (give --budget N, or --budget none "
                    "for no cap)"
                )
        else:
            listing = ", ".join(f"{p.label}: {budget_text(p.budget)}" for p in policies)
            _note(
                f"--budget not given and the policies were trained with different budgets "
                f"({listing}); {', '.join(classical)} "
                f"{'plays' if len(classical) == 1 else 'play'} without a cap (give --budget N "
                "to compare all under one)"
            )
    methods: list[Any] = []
    for kind, value in entries:
        if kind == "policy":
            methods.append(value)
        else:
            methods.append(
                ClassicalMethod(value, transfer_budget=classical_budget, integer=integer)
            )
    labels = [m.label for m in methods]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise _fail(
            f"--strategy: {', '.join(repr(r) for r in repeated)} given more than once; give "
            "each a distinct label with policy:PATH@label"
        )
    return methods


_SIMULATION_FIELDS = {
    "steps": "--horizon",
    "seeds": "--seeds",
    "hospitals": "--hospitals",
    "tau": "--tau",
    "methods": "--strategy",
    "scenario": "--scenario",
    "out": "--out",
}


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(help=SCENARIO_HELP)] = "shifting",
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            help="repeat to compare: qp, nwo, taxation, hybrid, greedy, hold, "
            "policy:RUN/policy.pt, or policy:RUN/policy.pt@label to name it"
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            help=BUDGET_HELP + " (default: a policy's training budget when one is compared, "
            "else no cap)",
            metavar=BUDGET_METAVAR,
        ),
    ] = None,
    hospitals: Annotated[int, typer.Option(help="random hospitals per seed (no --network)")] = 150,
    network_file: Annotated[
        Path | None, typer.Option("--network", help="CSV network used for every seed")
    ] = None,
    horizon: Annotated[
        int | None, typer.Option(help="time steps T of each episode (default: 50)")
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="deprecated spelling of --horizon")
    ] = None,
    seeds: Annotated[int, typer.Option(help="independent runs: seeds FIRST..FIRST+N-1")] = 20,
    first_seed: Annotated[int, typer.Option(help="the first seed (with --seeds N)")] = 0,
    continuous: Annotated[bool, typer.Option("--continuous", help="fractional staff")] = False,
    tau: Annotated[float, typer.Option(help="MRE tolerance band")] = 0.1,
    out: Annotated[
        Path,
        typer.Option(help="output folder (a rerun with other methods or seeds merges into it)"),
    ] = Path("runs/simulate"),
    plots: Annotated[bool, typer.Option(help="draw mae.png and gini.png")] = True,
) -> None:
    """Simulate strategies over a dynamic scenario; write results.csv, manifest.json and plots."""
    import numpy as np

    from marra.experiments.results import ResultsError
    from marra.experiments.simulate import (
        SimulationError,
        SimulationSpec,
        estimate_simulation_bytes,
        run_simulation,
    )
    from marra.hospital.scenarios import ScenarioError, make_scenario

    horizon_option = "--horizon" if steps is None else "--steps"
    steps = deprecated_alias(
        horizon, steps, new="--horizon", old="--steps", default=50, high=MAX_COUNT
    )
    check_count(seeds, "--seeds", high=MAX_COUNT)
    check_count(first_seed, "--first-seed", low=0)
    if first_seed + seeds - 1 > MAX_SEED:
        raise _fail(f"--first-seed: the last seed {first_seed + seeds - 1} exceeds {MAX_SEED}")
    if network_file is None:
        check_count(hospitals, "--hospitals", high=MAX_COUNT)
    if not (math.isfinite(tau) and tau >= 0):
        raise _fail(f"--tau: must be a non-negative number, got {tau:g}")
    integer = not continuous
    cap = parse_budget(budget, integer=integer)
    check_output_folder(out)
    try:
        make_scenario(scenario, horizon=steps)
    except ScenarioError as exc:
        raise _fail(f"--scenario {scenario}: {exc}") from None
    network = None
    if network_file is not None:
        network = _load_network(network_file, integer=integer, option="--network")
    n = hospitals if network is None else network.n
    names = strategy or ["qp"]
    _check_memory(
        estimate_simulation_bytes(n, steps, seeds, len(names)),
        f"--seeds {seeds:,} x {horizon_option} {steps:,} x "
        + (f"--hospitals {n:,}" if network is None else f"{n:,} hospitals of --network"),
    )
    methods = _parse_methods(names, cap, integer)
    spec = SimulationSpec(
        scenario=scenario,
        seeds=list(range(first_seed, first_seed + seeds)),
        steps=steps,
        hospitals=n,
        network=network,
        network_source=None if network_file is None else str(network_file),
        integer=integer,
        tau=tau,
    )
    arguments = {
        "scenario": scenario,
        "strategy": [m.label for m in methods],
        "budget": None if cap is None else budget_text(cap),
        "budgets": {m.label: m.budget for m in methods},
        "hospitals": spec.hospitals,
        "network": None if network_file is None else str(network_file),
        "horizon": steps,
        "seeds": seeds,
        "first_seed": first_seed,
        "continuous": continuous,
        "tau": tau,
    }
    try:
        results = run_simulation(spec, methods, out, progress=True, arguments=arguments)
    except SimulationError as exc:
        flag = _SIMULATION_FIELDS.get(exc.field or "")
        raise _fail(f"{flag}: {exc.detail}" if flag else str(exc)) from None
    except ResultsError as exc:
        raise _fail(str(exc)) from None
    from marra.experiments.results import read_results

    frame = read_results(results)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    budgets = {m["label"]: m.get("budget") for m in manifest.get("methods", [])}
    earlier = manifest.get("merged_from_earlier_runs", [])
    table = Table(
        title=f"{scenario}: mean over seeds and {steps} steps (± std over seeds)",
        title_justify="left",
    )
    from marra.experiments.simulate import CORE_METRICS as shown

    table.add_column("method")
    table.add_column("budget", justify="right")
    table.add_column("seeds", justify="right")
    for metric in shown:
        table.add_column("decision ms" if metric == "decision_seconds" else metric, justify="right")
    for method in dict.fromkeys(frame["method"]):
        mine = frame[frame["method"] == method]
        cells = [
            _escape(str(method)),
            budget_text(budgets.get(method)),
            str(mine["seed"].nunique()),
        ]
        for metric in shown:
            rows = mine[mine["metric"] == metric]
            per_seed = rows.groupby("seed")["value"].mean().to_numpy()
            scale = 1000.0 if metric == "decision_seconds" else 1.0
            mean, std = float(np.mean(per_seed)) * scale, float(np.std(per_seed)) * scale
            cells.append(f"{mean:.3f} ± {std:.3f}")
        table.add_row(*cells)
    console.print(table)
    if earlier:
        _note(
            f"{out} already held a run with these settings: results.csv merges it, so it also "
            f"holds {', '.join(earlier)} from before (use another --out for a separate run)"
        )
    if plots:
        from marra.experiments.plots import plot_run

        written = plot_run(out)
        console.print("plots: " + ", ".join(_escape(str(p)) for p in written))
    console.print(
        f"results: {_escape(str(results))} ({len(frame):,} rows); manifest: "
        f"{_escape(str(out / 'manifest.json'))}"
    )


@app.command()
def plot(
    folder: Annotated[
        Path, typer.Argument(help="a folder written by marra simulate, or its results.csv")
    ],
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
    console.print("plots: " + ", ".join(_escape(str(p)) for p in written))


#: ``marra reproduce``'s papers: the module and function that run each (paper000 is special:
#: it returns no result object).
_REPRODUCTIONS: dict[str, tuple[str, str]] = {
    "paper000": ("marra.experiments.reproduce", "reproduce_paper000"),
    "paper002": ("marra.experiments.paper002", "reproduce_paper002"),
    "paper003": ("marra.experiments.paper003", "reproduce_paper003"),
    "survey001": ("marra.experiments.survey001", "reproduce_survey001"),
}


@app.command()
def reproduce(
    paper: Annotated[str, typer.Argument(help="which paper: " + ", ".join(_REPRODUCTIONS))],
    out: Annotated[Path | None, typer.Option(help="output folder (default: runs/PAPER)")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="fewer seeds and training steps (minutes, for CI)")
    ] = False,
    backend: Annotated[
        str, typer.Option(help="where the agents train: local (process pool) or ray")
    ] = "local",
    workers: Annotated[
        int | None, typer.Option(help="agents trained at once [CPUs]; see marra sweep")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="a running Ray cluster: auto or HOST:PORT (ray only)")
    ] = None,
) -> None:
    """Reproduce a paper's experiments: paper000 gives Figures 1 and 2 and summary.md;
    paper002 DyPS's Tables 2-4 and 7 and Figures 6 and 9; paper003 ELD's Table 2 and Figures
    3-7; survey001 the 33-bus voltage study (docs/reproduction.md). The training grid runs as a
    sweep (docs/sweeps.md), locally or on a Ray cluster; a rerun resumes it."""
    if paper not in _REPRODUCTIONS:
        raise _fail(f"PAPER: unknown paper {paper!r}; available: {', '.join(_REPRODUCTIONS)}")
    if backend not in ("local", "ray"):
        raise _fail(f"--backend: 'local' or 'ray', got {backend!r}")
    if workers is not None and workers < 1:
        raise _fail(f"--workers: must be at least 1, got {workers}")
    if address is not None and backend != "ray":
        raise _fail("--address: only with --backend ray")
    out = out if out is not None else Path("runs") / paper
    check_output_folder(out)
    import importlib

    from marra.experiments.sweep import SpecError, SweepError

    module_name, function_name = _REPRODUCTIONS[paper]
    try:
        run_paper = getattr(importlib.import_module(module_name), function_name)
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a paper is being built
        raise _fail(f"PAPER: {paper} is not available in this build ({exc})") from None
    try:
        if paper == "paper000":
            run_paper(out, quick=quick, backend=backend, workers=workers, address=address)
            return
        result = run_paper(out, quick=quick, backend=backend, workers=workers,
                           address=address, console=console)  # fmt: skip
        console.print(f"summary: {_escape(str(result.files['summary.md']))}")
    except (SpecError, SweepError) as exc:
        raise _fail(str(exc)) from None


def _demo_simulation(network: Any, steps: int, budget: float | None = None) -> None:
    """A short shifting+shock simulation on the built-in network (hook for the learned policy)."""
    from marra.experiments.demo import demo_simulation

    demo_simulation(network, steps=steps, console=console, budget=budget)
