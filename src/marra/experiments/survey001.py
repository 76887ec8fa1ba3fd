"""``marra reproduce survey001``: paper 001's reproduction plan and first experiments on marra's
33-bus voltage task.

Paper 001 (``001_cb5afdb772d19b76.txt``, a survey of multi-agent reinforcement learning for
resource allocation) plans CTDE MAPPO on the MAPDN power-grid task against rule-based
baselines, and names its first experiments: an independent-learner baseline (IQL), CTDE against
independent learners (QMIX, MADDPG), and a scalability stress test from 10 to 1,000 agents. This
module runs all of it, one command:

1. **The voltage grid**, a sweep (:mod:`marra.experiments.sweep`, local process pool or Ray) in
   ``out/training``: on ``voltage`` (MAPDN's 33-bus case, ``l1`` barrier, synthetic profiles)
   ``no-control``, ``droop``, IPPO, MAPPO and MADDPG (and the ``opf`` oracle in the full run);
   on ``voltage-discrete`` (the same task with 7 reactive-power set-points per inverter, so
   that value-based learners apply) IQL and QMIX, with the rounded ``no-control`` and ``droop``
   for reference. ``q_weight`` is 0.01, not MAPDN's 0.1: with 0.1 and the ``l1`` barrier doing
   nothing is the optimal policy on this feeder (``docs/envs/voltage.md``, "What the reward
   asks for"), so a learner that learns well learns to do nothing. Every learner trains with
   separate parameters per inverter (``sharing = "none"``, MAPDN's ``shared_params: False``)
   and MAPDN's discount 0.99; the value-based learners and MADDPG standardise each batch's
   rewards (MAPDN's ``reward_normalisation``).
2. **Tables** (``survey_table.csv``, ``summary.md``): per method ``controllable_rate``,
   ``out_of_band``, ``q_loss``, ``power_loss`` and ``return``, mean ± std over seeds of each
   seed's mean over the evaluation episodes (the same seeded episodes for every method).
3. **Learning curves** (``learning_curves.csv``, ``learning_curves.png``): every learner's
   training ``return`` and ``controllable_rate`` against env-steps, mean ± std over seeds.
4. **The matrix games** (``matrix_games.csv``): the QMIX paper's two-step game under uniform
   exploration (IQL, VDN, QMIX: the greedy return) and the WQMIX paper's matrix game (QMIX,
   CW-QMIX: the greedy joint action).
5. **The scaling table** (``scaling.csv``): ``roles`` with 10, 100 and 1,000 agents (10 and 100
   with ``--quick``), IPPO and MAPPO with identity-conditioned sharing, QMIX, and IPPO without
   sharing: training agent-steps/s, seconds per iteration and parameters, measured here in one
   process (``benchmarks/scaling.py`` is the full study: 10,000 agents, peak memory per
   configuration, quality at a fixed budget, growth exponents).

A rerun with the same ``out`` resumes the sweep (finished cells are reused).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marra._io import atomic_write_text

__all__ = ["SurveyBudget", "survey_spec", "reproduce_survey001", "METRICS", "Q_WEIGHT"]

#: the reward weight of |q| used throughout (MAPDN's 0.1 makes no control optimal here)
Q_WEIGHT = 0.01
#: the reported metrics, in table order (name, label, direction)
METRICS = (
    ("controllable_rate", "controllable rate", "higher"),
    ("out_of_band", "out of band", "lower"),
    ("q_loss", "q loss (MVAr)", "lower"),
    ("power_loss", "power loss (MW)", "lower"),
    ("return", "return", "higher"),
)
LEARNERS = ("ippo", "mappo", "maddpg", "iql", "qmix")


@dataclass(frozen=True)
class SurveyBudget:
    """Sizes of a survey run; :meth:`full` and :meth:`quick` are the presets.

    Attributes:
        seeds: training and evaluation seeds of every method.
        episodes: evaluation episodes per seed (one 12-hour day each).
        steps: env-steps per learner (one env-step = 3 minutes of one feeder copy).
        num_envs: feeder copies each learner steps together.
        oracle: include the ``opf`` oracle (slow: 40 gradient steps of the power flow a step).
        matrix_seeds: seeds of each matrix-game learner.
        scaling_agents: sizes of the scaling table.
        scaling_iterations: iterations per scaling configuration (the first is not timed).
    """

    seeds: tuple[int, ...] = (1, 2, 3)
    episodes: int = 16
    steps: int = 96_000
    num_envs: int = 8
    oracle: bool = True
    matrix_seeds: tuple[int, ...] = (0, 1, 2)
    scaling_agents: tuple[int, ...] = (10, 100, 1000)
    scaling_iterations: int = 3
    horizon: int = 240

    @classmethod
    def full(cls) -> SurveyBudget:
        """400 training episodes of 240 steps per learner (MAPDN's ``train_episodes_num``)."""
        return cls()

    @classmethod
    def quick(cls) -> SurveyBudget:
        """Minutes: 2 seeds, 4 evaluation days, 2 iterations of 4 copies per learner."""
        return cls(seeds=(1, 2), episodes=4, steps=1920, num_envs=4, oracle=False,
                   matrix_seeds=(0,), scaling_agents=(10, 100), scaling_iterations=2)  # fmt: skip


def _learner_methods(budget: SurveyBudget) -> list[dict[str, Any]]:
    steps = {"steps": budget.steps, "num_envs": budget.num_envs}
    start = min(budget.steps // 2, 4 * budget.num_envs * budget.horizon)
    replay = {"learning_starts": start, "reward_normalisation": True}
    q = {**replay, "epsilon_anneal_steps": max(1, budget.steps // 2)}
    return [
        {"name": "IPPO", "algo": "ippo", "sharing": "none", **steps, "envs": ["voltage"]},
        {"name": "MAPPO", "algo": "mappo", "sharing": "none", "critic": "state", **steps,
         "envs": ["voltage"]},
        {"name": "MADDPG", "algo": "maddpg", "sharing": "none", **steps, **replay,
         "replay_ratio": 16.0, "envs": ["voltage"]},
        {"name": "IQL (7 set-points)", "algo": "iql", "sharing": "none", **steps, **q,
         "envs": ["voltage-discrete"]},
        {"name": "QMIX (7 set-points)", "algo": "qmix", "sharing": "none", **steps, **q,
         "envs": ["voltage-discrete"]},
    ]  # fmt: skip


def survey_spec(budget: SurveyBudget) -> Any:
    """The voltage grid as a sweep SPEC (:class:`~marra.experiments.sweep.SweepSpec`)."""
    from marra.experiments.sweep import parse_spec

    options = {"q_weight": Q_WEIGHT, "horizon": budget.horizon}
    baselines: list[dict[str, Any]] = [
        {"name": "no-control", "baseline": "no-control", "envs": ["voltage"]},
        {"name": "droop", "baseline": "droop", "envs": ["voltage"]},
        {"name": "no-control (7 set-points)", "baseline": "no-control",
         "envs": ["voltage-discrete"]},
        {"name": "droop (7 set-points)", "baseline": "droop", "envs": ["voltage-discrete"]},
    ]  # fmt: skip
    if budget.oracle:
        baselines.append({"name": "opf (oracle)", "baseline": "opf", "envs": ["voltage"]})
    return parse_spec(
        {
            "title": "survey001: the 33-bus voltage task",
            "seeds": list(budget.seeds),
            "episodes": budget.episodes,
            "envs": [
                {"name": "voltage", "label": "voltage", "options": options},
                {"name": "voltage-discrete", "label": "voltage-discrete", "options": options},
            ],
            "methods": baselines + _learner_methods(budget),
            "report": {
                "higher_is_better": ["controllable_rate", "return"],
                "lower_is_better": ["out_of_band", "q_loss", "power_loss"],
            },
        }
    )


# ---------------------------------------------------------------------------- the tables
def method_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {metric: (mean, std)}}`` over seeds of the per-seed means over episodes
    (population std; 0 with one seed)."""
    per_seed: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        key = (str(row["method"]), str(row["metric"]), int(row["seed"]))
        per_seed.setdefault(key, []).append(float(row["value"]))
    by_method: dict[str, dict[str, list[float]]] = {}
    for (method, metric, _), values in per_seed.items():
        by_method.setdefault(method, {}).setdefault(metric, []).append(float(np.mean(values)))
    return {
        method: {m: (float(np.mean(v)), float(np.std(v))) for m, v in metrics.items()}
        for method, metrics in by_method.items()
    }


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def learning_curves(training: Path, plan: Any) -> list[dict[str, Any]]:
    """Every learner cell's ``train_log.csv`` as rows ``method, seed, env_steps, return,
    controllable_rate, q_loss``."""
    from marra.experiments.sweep import cell_dir

    rows = []
    for entry in plan.grid:
        log = cell_dir(training, entry.cell) / "train_log.csv"
        if not log.exists():
            continue
        for row in _read_rows(log):
            rows.append({
                "method": entry.method, "seed": entry.seed, "env_steps": int(row["env_steps"]),
                **{k: _float(row.get(k)) for k in ("return", "controllable_rate", "q_loss")},
            })  # fmt: skip
    return rows


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plot_curves(rows: list[dict[str, Any]], table: dict[str, Any], path: Path) -> None:
    """Training return and controllable rate against env-steps (mean ± std over seeds), with
    the no-control and droop evaluation levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = sorted({r["method"] for r in rows})
    for ax, metric, label in zip(axes, ("return", "controllable_rate"),
                                 ("training return (episode)", "controllable rate"),
                                 strict=True):  # fmt: skip
        for method in methods:
            steps = sorted({r["env_steps"] for r in rows if r["method"] == method})
            means, stds = [], []
            for s in steps:
                values = [r[metric] for r in rows if r["method"] == method and r["env_steps"] == s
                          and math.isfinite(r[metric])]  # fmt: skip
                means.append(np.mean(values) if values else math.nan)
                stds.append(np.std(values) if values else math.nan)
            m, sd = np.asarray(means), np.asarray(stds)
            ax.plot(steps, m, label=method)
            ax.fill_between(steps, m - sd, m + sd, alpha=0.2)
        for baseline, style in (("no-control", ":"), ("droop", "--")):
            if baseline in table and metric in table[baseline]:
                ax.axhline(table[baseline][metric][0], color="grey", linestyle=style,
                           label=f"{baseline} (evaluation)")  # fmt: skip
        ax.set_xlabel("env-steps (3 minutes of one feeder copy)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"survey001: learning on the 33-bus voltage task (q_weight {Q_WEIGHT})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- matrix games
def matrix_games(seeds: tuple[int, ...], folder: Path) -> list[dict[str, Any]]:
    """The two-step game (IQL, VDN, QMIX) and the WQMIX matrix game (QMIX, CW-QMIX) under
    uniform exploration; one row per learner and seed with the greedy outcome."""
    import torch

    from marra.envs.matrix_games import MatrixGame, TwoStepGame
    from marra.rl import QConfig, train

    uniform = QConfig(
        sharing="none", epsilon_start=1.0, epsilon_finish=1.0, num_envs=64, batch_size=128,
        replay_ratio=4.0, learning_starts=64, target_update_every=50, hidden=(32,),
        obs_norm=False, learning_rate=3e-3, checkpoint_every=1000,
    )  # fmt: skip
    rows = []
    for seed in seeds:
        for algo in ("iql", "vdn", "qmix"):
            config = uniform.replace(algo=algo, seed=seed, total_steps=6400)
            result = train(config, {}, env="two-step", out_dir=folder / f"two-step-{algo}-{seed}",
                           progress=False, make_env=TwoStepGame, overwrite=True)  # fmt: skip
            model = result.agent
            env = TwoStepGame(num_envs=1)
            obs, total, actions = env.reset(seed=0), 0.0, []
            for _ in range(2):
                with torch.no_grad():
                    action = model.actor.act(obs, model.groups(), env.action_mask())
                actions.append("".join("AB"[int(a)] for a in action[0]))
                step = env.step(action)
                total += float(step.reward[0, 0])
                obs = step.obs
            rows.append({"game": "two-step (QMIX paper)", "algo": algo, "seed": seed,
                         "greedy": " then ".join(actions), "return": total, "optimum": 8.0,
                         "optimal": total == 8.0})  # fmt: skip
        for algo in ("qmix", "wqmix"):
            config = uniform.replace(algo=algo, seed=seed, total_steps=3200, num_envs=128)
            result = train(config, {}, env="matrix-game", out_dir=folder / f"matrix-{algo}-{seed}",
                           progress=False, make_env=MatrixGame, overwrite=True)  # fmt: skip
            with torch.no_grad():
                q = result.agent.utilities(torch.ones(1, 2, 1), None)[0]
            joint = tuple(int(a) for a in q.argmax(-1))
            value = _wqmix_payoff(joint)
            rows.append({"game": "matrix (WQMIX paper)", "algo": algo, "seed": seed,
                         "greedy": str(joint), "return": value, "optimum": 8.0,
                         "optimal": joint == (0, 0)})  # fmt: skip
    return rows


def _wqmix_payoff(joint: tuple[int, int]) -> float:
    from marra.envs.matrix_games import WQMIX_PAYOFF

    return float(WQMIX_PAYOFF[joint[0]][joint[1]])


# ---------------------------------------------------------------------------- scaling
def scaling_table(budget: SurveyBudget, folder: Path) -> list[dict[str, Any]]:
    """Training throughput and parameters on ``roles`` (4 roles, horizon 10, 16 copies) for
    the survey's scalability stress test, in this process (no per-configuration memory)."""
    from marra.rl import PPOConfig, QConfig, train

    methods = {
        "IPPO (PS-id)": PPOConfig(algo="ippo", sharing="id"),
        "MAPPO (PS-id, state critic)": PPOConfig(algo="mappo", sharing="id", critic="state"),
        "QMIX (PS-id)": QConfig(algo="qmix", sharing="id", buffer_episodes=64,
                                learning_starts=0),
        "IPPO (NoPS)": PPOConfig(algo="ippo", sharing="none"),
    }  # fmt: skip
    rows = []
    for agents in budget.scaling_agents:
        options = {"num_agents": agents, "num_roles": 4, "horizon": 10}
        for label, base in methods.items():
            num_envs = 16 if agents <= 1000 else 2
            config = base.replace(
                num_envs=num_envs,
                seed=0,
                checkpoint_every=10**6,
                total_steps=budget.scaling_iterations * num_envs * 10,
            )
            result = train(config, options, env="roles", out_dir=folder / f"{label}-{agents}",
                           progress=False, overwrite=True)  # fmt: skip
            timed = result.history[1:] or result.history
            seconds = sum(r["rollout_s"] + r["update_s"] for r in timed)
            model = result.agent
            actor = sum(p.numel() for p in model.actor.parameters())
            total = sum(p.numel() for p in model.parameters())
            rows.append({
                "method": label, "agents": agents, "num_envs": num_envs,
                "agent_steps_per_s": len(timed) * num_envs * 10 * agents / seconds,
                "s_per_iteration": seconds / len(timed), "actor_parameters": actor,
                "critic_parameters": total - actor,
                "accuracy": float(result.final.get("accuracy", math.nan)),
            })  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- the run
def _csv_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _fmt(stats: tuple[float, float] | None, digits: int = 3) -> str:
    if stats is None:
        return ""
    mean, std = stats
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass
class SurveyResult:
    out: Path
    table: dict[str, dict[str, tuple[float, float]]]
    matrix: list[dict[str, Any]]
    scaling: list[dict[str, Any]]
    wall_s: float
    files: dict[str, str] = field(default_factory=dict)


def reproduce_survey001(
    out: str | Path,
    *,
    quick: bool = False,
    budget: SurveyBudget | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    console: Any = None,
) -> SurveyResult:
    """Run the whole survey reproduction into ``out`` (see the module docstring).

    Raises:
        SweepError: a cell of the voltage grid failed (``out/training/failures.csv``).
        SpecError: a bad argument (the message names it), or ``out/training`` holds a sweep of
            another budget; bad arguments are refused before anything is written.
    """
    from marra.experiments._reproduction import check_arguments, run_training_grid, stage_printer
    from marra.experiments.sweep import plan_sweep

    budget, out = check_arguments(budget, SurveyBudget, quick=quick, backend=backend,
                                  workers=workers, address=address, out=out)  # fmt: skip
    spec = survey_spec(budget)  # checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say = stage_printer(console)

    say("[bold]survey001: the voltage grid (sweep)")
    outcome = run_training_grid("survey001", spec, out, backend=backend, workers=workers,
                                address=address, progress=progress, console=console)  # fmt: skip
    rows = _read_rows(outcome.results_path)
    table = method_table(rows)
    table_rows = [
        {"method": method, "metric": metric, "mean": stats[metric][0], "std": stats[metric][1],
         "seeds": len(budget.seeds)}
        for method, stats in table.items() for metric, _, _ in METRICS if metric in stats
    ]  # fmt: skip
    atomic_write_text(out / "survey_table.csv", _csv_text(table_rows))
    curves = learning_curves(out / "training", plan_sweep(spec))
    atomic_write_text(out / "learning_curves.csv", _csv_text(curves))
    if curves:
        plot_curves(curves, table, out / "learning_curves.png")

    say("[bold]survey001: the matrix games")
    matrix = matrix_games(budget.matrix_seeds, out / "matrix_games")
    atomic_write_text(out / "matrix_games.csv", _csv_text(matrix))
    say("[bold]survey001: the scaling table (roles)")
    scaling = scaling_table(budget, out / "scaling")
    atomic_write_text(out / "scaling.csv", _csv_text(scaling))

    wall_s = time.perf_counter() - started
    summary = _summary(budget, table, matrix, scaling, wall_s)
    atomic_write_text(out / "summary.md", summary)
    import marra

    manifest = {
        "command": "reproduce survey001",
        "marra_version": marra.__version__,
        "budget": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(budget).items()},
        "q_weight": Q_WEIGHT,
        "backend": backend,
        "wall_s": wall_s,
        "sweep": str(out / "training"),
        "learners": _learner_methods(budget),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    files = {name: str(out / name) for name in ("summary.md", "survey_table.csv",
             "learning_curves.csv", "learning_curves.png", "matrix_games.csv", "scaling.csv",
             "manifest.json") if (out / name).exists()}  # fmt: skip
    return SurveyResult(out, table, matrix, scaling, wall_s, files)


def _summary(budget: SurveyBudget, table: dict[str, Any], matrix: list[dict[str, Any]],
             scaling: list[dict[str, Any]], wall_s: float) -> str:  # fmt: skip
    lines = [
        "# survey001: MARL on the 33-bus voltage task",
        "",
        f"MAPDN's 33-bus case (`voltage`, `l1` barrier, synthetic profiles), `q_weight` "
        f"{Q_WEIGHT} (MAPDN's 0.1 makes no control optimal on this feeder). "
        f"{len(budget.seeds)} seeds ({', '.join(map(str, budget.seeds))}); each seed's "
        f"{budget.episodes} evaluation days (240 steps of 3 minutes, the same days for every "
        f"method); learners trained {budget.steps:,} env-steps each ({budget.num_envs} copies). "
        "Mean ± std over seeds of the per-seed means.",
        "",
        "| method | " + " | ".join(label for _, label, _ in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for method, stats in table.items():
        cells = [_fmt(stats.get(metric)) for metric, _, _ in METRICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Higher is better for the controllable rate and the return, lower for the rest. The "
        "`(7 set-points)` rows play the discretised task (`voltage-discrete`); `opf (oracle)` "
        "knows each step's loads and PV and is an upper bound, not a controller.",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Matrix games (uniform exploration)",
        "",
        "| game | learner | seed | greedy | return | optimal |",
        "|---|---|---:|---|---:|---|",
    ]
    for r in matrix:
        lines.append(f"| {r['game']} | {r['algo']} | {r['seed']} | {r['greedy']} | "
                     f"{r['return']:g} | {'yes' if r['optimal'] else 'no'} |")  # fmt: skip
    lines += [
        "",
        "## Scaling on roles (this process; `benchmarks/scaling.py` is the full study)",
        "",
        "| method | agents | copies | agent-steps/s | s/iteration | actor params | "
        "critic/mixer params |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in scaling:
        lines.append(
            f"| {r['method']} | {r['agents']:,} | {r['num_envs']} | "
            f"{r['agent_steps_per_s']:,.0f} | {r['s_per_iteration']:.2f} | "
            f"{r['actor_parameters']:,} | {r['critic_parameters']:,} |"
        )
    lines += ["", f"Wall time {wall_s:.0f} s. Comparison with MAPDN: `docs/reproduction.md`.", ""]
    return "\n".join(lines)
