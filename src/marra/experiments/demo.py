"""The short simulation shown at the end of ``marra demo``."""

from __future__ import annotations

from typing import Any

import numpy as np

from marra.hospital.network import HospitalNetwork


def demo_methods(network: HospitalNetwork) -> tuple[list[Any], float]:
    """Classical methods under a per-step budget, plus the shipped policy when available."""
    from marra.experiments.simulate import ClassicalMethod

    budget = float(network.n)  # one staff per hospital per step, the default of `marra train`
    methods: list[Any] = [
        ClassicalMethod(name, transfer_budget=budget) for name in ("qp", "nwo", "greedy", "hold")
    ]
    try:
        from marra.experiments.policy_method import PolicyMethod, default_policy_path
    except ImportError:  # learning layer not installed
        return methods, budget
    path = default_policy_path()
    if path is not None:
        methods.insert(
            0,
            PolicyMethod.from_file(
                path, transfer_budget=budget, integer=True, label="ppo (shipped)"
            ),
        )
    return methods, budget


def demo_simulation(
    network: HospitalNetwork, *, steps: int = 50, console: Any = None, seeds: int = 3
) -> dict[str, dict[str, float]]:
    """Simulate shifting+shock on ``network`` for a few seeds; print and return mean metrics."""
    from rich.console import Console
    from rich.table import Table

    from marra.experiments.simulate import CORE_METRICS, seed_streams
    from marra.hospital.scenarios import make_scenario

    console = console or Console()
    methods, budget = demo_methods(network)
    scenario = make_scenario("shifting+shock", horizon=steps)
    summary: dict[str, dict[str, float]] = {}
    for method in methods:
        runs = []
        for seed in range(seeds):
            realisation = scenario.realise(network, seed_streams(seed)[1])
            runs.append(method.run_episode(network, realisation, steps, tau=0.1))
        summary[method.label] = {
            key: float(np.mean([run[key] for run in runs])) for key in CORE_METRICS
        }
    table = Table(
        title=f"shifting+shock, {steps} steps, {seeds} seeds, at most {budget:g} staff moved per "
        "step (means over steps and seeds)",
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
    return summary
