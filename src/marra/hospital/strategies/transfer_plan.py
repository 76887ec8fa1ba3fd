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

  where ``D_ij`` is the great-circle distance in km between sender i and receiver j
  (:func:`haversine_km`). The solvers are in :mod:`marra.hospital.strategies.transport`: up to
  :data:`DENSE_TRANSPORT_CELLS` sender x receiver pairs on the dense cost matrix (marra's numpy
  transportation simplex up to 250,000 pairs, which needs no POT import, then POT's network
  simplex), above that by column generation on sparse candidate pairs, proved optimal over all
  pairs by the dual potentials (no dense matrix: 100,000 hospitals have 2.4 billion pairs).
  Every solver returns an optimal vertex, integral on whole staff; the flows are still snapped
  to whole numbers and repaired so every row and column sum is exact (:func:`_integral_flows`).
  Each plan carries its certificate, :attr:`Plan.optimality_gap_km`.
- Without coordinates, a deterministic **largest-first** matching: repeatedly match the largest
  remaining sender with the largest remaining receiver (ties to the lower hospital index) and move
  the smaller of the two amounts; at most ``senders + receivers - 1`` transfers, O(n log n).

Methods (``method=``):

``"transport"``
    exact minimum distance; needs coordinates. Dense up to :data:`DENSE_TRANSPORT_CELLS` pairs,
    sparse above.
``"sparse-transport"``
    the same exact plan, always by the sparse solver (for any size; mainly for tests and
    benchmarks).
``"largest-first"``
    the matching above; distances are still reported when coordinates are known.
``"auto"`` (default)
    ``"largest-first"`` without coordinates, else ``"transport"``.

Long plans (the sparse solver on tens of thousands of hospitals) take seconds; ``plan`` is quiet,
but takes a ``progress`` callback that receives a status line after every restricted solve, and
an optional ``time_limit`` after which the plan is returned with its certified gap instead of
being proved optimal.

Staff may be whole (integer mode) or fractional. In integer mode (every ``d_i`` whole) the plan
reproduces the allocation exactly; in continuous mode net changes within ``1e-12`` of the largest
staff figure count as zero (float noise, not a transfer), and the plan reproduces the allocation
to about that accuracy.

Planning small networks with the numpy solver imports neither POT nor ``scipy.optimize`` /
``scipy.stats``; POT is imported (without its PyTorch, JAX, TensorFlow and CuPy backends) only
for bigger plans.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marra._io import atomic_write_text
from marra.hospital.network import HospitalNetwork
from marra.hospital.strategies.transport import (
    EARTH_RADIUS_KM,
    ProgressCallback,
    _SimplexGaveUp,
    _transport_simplex,
    dense_emd,
    sparse_transport,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Plan",
    "plan",
    "write_plan_csv",
    "haversine_km",
    "PLAN_METHODS",
    "DENSE_TRANSPORT_CELLS",
    "EARTH_RADIUS_KM",
]

#: Methods accepted by :func:`plan`.
PLAN_METHODS = ("auto", "transport", "sparse-transport", "largest-first")

#: Largest number of sender x receiver pairs ``"transport"`` solves on a dense cost matrix;
#: bigger plans go to the sparse solver. At 2.1 million pairs (3,000 hospitals) the sparse solver
#: was already about 1.4x faster than POT on the dense matrix (docs/performance.md, "Exact
#: transfer plans at scale"), and the matrix costs 8 bytes a pair.
DENSE_TRANSPORT_CELLS = 1_000_000

#: Relative size (to the largest staff figure) below which a fractional net change is float noise.
_NOISE_REL = 1e-12

#: Relative mismatch allowed between ``sum(allocation)`` and ``sum(current)``.
_TOTAL_REL = 1e-9

