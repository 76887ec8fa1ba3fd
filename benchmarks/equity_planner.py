"""Speed and optimality of the QP planner with an equity bound (``recommend --max-mre``).

Three measurements:

1. **Solve time** of :func:`marra.hospital.strategies.allocate_within_mre` at every ``n`` of
   ``--sizes`` (150, 10,000, 100,000 hospitals from :func:`generate_network`, seed 0, no names
   or coordinates) under a binding transfer budget of ``--budget-fraction`` (2%) of the staff and
   the bound ``EPS = --bound-fraction`` (0.85) times the plain QP's own normalised MRE, so the
   bound is active. Whole staff (the command's default) at every ``n``; fractional staff up to
   ``--continuous-max-n``. Wall and CPU seconds of the whole call (best of ``--repeats``; one run
   from ``--single-from`` hospitals on), the number of Clarabel solves and the seconds per solve,
   the plain QP's time (water-filling) as the floor, and the price of equity.
2. **The peer, a modelling layer**: the same first convex subproblem (the restriction linearised
   at the plain plan) written in cvxpy and solved by the same Clarabel, up to
   ``--cvxpy-max-n``: the whole call (building and canonicalising the problem, then solving) and
   the solver's own time, against marra's direct call on the same problem; the objectives must
   agree (relative gap).
3. **Optimality on tiny networks**: ``--study`` random 4-hospital networks (seeded), the bound at
   70% of the plain plan's MRE, against the global optimum by exhaustive enumeration of the 3^n
   excess regions in cvxpy (the oracle of ``tests/test_equity_planner.py``, imported from it):
   how often the planner reaches the global optimum, its worst gap, and whether it names the
   right smallest bound when the bound is out of reach.

Usage::

    python benchmarks/equity_planner.py            # the full run (about 10 minutes on 2 cores)
    python benchmarks/equity_planner.py --quick    # a smoke run: 150 and 1,000 hospitals
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from marra._io import atomic_write_text
from marra.hospital.network import HospitalNetwork, generate_network
from marra.hospital.strategies import MREInfeasibleError, allocate, allocate_within_mre
from marra.hospital.strategies.equity import (
    _Counter,
    _Coverage,
    _region,
    _subproblem,
    mre_normalised,
)

ROOT = Path(__file__).resolve().parents[1]


def _timed(call: Any, repeats: int) -> tuple[Any, float, float]:
    """``(result, best wall seconds, best CPU seconds)`` over ``repeats`` calls."""
    wall = cpu = math.inf
    result = None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = call()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return result, wall, cpu


def _case(n: int, args: argparse.Namespace) -> tuple[HospitalNetwork, float]:
    network = generate_network(n, seed=0, names=False, coords=False)
    return network, float(round(args.budget_fraction * network.total))


def solve_times(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.sizes:
        network, budget = _case(n, args)
        repeats = 1 if n >= args.single_from else args.repeats
        for integer in (True, False):
            if not integer and n > args.continuous_max_n:
                continue
            plain, plain_s, _ = _timed(
                partial(allocate, network, "qp", transfer_budget=budget, integer=integer), repeats
            )
            plain_mre = mre_normalised(plain, network.target, args.tau)
            eps = args.bound_fraction * plain_mre
            solve = partial(
                allocate_within_mre,
                network,
                eps,
                tau=args.tau,
                transfer_budget=budget,
                integer=integer,
            )
            plan, wall, cpu = _timed(solve, repeats)
            row = {
                "n": n,
                "mode": "whole staff" if integer else "fractional",
                "transfer_budget": budget,
                "max_mre": eps,
                "repeats": repeats,
                "seconds": wall,
                "cpu_seconds": cpu,
                "solves": plan.solves,
                "seconds_per_solve": wall / max(plan.solves, 1),
                "plain_qp_seconds": plain_s,
                "method": plan.method,
                "mre_normalised_without_bound": plain_mre,
                "mre_normalised": plan.mre_normalised,
                "mae_without_bound": plan.mae_unconstrained,
                "mae": plan.mae,
                "squared_deviation_without_bound": plan.squared_deviation_unconstrained,
                "squared_deviation": plan.squared_deviation,
            }
            rows.append(row)
            print(
                f"  n={n:,} {row['mode']}: {wall:.2f} s ({plan.solves} solves), H/N "
                f"{plain_mre:.5f} -> {plan.mre_normalised:.5f}",
                flush=True,
            )
    return rows


def _cvxpy_restriction(network: HospitalNetwork, at: np.ndarray, eps: float, tau: float,
                       budget: float) -> tuple[float, float, float]:  # fmt: skip
    """The restriction linearised at ``at`` in cvxpy atoms: ``(objective, whole-call seconds,
    solver seconds)``."""
    import cvxpy as cp

    start = time.perf_counter()
    n, t, c, m = network.n, network.target, network.current, network.minimum
    x_at = at / t
    mu_at = x_at.mean()
    side = np.where(np.abs(x_at - mu_at) - tau * mu_at > 1e-12, np.sign(x_at - mu_at), 0.0)
    y, mu, linear = cp.Variable(n), cp.Variable(), cp.Variable()
    x = cp.multiply(1.0 / t, y)
    excess = cp.pos(cp.abs(x - mu) - tau * mu)
    # mu and the linearised mean excess as variables: written inline they would put every y
    # in every row (n^2 nonzeros), which costs cvxpy + Clarabel minutes at n = 1,000
    constraints = [mu == cp.sum(x) / n]
    constraints.append(linear == cp.sum(cp.multiply(side, x)) / n - mu * side.sum() / n
                       - tau * mu * np.abs(side).sum() / n)  # fmt: skip
    constraints += [y >= m, cp.sum(y) == c.sum(), cp.sum(cp.pos(excess - linear)) <= n * eps]
    constraints += [linear >= 0, cp.sum(cp.pos(y - c)) <= budget]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(y - t)), constraints)
    problem.solve(solver="CLARABEL")
    return float(problem.value), time.perf_counter() - start, problem.solver_stats.solve_time


def against_cvxpy(args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        import cvxpy  # noqa: F401
    except ImportError:
        print("  cvxpy is not installed: the comparison is skipped (pip install cvxpy)")
        return []
    rows = []
    for n in [n for n in args.sizes if n <= args.cvxpy_max_n]:
        network, budget = _case(n, args)
        plain = allocate(network, "qp", transfer_budget=budget, integer=False)
        eps = args.bound_fraction * mre_normalised(plain, network.target, args.tau)
        cov = _Coverage(network.target, args.tau)
        region = _region(network, plain, budget, False)
        ours = partial(
            _subproblem,
            region,
            cov,
            network.target,
            cov.pieces(plain),
            network.n * eps,
            "targets",
            _Counter(),
        )
        y, marra_s, _ = _timed(ours, 1)
        value, cvxpy_s, solver_s = _cvxpy_restriction(network, plain, eps, args.tau, budget)
        ours_value = float(((y - network.target) ** 2).sum())
        rows.append(
            {
                "n": n,
                "marra_seconds": marra_s,
                "cvxpy_seconds": cvxpy_s,
                "cvxpy_solver_seconds": solver_s,
                "ratio": cvxpy_s / marra_s,
                "relative_gap": abs(ours_value - value) / max(1.0, abs(value)),
            }
        )
        print(f"  n={n:,}: marra {marra_s:.2f} s, cvxpy {cvxpy_s:.2f} s", flush=True)
    return rows


def _oracle() -> Any:
    spec = importlib.util.spec_from_file_location(
        "test_equity_planner", ROOT / "tests" / "test_equity_planner.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def optimality_study(args: argparse.Namespace) -> dict[str, Any]:
    if args.study == 0:
        return {}
    try:
        oracle = _oracle()
    except ImportError as exc:
        print(f"  the study needs cvxpy and pytest ({exc}); skipped")
        return {}
    cases: list[dict[str, Any]] = []
    for seed in range(args.study):
        network = oracle.small_random_network(1000 + seed)
        plain = allocate(network, "qp", transfer_budget=3, integer=False)
        plain_mre = mre_normalised(plain, network.target, 0.1)
        if plain_mre == 0.0:
            cases.append({"seed": 1000 + seed, "kind": "plain plan already equitable"})
            continue
        eps = 0.7 * plain_mre
        exact = oracle.cvxpy_global_optimum(network, eps, 0.1, 3)
        case: dict[str, Any] = {"seed": 1000 + seed, "max_mre": eps, "global": exact}
        try:
            ours = allocate_within_mre(
                network, eps, tau=0.1, transfer_budget=3, integer=False
            ).squared_deviation
            case["ours"] = ours
            case["kind"] = "feasible, oracle infeasible" if math.isinf(exact) else "solved"
            if not math.isinf(exact):
                case["relative_gap"] = (ours - exact) / max(1.0, exact)
        except MREInfeasibleError as error:
            least = oracle.cvxpy_global_optimum(network, None, 0.1, 3)
            case.update(kind="infeasible", smallest=error.smallest, least=least)
            if not math.isinf(exact):
                case["kind"] = "missed (oracle feasible)"
        cases.append(case)
    solved = [c for c in cases if c["kind"] == "solved"]
    infeasible = [c for c in cases if c["kind"] == "infeasible"]
    gaps = [c["relative_gap"] for c in solved]
    for case in cases:  # JSON has no infinity: an infeasible oracle is null
        if case.get("global") == math.inf:
            case["global"] = None
    summary = {
        "networks": len(cases),
        "solved": len(solved),
        "global_optimum_reached": int(sum(g <= 1e-6 for g in gaps)),
        "worst_relative_gap": float(max(gaps, default=0.0)),
        "infeasible_agreed": len(infeasible),
        "smallest_within_0.1pct_of_global_least": int(
            sum(c["least"] <= c["smallest"] <= c["least"] * 1.001 + 1e-8 for c in infeasible)
        ),
        "missed": sum(c["kind"] == "missed (oracle feasible)" for c in cases),
        "already_equitable": sum(c["kind"] == "plain plan already equitable" for c in cases),
    }
    print(f"  {summary}")
    return {"summary": summary, "cases": cases}


def markdown_tables(report: dict[str, Any]) -> str:
    headers = ["n", "mode", "EPS", "H/N before -> after", "seconds", "CPU s", "solves",
               "s/solve", "plain qp (s)", "MAE without -> with",
               "sum (y-t)^2 without -> with"]  # fmt: skip
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for r in report["solve"]:
        cells = [
            f"{r['n']:,}",
            r["mode"],
            f"{r['max_mre']:.5f}",
            f"{r['mre_normalised_without_bound']:.5f} -> {r['mre_normalised']:.5f}",
            f"{r['seconds']:.2f}",
            f"{r['cpu_seconds']:.2f}",
            str(r["solves"]),
            f"{r['seconds_per_solve']:.2f}",
            f"{r['plain_qp_seconds']:.4f}",
            f"{r['mae_without_bound']:.3f} -> {r['mae']:.3f}",
            f"{r['squared_deviation_without_bound']:,.0f} -> {r['squared_deviation']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if report["cvxpy"]:
        lines += ["", "| n | marra (s) | cvxpy whole call (s) | cvxpy solver (s) | ratio | gap |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in report["cvxpy"]:
            lines.append(
                f"| {r['n']:,} | {r['marra_seconds']:.2f} | {r['cvxpy_seconds']:.2f} | "
                f"{r['cvxpy_solver_seconds']:.2f} | {r['ratio']:.1f} | {r['relative_gap']:.1e} |"
            )
    return "\n".join(lines)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=ROOT,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="150,10000,100000", help="comma-separated n")
    parser.add_argument("--budget-fraction", type=float, default=0.02)
    parser.add_argument("--bound-fraction", type=float, default=0.85)
    parser.add_argument("--tau", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many calls")
    parser.add_argument("--single-from", type=int, default=10_000, help="one call from this n")
    parser.add_argument("--continuous-max-n", type=int, default=10_000)
    parser.add_argument("--cvxpy-max-n", type=int, default=10_000)
    parser.add_argument("--study", type=int, default=40, help="tiny networks against the oracle")
    parser.add_argument("--quick", action="store_true", help="150 and 1,000 hospitals, 3 tiny")
    parser.add_argument("--out", default="benchmarks/results/equity_planner.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.study = "150,1000", 1, 3
    args.sizes = [int(v) for v in str(args.sizes).split(",") if v.strip()]
    import clarabel
    import scipy

    print("solve time", flush=True)
    solve = solve_times(args)
    print("against cvxpy (the first subproblem)", flush=True)
    peer = against_cvxpy(args)
    print("optimality on tiny networks", flush=True)
    study = optimality_study(args)
    meta = {
        "clarabel": clarabel.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_sha(),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "sizes": args.sizes,
        "budget_fraction": args.budget_fraction,
        "bound_fraction": args.bound_fraction,
        "tau": args.tau,
    }
    report = {"meta": meta, "solve": solve, "cvxpy": peer, "study": study}
    print(markdown_tables(report))
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
