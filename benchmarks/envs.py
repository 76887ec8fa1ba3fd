"""Throughput of marra's batched environments against their peers: one function per
environment, chosen with ``--env`` (a registry, :data:`BENCHMARKS`, so each environment adds
its own function).

``ride-hailing`` (city 2: 100 cells, 1,000 drivers): agent-steps per second (``num_envs * 100``
cell decisions per call of ``step``) with 1, 64 and 1,024 copies, through the full ``step`` of
the contract (guards, dispatch, trips, expiry, new orders, observations), in the default
configuration (sampled dispatch, slot features) and, at the largest number of copies, with
``dispatch="topk"`` and with ``slot_features=False``. Fixed random scores are drawn before the
clock starts; the first ``--warmup`` steps of the day are not timed (the order slots fill up in
them); each figure is the best of ``--repeats`` runs. The peer is the public DyPS simulator
(``tsinghua-fib-lab/DyPS``: ``simulator/`` and ``tools/create_envs.py``'s ``create_OD``) run
for one 144-step day in a subprocess of the same run, with the greedy rule choosing its orders
outside the timed calls, when ``--dyps-source`` names a folder holding that code (it needs
only numpy); without it, the issue's figure (9 s per day, 1,600 agent-steps/s) stands in and
the output says so. Rates are per wall-clock second and per CPU second of the measuring
process (with one thread the CPU-time figure is the robust one on a loaded machine).

Usage::

    python benchmarks/envs.py --env ride-hailing --dyps-source /tmp/dyps_public
    python benchmarks/envs.py --env ride-hailing --quick      # a smoke run: 1 and 16 copies
    python benchmarks/envs.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from marra._io import atomic_write_text
from marra.envs import make

RESULTS = Path(__file__).resolve().parent / "results"

#: environment name -> benchmark function (args -> report with "rows" and "meta")
BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def benchmark(name: str) -> Callable:
    def register(function: Callable) -> Callable:
        BENCHMARKS[name] = function
        return function

    return register


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _format_rate(value: float | None) -> str:
    if value is None:
        return ""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f}"


# --------------------------------------------------------------------------- ride-hailing
#: one day of the public simulator, greedy rule (highest price first, up to min(idle, 50)
#: drivers per cell, the public PPO agent's cap); only the simulator's calls are timed
PUBLIC_DAY = r"""
import json, sys, time
sys.path.insert(0, ".")
from tools.create_envs import create_OD, create_OD_36

city = sys.argv[1]
env, _, _, _, n = (create_OD if city == "2" else create_OD_36)()
wall = cpu = 0.0

def timed(call, *a, **k):
    global wall, cpu
    w, c = time.perf_counter(), time.process_time()
    out = call(*a, **k)
    wall += time.perf_counter() - w
    cpu += time.process_time() - c
    return out

_, _, order_states, order_idx, _, _ = timed(env.reset, mode="PPO2")
gmv = 0.0
for t in range(144):
    ids = []
    for i in range(n):
        real = [k for k, s in enumerate(order_states[i]) if s[4] < 0]
        real.sort(key=lambda k: -order_states[i][k][2])
        picks = real[: min(env.nodes[i].idle_driver_num, 50)] or [0]
        ids.append([order_idx[i][k] for k in picks])
    orders = timed(env.get_orders_by_id, ids)
    _, order_states, order_idx, _ = timed(env.step, orders, generate_order=1, mode="PPO2")
    gmv += env.gmv
print(json.dumps({"wall_seconds": wall, "cpu_seconds": cpu, "cells": n,
                  "gmv": 10.0 * float(gmv), "orr": float(env.order_response_rate)}))
