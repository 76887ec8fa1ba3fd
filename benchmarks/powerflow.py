"""Batched power flow of the ``voltage`` environment against ``pandapower.runpp``, one at a time.

For the 33-bus feeder of :mod:`marra.envs.voltage` (and, with ``--networks``, the 179-bus
``mv_oberrhein``) this draws ``max(--batches)`` random operating points (every load uniform in
0-1.5 x its peak, every PV uniform in 0-1 x its peak, every inverter's reactive power uniform in
+-0.8 x its capacity ``sqrt(s_max^2 - p^2)``), then measures:

- marra: copies solved per second by :class:`marra.envs.powerflow.PowerFlow` for each batch size
  in ``--batches`` (one ``solve`` call per batch; best of ``--repeats``);
- pandapower: ``pandapower.runpp`` (its defaults: Newton-Raphson, tolerance 1e-8 MVA) on the same
  network, one operating point per call, on the first ``--pandapower-calls`` points (best of
  ``--repeats`` for the mean time per call);
- the worst voltage magnitude error of marra against pandapower over those points, every bus.

The ratio is marra's copies per second over pandapower's calls per second, in the same run.

With ``--baselines COPIES`` it also runs whole episodes (240 steps) of the ``voltage``
environment's baselines (``no-control``, ``droop``, the ``opf`` oracle) on ``COPIES`` copies (seed
``--seed``; each copy is its own day and start time) for the barriers in
``--baseline-barriers`` (reward weight ``--q-weight``), and reports the mean return and episode
metrics with their standard deviation over copies.

Usage::

    python benchmarks/powerflow.py                       # writes benchmarks/results/powerflow.json
    python benchmarks/powerflow.py --quick               # a few seconds: smoke run
    python benchmarks/powerflow.py --markdown            # the table for docs/performance.md
    python benchmarks/powerflow.py --baselines 16        # and the baselines' episodes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marra._io import atomic_write_text
from marra.envs.powerflow import PowerFlow
from marra.envs.voltage import CASE33_PV_BUSES, OVERSIZE, feeder

ROOT = Path(__file__).resolve().parents[1]


def operating_points(network: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` random operating points: load p, q and PV p, q per element."""
    fd = feeder(network)
    rng = np.random.default_rng(seed)
    n_load, n_pv = fd.load_bus.shape[0], fd.pv_bus.shape[0]
    level = rng.uniform(0.0, 1.5, (count, n_load))
    pv_p = rng.uniform(0.0, 1.0, (count, n_pv)) * fd.pv_peak
    capacity = np.sqrt((OVERSIZE * fd.pv_peak) ** 2 - pv_p**2)
    return {
        "load_p": level * fd.load_p_peak,
        "load_q": level * fd.load_q_peak,
        "pv_p": pv_p,
        "pv_q": rng.uniform(-0.8, 0.8, (count, n_pv)) * capacity,
    }


