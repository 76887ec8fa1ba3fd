"""How needs change over time: the events of an episode, shared by simulation and learning.

A :class:`Scenario` turns a network and a seed into one episode's events, a :class:`Realisation`:
the target and minimum in force at every step, shape ``(horizon, n)``, and a short list of staff
shocks (step, hospital, fraction lost). Both the classical simulator (through
:func:`apply_events`) and the batched learning environment (through :func:`apply_shock` on
tensors and :meth:`Realisation.shock_fractions`) consume the same realisation, so the event logic
exists once.

Timeline of step ``t`` (``t = 0 .. horizon - 1``)
    1. the events of step ``t`` happen: the targets (and minima) become ``target[t]``
       (``minimum[t]``) and every shock of step ``t`` removes staff from its hospital;
    2. the strategy or agent reallocates (conserving the total);
    3. the metrics of step ``t`` are recorded against ``target[t]``.

Row 0 equals the network's own targets unless a scenario has an event at step 0 (a CSV set-point
at step 0, a seasonal swing with a phase, an outbreak starting at 0).

A shock (paper 000, section 4.1, "Sudden Shock"): the hospital loses ``fraction`` of its current
staff, floored, but never so many that it falls below its minimum; those staff leave the system::

    loss = max(0, min(floor(fraction * current), current - minimum))

Several shocks on one hospital at one step combine to ``1 - prod(1 - fraction_j)``.

Built-in scenarios (:data:`SCENARIOS`; :func:`make_scenario` parses ``"shifting+shock"`` or
``"csv:path.csv"``):

- ``static`` (:class:`Static`): nothing changes.
- ``shifting`` (:class:`ShiftingTargets`, paper 000 section 4.1, "Shifting Targets"): every
  ``every`` steps (t = 10, 20, 30, 40 for T = 50) each target changes by an integer drawn
  uniformly from ``[-max_change, max_change]`` (default 2), kept within ``[minimum, capacity]``.
- ``shock`` (:class:`SuddenShock`, paper 000 section 4.1): at ``T // 2`` one hospital, drawn
  uniformly, loses half of its staff (as above).
- ``seasonal`` (:class:`Seasonal`): a sinusoidal swing of the targets of some hospitals.
- ``outbreak`` (:class:`Outbreak`): a wave of raised targets spreading from an epicentre.
- ``csv:PATH`` (:class:`CsvTargets`, :func:`from_csv`): per-step targets given by the user.

Scenarios compose: ``ShiftingTargets() + SuddenShock()`` (or ``Compose([...])``) applies the
target-path changes in order and concatenates the shocks. Each part draws from its own random
stream, derived from the seed, the part's kind and its occurrence, so ``shifting+shock`` with seed
7 has the same target path as ``shifting`` with seed 7 and hits the same hospital as ``shock``
with seed 7.

This module uses numpy only; the learning environment applies :func:`apply_shock` to tensors.
"""

from __future__ import annotations

import math
import os
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from marra.hospital.network import HospitalNetwork, read_csv_records

__all__ = [
    "SCENARIOS",
    "CSV_COLUMNS",
    "Compose",
    "CsvTargets",
    "Outbreak",
    "Realisation",
    "Scenario",
    "ScenarioError",
    "ScenarioWarning",
    "Seasonal",
    "ShiftingTargets",
    "Static",
    "SuddenShock",
    "apply_events",
    "apply_shock",
    "from_csv",
    "make_scenario",
    "shock_loss",
]

#: Names of the built-in scenarios accepted by :func:`make_scenario` (plus ``csv:PATH``).
SCENARIOS = ("static", "shifting", "shock", "seasonal", "outbreak")
#: The columns of a targets CSV for :func:`from_csv`.
CSV_COLUMNS = ("step", "name", "target")
_EARTH_RADIUS_KM = 6371.0088


class ScenarioError(ValueError):
    """Invalid scenario parameters or data. The message names the parameter (or the CSV column
    and 1-based data row)."""


class ScenarioWarning(UserWarning):
    """Scenario data that was legal but adjusted (e.g. a CSV target below its minimum)."""


# ---------------------------------------------------------------------- shocks (numpy or torch)
def _shock(current: Any, minimum: Any, fraction: Any) -> tuple[Any, Any]:
    # Written with *, //, -, +, comparisons, & only, so that it is valid for numpy arrays,
    # torch tensors and Python floats alike (no np./torch. calls). Values are selected by
    # multiplying with masks, so a hospital held at its minimum ends exactly at its minimum.
    wanted = (fraction * current) // 1  # floor(fraction * current); paper 000 sec. 4.1
    room = current - minimum
    capped = (wanted > room) & (room > 0)  # the minimum binds: lose exactly `room`
    loss = wanted * (wanted <= room) + room * (wanted > room)
    loss = loss * (loss > 0) + 0.0  # never negative (+ 0.0 turns -0.0 into 0.0)
    after = (current - loss) * (capped <= 0) + minimum * capped
    return after, loss


def shock_loss(current: Any, minimum: Any, fraction: Any) -> Any:
    """Staff a shock removes: ``max(0, min(floor(fraction * current), current - minimum))``.

    Paper 000 section 4.1 ("Sudden Shock": a hospital "loses half its workforce" but still
    satisfies its minimum). Works unchanged on numpy arrays, torch tensors and floats, with the
    usual broadcasting: ``current`` and ``minimum`` of shape ``(n,)`` or ``(num_envs, n)``,
    ``fraction`` a scalar or of the same shape (0 where no shock happens: the loss is 0).
    A hospital already below its minimum loses nothing.
    """
    return _shock(current, minimum, fraction)[1]


