"""The scaling study: how training cost, memory, parameters and policy quality grow from 10 to
10,000 agents, for parameter-shared and separate learners and for centralised critics.

Methods (``--methods``):

- ``ippo-ps``: IPPO with parameter sharing (``id`` sharing on ``roles``, whose agents can only
  be told apart by their identity; ``full`` elsewhere), local critics;
- ``mappo-ps``: MAPPO, shared actor, the ``state`` critic (``env.state()``, a fixed-size vector
  on roles and hospital; on ride-hailing it grows with the cells);
- ``mappo-pool``: MAPPO with the ``pool`` critic (per-agent encoder, mean/max pooling);
- ``qmix-ps``: QMIX, shared agent utilities, the hypernetwork mixer on the state (discrete
  actions: ``roles`` only);
- ``maddpg-ps``: MADDPG, shared deterministic actor, a critic on the state and the JOINT action
  (continuous actions: ``hospital`` only), the concatenating critic for comparison;
- ``ippo-nops``: IPPO with separate parameters per agent (not at 10,000 agents).

Environments (``--envs``): ``roles`` (4 roles, horizon 10), ``hospital`` (random hospitals,
static scenario, horizon 50, budget one staff per hospital) and ``ride-hailing`` (city 1's
rates on a ``size x size`` grid of cells: 9, 100 and 1,024 cells, the env's largest; its
agents are cells, so 10,000 is not offered).

Phases (``--phases``):

- ``throughput``: each configuration trains in its own subprocess (so ``ru_maxrss`` is its own
  peak resident memory) for ``--iterations`` iterations, one torch thread; the first iteration
  warms up and is not timed. The largest sizes run fewer copies (an iteration holds at most
  160,000 agent-steps on roles, 80,000 on hospital, 16,000 on ride-hailing; the table gives the
  copies). Reported: agent-steps/s of the whole loop (rollout + update),
  seconds per iteration, the rollout's share, peak RSS, parameters of the actor (agent
  utilities) and of the critic (mixer), and a component timing: forward + backward of the
  actor and of the critic (mixer) alone on a batch of 64 states, so the centralised part's
  growth is measured apart from the environment's.
- ``quality``: a fresh subprocess per configuration trains for a FIXED budget of agent-steps
  (``--budget``, rounded up to whole iterations; the copies shrink with the agents so that
  large runs still take several iterations) and scores the greedy policy on 16 seeded episodes
  (``roles``: accuracy, higher is better, random 0.25; ``hospital``: MAE, lower is better,
  next to ``hold``).
- ``learners``: the value-based learners against the PPO family on ``roles`` with 100 agents
  (``id`` sharing), throughput as above.

The growth exponent ``b`` of ``cost = a * agents^b`` is fitted on log-log axes for the cost per
agent-step (0: total cost linear in the agents), peak memory, parameters and component times.

Usage::

    python benchmarks/scaling.py                      # everything (long: an hour on 2 busy cores)
    python benchmarks/scaling.py --quick              # 10 and 100 agents, roles, 2 iterations
    python benchmarks/scaling.py --phases learners    # the 100-agent learner figure only

Writes ``benchmarks/results/scaling.json`` (``--out``); ``--markdown`` prints the tables.
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

METHODS = ("ippo-ps", "mappo-ps", "mappo-pool", "qmix-ps", "maddpg-ps", "ippo-nops")
LEARNERS = ("ippo", "mappo", "iql", "vdn", "qmix", "wqmix")
#: per environment: agents -> options, the throughput run's copies and steps, methods it takes
ENVS: dict[str, dict[str, Any]] = {
    "roles": {
        "sizes": (10, 100, 1000, 10_000),
        "options": lambda n: {"num_agents": n, "num_roles": 4, "horizon": 10},
        "num_envs": 16, "rollout_steps": None, "iteration_agent_steps": 160_000, "ps": "id",
        "metric": "accuracy",
        "methods": ("ippo-ps", "mappo-ps", "mappo-pool", "qmix-ps", "ippo-nops"),
    },
    "hospital": {
        "sizes": (10, 100, 1000, 10_000),
        "options": lambda n: {"n_hospitals": n, "horizon": 50, "transfer_budget": float(n)},
        "num_envs": 8, "rollout_steps": 10, "iteration_agent_steps": 80_000, "ps": "full",
        "metric": "mae",
        "methods": ("ippo-ps", "mappo-ps", "mappo-pool", "maddpg-ps", "ippo-nops"),
    },
    "ride-hailing": {
        "sizes": (9, 100, 1024),
        "options": lambda n: {"size": round(math.sqrt(n))},
        "num_envs": 2, "rollout_steps": 8, "iteration_agent_steps": 16_000, "ps": "full",
        "metric": "gmv",
        "methods": ("ippo-ps", "mappo-ps", "mappo-pool", "ippo-nops"),
    },
}  # fmt: skip


def make_config(method: str, env: str, n: int, *, num_envs: int, rollout_steps: int | None,
                total_steps: int, seed: int = 0) -> Any:  # fmt: skip
    """The learner config of ``method`` (or of a plain algorithm name, ``learners`` phase)."""
    from marra.rl import MADDPGConfig, PPOConfig, QConfig

    ps = ENVS[env]["ps"]
    run = {"num_envs": num_envs, "rollout_steps": rollout_steps, "total_steps": total_steps,
           "seed": seed, "checkpoint_every": 10**6}  # fmt: skip
    if method in ("ippo", "mappo"):
        return PPOConfig(algo=method, sharing=ps, **run)
    # value-based: epsilon anneals over the first half of the run, whatever its length
    q_run = {**run, "buffer_episodes": 200, "learning_starts": 0,
             "epsilon_anneal_steps": max(1, total_steps // 2)}  # fmt: skip
    if method in ("iql", "vdn", "qmix", "wqmix"):
        return QConfig(algo=method, sharing=ps, **q_run)
    if method == "ippo-ps":
        return PPOConfig(algo="ippo", sharing=ps, **run)
    if method == "mappo-ps":
        return PPOConfig(algo="mappo", sharing=ps, critic="state", **run)
    if method == "mappo-pool":
        return PPOConfig(algo="mappo", sharing=ps, critic="pool", **run)
    if method == "ippo-nops":
        return PPOConfig(algo="ippo", sharing="none", **run)
    if method == "qmix-ps":
        return QConfig(algo="qmix", sharing=ps, **q_run)
    if method == "maddpg-ps":
        return MADDPGConfig(sharing=ps, buffer_episodes=64, learning_starts=0, **run)
    raise ValueError(f"unknown method {method!r}")


def _time_fwd_bwd(fn: Any, repeats: int = 10) -> float:
    """The fastest of ``repeats`` timings of ``fn().sum().backward()`` (the least disturbed by
    other processes on a shared machine)."""
    times = []
    for _ in range(repeats + 1):
        tick = time.perf_counter()
        fn().sum().backward()
        times.append(time.perf_counter() - tick)
    return min(times[1:])


def build_networks(spec: Any, config: Any) -> Any:
    """The learner's networks alone (no replay buffer)."""
    from marra.rl import MADDPGConfig, QConfig, build_model
    from marra.rl.maddpg import build_maddpg_model
    from marra.rl.qlearning import build_q_model

    if isinstance(config, QConfig):
        return build_q_model(spec, config)
    if isinstance(config, MADDPGConfig):
        return build_maddpg_model(spec, config)
    return build_model(spec, config)


