"""Cost of every sharing scheme on ride-hailing(2) (paper 002's 10 x 10 city: 100 agents, 144 steps
an episode): training agent-steps/s, seconds per iteration and per episode, parameters, peak
resident memory, and the sharing scheme's own share of the time; DyPS against the public DyPS
code's figures.

Every scheme trains in its own subprocess (so its peak resident memory, ``ru_maxrss``, is its
own) with IPPO, one torch thread, ``--num-envs`` copies for ``--iterations`` iterations of one
whole episode each; the first iteration is a warm-up and not timed. SePS pretrains for exactly
one iteration, so its second iteration holds the one-off clustering (VAE, Davies-Bouldin over
2..99 clusters, k-means; reported as ``seps_fit_s``, not timed as an iteration) and the timed
iterations train the K group networks. DyPS's time includes its VLSTM, CVAE and selector.

The public DyPS code (``tsinghua-fib-lab/DyPS``, ``run/run_lstm_hrl.py``), measured on this kind
of machine (2 CPU cores) before this benchmark existed: about 8 s per iteration (one episode of
one city), then it fails in its trajectory-model training trying to allocate 25.5 GB; its naive
sharing baseline runs about 35 s per iteration. Those figures are constants here (the public code
does not run to completion), so the ratios compare against them, not against a peer run in the
same process: ``s_per_episode`` (ours) against 8 s, peak RSS against 25.5 GB.

Usage::

    python benchmarks/sharing.py                  # every scheme, 4 copies, 4 iterations
    python benchmarks/sharing.py --schemes full,dyps --num-envs 16
    python benchmarks/sharing.py --quick          # full and dyps, 3 iterations

Writes ``benchmarks/results/sharing.json``.
"""

from __future__ import annotations

import argparse
import json
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
#: The public DyPS code on ride-hailing(2), 2 CPU cores (see the module docstring).
PUBLIC_DYPS_S_PER_ITERATION = 8.0
PUBLIC_DYPS_PEAK_GB = 25.5
PUBLIC_NAIVE_S_PER_ITERATION = 35.0
SCHEMES = ("none", "full", "id", "psa", "seps", "dyps")


