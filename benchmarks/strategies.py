"""Speed of the classical strategies, against cvxpy on the same QP and NWO, and of transfer plans.

Three measurements, all medians of ``time.perf_counter`` over repeats after one warm-up call (a
repeat of a fast call times several calls together, at least 10 ms; see :func:`time_call`):

1. **Strategies.** :func:`marra.strategies.allocate` for every strategy (qp, nwo, taxation,
   hybrid, greedy, hold) at every ``n`` of ``--sizes``, in integer (default) and continuous mode,
   without a transfer budget; qp and nwo also under a binding budget of ``--budget-fraction``
   (5%) of the total staff. Networks come from :func:`marra.network.generate_network`
   (``seed``); from ``--lean-from`` hospitals on (100,000) they are generated without names and
   coordinates (``names=False, coords=False``), which the strategies do not use.
2. **Exact optima against cvxpy.** The continuous, unbudgeted QP and NWO, which marra solves by
   one water-filling, also through a generic solver up to ``--cvxpy-max-n`` (10,000), with the
   solvers cvxpy picks by default:

   - QP: ``minimise sum_squares(y - t)`` s.t. ``sum(y) == C``, ``y >= m``;
   - NWO: ``maximise sum(log(y - m + 1))`` s.t. the same constraints.

   On the generated networks (staff within 5% of the targets' sum, minima 60-80% of targets)
   no optimum sits at a minimum, and NWO with ``w = 1`` never has one (every hospital gets the
   same surplus), so the water-filling takes its short path. Two more cases therefore run on a
   *scarce* copy of each network (staff cut to ``--scarce-fraction``, 75%, of the targets' sum):
   QP, with about 60% of the hospitals at their minimum, and NWO with target weights
   (``w = t - m + 1``, ``maximise sum(w * log(y - m + 1))``), whose level lies among the
   breakpoints.

   Three cvxpy times per case: the whole call (building the ``cp.Problem`` and ``solve``:
   cvxpy's canonicalisation plus the solver); a re-solve of a problem built once with
   ``cp.Parameter`` data (DPP, ``warm_start=False``; up to ``--resolve-max-n``), which is how a
   caller would amortise the building; and the solver's own time
   (``problem.solver_stats.solve_time``; for OSQP its ``run_time``, setup + solve + polish).
   ``ratio = cvxpy time / marra time`` on the same case (marra continuous, unbudgeted, the whole
   ``allocate`` call). cvxpy's objective is checked against marra's exact optimum (relative
   gap). The bare :func:`marra.strategies.water_fill` call inside ``allocate`` is timed too, for
   every ``n``, so marra's per-call overhead (validation, copies) can be told from the algorithm.
3. **Transfer plans.** :func:`marra.strategies.plan` at ``--plan-sizes`` (150, 1,000), networks
   with coordinates, for the integer QP allocation: exact optimal transport (``"transport"``)
   and ``"largest-first"``. The first transport call imports POT; its cost (first call minus the
   warm median) is reported separately.

4. **Transfer plans at scale.** The exact minimum-distance plan at ``--large-plan-sizes``
   (1,000, 10,000, 100,000 hospitals with coordinates; integer QP allocation): the sparse solver
   (``method="sparse-transport"``, column generation with a dual certificate over all pairs),
   against, in the same run, the dense exact path (POT's network simplex on the whole cost
   matrix, what ``"transport"`` used up to 4,000,000 pairs; run where the matrix has at most
   ``--dense-max-cells`` pairs) and the old near-optimal sparse path (32 nearest receivers per
   sender and senders per receiver plus the largest-first pairs, one POT solve, no certificate;
   the code it replaced, kept here as :func:`old_sparse_plan`). Reported: seconds, staff-km,
   the certified gap, the difference to the dense optimum, and time ratios.

cvxpy is a benchmark-only dependency: without it (or with ``--no-cvxpy``) the cvxpy columns of
part 2 stay empty, with a note in the table and the JSON (``cvxpy_note``). The machine may be
shared, so ``min`` is stored next to every median and the load average before and after the run
goes into the JSON.

Usage::

    python benchmarks/strategies.py                # n = 150 ... 1,000,000, writes the JSON
    python benchmarks/strategies.py --quick        # n <= 10,000, fewer repeats (< 1 minute)
    python benchmarks/strategies.py --markdown     # also print the tables as Markdown
    python benchmarks/strategies.py --only-large-plans --markdown  # part 4 alone, merged into --out
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import scipy

from marra._io import atomic_write_text
from marra.hospital.strategies import transfer_plan as plan_module
from marra.hospital.strategies.transport import import_pot, unit_vectors
from marra.network import HospitalNetwork, generate_network
from marra.strategies import STRATEGIES, allocate, plan, water_fill

BUDGETED = ("qp", "nwo")
PLAN_METHODS = ("transport", "largest-first")


# ---------------------------------------------------------------------- timing
#: Each repeat runs a call this many seconds at least (several calls of a fast function, timed
#: together), so microsecond calls are not at the mercy of one scheduler tick.
MIN_REPEAT_SECONDS = 0.01
#: Most calls of one function timed together in one repeat.
MAX_CALLS_PER_REPEAT = 1000


def _elapsed(fn: Callable[[], Any], calls: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def time_calls(
    fns: dict[Hashable, Callable[[], Any]],
    repeats: int | dict[Hashable, int],
    *,
    min_seconds: float = MIN_REPEAT_SECONDS,
) -> dict[Hashable, dict[str, Any]]:
    """Median and minimum wall time (s) per call of every function in ``fns``.

    Each function gets one warm-up call (its time is returned as ``first_s``: it pays imports
    and caches) and one probe call that sets ``calls_per_repeat``, how many calls one repeat
    times together so that it lasts at least ``min_seconds`` (1 for slow functions); a repeat's
    time is divided by that number. The repeats are **interleaved**: round ``r`` runs repeat
    ``r`` of every function in turn, so a spell of load from other jobs on a shared machine
    slows one repeat of many functions rather than every repeat of one, and the medians of
    functions compared with each other are taken over the same stretch of time.

    Args:
        fns: functions without arguments, by key.
        repeats: repeats per function, one number for all or one per key.
    """
    wanted = {key: repeats if isinstance(repeats, int) else repeats[key] for key in fns}
    first: dict[Hashable, float] = {}
    calls: dict[Hashable, int] = {}
    for key, fn in fns.items():
        first[key] = _elapsed(fn)
        probe = _elapsed(fn)
        calls[key] = max(1, min(MAX_CALLS_PER_REPEAT, math.ceil(min_seconds / max(probe, 1e-9))))
    times: dict[Hashable, list[float]] = {key: [] for key in fns}
    for round_ in range(max(wanted.values(), default=0)):
        for key, fn in fns.items():
            if round_ < wanted[key]:
                times[key].append(_elapsed(fn, calls[key]) / calls[key])
    return {
        key: {
            "median_s": statistics.median(times[key]),
            "min_s": min(times[key]),
            "repeats": wanted[key],
            "calls_per_repeat": calls[key],
            "first_s": first[key],
        }
        for key in fns
    }


def repeats_for(n: int, args: argparse.Namespace) -> int:
    """Repeats per measurement: more for small networks (cheap and noisy), fewer for large."""
    if args.repeats is not None:
        return args.repeats
    if args.quick:
        return 5 if n <= 1_000 else 3
    if n <= 1_000:
        return 21
    if n <= 10_000:
        return 11
    if n <= 100_000:
        return 5
    return 3


def cvxpy_repeats_for(n: int, args: argparse.Namespace) -> int:
    if args.repeats is not None:
        return args.repeats
    if args.quick:
        return 3
    return 15 if n <= 1_000 else 7


def make_network(n: int, args: argparse.Namespace, *, full: bool = False) -> HospitalNetwork:
    lean = n >= args.lean_from and not full
    return generate_network(n, args.seed, names=not lean, coords=not lean)


def moved(y: np.ndarray, network: HospitalNetwork) -> float:
    """Staff that change hospital: ``sum max(0, y - c)``."""
    return float(np.maximum(y - network.current, 0.0).sum())


# ---------------------------------------------------------------------- 1. strategies
def bench_strategies(
    n: int, network: HospitalNetwork, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every strategy, integer and continuous, unbudgeted; qp and nwo also under the budget."""
    budget = args.budget_fraction * network.total
    fns: dict[Hashable, Callable[[], Any]] = {}
    for strategy in STRATEGIES:
        for transfer_budget in [None, budget] if strategy in BUDGETED else [None]:
            for integer in (True, False):
                fns[(strategy, integer, transfer_budget)] = partial(
                    allocate, network, strategy, integer=integer, transfer_budget=transfer_budget
                )
    timings = time_calls(fns, repeats_for(n, args))
    rows: list[dict[str, Any]] = []
    for (strategy, integer, transfer_budget), timing in timings.items():
        rows.append(
            {
                "n": n,
                "strategy": strategy,
                "integer": integer,
                "transfer_budget": transfer_budget,
                "moved": moved(fns[(strategy, integer, transfer_budget)](), network),
                **timing,
            }
        )
    # a budget binds when the unbudgeted plan moves more than it
    for row in rows:
        if row["transfer_budget"] is not None:
            free = next(
                r
                for r in rows
                if r["strategy"] == row["strategy"]
                and r["integer"] == row["integer"]
                and r["transfer_budget"] is None
            )
            row["unbudgeted_moved"] = free["moved"]
            row["binding"] = free["moved"] > row["transfer_budget"] + 1e-9
    return rows


