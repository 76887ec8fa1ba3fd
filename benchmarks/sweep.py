"""Sweep backends on one grid: a local pool of 1 and 2 workers, and Ray on a local 2-CPU Ray.

The grid: ``roles`` (4 agents, 2 roles, horizon 10) and ``hospital`` (10 hospitals, shifting
targets, horizon 10) x 3 methods (``ippo-id`` and ``mappo-full`` trained for ``--steps``
env-steps, and the ``random`` baseline) x 4 seeds = 24 cells, run into a fresh folder by each
backend in turn, in one session.

Measured per backend: the wall time of :func:`marra.experiments.sweep.run_sweep` (pool start-up
included; for Ray, ``ray.init`` is timed apart), the speed-up against one local worker, and the
overhead per cell: ``(wall x workers - sum of the cells' own run times) / cells``, the time a
worker slot spent on anything but running a cell (process start-up and imports, scheduling,
result transfer, idle slots at the end). The sum of the cells' CPU seconds shows whether the
workers slowed each other's computation, and "cores used" (that sum over the wall time) how much
CPU the machine granted: on a busy machine the wall time measures the others' load as much as
the backend. A second grid of 24 empty cells (the ``random`` baseline on a one-step,
two-agent ``roles``, one episode each) gives each backend's cost per cell with no work in it,
start-up included. The three training results.csv files must be byte-identical.

Usage::

    python benchmarks/sweep.py                  # the 24-cell grid (a few minutes)
    python benchmarks/sweep.py --quick          # 2 seeds, 200 steps: a smoke run

Writes ``benchmarks/results/sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def spec_text(steps: int, seeds: int) -> str:
    return f"""
title = "sweep benchmark"
seeds = {list(range(1, seeds + 1))}
episodes = 8

[[envs]]
name = "roles"
options = {{ num_agents = 4, num_roles = 2, horizon = 10 }}

[[envs]]
name = "hospital"
options = {{ n_hospitals = 10, horizon = 10, scenario = "shifting", transfer_budget = 10.0 }}

[[methods]]
name = "ippo-id"
algo = "ippo"
sharing = "id"
steps = {steps}
num_envs = 8

[[methods]]
name = "mappo-full"
algo = "mappo"
sharing = "full"
steps = {steps}
num_envs = 8

[[methods]]
name = "random"
baseline = "random"
"""


def noop_text(cells: int) -> str:
    return f"""
seeds = {list(range(1, cells + 1))}
episodes = 1
[[envs]]
name = "roles"
options = {{ num_agents = 2, num_roles = 2, horizon = 1 }}
[[methods]]
name = "random"
baseline = "random"
"""


def _autogroup() -> str | None:
    """Linux's session autogroups: on, the scheduler shares CPU between sessions, so a local
    pool (one session) gets one session's share of a busy machine however many workers it has,
    while Ray's workers (started by its own daemon) form another session."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return None


def load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_backend(name: str, backend: str, workers: int, text: str, scratch: Path) -> dict[str, Any]:
    from marra.experiments.sweep import load_spec, run_sweep

    folder = scratch / name
    folder.mkdir()
    spec_path = folder / "spec.toml"
    spec_path.write_text(text, encoding="utf-8")
    spec = load_spec(spec_path)
    init_s = 0.0
    ray = None
    if backend == "ray":
        import logging

        import ray

        tick = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, object_store_memory=256 * 2**20)  # fmt: skip
        init_s = time.perf_counter() - tick
    load_before = load()
    try:
        (folder / "noop.toml").write_text(noop_text(24), encoding="utf-8")
        tick = time.perf_counter()
        run_sweep(load_spec(folder / "noop.toml"), folder / "noop", backend=backend,
                  workers=workers, progress=False)  # fmt: skip
        noop_s = time.perf_counter() - tick
        tick = time.perf_counter()
        outcome = run_sweep(spec, folder / "out", backend=backend, workers=workers, progress=False)
        wall_s = time.perf_counter() - tick
    finally:
        if ray is not None:
            ray.shutdown()
    manifest = json.loads((folder / "out" / "manifest.json").read_text(encoding="utf-8"))
    cell_s = sum(c.get("wall_s", 0.0) for c in manifest["cells"].values())
    cpu_s = sum(c.get("cpu_s", 0.0) for c in manifest["cells"].values())
    cells = len(manifest["cells"])
    return {
        "name": name,
        "backend": backend,
        "workers": workers,
        "cells": cells,
        "failed": len(outcome.failures),
        "wall_s": wall_s,
        "init_s": init_s,
        "cell_seconds_sum": cell_s,
        "cell_cpu_seconds_sum": cpu_s,
        "overhead_per_cell_s": (wall_s * workers - cell_s) / cells,
        "cores_used": cpu_s / wall_s,
        "noop_wall_s": noop_s,
        "noop_per_cell_s": noop_s / 24,
        "load_before": load_before,
        "load_after": load(),
        "results": (folder / "out" / "results.csv").read_text(encoding="utf-8"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | workers | cells | wall (s) | speed-up vs 1 worker | sum of cell times (s) | "
        "sum of cell CPU (s) | cores used | overhead per cell (s) | Ray start (s) | "
        "empty cell (s) | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['cells']} | {r['wall_s']:.1f} | "
            f"{r['speedup']:.2f}x | {r['cell_seconds_sum']:.1f} | "
            f"{r['cell_cpu_seconds_sum']:.1f} | {r['cores_used']:.2f} | "
            f"{r['overhead_per_cell_s']:.2f} | {r['init_s']:.1f} | {r['noop_per_cell_s']:.2f} | "
            f"{r['load_before'][0] if r['load_before'] else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="env-steps per learner cell")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 200 steps")
    parser.add_argument("--no-ray", action="store_true", help="local backends only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds = 200, 2
    text = spec_text(args.steps, args.seeds)
    plan: list[tuple[str, str, int]] = [("local-1", "local", 1), ("local-2", "local", 2)]
    if not args.no_ray:
        try:
            import ray  # noqa: F401

            plan.append(("ray-2", "ray", 2))
        except ImportError:
            print("ray is not installed: measuring the local backends only", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix="marra-sweep-bench-"))
    rows = []
    try:
        for name, backend, workers in plan:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(run_backend(name, backend, workers, text, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup"] = base / row["wall_s"]
    identical = all(r["results"] == rows[0]["results"] for r in rows)
    for row in rows:
        del row["results"]
    import torch

    import marra

    report = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "marra": marra.__version__,
            "torch": torch.__version__,
            "steps_per_learner_cell": args.steps,
            "seeds": args.seeds,
            "grid": "2 envs x 3 methods x seeds",
            "sched_autogroup": _autogroup(),
        },
        "runs": rows,
        "identical_results": identical,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(rows))
    print(f"results.csv identical on every backend: {'yes' if identical else 'NO'}")
    print(f"wrote {args.out}")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