def _parameters(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def run_one(scheme: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one scheme in this process; return its measurements."""
    import torch

    from marra.envs import make
    from marra.rl import PPOConfig, train

    torch.set_num_threads(1)
    options = {"city": args.city}
    horizon = make("ride-hailing", **options).spec.horizon
    steps_per_iteration = args.num_envs * horizon
    extra: dict[str, Any] = {}
    if scheme == "seps":
        extra["seps_pretrain_steps"] = steps_per_iteration  # cluster after one iteration
    config = PPOConfig(
        algo="ippo", sharing=scheme, num_envs=args.num_envs, seed=0,
        total_steps=args.iterations * steps_per_iteration, checkpoint_every=10**6, **extra,
    )  # fmt: skip
    hook_seconds: list[float] = []

    def timed_hooks(model: Any) -> None:  # time the scheme's own work in its hooks
        sharing = model.sharing
        for name in ("before_iteration", "after_rollout"):
            original = getattr(sharing, name)

            def wrapper(*a: Any, _original: Any = original, **k: Any) -> Any:
                tick = time.perf_counter()
                value = _original(*a, **k)
                hook_seconds.append(time.perf_counter() - tick)
                return value

            setattr(sharing, name, wrapper)

    import marra.rl.loop as loop

    build = loop.build_algorithm

    def build_timed(*a: Any, **k: Any) -> Any:
        algorithm = build(*a, **k)
        timed_hooks(algorithm.model)
        return algorithm

    loop.build_algorithm = build_timed
    rows: list[dict[str, Any]] = []

    def log(row: dict[str, Any]) -> None:
        rows.append({**row, "sharing_s": sum(hook_seconds)})
        hook_seconds.clear()

    with tempfile.TemporaryDirectory(prefix="marra-sharing-") as out:
        result = train(config, options, env="ride-hailing", out_dir=out, progress=False,
                       log_fn=log)  # fmt: skip
    model = result.model
    skip = 2 if scheme == "seps" else 1  # warm-up (and SePS's clustering iteration)
    timed = rows[skip:] or rows[-1:]
    seconds = sum(r["rollout_s"] + r["update_s"] for r in timed) / len(timed)
    spec_agents = 100 if args.city == "2" else 36
    actor, critic = _parameters(model.actor), _parameters(model.critic)
    sharing = model.sharing
    active_groups = sharing.num_groups
    own = 0
    if scheme == "seps" and getattr(sharing, "grouped", False):
        active_groups = sharing.chosen
    if scheme == "dyps":
        own = sum(_parameters(getattr(sharing, m)) for m in ("vlstm", "cvae", "selector"))
    grouped_share = active_groups / sharing.num_groups if sharing.num_groups > 1 else 1.0
    record = {
        "scheme": scheme,
        "agents": spec_agents,
        "num_envs": args.num_envs,
        "timed_iterations": len(timed),
        "s_per_iteration": seconds,
        "s_per_episode": seconds / args.num_envs,
        "rollout_s": sum(r["rollout_s"] for r in timed) / len(timed),
        "update_s": sum(r["update_s"] for r in timed) / len(timed),
        "sharing_s": sum(r["sharing_s"] for r in timed) / len(timed),
        "agent_steps_per_s": steps_per_iteration * spec_agents / seconds,
        "actor_parameters": actor,
        "critic_parameters": critic,
        "parameter_slots": sharing.num_groups,
        "groups_in_use": active_groups,
        "actor_parameters_in_use": int(round(actor * grouped_share)),
        "scheme_parameters": own,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "final_gmv": result.final.get("gmv"),
        "final_orr": result.final.get("orr"),
    }
    if scheme == "seps":
        record["seps_fit_s"] = rows[1]["sharing_s"] if len(rows) > 1 else None
    return record


def _subprocess(scheme: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--one", scheme, "--iterations", str(args.iterations),
        "--num-envs", str(args.num_envs), "--city", args.city,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", metavar="SCHEME", help=argparse.SUPPRESS)
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--city", default="2", choices=("1", "2"))
    parser.add_argument("--quick", action="store_true", help="full and dyps, 3 iterations")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/sharing.json"))
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return {}
    if args.quick:
        args.schemes, args.iterations = "full,dyps", 3
    schemes = args.schemes.split(",")
    started = time.perf_counter()
    load_before = list(os.getloadavg())
    rows = []
    for scheme in schemes:
        row = _subprocess(scheme, args)
        rows.append(row)
        print(
            f"{scheme:5s} {row['s_per_iteration']:7.2f} s/iteration ({row['s_per_episode']:5.2f} s"
            f"/episode; sharing {row['sharing_s']:5.2f} s)  {row['agent_steps_per_s']:>8,.0f} "
            f"agent-steps/s  actor {row['actor_parameters_in_use']:>9,d} in use  peak "
            f"{row['peak_rss_mib']:6.0f} MiB",
            flush=True,
        )
    against_public = {}
    for row in rows:
        against_public[row["scheme"]] = {
            "faster_per_episode_than_public_dyps": PUBLIC_DYPS_S_PER_ITERATION
            / row["s_per_episode"],
            "faster_per_episode_than_public_naive": PUBLIC_NAIVE_S_PER_ITERATION
            / row["s_per_episode"],
            "less_memory_than_public_dyps": PUBLIC_DYPS_PEAK_GB * 1024.0 / row["peak_rss_mib"],
        }
    import torch

    report = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
            "env": f"ride-hailing (city={args.city})",
            "algo": "ippo",
            "iterations": args.iterations,
            "num_envs": args.num_envs,
            "torch_threads": 1,
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()),
            "elapsed_s": time.perf_counter() - started,
            "public_dyps": {
                "s_per_iteration": PUBLIC_DYPS_S_PER_ITERATION,
                "peak_gb": PUBLIC_DYPS_PEAK_GB,
                "naive_s_per_iteration": PUBLIC_NAIVE_S_PER_ITERATION,
                "note": "measured before, on 2 CPU cores; one iteration is one episode",
            },
        },
        "rows": rows,
        "against_public_code": against_public,
    }
    print("\nagainst the public DyPS code (8 s and 25.5 GB per episode-iteration):")
    for scheme, ratio in against_public.items():
        print(
            f"  {scheme:5s} {ratio['faster_per_episode_than_public_dyps']:6.1f}x faster per "
            f"episode, {ratio['less_memory_than_public_dyps']:6.1f}x less memory"
        )
    if args.markdown:
        print(
            "\n| scheme | s/iteration | s/episode | sharing s | agent-steps/s | actor params "
            "(in use) | peak RSS MiB | vs public DyPS: time | memory |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        for r in rows:
            ratio = against_public[r["scheme"]]
            print(
                f"| {r['scheme']} | {r['s_per_iteration']:.2f} | {r['s_per_episode']:.2f} | "
                f"{r['sharing_s']:.2f} | {r['agent_steps_per_s']:,.0f} | "
                f"{r['actor_parameters_in_use']:,} | {r['peak_rss_mib']:.0f} | "
                f"{ratio['faster_per_episode_than_public_dyps']:.1f}x | "
                f"{ratio['less_memory_than_public_dyps']:.0f}x |"
            )
    from marra._io import atomic_write_text

    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
