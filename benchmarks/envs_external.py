"""Throughput of the ``lbf`` and ``rware`` adapters against the package stepped directly.

For each preset this measures environment steps per second (one step of one copy = one env-step;
agent-steps are that times the number of agents) of:

- ``direct``: one package instance (``gymnasium.make(id).unwrapped``, or the constructor for
  ``lbf-2``) stepped in a plain loop with precomputed uniformly random actions, reset when it
  says ``done`` -- the peer every ratio is quoted against;
- the adapter (``marra.envs.make``, ``autoreset=True``, ``masked_action="noop"`` so that both
  sides step exactly the same random actions) with 1, 2, 4 and 16 copies in this process
  (``workers=0``) and with 2, 4 and 16 copies stepped by two processes (``workers=2``: this one
  steps the first block while one worker process steps the other).

Only ``step`` calls are timed (auto-resets included, as in the direct loop); each figure is the
best of ``--repeats`` runs because the machine may be shared (the load average is recorded).
Before and after the measurements a probe times a pure-Python loop alone and in two processes
at once: the parallelism it finds (2.0 on two free cores) is the ceiling of any worker speed-up
in the same run. The columns: env-steps/s, the ratio to ``direct``, for two-process rows the
ratio to the same number of copies in this process alone (the parallel speed-up; 2.0 is linear
on two cores),
and the CPU time of the parent plus its workers per env-step (Linux ``/proc``), which shows the
adapter's overhead even when a shared machine's load distorts the wall-clock figures.

Heavy imports happen inside the functions: worker processes re-import this script as their
``__main__`` (Python's spawn/forkserver rule), and should not pay for torch.

Usage::

    python benchmarks/envs_external.py              # lbf-1 and rware-1
    python benchmarks/envs_external.py --all        # also lbf-2 and rware-2
    python benchmarks/envs_external.py --quick      # few steps (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

#: (copies, workers) of the adapter rows; workers=0 is in-process stepping, workers=2 this
#: process and one worker process
ADAPTER_CONFIGS = ((1, 0), (2, 0), (2, 2), (4, 0), (4, 2), (16, 0), (16, 2))
QUICK_CONFIGS = ((2, 0), (2, 2))


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` from ``/proc`` (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy(iterations: int) -> float:
    total = 0
    for i in range(iterations):
        total += i
    return float(total)


def _busy_child(iterations: int, go: Any, out: Any) -> None:
    go.wait()
    start = time.perf_counter()
    _busy(iterations)
    out.put((start, time.perf_counter()))


def parallelism_probe(iterations: int = 20_000_000) -> dict[str, float]:
    """How many cores two CPU-bound processes really get here: a pure-Python loop timed alone,
    then the same loop in two processes at once (``CLOCK_MONOTONIC`` is shared, so the span is
    from the first start to the last end). 2.0 on an idle two-core machine; the ceiling of any
    worker speed-up in the same run."""
    import multiprocessing

    start = time.perf_counter()
    _busy(iterations)
    alone = time.perf_counter() - start
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    children = [context.Process(target=_busy_child, args=(iterations, go, out)) for _ in range(2)]
    for child in children:
        child.start()
    time.sleep(0.5)  # let both interpreters start before the loops
    go.set()
    spans = [out.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    together = max(end for _, end in spans) - min(begin for begin, _ in spans)
    return {"alone_s": alone, "two_at_once_s": together, "parallelism": 2 * alone / together}


def _direct_instance(family: str, preset: str) -> Any:
    import gymnasium

    from marra.envs.external import LBF_2_KWARGS, PRESETS

    if preset == "lbf-2":
        from lbforaging.foraging import ForagingEnv

        return ForagingEnv(**LBF_2_KWARGS)
    __import__({"lbf": "lbforaging", "rware": "rware"}[family])
    return gymnasium.make(PRESETS[preset].env_id).unwrapped


def time_direct(family: str, preset: str, steps: int, repeats: int) -> dict[str, Any]:
    env = _direct_instance(family, preset)
    n = len(env.action_space)
    n_actions = int(env.action_space[0].n)
    actions = np.random.default_rng(0).integers(0, n_actions, size=(steps, n)).tolist()
    env.reset(seed=0)
    best, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        env.reset(seed=0)
        start, start_cpu = time.perf_counter(), time.process_time()
        for row in actions:
            _, _, done, _, _ = env.step(row)
            if done:
                env.reset()
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return {
        "preset": preset,
        "method": "direct",
        "copies": 1,
        "workers": None,
        "agents": n,
        "steps": steps,
        "seconds": best,
        "env_steps_per_s": steps / best,
        "agent_steps_per_s": steps * n / best,
        "cpu_us_per_env_step": 1e6 * cpu / steps,
    }


def time_adapter(
    family: str, preset: str, copies: int, workers: int, steps: int, repeats: int
) -> dict[str, Any]:
    import torch

    import marra.envs

    env = marra.envs.make(
        family, preset=preset, num_envs=copies, workers=workers, autoreset=True,
        masked_action="noop", seed=0,
    )  # fmt: skip
    try:
        n, n_actions = env.num_agents, int(env.spec.action.n)
        rng = np.random.default_rng(0)
        actions = torch.as_tensor(rng.integers(0, n_actions, size=(steps, copies, n)))
        pids = [p.pid for p in getattr(env._backend, "processes", [])]
        env.reset(seed=0)
        env.step(actions[0])  # warm-up (first pipe round trip)
        best, cpu = float("inf"), float("inf")
        for _ in range(repeats):
            env.reset(seed=0)
            workers_cpu = sum(_process_cpu_seconds(pid) for pid in pids)
            start, start_cpu = time.perf_counter(), time.process_time()
            for k in range(steps):
                env.step(actions[k])
            best = min(best, time.perf_counter() - start)
            used = time.process_time() - start_cpu
            used += sum(_process_cpu_seconds(pid) for pid in pids) - workers_cpu
            cpu = min(cpu, used)
    finally:
        env.close()
    return {
        "preset": preset,
        "method": "adapter",
        "copies": copies,
        "workers": workers,
        "agents": n,
        "steps": steps,
        "seconds": best,
        "env_steps_per_s": copies * steps / best,
        "agent_steps_per_s": copies * steps * n / best,
        "cpu_us_per_env_step": 1e6 * cpu / (copies * steps),
    }


def _measure(family: str, presets: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    steps = args.steps if args.steps else (args.lbf_steps if family == "lbf" else args.rware_steps)
    for preset in presets:
        direct = time_direct(family, preset, steps, args.repeats)
        direct["ratio_to_direct"] = 1.0
        rows.append(direct)
        by_config: dict[tuple[int, int], dict[str, Any]] = {}
        for copies, workers in QUICK_CONFIGS if args.quick else ADAPTER_CONFIGS:
            row = time_adapter(family, preset, copies, workers, steps, args.repeats)
            row["ratio_to_direct"] = row["env_steps_per_s"] / direct["env_steps_per_s"]
            alone = by_config.get((copies, 0))
            if workers > 1 and alone is not None:
                row["speedup_vs_in_process"] = row["env_steps_per_s"] / alone["env_steps_per_s"]
            by_config[(copies, workers)] = row
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def lbf(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``lbf`` adapter (presets ``lbf-1``, and ``lbf-2`` with ``--all``)."""
    return _measure("lbf", ["lbf-1", "lbf-2"] if args.all else ["lbf-1"], args)