# ---------------------------------------------------------------------- 2. exact optima and cvxpy
@dataclass(frozen=True)
class Case:
    """One continuous problem solved exactly by marra (one water-filling) and by cvxpy."""

    name: str
    problem: str  # "qp" or "nwo"
    weights: str = "none"  # NWO weights: "none" (w = 1) or "target" (w = t - m + 1)
    scarce: bool = False  # on the scarce network (--scarce-fraction of the targets' sum)

    @property
    def options(self) -> dict[str, str]:
        return {"weights": self.weights} if self.problem == "nwo" else {}


CASES = (
    Case("qp", "qp"),
    Case("nwo", "nwo"),
    Case("qp, scarce", "qp", scarce=True),
    Case("nwo weighted, scarce", "nwo", weights="target", scarce=True),
)


def scarce_network(network: HospitalNetwork, fraction: float) -> HospitalNetwork:
    """``network`` with its staff cut to about ``fraction`` of the targets' sum (whole staff,
    ``floor(c * fraction * sum(t) / C)``), so that many optima sit at the minimum."""
    scale = fraction * float(np.sum(network.target)) / network.total
    return network.with_current(np.floor(np.asarray(network.current) * scale))


def nwo_weight(case: Case, network: HospitalNetwork) -> np.ndarray:
    if case.weights == "target":
        return np.asarray(network.target) - np.asarray(network.minimum) + 1.0
    return np.ones(network.n)


