"""The transfer plan: who sends how many staff to whom.

An allocator decides the new staff per hospital, ``allocation`` (y). This module turns the net
changes ``d = y - current`` into transfers ``(sender, receiver, count)``:

- hospitals with ``d_i < 0`` are **senders** (they give ``s_i = -d_i``), hospitals with
  ``d_j > 0`` are **receivers** (they get ``r_j = d_j``); nobody sends and receives in one plan,
  and the volume moved is ``sum_j r_j = sum_i max(0, y_i - c_i)``, the least any plan can move.
- With coordinates (``network.coords``, (lat, lon) in degrees) the plan minimises the total
  distance travelled, the transport problem (ours, not from the papers)::

      minimise   sum_ij D_ij x_ij
      subject to sum_j x_ij = s_i (every sender), sum_i x_ij = r_j (every receiver), x >= 0,

  where ``D_ij`` is the great-circle (haversine) distance in km between sender i and receiver j
  (:func:`haversine_km`). It is solved exactly on the dense ``(senders, receivers)`` cost matrix:
  up to :data:`_NUMPY_TRANSPORT_CELLS` (250,000) sender x receiver pairs by marra's own
  transportation simplex in numpy (:func:`_transport_simplex`; no POT import, which costs about
  0.85 s of start-up), above that by the network simplex of POT (``ot.emd``), 3-4x faster once
  imported. Both return an optimal vertex of the transport polytope, integral on whole staff;
  the flows are still snapped to whole numbers and repaired so every row and column sum is exact
  (:func:`_integral_flows`).
- Without coordinates, a deterministic **largest-first** matching: repeatedly match the largest
  remaining sender with the largest remaining receiver (ties to the lower hospital index) and move
  the smaller of the two amounts; at most ``senders + receivers - 1`` transfers, O(n log n).

Methods (``method=``):

``"transport"``
    exact minimum distance; needs coordinates and at most :data:`MAX_TRANSPORT_CELLS`
    (4,000,000) sender x receiver pairs (about 1 s and 32 MB for 2,000 x 2,000 on one core).
    The 150-hospital default network (about 71 x 75) takes about 3.5 ms in numpy.
``"sparse-transport"``
    for bigger plans: the same transport problem restricted to the edges from each sender to its
    :data:`SPARSE_NEIGHBOURS` (32) nearest receivers, from each receiver to its 32 nearest senders
    (k-d tree on the unit sphere, so "nearest" is exact in great-circle distance), plus the edges
    of the largest-first plan, which keep the problem feasible. It is therefore never longer than
    the largest-first plan, and in our measurements within about 1% of the exact optimum
    (1,500 x 1,500 random hospitals: +0.6%). Needs POT >= 0.9.7 (sparse cost matrices).
``"largest-first"``
    the matching above; distances are still reported when coordinates are known.
``"auto"`` (default)
    ``"largest-first"`` without coordinates, else ``"transport"`` when the pairs fit in
    :data:`MAX_TRANSPORT_CELLS`, else ``"sparse-transport"``. A network of n hospitals has at most
    ``n^2 / 4`` pairs, so every network of up to 4,000 hospitals is planned exactly.

Staff may be whole (integer mode) or fractional. In integer mode (every ``d_i`` whole) the plan
reproduces the allocation exactly; in continuous mode net changes within ``1e-12`` of the largest
staff figure count as zero (float noise, not a transfer), and the plan reproduces the allocation
to about that accuracy.

POT imports every array backend it finds (PyTorch among them, seconds of start-up) and scipy.stats
when ``ot`` is first imported. marra's lower layers must not import torch, so POT is imported
lazily, only for a plan above :data:`_NUMPY_TRANSPORT_CELLS` pairs or a ``"sparse-transport"``
plan, with its PyTorch, JAX, TensorFlow and CuPy backends switched off by their documented
environment variables (restored right after; if ``ot`` was already imported it is used as it
is). Planning with the numpy solver imports neither POT nor ``scipy.optimize``/``scipy.stats``.
"""

from __future__ import annotations

import csv
import heapq
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from marra._io import atomic_write_text
from marra.hospital.network import HospitalNetwork

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Plan",
    "plan",
    "write_plan_csv",
    "haversine_km",
    "PLAN_METHODS",
    "MAX_TRANSPORT_CELLS",
    "SPARSE_NEIGHBOURS",
    "EARTH_RADIUS_KM",
]

#: Methods accepted by :func:`plan`.
PLAN_METHODS = ("auto", "transport", "sparse-transport", "largest-first")

#: Largest number of sender x receiver pairs solved exactly on a dense cost matrix.
MAX_TRANSPORT_CELLS = 4_000_000

#: Nearest neighbours per sender (and per receiver) kept by ``"sparse-transport"``.
SPARSE_NEIGHBOURS = 32

#: Mean Earth radius (IUGG), km, used by :func:`haversine_km`.
EARTH_RADIUS_KM = 6371.0088

#: Relative size (to the largest staff figure) below which a fractional net change is float noise.
_NOISE_REL = 1e-12

#: Relative mismatch allowed between ``sum(allocation)`` and ``sum(current)``.
_TOTAL_REL = 1e-9

#: Network-simplex pivot limit; the cell limit bounds the work long before this is reached.
_EMD_MAX_ITER = 100_000_000