def components(model: Any, spec: Any, batch: int = 64) -> dict[str, float]:
    """Forward + backward seconds of the actor alone and of the critic (mixer) alone on a batch
    of ``batch`` states, and their parameter counts."""
    import torch

    n, d = spec.num_agents, spec.obs_dim
    obs = torch.randn(batch, n, d)
    state = torch.randn(batch, spec.state_dim)
    groups = model.groups()
    actor = model.actor
    out: dict[str, float] = {"actor_parameters": sum(p.numel() for p in actor.parameters())}
    out["actor_s"] = _time_fwd_bwd(lambda: actor(obs, groups))
    if hasattr(model, "critic") and hasattr(model.critic, "kind"):  # the PPO family
        critic = model.critic
        out["critic_parameters"] = sum(p.numel() for p in critic.parameters())
        out["critic_s"] = _time_fwd_bwd(lambda: critic(obs, state, groups))
    elif getattr(model, "mixer", None) is not None:  # QMIX (and CW-QMIX's central Q*)
        mixer = model.mixer
        q = torch.randn(batch, n, requires_grad=True)
        central = [m for m in (model.central, model.central_mixer) if m is not None]
        out["critic_parameters"] = sum(p.numel() for m in (mixer, *central) for p in m.parameters())
        out["critic_s"] = _time_fwd_bwd(lambda: mixer(q, state))
    elif hasattr(model, "critic"):  # MADDPG: state and joint action
        critic = model.critic
        actions = torch.rand(batch, n, int(spec.action.dim))
        out["critic_parameters"] = sum(p.numel() for p in critic.parameters())
        out["critic_s"] = _time_fwd_bwd(lambda: critic(state, actions, obs, groups))
    else:
        out["critic_parameters"], out["critic_s"] = 0, 0.0
    return out


