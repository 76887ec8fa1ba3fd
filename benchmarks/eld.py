"""ELD's overhead per training iteration against the backbone alone (paper 003's plug-in).

For each case (an environment and a learner), the same run is trained twice in this process,
alternating repeat by repeat so both see the same machine load: the backbone alone, and the
backbone with ELD whose dual variable starts at 1 (so every iteration pays the full price: the
reducer, the shaped advantage, the dual step). The first iteration of every run is a warm-up and
not timed. Reported per case:

- ``backbone_s`` and ``eld_s``: median seconds per iteration (rollout + update) over the timed
  iterations of every repeat, and ``ratio`` = eld_s / backbone_s (the end-to-end overhead,
  which on a shared machine also holds the noise of two separate runs);
- ``hooks_ms``: the time spent inside ELD's own hooks (``observe``, ``shape_advantage``,
  ``update``) per iteration, measured around the calls, and ``hooks_share`` = hooks_ms /
  backbone_s: the overhead ELD itself adds, free of run-to-run noise.

Usage::

    python benchmarks/eld.py            # matthew, job-scheduling, hospital (a few minutes)
    python benchmarks/eld.py --quick    # small cases only (seconds; the test suite runs it)

Writes ``benchmarks/results/eld.json``; one torch thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: (label, env, env options, algo, copies, iterations)
CASES = (
    ("matthew (10 agents)", "matthew", {"horizon": 200}, "ippo", 16, 4),
    ("matthew, COMA", "matthew", {"horizon": 200}, "coma", 16, 4),
    ("job-scheduling (4 agents)", "job-scheduling", {"horizon": 200}, "mappo", 16, 4),
    ("hospital (150 agents)", "hospital", {"n_hospitals": 150, "horizon": 50}, "mappo", 16, 4),
)
QUICK = (("matthew (quick)", "matthew", {"num_agents": 4, "horizon": 20}, "coma", 4, 2),)


def _timed_eld(config: Any, spec: Any) -> Any:
    """An ELD whose lambda starts at 1, with timers around its hooks."""
    from marra.rl import ELD

    class TimedELD(ELD):
        seconds = 0.0

        def _time(self, name: str, *args: Any) -> Any:
            tick = time.perf_counter()
            out = getattr(ELD, name)(self, *args)
            self.seconds += time.perf_counter() - tick
            return out

        def observe(self, rollout: Any, model: Any) -> None:
            self._time("observe", rollout, model)

        def shape_advantage(self, advantages: Any, rollout: Any, model: Any) -> Any:
            return self._time("shape_advantage", advantages, rollout, model)

        def update(self, iteration: int) -> dict[str, float]:
            return self._time("update", iteration)

    eld = TimedELD.from_config(config.replace(equity="eld"), spec)
    eld.lam = 1.0
    return eld


def run_case(case: tuple, repeats: int) -> dict[str, Any]:
    import torch

    import marra.envs
    from marra.rl import PPOConfig, train

    label, env, options, algo, copies, iterations = case
    torch.set_num_threads(1)
    spec = marra.envs.make(env, **options).spec
    config = PPOConfig(
        algo=algo, num_envs=copies, seed=0, total_steps=iterations * copies * spec.horizon,
        checkpoint_every=10**6,
    )  # fmt: skip
    times: dict[str, list[float]] = {"backbone": [], "eld": []}
    hooks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="marra-eld-") as out:
        for repeat in range(repeats):
            for kind in ("backbone", "eld"):
                constraint = _timed_eld(config, spec) if kind == "eld" else None
                result = train(config, options, env=env, out_dir=Path(out) / f"{kind}{repeat}",
                               progress=False, constraint=constraint)  # fmt: skip
                rows = result.history[1:]
                times[kind] += [row["rollout_s"] + row["update_s"] for row in rows]
                if constraint is not None:
                    hooks.append(constraint.seconds / len(result.history))
    backbone = statistics.median(times["backbone"])
    eld = statistics.median(times["eld"])
    hooks_ms = 1e3 * statistics.median(hooks)
    return {
        "case": label, "env": env, "options": options, "algo": algo, "agents": spec.num_agents,
        "copies": copies, "steps": spec.horizon, "iterations_timed": len(times["eld"]),
        "backbone_s": backbone, "eld_s": eld, "ratio": eld / backbone,
        "hooks_ms": hooks_ms, "hooks_share": hooks_ms / 1e3 / backbone,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/eld.json"))
    args = parser.parse_args(argv)
    cases = QUICK if args.quick else CASES
    repeats = 1 if args.quick else args.repeats
    rows = [run_case(case, repeats) for case in cases]
    header = ("case", "agents", "copies x steps", "backbone s/it", "ELD s/it", "ratio",
              "hooks ms/it", "hooks share")  # fmt: skip
    print(" | ".join(header))
    for r in rows:
        print(
            f"{r['case']} | {r['agents']} | {r['copies']} x {r['steps']} | "
            f"{r['backbone_s']:.3f} | {r['eld_s']:.3f} | {r['ratio']:.3f} | "
            f"{r['hooks_ms']:.2f} | {100 * r['hooks_share']:.2f}%"
        )
    import torch

    from marra._io import atomic_write_text

    report = {
        "benchmark": "eld", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0], "torch": torch.__version__,
        "platform": platform.platform(), "threads": 1, "repeats": repeats, "rows": rows,
    }  # fmt: skip
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