#: Largest number of sender x receiver pairs solved by marra's numpy transportation simplex;
#: bigger dense problems go to POT. Measured (docs/performance.md, "Transfer plan solver"): once
#: imported, POT's compiled network simplex is 3-4x faster at every size (6.6x at 1,000,000
#: pairs), but importing it costs about 0.85 s; at this limit (about 500 x 500, 1,000 hospitals)
#: a whole numpy plan takes about 0.12 s, so a one-off plan is far faster without POT, and
#: above it a second plan in the same process would already repay the import.
_NUMPY_TRANSPORT_CELLS = 250_000

#: Relative tolerance (to the largest cost) below which a negative reduced cost counts as zero.
_SIMPLEX_COST_REL = 1e-12

#: Stale candidates (reduced cost no longer negative) in a row before the simplex prices again.
_SIMPLEX_STALE_RUN = 32

_POT_BACKEND_SWITCHES = (
    "POT_BACKEND_DISABLE_PYTORCH",
    "POT_BACKEND_DISABLE_JAX",
    "POT_BACKEND_DISABLE_TENSORFLOW",
    "POT_BACKEND_DISABLE_CUPY",
)


# ---------------------------------------------------------------------- distances
def haversine_km(origin: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """Great-circle distance in km between points given as (lat, lon) degrees.

    ``d = 2 R asin(sqrt(h))``, ``h = sin^2(dlat / 2) + cos(lat1) cos(lat2) sin^2(dlon / 2)``,
    with ``R`` = :data:`EARTH_RADIUS_KM`.

    Args:
        origin: points, shape ``(..., 2)``.
        destination: points, shape ``(..., 2)``, broadcastable against ``origin``.

    Returns:
        distances, the broadcast shape without the last axis.
    """
    p = np.radians(np.asarray(origin, dtype=np.float64))
    q = np.radians(np.asarray(destination, dtype=np.float64))
    lat1, lon1 = p[..., 0], p[..., 1]
    lat2, lon2 = q[..., 0], q[..., 1]
    h = (
        np.sin((lat2 - lat1) / 2.0) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2.0) ** 2
    )
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _unit_vectors(coords: np.ndarray) -> np.ndarray:
    """(lat, lon) degrees, shape ``(k, 2)``, as points on the unit sphere, shape ``(k, 3)``.

    The chord between two such points grows with their great-circle distance, so nearest
    neighbours by chord are nearest by great-circle distance.
    """
    lat, lon = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True, eq=False)