#: Largest number of sender x receiver pairs solved by marra's numpy transportation simplex;
#: bigger dense problems go to POT. Measured (docs/performance.md, "Transfer plan solver"): once
#: imported, POT's compiled network simplex is 3-4x faster at every size (6.6x at 1,000,000
#: pairs), but importing it costs about 0.85 s; at this limit (about 500 x 500, 1,000 hospitals)
#: a whole numpy plan takes about 0.12 s, so a one-off plan is far faster without POT, and
#: above it a second plan in the same process would already repay the import.
_NUMPY_TRANSPORT_CELLS = 250_000


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
        optimality_gap_km: for a minimum-distance plan, a proven bound on how many staff-km it
            can exceed the optimum by (LP duality: the solver's potentials are checked on every
            sender x receiver pair); about ``1e-7 km x staff moved`` or less when the plan is
            optimal, larger only when a ``time_limit`` stopped the solver. ``None`` for a
            largest-first plan.

    Raises:
        ValueError: naming the field when the arrays disagree or break the rules above.
    """

    senders: np.ndarray
    receivers: np.ndarray
    counts: np.ndarray
    names: tuple[str, ...]
    distance_km: np.ndarray | None = None
    method: str = "largest-first"
    optimality_gap_km: float | None = None

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
        gap = self.optimality_gap_km
        if gap is not None:
            if distance is None:
                raise ValueError("optimality_gap_km: needs distance_km (a distance to be optimal)")
            gap = float(gap)
            if not (math.isfinite(gap) and gap >= 0):
                raise ValueError(f"optimality_gap_km: must be finite and >= 0, got {gap!r}")
            set_(self, "optimality_gap_km", gap)
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
            + (
                f"optimality_gap_km={self.optimality_gap_km:.3g}, "
                if self.optimality_gap_km is not None
                else ""
            )
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
def plan(
    network: HospitalNetwork,
    allocation: np.ndarray,
    *,
    method: str = "auto",
    progress: ProgressCallback | None = None,
    time_limit: float | None = None,
) -> Plan:
    """Decide who sends how many staff to whom to move from ``network.current`` to ``allocation``.

    Args:
        network: the hospitals; ``coords`` (if any) make the plan minimise distance.
        allocation: new staff per hospital, shape ``(n,)``, >= 0, with the same total as
            ``network.current`` (to 1e-9 relative).
        method: ``"auto"``, ``"transport"``, ``"sparse-transport"`` or ``"largest-first"`` (see
            the module documentation).
        progress: called with a one-line status now and then while a large minimum-distance
            plan is being solved (nothing is printed by ``plan`` itself).
        time_limit: seconds after which the sparse solver stops with a near-optimal plan and
            its certified gap (:attr:`Plan.optimality_gap_km`); ``None`` (default): optimal.

    Returns:
        a :class:`Plan` whose transfers are ordered by count (largest first), then sender name,
        then receiver name; ``plan.apply(network.current)`` gives ``allocation`` (exactly on
        whole staff).

    Raises:
        ValueError: naming ``allocation`` (wrong shape, NaN, negative, different total),
            ``method`` (unknown, needs coordinates) or ``time_limit`` (not positive).
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
    if time_limit is not None and not (
        isinstance(time_limit, int | float) and math.isfinite(time_limit) and time_limit > 0
    ):
        raise ValueError(f"time_limit: must be a positive number of seconds, got {time_limit!r}")
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
    if method == "auto":
        method = "largest-first" if network.coords is None else "transport"

    eps = 0.0 if integral else _NOISE_REL * max(1.0, float(supply.sum()) if supply.size else 1.0)
    lower: float | None = None
    if senders.size == 0 or receivers.size == 0:
        rows = cols = np.zeros(0, dtype=np.int64)
        flows = np.zeros(0)
        lower = None if method == "largest-first" else 0.0
    elif method == "largest-first":
        rows, cols, flows = _largest_first(supply, demand, eps)
    else:
        coords = network.coords
        assert coords is not None
        origin, destination = coords[senders], coords[receivers]
        if method == "transport" and senders.size * receivers.size <= DENSE_TRANSPORT_CELLS:
            rows, cols, flows, lower = _dense_transport(origin, destination, supply, demand)
        else:
            solved = sparse_transport(
                origin, destination, supply, demand, progress=progress, time_limit=time_limit
            )
            rows, cols, flows, lower = solved.rows, solved.cols, solved.flows, solved.lower_bound_km
        if integral:
            rows, cols, flows = _integral_flows(rows, cols, flows, supply, demand)
        else:
            keep = flows > eps
            rows, cols, flows = rows[keep], cols[keep], flows[keep]

    from_idx, to_idx = senders[rows], receivers[cols]
    order = _plan_order(network.names, from_idx, to_idx, flows)
    from_idx, to_idx, flows = from_idx[order], to_idx[order], flows[order]
    distance = gap = None
    if network.coords is not None:
        distance = haversine_km(network.coords[from_idx], network.coords[to_idx])
        if lower is not None:
            gap = max(0.0, float(np.dot(flows, distance)) - lower)
    return Plan(
        senders=from_idx,
        receivers=to_idx,
        counts=flows,
        names=network.names,
        distance_km=distance,
        method=method,
        optimality_gap_km=gap,
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


def _dense_transport(
    origin: np.ndarray, destination: np.ndarray, supply: np.ndarray, demand: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Exact minimum-distance transport between senders at ``origin`` (shape ``(s, 2)``) and
    receivers at ``destination`` (shape ``(r, 2)``) on the dense cost matrix.

    Up to :data:`_NUMPY_TRANSPORT_CELLS` pairs by marra's numpy simplex, above that (or should
    the simplex give up, never seen) by POT's ``ot.emd``. Returns the nonzero
    ``(rows, cols, flows)`` and the LP-duality lower bound on the optimum from the solver's
    potentials, checked on every pair of the matrix.
    """
    cost = haversine_km(origin[:, None, :], destination[None, :, :])  # (s, r)
    solved = None
    if cost.size <= _NUMPY_TRANSPORT_CELLS:
        try:
            simplex = _transport_simplex(cost, supply, demand)
        except _SimplexGaveUp:
            pass
        else:
            solved = (
                simplex.rows,
                simplex.cols,
                simplex.flows,
                simplex.sender_potential,
                simplex.receiver_potential,
            )
    if solved is None:
        solved = dense_emd(cost, supply, demand)
    rows, cols, flows, u, v = solved
    # (u, v) are feasible up to the most negative reduced cost; shifting u by it makes them
    # feasible on every pair, whatever the solver's tolerance
    worst = min(0.0, float((cost - u[:, None] - v[None, :]).min()))
    lower = float(np.dot(supply, u + worst) + np.dot(demand, v))
    return rows, cols, flows, lower


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