def apply_shock(current: Any, minimum: Any, fraction: Any) -> tuple[Any, Any]:
    """``(current_after, loss)`` of a shock; ``current_after = current - loss``, set exactly to
    ``minimum`` where the minimum binds (so float rounding never leaves it a hair below).

    Same rule and same array/tensor genericity as :func:`shock_loss`.
    """
    return _shock(current, minimum, fraction)


# ---------------------------------------------------------------------- realisation
def _readonly(values: Any, dtype: type, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{what}: values must be numbers ({exc})") from None
    view = array.view()
    view.setflags(write=False)
    return view


@dataclass(frozen=True, eq=False)
class Realisation:
    """One episode's events, precomputed as read-only arrays.

    Attributes:
        target: target in force at step ``t``, shape ``(horizon, n)``.
        minimum: minimum in force at step ``t``, shape ``(horizon, n)`` (often a broadcast view
            of the network's minima, which costs no memory).
        shock_step: steps at which staff shocks happen, shape ``(k,)``, int64.
        shock_hospital: the hospital index each shock hits, shape ``(k,)``, int64.
        shock_fraction: the fraction of its staff each shock removes, shape ``(k,)``, float64
            (0.5 in paper 000).
        info: what the scenarios drew, for reports and plots; each value is a tuple with one
            entry per scenario part that wrote it (e.g. ``info["outbreak_epicentre"][0]``).
    """

    target: np.ndarray
    minimum: np.ndarray
    shock_step: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    shock_hospital: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    shock_fraction: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    info: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        target = _readonly(self.target, np.float64, "target")
        minimum = _readonly(self.minimum, np.float64, "minimum")
        if target.ndim != 2 or target.shape[0] < 1 or target.shape[1] < 1:
            raise ScenarioError(f"target: expected shape (horizon, n), got {target.shape}")
        if minimum.shape != target.shape:
            raise ScenarioError(
                f"minimum: expected shape {target.shape} like target, got {minimum.shape}"
            )
        horizon, n = target.shape
        step = _readonly(self.shock_step, np.int64, "shock_step")
        hospital = _readonly(self.shock_hospital, np.int64, "shock_hospital")
        fraction = _readonly(self.shock_fraction, np.float64, "shock_fraction")
        for name, arr in (("shock_step", step), ("shock_hospital", hospital)):
            if arr.ndim != 1:
                raise ScenarioError(f"{name}: expected a 1-D array, got shape {arr.shape}")
        if fraction.ndim != 1:
            raise ScenarioError(f"shock_fraction: expected a 1-D array, got {fraction.shape}")
        if not (step.shape == hospital.shape == fraction.shape):
            raise ScenarioError(
                "shock_step, shock_hospital, shock_fraction: must have the same length, got "
                f"{step.shape[0]}, {hospital.shape[0]}, {fraction.shape[0]}"
            )
        if step.size:
            if step.min() < 0 or step.max() >= horizon:
                raise ScenarioError(f"shock_step: steps must lie in [0, {horizon - 1}]")
            if hospital.min() < 0 or hospital.max() >= n:
                raise ScenarioError(f"shock_hospital: indices must lie in [0, {n - 1}]")
            if not np.all((fraction >= 0.0) & (fraction <= 1.0)):
                raise ScenarioError("shock_fraction: fractions must lie in [0, 1]")
        set_(self, "target", target)
        set_(self, "minimum", minimum)
        set_(self, "shock_step", step)
        set_(self, "shock_hospital", hospital)
        set_(self, "shock_fraction", fraction)
        set_(self, "info", dict(self.info))

    @classmethod
    def unchanged(cls, network: HospitalNetwork, horizon: int) -> Realisation:
        """The static realisation: the network's targets and minima at every step, no shocks."""
        shape = (int(horizon), network.n)
        return cls(
            target=np.broadcast_to(network.target, shape),
            minimum=np.broadcast_to(network.minimum, shape),
        )

    @property
    def horizon(self) -> int:
        """Number of steps T."""
        return int(self.target.shape[0])

    @property
    def n(self) -> int:
        """Number of hospitals."""
        return int(self.target.shape[1])

    def shock_fractions(self, step: int) -> np.ndarray:
        """Fraction of its staff each hospital loses at ``step``, shape ``(n,)`` (0: no shock).

        Several shocks on one hospital at one step combine to ``1 - prod(1 - fraction_j)``.
        """
        fractions = np.zeros(self.n)
        for j in np.flatnonzero(self.shock_step == step):
            i, f = int(self.shock_hospital[j]), float(self.shock_fraction[j])
            fractions[i] = f if fractions[i] == 0.0 else 1.0 - (1.0 - fractions[i]) * (1.0 - f)
        return fractions

    def with_info(self, key: str, value: Any) -> Realisation:
        """A copy with ``value`` appended to ``info[key]``."""
        info = dict(self.info)
        info[key] = tuple(info.get(key, ())) + (value,)
        return replace(self, info=info)


def apply_events(
    step: int, current: np.ndarray, realisation: Realisation
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The events at the start of ``step``, for a classical simulation (numpy).

    Returns ``(current_after, target, minimum)``: the staff after this step's shocks (a new
    array; ``current`` is not modified), and the target and minimum in force at ``step``, each
    of shape ``(n,)``. The shocks use the minimum of this step (:func:`apply_shock`).
    """
    if not 0 <= int(step) < realisation.horizon:
        raise ScenarioError(f"step: must lie in [0, {realisation.horizon - 1}], got {step}")
    current = np.asarray(current, dtype=np.float64)
    if current.shape != (realisation.n,):
        raise ScenarioError(f"current: expected shape ({realisation.n},), got {current.shape}")
    target = realisation.target[step]
    minimum = realisation.minimum[step]
    if not np.any(realisation.shock_step == step):
        return current.copy(), target, minimum
    current_after, _ = apply_shock(current, minimum, realisation.shock_fractions(int(step)))
    return current_after, target, minimum


# ---------------------------------------------------------------------- helpers
def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ScenarioError(f"{name}: must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_float(
    name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False
) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ScenarioError(f"{name}: must be a number, got {value!r}") from None
    ok = (number > low if open_low else number >= low) and number <= high
    if not ok or math.isnan(number):
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ScenarioError(f"{name}: must lie in {bounds}, got {value!r}")
    return number


def _seed_entropy(seed: int | np.random.Generator) -> int:
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ScenarioError(
            f"seed: must be a non-negative integer or a numpy Generator, got {seed!r}"
        )
    return int(seed)


def _part_rng(entropy: int, kind: str, occurrence: int) -> np.random.Generator:
    # An independent stream per (seed, kind, occurrence): adding a part to a composition does
    # not change what the other parts draw.
    key = (zlib.crc32(kind.encode("utf-8")), occurrence)
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))


def _round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(values + 0.5)


def _haversine_km(coords: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Great-circle distance in km from ``origin`` (lat, lon) to each row of ``coords`` (n, 2)."""
    lat, lon = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    lat0, lon0 = np.radians(origin[0]), np.radians(origin[1])
    a = np.sin((lat - lat0) / 2) ** 2 + np.cos(lat) * np.cos(lat0) * np.sin((lon - lon0) / 2) ** 2
    return 2.0 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _constant_in_time(path: np.ndarray) -> bool:
    """True when every row of a ``(horizon, n)`` path is the same (cheap for broadcast views)."""
    return path.strides[0] == 0 or bool(np.all(path == path[0]))


def _clip_target(target: np.ndarray, minimum: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(target, minimum), upper)


# ---------------------------------------------------------------------- scenarios
class Scenario(ABC):
    """How needs change over an episode of ``horizon`` steps (default 50, paper 000 sec. 4.1).

    Subclasses implement :meth:`modify`, which receives the realisation built so far (targets,
    minima, shocks) and returns it with this scenario's events added; :meth:`realise` starts
    from the static realisation and applies every part in order. ``a + b`` composes.
    """

    kind: ClassVar[str] = "scenario"
    horizon: int

    @property
    def name(self) -> str:
        """The scenario's name as :func:`make_scenario` spells it."""
        return self.kind

    @property
    def parts(self) -> tuple[Scenario, ...]:
        """The simple scenarios this one applies, in order."""
        return (self,)

    def realise(self, network: HospitalNetwork, seed: int | np.random.Generator) -> Realisation:
        """One episode's events for ``network``; the same seed gives the same events.

        ``seed`` is a non-negative integer or a numpy Generator (one number is drawn from it).
        """
        if not isinstance(network, HospitalNetwork):
            raise ScenarioError(
                f"network: expected a HospitalNetwork, got {type(network).__name__}"
            )
        return self._apply(network, Realisation.unchanged(network, self.horizon), seed)

    def _apply(
        self, network: HospitalNetwork, realisation: Realisation, seed: int | np.random.Generator
    ) -> Realisation:
        entropy = _seed_entropy(seed)
        seen: dict[str, int] = {}
        for part in self.parts:
            occurrence = seen.get(part.kind, 0)
            seen[part.kind] = occurrence + 1
            realisation = part.modify(
                network, realisation, _part_rng(entropy, part.kind, occurrence)
            )
        return realisation

    @abstractmethod
    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        """``realisation`` with this scenario's events added, drawing from ``rng``."""

    def events(self) -> tuple[tuple[int, str], ...]:
        """The steps at which this scenario's events happen whatever the seed, with a short
        label, e.g. ``((25, "shock"),)``: what a plot marks. Empty when nothing happens at fixed
        steps."""
        return ()

    def __add__(self, other: Scenario) -> Compose:
        if not isinstance(other, Scenario):
            return NotImplemented
        return Compose([self, other])


def _check_horizon(horizon: Any) -> None:
    _check_int("horizon", horizon, 1)


@dataclass(frozen=True)
class Static(Scenario):
    """Nothing changes: the network's targets and minima hold at every step (paper 000's
    static setting)."""

    kind: ClassVar[str] = "static"
    horizon: int = 50

    def __post_init__(self) -> None:
        _check_horizon(self.horizon)

    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        return realisation


@dataclass(frozen=True)
class ShiftingTargets(Scenario):
    """Paper 000 section 4.1, "Shifting Targets": targets move a little every ``every`` steps.

    At each step ``s = every, 2 * every, ... < horizon`` every hospital's target changes by an
    integer drawn uniformly from ``[-max_change, max_change]``, then is kept within
    ``[minimum, capacity]``; the change persists (a clipped random walk)::

        target[s:] = clip(target[s:] + delta_s, minimum[s:], capacity)

    With defaults (T = 50, every = 10, max_change = 2) targets change at t = 10, 20, 30, 40 by at
    most 2 doctors each time.
    """

    kind: ClassVar[str] = "shifting"
    horizon: int = 50
    every: int = 10
    max_change: int = 2

    def __post_init__(self) -> None:
        _check_horizon(self.horizon)
        _check_int("every", self.every, 1)
        _check_int("max_change", self.max_change, 0)

    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        steps = np.arange(self.every, realisation.horizon, self.every)
        if steps.size == 0:
            return realisation
        deltas = rng.integers(-self.max_change, self.max_change + 1, size=(steps.size, network.n))
        minimum, upper = realisation.minimum, network.upper
        if _constant_in_time(realisation.target) and _constant_in_time(minimum):
            # Fast path, same result: walk one level per segment, then expand to the steps.
            levels = np.empty((steps.size + 1, network.n))
            levels[0] = realisation.target[0]
            for j, delta in enumerate(deltas):
                levels[j + 1] = _clip_target(levels[j] + delta, minimum[0], upper)
            segment = np.searchsorted(steps, np.arange(realisation.horizon), side="right")
            return replace(realisation, target=levels[segment])
        target = np.array(realisation.target)
        for s, delta in zip(steps, deltas, strict=True):
            target[s:] = _clip_target(target[s:] + delta, minimum[s:], upper)
        return replace(realisation, target=target)

    def events(self) -> tuple[tuple[int, str], ...]:
        return tuple((int(s), "targets shift") for s in range(self.every, self.horizon, self.every))


@dataclass(frozen=True)
class SuddenShock(Scenario):
    """Paper 000 section 4.1, "Sudden Shock": at ``step`` (default ``horizon // 2``) ``count``
    random hospitals (default 1, drawn uniformly without replacement) each lose ``fraction``
    (default 0.5) of the staff they have then, floored, never below their minimum
    (:func:`shock_loss`); those staff leave the system.

    ``eligible="able"`` draws only among hospitals that would lose staff if they held their
    target at the shock step (``shock_loss(target[step], minimum[step], fraction) > 0``), the
    reading of paper 000's "the hospital ... is able to satisfy the minimum operating
    conditions" in which the shock bites; if too few qualify, all hospitals are candidates.
    """

    kind: ClassVar[str] = "shock"
    horizon: int = 50
    fraction: float = 0.5
    step: int | None = None
    count: int = 1
    eligible: Literal["any", "able"] = "any"

    def __post_init__(self) -> None:
        _check_horizon(self.horizon)
        _check_float("fraction", self.fraction, 0.0, 1.0, open_low=True)
        if self.step is not None:
            _check_int("step", self.step, 0)
            if self.step >= self.horizon:
                raise ScenarioError(f"step: must be < horizon ({self.horizon}), got {self.step}")
        _check_int("count", self.count, 1)
        if self.eligible not in ("any", "able"):
            raise ScenarioError(f"eligible: must be 'any' or 'able', got {self.eligible!r}")

    @property
    def shock_at(self) -> int:
        """The step of the shock."""
        return self.horizon // 2 if self.step is None else int(self.step)

    def events(self) -> tuple[tuple[int, str], ...]:
        return ((self.shock_at, "shock"),)

    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        n, step = network.n, self.shock_at
        if self.count > n:
            raise ScenarioError(f"count: {self.count} shocks need {self.count} hospitals, n = {n}")
        candidates = np.arange(n)
        if self.eligible == "able":
            able = shock_loss(realisation.target[step], realisation.minimum[step], self.fraction)
            able = np.flatnonzero(able > 0)
            if able.size >= self.count:
                candidates = able
        hospitals = np.sort(rng.choice(candidates, size=self.count, replace=False))
        realisation = replace(
            realisation,
            shock_step=np.concatenate([realisation.shock_step, np.full(self.count, step)]),
            shock_hospital=np.concatenate([realisation.shock_hospital, hospitals]),
            shock_fraction=np.concatenate(
                [realisation.shock_fraction, np.full(self.count, float(self.fraction))]
            ),
        )
        return realisation.with_info("shock_hospitals", hospitals)


@dataclass(frozen=True)
class Seasonal(Scenario):
    """A sinusoidal swing of the targets of some hospitals (e.g. tourist areas).

    For each chosen hospital, with ``base`` its target path so far::

        target_t = base_t + round(base_t * amplitude * sin(2 pi (t mod period) / period + phase))

    (which is ``round(base_t * (1 + amplitude * sin(...)))`` for whole-staff targets; the swing
    is rounded half up to whole staff), kept within ``[minimum, capacity]``. The hospitals are
    ``hospitals`` (names or 0-based indices) or else a random ``fraction`` of them (at least
    one). ``phase`` is a number (radians, shared) or ``"random"`` (uniform in [0, 2 pi) per
    hospital). Defaults: 20% of hospitals, amplitude 0.25, period 25 steps, phase 0.
    """

    kind: ClassVar[str] = "seasonal"
    horizon: int = 50
    fraction: float = 0.2
    amplitude: float = 0.25
    period: float = 25.0
    phase: float | Literal["random"] = 0.0
    hospitals: tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        _check_horizon(self.horizon)
        _check_float("fraction", self.fraction, 0.0, 1.0, open_low=True)
        _check_float("amplitude", self.amplitude, 0.0)
        _check_float("period", self.period, 0.0, open_low=True)
        if self.phase != "random":
            object.__setattr__(self, "phase", _check_float("phase", self.phase, -math.inf))
        if self.hospitals is not None:
            if isinstance(self.hospitals, str | int):
                object.__setattr__(self, "hospitals", (self.hospitals,))
            hospitals = tuple(self.hospitals)
            if not hospitals:
                raise ScenarioError("hospitals: give at least one name or index (or None)")
            object.__setattr__(self, "hospitals", hospitals)

    def _chosen(self, network: HospitalNetwork, rng: np.random.Generator) -> np.ndarray:
        if self.hospitals is None:
            size = max(1, int(round(self.fraction * network.n)))
            return np.sort(rng.choice(network.n, size=size, replace=False))
        index = {name: i for i, name in enumerate(network.names)}
        chosen = []
        for item in self.hospitals:
            if isinstance(item, int | np.integer) and not isinstance(item, bool):
                if not 0 <= item < network.n:
                    raise ScenarioError(f"hospitals: index {item} is outside [0, {network.n - 1}]")
                chosen.append(int(item))
            elif isinstance(item, str) and item in index:
                chosen.append(index[item])
            else:
                raise ScenarioError(f"hospitals: {item!r} is not a hospital of the network")
        return np.unique(np.array(chosen, dtype=np.int64))

    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        chosen = self._chosen(network, rng)
        if self.phase == "random":
            phase = rng.uniform(0.0, 2.0 * math.pi, size=chosen.size)
        else:
            phase = np.full(chosen.size, float(self.phase))
        t = np.arange(realisation.horizon, dtype=np.float64)[:, None]
        # (t mod period) makes the swing exactly periodic for an integer period.
        angle = 2.0 * math.pi * np.mod(t, self.period) / self.period + phase
        base = realisation.target[:, chosen]
        swung = base + _round_half_up(base * self.amplitude * np.sin(angle))
        target = np.array(realisation.target)
        target[:, chosen] = _clip_target(
            swung, realisation.minimum[:, chosen], network.upper[chosen]
        )
        return replace(realisation, target=target).with_info("seasonal_hospitals", chosen)


@dataclass(frozen=True)
class Outbreak(Scenario):
    """Targets rise in a spatial cluster that spreads from a random epicentre.

    Model: an epicentre hospital ``e`` is drawn uniformly. With ``d_i`` the great-circle
    (haversine) distance in km from ``e`` to hospital ``i``, a wave front leaves ``e`` at step
    ``start`` (default ``horizon // 5``) and moves ``speed`` km per step, so it reaches ``i`` at
    step ``a_i = start + ceil(d_i / speed)`` (the epicentre first, at ``start``). From ``a_i`` on
    (for ``duration`` steps, or to the end when ``duration`` is None) the target of ``i`` is
    raised by a share that decays with distance::

        target_t = base_t + round(base_t * peak * exp(-d_i / radius))

    (``round(base_t * (1 + peak * exp(-d_i / radius)))`` for whole-staff targets; the raise is
    rounded half up to whole staff), kept within ``[minimum, capacity]``. Defaults: ``peak``
    0.4 (+40% at the epicentre), ``speed`` 50 km/step, ``radius`` 100 km (+15% at 100 km, +2%
    at 300 km). The network needs coordinates (``coords``).
    """

    kind: ClassVar[str] = "outbreak"
    horizon: int = 50
    start: int | None = None
    peak: float = 0.4
    speed: float = 50.0
    radius: float = 100.0
    duration: int | None = None

    def __post_init__(self) -> None:
        _check_horizon(self.horizon)
        if self.start is not None:
            _check_int("start", self.start, 0)
            if self.start >= self.horizon:
                raise ScenarioError(f"start: must be < horizon ({self.horizon}), got {self.start}")
        _check_float("peak", self.peak, 0.0)
        _check_float("speed", self.speed, 0.0, open_low=True)
        _check_float("radius", self.radius, 0.0, open_low=True)
        if self.duration is not None:
            _check_int("duration", self.duration, 1)

    @property
    def start_at(self) -> int:
        """The step the outbreak starts at its epicentre."""
        return self.horizon // 5 if self.start is None else int(self.start)

    def events(self) -> tuple[tuple[int, str], ...]:
        return ((self.start_at, "outbreak starts"),)

    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        if network.coords is None:
            raise ScenarioError(
                "coords: the outbreak scenario needs hospital coordinates (lat, lon), but the "
                "network has none (add 'lat' and 'lon' columns to the network CSV)"
            )
        epicentre = int(rng.integers(network.n))
        distance = _haversine_km(network.coords, network.coords[epicentre])
        arrival = self.start_at + np.ceil(distance / self.speed)
        intensity = self.peak * np.exp(-distance / self.radius)
        horizon = realisation.horizon
        # Only hospitals the wave reaches in time and whose raise rounds to >= 1 staff change.
        largest = realisation.target.max(axis=0)
        hit = np.flatnonzero((arrival < horizon) & (largest * intensity >= 0.5))
        t = np.arange(horizon, dtype=np.float64)[:, None]
        active = t >= arrival[hit]
        if self.duration is not None:
            active &= t < arrival[hit] + self.duration
        base = realisation.target[:, hit]
        raised = _clip_target(
            base + _round_half_up(base * intensity[hit]),
            realisation.minimum[:, hit],
            network.upper[hit],
        )
        target = np.array(realisation.target)
        target[:, hit] = np.where(active, raised, base)
        reached = np.where(arrival < realisation.horizon, arrival, -1).astype(np.int64)
        return (
            replace(realisation, target=target)
            .with_info("outbreak_epicentre", epicentre)
            .with_info("outbreak_arrival", reached)
        )


@dataclass(frozen=True)
class _CsvRow:
    row: int
    step: int
    name: str
    target: float


@dataclass(frozen=True)
class CsvTargets(Scenario):
    """Per-step targets given by the user in a CSV file with columns ``step,name,target``.

    ``step`` is 0-based (< horizon), ``name`` a hospital of the network, ``target`` a number
    >= 0. From step ``s`` on, hospital ``name`` has that target, until its next listed step; a
    hospital or step not listed keeps its previous target. A target below the minimum is raised
    to the minimum (above the capacity, lowered to it) with a :class:`ScenarioWarning`.

    The file is read and checked when the scenario is made; names are checked against the
    network in :meth:`realise`. Errors are :class:`ScenarioError` naming the column and the
    1-based data row (blank lines are skipped and not counted).
    """

    kind: ClassVar[str] = "csv"
    path: str | os.PathLike[str]
    horizon: int = 50
    _rows: tuple[_CsvRow, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        _check_horizon(self.horizon)
        object.__setattr__(self, "_rows", _read_targets_csv(Path(self.path), self.horizon))

    @property
    def name(self) -> str:
        return f"csv:{self.path}"

    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        if not self._rows:
            return realisation
        index = {name: i for i, name in enumerate(network.names)}
        steps, columns, values = [], [], []
        for r in self._rows:
            if r.name not in index:
                raise ScenarioError(
                    f"{self.path}: column 'name', row {r.row}: {r.name!r} is not a hospital of "
                    "the network"
                )
            steps.append(r.step)
            columns.append(index[r.name])
            values.append(r.target)
        steps_a, columns_a = np.array(steps), np.array(columns)
        values_a = np.array(values)
        low = values_a < realisation.minimum[steps_a, columns_a]
        high = values_a > network.upper[columns_a]
        for bad, what in (
            (low, "below their minimum were raised to it"),
            (high, "above their capacity were lowered to it"),
        ):
            if bad.any():
                first = self._rows[int(np.flatnonzero(bad)[0])]
                warnings.warn(
                    f"{self.path}: column 'target': {int(bad.sum())} target(s) {what} "
                    f"(first: row {first.row}, hospital {first.name!r})",
                    ScenarioWarning,
                    stacklevel=4,
                )
        listed, which = np.unique(columns_a, return_inverse=True)
        horizon = realisation.horizon
        set_points = np.full((horizon, listed.size), np.nan)
        set_points[steps_a, which] = values_a
        # forward fill: the last listed step at or before t, per listed hospital (-1: none yet)
        last = np.where(np.isnan(set_points), -1, np.arange(horizon)[:, None])
        last = np.maximum.accumulate(last, axis=0)
        filled = set_points[np.maximum(last, 0), np.arange(listed.size)]
        new = np.where(last >= 0, filled, realisation.target[:, listed])
        target = np.array(realisation.target)
        target[:, listed] = _clip_target(new, realisation.minimum[:, listed], network.upper[listed])
        return replace(realisation, target=target)


def _read_targets_csv(path: Path, horizon: int) -> tuple[_CsvRow, ...]:
    try:
        table = read_csv_records(path, CSV_COLUMNS, error=ScenarioError)
    except FileNotFoundError:
        raise ScenarioError(
            f"{path}: file not found (csv:PATH names a step,name,target file)"
        ) from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a folder, expected a step,name,target CSV file") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    rows = table.rows
    if not rows:
        raise ScenarioError(f"{path}: the file is empty; expected a header step,name,target")
    header = [h.strip().lower() for h in rows[0]]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise ScenarioError(
            f"{path}: unknown column {unknown[0]!r} in the header; the columns must be exactly "
            "step,name,target"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ScenarioError(f"{path}: column {dupes[0]!r} appears more than once in the header")
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ScenarioError(
            f"{path}: missing column {missing[0]!r}; the columns must be exactly step,name,target"
        )
    col = {h: j for j, h in enumerate(header)}
    parsed: list[_CsvRow] = []
    first_seen: dict[tuple[int, str], int] = {}
    for r, cells in enumerate(rows[1:], start=1):
        if len(cells) != len(header):
            raise ScenarioError(
                f"{path}: row {r} has {len(cells)} cells but the header has {len(header)}"
            )
        name = cells[col["name"]].strip()
        where = f"{path}: column {{}}, row {r}" + (f" (hospital {name!r})" if name else "")
        if not name:
            raise ScenarioError(where.format("'name'") + ": the name is empty")
        raw_step = cells[col["step"]].strip()
        try:
            step_value = table.number(raw_step)
        except ValueError:
            step_value = math.nan
        if not (math.isfinite(step_value) and step_value.is_integer()):
            raise ScenarioError(where.format("'step'") + f": {raw_step!r} is not an integer step")
        step = int(step_value)
        if not 0 <= step < horizon:
            raise ScenarioError(
                where.format("'step'") + f": step {step} is outside [0, {horizon - 1}] "
                f"(steps are 0-based, horizon {horizon})"
            )
        raw_target = cells[col["target"]].strip()
        try:
            target = table.number(raw_target)
        except ValueError:
            raise ScenarioError(
                where.format("'target'") + f": {raw_target!r} is not a number"
            ) from None
        if not math.isfinite(target):
            raise ScenarioError(where.format("'target'") + f": {raw_target!r} is not finite")
        if target < 0:
            raise ScenarioError(where.format("'target'") + f": {raw_target!r} is negative")
        key = (step, name)
        if key in first_seen:
            raise ScenarioError(
                where.format("'step'") + f": step {step} of hospital {name!r} was already "
                f"given in row {first_seen[key]}"
            )
        first_seen[key] = r
        parsed.append(_CsvRow(row=r, step=step, name=name, target=target))
    return tuple(parsed)


def from_csv(path: str | os.PathLike[str], *, horizon: int = 50) -> CsvTargets:
    """The :class:`CsvTargets` scenario of a ``step,name,target`` CSV file."""
    return CsvTargets(path=path, horizon=horizon)


@dataclass(frozen=True, init=False)
class Compose(Scenario):
    """Several scenarios in order: target-path changes applied in order, shocks concatenated.

    ``Compose([ShiftingTargets(), SuddenShock()])`` is ``ShiftingTargets() + SuddenShock()``.
    Nested compositions are flattened; all parts must share one horizon.
    """

    kind: ClassVar[str] = "compose"
    scenarios: tuple[Scenario, ...]

    def __init__(self, scenarios: Iterable[Scenario]) -> None:
        flat: list[Scenario] = []
        for item in scenarios:
            if not isinstance(item, Scenario):
                raise ScenarioError(f"scenarios: expected Scenario objects, got {item!r}")
            flat.extend(item.parts)
        if not flat:
            raise ScenarioError("scenarios: need at least one scenario to compose")
        horizons = {part.horizon for part in flat}
        if len(horizons) != 1:
            raise ScenarioError(
                f"horizon: composed scenarios must share one horizon, got {sorted(horizons)}"
            )
        object.__setattr__(self, "scenarios", tuple(flat))

    @property
    def horizon(self) -> int:  # type: ignore[override]
        return self.scenarios[0].horizon

    @property
    def name(self) -> str:
        return "+".join(part.name for part in self.scenarios)

    @property
    def parts(self) -> tuple[Scenario, ...]:
        return self.scenarios

    def events(self) -> tuple[tuple[int, str], ...]:
        return tuple(sorted({event for part in self.scenarios for event in part.events()}))

    def modify(
        self, network: HospitalNetwork, realisation: Realisation, rng: np.random.Generator
    ) -> Realisation:
        return self._apply(network, realisation, rng)


# ---------------------------------------------------------------------- parsing
_BUILT_IN: dict[str, type[Scenario]] = {
    "static": Static,
    "shifting": ShiftingTargets,
    "shock": SuddenShock,
    "seasonal": Seasonal,
    "outbreak": Outbreak,
}


def _options_of(kind: type[Scenario]) -> set[str]:
    """The keyword options a scenario class accepts (its dataclass fields but the horizon)."""
    return {f.name for f in fields(kind) if f.init} - {"horizon", "path"}  # type: ignore[arg-type]


def _split_top_level(spec: str) -> list[str]:
    """Split ``spec`` at the ``+`` signs outside brackets (``1e+3`` inside stays whole)."""
    tokens, depth, current = [], 0, []
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ScenarioError(f"spec: ')' without '(' in {spec!r}")
        if ch == "+" and depth == 0:
            tokens.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ScenarioError(f"spec: '(' without ')' in {spec!r}")
    tokens.append("".join(current))
    return tokens


def _parse_value(text: str) -> Any:
    """A parameter value of a scenario spec: an int, a float, None, a word, or ``a|b|c``."""
    text = text.strip()
    if "|" in text:
        return tuple(_parse_value(item) for item in text.split("|"))
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _parse_part(token: str, spec: str) -> tuple[str, dict[str, Any]]:
    """``"shock(fraction=0.3, step=10)"`` -> ``("shock", {"fraction": 0.3, "step": 10})``."""
    token = token.strip()
    if "(" not in token:
        return token, {}
    name, _, rest = token.partition("(")
    if not rest.endswith(")"):
        raise ScenarioError(
            f"spec: {token!r} in {spec!r}: text after the closing ')'; write e.g. "
            "shock(fraction=0.3)+seasonal(amplitude=0.2)"
        )
    options: dict[str, Any] = {}
    body = rest[:-1].strip()
    for item in body.split(",") if body else []:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier() or not value.strip():
            raise ScenarioError(
                f"spec: {item.strip()!r} in {token!r}: expected name=value inside the brackets, "
                f"e.g. {name.strip() or 'shock'}(fraction=0.3)"
            )
        if key in options:
            raise ScenarioError(f"spec: {key!r} is given twice in {token!r}")
        options[key] = _parse_value(value)
    return name.strip(), options


def make_scenario(spec: str, *, horizon: int = 50, **kwargs: Any) -> Scenario:
    """Build a scenario from its name: ``"static"``, ``"shifting"``, ``"shock"``,
    ``"seasonal"``, ``"outbreak"``, ``"csv:path/to/targets.csv"``, or a ``+`` combination such
    as ``"shifting+shock"``.

    Parameters can be set in the spec itself, in brackets after a part's name, so that every
    command taking ``--scenario`` accepts them: ``"shock(fraction=0.3,step=10)"``,
    ``"shifting(every=5)+seasonal(amplitude=0.2,period=12)"``, ``"seasonal(phase=random)"``,
    ``"seasonal(hospitals=Alpha|Beta)"`` (``|`` separates the items of a list). Values are
    numbers, words (``random``, ``able``) or ``none``; each option is checked by its scenario
    (:class:`SuddenShock`, :class:`ShiftingTargets`, :class:`Seasonal`, :class:`Outbreak`).

    Keyword options go to the part that accepts them (``make_scenario("shock", fraction=0.3)``);
    when several parts accept one (``fraction`` of ``shock`` and ``seasonal``) pass a dict per
    part instead: ``make_scenario("seasonal+shock", shock={"fraction": 0.3})``. Giving one
    option both in the spec and as a keyword, with different values, is an error.

    Raises:
        ScenarioError: for an unknown name (listing the valid ones) or option, or bad syntax.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ScenarioError(
            f"spec: expected a scenario name such as 'shifting+shock', got {spec!r}; valid "
            f"names: {', '.join(SCENARIOS)}, csv:PATH"
        )
    names: list[str] = []
    spec_options: list[dict[str, Any]] = []
    for token in _split_top_level(spec):
        token = token.strip()
        if token[:4].lower() == "csv:":
            if not token[4:].strip():
                raise ScenarioError("spec: 'csv:' needs a path, e.g. 'csv:targets.csv'")
            names.append("csv:" + token[4:].strip())
            spec_options.append({})
            continue
        name, options = _parse_part(token, spec)
        if name.lower() in _BUILT_IN:
            names.append(name.lower())
            spec_options.append(options)
        else:
            raise ScenarioError(
                f"spec: unknown scenario {name!r} in {spec!r}; valid names: "
                f"{', '.join(SCENARIOS)}, csv:PATH (combine with '+', e.g. 'shifting+shock'; "
                "parameters in brackets, e.g. 'shock(fraction=0.3)')"
            )
    kinds = ["csv" if n.startswith("csv:") else n for n in names]
    options: list[dict[str, Any]] = [{} for _ in names]
    accepted = [_options_of(CsvTargets if k == "csv" else _BUILT_IN[k]) for k in kinds]
    for key, value in kwargs.items():
        if key in kinds:
            if not isinstance(value, Mapping):
                raise ScenarioError(f"{key}: expected a dict of options for {key!r}, got {value!r}")
            for j, k in enumerate(kinds):
                if k == key:
                    for option in value:
                        if option not in accepted[j]:
                            raise ScenarioError(
                                f"{key}: unknown option {option!r}; {key!r} accepts "
                                f"{', '.join(sorted(accepted[j])) or 'no options'}"
                            )
                    options[j].update(value)
            continue
        takers = [j for j, acc in enumerate(accepted) if key in acc]
        if not takers:
            raise ScenarioError(
                f"{key}: no scenario in {spec!r} accepts this option"
                + "".join(
                    f"; {kinds[j]} accepts {', '.join(sorted(a))}"
                    for j, a in enumerate(accepted)
                    if a
                )
            )
        if len({kinds[j] for j in takers}) > 1:
            raise ScenarioError(
                f"{key}: ambiguous, accepted by {' and '.join(sorted({kinds[j] for j in takers}))}"
                f"; pass it per scenario, e.g. {kinds[takers[0]]}={{{key!r}: ...}}"
            )
        for j in takers:
            options[j][key] = value
    for j, (kind, given) in enumerate(zip(kinds, spec_options, strict=True)):
        for option, value in given.items():
            if option not in accepted[j]:
                raise ScenarioError(
                    f"{kind}: unknown option {option!r} in {spec!r}; {kind!r} accepts "
                    f"{', '.join(sorted(accepted[j])) or 'no options'}"
                )
            if option in options[j] and options[j][option] != value:
                raise ScenarioError(
                    f"{kind}: option {option!r} is {value!r} in the spec but "
                    f"{options[j][option]!r} as a keyword; give it once"
                )
            options[j][option] = value
    parts: list[Scenario] = []
    for name, kind, opts in zip(names, kinds, options, strict=True):
        if kind == "csv":
            parts.append(CsvTargets(path=name[4:], horizon=horizon, **opts))
        else:
            try:
                parts.append(_BUILT_IN[kind](horizon=horizon, **opts))
            except TypeError as exc:
                raise ScenarioError(f"{kind}: {exc}") from None
            except ScenarioError as exc:
                if len(names) == 1 and not opts:
                    raise
                raise ScenarioError(f"{kind}: {exc}") from None
    return parts[0] if len(parts) == 1 else Compose(parts)