def rware(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``rware`` adapter (presets ``rware-1``, and ``rware-2`` with ``--all``)."""
    return _measure("rware", ["rware-1", "rware-2"] if args.all else ["rware-1"], args)


def _line(row: dict[str, Any]) -> str:
    where = "direct" if row["method"] == "direct" else f"{row['copies']} copies"
    if row["method"] == "adapter":
        where += ", in-process" if row["workers"] <= 1 else f", {row['workers']} processes"
    speedup = row.get("speedup_vs_in_process")
    return (
        f"{row['preset']:8s} {where:26s} {row['env_steps_per_s']:10,.0f} env-steps/s  "
        f"x{row['ratio_to_direct']:.2f} direct  {row['cpu_us_per_env_step']:6.0f} cpu-us/step"
        + (f"  x{speedup:.2f} vs in-process" if speedup else "")
    )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    headers = ["preset", "stepping", "copies", "env-steps/s", "agent-steps/s", "vs direct",
               "vs in-process", "CPU µs / env-step"]  # fmt: skip
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if row["method"] == "direct":
            stepping = "package directly"
        elif row["workers"] <= 1:
            stepping = "adapter, in-process"
        else:
            stepping = f"adapter, {row['workers']} processes"
        speedup = row.get("speedup_vs_in_process")
        cells = [
            row["preset"], stepping, str(row["copies"]), f"{row['env_steps_per_s']:,.0f}",
            f"{row['agent_steps_per_s']:,.0f}", f"{row['ratio_to_direct']:.2f}",
            f"{speedup:.2f}" if speedup else "", f"{row['cpu_us_per_env_step']:,.0f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lbf-steps", type=int, default=1000, help="steps per lbf measurement")
    parser.add_argument("--rware-steps", type=int, default=500, help="steps per rware one")
    parser.add_argument("--steps", type=int, default=0, help="override both step counts")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--all", action="store_true", help="also lbf-2 and rware-2")
    parser.add_argument("--quick", action="store_true", help="40 steps, one run, 3 configs")
    parser.add_argument("--out", default="benchmarks/results/envs_external.json")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 40, 1
    import lbforaging
    import rware as rware_package
    import torch

    from marra._io import atomic_write_text

    warnings.simplefilter("ignore", UserWarning)  # the packages' gymnasium space advice
    torch.set_num_threads(1)
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    probe = parallelism_probe(2_000_000 if args.quick else 20_000_000)
    print(f"two CPU-bound processes run at {probe['parallelism']:.2f}x one (2.00: two free cores)")
    rows = lbf(args) + rware(args)
    probe_after = parallelism_probe(2_000_000 if args.quick else 20_000_000)
    meta = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "lbforaging": getattr(lbforaging, "__version__", _version("lbforaging")),
        "rware": getattr(rware_package, "__version__", _version("rware")),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_sha(),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "repeats": args.repeats,
        "parallelism_before": probe,
        "parallelism_after": probe_after,
    }
    print(f"after: two CPU-bound processes at {probe_after['parallelism']:.2f}x one")
    if args.markdown:
        print()
        print(markdown_table(rows))
    report = {"meta": meta, "results": rows}
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return report


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