def kernel_inputs(case: Case, network: HospitalNetwork) -> tuple[np.ndarray, ...]:
    """``(base, slope, lower, upper)`` of the single :func:`water_fill` that solves ``case``:
    QP ``y = clip(t + nu, m, u)``, NWO ``y = clip(m - 1 + w / lambda, m, u)``."""
    m, t, u = network.minimum, network.target, network.upper
    if case.problem == "qp":
        return t, np.ones(network.n), m, u
    return m - 1.0, nwo_weight(case, network), m, u


def objective_value(case: Case, y: np.ndarray, network: HospitalNetwork) -> float:
    """QP ``sum (y - t)^2`` (minimised); NWO ``sum w log(y - m + 1)`` (maximised)."""
    if case.problem == "qp":
        return float(np.sum((y - network.target) ** 2))
    return float(np.sum(nwo_weight(case, network) * np.log(y - network.minimum + 1.0)))


def import_cvxpy(args: argparse.Namespace) -> tuple[ModuleType | None, str | None]:
    """cvxpy, or ``None`` and the reason it is skipped."""
    if args.no_cvxpy:
        return None, "cvxpy comparison skipped (--no-cvxpy)"
    try:
        import cvxpy
    except ImportError as exc:
        return None, f"cvxpy comparison skipped: cvxpy is not installed ({exc})"
    return cvxpy, None


def cvxpy_program(
    cp: ModuleType, case: Case, n: int, target: Any, minimum: Any, total: Any, weight: np.ndarray
) -> tuple[Any, Any]:
    """``(cp.Problem, y)`` for ``case``; ``target``, ``minimum``, ``total`` are arrays or
    ``cp.Parameter`` objects (then the problem is DPP: compiled once, re-solved with new data).

    QP: ``minimise sum_squares(y - t)``; NWO: ``maximise sum(log(y - m + 1))`` (or
    ``sum(w * log(y - m + 1))`` with target weights); both s.t. ``sum(y) == C``, ``y >= m``.
    """
    y = cp.Variable(n)
    if case.problem == "qp":
        objective = cp.Minimize(cp.sum_squares(y - target))
    elif case.weights == "none":
        objective = cp.Maximize(cp.sum(cp.log(y - minimum + 1.0)))
    else:
        objective = cp.Maximize(cp.sum(cp.multiply(weight, cp.log(y - minimum + 1.0))))
    return cp.Problem(objective, [cp.sum(y) == total, y >= minimum]), y


class CvxpyBuildSolve:
    """Each call builds a new ``cp.Problem`` for ``case`` and solves it with cvxpy's default
    solver; keeps the solver's own time of every call and the last problem and solution."""

    def __init__(self, cp: ModuleType, case: Case, network: HospitalNetwork) -> None:
        self.cp, self.case, self.n = cp, case, network.n
        self.minimum = np.array(network.minimum)
        self.target = np.array(network.target)
        self.total = network.total
        self.weight = nwo_weight(case, network)
        self.solve_times: list[float] = []
        self.program: Any = None
        self.y: np.ndarray | None = None

    def __call__(self) -> None:
        program, y = cvxpy_program(
            self.cp, self.case, self.n, self.target, self.minimum, self.total, self.weight
        )
        program.solve()
        self.solve_times.append(program.solver_stats.solve_time)
        self.program, self.y = program, np.asarray(y.value)


