"""Throughput of the batched Matthew Effect and Job Scheduling games against one-copy numpy rules.

For each game this measures agent-steps per second (``num_envs * num_agents`` per call of
``step``) of the batched environment (:class:`marra.envs.matthew.MatthewEnv`,
:class:`marra.envs.job_scheduling.JobSchedulingEnv`, through the full ``step`` of the contract:
guards, clock, episode record, observations) for several numbers of copies, and of the one-copy
numpy references in ``benchmarks/games_reference.py`` (the structure of the original code: one
copy, loops over agents and resources, the observation rebuilt every step), measured in the same
run and interleaved with them (the repeats are the outer loop, so both sides see the same spells
of load). Both get random actions drawn before the clock starts; both compute every observation.
Each figure is the best of ``--repeats`` runs, because the machine may be shared; rates are
given per wall-clock second and per CPU second of this process (with one thread, the CPU-time
figure is the robust one on a loaded machine: it does not count time spent waiting for a core).

Before timing, the references are replayed against the batched environments (same start, same
actions, same respawn points) and must agree exactly, so the two sides do the same work.

Usage::

    python benchmarks/games.py                 # 1, 64, 1,024, 8,192 copies; writes the JSON
    python benchmarks/games.py --quick         # a smoke run: 1 and 64 copies, few steps
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from games_reference import JobReference, MatthewReference  # noqa: E402

from marra._io import atomic_write_text  # noqa: E402
from marra.envs import make  # noqa: E402

GAMES = ("matthew", "job-scheduling")
REFERENCE = "reference (one copy, numpy)"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- agreement
def verify(name: str, num_envs: int = 4, steps: int = 300, seed: int = 0) -> int:
    """Replay ``steps`` steps of ``num_envs`` copies through the batched env and the reference;
    raise AssertionError at the first difference. Returns the number of catches / server-steps
    seen (so a caller can tell the replay exercised the rules)."""
    env = make(name, num_envs=num_envs, seed=seed, horizon=steps)
    obs = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    greedy = env.baseline("greedy")
    refs: list[Any] = []
    for c in range(num_envs):
        if name == "matthew":
            ref = MatthewReference(env.num_agents, env.n_resources)
            ref.reset(env.position[c].numpy(), env.size[c].numpy(), env.resources[c].numpy())
        else:
            ref = JobReference(env.num_agents)
            ref.reset(env.position[c].numpy(), env.server[c].numpy())
        refs.append(ref)
    events = 0
    for t in range(steps):
        pick = torch.as_tensor(rng.random((num_envs, env.num_agents)) < 0.7)
        noise = torch.as_tensor(rng.integers(0, 5, (num_envs, env.num_agents)))
        actions = torch.where(pick, greedy.act(obs), noise)
        respawn = env._respawn_points().numpy() if name == "matthew" else None
        obs, reward, _, _, _ = env.step(actions)
        for c, ref in enumerate(refs):
            if name == "matthew":
                points = respawn[c]
                ref_obs, ref_reward = ref.step(actions[c].tolist(), lambda k, p=points: p[k])
            else:
                ref_obs, ref_reward = ref.step(actions[c].tolist())
            where = f"{name}: copy {c}, step {t}"
            assert reward[c].tolist() == ref_reward, f"{where}: rewards differ"
            assert np.array_equal(obs[c].numpy(), np.asarray(ref_obs, dtype=np.float32)), (
                f"{where}: observations differ"
            )
            events += int(sum(ref_reward))
    return events


# ---------------------------------------------------------------------------- timing
class Timer:
    """One side of the comparison: ``once()`` times one run and keeps the best wall-clock and
    CPU time seen; ``row()`` reports them."""

    def __init__(self, row: dict[str, Any], run: Any, work: int) -> None:
        self._row, self._run, self.work = row, run, work
        self.best = self.cpu = float("inf")

    def once(self) -> None:
        wall, cpu = self._run()
        self.best, self.cpu = min(self.best, wall), min(self.cpu, cpu)

    def row(self) -> dict[str, Any]:
        return {
            **self._row,
            "seconds": self.best,
            "cpu_seconds": self.cpu,
            "agent_steps_per_s": self.work / self.best,
            "agent_steps_per_cpu_s": self.work / self.cpu,
        }


def batched_timer(name: str, num_envs: int, args: argparse.Namespace) -> Timer:
    env = make(name, num_envs=num_envs, seed=0, device=args.device, horizon=args.horizon)
    n = env.num_agents
    generator = torch.Generator().manual_seed(0)
    actions = [
        torch.randint(0, 5, (num_envs, n), generator=generator).to(args.device)
        for _ in range(args.steps)
    ]

    def run() -> tuple[float, float]:
        env.reset(seed=0)
        env.step(actions[0])  # warm-up
        env.reset(seed=0)
        _sync(args.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        for a in actions:
            env.step(a)
        _sync(args.device)
        return time.perf_counter() - start, time.process_time() - start_cpu

    row = {"game": name, "implementation": "batched", "num_envs": num_envs, "num_agents": n}
    return Timer({**row, "steps": args.steps}, run, num_envs * n * args.steps)


def reference_timer(name: str, args: argparse.Namespace) -> Timer:
    rng = np.random.default_rng(0)
    ref: Any = MatthewReference(rng=rng) if name == "matthew" else JobReference(rng=rng)
    n = ref.n_agent
    actions = rng.integers(0, 5, (args.ref_steps, n)).tolist()

    def run() -> tuple[float, float]:
        ref.reset()
        start, start_cpu = time.perf_counter(), time.process_time()
        for a in actions:
            ref.step(a)
        return time.perf_counter() - start, time.process_time() - start_cpu

    row = {"game": name, "implementation": REFERENCE, "num_envs": 1, "num_agents": n}
    return Timer({**row, "steps": args.ref_steps}, run, n * args.ref_steps)


# ---------------------------------------------------------------------------- report
def markdown_table(headers: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "game",
        "implementation",
        "copies",
        "agent-steps/s",
        "x reference",
        "agent-steps/CPU-s",
        "x reference (CPU)",
    ]
    table = []
    for row in rows:
        ratio, ratio_cpu = row.get("ratio"), row.get("ratio_cpu")
        table.append(
            [
                row["game"],
                row["implementation"],
                f"{row['num_envs']:,}",
                f"{row['agent_steps_per_s']:,.0f}",
                "1" if ratio is None else f"{ratio:,.1f}",
                f"{row['agent_steps_per_cpu_s']:,.0f}",
                "1" if ratio_cpu is None else f"{ratio_cpu:,.1f}",
            ]
        )
    return headers, table


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
    parser.add_argument("--num-envs", default="1,64,1024,8192", help="comma-separated copies")
    parser.add_argument("--steps", type=int, default=200, help="batched steps per measurement")
    parser.add_argument("--ref-steps", type=int, default=1000, help="reference steps measured")
    parser.add_argument("--horizon", type=int, default=1000, help="episode length (>= steps)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--verify-steps", type=int, default=300, help="0: skip the replay")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="1 and 64 copies, few steps")
    parser.add_argument("--out", default="benchmarks/results/games.json")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.steps, args.ref_steps = "1,64", 20, 100
        args.repeats, args.verify_steps = 1, 40
    if args.horizon < args.steps + 1:
        args.horizon = args.steps + 1
    torch.set_num_threads(args.threads)
    sizes = [int(v) for v in args.num_envs.split(",") if v.strip()]

    verified = {}
    for name in GAMES:
        if args.verify_steps > 0:
            verified[name] = verify(name, steps=args.verify_steps)
            print(f"{name}: reference agrees with the batched env over {args.verify_steps} steps")

    # the repeats are the outer loop, so every timer sees the same spells of load
    timers = {name: [reference_timer(name, args)] for name in GAMES}
    for name in GAMES:
        timers[name] += [batched_timer(name, num_envs, args) for num_envs in sizes]
    for _ in range(args.repeats):
        for name in GAMES:
            for timer in timers[name]:
                timer.once()
    rows: list[dict[str, Any]] = []
    for name in GAMES:
        reference = timers[name][0].row()
        rows.append(reference)
        for timer in timers[name][1:]:
            row = timer.row()
            row["ratio"] = row["agent_steps_per_s"] / reference["agent_steps_per_s"]
            row["ratio_cpu"] = row["agent_steps_per_cpu_s"] / reference["agent_steps_per_cpu_s"]
            rows.append(row)

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
        "steps": args.steps,
        "ref_steps": args.ref_steps,
        "repeats": args.repeats,
        "verified_steps": args.verify_steps,
        "verified_events": verified,
    }
    headers, table = _table(rows)
    title = (
        f"Game throughput ({args.device}, torch {meta['torch']}, {meta['threads']} thread(s), "
        f"best of {args.repeats}; reference: one copy, numpy)"
    )
    print(title)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in table:
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in pairs]
        print("  ".join(cells))
    if args.markdown:
        print()
        print(markdown_table(headers, table))
    report = {"meta": meta, "results": rows}
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