def run_one(phase: str, env: str, method: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in this process."""
    import torch

    import marra.envs
    from marra.rl import train

    torch.set_num_threads(1)
    info = ENVS[env]
    options = info["options"](n)
    spec = marra.envs.make(env, **options).spec
    steps = int(info["rollout_steps"] or spec.horizon)
    num_envs = int(info["num_envs"])
    if phase == "quality":
        # copies shrink with the agents so that the budget still makes >= 4 iterations
        num_envs = max(1, min(num_envs, args.budget // (4 * steps * spec.num_agents)))
        iterations = max(2, math.ceil(args.budget / (num_envs * steps * spec.num_agents)))
    else:  # fewer copies of the largest sizes: an iteration of at most about this many
        cap = int(info["iteration_agent_steps"]) // (steps * spec.num_agents)
        num_envs = max(1, min(num_envs, cap))
        iterations = args.iterations
    config = make_config(method, env, n, num_envs=num_envs, rollout_steps=info["rollout_steps"],
                         total_steps=iterations * num_envs * steps)  # fmt: skip
    torch.manual_seed(0)
    parts = components(build_networks(spec, config), spec) if phase != "quality" else {}
    with tempfile.TemporaryDirectory(prefix="marra-scaling-") as out:
        result = train(config, options, env=env, out_dir=out, progress=False)
        quality = _quality(result, env, options, info["metric"]) if phase == "quality" else {}
    timed = result.history[1:] or result.history  # the first iteration warms up
    seconds = sum(row["rollout_s"] + row["update_s"] for row in timed)
    agent_steps = len(timed) * num_envs * steps * spec.num_agents
    row: dict[str, Any] = {
        "phase": phase, "env": env, "method": method, "agents": spec.num_agents,
        "num_envs": num_envs, "rollout_steps": steps, "iterations": result.iterations,
        "agent_steps_total": result.env_steps * spec.num_agents,
        "agent_steps_per_s": agent_steps / seconds,
        "us_per_agent_step": 1e6 * seconds / agent_steps,
        "s_per_iteration": seconds / len(timed),
        "rollout_share": sum(r["rollout_s"] for r in timed) / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "train_wall_s": result.wall_s,
        **parts,
    }  # fmt: skip
    row.update(quality)
    return row


def _quality(result: Any, env: str, options: dict[str, Any], metric: str) -> dict[str, float]:
    """The greedy policy and a reference on the same 16 seeded episodes."""
    import torch

    from marra.experiments.evaluate import BaselineRunner, PolicyRunner, evaluate
    from marra.rl import load_policy

    policy = load_policy(result.policy_path)
    reference = {"roles": "random", "hospital": "hold", "ride-hailing": "greedy"}[env]
    with torch.inference_mode():
        evaluation = evaluate(env, options, {"policy": PolicyRunner(policy),
                                             reference: BaselineRunner(reference, seed=0)},
                              episodes=16, seed=12345)  # fmt: skip
    summary = evaluation.summary
    return {
        "metric": metric,
        "quality": summary["policy"][metric]["mean"],
        "quality_std": summary["policy"][metric]["std"],
        "reference": reference,
        "reference_quality": summary[reference][metric]["mean"],
    }


def _subprocess(phase: str, env: str, method: str, n: int, args: argparse.Namespace
                ) -> dict[str, Any]:  # fmt: skip
    command = [
        sys.executable, __file__, "--one", phase, env, method, str(n),
        "--iterations", str(args.iterations), "--budget", str(args.budget),
    ]  # fmt: skip
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    tick = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environ, cwd=ROOT,
                          timeout=args.timeout)  # fmt: skip
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        if done.returncode in (-9, 137):
            reason = "killed (out of memory)"
        return {"phase": phase, "env": env, "method": method, "agents": n, "error": reason[:300],
                "wall_s": time.perf_counter() - tick}  # fmt: skip
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - tick
    return row


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares exponent b of y = a * x^b on log-log axes."""
    points = [(x, y) for x, y in points if x > 0 and y and y > 0]
    if len(points) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def exponents(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """The growth exponents per (phase, env, method)."""
    keys = ("us_per_agent_step", "s_per_iteration", "peak_rss_mib", "actor_parameters",
            "critic_parameters", "actor_s", "critic_s")  # fmt: skip
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "error" not in row and row["phase"] == "throughput":
            groups.setdefault(f"{row['env']}/{row['method']}", []).append(row)
    return {
        name: {k: _slope([(r["agents"], r.get(k)) for r in group]) for k in keys}
        for name, group in groups.items()
    }


def plan(args: argparse.Namespace) -> list[tuple[str, str, str, int]]:
    jobs = []
    envs = args.envs.split(",")
    methods = args.methods.split(",")
    for phase in args.phases.split(","):
        if phase == "learners":
            jobs += [("learners", "roles", algo, 100) for algo in LEARNERS]
            continue
        for env in envs:
            info = ENVS[env]
            sizes = [n for n in info["sizes"] if n <= args.max_agents]
            if phase == "quality":
                if env == "ride-hailing":
                    continue  # an iteration takes minutes: throughput only
                sizes = [n for n in sizes if n <= args.quality_max_agents]
            for method in methods:
                if method not in info["methods"]:
                    continue
                if phase == "quality" and method not in args.quality_methods.split(","):
                    continue
                for n in sizes:
                    if method == "ippo-nops" and n > args.nops_max_agents:
                        continue
                    jobs.append((phase, env, method, n))
    return jobs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", nargs=4, metavar=("PHASE", "ENV", "METHOD", "AGENTS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--phases", default="throughput,quality,learners")
    parser.add_argument("--envs", default="roles,hospital,ride-hailing")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--quality-methods", default="ippo-ps,mappo-ps,mappo-pool,qmix-ps,"
                        "ippo-nops")  # fmt: skip
    parser.add_argument("--max-agents", type=int, default=10_000)
    parser.add_argument("--nops-max-agents", type=int, default=1000)
    parser.add_argument("--quality-max-agents", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--budget", type=int, default=640_000,
                        help="agent-steps of each quality run")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per config")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="roles at 10 and 100 agents, 2 iterations, 64k-agent-step quality",
    )
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/scaling.json"))
    args = parser.parse_args(argv)
    if args.one:
        phase, env, method, n = args.one
        print(json.dumps(run_one(phase, env, method, int(n), args)))
        return {}
    if args.quick:
        args.envs, args.max_agents, args.iterations, args.budget = "roles", 100, 2, 64_000
    started = time.perf_counter()
    rows = []
    load_before = list(os.getloadavg())
    for phase, env, method, n in plan(args):
        row = _subprocess(phase, env, method, n, args)
        rows.append(row)
        if "error" in row:
            print(f"{phase:10s} {env:12s} {method:10s} {n:6,d}: FAILED {row['error']}",
                  flush=True)  # fmt: skip
            continue
        text = (f"{phase:10s} {env:12s} {method:10s} {n:6,d}: "
                f"{row['agent_steps_per_s']:>10,.0f} agent-steps/s {row['s_per_iteration']:7.2f} "
                f"s/it  peak {row['peak_rss_mib']:6.0f} MiB")  # fmt: skip
        if "quality" in row:
            text += f"  {row['metric']} {row['quality']:.3f} ({row['reference']} " \
                    f"{row['reference_quality']:.3f})"  # fmt: skip
        print(text, flush=True)
    import torch

    report = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
            "iterations": args.iterations,
            "budget_agent_steps": args.budget,
            "torch_threads": 1,
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()),
            "elapsed_s": time.perf_counter() - started,
        },
        "rows": rows,
        "exponents": exponents(rows),
    }
    print("\ncost per agent-step ~ agents^b (0: total cost linear in agents):")
    for key, values in report["exponents"].items():
        b = values["us_per_agent_step"]
        crit = values["critic_s"]
        print(
            f"  {key:24s} b = {b:.2f}" if b is not None else f"  {key:24s} b = n/a",
            f"critic b = {crit:.2f}" if crit is not None else "",
        )
    if args.markdown:
        print(markdown(rows))
    from marra._io import atomic_write_text

    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


