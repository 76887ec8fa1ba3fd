"""The hospital network: the data model every other layer works on.

A :class:`HospitalNetwork` holds, per hospital, the staff it has now (``current``, c), the staff it
needs to operate at all (``minimum``, m), the staff it would like (``target``, t), an optional upper
bound (``capacity``, u), a name and optional coordinates (lat, lon). Paper 000 section 2 defines
(c, m, t); capacity and coordinates are marra's additions for real plans.

The object is immutable: arrays are read-only copies, and updates (:meth:`with_current`, ...)
return new networks. Validation happens once, in the constructor, and every error names the
field, the 1-based row (the hospital's position, which is its data row in a CSV file) and the
hospital's name.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from marra._io import atomic_write_text

__all__ = [
    "HospitalNetwork",
    "NetworkError",
    "InfeasibleError",
    "NetworkWarning",
    "generate_network",
    "default_network",
    "atomic_write_text",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "CsvRecords",
    "read_csv_records",
]

REQUIRED_COLUMNS = ("name", "current", "minimum", "target")
OPTIONAL_COLUMNS = ("capacity", "lat", "lon")
_STAFF_FIELDS = ("current", "minimum", "target", "capacity")


class NetworkError(ValueError):
    """Invalid network data. The message names the field, the 1-based row and the hospital."""


class InfeasibleError(ValueError):
    """The minima cannot all be met: ``sum(minimum) > total staff``.

    Attributes ``required`` (sum of minima), ``available`` (total staff) and ``shortfall``
    (their difference) let a caller report or recover; strategies accept ``shortfall=True`` to
    produce the best plan anyway.
    """

    def __init__(self, required: float, available: float) -> None:
        self.required = float(required)
        self.available = float(available)
        self.shortfall = float(required - available)
        super().__init__(
            f"infeasible: the minima need {_fmt(required)} staff but only {_fmt(available)} "
            f"are available (shortfall {_fmt(self.shortfall)}); "
            "pass shortfall=True (CLI: --shortfall) to cover minima as far as possible"
        )


class NetworkWarning(UserWarning):
    """Data that was legal but adjusted (e.g. a target below its minimum)."""


def _fmt(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def _where(row: int, name: str | None) -> str:
    return f"row {row}" + (f" (hospital {name!r})" if name else "")


def _readonly(values: np.ndarray) -> np.ndarray:
    values = np.array(values, dtype=np.float64, copy=True)
    values.setflags(write=False)
    return values


@dataclass(frozen=True, eq=False)
class HospitalNetwork:
    """Hospitals with current staff ``current``, minimum ``minimum`` and target ``target``.

    Args:
        current: staff per hospital now, shape ``(n,)``, >= 0.
        minimum: staff each hospital needs to operate, shape ``(n,)``, >= 0.
        target: staff each hospital would like, shape ``(n,)``, >= 0. A target below its minimum
            is raised to the minimum with a :class:`NetworkWarning`.
        capacity: optional upper bound per hospital, shape ``(n,)``; ``inf`` means unbounded.
            Must be >= minimum, target and current.
        names: optional unique, non-empty names; default ``hospital_0`` ... ``hospital_{n-1}``.
        coords: optional ``(n, 2)`` array of (lat, lon) in degrees.

    Raises:
        NetworkError: naming the field, the 1-based row and the hospital.
    """

    current: np.ndarray
    minimum: np.ndarray
    target: np.ndarray
    capacity: np.ndarray | None = None
    names: tuple[str, ...] | None = None
    coords: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        names = self.names
        fields: dict[str, np.ndarray] = {}
        for field in ("current", "minimum", "target", "capacity"):
            raw = getattr(self, field)
            if raw is None:
                continue
            try:
                arr = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise NetworkError(f"column {field!r}: values must be numbers ({exc})") from None
            if arr.ndim == 0:
                arr = arr.reshape(1)
            if arr.ndim != 1:
                raise NetworkError(f"column {field!r}: expected a 1-D array, got shape {arr.shape}")
            fields[field] = arr
        n = fields["current"].shape[0]
        if n == 0:
            raise NetworkError("the network has no hospitals (at least one row is required)")
        for field, arr in fields.items():
            if arr.shape[0] != n:
                raise NetworkError(
                    f"column {field!r}: has {arr.shape[0]} values but 'current' has {n}"
                )
        if names is None:
            names = tuple(f"hospital_{i}" for i in range(n))
        else:
            names = tuple(str(x) for x in names)
            if len(names) != n:
                raise NetworkError(f"column 'name': has {len(names)} values but 'current' has {n}")
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if not name.strip():
                raise NetworkError(f"column 'name', {_where(i + 1, None)}: the name is empty")
            if name in seen:
                raise NetworkError(
                    f"column 'name', {_where(i + 1, name)}: duplicate name, "
                    f"first used in row {seen[name]}"
                )
            seen[name] = i + 1
        for field, arr in fields.items():
            bad = ~np.isfinite(arr)
            if field == "capacity":
                bad &= ~np.isposinf(arr)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise NetworkError(
                    f"column {field!r}, {_where(i + 1, names[i])}: value {arr[i]} is not a "
                    "finite number"
                )
            neg = arr < 0
            if neg.any():
                i = int(np.flatnonzero(neg)[0])
                raise NetworkError(
                    f"column {field!r}, {_where(i + 1, names[i])}: value {_fmt(arr[i])} is negative"
                )
        current, minimum, target = fields["current"], fields["minimum"], fields["target"]
        capacity = fields.get("capacity")
        if capacity is not None:
            for field, arr in (("minimum", minimum), ("target", target), ("current", current)):
                over = arr > capacity
                if over.any():
                    i = int(np.flatnonzero(over)[0])
                    raise NetworkError(
                        f"column {field!r}, {_where(i + 1, names[i])}: {field} "
                        f"{_fmt(arr[i])} exceeds capacity {_fmt(capacity[i])}"
                    )
        low = target < minimum
        if low.any():
            i = int(np.flatnonzero(low)[0])
            warnings.warn(
                f"column 'target': {int(low.sum())} target(s) below their minimum were raised to "
                f"the minimum (first: {_where(i + 1, names[i])}, target {_fmt(target[i])} < "
                f"minimum {_fmt(minimum[i])})",
                NetworkWarning,
                stacklevel=3,
            )
            target = np.maximum(target, minimum)
        coords = self.coords
        if coords is not None:
            coords = np.asarray(coords, dtype=np.float64)
            if coords.shape != (n, 2):
                raise NetworkError(
                    f"coords: expected shape ({n}, 2) (lat, lon), got {coords.shape}"
                )
            for col, field, bound in ((0, "lat", 90.0), (1, "lon", 180.0)):
                vals = coords[:, col]
                bad = ~np.isfinite(vals) | (np.abs(vals) > bound)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise NetworkError(
                        f"column {field!r}, {_where(i + 1, names[i])}: value {vals[i]} is outside "
                        f"[-{bound:g}, {bound:g}]"
                    )
        set_(self, "current", _readonly(current))
        set_(self, "minimum", _readonly(minimum))
        set_(self, "target", _readonly(target))
        set_(self, "capacity", None if capacity is None else _readonly(capacity))
        set_(self, "names", names)
        set_(self, "coords", None if coords is None else _readonly(coords))

    # ------------------------------------------------------------------ properties
    @property
    def n(self) -> int:
        """Number of hospitals."""
        return int(self.current.shape[0])

    @property
    def total(self) -> float:
        """Total staff in the network, ``sum(current)`` (C in paper 000 section 2)."""
        return float(self.current.sum())

    @property
    def upper(self) -> np.ndarray:
        """Capacity per hospital with ``inf`` where there is none, shape ``(n,)``."""
        if self.capacity is None:
            return np.full(self.n, np.inf)
        return self.capacity

    @property
    def is_integral(self) -> bool:
        """True when every staff figure is a whole number."""
        return all(
            bool(np.all(np.mod(arr[np.isfinite(arr)], 1.0) == 0.0))
            for arr in (self.current, self.minimum, self.target, self.upper)
        )

    @property
    def shortfall(self) -> float:
        """How many staff the network lacks to meet every minimum (0 when feasible)."""
        return max(0.0, float(self.minimum.sum()) - self.total)

    def check_feasible(self) -> None:
        """Raise :class:`InfeasibleError` when ``sum(minimum) > total``."""
        if float(self.minimum.sum()) > self.total + 1e-9:
            raise InfeasibleError(float(self.minimum.sum()), self.total)

    def check_integral(self) -> None:
        """Raise :class:`NetworkError` naming the first fractional staff figure, if any."""
        for field in _STAFF_FIELDS:
            arr = getattr(self, field)
            if arr is None:
                continue
            finite = np.isfinite(arr)  # np.mod(inf) would warn: test finite entries only
            frac = np.zeros(arr.shape, dtype=bool)
            frac[finite] = np.mod(arr[finite], 1.0) != 0.0
            if frac.any():
                i = int(np.flatnonzero(frac)[0])
                raise NetworkError(
                    f"column {field!r}, {_where(i + 1, self.names[i])}: value {arr[i]:g} is "
                    "fractional, but integer mode needs whole staff (use continuous mode)"
                )

    # ------------------------------------------------------------------ updates
    def at_state(
        self,
        current: np.ndarray,
        target: np.ndarray | None = None,
        minimum: np.ndarray | None = None,
    ) -> HospitalNetwork:
        """The same hospitals with new ``current`` (and ``target``, ``minimum``), each of shape
        ``(n,)``: the network as it stands at one step of a simulation.

        Names, capacities and coordinates were validated when this network was built and are
        shared, not checked again; the new arrays are checked with whole-array operations only
        (finite, >= 0, within capacity, target >= minimum), so a step costs O(n) numpy work and
        no Python loop over hospitals. Anything that fails those checks goes through the full
        constructor, which raises or warns naming the row and hospital.
        """
        arrays = {
            "current": current,
            "target": self.target if target is None else target,
            "minimum": self.minimum if minimum is None else minimum,
        }
        checked: dict[str, np.ndarray] = {}
        for field, values in arrays.items():
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != (self.n,) or not bool(np.all(np.isfinite(arr) & (arr >= 0))):
                return self._replace(**arrays)
            checked[field] = arr
        upper = self.capacity
        if bool(np.any(checked["target"] < checked["minimum"])) or (
            upper is not None
            and any(bool(np.any(checked[f] > upper)) for f in ("current", "target", "minimum"))
        ):
            return self._replace(**arrays)
        network = object.__new__(HospitalNetwork)
        set_ = object.__setattr__
        for field, arr in checked.items():
            set_(network, field, _readonly(arr))
        set_(network, "capacity", self.capacity)
        set_(network, "names", self.names)
        set_(network, "coords", self.coords)
        return network

    def _replace(self, **changes: object) -> HospitalNetwork:
        kwargs = {
            "current": self.current,
            "minimum": self.minimum,
            "target": self.target,
            "capacity": self.capacity,
            "names": self.names,
            "coords": self.coords,
        }
        kwargs.update(changes)
        return HospitalNetwork(**kwargs)  # type: ignore[arg-type]

    def with_current(self, current: np.ndarray | Sequence[float]) -> HospitalNetwork:
        """A copy with new current staff."""
        return self._replace(current=current)

    def with_target(self, target: np.ndarray | Sequence[float]) -> HospitalNetwork:
        """A copy with new targets."""
        return self._replace(target=target)

    def with_minimum(self, minimum: np.ndarray | Sequence[float]) -> HospitalNetwork:
        """A copy with new minima."""
        return self._replace(minimum=minimum)

    def with_capacity(self, capacity: np.ndarray | Sequence[float] | None) -> HospitalNetwork:
        """A copy with new capacities (``None`` removes them)."""
        return self._replace(capacity=capacity)

    def __repr__(self) -> str:
        return (
            f"HospitalNetwork(n={self.n}, total={_fmt(self.total)}, "
            f"sum_minimum={_fmt(self.minimum.sum())}, sum_target={_fmt(self.target.sum())}, "
            f"capacity={'yes' if self.capacity is not None else 'no'}, "
            f"coords={'yes' if self.coords is not None else 'no'})"
        )

    # ------------------------------------------------------------------ CSV
    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], *, integer: bool = True) -> HospitalNetwork:
        """Read a network from CSV.

        The header is required. Columns ``name,current,minimum,target`` are required, and
        ``capacity,lat,lon`` optional (``lat`` and ``lon`` together); any other column is
        rejected. An empty ``capacity`` cell means no capacity. A UTF-8 byte-order mark and
        Windows line endings are accepted; so are semicolon- and tab-separated files (as
        spreadsheets export them), where numbers may use a decimal comma (``10,5``). With
        ``integer=True`` (the default, whole staff) fractional staff figures are rejected.

        Raises:
            NetworkError: naming the column, the 1-based data row and the hospital.
            FileNotFoundError: when the file does not exist.
        """
        path = Path(path)
        table = read_csv_records(path, REQUIRED_COLUMNS + OPTIONAL_COLUMNS, error=NetworkError)
        return cls._from_rows(table, source=str(path), integer=integer)

    @classmethod
    def _from_rows(cls, table: CsvRecords, *, source: str, integer: bool) -> HospitalNetwork:
        rows = table.rows
        if not rows:
            raise NetworkError(
                f"{source}: the file is empty; expected a header "
                f"{','.join(REQUIRED_COLUMNS)}[,capacity,lat,lon] and one row per hospital"
            )
        header = [h.strip().lower() for h in rows[0]]
        unknown = [h for h in header if h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if unknown:
            odd = sorted({ch for ch in unknown[0] if ch in "|:/ " and len(unknown[0]) > 12})
            hint = (
                f" (is the file separated by {odd[0]!r}? marra reads comma, semicolon or tab "
                "separated files)"
                if odd
                else ""
            )
            raise NetworkError(
                f"{source}: unknown column {unknown[0]!r} in the header; allowed columns are "
                f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}{hint}"
            )
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise NetworkError(
                f"{source}: column {dupes[0]!r} appears more than once in the header"
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise NetworkError(
                f"{source}: missing required column {missing[0]!r} (the header must name "
                f"{', '.join(REQUIRED_COLUMNS)})"
            )
        if ("lat" in header) != ("lon" in header):
            raise NetworkError(f"{source}: columns 'lat' and 'lon' must be given together")
        body = rows[1:]
        if not body:
            raise NetworkError(f"{source}: the file has a header but no hospital rows")
        col = {h: j for j, h in enumerate(header)}
        names: list[str] = []
        values: dict[str, list[float]] = {c: [] for c in header if c != "name"}
        for r, row in enumerate(body, start=1):
            if len(row) != len(header):
                raise NetworkError(
                    f"{source}: row {r} has {len(row)} cells but the header has {len(header)}"
                )
            name = row[col["name"]].strip()
            names.append(name)
            for c in values:
                cell = row[col[c]].strip()
                if cell == "":
                    if c == "capacity":
                        values[c].append(math.inf)
                        continue
                    raise NetworkError(f"column {c!r}, {_where(r, name)}: the value is empty")
                try:
                    value = table.number(cell)
                except ValueError:
                    raise NetworkError(
                        f"column {c!r}, {_where(r, name)}: {cell!r} is not a number"
                    ) from None
                if math.isnan(value) or math.isinf(value):
                    raise NetworkError(
                        f"column {c!r}, {_where(r, name)}: {cell!r} is not a finite number"
                    )
                if integer and c in _STAFF_FIELDS and not value.is_integer():
                    raise NetworkError(
                        f"column {c!r}, {_where(r, name)}: {cell!r} is fractional, but integer "
                        "mode needs whole staff (use continuous mode, --continuous)"
                    )
                values[c].append(value)
        coords = None
        if "lat" in values:
            coords = np.column_stack([values["lat"], values["lon"]])
        network = cls(
            current=np.array(values["current"]),
            minimum=np.array(values["minimum"]),
            target=np.array(values["target"]),
            capacity=np.array(values["capacity"]) if "capacity" in values else None,
            names=tuple(names),
            coords=coords,
        )
        return network

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the network as CSV (atomically: a temp file renamed into place)."""
        header = list(REQUIRED_COLUMNS)
        if self.capacity is not None:
            header.append("capacity")
        if self.coords is not None:
            header += ["lat", "lon"]
        lines = [",".join(header)]
        for i in range(self.n):
            name = self.names[i]
            if any(ch in name for ch in ',"\n'):
                name = '"' + name.replace('"', '""') + '"'
            cells = [name, _fmt(self.current[i]), _fmt(self.minimum[i]), _fmt(self.target[i])]
            if self.capacity is not None:
                cap = self.capacity[i]
                cells.append("" if math.isinf(cap) else _fmt(cap))
            if self.coords is not None:
                cells += [f"{self.coords[i, 0]:.6f}", f"{self.coords[i, 1]:.6f}"]
            lines.append(",".join(cells))
        atomic_write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------- CSV reading
