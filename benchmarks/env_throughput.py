"""Throughput of the batched hospital environment against the Gymnasium view.

For every number of hospitals ``n`` and copies ``num_envs`` this measures hospital-steps per
second (``num_envs * n`` per call of ``step``) of :class:`marra.envs.HospitalEnv` with random
actions, and the rate of the same work done one copy at a time through the Gymnasium view
(:class:`marra.envs.HospitalGymEnv`, numpy in and out). The view's rate does not depend on
``num_envs``, so it is measured once per ``n`` on up to ``--gym-steps`` steps (or
``--gym-seconds``) and the time for ``num_envs * steps`` view steps is extrapolated from it. Only
``step`` calls are timed (resets are reported separately); each figure is the best of
``--repeats`` runs, because the machine may be shared.

Combinations whose estimated memory exceeds ``--max-memory-gb`` are skipped (the scenario
timelines alone take ``2 * num_envs * horizon * n * 8`` bytes), and so are batched runs whose
first step predicts more than ``--max-seconds``.

Usage::

    python benchmarks/env_throughput.py                 # full grid, writes the JSON
    python benchmarks/env_throughput.py --quick         # n = 150, 1000; num_envs = 1, 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marra.envs import HospitalEnv, HospitalGymEnv
from marra.network import atomic_write_text

WORKING_TENSORS = 48  # (num_envs, n) float64 temporaries alive during one step, estimated


def estimate_bytes(n: int, num_envs: int, horizon: int) -> int:
    """Rough peak memory of a batched env: timelines plus step temporaries (float64)."""
    return 8 * num_envs * n * (2 * horizon + WORKING_TENSORS)


def time_batched(n: int, num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    env = HospitalEnv(
        n_hospitals=n,
        num_envs=num_envs,
        scenario=args.scenario,
        horizon=args.horizon,
        integer=args.integer,
        transfer_budget=args.transfer_budget,
        device=args.device,
        seed=0,
    )
    generator = torch.Generator().manual_seed(0)
    actions = [
        (torch.randn(num_envs, n, generator=generator) * args.action_scale).to(args.device)
        for _ in range(8)
    ]
    start = time.perf_counter()
    env.reset(seed=0)
    reset_seconds = time.perf_counter() - start
    env.step(actions[0])  # warm-up
    probe = time.perf_counter()
    env.step(actions[1])
    _sync(args.device)
    per_step = time.perf_counter() - probe
    if per_step * args.steps * args.repeats > args.max_seconds:
        return {
            "skipped": f"estimated {per_step * args.steps * args.repeats:.0f} s > --max-seconds",
            "reset_seconds": reset_seconds,
        }
    best = float("inf")
    for _ in range(args.repeats):
        env.reset(seed=0)
        _sync(args.device)
        elapsed = 0.0
        for step in range(args.steps):
            if step and step % args.horizon == 0:
                env.reset()
                _sync(args.device)
            start = time.perf_counter()
            env.step(actions[step % len(actions)])
            _sync(args.device)
            elapsed += time.perf_counter() - start
        best = min(best, elapsed)
    return {
        "seconds": best,
        "step_ms": 1e3 * best / args.steps,
        "hospital_steps_per_s": num_envs * n * args.steps / best,
        "reset_seconds": reset_seconds,
    }


def time_gym(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Steps per second of the Gymnasium view (one copy), best of ``args.repeats``."""
    env = HospitalGymEnv(
        n_hospitals=n,
        scenario=args.scenario,
        horizon=args.horizon,
        integer=args.integer,
        transfer_budget=args.transfer_budget,
    )
    rng = np.random.default_rng(0)
    actions = [(rng.normal(size=n) * args.action_scale).astype(np.float32) for _ in range(8)]
    best_rate = 0.0
    measured = 0
    for _ in range(args.repeats):
        env.reset(seed=0)
        env.step(actions[0])  # warm-up
        env.reset(seed=0)
        elapsed, steps, done = 0.0, 0, False
        while steps < args.gym_steps and elapsed < args.gym_seconds:
            if done:
                env.reset()
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(actions[steps % len(actions)])
            elapsed += time.perf_counter() - start
            steps += 1
            done = terminated or truncated
        if steps / elapsed > best_rate:
            best_rate, measured = steps / elapsed, steps
    return {"steps_per_s": best_rate, "hospital_steps_per_s": best_rate * n, "steps": measured}


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _print_table(rows: list[dict[str, Any]], meta: dict[str, Any], *, markdown: bool) -> None:
    headers = [
        "n",
        "num_envs",
        "batched hosp-steps/s",
        "step (ms)",
        "Gym view hosp-steps/s",
        "ratio",
        "reset (s)",
        "note",
    ]
    table = [
        [
            f"{r['n']:,}",
            str(r["num_envs"]),
            _fmt_rate(r.get("batched_hospital_steps_per_s")),
            "" if r.get("step_ms") is None else f"{r['step_ms']:.2f}",
            _fmt_rate(r.get("gym_hospital_steps_per_s")),
            "" if r.get("ratio") is None else f"{r['ratio']:.1f}x",
            "" if r.get("reset_seconds") is None else f"{r['reset_seconds']:.2f}",
            r.get("note", ""),
        ]
        for r in rows
    ]
    title = (
        f"Hospital env throughput ({meta['device']}, torch {meta['torch']}, "
        f"{meta['threads']} threads, scenario {meta['scenario']}, "
        f"{'integer' if meta['integer'] else 'continuous'}, {meta['steps']} steps)"
    )
    if markdown:
        print(title + "\n")
        print(markdown_table(headers, table))
    try:
        from rich.console import Console
        from rich.table import Table

        rich_table = Table(title=title)
        for header in headers:
            rich_table.add_column(header, justify="left" if header == "note" else "right")
        for row in table:
            rich_table.add_row(*row)
        Console().print(rich_table)
    except ImportError:  # pragma: no cover - rich is a dependency, plain text as a fallback
        print(title)
        print(markdown_table(headers, table))


