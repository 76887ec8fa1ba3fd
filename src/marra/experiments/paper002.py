"""``marra reproduce paper002``: paper 002's (DyPS) Tables 2-4 and 7, Figures 6 and 9, and the
``roles`` mechanism check, on marra's environments.

Paper 002 (``002_44b980e463756f11.txt``, Wang, Hao et al., KDD 2024) compares six
parameter-sharing schemes (NoPS, PS, PS-id, PSA, SePS, DyPS) with an IPPO backbone on seven
scenarios. Everything here runs as ONE sweep (:mod:`marra.experiments.sweep`) in
``out/training``, so a rerun resumes (finished cells are reused) and ``backend="ray"`` runs the
same grid on a cluster:

1. **Table 2**: every scheme on ``lbf`` (presets ``lbf-1``, ``lbf-2``), ``rware``
   (``rware-1``, ``rware-2``), ``ride-hailing`` (cities 1 and 2; GMV and ORR) and ``vaccine``
   (the synthetic "Medical": infections averted), mean ± std over seeds of each seed's mean over
   the evaluation episodes (the same seeded episodes for every method), best bold, second
   underlined, next to the paper's numbers.
2. **Table 3**: DyPS's ablations (``dyps_ablation`` ``no-cvae``, ``no-vlstm``, ``no-repr``) on
   both ride-hailing cities.
3. **Table 4**: DyPS on the IPPO and MAPPO backbones against the backbones alone on
   ride-hailing(2). The paper's IPPO is its NoPS (the same numbers); its MAPPO shares one set of
   parameters and the reward of all agents, so MAPPO here is ``mappo`` with full sharing and the
   environment's team reward (``reward="team"``), and DyPS+MAPPO the same with ``dyps``.
4. **Table 7**: the ``greedy`` and ``nearest`` rules (and ``fifo``, the public ``Nearest``'s list
   order; ``docs/envs/ride-hailing.md``) on both cities, next to the paper's.
5. **Figure 6(a)**: DyPS's score on ride-hailing(2) against the number of groups (2..6).
   **Figure 6(b)**: the grouping on the ride-hailing(2) grid at the start, middle and end of
   training (``groups.csv`` of the first seed's DyPS run) and the saved policy's greedy grouping,
   next to the city's order rates. **Figure 9**: learning curves on ride-hailing(2).
6. **The mechanism on** ``roles`` (identical observations, the reward says the role): SePS
   (Davies-Bouldin picks the number of clusters) and DyPS recover the true roles; the adjusted
   Rand index of the learned grouping against the roles (``sklearn.metrics.adjusted_rand_score``).

The training budgets are :class:`Paper002Budget`: the paper's Table 6 does not fit two cores,
so :meth:`Paper002Budget.full` trains far less and says so in ``summary.md``, which also gives
the command that runs :meth:`Paper002Budget.paper` (Table 6's budgets, 5 seeds) on a Ray
cluster. ``docs/reproduction.md`` compares the measured runs with the paper.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marra._io import atomic_write_text

__all__ = [
    "Paper002Budget",
    "Paper002Result",
    "paper002_spec",
    "paper002_methods",
    "budget_cpu_hours",
    "paper_budget_cpu_hours",
    "reproduce_paper002",
    "scores_by_method",
    "rank_marks",
    "SCHEMES",
    "ENV_CASES",
    "TABLE2_COLUMNS",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "PAPER_TABLE4",
    "PAPER_TABLE7",
    "CLUSTER_COMMAND",
]

#: Paper 002's sharing schemes (Table 2's rows) and marra's ``sharing`` for each.
SCHEMES: tuple[tuple[str, str], ...] = (
    ("NoPS", "none"), ("PS", "full"), ("PS-id", "id"), ("PSA", "psa"), ("SePS", "seps"),
    ("DyPS", "dyps"),
)  # fmt: skip
SCHEME_NAMES = tuple(name for name, _ in SCHEMES)
#: Table 3's rows: DyPS's ablations (``PPOConfig.dyps_ablation``).
ABLATIONS: tuple[tuple[str, str], ...] = (
    ("w/o CVAE", "no-cvae"), ("w/o VLSTM", "no-vlstm"), ("w/o Repr.", "no-repr"),
)  # fmt: skip


@dataclass(frozen=True)
class EnvCase:
    """One scenario of paper 002 as a sweep environment."""

    label: str
    name: str
    options: dict[str, Any]
    title: str
    family: str


#: Table 1's seven scenarios (``workers=0``: the LBF/RWARE adapters step their copies in the
#: sweep's worker process, which already holds one core).
ENV_CASES: tuple[EnvCase, ...] = (
    EnvCase("lbf-1", "lbf", {"preset": "lbf-1", "workers": 0}, "LBF (1)", "lbf"),
    EnvCase("lbf-2", "lbf", {"preset": "lbf-2", "workers": 0}, "LBF (2)", "lbf"),
    EnvCase("rware-1", "rware", {"preset": "rware-1", "workers": 0}, "RWARE (1)", "rware"),
    EnvCase("rware-2", "rware", {"preset": "rware-2", "workers": 0}, "RWARE (2)", "rware"),
    EnvCase("rh-1", "ride-hailing", {"city": "1"}, "Ride-Hailing (1)", "ride-hailing"),
    EnvCase("rh-2", "ride-hailing", {"city": "2"}, "Ride-Hailing (2)", "ride-hailing"),
    EnvCase("medical", "vaccine", {}, "Medical", "medical"),
)
CASES = {case.label: case for case in ENV_CASES}
#: The ``roles`` environments of the mechanism check (the tests' configurations).
ROLES_ENVS: dict[str, dict[str, int]] = {
    "roles-12x3": {"num_agents": 12, "num_roles": 3, "horizon": 10},
    "roles-8x4": {"num_agents": 8, "num_roles": 4, "horizon": 10},
}
#: Table 2's columns: (env label, metric, header). LBF's "return" is the team return (the
#: players' normalised rewards sum to 1 when every food is loaded), RWARE's the deliveries.
TABLE2_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("lbf-1", "team_return", "LBF (1) Return"),
    ("lbf-2", "team_return", "LBF (2) Return"),
    ("rware-1", "team_return", "RWARE (1) Return"),
    ("rware-2", "team_return", "RWARE (2) Return"),
    ("rh-1", "gmv", "Ride-Hailing (1) GMV"),
    ("rh-1", "orr", "Ride-Hailing (1) ORR"),
    ("rh-2", "gmv", "Ride-Hailing (2) GMV"),
    ("rh-2", "orr", "Ride-Hailing (2) ORR"),
    ("medical", "infections_averted", "Medical Infection Reduction"),
)
RH_COLUMNS = tuple(c for c in TABLE2_COLUMNS if c[0].startswith("rh-"))
#: Table 6: (actor = critic learning rate of the resource-allocation module, discount, group
#: selection learning rate) per family. Ride-hailing also takes the public DyPS code's PPO
#: settings (``run/run_lstm_hrl.py``: 5 episodes per update, 1 pass of 5 minibatches, no
#: annealing), which here learned as fast per env-step as marra's defaults at 2/3 of the cost.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "lbf": {"learning_rate": 5e-4, "critic_learning_rate": 5e-4, "gamma": 0.99,
            "dyps_selector_lr": 1e-5},
    "rware": {"learning_rate": 5e-4, "critic_learning_rate": 5e-4, "gamma": 0.99,
              "dyps_selector_lr": 1e-5},
    "ride-hailing": {"learning_rate": 1e-3, "critic_learning_rate": 1e-3, "gamma": 0.97,
                     "dyps_selector_lr": 1e-4, "update_epochs": 1, "num_minibatches": 5,
                     "anneal_lr": False},
    "medical": {"learning_rate": 1e-4, "critic_learning_rate": 1e-4, "gamma": 0.99,
                "dyps_selector_lr": 1e-5},
}  # fmt: skip
#: Table 6's training steps, read as env-steps (see ``docs/reproduction.md`` on ride-hailing's
#: 30k: the public code counts episodes, which would be 144 times more).
PAPER_STEPS = {
    "lbf-1": 1_000_000, "lbf-2": 1_000_000, "rware-1": 1_000_000, "rware-2": 1_000_000,
    "rh-1": 30_000, "rh-2": 30_000, "medical": 100_000,
}  # fmt: skip
#: Reference rules evaluated on the same episodes (not ranked with the learners).
RULES: dict[str, tuple[str, ...]] = {
    "lbf-1": ("random", "nearest"), "lbf-2": ("random", "nearest"),
    "rware-1": ("random",), "rware-2": ("random",),
    "rh-1": ("greedy", "nearest", "fifo"), "rh-2": ("greedy", "nearest", "fifo"),
    "medical": ("random", "pro-rata-population", "pro-rata-cases", "greedy"),
}  # fmt: skip

# --------------------------------------------------------------------- the paper's numbers
_P = tuple[float, float]
#: Paper 002 Table 2 (mean, std over 5 seeds), columns as :data:`TABLE2_COLUMNS`.
PAPER_TABLE2: dict[str, tuple[_P, ...]] = {
    "NoPS": ((0.31, 0.02), (0.91, 0.05), (2.0, 0.15), (0.35, 0.12), (230680, 2550), (0.40, 0.02),
             (519200, 4250), (0.20, 0.01), (253, 24)),
    "PS": ((0.25, 0.03), (0.83, 0.04), (2.5, 0.22), (1.21, 0.15), (250940, 2230), (0.43, 0.01),
           (542500, 4140), (0.23, 0.02), (345, 43)),
    "PS-id": ((0.52, 0.02), (0.91, 0.05), (4.6, 0.20), (10.45, 1.15), (260590, 2150),
              (0.45, 0.03), (556320, 3970), (0.24, 0.01), (378, 55)),
    "PSA": ((0.41, 0.03), (0.90, 0.03), (4.5, 0.18), (12.11, 2.12), (253920, 2080), (0.42, 0.03),
            (547500, 4270), (0.22, 0.03), (365, 68)),
    "SePS": ((0.61, 0.04), (0.96, 0.03), (6.0, 0.15), (33.21, 2.50), (257690, 2210),
             (0.43, 0.02), (545300, 4210), (0.23, 0.02), (452, 72)),
    "DyPS": ((0.68, 0.02), (0.98, 0.04), (6.7, 0.20), (35.41, 2.31), (318200, 2240),
             (0.66, 0.02), (713520, 3480), (0.35, 0.02), (539, 78)),
}  # fmt: skip
#: Paper 002 Table 3, columns as :data:`RH_COLUMNS` (its DyPS row on city 2 is Table 4's
#: DyPS+CoPO, not Table 2's DyPS).
PAPER_TABLE3: dict[str, tuple[_P, ...]] = {
    "w/o CVAE": ((305750, 2250), (0.65, 0.01), (859430, 4220), (0.48, 0.02)),
    "w/o VLSTM": ((301200, 2100), (0.64, 0.02), (865270, 4010), (0.49, 0.04)),
    "w/o Repr.": ((290990, 2190), (0.62, 0.03), (849260, 4190), (0.46, 0.03)),
    "DyPS": ((318200, 2240), (0.66, 0.02), (873810, 4080), (0.50, 0.01)),
}
#: Paper 002 Table 4 on ride-hailing(2): (GMV, ORR). CoPO is not built in marra.
PAPER_TABLE4: dict[str, tuple[_P, ...]] = {
    "IPPO": ((519200, 4250), (0.20, 0.01)),
    "DyPS+IPPO": ((713520, 3480), (0.35, 0.02)),
    "MAPPO": ((536300, 21040), (0.22, 0.01)),
    "DyPS+MAPPO": ((591460, 4705), (0.34, 0.02)),
    "CoPO": ((633410, 2100), (0.34, 0.02)),
    "DyPS+CoPO": ((873810, 4080), (0.50, 0.01)),
}
#: Paper 002 Table 7: (GMV, ORR) per city.
PAPER_TABLE7: dict[str, dict[str, tuple[float, float]]] = {
    "greedy": {"rh-1": (220770, 0.37), "rh-2": (539450, 0.23)},
    "nearest": {"rh-1": (162590, 0.37), "rh-2": (345180, 0.24)},
}

#: The command that runs Table 6's budgets on a Ray cluster (``OUT`` on a shared file system).
CLUSTER_COMMAND = (
    'python -c "from marra.experiments.paper002 import Paper002Budget, reproduce_paper002; '
    "reproduce_paper002('/shared/paper002', budget=Paper002Budget.paper(), backend='ray', "
    "address='auto')\""
)


# ---------------------------------------------------------------------------- the budget
@dataclass(frozen=True)
class Paper002Budget:
    """Sizes of a paper 002 run; :meth:`full`, :meth:`quick` and :meth:`paper` are the presets.

    Attributes:
        seeds: training and evaluation seeds of every method.
        episodes: evaluation episodes per cell (the same seeded episodes for every method).
        steps: training env-steps per environment label (one env-step = one step of one copy).
        num_envs: copies stepped together per family (``lbf``, ``rware``, ``ride-hailing``,
            ``medical``).
        num_groups: groups of SePS and DyPS in Tables 2-4 (the paper: 4 is best, Figure 6a).
        groups: the numbers of groups of Figure 6(a).
        seps_pretrain_fraction: SePS's pretraining share of its steps (whole iterations, at
            least one, always fewer than the run's).
        roles: run the ``roles`` mechanism check.
        sweep_report: also write the sweep's own report (``training/report.md`` and its
            figures, :func:`marra.experiments.report.write_report`; most of a tiny run's time).
        roles_steps: its training env-steps, ``{"seps": ..., "dyps": ...}`` (SePS pretrains on
            a quarter of its steps).
        env_options: options merged over a scenario's (by env label), e.g. a small city for
            tests: ``{"rh-2": {"size": 4, "horizon": 12}}``.
    """

    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    episodes: int = 8
    steps: Mapping[str, int] = field(default_factory=lambda: {
        "lbf-1": 40_000, "lbf-2": 16_000, "rware-1": 5_000, "rware-2": 5_000, "rh-1": 18_000,
        "rh-2": 10_800, "medical": 24_000})  # fmt: skip
    num_envs: Mapping[str, int] = field(default_factory=lambda: {
        "lbf": 8, "rware": 2, "ride-hailing": 5, "medical": 8})  # fmt: skip
    num_groups: int = 4
    groups: tuple[int, ...] = (2, 3, 4, 5, 6)
    seps_pretrain_fraction: float = 0.1
    roles: bool = True
    sweep_report: bool = True
    roles_steps: Mapping[str, int] = field(default_factory=lambda: {"seps": 2560, "dyps": 6400})
    env_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def full(cls) -> Paper002Budget:
        """5 seeds (as paper 002's Table 2), budgets far below Table 6's: about 67 min on two
        cores (measured in two steps, ``docs/reproduction.md``)."""
        return cls()

    @classmethod
    def quick(cls) -> Paper002Budget:
        """About 4.5 minutes on two shared cores: one seed, two iterations per learner, 2
        evaluation episodes, the roles check at its full size."""
        return cls(
            seeds=(1,), episodes=2,
            steps={"lbf-1": 800, "lbf-2": 800, "rware-1": 1_000, "rware-2": 1_000, "rh-1": 576,
                   "rh-2": 576, "medical": 480},
            num_envs={"lbf": 8, "rware": 1, "ride-hailing": 2, "medical": 4},
        )  # fmt: skip

    @classmethod
    def paper(cls) -> Paper002Budget:
        """Table 6's training steps and 5 seeds (for a cluster: thousands of CPU-hours' worth
        of LBF and RWARE; ``summary.md`` estimates it from a run's measured speed)."""
        return cls(seeds=(1, 2, 3, 4, 5), episodes=10, steps=dict(PAPER_STEPS))

    def check(self) -> None:
        """Raise :class:`~marra.experiments.sweep.SpecError` naming the first bad field."""
        from marra.experiments.sweep import SpecError

        def positive(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"budget.{name}: must be a positive integer, got {value!r}")

        if not self.seeds:
            raise SpecError("budget.seeds: at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"budget.seeds: a seed appears twice in {list(self.seeds)}")
        positive("episodes", self.episodes)
        for label in CASES:
            if label not in self.steps:
                raise SpecError(f"budget.steps: no training steps for {label!r}")
            positive(f"steps[{label!r}]", self.steps[label])
        for label in list(self.steps) + list(self.env_options):
            if label not in CASES:
                raise SpecError(f"budget: unknown scenario {label!r}; one of {list(CASES)}")
        for family in sorted({c.family for c in ENV_CASES}):
            if family not in self.num_envs:
                raise SpecError(f"budget.num_envs: no copies for {family!r}")
            positive(f"num_envs[{family!r}]", self.num_envs[family])
        positive("num_groups", self.num_groups)
        if self.num_groups < 2:
            raise SpecError(f"budget.num_groups: at least 2, got {self.num_groups}")
        for k in self.groups:
            positive("groups", k)
            if k < 2:
                raise SpecError(f"budget.groups: every number of groups at least 2, got {k}")
        for key in ("seps", "dyps"):
            if key not in self.roles_steps:
                raise SpecError(f"budget.roles_steps: no steps for {key!r}")
        positive("roles_steps['seps']", self.roles_steps["seps"])
        positive("roles_steps['dyps']", self.roles_steps["dyps"])
        if self.roles_steps["seps"] < 320:
            raise SpecError("budget.roles_steps['seps']: at least 320 (two iterations of 16 "
                            f"copies of 10 steps), got {self.roles_steps['seps']}")  # fmt: skip
        if not 0.0 < self.seps_pretrain_fraction < 1.0:
            raise SpecError("budget.seps_pretrain_fraction: must lie in (0, 1), got "
                            f"{self.seps_pretrain_fraction!r}")  # fmt: skip

    def options(self, case: EnvCase) -> dict[str, Any]:
        """The scenario's environment options with this budget's overrides."""
        return {**case.options, **dict(self.env_options.get(case.label, {}))}

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {k: dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v
                for k, v in values.items()}  # fmt: skip


def _iteration_steps(case: EnvCase, budget: Paper002Budget) -> int:
    from marra.envs import make

    env = make(case.name, num_envs=1, seed=0, **budget.options(case))
    horizon = int(env.spec.horizon)
    env.close()
    return horizon * int(budget.num_envs[case.family])


@dataclass(frozen=True)
class MethodInfo:
    """What a sweep method label stands for: ``table`` (``table2``, ``table3``, ``table4``,
    ``figure6a``, ``rules``, ``roles``), the row's name and the env label."""

    table: str
    row: str
    env: str
    num_groups: int | None = None


def paper002_methods(budget: Paper002Budget) -> tuple[list[dict[str, Any]], dict[str, MethodInfo]]:
    """The sweep's ``[[methods]]`` entries and what each label stands for."""
    methods: list[dict[str, Any]] = []
    info: dict[str, MethodInfo] = {}

    def add(entry: dict[str, Any], what: MethodInfo) -> None:
        methods.append(entry)
        info[entry["name"]] = what

    for case in ENV_CASES:
        steps = int(budget.steps[case.label])
        common = {"algo": "ippo", "steps": steps, "num_envs": int(budget.num_envs[case.family]),
                  **HYPERPARAMETERS[case.family]}  # fmt: skip
        per_iteration = _iteration_steps(case, budget)
        pretrain = per_iteration * max(1, round(budget.seps_pretrain_fraction * steps
                                                / per_iteration))  # fmt: skip
        pretrain = min(pretrain, max(per_iteration, steps - per_iteration))
        for scheme, sharing in SCHEMES:
            entry = {"name": f"{scheme} @ {case.label}", "envs": [case.label], **common,
                     "sharing": sharing}  # fmt: skip
            if sharing == "seps":
                entry.update(num_groups=budget.num_groups, seps_pretrain_steps=pretrain)
            if sharing == "dyps":
                entry.update(num_groups=budget.num_groups)
            add(entry, MethodInfo("table2", scheme, case.label, entry.get("num_groups")))
        if case.family == "ride-hailing":
            for row, ablation in ABLATIONS:
                add({"name": f"DyPS {row} @ {case.label}", "envs": [case.label], **common,
                     "sharing": "dyps", "num_groups": budget.num_groups,
                     "dyps_ablation": ablation},
                    MethodInfo("table3", row, case.label, budget.num_groups))  # fmt: skip
        if case.label == "rh-2":
            team = {"env_options": {"reward": "team"}}
            mappo = {**common, "algo": "mappo", **team}
            add(
                {"name": "MAPPO @ rh-2", "envs": ["rh-2"], **mappo, "sharing": "full"},
                MethodInfo("table4", "MAPPO", "rh-2"),
            )
            add({"name": "DyPS+MAPPO @ rh-2", "envs": ["rh-2"], **mappo, "sharing": "dyps",
                 "num_groups": budget.num_groups},
                MethodInfo("table4", "DyPS+MAPPO", "rh-2", budget.num_groups))  # fmt: skip
            for k in budget.groups:
                if k == budget.num_groups:
                    continue  # Table 2's DyPS cell
                add({"name": f"DyPS K={k} @ rh-2", "envs": ["rh-2"], **common,
                     "sharing": "dyps", "num_groups": k},
                    MethodInfo("figure6a", f"K={k}", "rh-2", k))  # fmt: skip
        for rule in RULES[case.label]:
            add(
                {"name": f"{rule} @ {case.label}", "baseline": rule, "envs": [case.label]},
                MethodInfo("rules", rule, case.label),
            )
    if budget.roles:
        add(
            {
                "name": "SePS @ roles-12x3",
                "envs": ["roles-12x3"],
                "algo": "ippo",
                "sharing": "seps",
                "seps_pretrain_steps": max(160, int(budget.roles_steps["seps"]) // 4 // 160 * 160),
                "steps": int(budget.roles_steps["seps"]),
                "num_envs": 16,
                "checkpoint_every": 100,
            },
            MethodInfo("roles", "SePS (Davies-Bouldin picks K)", "roles-12x3"),
        )
        selector = {
            "envs": ["roles-8x4"],
            "algo": "ippo",
            "sharing": "dyps",
            "num_groups": 4,
            "steps": int(budget.roles_steps["dyps"]),
            "num_envs": 8,
            "checkpoint_every": 100,
        }
        add(
            {
                "name": "DyPS @ roles-8x4",
                **selector,
                "dyps_selector_lr": 2e-2,
                "dyps_selector_reward": "agent",
            },
            MethodInfo("roles", "DyPS (agent reward, selector lr 2e-2)", "roles-8x4", 4),
        )
        add(
            {"name": "DyPS paper selector @ roles-8x4", **selector},
            MethodInfo("roles", "DyPS (team reward, selector lr 1e-4)", "roles-8x4", 4),
        )
    return methods, info


def paper002_spec(budget: Paper002Budget) -> Any:
    """The whole reproduction as one sweep SPEC (:class:`~marra.experiments.sweep.SweepSpec`)."""
    from marra.experiments.sweep import parse_spec

    methods, _ = paper002_methods(budget)
    envs = [{"name": c.name, "label": c.label, "options": budget.options(c)} for c in ENV_CASES]
    if budget.roles:
        envs += [{"name": "roles", "label": label, "options": dict(options)}
                 for label, options in ROLES_ENVS.items()]  # fmt: skip
    return parse_spec({
        "title": "paper002: parameter sharing (NoPS, PS, PS-id, PSA, SePS, DyPS)",
        "seeds": list(budget.seeds), "episodes": budget.episodes, "envs": envs,
        "methods": methods,
        "report": {"higher_is_better": ["gmv", "orr", "infections_averted", "foods",
                                        "deliveries"]},
    })  # fmt: skip


# ---------------------------------------------------------------------------- statistics
def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def scores_by_method(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[int, float]]]:
    """``{method: {metric: {seed: mean over the seed's evaluation episodes}}}``."""
    sums: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        key = (str(row["method"]), str(row["metric"]), int(row["seed"]))
        sums.setdefault(key, []).append(float(row["value"]))
    out: dict[str, dict[str, dict[int, float]]] = {}
    for (method, metric, seed), values in sums.items():
        out.setdefault(method, {}).setdefault(metric, {})[seed] = float(np.mean(values))
    return out


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std (n - 1) over seeds, the IQM and its 95% bootstrap CI
    (:func:`marra.experiments.report.summarise`)."""

    mean: float
    std: float
    runs: int
    iqm: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        from marra.experiments.report import summarise

        values = [v for v in values if math.isfinite(v)]
        if not values:
            return cls(math.nan, math.nan, 0)
        s = summarise(values)
        return cls(s.mean, s.std, s.runs, s.iqm, s.ci)


def rank_marks(means: Sequence[float], higher: bool = True) -> list[str]:
    """``"best"``, ``"second"`` or ``""`` for each value (ties share the mark; NaN: none)."""
    finite = sorted({m for m in means if math.isfinite(m)}, reverse=higher)
    best = finite[0] if finite else None
    second = finite[1] if len(finite) > 1 else None
    return ["best" if m == best else "second" if m == second else "" for m in means]


def _digits(value: float) -> int:
    size = abs(value)
    return 0 if size >= 1000 else 1 if size >= 100 else 2 if size >= 1 else 3


def _fmt(mean: float, std: float, digits: int | None = None) -> str:
    if not math.isfinite(mean):
        return "–"
    d = _digits(mean) if digits is None else digits
    text = f"{mean:,.{d}f}"
    return f"{text} ± {std:,.{d}f}" if math.isfinite(std) else text


def _marked(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text


# ---------------------------------------------------------------------------- the tables
@dataclass
class Tables:
    """Every table of the run as ``{row: {column key: Stat}}``; column keys ``env:metric``."""

    table2: dict[str, dict[str, Stat]] = field(default_factory=dict)
    table3: dict[str, dict[str, Stat]] = field(default_factory=dict)
    table4: dict[str, dict[str, Stat]] = field(default_factory=dict)
    table7: dict[str, dict[str, Stat]] = field(default_factory=dict)
    rules: dict[str, dict[str, Stat]] = field(default_factory=dict)
    figure6a: dict[int, dict[str, Stat]] = field(default_factory=dict)


def build_tables(scores: Mapping[str, Mapping[str, Mapping[int, float]]],
                 info: Mapping[str, MethodInfo], budget: Paper002Budget) -> Tables:  # fmt: skip
    """Tables 2, 3, 4, 7, the reference rules and Figure 6(a) from the per-seed scores."""
    tables = Tables()

    def stat(label: str, metric: str) -> Stat:
        return Stat.of(list(scores.get(label, {}).get(metric, {}).values()))

    metrics_of = {env: [m for e, m, _ in TABLE2_COLUMNS if e == env] for env in CASES}
    for label, what in info.items():
        if what.table in ("roles",):
            continue
        cells = {f"{what.env}:{m}": stat(label, m) for m in metrics_of[what.env]}
        if what.table == "table2":
            tables.table2.setdefault(what.row, {}).update(cells)
        elif what.table == "table3":
            tables.table3.setdefault(what.row, {}).update(cells)
        elif what.table == "table4":
            tables.table4.setdefault(what.row, {}).update(cells)
        elif what.table == "figure6a":
            tables.figure6a[int(what.num_groups or 0)] = cells
        elif what.table == "rules":
            tables.rules.setdefault(what.row, {}).update(cells)
            if what.env.startswith("rh-"):
                tables.table7.setdefault(what.row, {}).update(cells)
    dyps = tables.table2.get("DyPS", {})
    tables.table3["DyPS"] = {k: v for k, v in dyps.items() if k.startswith("rh-")}
    rh2 = ("rh-2:gmv", "rh-2:orr")
    t4 = {"IPPO": {k: tables.table2.get("NoPS", {}).get(k) for k in rh2},
          "DyPS+IPPO": {k: dyps.get(k) for k in rh2}}  # fmt: skip
    t4 = {row: {k: v for k, v in cells.items() if v is not None} for row, cells in t4.items()}
    tables.table4 = {**t4, **tables.table4}
    if dyps:
        tables.figure6a[budget.num_groups] = {k: v for k, v in dyps.items() if k.startswith("rh-2")}
    tables.figure6a = dict(sorted(tables.figure6a.items()))
    return tables


def _column_key(column: tuple[str, str, str]) -> str:
    return f"{column[0]}:{column[1]}"


def table2_markdown(table: Mapping[str, Mapping[str, Stat]], *, paper: bool = False) -> str:
    """Table 2 in markdown, best bold and second underlined per column (ours or the paper's)."""
    rows = list(SCHEME_NAMES)
    header = "| scheme | " + " | ".join(c[2] for c in TABLE2_COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(TABLE2_COLUMNS)]
    texts = {r: [] for r in rows}
    for j, column in enumerate(TABLE2_COLUMNS):
        if paper:
            pairs = [PAPER_TABLE2[r][j] for r in rows]
            digits = 2 if column[1] in ("orr", "team_return") and column[0] != "rware-1" else None
        else:
            stats = [table.get(r, {}).get(_column_key(column)) for r in rows]
            pairs = [(s.mean, s.std) if s else (math.nan, math.nan) for s in stats]
            digits = 3 if column[1] == "orr" else None
        marks = rank_marks([p[0] for p in pairs])
        for r, (mean, std), mark in zip(rows, pairs, marks, strict=True):
            texts[r].append(_marked(_fmt(mean, std, digits), mark))
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(texts[r]) + " |")
    return "\n".join(lines)


def _rows_markdown(table: Mapping[str, Mapping[str, Stat]], columns: Sequence[tuple[str, str]],
                   paper: Mapping[str, Sequence[_P]] | None = None, *,
                   rank: bool = True) -> str:  # fmt: skip
    """A table over ``columns`` ((key, header)); with ``paper``, a "paper" column per column."""
    header = ["row"]
    for _, title in columns:
        header += [f"{title} (ours)", f"{title} (paper)"] if paper is not None else [title]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    rows = list(table)
    if paper is not None:
        rows += [r for r in paper if r not in table]
    ours_marks = {}
    paper_marks = {}
    for j, (key, _) in enumerate(columns):
        means = [table.get(r, {}).get(key).mean if table.get(r, {}).get(key) else math.nan
                 for r in rows]  # fmt: skip
        ours_marks[key] = rank_marks(means) if rank else [""] * len(rows)
        if paper is not None:
            pm = [paper[r][j][0] if r in paper else math.nan for r in rows]
            paper_marks[key] = rank_marks(pm) if rank else [""] * len(rows)
    for i, r in enumerate(rows):
        cells = [r]
        for j, (key, _) in enumerate(columns):
            s = table.get(r, {}).get(key)
            digits = 3 if key.endswith(":orr") else None
            ours = _fmt(s.mean, s.std, digits) if s else "–"
            cells.append(_marked(ours, ours_marks[key][i]) if s else "not built")
            if paper is not None:
                if r in paper:
                    pm, ps = paper[r][j]
                    d = 2 if key.endswith(":orr") else None
                    cells.append(_marked(_fmt(pm, ps, d), paper_marks[key][i]))
                else:
                    cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table7_markdown(table: Mapping[str, Mapping[str, Stat]]) -> str:
    """Table 7: the rules on both cities, ours next to the paper's."""
    lines = ["| rule | city | GMV (ours) | GMV (paper) | ours / paper | ORR (ours) | ORR (paper) |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for rule, cells in table.items():
        for env in ("rh-1", "rh-2"):
            gmv, orr = cells.get(f"{env}:gmv"), cells.get(f"{env}:orr")
            if gmv is None or orr is None:
                continue
            paper = PAPER_TABLE7.get(rule, {}).get(env)
            ratio = f"{gmv.mean / paper[0]:.3f}" if paper else "–"
            lines.append(
                f"| {rule} | {env[-1]} | {_fmt(gmv.mean, gmv.std)} | "
                f"{f'{paper[0]:,.0f}' if paper else '–'} | {ratio} | "
                f"{_fmt(orr.mean, orr.std, 3)} | {f'{paper[1]:.2f}' if paper else '–'} |"
            )
    return "\n".join(lines)


def rules_markdown(rules: Mapping[str, Mapping[str, Stat]], table2: Mapping[str, Any]) -> str:
    """The reference rules per Table 2 column, with the best learned scheme's mean."""
    lines = ["| column | rule | rule's score | best learned scheme (ours) | rule beats it |",
             "|---|---|---:|---|---|"]  # fmt: skip
    for column in TABLE2_COLUMNS:
        key = _column_key(column)
        learned = [
            (s.mean, r)
            for r in SCHEME_NAMES
            if (s := table2.get(r, {}).get(key)) is not None and math.isfinite(s.mean)
        ]
        best = max(learned) if learned else (math.nan, "–")
        for rule in RULES[column[0]]:
            s = rules.get(rule, {}).get(key)
            if s is None:
                continue
            digits = 3 if column[1] == "orr" else None
            beats = "yes" if math.isfinite(best[0]) and s.mean > best[0] else "no"
            lines.append(f"| {column[2]} | {rule} | {_fmt(s.mean, s.std, digits)} | "
                         f"{best[1]} ({_fmt(best[0], math.nan, digits)}) | {beats} |")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------- claims
def dyps_gains(table2: Mapping[str, Mapping[str, Stat]] | None) -> list[dict[str, Any]]:
    """Per Table 2 column: DyPS's relative gain over the best other scheme, ours (``table2``)
    or the paper's (``None``)."""
    out = []
    for j, column in enumerate(TABLE2_COLUMNS):
        key = _column_key(column)
        if table2 is None:
            means = {r: PAPER_TABLE2[r][j][0] for r in SCHEME_NAMES}
            stds = {r: PAPER_TABLE2[r][j][1] for r in SCHEME_NAMES}
        else:
            means = {r: s.mean for r in SCHEME_NAMES if (s := table2.get(r, {}).get(key))}
            stds = {r: s.std for r in SCHEME_NAMES if (s := table2.get(r, {}).get(key))}
        if "DyPS" not in means or not math.isfinite(means["DyPS"]):
            continue
        others = {r: m for r, m in means.items() if r != "DyPS" and math.isfinite(m)}
        if not others:
            continue
        rival = max(others, key=lambda r: others[r])
        best = max(means, key=lambda r: means[r] if math.isfinite(means[r]) else -math.inf)
        finite = [m for m in means.values() if math.isfinite(m)]
        if max(finite) == min(finite):
            best = "(all equal)"
        margin = means["DyPS"] - others[rival]
        noise = max(stds.get("DyPS", math.nan), stds.get(rival, math.nan))
        gain = margin / abs(others[rival]) if others[rival] else math.nan
        out.append({"column": column[2], "best": best, "rival": rival, "gain": gain,
                    "dyps_best": best == "DyPS",
                    "clear": bool(math.isfinite(noise) and abs(margin) > noise)})  # fmt: skip
    return out


def scheme_ranks(table2: Mapping[str, Mapping[str, Stat]] | None, scheme: str
                 ) -> dict[str, float]:  # fmt: skip
    """``scheme``'s rank (1 = best of the six) in each Table 2 column."""
    ranks = {}
    for j, column in enumerate(TABLE2_COLUMNS):
        key = _column_key(column)
        if table2 is None:
            means = {r: PAPER_TABLE2[r][j][0] for r in SCHEME_NAMES}
        else:
            means = {r: s.mean for r in SCHEME_NAMES if (s := table2.get(r, {}).get(key))
                     and math.isfinite(s.mean)}  # fmt: skip
        if scheme in means:
            ranks[column[2]] = 1 + sum(m > means[scheme] for m in means.values())
    return ranks


# ---------------------------------------------------------------------------- curves
CURVE_METRICS = {"lbf": "team_return", "rware": "team_return", "ride-hailing": "gmv",
                 "medical": "infections_averted"}  # fmt: skip


def learning_curves(training: Path, plan: Any, info: Mapping[str, MethodInfo]
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """Every Table 2 / Table 4 learner cell's ``train_log.csv`` as rows ``env, method, seed,
    env_steps`` and the curve metrics (training episodes, stochastic policy)."""
    from marra.experiments.sweep import cell_dir

    rows = []
    for entry in plan.grid:
        what = info.get(entry.method)
        if what is None or what.table not in ("table2", "table4"):
            continue
        log = cell_dir(training, entry.cell) / "train_log.csv"
        if not log.exists():
            continue
        for row in _read_rows(log):
            rows.append({"env": what.env, "method": what.row, "seed": entry.seed,
                         "env_steps": int(row["env_steps"]),
                         **{k: _float(row.get(k)) for k in
                            ("team_return", "gmv", "orr", "infections_averted")}})  # fmt: skip
    return rows


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _curve(rows: Sequence[Mapping[str, Any]], env: str, method: str, metric: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    steps = sorted({r["env_steps"] for r in rows if r["env"] == env and r["method"] == method})
    means, stds = [], []
    for s in steps:
        values = [r[metric] for r in rows if r["env"] == env and r["method"] == method
                  and r["env_steps"] == s and math.isfinite(r[metric])]  # fmt: skip
        means.append(np.mean(values) if values else math.nan)
        stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
    return np.asarray(steps, dtype=float), np.asarray(means), np.asarray(stds)


def learning_speed(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{env: {scheme: area under the training curve}}``: the mean over logged iterations of
    the seeds' mean training score (Table 2's schemes; the curve metric of the env's family)."""
    out: dict[str, dict[str, float]] = {}
    for case in ENV_CASES:
        metric = CURVE_METRICS[case.family]
        for scheme in SCHEME_NAMES:
            _, means, _ = _curve(rows, case.label, scheme, metric)
            if means.size and np.isfinite(means).any():
                out.setdefault(case.label, {})[scheme] = float(np.nanmean(means))
    return out


_STYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_figure9(rows: Sequence[Mapping[str, Any]], rules: Mapping[str, Mapping[str, Stat]],
                 path: Path, *, env: str = "rh-2") -> None:  # fmt: skip
    """Figure 9: training GMV and ORR on ride-hailing(2) against env-steps, mean ± std over
    seeds, with the greedy rule's evaluation level."""
    plt = _pyplot()
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    labels = ("GMV per day (training episodes)", "order response rate (training episodes)")
    for ax, metric, label in zip(axes, ("gmv", "orr"), labels, strict=True):
        for i, scheme in enumerate(SCHEME_NAMES):
            steps, mean, std = _curve(rows, env, scheme, metric)
            if not steps.size:
                continue
            ax.plot(
                steps,
                mean,
                label=scheme,
                color=colours[i],
                linestyle=_STYLES[i],
                marker=_MARKERS[i],
                markevery=max(1, len(steps) // 6),
                markersize=4,
            )
            ax.fill_between(steps, mean - std, mean + std, color=colours[i], alpha=0.15)
        greedy = rules.get("greedy", {}).get(f"{env}:{metric}")
        if greedy is not None:
            ax.axhline(
                greedy.mean,
                color="grey",
                linestyle="--",
                linewidth=1,
                label="greedy rule (evaluation)",
            )
        ax.set_xlabel("training env-steps (10-minute steps of one city copy)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Figure 9: learning curves on {CASES[env].title}, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_figure6a(figure: Mapping[int, Mapping[str, Stat]], table2: Mapping[str, Any],
                  path: Path) -> None:  # fmt: skip
    """Figure 6(a): DyPS's GMV and ORR on ride-hailing(2) against its number of groups."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ks = sorted(figure)
    for ax, metric, label in zip(axes, ("gmv", "orr"), ("GMV per day", "order response rate"),
                                 strict=True):  # fmt: skip
        key = f"rh-2:{metric}"
        stats = [figure[k].get(key) for k in ks]
        mean = np.asarray([s.mean if s else math.nan for s in stats])
        std = np.asarray([s.std if s and math.isfinite(s.std) else 0.0 for s in stats])
        ax.errorbar(ks, mean, yerr=std, color="tab:red", marker="o", capsize=4, label="DyPS")
        for scheme, colour, style in (("NoPS", "tab:blue", "--"), ("PS", "tab:orange", ":")):
            s = table2.get(scheme, {}).get(key)
            if s is not None and math.isfinite(s.mean):
                ax.axhline(s.mean, color=colour, linestyle=style, label=f"{scheme} (no groups)")
        ax.set_xticks(ks)
        ax.set_xlabel("number of groups K")
        ax.set_ylabel(f"{label} (evaluation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Figure 6(a): DyPS on Ride-Hailing (2) against the number of groups "
                 "(mean ± std over seeds)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_groups(path: Path) -> dict[int, np.ndarray]:
    """``groups.csv`` as ``{iteration: groups (N,)}``."""
    by_iteration: dict[int, dict[int, int]] = {}
    for row in _read_rows(path):
        by_iteration.setdefault(int(row["iteration"]), {})[int(row["agent"])] = int(row["group"])
    return {it: np.asarray([g[a] for a in sorted(g)]) for it, g in sorted(by_iteration.items())}


def correlation_ratio(values: np.ndarray, groups: np.ndarray) -> float:
    """eta^2: the share of the variance of ``values`` between the groups (0: the groups say
    nothing about the values; 1: each group holds one value)."""
    values = np.asarray(values, dtype=float)
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0.0:
        return math.nan
    between = sum(float((groups == g).sum()) * (values[groups == g].mean() - values.mean()) ** 2
                  for g in np.unique(groups))  # fmt: skip
    return between / total


def plot_figure6b(history: Mapping[int, np.ndarray], greedy: np.ndarray | None, size: int,
                  num_groups: int, rates: np.ndarray, path: Path) -> list[int]:  # fmt: skip
    """Figure 6(b): the grouping on the ``size x size`` grid at the start, middle and end of
    training, the saved policy's greedy grouping, and the city's mean order rate per cell.
    Returns the iterations drawn."""
    plt = _pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap

    iterations = sorted(history)
    picks = sorted({iterations[0], iterations[len(iterations) // 2], iterations[-1]})
    names = {1: ("end",), 2: ("start", "end"), 3: ("start", "middle", "end")}[len(picks)]
    panels = [(f"iteration {it} ({name})", history[it])
              for it, name in zip(picks, names, strict=True)]  # fmt: skip
    if greedy is not None:
        panels.append(("saved policy (greedy)", np.asarray(greedy)))
    colours = ListedColormap(plt.get_cmap("tab10").colors[:num_groups])
    norm = BoundaryNorm(np.arange(num_groups + 1) - 0.5, num_groups)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.3 * (len(panels) + 1), 3.6))
    for ax, (title, groups) in zip(axes, panels, strict=False):
        image = ax.imshow(groups.reshape(size, size), cmap=colours, norm=norm)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    bar = fig.colorbar(image, ax=axes[len(panels) - 1], ticks=range(num_groups), fraction=0.046)
    bar.set_label("group")
    heat = axes[-1].imshow(rates.reshape(size, size), cmap="viridis")
    axes[-1].set_title("mean order rate per step", fontsize=9)
    axes[-1].set_xlabel("column")
    axes[-1].set_ylabel("row")
    fig.colorbar(heat, ax=axes[-1], fraction=0.046).set_label("orders per step")
    fig.suptitle("Figure 6(b): DyPS's grouping on the Ride-Hailing (2) grid (one colour per "
                 f"group; agent = row * {size} + column)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return picks


# ---------------------------------------------------------------------------- roles
def roles_check(training: Path, plan: Any, info: Mapping[str, MethodInfo],
                scores: Mapping[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Per roles cell: the learned grouping (SePS's clusters, DyPS's greedy grouping from the
    saved policy), its adjusted Rand index against the true roles, the groups used and the
    evaluated accuracy."""
    from sklearn.metrics import adjusted_rand_score

    from marra.experiments.sweep import cell_dir
    from marra.rl import load_policy

    out = []
    for entry in plan.grid:
        what = info.get(entry.method)
        if what is None or what.table != "roles":
            continue
        policy_path = cell_dir(training, entry.cell) / "policy.pt"
        if not policy_path.exists():
            continue
        sharing = load_policy(policy_path).sharing
        groups = np.asarray(sharing.get("groups"))
        options = ROLES_ENVS[what.env]
        roles = np.arange(options["num_agents"]) % options["num_roles"]
        accuracy = scores.get(entry.method, {}).get("accuracy", {}).get(entry.seed, math.nan)
        out.append({
            "method": what.row, "env": what.env, "seed": entry.seed,
            "agents": options["num_agents"], "roles": options["num_roles"],
            "groups_used": int(len(np.unique(groups))),
            "ari": float(adjusted_rand_score(roles, groups)),
            "pure": all(len(set(roles[groups == g].tolist())) == 1 for g in np.unique(groups)),
            "accuracy": float(accuracy),
            "grouping": " ".join(str(int(g)) for g in groups),
        })  # fmt: skip
    return out


# ---------------------------------------------------------------------------- the run
def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _table_rows(tables: Tables) -> list[dict[str, Any]]:
    rows = []
    named = {"table2": tables.table2, "table3": tables.table3, "table4": tables.table4,
             "table7": tables.table7, "rules": tables.rules,
             "figure6a": {f"K={k}": v for k, v in tables.figure6a.items()}}  # fmt: skip
    for name, table in named.items():
        for row, cells in table.items():
            for key, s in cells.items():
                env, metric = key.split(":")
                rows.append({"table": name, "row": row, "env": env, "metric": metric,
                             "mean": s.mean, "std": s.std, "seeds": s.runs, "iqm": s.iqm,
                             "ci_low": s.ci[0], "ci_high": s.ci[1]})  # fmt: skip
    return rows


def _cell_speeds(training: Path, plan: Any, info: Mapping[str, MethodInfo]
                 ) -> dict[str, float]:  # fmt: skip
    """Measured training seconds per env-step per env label (mean over its learner cells)."""
    from marra.experiments.sweep import cell_dir

    rates: dict[str, list[float]] = {}
    for entry in plan.grid:
        what = info.get(entry.method)
        if what is None or what.table == "rules" or what.env not in CASES:
            continue
        result = cell_dir(training, entry.cell) / "result.json"
        if not result.exists():
            continue
        data = json.loads(result.read_text(encoding="utf-8"))
        if data.get("env_steps") and not data.get("resumed"):
            rates.setdefault(what.env, []).append(data["train_s"] / data["env_steps"])
    return {env: float(np.mean(v)) for env, v in rates.items()}


def budget_cpu_hours(speeds: Mapping[str, float], target: Paper002Budget) -> float:
    """CPU-hours of training the ``target`` budget's learner cells would take at the measured
    ``speeds`` (seconds per env-step per env label; evaluation and the roles check left out):
    an estimate, no better than the speeds (measured on short runs, on a shared machine)."""
    methods, info = paper002_methods(target)
    total = 0.0
    for method in methods:
        what = info[method["name"]]
        if what.table in ("rules", "roles") or what.env not in speeds:
            continue
        total += speeds[what.env] * target.steps[what.env] * len(target.seeds)
    return total / 3600.0


def paper_budget_cpu_hours(speeds: Mapping[str, float]) -> float:
    """:func:`budget_cpu_hours` of :meth:`Paper002Budget.paper` (Table 6's budgets)."""
    return budget_cpu_hours(speeds, Paper002Budget.paper())


@dataclass
class Paper002Result:
    """What :func:`reproduce_paper002` produced."""

    out: Path
    tables: Tables
    roles: list[dict[str, Any]]
    wall_s: float
    files: dict[str, str] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)


def reproduce_paper002(
    out: str | Path,
    *,
    quick: bool = False,
    budget: Paper002Budget | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    console: Any = None,
) -> Paper002Result:
    """Run the whole paper 002 reproduction into ``out`` (see the module docstring).

    Raises:
        SweepError: a cell of the grid failed (``out/training/failures.csv``; rerun to retry).
        SpecError: a bad argument or budget field (the message names it), or
            ``out/training`` holds a sweep of another budget.
    """
    from marra.experiments._reproduction import check_arguments, run_training_grid, stage_printer
    from marra.experiments.sweep import cell_dir, plan_sweep

    budget, out = check_arguments(budget, Paper002Budget, quick=quick, backend=backend,
                                  workers=workers, address=address, out=out)  # fmt: skip
    spec = paper002_spec(budget)  # checked before anything is written
    methods, info = paper002_methods(budget)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say = stage_printer(console)

    say("[bold]paper002: the training grid (sweep)")
    outcome = run_training_grid("paper002", spec, out, backend=backend, workers=workers,
                                address=address, progress=progress, console=console)  # fmt: skip
    training_wall_s = time.perf_counter() - started
    say("[bold]paper002: tables and figures")
    plan = plan_sweep(spec)
    scores = scores_by_method(_read_rows(outcome.results_path))
    tables = build_tables(scores, info, budget)
    atomic_write_text(out / "tables.csv", _csv_text(_table_rows(tables)))

    curves = learning_curves(out / "training", plan, info)
    atomic_write_text(out / "learning_curves.csv", _csv_text(curves))
    files: dict[str, Path] = {}
    if any(r["env"] == "rh-2" for r in curves):
        plot_figure9(curves, tables.rules, out / "figure9_learning_curves.png")
        files["figure9"] = out / "figure9_learning_curves.png"
    if tables.figure6a:
        plot_figure6a(tables.figure6a, tables.table2, out / "figure6a_groups.png")
        files["figure6a"] = out / "figure6a_groups.png"

    grouping: dict[str, Any] = {}
    dyps_rh2 = next((g for g in plan.grid if g.method == "DyPS @ rh-2"), None)
    if dyps_rh2 is not None:
        folder = cell_dir(out / "training", dyps_rh2.cell)
        if (folder / "groups.csv").exists():
            from marra.envs import make
            from marra.rl import load_policy

            history = read_groups(folder / "groups.csv")
            greedy = np.asarray(load_policy(folder / "policy.pt").sharing["groups"])
            city = make("ride-hailing", num_envs=1, seed=0, **budget.options(CASES["rh-2"]))
            rates = city.rates.double().mean(dim=0).cpu().numpy()
            size = int(city.size)
            city.close()
            picks = plot_figure6b(history, greedy, size, budget.num_groups, rates,
                                  out / "figure6b_grouping.png")  # fmt: skip
            files["figure6b"] = out / "figure6b_grouping.png"
            last = history[max(history)]
            changed = [
                float((history[a] != history[b]).mean())
                for a, b in zip(list(history)[:-1], list(history)[1:], strict=True)
            ]
            grouping = {
                "seed": dyps_rh2.seed,
                "iterations": picks,
                "eta2_rate_greedy": correlation_ratio(rates, greedy),
                "eta2_rate_last": correlation_ratio(rates, last),
                "eta2_random": (budget.num_groups - 1) / (len(rates) - 1),
                "moved_per_iteration": float(np.mean(changed)) if changed else math.nan,
                "greedy_sizes": np.bincount(greedy, minlength=budget.num_groups).tolist(),
            }

    roles = roles_check(out / "training", plan, info, scores) if budget.roles else []
    atomic_write_text(out / "roles.csv", _csv_text(roles))
    speed = learning_speed(curves)
    speeds = _cell_speeds(out / "training", plan, info)
    claims = _claims(tables, speed)
    if budget.sweep_report:
        try:
            from marra.experiments.report import write_report

            write_report(out / "training")
        except Exception as exc:  # the sweep's own report is a bonus; the tables above stand
            claims["report_error"] = f"{type(exc).__name__}: {exc}"
    wall_s = time.perf_counter() - started
    summary = _summary(budget, tables, roles, speed, claims, grouping, speeds,
                       wall_s=wall_s, training_wall_s=training_wall_s,
                       ran=outcome.ran, cells=outcome.cells, backend=backend)  # fmt: skip
    atomic_write_text(out / "summary.md", summary)
    import marra

    manifest = {
        "command": "reproduce paper002",
        "marra_version": marra.__version__,
        "budget": budget.to_dict(),
        "backend": backend,
        "wall_s": wall_s,
        "training_wall_s": training_wall_s,
        "cells": outcome.cells,
        "cells_run_now": outcome.ran,
        "sweep": str(out / "training"),
        "hyperparameters": HYPERPARAMETERS,
        "methods": methods,
        "seconds_per_env_step": speeds,
        "grouping": grouping,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    names = (
        "summary.md",
        "tables.csv",
        "learning_curves.csv",
        "roles.csv",
        "manifest.json",
        "figure9_learning_curves.png",
        "figure6a_groups.png",
        "figure6b_grouping.png",
    )
    found = {name: str(out / name) for name in names if (out / name).exists()}
    return Paper002Result(out, tables, roles, wall_s, found, claims)


def _claims(tables: Tables, speed: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    ours = dyps_gains(tables.table2)
    paper = dyps_gains(None)
    seps_ours = scheme_ranks(tables.table2, "SePS")
    seps_paper = scheme_ranks(None, "SePS")
    nops = {}
    for env, areas in speed.items():
        if "NoPS" in areas and len(areas) > 1:
            nops[env] = 1 + sum(v > areas["NoPS"] for v in areas.values())
    simpler = [g for g in ours if g["best"] in ("NoPS", "PS", "PS-id")]
    return {
        "dyps_ours": ours,
        "dyps_paper": paper,
        "seps_ours": seps_ours,
        "seps_paper": seps_paper,
        "nops_speed_rank": nops,
        "simpler_wins": simpler,
    }


def _mean_rank(ranks: Mapping[str, float], prefixes: Sequence[str]) -> float:
    values = [v for k, v in ranks.items() if k.startswith(tuple(prefixes))]
    return float(np.mean(values)) if values else math.nan


def _summary(budget: Paper002Budget, tables: Tables, roles: Sequence[Mapping[str, Any]],
             speed: Mapping[str, Mapping[str, float]], claims: Mapping[str, Any],
             grouping: Mapping[str, Any], speeds: Mapping[str, float], *, wall_s: float,
             training_wall_s: float, ran: int, cells: int, backend: str) -> str:  # fmt: skip
    seeds = ", ".join(map(str, budget.seeds))
    plural = "s" if len(budget.seeds) > 1 else ""
    smaller = [c for c in ENV_CASES if budget.steps[c.label] < PAPER_STEPS[c.label]]
    lines = [
        "# paper002: parameter sharing (NoPS, PS, PS-id, PSA, SePS, DyPS)",
        "",
        f"{len(budget.seeds)} seed{plural} ({seeds}); paper 002: 5. Each cell (scheme, "
        f"scenario, seed) is trained, then evaluated on {budget.episodes} episodes seeded by its "
        "seed (the same episodes for every method of that seed); cells give mean ± std "
        "(sample, n - 1) over seeds of the per-seed means. IPPO backbone, K = "
        f"{budget.num_groups} groups for SePS and DyPS, Table 6's learning rates and discounts.",
        "",
        f"Wall time {wall_s:.0f} s ({training_wall_s:.0f} s in the sweep, {ran} of {cells} "
        f"cells run now, backend {backend}; a rerun reuses finished cells).",
        "",
        "## Training budgets",
        "",
    ]
    if smaller:
        lines += [
            "**These budgets are smaller than the paper's (Table 6) for "
            + ", ".join(c.title for c in smaller)
            + "**: the paper's do not fit this run. "
            "Run the paper's budgets (5 seeds) on a Ray cluster, with the output folder on a "
            "file system every node mounts, with:",
            "",
            "```bash",
            CLUSTER_COMMAND,
            "```",
            "",
        ]
    hours = paper_budget_cpu_hours(speeds) if speeds else math.nan
    full = budget_cpu_hours(speeds, Paper002Budget.full()) if speeds else math.nan
    if math.isfinite(hours):
        lines += [f"Estimates at this run's measured training speeds (one core per cell, "
                  f"training only): the paper's budgets about {hours:,.0f} CPU-hours; the "
                  f"`full` preset about {full:,.1f} CPU-hours ({full / 2:,.1f} h on 2 cores).",
                  ""]  # fmt: skip
    lines += ["| scenario | env | training env-steps (ours) | Table 6 | copies | s per 1k "
              "env-steps (measured) |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for case in ENV_CASES:
        rate = speeds.get(case.label, math.nan)
        measured = f"{rate * 1000:.2f}" if math.isfinite(rate) else "–"
        lines.append(f"| {case.title} | `{case.name}` {json.dumps(budget.options(case))} | "
                     f"{budget.steps[case.label]:,} | {PAPER_STEPS[case.label]:,} | "
                     f"{budget.num_envs[case.family]} | {measured} |")  # fmt: skip
    lines += [
        "",
        'Table 6\'s ride-hailing "30k" is read as env-steps (208 days); the public DyPS code '
        "counts its training loop in episodes (`MAX_ITER = 60000`), so the paper may mean 30k "
        "days, 144 times more.",
        "",
        "## Table 2 (ours)",
        "",
        table2_markdown(tables.table2),
        "",
        "## Table 2 (paper 002)",
        "",
        table2_markdown({}, paper=True),
        "",
        "Best bold, second underlined (higher is better everywhere).",
        "",
        "### DyPS against the best other scheme",
        "",
        "| column | ours: best scheme | ours: DyPS vs best other | margin beyond the spread "
        "| paper: DyPS vs best other |",
        "|---|---|---:|---|---:|",
    ]
    paper_gain = {g["column"]: g for g in claims["dyps_paper"]}
    for g in claims["dyps_ours"]:
        p = paper_gain.get(g["column"])
        theirs = f"{p['gain']:+.1%} (vs {p['rival']})" if p else "–"
        gain = f"{g['gain']:+.1%}" if math.isfinite(g["gain"]) else "–"
        lines.append(f"| {g['column']} | {g['best']} | {gain} (vs {g['rival']}) | "
                     f"{'yes' if g['clear'] else 'no'} | {theirs} |")  # fmt: skip
    best_count = sum(g["dyps_best"] for g in claims["dyps_ours"])
    clear_count = sum(g["dyps_best"] and g["clear"] for g in claims["dyps_ours"])
    lines += [
        "",
        f"- **DyPS best everywhere (paper: 9 of 9 columns)**: ours {best_count} of "
        f"{len(claims['dyps_ours'])}, {clear_count} of them by more than the larger of the two "
        "standard deviations. (The margin test is a rough one with few seeds.)",
        "- **Up to 31% over the best baseline (paper's text)**: Table 2's own numbers give "
        "DyPS +28.3% GMV and +45.8% ORR over PS-id on Ride-Hailing (2).",
    ]
    seps_o, seps_p = claims["seps_ours"], claims["seps_paper"]
    lines.append(
        "- **SePS good on LBF/RWARE, weaker on ride-hailing**: SePS's mean rank among the six "
        f"(1 = best): LBF/RWARE ours {_mean_rank(seps_o, ('LBF', 'RWARE')):.1f}, paper "
        f"{_mean_rank(seps_p, ('LBF', 'RWARE')):.1f}; ride-hailing ours "
        f"{_mean_rank(seps_o, ('Ride',)):.1f}, paper {_mean_rank(seps_p, ('Ride',)):.1f}."
    )
    nops = claims["nops_speed_rank"]
    if nops:
        slowest = [env for env, r in nops.items() if r == len(speed[env])]
        lines.append(
            "- **NoPS slowest to learn** (rank of NoPS's area under its training curve among "
            "the schemes, 6 = slowest): " + ", ".join(f"{CASES[e].title} {r}"
                                                      for e, r in nops.items())
            + f"; NoPS slowest in {len(slowest)} of {len(nops)} scenarios."
        )  # fmt: skip
    simpler = claims["simpler_wins"]
    if simpler:
        lines.append("- **Where a simpler scheme wins**: " + "; ".join(
            f"{g['column']}: {g['best']}" for g in simpler) + ".")  # fmt: skip
    lines += [
        "",
        "### Reference rules on the same episodes",
        "",
        rules_markdown(tables.rules, tables.table2),
        "",
        "## Table 3: DyPS ablations",
        "",
        _rows_markdown(tables.table3, [(_column_key(c), c[2]) for c in RH_COLUMNS], PAPER_TABLE3),
        "",
        "The paper's DyPS row on Ride-Hailing (2) (873,810) is its Table 4's DyPS+CoPO, not "
        "Table 2's DyPS (713,520).",
        "",
        "## Table 4: backbones (Ride-Hailing (2))",
        "",
        _rows_markdown(
            tables.table4, [("rh-2:gmv", "GMV"), ("rh-2:orr", "ORR")], PAPER_TABLE4, rank=False
        ),
        "",
        "IPPO is Table 2's NoPS and DyPS+IPPO Table 2's DyPS (as in the paper). MAPPO shares one "
        'set of parameters and the team reward (`reward="team"`: the mean GMV of the cells, '
        "given to every cell), with a centralised critic on the state. CoPO is not built.",
        "",
        "## Table 7: rules on ride-hailing",
        "",
        table7_markdown(tables.table7),
        "",
        "`nearest` is the nearest destination (the rule the paper names); the paper's numbers "
        "are the public code's `Nearest`, which serves orders in list order, like our `fifo` "
        "(docs/envs/ride-hailing.md).",
        "",
        "## Figure 6(a): number of groups",
        "",
        "| K | GMV | ORR |",
        "|---:|---:|---:|",
    ]
    for k, cells in tables.figure6a.items():
        gmv, orr = cells.get("rh-2:gmv"), cells.get("rh-2:orr")
        if gmv and orr:
            lines.append(f"| {k} | {_fmt(gmv.mean, gmv.std)} | {_fmt(orr.mean, orr.std, 3)} |")
    means = {k: c["rh-2:gmv"].mean for k, c in tables.figure6a.items() if "rh-2:gmv" in c}
    if means:
        best_k = max(means, key=lambda k: means[k])
        lines += ["", f"Best K here: {best_k} (paper: 4).", ""]
    lines += ["![Figure 6a](figure6a_groups.png)", "", "## Figure 6(b): the grouping", ""]
    if grouping:
        lines += [
            f"Seed {grouping['seed']}'s DyPS run, iterations {grouping['iterations']} of "
            f"groups.csv (sampled groupings) and the saved policy's greedy grouping (group sizes "
            f"{grouping['greedy_sizes']}). Agents changing group between consecutive iterations: "
            f"{grouping['moved_per_iteration']:.0%} on average. Share of the variance of the "
            "cells' mean order rate between the groups (eta^2): greedy grouping "
            f"{grouping['eta2_rate_greedy']:.3f}, last sampled grouping "
            f"{grouping['eta2_rate_last']:.3f}; a random grouping gives about "
            f"{grouping['eta2_random']:.3f}.",
            "",
            "![Figure 6b](figure6b_grouping.png)",
            "",
        ]
    lines += [
        "## Figure 9: learning curves on Ride-Hailing (2)",
        "",
        "![Figure 9](figure9_learning_curves.png)",
        "",
        "Area under each training curve (mean training score over the run), per scenario:",
        "",
        "| scenario | " + " | ".join(SCHEME_NAMES) + " |",
        "|---|" + "---:|" * len(SCHEME_NAMES),
    ]
    for env, areas in speed.items():
        marks = rank_marks([areas.get(s, math.nan) for s in SCHEME_NAMES])
        cells = [_marked(_fmt(areas.get(s, math.nan), math.nan), m)
                 for s, m in zip(SCHEME_NAMES, marks, strict=True)]  # fmt: skip
        lines.append(f"| {CASES[env].title} | " + " | ".join(cells) + " |")
    if roles:
        lines += [
            "",
            "## The mechanism on `roles`",
            "",
            "Every agent sees the same observation; the reward says its hidden role (agent i "
            "has role i mod R). A grouping that recovers the roles has adjusted Rand index 1 "
            "(`sklearn.metrics.adjusted_rand_score`; 0 is chance).",
            "",
            "A grouping finer than the roles (SePS's Davies-Bouldin rule may pick near-singletons: "
            "agents of one role encode to nearly one point) has a low ARI but is still right if "
            "no group mixes roles (column *pure*).",
            "",
            "| method | agents / roles | seed | groups used | ARI | pure | accuracy | grouping |",
            "|---|---|---:|---:|---:|---|---:|---|",
        ]
        for r in roles:
            lines.append(f"| {r['method']} | {r['agents']} / {r['roles']} | {r['seed']} | "
                         f"{r['groups_used']} | {r['ari']:.2f} | {'yes' if r['pure'] else 'no'} | "
                         f"{r['accuracy']:.2f} | "
                         f"`{r['grouping']}` |")  # fmt: skip
    lines += ["", "The comparison with the paper, and why results differ: "
              "`docs/reproduction.md` (paper 002).", ""]  # fmt: skip
    return "\n".join(lines)
