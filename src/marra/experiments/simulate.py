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

One output folder holds one configuration (scenario, horizon, network, whole or fractional
staff, tau: :meth:`SimulationSpec.fingerprint_config`); a rerun with another configuration is
refused. Within it, runs *merge*: a rerun with other methods or seeds adds their parts, and
``results.csv`` holds every (method, seed) part of the folder. Each method's identity (its
strategy and effective budget; for a learned policy the SHA-256 of the policy file and its
budget) is recorded next to its parts, and a rerun whose method of the same label differs is
refused before anything is computed or written.

Everything is validated (the scenario, the arguments, the output folder, the memory it will
need) before the folder is created.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from marra._io import atomic_write_text
from marra.experiments.results import (
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
    """A simulation that cannot run as asked (bad arguments, a mismatched output folder).

    ``field`` names what is wrong (``steps``, ``seeds``, ``hospitals``, ``tau``, ``methods``,
    ``scenario``, ``out``, ``memory``) so that a front end can name its own option; the message
    reads ``field: detail``.
    """

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.field = field
        self.detail = detail


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
    """The network as it stands at one step (same names, capacities and coordinates).

    Validated once: :meth:`HospitalNetwork.at_state` checks the new arrays with whole-array
    operations and shares the names, so a step at 30,000 hospitals costs no Python loop.
    """
    return base.at_state(current, target, minimum)


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
    def budget(self) -> float | None:
        """The per-step budget this method plays under (None: no cap; ``inf`` means none)."""
        if self.transfer_budget is None or math.isinf(self.transfer_budget):
            return None
        return float(self.transfer_budget)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.budget is None or self.strategy == "hold":
            return self.strategy
        return f"{self.strategy} (B={self.budget:g})"

    def identity(self) -> dict[str, Any]:
        """What makes this method's results what they are (recorded next to its parts)."""
        return {
            "label": self.label,
            "kind": "classical",
            "strategy": self.strategy,
            "budget": self.budget,
            "integer": self.integer,
            "options": {k: self.options[k] for k in sorted(self.options)},
        }

    def decide(self, network: HospitalNetwork) -> np.ndarray:
        from marra.hospital.strategies import allocate

        return allocate(
            network,
            self.strategy,
            transfer_budget=self.budget,
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

    @property
    def n(self) -> int:
        """Hospitals per episode."""
        return self.hospitals if self.network is None else self.network.n

    def validate(self) -> None:
        """Check every argument, naming it.

        Raises:
            SimulationError: for a bad horizon, seed list, hospital count or tau.
        """
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SimulationError(f"must be an integer >= 1, got {self.steps!r}", field="steps")
        seeds = list(self.seeds)
        if not seeds:
            raise SimulationError("at least one seed is required", field="seeds")
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
                raise SimulationError(f"must be integers, got {seed!r}", field="seeds")
            if not 0 <= int(seed) < 2**63:
                raise SimulationError(f"must lie in [0, 2**63), got {seed}", field="seeds")
        if len(set(int(s) for s in seeds)) != len(seeds):
            raise SimulationError("each seed may be given once", field="seeds")
        if self.network is None and (
            isinstance(self.hospitals, bool)
            or not isinstance(self.hospitals, int)
            or self.hospitals < 1
        ):
            raise SimulationError(
                f"must be an integer >= 1, got {self.hospitals!r}", field="hospitals"
            )
        try:
            tau = float(self.tau)
        except (TypeError, ValueError):
            tau = math.nan
        if not (math.isfinite(tau) and tau >= 0):
            raise SimulationError(f"must be a finite number >= 0, got {self.tau!r}", field="tau")

    def memory_bytes(self, methods: int) -> int:
        """An estimate of the memory a run of ``methods`` methods needs (see
        :func:`estimate_simulation_bytes`)."""
        return estimate_simulation_bytes(self.n, self.steps, len(list(self.seeds)), methods)

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

    Returns the path of ``results.csv``, which holds every part of the folder: the methods
    and seeds of this run and those of earlier runs with the same configuration (the folder
    merges). Parts already present (same configuration, same method identity) are reused.

    Raises:
        SimulationError: for invalid arguments or scenario, too little memory, or when
            ``out_dir`` holds a run with a different configuration or a different method
            under the same label. Nothing is created or written then.
    """
    from marra._io import OutputPathError, check_output_dir
    from marra.hospital.scenarios import ScenarioError, make_scenario

    spec.validate()
    labels = [m.label for m in methods]
    if not labels:
        raise SimulationError("at least one method is required", field="methods")
    if len(set(labels)) != len(labels):
        raise SimulationError(f"labels must be unique, got {labels}", field="methods")
    check_memory(spec.memory_bytes(len(methods)), "this simulation")
    out = Path(out_dir)
    try:
        check_output_dir(out)
    except OutputPathError as exc:
        raise SimulationError(str(exc), field="out") from None
    try:
        scenario = make_scenario(spec.scenario, horizon=spec.steps, **spec.scenario_options)
        # Realise the first seed now: a CSV naming unknown hospitals, an outbreak on a network
        # without coordinates, ... fail here, before any folder exists.
        first = int(list(spec.seeds)[0])
        scenario.realise(spec.network_for(first), seed_streams(first)[1])
    except ScenarioError as exc:
        raise SimulationError(f"{spec.scenario}: {exc}", field="scenario") from None
    name = scenario_label or spec.scenario
    config = spec.fingerprint_config()
    fingerprint = config_fingerprint(config)
    stamp = out / "parts" / "config.json"
    known: list[str] = []
    if stamp.exists():
        old = _read_json(stamp)
        if old.get("fingerprint") != fingerprint:
            changed = _diff(old.get("config", {}), config)
            raise SimulationError(
                f"{out} holds a run with other settings ({changed}); "
                "choose another folder or delete it",
                field="out",
            )
        known = [str(label) for label in old.get("methods", [])]
    identities = {m.label: method_identity(m) for m in methods}
    for label, identity in identities.items():
        recorded = _method_file(out, label)
        if recorded.exists():
            before = _identifying(_read_json(recorded))
            now = _identifying(_jsonable(identity))
            if before != now:
                raise SimulationError(
                    f"{out}: method {label!r} was run here with other settings "
                    f"({_diff(before, now)}); refused rather than mixing "
                    "results: choose another folder, delete "
                    f"{recorded.parent}, or give the method another label",
                    field="out",
                )

    # ---- everything checked: create and write from here on
    order = known + [label for label in labels if label not in known]
    atomic_write_text(
        stamp,
        json.dumps(
            {"fingerprint": fingerprint, "config": config, "methods": order},
            indent=2,
            default=str,
        ),
    )
    for label, identity in identities.items():
        atomic_write_text(_method_file(out, label), json.dumps(_jsonable(identity), indent=2))
    jobs = [(m, int(s)) for s in spec.seeds for m in methods]
    todo: list[tuple[Method, int, Path]] = []
    for method, seed in jobs:
        path = _part_file(out, method.label, name, seed)
        if not path.exists():
            todo.append((method, seed, path))

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
    parts = folder_parts(out, order, name)
    results = out / "results.csv"
    merge_csv_parts([path for _, _, path in parts], results)
    earlier = [label for label in order if label not in labels]
    write_manifest(
        out / "manifest.json",
        arguments=arguments or {},
        seeds=sorted({seed for _, seed, _ in parts}),
        extra={
            "config": config,
            "methods": [
                {**_read_json(_method_file(out, label)), "seeds": _seeds_of(parts, label)}
                for label in order
            ],
            "this_run": {"methods": labels, "seeds": [int(s) for s in spec.seeds]},
            "merged_from_earlier_runs": earlier,
            "scenario": name,
            "reused_parts": len(jobs) - len(todo),
        },
    )
    return results


def method_identity(method: Method) -> dict[str, Any]:
    """What identifies a method's results: its own :meth:`identity` when it has one."""
    identity = getattr(method, "identity", None)
    if callable(identity):
        return dict(identity())
    return {"label": method.label, "kind": type(method).__name__}


#: Keys of a method's identity that describe it but do not decide its results (a policy file
#: copied elsewhere is the same policy: its SHA-256 decides).
_INFORMATIONAL_KEYS = ("policy_file",)


def _identifying(identity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity.items() if k not in _INFORMATIONAL_KEYS}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SimulationError(
            f"{path}: unreadable ({exc}); delete the folder to start afresh"
        ) from None
    if not isinstance(data, dict):
        raise SimulationError(f"{path}: not a marra record; delete the folder to start afresh")
    return data


def _method_file(out: Path, label: str) -> Path:
    return out / "parts" / _safe(label) / "method.json"


def _part_file(out: Path, label: str, scenario: str, seed: int) -> Path:
    return out / "parts" / _safe(label) / f"{_safe(scenario)}_seed{int(seed):05d}.csv"


def folder_parts(out: Path, labels: Sequence[str], scenario: str) -> list[tuple[str, int, Path]]:
    """Every finished part of ``out`` for ``labels`` (in that order), seeds ascending."""
    found = []
    prefix = f"{_safe(scenario)}_seed"
    for label in labels:
        folder = out / "parts" / _safe(label)
        seeds = []
        for path in folder.glob(f"{prefix}*.csv"):
            digits = path.stem[len(prefix) :]
            if digits.isdigit():
                seeds.append((int(digits), path))
        found += [(label, seed, path) for seed, path in sorted(seeds)]
    return found


def _seeds_of(parts: Sequence[tuple[str, int, Path]], label: str) -> list[int]:
    return [seed for which, seed, _ in parts if which == label]


# ---------------------------------------------------------------------- memory
#: Metrics recorded per step (every key of :func:`marra.metrics.report` and two more).
_SERIES_PER_STEP = 18


def estimate_simulation_bytes(hospitals: int, steps: int, seeds: int, methods: int) -> int:
    """An upper estimate of the memory a simulation needs, in bytes.

    One episode holds its scenario arrays (targets, minima, shocks: a few ``(steps,
    hospitals)`` float64 arrays, and the learning environment's stacked copies), the network
    and the metric series; the merged table holds ``methods * seeds * steps * 18`` rows, as
    text and then as a DataFrame (~300 bytes a row in all).
    """
    episode = 8 * 8 * steps * hospitals + 200 * hospitals + 40 * _SERIES_PER_STEP * steps
    table = 300 * methods * seeds * steps * _SERIES_PER_STEP
    return int(episode + table)


def available_memory_bytes() -> int:
    """Memory the process may still allocate: ``MemAvailable`` where the system tells it
    (Linux), else the physical memory; never less than 256 MiB."""
    import os

    floor = 256 * 2**20
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return max(int(line.split()[1]) * 1024, floor)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), floor)
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``12.0 MiB``: a byte count for a message."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count / 2**10:,.1f} KiB"


def check_memory(needed: float, what: str) -> None:
    """Refuse work whose memory estimate exceeds what is available, stating both.

    Raises:
        SimulationError: ``what`` needs more memory than is available.
    """
    available = available_memory_bytes()
    if needed > available:
        raise SimulationError(
            f"{what} needs about {format_bytes(needed)} of memory, more than the "
            f"{format_bytes(available)} available",
            field="memory",
        )


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 24 else text[:20] + "...'"

    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return (
        ", ".join(f"{k}: {short(old.get(k))} then, {short(new.get(k))} now" for k in changed[:3])
        or "unknown"
    )