class CvxpyResolve:
    """A problem built once with ``cp.Parameter`` data (DPP); each call assigns new data
    (copies of the same values) and solves from scratch (``warm_start=False``)."""

    def __init__(self, cp: ModuleType, case: Case, network: HospitalNetwork) -> None:
        self.minimum = np.array(network.minimum)
        self.target = np.array(network.target)
        self.total = network.total
        self.params = {
            "target": cp.Parameter(network.n),
            "minimum": cp.Parameter(network.n),
            "total": cp.Parameter(),
        }
        self.program, _ = cvxpy_program(
            cp, case, network.n, weight=nwo_weight(case, network), **self.params
        )

    def __call__(self) -> None:
        self.params["target"].value = self.target.copy()
        self.params["minimum"].value = self.minimum.copy()
        self.params["total"].value = self.total
        self.program.solve(warm_start=False)


def bench_exact(
    n: int,
    networks: dict[bool, HospitalNetwork],
    cp: ModuleType | None,
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """marra and cvxpy on every case, all timings interleaved (:func:`time_calls`).

    marra: the whole ``allocate`` call (continuous, unbudgeted) and the bare
    :func:`water_fill` inside it. cvxpy (when given, up to ``--cvxpy-max-n``): build + solve
    (:class:`CvxpyBuildSolve`), the solver's own ``solve_time`` in those calls, and (up to
    ``--resolve-max-n``) the DPP re-solve (:class:`CvxpyResolve`; the first call, which
    compiles the parametrised problem, is reported as ``param_first_s``).

    Returns:
        ``(exact_rows, cvxpy_rows)``; ratios in ``cvxpy_rows`` are cvxpy time / marra time of
        the same case.
    """
    use_cvxpy = cp is not None and n <= args.cvxpy_max_n
    fns: dict[Hashable, Callable[[], Any]] = {}
    repeats: dict[Hashable, int] = {}
    for case in CASES:
        network = networks[case.scarce]
        fns[(case.name, "marra")] = partial(
            allocate, network, case.problem, integer=False, **case.options
        )
        fns[(case.name, "water_fill")] = partial(
            water_fill, *kernel_inputs(case, network), network.total
        )
        repeats[(case.name, "marra")] = repeats[(case.name, "water_fill")] = repeats_for(n, args)
        if use_cvxpy:
            assert cp is not None
            fns[(case.name, "cvxpy")] = CvxpyBuildSolve(cp, case, network)
            repeats[(case.name, "cvxpy")] = cvxpy_repeats_for(n, args)
            if n <= args.resolve_max_n:
                fns[(case.name, "resolve")] = CvxpyResolve(cp, case, network)
                repeats[(case.name, "resolve")] = cvxpy_repeats_for(n, args)
    timings = time_calls(fns, repeats)

    exact_rows: list[dict[str, Any]] = []
    cvxpy_rows: list[dict[str, Any]] = []
    for case in CASES:
        network = networks[case.scarce]
        y = fns[(case.name, "marra")]()
        marra = timings[(case.name, "marra")]
        kernel = timings[(case.name, "water_fill")]
        exact = {
            "n": n,
            "case": case.name,
            "problem": case.problem,
            "weights": case.weights,
            "scarce": case.scarce,
            "staff_over_targets": network.total / float(np.sum(network.target)),
            "at_minimum": float(np.mean(y <= np.asarray(network.minimum) + 1e-9)),
            "objective": objective_value(case, y, network),
            "marra_median_s": marra["median_s"],
            "marra_min_s": marra["min_s"],
            "water_fill_median_s": kernel["median_s"],
            "water_fill_min_s": kernel["min_s"],
            "repeats": marra["repeats"],
        }
        exact_rows.append(exact)
        if not use_cvxpy:
            continue
        solver = fns[(case.name, "cvxpy")]
        assert isinstance(solver, CvxpyBuildSolve) and solver.y is not None
        build = timings[(case.name, "cvxpy")]
        resolve = timings.get((case.name, "resolve"))
        solve_times = solver.solve_times[2:]  # drop the warm-up's and the probe's
        program = solver.program
        cvxpy_rows.append(
            {
                "n": n,
                "case": case.name,
                "problem": case.problem,
                "solver": program.solver_stats.solver_name,
                "status": program.status,
                "iterations": program.solver_stats.num_iters,
                "repeats": build["repeats"],
                "at_minimum": exact["at_minimum"],
                "total_median_s": build["median_s"],
                "total_min_s": build["min_s"],
                "solve_median_s": statistics.median(solve_times),
                "solve_min_s": min(solve_times),
                "resolve_median_s": None if resolve is None else resolve["median_s"],
                "resolve_min_s": None if resolve is None else resolve["min_s"],
                "param_first_s": None if resolve is None else resolve["first_s"],
                "marra_median_s": marra["median_s"],
                "water_fill_median_s": kernel["median_s"],
                "ratio_total": build["median_s"] / marra["median_s"],
                "ratio_resolve": None
                if resolve is None
                else resolve["median_s"] / marra["median_s"],
                "ratio_solve": statistics.median(solve_times) / marra["median_s"],
                "ratio_total_of_minima": build["min_s"] / marra["min_s"],
                "cvxpy_objective": float(program.value),
                "marra_objective": exact["objective"],
                # > 0: marra's exact optimum is better than the value cvxpy reports
                "objective_gap_rel": (
                    (float(program.value) - exact["objective"])
                    * (1.0 if case.problem == "qp" else -1.0)
                    / max(1.0, abs(exact["objective"]))
                ),
                "max_abs_y_diff": float(np.max(np.abs(solver.y - y))),
                "cvxpy_max_violation": float(
                    max(
                        np.max(np.asarray(network.minimum) - solver.y),
                        abs(float(solver.y.sum()) - network.total),
                    )
                ),
            }
        )
    return exact_rows, cvxpy_rows


# ---------------------------------------------------------------------- 3. transfer plans
def bench_plans(args: argparse.Namespace) -> dict[str, Any]:
    """Transport and largest-first plans for the integer QP allocation, at every plan size."""
    pot_preloaded = "ot" in sys.modules
    rows = []
    pot_import_s = None
    for n in args.plan_sizes:
        network = make_network(n, args, full=True)
        allocation = allocate(network, "qp")
        fns: dict[Hashable, Callable[[], Any]] = {
            method: partial(plan, network, allocation, method=method) for method in PLAN_METHODS
        }
        timings = time_calls(fns, repeats_for(n, args))
        for method, timing in timings.items():
            if method == "transport" and pot_import_s is None and not pot_preloaded:
                pot_import_s = max(0.0, timing["first_s"] - timing["median_s"])
            result = fns[method]()
            rows.append(
                {
                    "n": n,
                    "method": result.method,
                    "transfers": len(result),
                    "moved": result.total_moved,
                    "distance_km": result.total_distance_km,
                    "senders": int(np.unique(result.senders).size),
                    "receivers": int(np.unique(result.receivers).size),
                    **timing,
                }
            )
    return {"pot_import_s": pot_import_s, "pot_preloaded": pot_preloaded, "rows": rows}


# ---------------------------------------------------------------------- 4. plans at scale
def old_sparse_plan(network: HospitalNetwork, allocation: np.ndarray) -> float:
    """Staff-km of the plan the old ``"sparse-transport"`` made (the code this benchmark's
    sparse solver replaced): the transport problem restricted to each sender's 32 nearest
    receivers, each receiver's 32 nearest senders and the largest-first pairs, one POT solve."""
    import scipy.sparse
    from scipy.spatial import cKDTree

    change = allocation - network.current
    senders, receivers = np.flatnonzero(change < 0), np.flatnonzero(change > 0)
    supply, demand = -change[senders], change[receivers]
    coords = network.coords
    assert coords is not None
    origin, destination = coords[senders], coords[receivers]
    s, r = senders.size, receivers.size
    k_take, k_send = min(32, r), min(32, s)
    _, near_take = cKDTree(unit_vectors(destination)).query(unit_vectors(origin), k=k_take)
    _, near_send = cKDTree(unit_vectors(origin)).query(unit_vectors(destination), k=k_send)
    lf_rows, lf_cols, _ = plan_module._largest_first(supply, demand, 0.0)
    rows = np.concatenate([np.repeat(np.arange(s), k_take), np.ravel(near_send), lf_rows])
    cols = np.concatenate([np.ravel(near_take), np.repeat(np.arange(r), k_send), lf_cols])
    keys = np.unique(rows.astype(np.int64) * r + cols.astype(np.int64))
    rows, cols = keys // r, keys % r
    cost = plan_module.haversine_km(origin[rows], destination[cols])
    matrix = scipy.sparse.coo_array((cost, (rows, cols)), shape=(s, r))
    flows = import_pot().emd(supply, demand, matrix, numItermax=10**9).tocoo()
    return float(
        np.dot(flows.data, plan_module.haversine_km(origin[flows.row], destination[flows.col]))
    )


#: CPU seconds of the last :func:`_timed_once` call (this process; on a shared machine the wall
#: time also holds the waits for a core, the CPU time does not).
_LAST_CPU = [0.0]


def _timed_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    _LAST_CPU[0] = time.process_time() - cpu
    return time.perf_counter() - start, value


def bench_large_plans(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The exact sparse plan against the dense exact path and the old sparse path."""
    import_pot()  # every path below uses POT: its import is timed by part 3, not here
    rows = []
    for n in args.large_plan_sizes:
        network = generate_network(n, seed=args.seed)
        allocation = allocate(network, "qp")
        change = allocation - network.current
        s, r = int(np.sum(change < 0)), int(np.sum(change > 0))
        repeats = 3 if n <= 10_000 else 1
        row: dict[str, Any] = {"n": n, "senders": s, "receivers": r, "repeats": repeats}
        times, cpus, result = [], [], None
        for _ in range(repeats):
            elapsed, result = _timed_once(
                partial(plan, network, allocation, method="sparse-transport")
            )
            times.append(elapsed)
            cpus.append(_LAST_CPU[0])
        assert result is not None
        row.update(
            sparse_s=statistics.median(times),
            sparse_min_s=min(times),
            sparse_cpu_s=statistics.median(cpus),
            distance_km=result.total_distance_km,
            gap_km=result.optimality_gap_km,
            transfers=len(result),
            moved=result.total_moved,
        )
        if s * r <= args.dense_max_cells:
            times, cpus = [], []
            for _ in range(repeats):
                with mock.patch.object(plan_module, "DENSE_TRANSPORT_CELLS", s * r):
                    elapsed, dense = _timed_once(partial(plan, network, allocation))
                times.append(elapsed)
                cpus.append(_LAST_CPU[0])
            row.update(
                dense_s=statistics.median(times),
                dense_cpu_s=statistics.median(cpus),
                dense_km=dense.total_distance_km,
                sparse_minus_dense_rel=(result.total_distance_km - dense.total_distance_km)
                / dense.total_distance_km,
            )
        else:
            row.update(dense_s=None, dense_cpu_s=None, dense_km=None, sparse_minus_dense_rel=None)
        times, cpus = [], []
        for _ in range(repeats):
            elapsed, old_km = _timed_once(partial(old_sparse_plan, network, allocation))
            times.append(elapsed)
            cpus.append(_LAST_CPU[0])
        row.update(
            old_sparse_s=statistics.median(times),
            old_sparse_cpu_s=statistics.median(cpus),
            old_sparse_km=old_km,
            old_sparse_excess_rel=(old_km - result.total_distance_km) / result.total_distance_km,
        )
        rows.append(row)
        dense_text = "-" if row["dense_s"] is None else f"{row['dense_s']:.2f} s"
        print(
            f"large plan n={n:,}: sparse {row['sparse_s']:.2f} s, dense {dense_text}, "
            f"old sparse {row['old_sparse_s']:.2f} s",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------- output
def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    ms = 1e3 * seconds
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _percent(share: float) -> str:
    pct = 100 * share
    return f"{pct:.1f}%" if 0 < pct < 1 else f"{pct:.0f}%"


def strategy_table(report: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    rows = report["strategies"]
    pct = 100 * report["meta"]["budget_fraction"]
    headers = [
        "n",
        "strategy",
        "integer (ms)",
        "continuous (ms)",
        f"budget {pct:g}%, integer (ms)",
        f"budget {pct:g}%, continuous (ms)",
        "ns/hospital (cont.)",
    ]

    def find(n: int, strategy: str, integer: bool, budgeted: bool) -> dict[str, Any] | None:
        for r in rows:
            if (
                r["n"] == n
                and r["strategy"] == strategy
                and r["integer"] == integer
                and (r["transfer_budget"] is not None) == budgeted
            ):
                return r
        return None

    table = []
    for n in sorted({r["n"] for r in rows}):
        for strategy in STRATEGIES:
            cells = [find(n, strategy, i, b) for b in (False, True) for i in (True, False)]
            cont = cells[1]
            table.append(
                [
                    f"{n:,}",
                    strategy,
                    *[_ms(c["median_s"]) if c else "" for c in cells],
                    f"{1e9 * cont['median_s'] / n:.0f}" if cont else "",
                ]
            )
    title = "Strategies: median time per allocate() call"
    return title, headers, table


def exact_table(report: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    headers = [
        "n",
        "case",
        "at min.",
        "marra (ms)",
        "water_fill only (ms)",
        "cvxpy solver",
        "cvxpy build+solve (ms)",
        "cvxpy re-solve (ms)",
        "cvxpy solver only (ms)",
        "ratio",
        "ratio, re-solve",
        "ratio, solver only",
        "objective gap (rel.)",
    ]
    cvxpy_rows = {(r["n"], r["case"]): r for r in report["cvxpy"]}

    def ratio(value: float | None) -> str:
        return "" if value is None else f"{value:.0f}x"

    table = []
    for exact in report["exact"]:
        r = cvxpy_rows.get((exact["n"], exact["case"]))
        row = [
            f"{exact['n']:,}",
            exact["case"],
            _percent(exact["at_minimum"]),
            _ms(exact["marra_median_s"]),
            _ms(exact["water_fill_median_s"]),
        ]
        if r is None:
            row += [""] * 8
        else:
            row += [
                r["solver"],
                _ms(r["total_median_s"]),
                _ms(r["resolve_median_s"]),
                _ms(r["solve_median_s"]),
                ratio(r["ratio_total"]),
                ratio(r["ratio_resolve"]),
                ratio(r["ratio_solve"]),
                f"{r['objective_gap_rel']:.0e}",
            ]
        table.append(row)
    title = "Exact optima (continuous, no budget): marra against cvxpy (ratio = cvxpy / marra)"
    if report["cvxpy_note"]:
        title += f" -- {report['cvxpy_note']}"
    return title, headers, table


def plan_table(report: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    headers = ["n", "method", "senders x receivers", "transfers", "moved", "staff-km", "ms"]
    table = [
        [
            f"{r['n']:,}",
            r["method"],
            f"{r['senders']} x {r['receivers']}",
            str(r["transfers"]),
            f"{r['moved']:.0f}",
            "" if r["distance_km"] is None else f"{r['distance_km']:,.0f}",
            _ms(r["median_s"]),
        ]
        for r in report["plan"]["rows"]
    ]
    imported = report["plan"]["pot_import_s"]
    title = "Transfer plans for the integer QP allocation"
    if imported is not None:
        title += f" (first transport call also imported POT: +{imported:.2f} s)"
    elif report["plan"]["pot_preloaded"]:
        title += " (POT was already imported)"
    return title, headers, table


def large_plan_table(report: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    headers = [
        "n",
        "senders x receivers",
        "sparse exact (s)",
        "cpu (s)",
        "staff-km",
        "certified gap (km)",
        "dense exact (s / cpu)",
        "sparse - dense",
        "dense / sparse (cpu)",
        "old sparse (s / cpu)",
        "old sparse excess",
        "old sparse / sparse (cpu)",
    ]
    table = []
    for r in report.get("large_plans", []):
        dense = r["dense_s"]
        table.append(
            [
                f"{r['n']:,}",
                f"{r['senders']:,} x {r['receivers']:,}",
                f"{r['sparse_s']:.2f}",
                f"{r['sparse_cpu_s']:.2f}",
                f"{r['distance_km']:,.1f}",
                f"{r['gap_km']:.2g}",
                "" if dense is None else f"{dense:.2f} / {r['dense_cpu_s']:.2f}",
                "" if dense is None else f"{r['sparse_minus_dense_rel']:.1e}",
                "" if dense is None else f"{r['dense_cpu_s'] / r['sparse_cpu_s']:.2f}x",
                f"{r['old_sparse_s']:.2f} / {r['old_sparse_cpu_s']:.2f}",
                f"+{100 * r['old_sparse_excess_rel']:.2f}%",
                f"{r['old_sparse_cpu_s'] / r['sparse_cpu_s']:.2f}x",
            ]
        )
    return "Exact transfer plans at scale (integer QP allocation, with coordinates)", headers, table


def markdown_table(headers: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def print_tables(report: dict[str, Any], *, markdown: bool, only_large: bool = False) -> None:
    tables = [] if only_large else [strategy_table(report), exact_table(report), plan_table(report)]
    tables.append(large_plan_table(report))
    if markdown:
        for title, headers, table in tables:
            print(f"\n{title}\n")
            print(markdown_table(headers, table))
        print()
    try:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=None if sys.stdout.isatty() else 170)  # full width in logs
        for title, headers, table in tables:
            rich_table = Table(title=title)
            for header in headers:
                rich_table.add_column(header, justify="right")
            for row in table:
                rich_table.add_row(*row)
            console.print(rich_table)
    except ImportError:  # pragma: no cover - rich is a dependency, plain text as a fallback
        for title, headers, table in tables:
            print(title)
            print(markdown_table(headers, table))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _sizes(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="150,1000,10000,100000,1000000", help="comma-separated n"
    )
    parser.add_argument("--max-n", type=int, default=None, help="drop sizes above this")
    parser.add_argument("--cvxpy-max-n", type=int, default=10_000, help="largest n for cvxpy")
    parser.add_argument(
        "--resolve-max-n",
        type=int,
        default=None,
        help="largest n for the parametrised cvxpy re-solve (default: 10,000; 1,000 with --quick)",
    )
    parser.add_argument(
        "--scarce-fraction",
        type=float,
        default=0.75,
        help="staff of the scarce network, as a fraction of the targets' sum",
    )
    parser.add_argument("--plan-sizes", default="150,1000", help="comma-separated n for plans")
    parser.add_argument(
        "--large-plan-sizes",
        default="1000,10000,100000",
        help="comma-separated n for the exact plans at scale (part 4)",
    )
    parser.add_argument(
        "--dense-max-cells",
        type=int,
        default=30_000_000,
        help="largest sender x receiver count solved densely for comparison (8 bytes a pair)",
    )
    parser.add_argument(
        "--only-large-plans",
        action="store_true",
        help="run part 4 alone and merge it into the JSON at --out",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats per measurement (default: 21 at n <= "
        "1,000, 11 at 10,000, 5 at 100,000, 3 above; cvxpy 15 / 7)",
    )
    parser.add_argument("--budget-fraction", type=float, default=0.05, help="of total staff")
    parser.add_argument("--lean-from", type=int, default=100_000, help="no names/coords from n")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cvxpy", action="store_true", help="skip the cvxpy comparison")
    parser.add_argument("--quick", action="store_true", help="n <= 10,000, fewer repeats")
    parser.add_argument("--out", default="benchmarks/results/strategies.json")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats: must be >= 1")
    sizes = _sizes(args.sizes)
    args.plan_sizes = _sizes(args.plan_sizes)
    args.large_plan_sizes = _sizes(args.large_plan_sizes)
    if args.quick:
        sizes = [n for n in sizes if n <= 10_000]
        args.large_plan_sizes = [n for n in args.large_plan_sizes if n <= 10_000]
    if args.resolve_max_n is None:
        args.resolve_max_n = 1_000 if args.quick else 10_000
    if args.max_n is not None:
        sizes = [n for n in sizes if n <= args.max_n]
        args.plan_sizes = [n for n in args.plan_sizes if n <= args.max_n]
        args.large_plan_sizes = [n for n in args.large_plan_sizes if n <= args.max_n]
    started = time.perf_counter()
    load_before = os.getloadavg()
    if args.only_large_plans:
        return _only_large_plans(args, argv, started, load_before)

    # transfer plans first, so that the first transport call pays POT's import in full
    plans = bench_plans(args)
    print(f"plans: done after {time.perf_counter() - started:.1f} s", flush=True)
    large_plans = bench_large_plans(args)
    print(f"plans at scale: done after {time.perf_counter() - started:.1f} s", flush=True)

    cp, cvxpy_note = import_cvxpy(args)
    strategy_rows: list[dict[str, Any]] = []
    exact_rows: list[dict[str, Any]] = []
    cvxpy_rows: list[dict[str, Any]] = []
    networks_s: dict[str, float] = {}
    for n in sizes:
        start = time.perf_counter()
        network = make_network(n, args)
        networks_s[str(n)] = time.perf_counter() - start
        strategy_rows += bench_strategies(n, network, args)
        networks = {False: network, True: scarce_network(network, args.scarce_fraction)}
        exact, compared = bench_exact(n, networks, cp, args)
        exact_rows += exact
        cvxpy_rows += compared
        print(f"n={n:,}: done after {time.perf_counter() - started:.1f} s", flush=True)

    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cvxpy": None if cp is None else cp.__version__,
        "pot": _version("pot"),
        "osqp": _version("osqp"),
        "clarabel": _version("clarabel"),
        "marra": _version("marra"),
        "git_commit": _git_commit(),
        "sizes": sizes,
        "plan_sizes": args.plan_sizes,
        "large_plan_sizes": args.large_plan_sizes,
        "dense_max_cells": args.dense_max_cells,
        "cvxpy_max_n": args.cvxpy_max_n,
        "resolve_max_n": args.resolve_max_n,
        "scarce_fraction": args.scarce_fraction,
        "cases": [vars(case) for case in CASES],
        "repeats": {str(n): repeats_for(n, args) for n in sizes},
        "cvxpy_repeats": {
            str(n): cvxpy_repeats_for(n, args) for n in sizes if n <= args.cvxpy_max_n
        },
        "budget_fraction": args.budget_fraction,
        "lean_from": args.lean_from,
        "seed": args.seed,
        "quick": args.quick,
        "generate_network_s": networks_s,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "elapsed_s": time.perf_counter() - started,
    }
    report = {
        "meta": meta,
        "strategies": strategy_rows,
        "exact": exact_rows,
        "cvxpy": cvxpy_rows,
        "cvxpy_note": cvxpy_note,
        "plan": plans,
        "large_plans": large_plans,
    }
    print_tables(report, markdown=args.markdown)
    if cvxpy_rows:
        gap = max(abs(r["objective_gap_rel"]) for r in cvxpy_rows)
        print(f"largest relative objective gap, cvxpy against marra: {gap:.1e}")
    elif cvxpy_note:
        print(cvxpy_note)
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({meta['elapsed_s']:.0f} s)")
    return report


def _only_large_plans(
    args: argparse.Namespace,
    argv: list[str] | None,
    started: float,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    """Part 4 alone; its rows and settings replace those in the JSON at ``--out`` (kept
    otherwise), so the big plans can be rerun without the hour of the other parts."""
    large_plans = bench_large_plans(args)
    out = Path(args.out)
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    report["large_plans"] = large_plans
    report["large_plans_meta"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": _git_commit(),
        "pot": _version("pot"),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpu_count": os.cpu_count(),
        "large_plan_sizes": args.large_plan_sizes,
        "dense_max_cells": args.dense_max_cells,
        "seed": args.seed,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "elapsed_s": time.perf_counter() - started,
    }
    print_tables(report, markdown=args.markdown, only_large=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['large_plans_meta']['elapsed_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