class Plan:
    """Transfers ``counts[k]`` staff from hospital ``senders[k]`` to hospital ``receivers[k]``.

    Args:
        senders: hospital indices, shape ``(k,)``.
        receivers: hospital indices, shape ``(k,)``; no hospital is both a sender and a receiver.
        counts: staff moved per transfer, shape ``(k,)``, all > 0.
        names: the network's hospital names, shape ``(n,)``.
        distance_km: great-circle distance per transfer, shape ``(k,)``, or ``None`` without
            coordinates.
        method: the method that made the plan (one of :data:`PLAN_METHODS` but ``"auto"``).

    Raises:
        ValueError: naming the field when the arrays disagree or break the rules above.
    """

    senders: np.ndarray
    receivers: np.ndarray
    counts: np.ndarray
    names: tuple[str, ...]
    distance_km: np.ndarray | None = None
    method: str = "largest-first"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        names = tuple(str(name) for name in self.names)
        n = len(names)
        arrays: dict[str, np.ndarray] = {}
        for field, dtype in (("senders", np.int64), ("receivers", np.int64), ("counts", None)):
            raw = np.asarray(getattr(self, field))
            if raw.ndim != 1:
                raise ValueError(f"{field}: expected a 1-D array, got shape {raw.shape}")
            if dtype is np.int64:
                if raw.size and not np.issubdtype(raw.dtype, np.integer):
                    raise ValueError(f"{field}: expected integer hospital indices, got {raw.dtype}")
                arr = raw.astype(np.int64)
                if arr.size and (arr.min() < 0 or arr.max() >= n):
                    raise ValueError(f"{field}: hospital indices must lie in [0, {n}), got {arr}")
            else:
                arr = raw.astype(np.float64)
                if not np.all(np.isfinite(arr) & (arr > 0)):
                    raise ValueError("counts: every transfer must move a finite, positive count")
            arrays[field] = arr
        k = arrays["senders"].shape[0]
        for field in ("receivers", "counts"):
            if arrays[field].shape[0] != k:
                raise ValueError(
                    f"{field}: has {arrays[field].shape[0]} values but senders has {k}"
                )
        # (a mask, not np.intersect1d: np.unique imports numpy.ma, 13 ms of CLI start-up)
        sends = np.zeros(n, dtype=bool)
        sends[arrays["senders"]] = True
        receives = np.zeros(n, dtype=bool)
        receives[arrays["receivers"]] = True
        both = np.flatnonzero(sends & receives)
        if both.size:
            raise ValueError(
                f"receivers: hospital {names[both[0]]!r} both sends and receives; a plan moves "
                "staff one way per hospital"
            )
        distance = self.distance_km
        if distance is not None:
            distance = np.asarray(distance, dtype=np.float64)
            if distance.shape != (k,):
                raise ValueError(f"distance_km: expected shape ({k},), got {distance.shape}")
            if not np.all(np.isfinite(distance) & (distance >= 0)):
                raise ValueError("distance_km: distances must be finite and >= 0")
        if self.method not in PLAN_METHODS[1:]:
            raise ValueError(f"method: must be one of {PLAN_METHODS[1:]}, got {self.method!r}")
        for field, arr in arrays.items():
            arr = arr.copy()
            arr.setflags(write=False)
            set_(self, field, arr)
        if distance is not None:
            distance = distance.copy()
            distance.setflags(write=False)
        set_(self, "distance_km", distance)
        set_(self, "names", names)

    def __len__(self) -> int:
        """Number of transfers."""
        return int(self.counts.shape[0])

    @property
    def total_moved(self) -> float:
        """Staff moved in all, ``sum(counts)``."""
        return float(self.counts.sum())

    @property
    def total_distance_km(self) -> float | None:
        """Staff-kilometres travelled, ``sum(counts * distance_km)``; ``None`` without coords."""
        if self.distance_km is None:
            return None
        return float(np.dot(self.counts, self.distance_km))

    @property
    def is_integral(self) -> bool:
        """True when every count is a whole number of staff."""
        return bool(np.all(self.counts == np.round(self.counts)))

    def apply(self, current: np.ndarray) -> np.ndarray:
        """Staff per hospital after the transfers: ``current - outflow + inflow``, shape ``(n,)``.

        Raises:
            ValueError: naming ``current`` when it is not one number per hospital.
        """
        try:
            after = np.array(current, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"current: values must be numbers ({exc})") from None
        n = len(self.names)
        if after.shape != (n,):
            raise ValueError(
                f"current: expected shape ({n},) (one value per hospital), got {after.shape}"
            )
        np.subtract.at(after, self.senders, self.counts)
        np.add.at(after, self.receivers, self.counts)
        return after

    def records(self, *, with_distance: bool = False) -> list[dict[str, Any]]:
        """The transfers as ``{"from": name, "to": name, "count": k}`` dicts, in plan order.

        ``count`` is an ``int`` when every count in the plan is whole, a ``float`` otherwise.
        With ``with_distance=True`` (and coordinates) each dict also has ``"distance_km"``.
        """
        whole = self.is_integral
        out: list[dict[str, Any]] = []
        for k in range(len(self)):
            count = self.counts[k]
            record: dict[str, Any] = {
                "from": self.names[self.senders[k]],
                "to": self.names[self.receivers[k]],
                "count": int(count) if whole else float(count),
            }
            if with_distance and self.distance_km is not None:
                record["distance_km"] = float(self.distance_km[k])
            out.append(record)
        return out

    def to_frame(self) -> pd.DataFrame:
        """The transfers as a pandas table: columns ``from, to, count[, distance_km]``."""
        import pandas as pd

        counts = self.counts.astype(np.int64) if self.is_integral else self.counts.copy()
        columns: dict[str, Any] = {
            "from": [self.names[i] for i in self.senders],
            "to": [self.names[j] for j in self.receivers],
            "count": counts,
        }
        if self.distance_km is not None:
            columns["distance_km"] = self.distance_km.copy()
        return pd.DataFrame(columns, columns=list(columns))

    def __repr__(self) -> str:
        distance = self.total_distance_km
        return (
            f"Plan(transfers={len(self)}, moved={_fmt(self.total_moved)}, "
            + (f"distance_km={distance:.1f}, " if distance is not None else "")
            + f"method={self.method!r})"
        )


