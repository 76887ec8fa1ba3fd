"""Run strategies over a scenario for many seeds and store tidy results.

The loop for one episode (paper 000 section 4.1; timeline of :mod:`marra.hospital.scenarios`):
at the
start of step ``t`` the scenario's events happen (targets shift, a shock removes staff), the method
decides a new allocation for the network as it now is (under the transfer budget when one is
given), and the metrics of step ``t`` are recorded for that allocation against ``target[t]``.

Seeds are independent: seed ``s`` draws its own random network (unless one is given) and its own
scenario events, identical for every method, so methods are compared on the same draws. Each
(method, seed) pair is written to its own part file as soon as it finishes, atomically; a rerun
with the same output folder skips the parts already there, and ``results.csv`` is rebuilt from
the parts atomically, so an interrupted run never leaves a half-written table.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from marra._io import atomic_write_text
from marra.experiments.results import (
    ResultsError,
    config_fingerprint,
    merge_csv_parts,
    rows_to_csv_text,
    write_manifest,
)
from marra.hospital.network import HospitalNetwork, generate_network
from marra.metrics import report

#: Metrics every simulation records per step (plus every key of :func:`marra.metrics.report`).
CORE_METRICS = (
    "mae",
    "gini",
    "coverage_gini",
    "mre_normalised",
    "minima_shortfall",
    "moved",
    "decision_seconds",
)


class SimulationError(ValueError):
    """A simulation that cannot run as asked (bad arguments, a mismatched output folder)."""


class Method(Protocol):
    """Anything that can play an episode: a classical strategy or a learned policy."""

    label: str

    def run_episode(
        self, network: HospitalNetwork, realisation: Any, steps: int, *, tau: float
    ) -> dict[str, np.ndarray]:
        """Play ``steps`` steps; return metric name -> values of shape ``(steps,)``."""
        ...


def network_at(
    base: HospitalNetwork, current: np.ndarray, target: np.ndarray, minimum: np.ndarray
) -> HospitalNetwork:
    """The network as it stands at one step (same names, capacities and coordinates)."""
    return HospitalNetwork(
        current=current,
        minimum=minimum,
        target=target,
        capacity=base.capacity,
        names=base.names,
        coords=base.coords,
    )


def play_episode(
    network: HospitalNetwork,
    realisation: Any,
    steps: int,
    decide: Callable[[HospitalNetwork], np.ndarray],
    *,
    tau: float = 0.1,
) -> dict[str, np.ndarray]:
    """Play one episode with a decision function ``network -> allocation``.

    Returns metric name -> values of shape ``(steps,)``: every key of
    :func:`marra.metrics.report`, plus ``decision_seconds`` and ``total_staff``.
    """
    from marra.hospital.scenarios import apply_events

    current = np.array(network.current, dtype=np.float64)
    series: dict[str, list[float]] = {}
    for step in range(steps):
        current, target, minimum = apply_events(step, current, realisation)
        state = network_at(network, current, target, minimum)
        started = time.perf_counter()
        allocation = np.asarray(decide(state), dtype=np.float64)
        elapsed = time.perf_counter() - started
        metrics = report(state, allocation, tau=tau)
        metrics["decision_seconds"] = elapsed
        metrics["total_staff"] = float(allocation.sum())
        for key, value in metrics.items():
            series.setdefault(key, []).append(float(value))
        current = allocation
    return {key: np.asarray(values) for key, values in series.items()}


@dataclass(frozen=True)
class ClassicalMethod:
    """A classical strategy of :mod:`marra.hospital.strategies`, re-planning at every step.

    ``shortfall=True`` always: a simulation must go on even when a shock leaves too few staff
    for every minimum.
    """

    strategy: str
    transfer_budget: float | None = None
    integer: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.transfer_budget is None or self.strategy == "hold":
            return self.strategy
        return f"{self.strategy} (B={self.transfer_budget:g})"

    def decide(self, network: HospitalNetwork) -> np.ndarray:
        from marra.hospital.strategies import allocate

        return allocate(
            network,
            self.strategy,
            transfer_budget=self.transfer_budget,
            integer=self.integer,
            shortfall=True,
            **self.options,
        )

    def run_episode(
        self, network: HospitalNetwork, realisation: Any, steps: int, *, tau: float = 0.1
    ) -> dict[str, np.ndarray]:
        return play_episode(network, realisation, steps, self.decide, tau=tau)


def seed_streams(seed: int) -> tuple[int, int]:
    """Two independent integer seeds for (network draw, scenario events) from one run seed."""
    network_seed, scenario_seed = np.random.SeedSequence(int(seed)).generate_state(2)
    return int(network_seed), int(scenario_seed)


@dataclass
class SimulationSpec:
    """What to simulate: the scenario, the network source, the horizon and the seeds."""

    scenario: str
    seeds: Sequence[int]
    steps: int = 50
    hospitals: int = 150
    network: HospitalNetwork | None = None
    network_source: str | None = None
    integer: bool = True
    tau: float = 0.1
    scenario_options: dict[str, Any] = field(default_factory=dict)

    def network_for(self, seed: int) -> HospitalNetwork:
        if self.network is not None:
            return self.network
        return generate_network(self.hospitals, seed=seed_streams(seed)[0])

    def fingerprint_config(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "steps": self.steps,
            "hospitals": self.hospitals if self.network is None else self.network.n,
            "network": self.network_source
            or ("generated" if self.network is None else "in-memory"),
            "network_digest": None if self.network is None else _network_digest(self.network),
            "integer": self.integer,
            "tau": self.tau,
            "scenario_options": self.scenario_options,
        }


def _network_digest(network: HospitalNetwork) -> str:
    parts = [network.current, network.minimum, network.target, network.upper]
    blob = b"".join(np.ascontiguousarray(p).tobytes() for p in parts)
    blob += "\n".join(network.names).encode()
    return config_fingerprint({"blob": blob.hex()})


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "method"


def run_simulation(
    spec: SimulationSpec,
    methods: Sequence[Method],
    out_dir: str | Path,
    *,
    progress: bool = True,
    arguments: dict[str, Any] | None = None,
    scenario_label: str | None = None,
) -> Path:
    """Run every method on every seed of ``spec`` and write ``out_dir/results.csv``.

    Returns the path of ``results.csv``. Parts already present (same configuration) are reused.

    Raises:
        SimulationError: when ``out_dir`` holds a run with a different configuration, or the
            arguments are invalid.
    """
    from marra.hospital.scenarios import make_scenario

    if spec.steps < 1:
        raise SimulationError(f"steps: must be at least 1, got {spec.steps}")
    if not spec.seeds:
        raise SimulationError("seeds: at least one seed is required")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise SimulationError(f"methods: labels must be unique, got {labels}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = spec.fingerprint_config()
    fingerprint = config_fingerprint(config)
    stamp = out / "parts" / "config.json"
    if stamp.exists():
        old = json.loads(stamp.read_text())
        if old.get("fingerprint") != fingerprint:
            changed = _diff(old.get("config", {}), config)
            raise SimulationError(
                f"--out {out}: holds a run with other settings ({changed}); "
                "choose another folder or delete it"
            )
    else:
        atomic_write_text(
            stamp, json.dumps({"fingerprint": fingerprint, "config": config}, indent=2, default=str)
        )
    scenario = make_scenario(spec.scenario, horizon=spec.steps, **spec.scenario_options)
    name = scenario_label or spec.scenario
    jobs = [(m, s) for s in spec.seeds for m in methods]
    part_paths: list[Path] = []
    todo: list[tuple[Method, int, Path]] = []
    for method, seed in jobs:
        path = out / "parts" / _safe(method.label) / f"{_safe(name)}_seed{int(seed):05d}.csv"
        part_paths.append(path)
        if not path.exists():
            todo.append((method, int(seed), path))

    def _run(method: Method, seed: int, path: Path) -> None:
        network = spec.network_for(seed)
        realisation = scenario.realise(network, seed_streams(seed)[1])
        series = method.run_episode(network, realisation, spec.steps, tau=spec.tau)
        rows = (
            (method.label, name, seed, step, metric, values[step])
            for metric, values in series.items()
            for step in range(spec.steps)
        )
        atomic_write_text(path, rows_to_csv_text(rows))

    if progress and todo:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task(f"simulate {name}", total=len(todo))
            for method, seed, path in todo:
                bar.update(task, description=f"{name}: {method.label} seed {seed}")
                _run(method, seed, path)
                bar.advance(task)
            bar.update(task, description=f"simulate {name}")
    else:
        for method, seed, path in todo:
            _run(method, seed, path)
    results = out / "results.csv"
    merge_csv_parts(part_paths, results)
    write_manifest(
        out / "manifest.json",
        arguments=arguments or {},
        seeds=[int(s) for s in spec.seeds],
        extra={
            "config": config,
            "methods": labels,
            "scenario": name,
            "reused_parts": len(jobs) - len(todo),
        },
    )
    return results


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3]) or "unknown"


def validate_metric_names(frame: Any) -> None:
    """Check a results frame records the core metrics (used by tests and plotting)."""
    missing = [m for m in CORE_METRICS if m not in set(frame["metric"])]
    if missing:
        raise ResultsError(f"results: missing metrics {missing}")
