"""``marra reproduce paper000``: Figures 1 and 2 of paper 000 and a summary.

Figure 1 (paper 000 section 4.1): 150 random hospitals, T = 50, scenarios *shifting targets* and
*sudden shock*; methods RL (PPO), QP, NWO, progressive taxation and hybrid re-planning from
scratch (as in the paper), the same four re-planners under the RL agent's per-step transfer
budget (the fair comparison), and greedy and hold as floors. Twenty simulations each.

Figure 2 (paper 000 section 4.2): the reward ablation: full reward, without fairness, without the
minima penalty, without target deviation; five independently trained agents ("trials") each,
evaluated on shifting targets.

Everything is written under ``out``: ``results.csv`` (tidy, as ``marra simulate``),
``manifest.json``, ``figure1_shifting.png``, ``figure1_shock.png``, ``figure2_ablation.png``,
``summary.md``, and ``training/`` (the training grid as a sweep, :mod:`marra.experiments.sweep`:
one cell per trained agent with its policy, logs and checkpoint, on a local process pool or a Ray
cluster). A rerun with the same ``out`` resumes: trained agents and finished simulations are
reused.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marra._io import atomic_write_text
from marra.experiments.results import merge_csv_parts, read_results, write_manifest
from marra.experiments.simulate import ClassicalMethod, SimulationSpec, run_simulation

PAPER_METHODS = ("qp", "nwo", "taxation", "hybrid")
FLOORS = ("greedy", "hold")
ABLATIONS = {
    "full": {"target": 1.0, "minima": 1.0, "fairness": 1.0},
    "no fairness": {"target": 1.0, "minima": 1.0, "fairness": 0.0},
    "no minima": {"target": 1.0, "minima": 0.0, "fairness": 1.0},
    "no target": {"target": 0.0, "minima": 1.0, "fairness": 1.0},
}
SUMMARY_METRICS = (
    ("mae", "MAE"),
    ("gini", "Gini"),
    ("coverage_gini", "coverage Gini"),
    ("mre_normalised", "MRE/N"),
    ("minima_shortfall", "below minima"),
    ("moved", "staff moved/step"),
    ("decision_seconds", "decision ms/step"),
)


@dataclass(frozen=True)
class ReproduceConfig:
    """Sizes of a reproduction run; :meth:`quick` and :meth:`full` are the two presets."""

    hospitals: int = 150
    horizon: int = 50
    seeds: int = 20
    train_steps: int = 400_000
    ablation_trials: int = 5
    ablation_train_steps: int = 60_000
    budget_per_hospital: float = 1.0
    seed: int = 1

    @classmethod
    def full(cls) -> ReproduceConfig:
        return cls()

    @classmethod
    def quick(cls) -> ReproduceConfig:
        return cls(seeds=3, train_steps=24_000, ablation_trials=2, ablation_train_steps=8_000)

    @property
    def budget(self) -> float:
        """The per-step transfer budget of the RL agent (and of the budgeted re-planners)."""
        return float(self.budget_per_hospital * self.hospitals)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=False)


FIGURE1_AGENT = "RL (PPO)"


def training_spec(config: ReproduceConfig) -> Any:
    """The reproduction's training grid as a sweep (:class:`~marra.experiments.sweep.SweepSpec`):
    the Figure 1 agent on each scenario (seed ``config.seed``) and, for Figure 2,
    ``ablation_trials`` agents per reward variant on shifting targets (seeds 1000 + trial); MAPPO
    with full sharing and PPOConfig's defaults otherwise, as ``marra train``."""
    from marra.experiments.sweep import parse_spec

    def env(scenario: str) -> dict[str, Any]:
        options = {"n_hospitals": config.hospitals, "scenario": scenario,
                   "horizon": config.horizon, "transfer_budget": config.budget}  # fmt: skip
        return {"name": "hospital", "label": scenario, "options": options}

    methods: list[dict[str, Any]] = [
        {"name": FIGURE1_AGENT, "steps": config.train_steps, "seeds": [config.seed],
         "env_options": {"reward_weights": ABLATIONS["full"]}}
    ]  # fmt: skip
    trials = [1000 + trial for trial in range(config.ablation_trials)]
    for label, weights in ABLATIONS.items():
        methods.append({"name": f"RL {label}", "steps": config.ablation_train_steps,
                        "seeds": trials, "envs": ["shifting"],
                        "env_options": {"reward_weights": weights}})  # fmt: skip
    return parse_spec({"title": "paper 000: the training grid", "seeds": [config.seed],
                       "episodes": 2, "envs": [env("shifting"), env("shock")],
                       "methods": methods})  # fmt: skip