def _fmt(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def write_plan_csv(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write ``plan`` as CSV with columns ``from,to,count`` (+ ``distance_km`` when known).

    Counts are written as whole numbers when the plan is integral, else as round-trip floats;
    distances with 3 decimals (metres). The write is atomic (temporary file, then rename).
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"plan: expected a Plan, got {type(plan).__name__}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["from", "to", "count"]
    if plan.distance_km is not None:
        header.append("distance_km")
    writer.writerow(header)
    whole = plan.is_integral
    for k in range(len(plan)):
        count = plan.counts[k]
        row = [
            plan.names[plan.senders[k]],
            plan.names[plan.receivers[k]],
            str(int(count)) if whole else repr(float(count)),
        ]
        if plan.distance_km is not None:
            row.append(f"{plan.distance_km[k]:.3f}")
        writer.writerow(row)
    atomic_write_text(Path(path), buffer.getvalue())


# ---------------------------------------------------------------------- planning
def plan(network: HospitalNetwork, allocation: np.ndarray, *, method: str = "auto") -> Plan:
    """Decide who sends how many staff to whom to move from ``network.current`` to ``allocation``.

    Args:
        network: the hospitals; ``coords`` (if any) make the plan minimise distance.
        allocation: new staff per hospital, shape ``(n,)``, >= 0, with the same total as
            ``network.current`` (to 1e-9 relative).
        method: ``"auto"``, ``"transport"``, ``"sparse-transport"`` or ``"largest-first"`` (see
            the module documentation).

    Returns:
        a :class:`Plan` whose transfers are ordered by count (largest first), then sender name,
        then receiver name; ``plan.apply(network.current)`` gives ``allocation`` (exactly on
        whole staff).

    Raises:
        ValueError: naming ``allocation`` (wrong shape, NaN, negative, different total) or
            ``method`` (unknown, needs coordinates, plan too big for ``"transport"``).
        TypeError: when ``network`` is not a :class:`HospitalNetwork`.
    """
    if not isinstance(network, HospitalNetwork):
        raise TypeError(f"network: expected a HospitalNetwork, got {type(network).__name__}")
    if method not in PLAN_METHODS:
        raise ValueError(
            f"method: must be one of {', '.join(map(repr, PLAN_METHODS))}, got {method!r}"
        )
    if method in ("transport", "sparse-transport") and network.coords is None:
        raise ValueError(
            f"method: {method!r} minimises distance and needs hospital coordinates, but the "
            "network has none (add lat,lon columns, or use method='largest-first' or 'auto')"
        )
    current = network.current
    allocated = _check_allocation(network, allocation)
    change = allocated - current
    integral = bool(np.all(change == np.round(change)))
    if not integral:
        scale = max(1.0, float(np.max(current)), float(np.max(allocated)))
        change[np.abs(change) <= _NOISE_REL * scale] = 0.0
    senders = np.flatnonzero(change < 0)
    receivers = np.flatnonzero(change > 0)
    supply = -change[senders]
    demand = change[receivers]
    if not integral and senders.size and receivers.size:
        # the totals may differ by float noise (<= 1e-9 relative): spread it over the receivers
        demand = demand * (supply.sum() / demand.sum())
    cells = senders.size * receivers.size
    if method == "auto":
        if network.coords is None:
            method = "largest-first"
        elif cells <= MAX_TRANSPORT_CELLS:
            method = "transport"
        else:
            method = "sparse-transport"
    elif method == "transport" and cells > MAX_TRANSPORT_CELLS:
        raise ValueError(
            f"method: 'transport' would solve a dense {senders.size} x {receivers.size} problem "
            f"({cells:,} sender-receiver pairs, limit MAX_TRANSPORT_CELLS = "
            f"{MAX_TRANSPORT_CELLS:,}); use method='auto' or 'sparse-transport' (near-optimal "
            "on nearest neighbours) or 'largest-first'"
        )

    eps = 0.0 if integral else _NOISE_REL * max(1.0, float(supply.sum()) if supply.size else 1.0)
    if senders.size == 0 or receivers.size == 0:
        rows = cols = np.zeros(0, dtype=np.int64)
        flows = np.zeros(0)
    elif method == "largest-first":
        rows, cols, flows = _largest_first(supply, demand, eps)
    else:
        coords = network.coords
        assert coords is not None
        if method == "transport":
            rows, cols, flows = _dense_transport(coords[senders], coords[receivers], supply, demand)
        else:
            rows, cols, flows = _sparse_transport(
                coords[senders], coords[receivers], supply, demand, eps
            )
        if integral:
            rows, cols, flows = _integral_flows(rows, cols, flows, supply, demand)
        else:
            keep = flows > eps
            rows, cols, flows = rows[keep], cols[keep], flows[keep]

    from_idx, to_idx = senders[rows], receivers[cols]
    order = _plan_order(network.names, from_idx, to_idx, flows)
    from_idx, to_idx, flows = from_idx[order], to_idx[order], flows[order]
    distance = None
    if network.coords is not None:
        distance = haversine_km(network.coords[from_idx], network.coords[to_idx])
    return Plan(
        senders=from_idx,
        receivers=to_idx,
        counts=flows,
        names=network.names,
        distance_km=distance,
        method=method,
    )


def _check_allocation(network: HospitalNetwork, allocation: Any) -> np.ndarray:
    """``allocation`` as a float array of shape ``(n,)``, validated against ``network``."""
    try:
        values = np.array(allocation, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"allocation: values must be numbers ({exc})") from None
    n = network.n
    if values.shape != (n,):
        raise ValueError(
            f"allocation: expected shape ({n},) (one value per hospital), got {values.shape}"
        )
    for bad, what in (
        (~np.isfinite(values), "is not a finite number"),
        (values < 0, "is negative"),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"allocation, row {i + 1} (hospital {network.names[i]!r}): value {values[i]} {what}"
            )
    current_total = float(network.current.sum())
    new_total = float(values.sum())
    if abs(new_total - current_total) > _TOTAL_REL * max(1.0, current_total, new_total):
        raise ValueError(
            f"allocation: its total {new_total:.12g} differs from the network's current total "
            f"{current_total:.12g}; transfers conserve staff, so the totals must match "
            "(to 1e-9 relative)"
        )
    return values


def _plan_order(
    names: tuple[str, ...], senders: np.ndarray, receivers: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Indices sorting transfers by count (descending), then sender name, then receiver name."""
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    return np.lexsort((rank[receivers], rank[senders], -counts))


def _largest_first(
    supply: np.ndarray, demand: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest-first matching of ``supply`` (shape ``(s,)``) to ``demand`` (shape ``(r,)``).

    Repeatedly pair the largest remaining supply with the largest remaining demand (ties to the
    lower position) and move ``min`` of the two; remainders ``<= eps`` count as exhausted.
    Returns ``(rows, cols, flows)`` with at most ``s + r - 1`` entries; O((s + r) log(s + r)).
    """
    give = [(-float(a), i) for i, a in enumerate(supply) if a > eps]
    take = [(-float(b), j) for j, b in enumerate(demand) if b > eps]
    heapq.heapify(give)
    heapq.heapify(take)
    rows: list[int] = []
    cols: list[int] = []
    flows: list[float] = []
    while give and take:
        a, i = give[0]
        b, j = take[0]
        a, b = -a, -b
        moved = min(a, b)
        rows.append(i)
        cols.append(j)
        flows.append(moved)
        a -= moved
        b -= moved
        if a > eps:
            heapq.heapreplace(give, (-a, i))
        else:
            heapq.heappop(give)
        if b > eps:
            heapq.heapreplace(take, (-b, j))
        else:
            heapq.heappop(take)
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), np.array(flows)


def _import_pot() -> ModuleType:
    """Import POT without letting it import PyTorch (or JAX, TensorFlow, CuPy)."""
    if "ot" in sys.modules:
        return sys.modules["ot"]
    saved = {key: os.environ.get(key) for key in _POT_BACKEND_SWITCHES}
    try:
        for key in _POT_BACKEND_SWITCHES:
            os.environ[key] = "1"
        import ot
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return ot


def _emd(supply: np.ndarray, demand: np.ndarray, cost: Any) -> Any:
    """``ot.emd`` with a raised error (not a warning) when it stops short of the optimum."""
    ot = _import_pot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flows, log = ot.emd(supply, demand, cost, numItermax=_EMD_MAX_ITER, log=True)
    if log.get("warning"):
        raise RuntimeError(
            f"transfer plan: the transport solver stopped short of the optimum "
            f"({log['warning']}); use method='largest-first'"
        )
    return flows


def _dense_transport(
    origin: np.ndarray, destination: np.ndarray, supply: np.ndarray, demand: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact minimum-distance transport between senders at ``origin`` (shape ``(s, 2)``) and
    receivers at ``destination`` (shape ``(r, 2)``); returns the nonzero ``(rows, cols, flows)``.

    Up to :data:`_NUMPY_TRANSPORT_CELLS` pairs by :func:`_transport_simplex` (numpy only), above
    that, or should the simplex give up (never seen), by POT's ``ot.emd``.
    """
    cost = haversine_km(origin[:, None, :], destination[None, :, :])  # (s, r)
    if cost.size <= _NUMPY_TRANSPORT_CELLS:
        try:
            solution = _transport_simplex(cost, supply, demand)
        except _SimplexGaveUp:
            pass
        else:
            return solution.rows, solution.cols, solution.flows
    flows = np.asarray(_emd(supply, demand, cost))
    rows, cols = np.nonzero(flows > 0)
    return rows.astype(np.int64), cols.astype(np.int64), flows[rows, cols]


# ---------------------------------------------------------------------- numpy transport solver
class _SimplexGaveUp(RuntimeError):
    """The numpy transportation simplex stopped early (pivot limit or a broken start basis)."""


class _TransportSolution(NamedTuple):
    """An optimal transport plan with the dual potentials that prove it optimal.

    ``rows``, ``cols``, ``flows`` (shape ``(k,)`` each, ``k <= s + r - 1``) are the cells with
    positive flow. ``sender_potential`` ``u`` (shape ``(s,)``) and ``receiver_potential`` ``v``
    (shape ``(r,)``) satisfy ``cost[i, j] - u[i] - v[j] >= -tol`` on every cell and ``= 0`` (to
    rounding) on every cell with flow, ``tol = _SIMPLEX_COST_REL * max(cost)``: by LP duality the
    plan's cost exceeds the optimum by at most ``tol * sum(supply)``. ``pivots`` counts the
    simplex pivots (0 for the one-sender and one-receiver shortcuts).
    """

    rows: np.ndarray
    cols: np.ndarray
    flows: np.ndarray
    sender_potential: np.ndarray
    receiver_potential: np.ndarray
    pivots: int


def _transport_simplex(
    cost: np.ndarray, supply: np.ndarray, demand: np.ndarray
) -> _TransportSolution:
    """Solve the balanced transportation problem exactly with numpy: the transportation simplex.

    ``minimise sum_ij cost_ij x_ij`` s.t. ``sum_j x_ij = supply_i``, ``sum_i x_ij = demand_j``,
    ``x >= 0``, for ``cost`` of shape ``(s, r)``, ``supply > 0`` of shape ``(s,)`` and
    ``demand > 0`` of shape ``(r,)`` with equal sums (up to float rounding when fractional).
    Written for marra from the textbook method (the transportation simplex with Orden's 1956
    perturbation against degeneracy); no code taken from elsewhere.

    Algorithm (the "MODI" or u-v method):

    - A **basis** is a spanning tree of ``s + r - 1`` cells of the bipartite sender-receiver
      graph; its flows are fixed by the supplies and demands. Start: the **least-cost** (matrix
      minimum) rule, which fills the cheapest cells first (cells sorted in chunks with
      ``np.argpartition``).
    - **Potentials** ``u_i``, ``v_j`` with ``u_i + v_j = cost_ij`` on every tree cell (``u`` of
      the root sender is 0). The tree stores, per node, the difference to its parent
      (``phi = u`` for senders, ``-v`` for receivers), so a pivot touches only the nodes of its
      cycle; the absolute potentials are rebuilt at each pricing by pointer jumping (``log2`` of
      the tree depth vectorised passes over the ``s + r`` nodes).
    - **Pricing**: reduced costs ``d_ij = cost_ij - u_i - v_j`` for all ``s x r`` cells in one
      vectorised pass. If none is below ``-tol`` the basis is optimal. Otherwise the most
      negative cell of each sender row is a candidate; candidates are taken most negative first,
      each re-checked exactly (its ``d_ij`` is summed along the tree) before it enters, and the
      simplex prices again after :data:`_SIMPLEX_STALE_RUN` stale candidates in a row.
    - **Pivot**: the entering cell closes one cycle with the tree; flow ``theta`` moves around it
      (``+`` on the entering cell, alternating ``-``/``+``), ``theta`` the smallest flow on a
      ``-`` cell, which leaves the basis; the cut-off subtree is re-hung from the entering cell.
      Cost: O(cycle length) Python steps.

    Why it is exact: it stops only when no reduced cost is below ``-tol`` (``tol = 1e-12`` of the
    largest cost, rounding of the potentials); then ``u, v`` are dual feasible to ``tol``, the
    tree flows are primal feasible and complementary (``d_ij = 0`` on tree cells), so by LP
    duality the plan costs at most ``tol * sum(supply)`` more than the optimum (1e-12 of the
    largest cost per unit moved: the same optimum as ``ot.emd`` or an LP solver, which the tests
    check to 1e-9 relative). The result is a vertex (a forest of at most ``s + r - 1``
    cells), and **integral** when supplies and demands are: transportation bases are totally
    unimodular, and flows only ever change by whole amounts, exactly in float64.

    Degeneracy: whole staff make many ties (a pivot with ``theta = 0``), and degenerate pivots
    can cycle. Orden's perturbation ``supply_i + eps``, ``demand_last + s * eps`` makes every
    basis non-degenerate; flows are kept as (value, eps-count) pairs compared lexicographically,
    so the leaving cell is unique, every pivot lowers the perturbed cost, no basis repeats and
    the method terminates. The eps parts are dropped at the end. Fractional supplies work the
    same way (float rounding of about 1e-16 relative in the flows).

    Complexity and speed: the pivots measured are about 1.5-3 x ``(s + r)``; each pricing costs
    O(s r) vectorised, each pivot O(cycle) Python. Whole plans measured on a shared 2-core
    machine (docs/performance.md): 72 x 74 (the default network) 3.4 ms, 142 x 150 11.5 ms,
    296 x 290 34 ms, 464 x 512 0.115 s; 3-4x POT's compiled ``ot.emd`` once POT is imported (1.1,
    2.9, 12, 34 ms), but importing POT costs about 0.85 s, hence
    :data:`_NUMPY_TRANSPORT_CELLS`.

    Raises:
        _SimplexGaveUp: after ``50 (s + r) + 1000`` pivots (a safety net, never reached in
            tests) or if float rounding broke the start basis; the caller then uses POT.
    """
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    supply = np.asarray(supply, dtype=np.float64)
    demand = np.asarray(demand, dtype=np.float64)
    s, r = cost.shape
    if s == 1 or r == 1:  # a star: the flows are the marginals of the other side
        if s == 1:
            rows, cols, flows = np.zeros(r, np.int64), np.arange(r, dtype=np.int64), demand.copy()
            u, v = np.zeros(1), cost[0].copy()
        else:
            rows, cols, flows = np.arange(s, dtype=np.int64), np.zeros(s, np.int64), supply.copy()
            u, v = cost[:, 0].copy(), np.zeros(1)
        return _TransportSolution(rows, cols, flows, u, v, 0)

    n_nodes = s + r  # senders are nodes 0..s-1, receivers s..s+r-1; node 0 is the root
    # Orden's perturbation: amounts are (value, eps-count) pairs
    supply_eps = [1] * s
    demand_eps = [0] * r
    demand_eps[r - 1] = s
    basis = _least_cost_basis(cost, supply.tolist(), supply_eps, demand.tolist(), demand_eps)
    if len(basis) != n_nodes - 1:
        raise _SimplexGaveUp("least-cost start did not give a spanning tree")

    neighbours: list[list[tuple[int, float, int, float]]] = [[] for _ in range(n_nodes)]
    for i, j, value, eps in basis:
        c = float(cost[i, j])
        neighbours[i].append((s + j, value, eps, c))
        neighbours[s + j].append((i, value, eps, c))
    parent = [0] * n_nodes  # the root is its own parent
    step = [0.0] * n_nodes  # phi[node] - phi[parent]: +cost for a sender, -cost for a receiver
    flow = [0.0] * n_nodes  # flow on the arc between node and parent (value part)
    flow_eps = [0] * n_nodes  # its eps part
    reached = [False] * n_nodes
    reached[0] = True
    stack = [0]
    while stack:
        node = stack.pop()
        for other, value, eps, c in neighbours[node]:
            if not reached[other]:
                reached[other] = True
                parent[other] = node
                flow[other] = value
                flow_eps[other] = eps
                step[other] = c if other < s else -c
                stack.append(other)
    if not all(reached):
        raise _SimplexGaveUp("least-cost start did not give a spanning tree")

    largest = float(cost.max())
    tol = _SIMPLEX_COST_REL * largest if largest > 0 else 0.0
    max_pivots = 50 * n_nodes + 1000
    mark_send = [0] * n_nodes  # visit stamps of the two upward walks that find the cycle
    mark_take = [0] * n_nodes
    stamp = pivots = 0
    sender_rows = np.arange(s)
    shifted = np.empty((s, r))
    while True:
        phi = _tree_potentials(parent, step)
        # d_ij = cost_ij - u_i - v_j with u = phi[:s], v = -phi[s:]; u_i is constant along
        # row i, so the row minima come from cost + phi[s:] alone (one pass fewer)
        np.add(cost, phi[s:], out=shifted)
        best_col = shifted.argmin(axis=1)
        best = shifted[sender_rows, best_col] - phi[:s]
        candidates = np.flatnonzero(best < -tol)
        if candidates.size == 0:
            break
        candidates = candidates[np.argsort(best[candidates], kind="stable")]
        stale = 0
        pivoted = False
        for sender, receiver in zip(
            candidates.tolist(), best_col[candidates].tolist(), strict=True
        ):
            if stale >= _SIMPLEX_STALE_RUN:
                break
            # the cycle: walk up from both ends, alternately, until one meets the other's marks
            stamp += 1
            x, y = sender, s + receiver
            mark_send[x] = stamp
            mark_take[y] = stamp
            up_send = [x]  # nodes below the apex on the sender's side (their parent arcs)
            up_take = [y]  # ... and on the receiver's side
            while True:
                if x:
                    x = parent[x]
                    if mark_take[x] == stamp:
                        del up_take[up_take.index(x) :]
                        break
                    mark_send[x] = stamp
                    up_send.append(x)
                if y:
                    y = parent[y]
                    if mark_send[y] == stamp:
                        del up_send[up_send.index(y) :]
                        break
                    mark_take[y] = stamp
                    up_take.append(y)
            entering_cost = float(cost[sender, receiver])
            # d = cost - (phi[sender] - phi[receiver]), phi differences summed along the cycle
            d = entering_cost
            for node in up_send:
                d -= step[node]
            for node in up_take:
                d += step[node]
            if d >= -tol:
                stale += 1
                continue
            stale = 0
            pivoted = True
            pivots += 1
            if pivots > max_pivots:
                raise _SimplexGaveUp(f"no optimum after {max_pivots} pivots")
            # "-" cells: receivers on the receiver's side, senders on the sender's side;
            # the lexicographically smallest flow leaves (unique under the perturbation)
            leaving = -1
            theta, theta_eps = 0.0, 0
            for node in up_take:
                if node >= s and (leaving < 0 or (flow[node], flow_eps[node]) < (theta, theta_eps)):
                    leaving, theta, theta_eps = node, flow[node], flow_eps[node]
            for node in up_send:
                if node < s and (leaving < 0 or (flow[node], flow_eps[node]) < (theta, theta_eps)):
                    leaving, theta, theta_eps = node, flow[node], flow_eps[node]
            for node in up_take:
                if node >= s:
                    flow[node] -= theta
                    flow_eps[node] -= theta_eps
                else:
                    flow[node] += theta
                    flow_eps[node] += theta_eps
            for node in up_send:
                if node < s:
                    flow[node] -= theta
                    flow_eps[node] -= theta_eps
                else:
                    flow[node] += theta
                    flow_eps[node] += theta_eps
            # re-hang the cut-off side from the entering cell, reversing the path to `leaving`
            if leaving < s:  # on the sender's side
                node, new_parent, arc_step = sender, s + receiver, entering_cost
            else:
                node, new_parent, arc_step = s + receiver, sender, -entering_cost
            arc_flow, arc_eps = theta, theta_eps
            while True:
                old_parent = parent[node]
                old_flow, old_eps, old_step = flow[node], flow_eps[node], step[node]
                parent[node] = new_parent
                flow[node], flow_eps[node], step[node] = arc_flow, arc_eps, arc_step
                if node == leaving:
                    break
                arc_flow, arc_eps, arc_step = old_flow, old_eps, -old_step
                new_parent, node = node, old_parent
        if not pivoted:  # every candidate was stale by the exact check: optimal to rounding
            break

    parents = np.array(parent, dtype=np.int64)
    values = np.array(flow)
    node_ids = np.arange(n_nodes)
    keep = (node_ids > 0) & (values > 0)
    is_sender = node_ids < s
    rows = np.where(is_sender, node_ids, parents)[keep]
    cols = np.where(is_sender, parents - s, node_ids - s)[keep]
    return _TransportSolution(rows, cols, values[keep], phi[:s].copy(), -phi[s:], pivots)


def _least_cost_basis(
    cost: np.ndarray,
    supply: list[float],
    supply_eps: list[int],
    demand: list[float],
    demand_eps: list[int],
) -> list[tuple[int, int, float, int]]:
    """The least-cost (matrix minimum) starting basis of :func:`_transport_simplex`.

    Visits cells cheapest first (ties by position) and gives each cell whose sender and receiver
    are both still open the smaller of their remaining amounts, closing the one that runs out.
    Amounts are (value, eps-count) pairs under Orden's perturbation, so exactly one line closes
    per cell until the last, and the ``s + r - 1`` cells form a spanning tree. Cells are sorted
    lazily: the ``4 (open lines)`` cheapest open cells by ``np.argpartition``, then again on the
    open submatrix, so a sort of all ``s r`` cells is rarely needed. Mutates the amount lists;
    returns ``(sender, receiver, value, eps)`` per basic cell.
    """
    s, r = cost.shape
    open_rows = [True] * s
    open_cols = [True] * r
    rows, cols = np.arange(s), np.arange(r)
    sub = cost
    basis: list[tuple[int, int, float, int]] = []
    left = s + r - 1
    while left and rows.size and cols.size:
        flat = sub.ravel()
        want = 4 * (rows.size + cols.size)
        if want < flat.size:
            order = np.argpartition(flat, want - 1)[:want]
            order = order[np.argsort(flat[order], kind="stable")]
        else:
            order = np.argsort(flat, kind="stable")
        width = cols.size
        for i, j in zip(rows[order // width].tolist(), cols[order % width].tolist(), strict=True):
            if not (open_rows[i] and open_cols[j]):
                continue
            if (supply[i], supply_eps[i]) <= (demand[j], demand_eps[j]):
                value, eps = supply[i], supply_eps[i]
                open_rows[i] = False
            else:
                value, eps = demand[j], demand_eps[j]
                open_cols[j] = False
            supply[i] -= value
            supply_eps[i] -= eps
            demand[j] -= value
            demand_eps[j] -= eps
            basis.append((i, j, value, eps))
            left -= 1
            if not left:
                break
        if left:
            rows, cols = np.flatnonzero(open_rows), np.flatnonzero(open_cols)
            sub = cost[np.ix_(rows, cols)]
    return basis


def _tree_potentials(parent: list[int], step: list[float]) -> np.ndarray:
    """Node potentials from a rooted tree given as parent pointers and parent differences.

    ``phi[node] = step[node] + phi[parent[node]]``, ``phi[0] = step[0] = 0`` at the root (its own
    parent). Pointer jumping: keep ``phi[x]`` = the sum of ``step`` from ``x`` up to (not
    including) ``jump[x]``; each pass adds ``phi[jump[x]]`` and sets ``jump[x] = jump[jump[x]]``,
    doubling the covered path, so ``ceil(log2(depth))`` vectorised passes suffice.
    Shape ``(len(parent),)``.
    """
    jump = np.array(parent, dtype=np.int64)
    phi = np.array(step, dtype=np.float64)
    while jump.any():
        phi += phi[jump]
        jump = jump[jump]
    return phi


def _sparse_transport(
    origin: np.ndarray,
    destination: np.ndarray,
    supply: np.ndarray,
    demand: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-distance transport restricted to nearest-neighbour edges plus the largest-first
    edges (which keep it feasible); see the module documentation. Returns ``(rows, cols, flows)``.
    """
    import scipy.sparse
    from scipy.spatial import cKDTree

    ot = _import_pot()
    version = tuple(int(part) for part in ot.__version__.split(".")[:3] if part.isdigit())
    if version < (0, 9, 7):
        raise RuntimeError(
            f"method 'sparse-transport' needs POT >= 0.9.7 (sparse cost matrices); POT "
            f"{ot.__version__} is installed. Upgrade POT or use method='largest-first'"
        )
    s, r = supply.size, demand.size
    send_xyz, take_xyz = _unit_vectors(origin), _unit_vectors(destination)
    k_take = min(SPARSE_NEIGHBOURS, r)
    _, near_take = cKDTree(take_xyz).query(send_xyz, k=k_take)
    k_send = min(SPARSE_NEIGHBOURS, s)
    _, near_send = cKDTree(send_xyz).query(take_xyz, k=k_send)
    lf_rows, lf_cols, _ = _largest_first(supply, demand, eps)
    rows = np.concatenate([np.repeat(np.arange(s), k_take), np.asarray(near_send).ravel(), lf_rows])
    cols = np.concatenate([np.asarray(near_take).ravel(), np.repeat(np.arange(r), k_send), lf_cols])
    edges = np.unique(rows.astype(np.int64) * r + cols.astype(np.int64))
    rows, cols = edges // r, edges % r
    cost = scipy.sparse.coo_array(
        (haversine_km(origin[rows], destination[cols]), (rows, cols)), shape=(s, r)
    )
    flows = _emd(supply, demand, cost).tocoo()
    keep = flows.data > 0
    return (
        np.asarray(flows.row)[keep].astype(np.int64),
        np.asarray(flows.col)[keep].astype(np.int64),
        np.asarray(flows.data)[keep].astype(np.float64),
    )


def _integral_flows(
    rows: np.ndarray,
    cols: np.ndarray,
    flows: np.ndarray,
    supply: np.ndarray,
    demand: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-number flows with row sums exactly ``supply`` and column sums exactly ``demand``.

    ``supply`` (shape ``(s,)``) and ``demand`` (shape ``(r,)``) are whole numbers with equal
    sums; ``flows`` (shape ``(e,)``, at ``(rows, cols)``) is a transport plan between them up to
    float error. A vertex solution is integral already and passes through unchanged. Otherwise:
    flows are snapped down (``floor(x + 1e-6)``); rows, then columns, that still exceed their sum
    give back from their largest flows; and the remaining supply is matched to the remaining
    demand largest-first. The result is non-negative, integral and exact in both marginals.
    """
    s, r = supply.size, demand.size
    whole = np.floor(np.maximum(flows, 0.0) + 1e-6)
    for index, bound, size in ((rows, supply, s), (cols, demand, r)):
        sums = np.bincount(index, weights=whole, minlength=size)
        for over in np.flatnonzero(sums > bound):
            excess = sums[over] - bound[over]
            members = np.flatnonzero(index == over)
            for e in members[np.argsort(-whole[members], kind="stable")]:
                cut = min(excess, whole[e])
                whole[e] -= cut
                excess -= cut
                if excess <= 0:
                    break
    left_supply = supply - np.bincount(rows, weights=whole, minlength=s)
    left_demand = demand - np.bincount(cols, weights=whole, minlength=r)
    if np.any(left_supply > 0):
        more_rows, more_cols, more = _largest_first(left_supply, left_demand, 0.0)
        keep = more > 0
        rows = np.concatenate([rows, more_rows[keep]])
        cols = np.concatenate([cols, more_cols[keep]])
        whole = np.concatenate([whole, more[keep]])
    keys, inverse = np.unique(rows * r + cols, return_inverse=True)
    merged = np.bincount(inverse, weights=whole, minlength=keys.size)
    keep = merged > 0
    return keys[keep] // r, keys[keep] % r, merged[keep]
