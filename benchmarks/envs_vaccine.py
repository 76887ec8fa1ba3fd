"""Throughput of the batched ``vaccine`` environment (100 regions by default).

For each number of copies this measures env-steps per second (``num_envs`` days of one copy per
call of ``step``; region-steps are 100 times that) of :class:`marra.envs.vaccine.VaccineEnv`
through the full ``step`` of the contract (guards, dose rule, SEIR with commuter mixing and the
no-vaccination shadow epidemic, reporting, observations), in the mean-field (default) and the
stochastic mode. The peer, measured in the same run, is the same environment with ONE copy,
stepped ``num_envs`` times as often: what batching buys. Random scores (normal, std 2) are drawn
before the clock starts; resets are timed separately. Each figure is the best of ``--repeats``
runs (the machine may be shared); rates are given per wall-clock second and per CPU second of
this process (with one thread the CPU-time figure is the robust one on a loaded machine).

Usage::

    python benchmarks/envs_vaccine.py             # 1, 64, 1,024 copies; writes the JSON
    python benchmarks/envs_vaccine.py --quick     # a smoke run: 1 and 16 copies, few steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marra._io import atomic_write_text
from marra.envs import make


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_env(num_envs: int, stochastic: bool, steps: int, args: argparse.Namespace) -> dict:
    env = make(
        "vaccine",
        num_envs=num_envs,
        seed=0,
        device=args.device,
        grid_size=args.grid_size,
        horizon=max(steps + 1, 2),
        stochastic=stochastic,
    )
    generator = torch.Generator().manual_seed(0)
    actions = [
        (2.0 * torch.randn((num_envs, env.num_agents, 1), generator=generator)).to(args.device)
        for _ in range(steps)
    ]
    best = cpu = reset_best = float("inf")
    for _ in range(args.repeats):
        env.reset(seed=0)
        env.step(actions[0])  # warm-up
        start = time.perf_counter()
        env.reset(seed=0)
        _sync(args.device)
        reset_best = min(reset_best, time.perf_counter() - start)
        start, start_cpu = time.perf_counter(), time.process_time()
        for a in actions:
            env.step(a)
        _sync(args.device)
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return {
        "mode": "stochastic" if stochastic else "mean-field",
        "num_envs": num_envs,
        "regions": env.num_agents,
        "steps": steps,
        "seconds": best,
        "cpu_seconds": cpu,
        "step_ms": 1000.0 * best / steps,
        "env_steps_per_s": num_envs * steps / best,
        "env_steps_per_cpu_s": num_envs * steps / cpu,
        "region_steps_per_s": num_envs * env.num_agents * steps / best,
        "reset_seconds": reset_best,
    }


def vaccine(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of the vaccine table: for each mode, one copy (the peer) then every ``--num-envs``
    with its ratio to the one-copy rate."""
    rows = []
    sizes = [int(v) for v in args.num_envs.split(",") if v.strip()]
    for stochastic in (False, True):
        steps = args.stochastic_steps if stochastic else args.steps
        single = _time_env(1, stochastic, args.single_steps, args)
        single["ratio"] = single["ratio_cpu"] = 1.0
        rows.append(single)
        for num_envs in sizes:
            if num_envs == 1:
                continue
            row = _time_env(num_envs, stochastic, steps, args)
            row["ratio"] = row["env_steps_per_s"] / single["env_steps_per_s"]
            row["ratio_cpu"] = row["env_steps_per_cpu_s"] / single["env_steps_per_cpu_s"]
            rows.append(row)
            print(
                f"  {row['mode']}, {num_envs:,} copies: {row['env_steps_per_s']:,.0f} env-steps/s"
            )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    headers = ["mode", "copies", "env-steps/s", "step (ms)", "x 1 copy", "env-steps/CPU-s",
               "x 1 copy (CPU)", "region-steps/s", "reset (s)"]  # fmt: skip
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for r in rows:
        cells = [
            r["mode"],
            f"{r['num_envs']:,}",
            f"{r['env_steps_per_s']:,.0f}",
            f"{r['step_ms']:.2f}",
            f"{r['ratio']:,.1f}",
            f"{r['env_steps_per_cpu_s']:,.0f}",
            f"{r['ratio_cpu']:,.1f}",
            f"{r['region_steps_per_s']:,.0f}",
            f"{r['reset_seconds']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", default="1,64,1024", help="comma-separated copies")
    parser.add_argument("--grid-size", type=int, default=10, help="regions per side")
    parser.add_argument("--steps", type=int, default=60, help="mean-field steps per run")
    parser.add_argument("--stochastic-steps", type=int, default=10, help="stochastic steps")
    parser.add_argument("--single-steps", type=int, default=300, help="steps of the 1-copy peer")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="1 and 16 copies, few steps")
    parser.add_argument("--out", default="benchmarks/results/envs_vaccine.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.steps, args.stochastic_steps = "1,16", 5, 2
        args.single_steps, args.repeats = 10, 1
    torch.set_num_threads(args.threads)
    rows = vaccine(args)
    meta = {
        "device": args.device,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_sha(),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "grid_size": args.grid_size,
        "repeats": args.repeats,
    }
    print(
        f"vaccine throughput ({args.device}, torch {meta['torch']}, {meta['threads']} thread(s), "
        f"{args.grid_size}x{args.grid_size} regions, best of {args.repeats})"
    )
    print(markdown_table(rows))
    report = {"meta": meta, "vaccine": rows}
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