def bus_injections(network: str, points: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    fd = feeder(network)
    count = points["load_p"].shape[0]
    p = np.zeros((count, fd.grid.num_buses))
    q = np.zeros_like(p)
    for array, bus, values, sign in (
        (p, fd.load_bus, points["load_p"], -1.0),
        (q, fd.load_bus, points["load_q"], -1.0),
        (p, fd.pv_bus, points["pv_p"], 1.0),
        (q, fd.pv_bus, points["pv_q"], 1.0),
    ):
        np.add.at(array.T, bus, sign * values.T)
    return torch.as_tensor(p), torch.as_tensor(q)


def reference_net(network: str) -> Any:
    import pandapower as pp
    import pandapower.networks as pn

    if network == "case33bw":
        net = pn.case33bw()
        for bus in CASE33_PV_BUSES:
            pp.create_sgen(net, bus, p_mw=0.0, q_mvar=0.0)
    else:
        net = pn.mv_oberrhein()
    net.load["scaling"] = 1.0
    net.sgen["scaling"] = 1.0
    return net


def time_marra(network: str, points: dict[str, np.ndarray], batch: int, args) -> dict[str, Any]:
    flow = PowerFlow(feeder(network).grid, device=args.device)
    p, q = bus_injections(network, {k: v[:batch] for k, v in points.items()})
    p, q = p.to(args.device), q.to(args.device)
    result = flow.solve(p, q)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        _sync(args.device)
        start = time.perf_counter()
        calls = 0
        while True:
            result = flow.solve(p, q)
            calls += 1
            _sync(args.device)
            elapsed = time.perf_counter() - start
            if elapsed >= args.min_seconds:
                break
        best = min(best, elapsed / calls)
    return {
        "network": network,
        "batch": batch,
        "seconds_per_solve": best,
        "copies_per_second": batch / best,
        "iterations": int(result.iterations),
        "converged": int(result.converged.sum()),
    }


def time_pandapower(network: str, points: dict[str, np.ndarray], args) -> dict[str, Any]:
    import pandapower as pp

    net = reference_net(network)
    calls = min(args.pandapower_calls, points["load_p"].shape[0])
    vm = []
    best = float("inf")
    for repeat in range(args.repeats):
        start = time.perf_counter()
        for i in range(calls):
            net.load["p_mw"] = points["load_p"][i]
            net.load["q_mvar"] = points["load_q"][i]
            net.sgen["p_mw"] = points["pv_p"][i]
            net.sgen["q_mvar"] = points["pv_q"][i]
            pp.runpp(net)
            if repeat == 0:
                vm.append(net.res_bus.vm_pu.to_numpy().copy())
        best = min(best, (time.perf_counter() - start) / calls)
    return {"seconds_per_call": best, "calls": calls, "vm": np.stack(vm)}


def worst_error(network: str, points: dict[str, np.ndarray], reference: np.ndarray, args) -> float:
    flow = PowerFlow(feeder(network).grid, device=args.device)
    count = reference.shape[0]
    p, q = bus_injections(network, {k: v[:count] for k, v in points.items()})
    result = flow.solve(p.to(args.device), q.to(args.device))
    return float(np.abs(result.vm.cpu().numpy() - reference).max())


def run_baselines(copies: int, barriers: list[str], args) -> list[dict[str, Any]]:
    from marra.envs.voltage import VoltageEnv

    rows = []
    for barrier in barriers:
        env = VoltageEnv(barrier=barrier, q_weight=args.q_weight, num_envs=copies, seed=args.seed,
                         device=args.device)  # fmt: skip
        for name in ("no-control", "droop", "opf"):
            start = time.perf_counter()
            obs = env.reset(seed=args.seed)
            method = env.baseline(name)
            method.reset()
            while True:
                step = env.step(method.act(obs))
                obs = step.obs
                if bool((step.terminated | step.truncated).all()):
                    break
            values = {"return": step.info["episode_return"][:, 0]}
            values.update(step.info["episode_metrics"])
            row: dict[str, Any] = {"barrier": barrier, "q_weight": args.q_weight,
                                   "baseline": name, "copies": copies,
                                   "seconds": time.perf_counter() - start}  # fmt: skip
            for key, value in values.items():
                v = value.double().cpu()
                row[key] = float(v.mean())
                row[f"{key}_std"] = float(v.std()) if copies > 1 else 0.0
            rows.append(row)
            print(
                f"{barrier:>16} {name:>10}: return {row['return']:8.3f} +- "
                f"{row['return_std']:.3f}, controllable {row['controllable_rate']:.3f}, "
                f"out of band {row['out_of_band']:.4f}, q loss {row['q_loss']:.3f} MVAr, "
                f"power loss {row['power_loss']:.3f} MW ({row['seconds']:.0f} s)",
                flush=True,
            )
    return rows


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _rate(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.1f}"


def print_table(report: dict[str, Any], markdown: bool) -> None:
    meta = report["meta"]
    print(
        f"Batched power flow vs pandapower.runpp ({meta['device']}, torch {meta['torch']}, "
        f"{meta['threads']} threads, pandapower {meta['pandapower']}, numba "
        f"{'yes' if meta['numba'] else 'no'})"
    )
    header = ["network", "batch", "marra copies/s", "solve (ms)", "iterations",
              "pandapower calls/s", "runpp (ms)", "ratio", "worst |dV| (p.u.)"]  # fmt: skip
    rows = []
    for row in report["rows"]:
        ref = report["pandapower"][row["network"]]
        rows.append([
            row["network"], f"{row['batch']:,}", _rate(row["copies_per_second"]),
            f"{1e3 * row['seconds_per_solve']:.2f}", str(row["iterations"]),
            _rate(1.0 / ref["seconds_per_call"]), f"{1e3 * ref['seconds_per_call']:.1f}",
            f"{row['ratio']:,.0f}x", f"{ref['worst_vm_error']:.1e}",
        ])  # fmt: skip
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default="case33bw", help="comma-separated: case33bw, "
                        "mv_oberrhein")  # fmt: skip
    parser.add_argument("--batches", default="1,64,1024,16384", help="comma-separated batch sizes")
    parser.add_argument("--pandapower-calls", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5, help="per marra measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="batches 1, 1024; 10 runpp calls")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--baselines", type=int, default=0, help="copies for the baselines' "
                        "episodes (0: skip)")  # fmt: skip
    parser.add_argument("--baseline-barriers", default="l1,bowl")
    parser.add_argument("--q-weight", type=float, default=0.1, help="the env's q_weight for the "
                        "baselines' episodes (MAPDN's 0.1)")  # fmt: skip
    default_out = ROOT / "benchmarks" / "results" / "powerflow.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.pandapower_calls, args.repeats, args.min_seconds = "1,1024", 10, 1, 0.1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # pandapower's advice to install numba
    warnings.simplefilter("ignore", DeprecationWarning)
    import pandapower

    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pandapower": pandapower.__version__,
            "numba": importlib.util.find_spec("numba") is not None,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "repeats": args.repeats,
        },
        "pandapower": {},
        "rows": [],
    }
    for network in networks:
        points = operating_points(network, max(batches + [args.pandapower_calls]), args.seed)
        ref = time_pandapower(network, points, args)
        error = worst_error(network, points, ref.pop("vm"), args)
        report["pandapower"][network] = {**ref, "worst_vm_error": error}
        for batch in batches:
            row = time_marra(network, points, batch, args)
            row["ratio"] = row["copies_per_second"] * ref["seconds_per_call"]
            report["rows"].append(row)
    print_table(report, args.markdown)
    if args.baselines > 0:
        barriers = [b.strip() for b in args.baseline_barriers.split(",") if b.strip()]
        report["baselines"] = run_baselines(args.baselines, barriers, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