#: Delimiters a CSV may use (spreadsheet exports in many locales write ``;`` or tabs).
CSV_DELIMITERS = (",", ";", "\t")
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d+,\d*|,\d+)$")


@dataclass(frozen=True)
class CsvRecords:
    """The non-blank records of a CSV file, as read by :func:`read_csv_records`.

    ``rows[0]`` is the header; ``lines[k]`` is the 1-based line of the file on which
    ``rows[k]`` starts. ``delimiter`` is the one detected; with ``;`` or a tab, numbers may use
    a decimal comma (``10,5``), which :meth:`number` reads.
    """

    rows: list[list[str]]
    lines: list[int]
    delimiter: str

    @property
    def decimal_comma(self) -> bool:
        return self.delimiter != ","

    def number(self, cell: str) -> float:
        """``cell`` as a float (``ValueError`` if it is not a number)."""
        if self.decimal_comma and _DECIMAL_COMMA.match(cell):
            cell = cell.replace(",", ".")
        return float(cell)


def _detect_delimiter(first_line: str, columns: Sequence[str]) -> str:
    """The delimiter that splits the header into the most known column names (comma on ties)."""
    known = {c.lower() for c in columns}

    def score(delimiter: str) -> int:
        cells = next(csv.reader([first_line], delimiter=delimiter), [])
        return sum(cell.strip().lower().lstrip("\ufeff") in known for cell in cells)

    best = max(CSV_DELIMITERS, key=lambda d: (score(d), d == ","))
    return best if score(best) > 0 else ","