"""

#: the issue's figure for the public simulator when it is not rerun
ISSUE_SECONDS_PER_DAY = 9.0


def _public_day(source: str | None, city: str) -> dict[str, Any]:
    if source is None:
        return {
            "source": "issue figure (not rerun)",
            "wall_seconds": ISSUE_SECONDS_PER_DAY,
            "cpu_seconds": None,
            "cells": 100,
        }
    folder = Path(source)
    if not (folder / "simulator" / "envs.py").is_file() or not (folder / "tools").is_dir():
        raise SystemExit(f"--dyps-source: {folder} holds no simulator/envs.py and tools/")
    completed = subprocess.run(
        [sys.executable, "-c", PUBLIC_DAY, city],
        cwd=folder,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if completed.returncode != 0:
        raise SystemExit(f"the public simulator failed:\n{completed.stderr[-2000:]}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    report["source"] = f"rerun in this session ({folder})"
    return report


def _time_ride_hailing(num_envs: int, options: dict[str, Any], args: argparse.Namespace) -> dict:
    env = make("ride-hailing", num_envs=num_envs, seed=0, device=args.device, city="2",
               **options)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    shape = (num_envs, env.num_agents, env.spec.action.dim)
    actions = [(4.0 * torch.rand(shape, generator=generator) - 2.0).to(args.device)
               for _ in range(4)]  # fmt: skip
    best_wall = best_cpu = reset_best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        env.reset(seed=0)
        _sync(args.device)
        reset_best = min(reset_best, time.perf_counter() - start)
        for k in range(args.warmup):
            env.step(actions[k % 4])
        _sync(args.device)
        wall, cpu = time.perf_counter(), time.process_time()
        for k in range(args.steps):
            env.step(actions[k % 4])
        _sync(args.device)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    agent_steps = num_envs * env.num_agents * args.steps
    return {
        "num_envs": num_envs,
        "options": options,
        "steps": args.steps,
        "step_ms": 1000.0 * best_wall / args.steps,
        "agent_steps_per_s": agent_steps / best_wall,
        "agent_steps_per_cpu_s": agent_steps / max(best_cpu, 1e-9),
        "reset_s": reset_best,
        "width": env.width,
    }


@benchmark("ride-hailing")
def ride_hailing(args: argparse.Namespace) -> dict[str, Any]:
    """City 2 at 1, 64 and 1,024 copies against one day of the public simulator."""
    copies = [1, 16] if args.quick else [1, 64, 1024]
    configs: list[tuple[int, dict[str, Any]]] = [(c, {}) for c in copies]
    configs += [(copies[-1], {"dispatch": "topk"}), (copies[-1], {"slot_features": False})]
    rows = []
    for num_envs, options in configs:
        row = _time_ride_hailing(num_envs, options, args)
        rows.append(row)
        print(f"  {num_envs:>5} copies {options or 'default'}: {row['step_ms']:.1f} ms/step",
              flush=True)  # fmt: skip
    peer = _public_day(args.dyps_source, "2")
    peer_rate = 144 * peer["cells"] / peer["wall_seconds"]
    peer_cpu_rate = None if peer["cpu_seconds"] is None else 144 * peer["cells"] / peer[
        "cpu_seconds"]  # fmt: skip
    peer.update(agent_steps_per_s=peer_rate, agent_steps_per_cpu_s=peer_cpu_rate)
    for row in rows:
        row["ratio"] = row["agent_steps_per_s"] / peer_rate
        row["cpu_ratio"] = (None if peer_cpu_rate is None
                            else row["agent_steps_per_cpu_s"] / peer_cpu_rate)  # fmt: skip
    return {"meta": _meta(args), "rows": rows, "peer": peer}


def _ride_hailing_table(report: dict[str, Any]) -> str:
    peer = report["peer"]
    lines = [
        "| copies | options | step (ms) | agent-steps/s | per CPU s | vs public (wall) "
        "| vs public (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "default"
        cpu_ratio = "" if row["cpu_ratio"] is None else f"{row['cpu_ratio']:,.0f}x"
        lines.append(
            f"| {row['num_envs']:,} | {options} | {row['step_ms']:.1f} | "
            f"{_format_rate(row['agent_steps_per_s'])} | "
            f"{_format_rate(row['agent_steps_per_cpu_s'])} | {row['ratio']:,.0f}x | {cpu_ratio} |"
        )
    cpu = "" if peer["cpu_seconds"] is None else f", {peer['cpu_seconds']:.2f} CPU s"
    lines.append(
        f"| public DyPS | one 144-step day, greedy | {1000 * peer['wall_seconds'] / 144:.1f} | "
        f"{_format_rate(peer['agent_steps_per_s'])} | "
        f"{_format_rate(peer['agent_steps_per_cpu_s'])} | 1x | |"
    )
    lines.append("")
    lines.append(f"public simulator: {peer['source']}: {peer['wall_seconds']:.2f} s per day{cpu}")
    return "\n".join(lines)


def _delegate(script: str, args: argparse.Namespace, quick_flags: list[str]) -> dict[str, Any]:
    """Run another environment's benchmark script (its own options and tables) in a
    subprocess of this run and return the JSON it writes."""
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="marra-envs-") as tmp:
        out = Path(tmp) / "report.json"
        command = [sys.executable, str(here / script), "--out", str(out)]
        command += quick_flags if args.quick else []
        subprocess.run(command, check=True, cwd=here.parent)
        report = json.loads(out.read_text())
    report.setdefault("meta", {})
    return report


@benchmark("vaccine")
def vaccine(args: argparse.Namespace) -> dict[str, Any]:
    """vaccine, 100 regions: env-steps/s at 1, 64 and 1,024 copies against one copy
    (benchmarks/envs_vaccine.py)."""
    return _delegate("envs_vaccine.py", args, ["--quick"])


@benchmark("lbf-rware")
def lbf_rware(args: argparse.Namespace) -> dict[str, Any]:
    """lbf and rware adapters with 1 and 2 worker processes against one package instance
    stepped directly (benchmarks/envs_external.py)."""
    return _delegate("envs_external.py", args, ["--quick"])


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {"ride-hailing": _ride_hailing_table}


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", choices=sorted(BENCHMARKS),
                        help="environment to benchmark (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few copies, steps")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 12)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (3)")
    parser.add_argument("--repeats", type=int, default=None, help="runs; the best counts (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dyps-source", default=None, help="folder with the public DyPS simulator/ and tools/"
    )
    parser.add_argument("--out-dir", default=str(RESULTS), help="where the JSON goes")
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 12)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, function in sorted(BENCHMARKS.items()):
            print(f"{name}: {(function.__doc__ or '').strip().splitlines()[0]}")
        return 0
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.env or sorted(BENCHMARKS):
        print(f"{name}:", flush=True)
        report = BENCHMARKS[name](args)
        report["meta"]["quick"] = bool(args.quick)
        print(TABLES[name](report) if name in TABLES else json.dumps(report, indent=2))
        path = out_dir / f"envs_{name.replace('-', '_')}.json"
        atomic_write_text(path, json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