def markdown_table(headers: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value / 1e3:.1f} k"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="150,1000,10000", help="comma-separated n")
    parser.add_argument("--num-envs", default="1,16,256", help="comma-separated num_envs")
    parser.add_argument("--steps", type=int, default=50, help="batched steps per measurement")
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--scenario", default="shifting+shock")
    parser.add_argument("--integer", action="store_true", help="integer (whole-staff) mode")
    parser.add_argument("--transfer-budget", type=float, default=None)
    parser.add_argument("--action-scale", type=float, default=5.0, help="std of random actions")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--gym-steps", type=int, default=500, help="max Gym-view steps timed")
    parser.add_argument("--gym-seconds", type=float, default=5.0, help="max Gym-view seconds")
    parser.add_argument("--max-memory-gb", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per batched combo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="n = 150, 1000; num_envs = 1, 16")
    parser.add_argument("--out", default="benchmarks/results/env_throughput.json")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.num_envs = "150,1000", "1,16"
        args.steps, args.repeats = min(args.steps, 20), 1
        args.gym_steps, args.gym_seconds = min(args.gym_steps, 100), 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(x) for x in args.sizes.split(",")]
    copies = [int(x) for x in args.num_envs.split(",")]
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "scenario": args.scenario,
        "integer": args.integer,
        "transfer_budget": args.transfer_budget,
        "steps": args.steps,
        "horizon": args.horizon,
        "repeats": args.repeats,
        "max_memory_gb": args.max_memory_gb,
    }
    rows: list[dict[str, Any]] = []
    for n in sizes:
        gym = time_gym(n, args)
        for num_envs in copies:
            row: dict[str, Any] = {
                "n": n,
                "num_envs": num_envs,
                "gym_hospital_steps_per_s": gym["hospital_steps_per_s"],
                "gym_steps_timed": gym["steps"],
                "gym_seconds_extrapolated": num_envs * args.steps / gym["steps_per_s"],
            }
            need = estimate_bytes(n, num_envs, args.horizon) / 2**30
            if need > args.max_memory_gb:
                row["note"] = f"skipped: ~{need:.1f} GB > {args.max_memory_gb:g} GB"
            else:
                result = time_batched(n, num_envs, args)
                row["reset_seconds"] = result["reset_seconds"]
                if "skipped" in result:
                    row["note"] = "skipped: " + result["skipped"]
                else:
                    row["batched_hospital_steps_per_s"] = result["hospital_steps_per_s"]
                    row["step_ms"] = result["step_ms"]
                    row["batched_seconds"] = result["seconds"]
                    row["ratio"] = result["hospital_steps_per_s"] / gym["hospital_steps_per_s"]
            rows.append(row)
            print(f"n={n} num_envs={num_envs}: {row}", flush=True)
    _print_table(rows, meta, markdown=args.markdown)
    report = {"meta": meta, "results": rows}
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