def _record_at(data_rows: int, line: int) -> str:
    return f"line {line}" if data_rows == 0 else f"row {data_rows} (line {line})"


def read_csv_records(
    path: str | os.PathLike[str],
    columns: Sequence[str],
    *,
    error: type[ValueError] = ValueError,
) -> CsvRecords:
    """Read the records of a CSV file whose header names some of ``columns``.

    The delimiter (comma, semicolon or tab) is detected from the header; a UTF-8 byte-order
    mark and Windows line endings are accepted; blank lines are skipped. A quoted cell may not
    run over several lines: a stray, unclosed quote is reported as ``error`` naming the line
    where it opened (instead of swallowing the rest of the file).

    Raises:
        error: for a malformed file, naming the line.
        FileNotFoundError, UnicodeDecodeError: as ``open`` and ``read`` raise them.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        text = handle.read()
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = _detect_delimiter(first, columns)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    lines: list[int] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise error(
                f'{path}: {_record_at(len(rows), start)}: a quote (") opens here and is never '
                f"closed ({exc})"
            ) from None
        if reader.line_num > start and any("\n" in cell or "\r" in cell for cell in row):
            raise error(
                f'{path}: {_record_at(len(rows), start)}: a quote (") opens here and is never '
                f"closed: the cell runs on to line {reader.line_num}"
            )
        if any(cell.strip() for cell in row):
            rows.append(row)
            lines.append(start)
    return CsvRecords(rows=rows, lines=lines, delimiter=delimiter)


# ---------------------------------------------------------------------- generator
_PREFIXES = (
    "Ash", "Bel", "Brook", "Chester", "Dun", "East", "Fair", "Glen", "Hart", "King",
    "Lang", "Mill", "North", "Oak", "Pen", "Queen", "Red", "South", "Stan", "West",
)  # fmt: skip
_SUFFIXES = ("ford", "field", "ham", "ley", "mouth", "ton", "wick", "bury")


def _hospital_names(n: int, rng: np.random.Generator) -> tuple[str, ...]:
    base = [p + s for p in _PREFIXES for s in _SUFFIXES]
    order = rng.permutation(len(base))
    names = []
    for k in range(n):
        town = base[order[k % len(base)]]
        lap = k // len(base)
        names.append(f"{town} General" if lap == 0 else f"{town} General {lap + 1}")
    return tuple(names)


def generate_network(
    n: int,
    seed: int = 0,
    *,
    target_range: tuple[int, int] = (20, 80),
    minimum_fraction: tuple[float, float] = (0.6, 0.8),
    current_spread: float = 0.4,
    total_tolerance: float = 0.05,
    capacity_factor: float | None = None,
    coords: bool = True,
    lat_range: tuple[float, float] = (50.0, 58.0),
    lon_range: tuple[float, float] = (-5.5, 1.5),
    names: bool = True,
) -> HospitalNetwork:
    """A random hospital network, reproducible from ``seed``.

    Paper 000 (section 4) uses "150 randomly-generated hospitals" without giving ranges; these
    defaults are marra's:

    - ``target ~ U{target_range}`` (integers, inclusive; default 20..80);
    - ``minimum = round(U(minimum_fraction) * target)`` (default 0.6..0.8);
    - ``current = round(target * (1 + U(-current_spread, current_spread)))`` (default 0.4);
    - currents then adjusted (scaled and rounded, the residue spread one by one) so that the total
      lies within ``±total_tolerance`` of ``sum(target)`` (default 5%);
    - ``capacity = ceil(capacity_factor * max(target, current))`` when ``capacity_factor`` is given;
    - coordinates uniform in ``lat_range`` x ``lon_range`` (default: roughly Great Britain).

    Raises:
        ValueError: naming the parameter when a range is empty or out of bounds.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n: must be a positive integer, got {n!r}")
    n = int(n)
    lo, hi = target_range
    if not (0 <= lo <= hi):
        raise ValueError(f"target_range: need 0 <= low <= high, got {target_range}")
    flo, fhi = minimum_fraction
    if not (0.0 <= flo <= fhi <= 1.0):
        raise ValueError(f"minimum_fraction: need 0 <= low <= high <= 1, got {minimum_fraction}")
    if not (0.0 <= current_spread <= 1.0):
        raise ValueError(f"current_spread: must lie in [0, 1], got {current_spread}")
    if not (0.0 <= total_tolerance < 1.0):
        raise ValueError(f"total_tolerance: must lie in [0, 1), got {total_tolerance}")
    if capacity_factor is not None and capacity_factor < 1.0:
        raise ValueError(f"capacity_factor: must be >= 1, got {capacity_factor}")
    rng = np.random.default_rng(seed)
    target = rng.integers(lo, hi + 1, size=n).astype(np.float64)
    minimum = np.round(rng.uniform(flo, fhi, size=n) * target)
    current = np.round(target * (1.0 + rng.uniform(-current_spread, current_spread, size=n)))
    current = np.maximum(current, 0.0)
    goal_low = math.ceil(target.sum() * (1.0 - total_tolerance))
    goal_high = math.floor(target.sum() * (1.0 + total_tolerance))
    total = current.sum()
    if total < goal_low or total > goal_high:
        goal = goal_low if total < goal_low else goal_high
        if total > 0:
            current = np.floor(current * goal / total)
        else:
            current = np.zeros(n)
        residue = int(goal - current.sum())
        if residue > 0:
            picks = rng.choice(n, size=residue, replace=True)
            np.add.at(current, picks, 1.0)
    capacity = None
    if capacity_factor is not None:
        capacity = np.ceil(capacity_factor * np.maximum(target, current))
    coord_array = None
    if coords:
        coord_array = np.column_stack(
            [rng.uniform(*lat_range, size=n), rng.uniform(*lon_range, size=n)]
        )
    return HospitalNetwork(
        current=current,
        minimum=minimum,
        target=target,
        capacity=capacity,
        names=_hospital_names(n, rng) if names else None,
        coords=coord_array,
    )


#: How the shipped default network was made (see :func:`default_network`).
DEFAULT_NETWORK_COMMAND = (
    'python -c "from marra.hospital.network import generate_network; '
    "generate_network(150, seed=2025).to_csv('src/marra/data/default_network.csv')\""
)


def default_network() -> HospitalNetwork:
    """The built-in network of 150 named hospitals with coordinates (package data).

    It was made by ``generate_network(150, seed=2025)`` (:data:`DEFAULT_NETWORK_COMMAND`) and is
    shipped as ``marra/data/default_network.csv`` so it never changes with the generator.
    """
    ref = resources.files("marra").joinpath("data/default_network.csv")
    with resources.as_file(ref) as path:
        return HospitalNetwork.from_csv(path)