def train_agents(
    out: Path,
    config: ReproduceConfig,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> dict[tuple[str, str, int], Path]:
    """Train (or resume, or reuse) every agent of :func:`training_spec` as a sweep in ``out``;
    return ``{(scenario, method label, seed): policy.pt}``.

    Raises:
        SweepError: an agent failed to train (the sweep's ``failures.csv`` has them all).
    """
    from marra.experiments.sweep import SweepError, cell_dir, plan_sweep, run_sweep

    spec = training_spec(config)
    outcome = run_sweep(spec, out, backend=backend, workers=workers, address=address,
                        progress=progress)  # fmt: skip
    if outcome.failures:
        first = outcome.failures[0]
        raise SweepError(
            f"training: {len(outcome.failures)} agent(s) failed, first {first['method']} on "
            f"{first['env']} seed {first['seed']}: {first['message']} (see "
            f"{out / 'failures.csv'}; rerun to retry)"
        )
    return {(g.env, g.method, g.seed): cell_dir(out, g.cell) / "policy.pt"
            for g in plan_sweep(spec).grid}  # fmt: skip


def reproduce_paper000(
    out: str | Path,
    *,
    quick: bool = False,
    config: ReproduceConfig | None = None,
    progress: bool = True,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run the whole reproduction into ``out``; returns paths and headline numbers.

    The agents are trained first, all at once, as one sweep in ``out/training``
    (:func:`train_agents`) on ``backend`` (``"local"``: a pool of ``workers`` processes;
    ``"ray"``: Ray tasks, on the cluster at ``address`` or a local Ray); the simulations then
    run here."""
    from marra.experiments.plots import plot_panels
    from marra.experiments.policy_method import PolicyMethod

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = config or (ReproduceConfig.quick() if quick else ReproduceConfig.full())
    console = _console()
    started = time.perf_counter()
    budget = config.budget
    seeds = list(range(config.seeds))
    sims: list[Path] = []
    console.rule(f"[bold]Training every agent ({backend} backend)")
    policies = train_agents(out / "training", config, backend=backend, workers=workers,
                            address=address, progress=progress)  # fmt: skip

    # ---- Figure 1: one agent per scenario, then every method on the same draws
    for scenario in ("shifting", "shock"):
        policy = policies[(scenario, FIGURE1_AGENT, config.seed)]
        methods: list[Any] = [
            PolicyMethod.from_file(policy, transfer_budget=budget, label=FIGURE1_AGENT)
        ]
        methods += [ClassicalMethod(m) for m in PAPER_METHODS]
        methods += [ClassicalMethod(m, transfer_budget=budget) for m in PAPER_METHODS + FLOORS]
        spec = SimulationSpec(
            scenario=scenario, seeds=seeds, steps=config.horizon, hospitals=config.hospitals
        )
        console.rule(f"[bold]Figure 1, {scenario}: {len(methods)} methods x {len(seeds)} seeds")
        sims.append(
            run_simulation(
                spec,
                methods,
                out / "simulations" / scenario,
                progress=progress,
                arguments={"figure": 1, "scenario": scenario, "budget": budget},
            )
        )

    # ---- Figure 2: the reward ablation, independently trained agents per trial
    ablation_methods = [
        (label, trial, policies[("shifting", f"RL {label}", 1000 + trial)])
        for label in ABLATIONS
        for trial in range(config.ablation_trials)
    ]
    ablation_parts = []
    for label, trial, policy in ablation_methods:
        method = PolicyMethod.from_file(policy, transfer_budget=budget, label=f"RL {label}")
        spec = SimulationSpec(
            scenario="shifting", seeds=[trial], steps=config.horizon, hospitals=config.hospitals
        )
        folder = out / "simulations" / "ablation" / label.replace(" ", "_") / f"trial{trial}"
        ablation_parts.append(
            run_simulation(
                spec,
                [method],
                folder,
                progress=False,
                scenario_label="ablation",
                arguments={"figure": 2, "ablation": label, "trial": trial},
            )
        )

    # ---- one tidy table, the figures and the summary, all from the CSV
    results = out / "results.csv"
    merge_csv_parts([*sims, *ablation_parts], results)
    frame = read_results(results)
    figures = []
    for scenario in ("shifting", "shock"):
        sub = frame[frame["scenario"] == scenario]
        title = "Figure 1: " + ("shifting targets" if scenario == "shifting" else "sudden shock")
        figures.append(
            plot_panels(
                sub,
                ("mae", "gini"),
                out / f"figure1_{scenario}.png",
                title=f"{title}, {config.hospitals} hospitals",
            )
        )
    figures.append(
        plot_panels(
            frame[frame["scenario"] == "ablation"],
            ("mae", "gini"),
            out / "figure2_ablation.png",
            title="Figure 2: reward ablation (shifting targets; spread over trials)",
        )
    )
    summary = write_summary(
        frame, out / "summary.md", config=config, wall_s=time.perf_counter() - started, quick=quick
    )
    write_manifest(
        out / "manifest.json",
        arguments={"paper": "000", "quick": quick, "out": str(out)},
        seeds=seeds,
        extra={
            "config": asdict(config),
            "budget": budget,
            "figures": [str(f) for f in figures],
            "training": {"backend": backend, "workers": workers, "address": address},
        },
    )
    console.print(
        f"results: {results}; figures: {', '.join(f.name for f in figures)}; "
        f"summary: {out / 'summary.md'} ({time.perf_counter() - started:.0f} s)"
    )
    return {"results": results, "figures": figures, "summary": summary}


def _per_seed_means(frame: Any, metric: str) -> Any:
    """Mean over steps for each (method, seed) of one metric: a Series indexed by both."""
    rows = frame[frame["metric"] == metric]
    return rows.groupby(["method", "seed"], sort=False)["value"].mean()


def summary_table(frame: Any) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """(method, {metric: (mean, std over seeds)}) rows, in the table's method order."""
    rows = []
    methods = list(dict.fromkeys(frame["method"]))
    per_metric = {m: _per_seed_means(frame, m) for m, _ in SUMMARY_METRICS}
    for method in methods:
        cells = {}
        for metric, _ in SUMMARY_METRICS:
            values = per_metric[metric].get(method)
            arr = np.asarray(values, dtype=float) if values is not None else np.array([np.nan])
            scale = 1000.0 if metric == "decision_seconds" else 1.0
            cells[metric] = (float(np.mean(arr)) * scale, float(np.std(arr)) * scale)
        rows.append((method, cells))
    return rows


def _markdown_table(frame: Any) -> str:
    header = "| method | " + " | ".join(label for _, label in SUMMARY_METRICS) + " |"
    lines = [header, "|" + " --- |" * (len(SUMMARY_METRICS) + 1)]
    for method, cells in summary_table(frame):
        values = [f"{cells[m][0]:.3f} ± {cells[m][1]:.3f}" for m, _ in SUMMARY_METRICS]
        lines.append(f"| {method} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _phase(frame: Any, method: str, metric: str, steps: range) -> float:
    rows = frame[
        (frame["method"] == method) & (frame["metric"] == metric) & frame["step"].isin(list(steps))
    ]
    return float(rows["value"].mean()) if len(rows) else float("nan")


def write_summary(
    frame: Any, path: Path, *, config: ReproduceConfig, wall_s: float, quick: bool
) -> Path:
    """``summary.md``: a table per scenario (mean ± std over seeds of per-run means)."""
    T = config.horizon
    lines = [
        "# Reproduction of paper 000 (Figures 1 and 2)",
        "",
        f"- {config.hospitals} random hospitals per seed, T = {T} steps, {config.seeds} seeds per "
        f"scenario{' (quick run: fewer seeds and training steps)' if quick else ''}.",
        f"- RL (PPO): shared actor, centralised critic; {config.train_steps:,} training env-steps "
        f"per scenario; per-step transfer budget B = {config.budget:g} staff "
        f"({config.budget_per_hospital:g} per hospital).",
        "- Re-planners without a budget re-plan from scratch each step (as in the paper); "
        "'(B=...)' rows give them the RL agent's budget. greedy and hold are floors.",
        f"- Ablation: {config.ablation_trials} independently trained agents per reward variant "
        f"({config.ablation_train_steps:,} env-steps each), evaluated on shifting targets.",
        "- Cells: mean ± std over seeds (trials for the ablation) of each run's mean over the "
        "steps. Lower is better everywhere. Wall time of the whole run: "
        f"{wall_s:.0f} s.",
        "",
    ]
    names = {"shifting": "Shifting targets", "shock": "Sudden shock", "ablation": "Ablation"}
    for scenario in ("shifting", "shock", "ablation"):
        sub = frame[frame["scenario"] == scenario]
        if sub.empty:
            continue
        lines += [f"## {names[scenario]}", "", _markdown_table(sub), ""]
        if scenario == "shock":
            half = T // 2
            rl = "RL (PPO)"
            before = _phase(sub, rl, "mae", range(half - 5, half))
            at = _phase(sub, rl, "mae", range(half, half + 1))
            after = _phase(sub, rl, "mae", range(T - 5, T))
            lines += [
                f"RL MAE in the 5 steps before the shock: {before:.3f}; at the shock step "
                f"{half}: {at:.3f}; in the last 5 steps: {after:.3f}.",
                "",
            ]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
