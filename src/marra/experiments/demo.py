"""The short simulation shown at the end of ``marra demo``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from marra.hospital.network import HospitalNetwork

#: Seeds of the demo's dynamic simulation.
DEMO_SEEDS = 3
#: Methods of the demo's dynamic simulation (four classical ones and the shipped policy).
DEMO_METHODS = 5
#: The scenario of the demo's dynamic simulation.
DEMO_SCENARIO = "shifting+shock"


def demo_methods(
    network: HospitalNetwork, budget: float | None = None
) -> tuple[list[Any], float | None]:
    """Classical methods under a per-step budget, plus the shipped policy when available.

    ``budget`` None gives one staff per hospital per step (the default of ``marra train``, the
    budget the shipped policy was trained with); ``math.inf`` plays without a budget. Returns the
    methods and the budget they all play under (None: no cap).
    """
    from marra.experiments.simulate import ClassicalMethod

    budget = float(network.n) if budget is None else float(budget)
    methods: list[Any] = [
        ClassicalMethod(name, transfer_budget=budget) for name in ("qp", "nwo", "greedy", "hold")
    ]
    effective = None if math.isinf(budget) else budget
    try:
        from marra.experiments.policy_method import PolicyMethod, default_policy_path
    except ImportError:  # learning layer not installed
        return methods, effective
    path = default_policy_path()
    if path is not None:
        methods.insert(
            0,
            PolicyMethod.from_file(
                path, transfer_budget=budget, integer=True, label="ppo (shipped)"
            ),
        )
    return methods, effective


def demo_simulation(
    network: HospitalNetwork,
    *,
    steps: int = 50,
    console: Any = None,
    seeds: int = DEMO_SEEDS,
    budget: float | None = None,
) -> dict[str, dict[str, float]]:
    """Simulate shifting+shock on ``network`` for a few seeds; print and return mean metrics.

    ``budget`` as in :func:`demo_methods`.
    """
    from rich.console import Console
    from rich.table import Table

    from marra.experiments.simulate import CORE_METRICS, seed_streams
    from marra.hospital.scenarios import make_scenario

    console = console or Console()
    methods, effective = demo_methods(network, budget)
    scenario = make_scenario(DEMO_SCENARIO, horizon=steps)
    summary: dict[str, dict[str, float]] = {}
    for method in methods:
        runs = []
        for seed in range(seeds):
            realisation = scenario.realise(network, seed_streams(seed)[1])
            runs.append(method.run_episode(network, realisation, steps, tau=0.1))
        summary[method.label] = {
            key: float(np.mean([run[key] for run in runs])) for key in CORE_METRICS
        }
    cap = "no cap on staff moved" if effective is None else f"at most {effective:g} staff moved"
    table = Table(
        title=f"{DEMO_SCENARIO}, {steps} steps, {seeds} seeds, {cap} per step, every method "
        "(means over steps and seeds)",
        title_justify="left",
    )
    for column in (
        "method",
        "MAE",
        "Gini",
        "cov. Gini",
        "MRE/N",
        "below min",
        "moved/step",
        "ms/step",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for label, m in summary.items():
        table.add_row(
            label,
            f"{m['mae']:.3f}",
            f"{m['gini']:.4f}",
            f"{m['coverage_gini']:.4f}",
            f"{m['mre_normalised']:.4f}",
            f"{m['minima_shortfall']:.2f}",
            f"{m['moved']:.1f}",
            f"{m['decision_seconds'] * 1000:.2f}",
        )
    console.print(table)
    console.print(
        "Lower is better for MAE, Gini, cov. Gini, MRE/N and below min; moved/step and ms/step "
        "are costs (ms/step: the decision alone, one CPU thread for the policy)."
    )
    return summary
