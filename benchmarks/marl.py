"""Training throughput of the PPO family on ``roles``: ippo/mappo x none/full/id at 10, 100 and
1,000 agents, parameters and peak memory, and how the cost per agent-step grows with agents.

Every configuration trains in its own subprocess (so its peak resident memory, ``ru_maxrss``,
is its own) for ``--iterations`` iterations of ``--num-envs`` copies x ``--horizon`` steps, with
one torch thread. Throughput is agent-steps per second of the whole training loop (rollouts AND
updates, as ``marra.rl.train`` reports it); the first iteration is a warm-up and not timed.

Usage::

    python benchmarks/marl.py                 # the full table (a few minutes)
    python benchmarks/marl.py --quick         # 10 and 100 agents only
    python benchmarks/marl.py --markdown      # also print a Markdown table

Writes ``benchmarks/results/marl.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_one(algo: str, sharing: str, agents: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one configuration in this process; return its measurements."""
    import torch

    from marra.rl import PPOConfig, build_model, train

    torch.set_num_threads(1)
    options = {"num_agents": agents, "num_roles": 4, "horizon": args.horizon}
    config = PPOConfig(
        algo=algo, sharing=sharing, num_envs=args.num_envs, seed=0,
        total_steps=args.iterations * args.num_envs * args.horizon, checkpoint_every=10**6,
    )  # fmt: skip
    import marra.envs

    spec = marra.envs.make("roles", **options).spec
    model = build_model(spec, config)
    actor = sum(p.numel() for p in model.actor.parameters())
    critic = sum(p.numel() for p in model.critic.parameters())
    with tempfile.TemporaryDirectory(prefix="marra-marl-") as out:
        result = train(config, options, env="roles", out_dir=out, progress=False)
    timed = result.history[1:] or result.history  # the first iteration warms up
    seconds = sum(row["rollout_s"] + row["update_s"] for row in timed)
    agent_steps = sum(args.num_envs * args.horizon * agents for _ in timed)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "algo": algo,
        "sharing": sharing,
        "agents": agents,
        "agent_steps_per_s": agent_steps / seconds,
        "us_per_agent_step": 1e6 * seconds / agent_steps,
        "rollout_share": sum(r["rollout_s"] for r in timed) / seconds,
        "actor_parameters": int(actor),
        "critic_parameters": int(critic),
        "peak_rss_mib": peak_kib / 1024.0,
        "final_accuracy": result.final.get("accuracy"),
    }


def _subprocess(algo: str, sharing: str, agents: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--one", algo, sharing, str(agents),
        "--iterations", str(args.iterations), "--num-envs", str(args.num_envs),
        "--horizon", str(args.horizon),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares exponent b of cost = a * agents^b on log-log axes."""
    if len(points) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--one", nargs=3, metavar=("ALGO", "SHARING", "AGENTS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--agents", default="10,100,1000")
    parser.add_argument("--algos", default="ippo,mappo")
    parser.add_argument("--sharing", default="none,full,id")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="10 and 100 agents, 3 iterations")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/marl.json"))
    args = parser.parse_args(argv)
    if args.one:
        algo, sharing, agents = args.one
        print(json.dumps(run_one(algo, sharing, int(agents), args)))
        return {}
    if args.quick:
        args.agents, args.iterations = "10,100", 3
    agents = [int(a) for a in args.agents.split(",")]
    started = time.perf_counter()
    rows = []
    for algo in args.algos.split(","):
        for sharing in args.sharing.split(","):
            for n in agents:
                row = _subprocess(algo, sharing, n, args)
                rows.append(row)
                print(
                    f"{algo:5s} {sharing:4s} {n:6,d} agents: {row['agent_steps_per_s']:>10,.0f} "
                    f"agent-steps/s  {row['us_per_agent_step']:7.2f} us/agent-step  "
                    f"actor {row['actor_parameters']:>9,d}  peak {row['peak_rss_mib']:7.0f} MiB",
                    flush=True,
                )
    growth = {}
    for algo in args.algos.split(","):
        for sharing in args.sharing.split(","):
            points = [(r["agents"], r["us_per_agent_step"]) for r in rows
                      if r["algo"] == algo and r["sharing"] == sharing]  # fmt: skip
            growth[f"{algo}/{sharing}"] = _slope(points)
    ratios = {}
    for algo in args.algos.split(","):
        for n in agents:
            pick = {r["sharing"]: r for r in rows if r["algo"] == algo and r["agents"] == n}
            if "none" in pick and "full" in pick:
                ratios[f"{algo}/{n}"] = {
                    "actor_parameters_none_over_full": pick["none"]["actor_parameters"]
                    / pick["full"]["actor_parameters"],
                    "peak_rss_none_over_full": pick["none"]["peak_rss_mib"]
                    / pick["full"]["peak_rss_mib"],
                    "throughput_full_over_none": pick["full"]["agent_steps_per_s"]
                    / pick["none"]["agent_steps_per_s"],
                }
    import torch

    report = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
            "env": "roles (num_roles=4)",
            "iterations": args.iterations,
            "num_envs": args.num_envs,
            "horizon": args.horizon,
            "torch_threads": 1,
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": list(os.getloadavg()),
            "elapsed_s": time.perf_counter() - started,
        },
        "rows": rows,
        "cost_exponent": growth,
        "none_vs_full": ratios,
    }
    print("\ncost per agent-step ~ agents^b:")
    for key, b in growth.items():
        print(f"  {key:12s} b = {b:.2f}" if b is not None else f"  {key:12s} b = n/a")
    if args.markdown:
        print("\n| algo | sharing | agents | agent-steps/s | us/agent-step | actor params | "
              "peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
        for r in rows:
            print(
                f"| {r['algo']} | {r['sharing']} | {r['agents']:,} | "
                f"{r['agent_steps_per_s']:,.0f} | {r['us_per_agent_step']:.2f} | "
                f"{r['actor_parameters']:,} | {r['peak_rss_mib']:.0f} |"
            )
    from marra._io import atomic_write_text

    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