def markdown(rows: list[dict[str, Any]]) -> str:
    """The throughput and quality tables as Markdown."""
    lines = ["| env | method | agents | agent-steps/s | s/iteration | peak RSS MiB | actor params "
             "| critic params | actor ms | critic ms |", "|---|---|---:|---:|---:|---:|---:|---:|"
             "---:|---:|"]  # fmt: skip
    for r in rows:
        if r.get("phase") not in ("throughput", "learners"):
            continue
        if "error" in r:
            lines.append(f"| {r['env']} | {r['method']} | {r['agents']:,} | {r['error']} |")
            continue
        lines.append(
            f"| {r['env']} | {r['method']} | {r['agents']:,} | {r['agent_steps_per_s']:,.0f} | "
            f"{r['s_per_iteration']:.2f} | {r['peak_rss_mib']:,.0f} | "
            f"{r.get('actor_parameters', 0):,} | {r.get('critic_parameters', 0):,} | "
            f"{1e3 * r.get('actor_s', 0):.1f} | {1e3 * r.get('critic_s', 0):.1f} |"
        )
    lines += ["", "| env | method | agents | copies | agent-steps | metric | policy | reference |",
              "|---|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    for r in rows:
        if r.get("phase") != "quality" or "error" in r:
            continue
        lines.append(
            f"| {r['env']} | {r['method']} | {r['agents']:,} | {r['num_envs']} | "
            f"{r['agent_steps_total']:,} | {r['metric']} | {r['quality']:.3f} ± "
            f"{r['quality_std']:.3f} | {r['reference']} {r['reference_quality']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
