"""Exact solvers of the transport problem behind a minimum-distance transfer plan.

The problem (senders ``i`` with supplies ``a_i``, receivers ``j`` with demands ``b_j``, equal
totals, cost ``d_ij`` the distance in km)::

    minimise  sum_ij d_ij x_ij   s.t.  sum_j x_ij = a_i,  sum_i x_ij = b_j,  x >= 0.

Three solvers, all exact, all returning an optimal vertex (integral when the supplies are):

- :func:`_transport_simplex`: marra's transportation simplex in numpy on a dense cost matrix,
  for small plans (no POT import, which costs about 0.85 s of start-up);
- :func:`dense_emd`: POT's network simplex (``ot.emd``) on a dense cost matrix;
- :func:`sparse_transport`: for plans too big for a dense matrix (every sender x receiver pair of
  100,000 hospitals is 2.4 billion pairs). It solves the problem on a sparse set of candidate
  pairs with POT and proves the result optimal over **all** pairs with the duals (column
  generation; see its docstring and ``docs/strategies.md``, "Transfer plans").

Every solver reports a certificate: dual potentials ``u``, ``v`` with ``u_i + v_j <= d_ij`` on
every pair (to a stated tolerance) give the lower bound ``sum a_i u_i + sum b_j v_j`` on the
optimum (LP duality), so ``cost - lower_bound`` bounds how far the plan can be from optimal.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "EARTH_RADIUS_KM",
    "ProgressCallback",
    "SparseTransportResult",
    "dense_emd",
    "import_pot",
    "sparse_transport",
    "unit_vectors",
]

#: Mean Earth radius (IUGG), km.
EARTH_RADIUS_KM = 6371.0088

#: ``progress(message)``: called with one status line now and then during long work.
ProgressCallback = Callable[[str], None]

#: ``cost(rows, cols)``: the km between senders ``rows`` and receivers ``cols``, shape ``(k,)``.
PairCost = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Network-simplex pivot limit; far above what any plan here needs.
_EMD_MAX_ITER = 1_000_000_000

#: Relative tolerance (to the largest cost) below which a negative reduced cost counts as zero.
_SIMPLEX_COST_REL = 1e-12

#: Stale candidates (reduced cost no longer negative) in a row before the simplex prices again.
_SIMPLEX_STALE_RUN = 32

#: A pair whose reduced cost ``d_ij - u_i - v_j`` is below ``-_DUAL_TOL`` km violates the duals.
#: POT's potentials are exact to about 1e-8 km at 100,000 hospitals; 1e-7 km (0.1 mm) is above
#: that noise, and the certified gap it leaves is at most ``1e-7 km x staff moved``.
_DUAL_TOL = 1e-7

#: Points (senders and receivers together) per cell when a level is coarsened.
_CELL = 4

#: Most sender x receiver pairs of a level solved on a dense matrix (the coarsest level).
_DENSE_LEVEL_CELLS = 250_000

#: Violating pairs added per sender and per receiver in one round of column generation.
_ADD_PER_NODE = 4

#: Nearest receivers per sender and senders per receiver priced before the check over all pairs.
_NEAR = 8

#: Partial pricing: while more than this fraction of ``senders + receivers`` near pairs are
#: violated, the round adds those and skips the (costlier) check over all pairs.
_PARTIAL_PRICING = 0.05

#: A potential that moved by at most this many km since the last full dual check counts as
#: settled (:class:`_DualCheck`); it widens the certified tolerance by twice as much.
_SETTLED = 1e-11

#: The dual check prices incrementally while at most this fraction of the hospitals' potentials
#: rose since its last full check (:class:`_DualCheck`), else it checks all pairs again.
_INCREMENTAL = 0.25

#: Levels with at least this many senders and receivers improve their first plan window by
#: window (:func:`_improve_in_windows`) before the column generation goes on.
_WINDOW_MIN_POINTS = 40_000

#: Window sizes (points per k-d tree leaf, up to twice as many) of the successive sweeps.
_WINDOW_SWEEPS = (128, 512, 512)

#: Query points handled at once by the dual check (bounds its memory to about 100 MB).
_QUERY_CHUNK = 4096

#: Largest number of rounds of column generation on one level (never reached in tests).
_MAX_ROUNDS = 200

_POT_BACKEND_SWITCHES = (
    "POT_BACKEND_DISABLE_PYTORCH",
    "POT_BACKEND_DISABLE_JAX",
    "POT_BACKEND_DISABLE_TENSORFLOW",
    "POT_BACKEND_DISABLE_CUPY",
)


# ---------------------------------------------------------------------- geometry
def unit_vectors(coords: np.ndarray) -> np.ndarray:
    """(lat, lon) degrees, shape ``(k, 2)``, as points on the unit sphere, shape ``(k, 3)``.

    The chord ``c`` between two such points gives their great-circle distance
    ``2 R asin(c / 2)``, a monotone function, so nearest by chord is nearest on the sphere.
    """
    coords = np.asarray(coords, dtype=np.float64)
    lat, lon = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _chord_km(chord: np.ndarray) -> np.ndarray:
    """Great-circle km for chords of the unit sphere."""
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.minimum(0.5 * chord, 1.0))


def _sphere_km(origin: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """Great-circle km between unit vectors, shape ``(k, 3)`` each (pairwise)."""
    return _chord_km(np.sqrt(((origin - destination) ** 2).sum(axis=-1)))


def _pair_km(origin: np.ndarray, destination: np.ndarray) -> PairCost:
    """``cost(rows, cols)``: great-circle km from ``origin[rows]`` to ``destination[cols]``
    (unit vectors, shape ``(k, 3)`` each), the same numbers as :func:`_sphere_km`.

    Gathers one coordinate column at a time and works in place: gathering ``(k, 3)`` rows and
    summing over the short last axis is about 15 times slower on the million-pair candidate
    sets of a 100,000-hospital plan.
    """
    o = [np.ascontiguousarray(origin[:, axis]) for axis in range(3)]
    d = [np.ascontiguousarray(destination[:, axis]) for axis in range(3)]

    def cost(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        total = o[0][rows] - d[0][cols]
        total *= total
        for axis in (1, 2):
            step = o[axis][rows]
            step -= d[axis][cols]
            step *= step
            total += step
        np.sqrt(total, out=total)
        total *= 0.5
        np.minimum(total, 1.0, out=total)
        np.arcsin(total, out=total)
        total *= 2.0 * EARTH_RADIUS_KM
        return total

    return cost


# ---------------------------------------------------------------------- POT
def import_pot() -> ModuleType:
    """Import POT without letting it import PyTorch (or JAX, TensorFlow, CuPy).

    POT imports every array backend it finds (PyTorch among them, seconds of start-up) when
    ``ot`` is first imported; marra's lower layers must not import torch, so the backends are
    switched off by their documented environment variables, restored right after. If ``ot`` was
    already imported it is used as it is.
    """
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


def _emd(supply: np.ndarray, demand: np.ndarray, cost: Any) -> tuple[Any, dict[str, Any]]:
    """``ot.emd`` with its log, raising (not warning) when it stops short of the optimum."""
    ot = import_pot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flows, log = ot.emd(supply, demand, cost, numItermax=_EMD_MAX_ITER, log=True)
    if log.get("warning"):
        raise _stopped_short(log["warning"])
    return flows, log


def _stopped_short(reason: str) -> RuntimeError:
    """The error for a POT solve that ended before the optimum (``reason``: POT's words)."""
    return RuntimeError(
        f"transfer plan: the transport solver stopped short of the optimum ({reason}); "
        "use method='largest-first'"
    )


def dense_emd(
    cost: np.ndarray, supply: np.ndarray, demand: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """POT's network simplex on the dense ``cost`` (shape ``(s, r)``).

    Returns ``(rows, cols, flows, u, v)``: the cells with positive flow and the dual potentials,
    shapes ``(s,)`` and ``(r,)``.
    """
    flows, log = _emd(supply, demand, cost)
    flows = np.asarray(flows)
    rows, cols = np.nonzero(flows > 0)
    return (
        rows.astype(np.int64),
        cols.astype(np.int64),
        flows[rows, cols],
        np.asarray(log["u"], dtype=np.float64),
        np.asarray(log["v"], dtype=np.float64),
    )


def _sparse_emd(
    supply: np.ndarray,
    demand: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    cost: np.ndarray,
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """POT's network simplex restricted to the pairs ``(rows, cols)`` with costs ``cost``.

    ``init``: potentials ``(u, v)`` to start the simplex from (a warm start: POT seeds its
    pivots with them; the result is the same optimum, found in far fewer pivots when ``init``
    is close to optimal potentials). Returns ``(rows, cols, flows, u, v)`` like
    :func:`dense_emd`; ``u + v <= cost`` holds on the given pairs only.
    """
    import_pot()
    from ot.lp.emd_wrap import check_result, emd_c_sparse

    # ``ot.emd`` does not pass a warm start on to its sparse solver: call that directly
    alpha, beta = (
        (None, None)
        if init is None
        else (np.ascontiguousarray(init[0], np.float64), np.ascontiguousarray(init[1], np.float64))
    )
    flow_rows, flow_cols, flows, _, u, v, code = emd_c_sparse(
        np.ascontiguousarray(supply, np.float64),
        np.ascontiguousarray(demand, np.float64),
        np.ascontiguousarray(rows, np.uint64),
        np.ascontiguousarray(cols, np.uint64),
        np.ascontiguousarray(cost, np.float64),
        _EMD_MAX_ITER,
        alpha,
        beta,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        message = check_result(code)
    if message:
        raise _stopped_short(message)
    flows = np.asarray(flows, dtype=np.float64)
    keep = flows > 0
    return (
        np.asarray(flow_rows)[keep].astype(np.int64),
        np.asarray(flow_cols)[keep].astype(np.int64),
        flows[keep],
        np.asarray(u, dtype=np.float64),
        np.asarray(v, dtype=np.float64),
    )


# ---------------------------------------------------------------------- the sparse solver
class SparseTransportResult(NamedTuple):
    """An optimal (or, under a time limit, certified near-optimal) sparse transport plan.

    ``rows``, ``cols``, ``flows`` (shape ``(k,)`` each) are the sender x receiver pairs with
    positive flow. ``cost_km = sum d x``; ``lower_bound_km`` is a proven lower bound on the
    optimum over **all** pairs, so ``gap_km = cost_km - lower_bound_km`` bounds how far the plan
    is from optimal (about ``1e-7 km x staff moved`` when the solver ran to the end: exact up to
    float rounding). ``rounds`` counts the restricted solves on the finest level, ``levels`` the
    levels of the hierarchy (1: solved densely).
    """

    rows: np.ndarray
    cols: np.ndarray
    flows: np.ndarray
    cost_km: float
    lower_bound_km: float
    rounds: int
    levels: int

    @property
    def gap_km(self) -> float:
        """Certified bound on ``cost_km - optimum``, >= 0."""
        return max(0.0, self.cost_km - self.lower_bound_km)


class _BoxTree:
    """An implicit balanced k-d tree over points on the unit sphere, shape ``(k, 3)``.

    Level ``L`` has ``2^L`` nodes; node ``t`` holds the points ``perm[bounds[t]:bounds[t + 1]]``
    with ``bounds = (arange(2^L + 1) * k) >> L`` (so every node of a level has ``k / 2^L``
    points, rounded), split at the median of its widest axis. Each node stores its bounding
    box, one coordinate column at a time (``box_columns``).
    Built with one sort per level: O(k log^2 k).
    """

    def __init__(self, points: np.ndarray, leaf: int = 8) -> None:
        k = points.shape[0]
        depth = 0
        while (k >> (depth + 1)) >= leaf:
            depth += 1
        perm = np.arange(k)
        for level in range(depth):
            nodes = 1 << level
            bounds = (np.arange(nodes + 1) * k) >> level
            held = points[perm]
            low = np.minimum.reduceat(held, bounds[:-1], axis=0)
            high = np.maximum.reduceat(held, bounds[:-1], axis=0)
            axis = np.argmax(high - low, axis=1)
            node = np.repeat(np.arange(nodes), np.diff(bounds))
            # sort within each node by its widest axis: one float argsort of node + the value
            # scaled into [0, 0.5) (several times faster than lexsort; a tie at the float
            # resolution only moves which of two equal points goes to which half)
            value = held[np.arange(k), axis[node]]
            low_value, high_value = float(value.min()), float(value.max())
            scale = 0.5 / (high_value - low_value) if high_value > low_value else 0.0
            perm = perm[np.argsort(node + (value - low_value) * scale)]
        self.depth = depth
        self.perm = perm
        held = points[perm]
        self.bounds: list[np.ndarray] = []
        self.box_columns: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
        for level in range(depth + 1):
            bounds = (np.arange((1 << level) + 1) * k) >> level
            self.bounds.append(bounds)
            low = np.minimum.reduceat(held, bounds[:-1], axis=0)
            high = np.maximum.reduceat(held, bounds[:-1], axis=0)
            self.box_columns.append(
                (
                    [np.ascontiguousarray(low[:, axis]) for axis in range(3)],
                    [np.ascontiguousarray(high[:, axis]) for axis in range(3)],
                )
            )

    def node_max(self, values: np.ndarray) -> list[np.ndarray]:
        """The largest of ``values`` (one per point) in every node, level by level."""
        held = values[self.perm]
        return [np.maximum.reduceat(held, bounds[:-1]) for bounds in self.bounds]

    def pairs_within(
        self,
        queries: np.ndarray,
        radius: np.ndarray,
        node_extra: list[np.ndarray],
        select: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every (query, point) pair whose great-circle distance may be below
        ``radius[query] + node_extra[level][node]`` for the leaf node holding the point.

        A superset: a node is opened when the distance from the query to its bounding box (a
        lower bound on the distance to any point inside; the chord to the box converted to
        km) is at most that radius. ``select(query_index, point_index)``, if given, returns a
        mask of the pairs to keep (applied chunk by chunk, which bounds the memory). The
        chunks of :data:`_QUERY_CHUNK` queries run on every core (numpy releases the GIL).
        Returns ``(query_index, point_index)``.
        """
        # one coordinate column at a time (gathering (k, 3) rows is several times slower)
        columns = [np.ascontiguousarray(queries[:, axis]) for axis in range(3)]
        bounds = self.bounds[self.depth]

        def chunk(start: int) -> tuple[np.ndarray, np.ndarray]:
            q = np.arange(start, min(start + _QUERY_CHUNK, queries.shape[0]))
            node = np.zeros(q.size, dtype=np.int64)
            for level in range(self.depth + 1):
                low, high = self.box_columns[level]
                square = np.zeros(q.size)
                for axis in range(3):
                    x = columns[axis][q]
                    gap = np.maximum(low[axis][node] - x, 0.0)
                    gap += np.maximum(x - high[axis][node], 0.0)
                    gap *= gap
                    square += gap
                bound = _chord_km(np.sqrt(square))
                # 1e-6 km of slack for the chord/haversine rounding difference
                keep = bound <= radius[q] + node_extra[level][node] + 1e-6
                q, node = q[keep], node[keep]
                if level < self.depth:
                    q = np.repeat(q, 2)
                    node = np.repeat(2 * node, 2)
                    node[1::2] += 1
            first, size = bounds[node], bounds[node + 1] - bounds[node]
            offset = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
            q, p = np.repeat(q, size), self.perm[np.repeat(first, size) + offset]
            if select is not None:
                keep = select(q, p)
                q, p = q[keep], p[keep]
            return q, p

        starts = range(0, queries.shape[0], _QUERY_CHUNK)
        if len(starts) > 1:
            with ThreadPoolExecutor(max_workers=_workers()) as pool:
                found = list(pool.map(chunk, starts))
        else:
            found = [chunk(start) for start in starts]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _violations(
    tree: _BoxTree,
    senders: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    cost: PairCost,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair with reduced cost ``d_ij - u_i - v_j < -_DUAL_TOL``, over all senders x
    receivers (``tree`` holds the receivers). Returns ``(rows, cols, reduced)``.

    ``d_ij < u_i + v_j`` needs ``d_ij < u_i + max v`` over the receiver's tree node: a ball query
    of radius ``u_i`` widened per node by its largest ``v``, then the exact test on what it finds.
    """

    def violated(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return cost(rows, cols) - u[rows] - v[cols] < -_DUAL_TOL

    rows, cols = tree.pairs_within(senders, u - _DUAL_TOL, tree.node_max(v), violated)
    return rows, cols, cost(rows, cols) - u[rows] - v[cols]


def _lower_bound(
    supply: np.ndarray,
    demand: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    bad_cols: np.ndarray,
    bad_reduced: np.ndarray,
    tol: float = _DUAL_TOL,
) -> float:
    """LP-duality lower bound on the optimum from potentials that may violate some pairs.

    ``v'_j = min(v_j, min over violating pairs (d_ij - u_i))`` repairs the violations, and every
    other pair has reduced cost ``>= -tol``, so ``(u - tol, v')`` is feasible for every pair
    and ``sum a (u - tol) + sum b v'`` bounds the optimum from below.
    """
    repaired = v.copy()
    np.minimum.at(repaired, bad_cols, v[bad_cols] + bad_reduced)
    return float(np.dot(supply, u - tol) + np.dot(demand, repaired))


class _DualCheck:
    """The check over all pairs, made incremental once potentials settle.

    A full check at potentials ``(u0, v0)`` proves ``d_ij - u0_i - v0_j >= -_DUAL_TOL`` for
    every pair except the violations it found (kept as ``pending``). For new potentials
    ``(u, v)`` and any constant ``c``, let ``du = u - u0 + c`` and ``dv = v - v0 - c``: a pair
    with ``du_i <= eta`` and ``dv_j <= eta`` has reduced cost ``>= -_DUAL_TOL - 2 eta`` now,
    so only the pending pairs, the senders whose ``du`` rose above ``eta`` (against every
    receiver) and the receivers whose ``dv`` did (against every sender) need pricing. Late
    rounds of the column generation move the potentials of a few hospitals only, which makes
    their check a small fraction of a full one. Exact: what it does not report has reduced cost
    ``>= -(_DUAL_TOL + 2 eta)``, the tolerance :meth:`__call__` returns for the lower bound.
    """

    def __init__(self, senders: np.ndarray, receivers: np.ndarray, cost: PairCost) -> None:
        self.senders, self.receivers, self.cost = senders, receivers, cost
        self.receiver_tree = _BoxTree(receivers)
        self.sender_tree: _BoxTree | None = None
        self.base: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(
        self, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``(rows, cols, reduced, tol)``: the pairs with reduced cost below ``-_DUAL_TOL``
        that this check found; every other pair has reduced cost ``>= -tol``."""
        if self.base is not None:
            found = self._since_base(u, v)
            if found is not None:
                return (*found, _DUAL_TOL + 2.0 * _SETTLED)
        rows, cols, reduced = _violations(self.receiver_tree, self.senders, u, v, self.cost)
        self.base = (u.copy(), v.copy(), rows, cols)
        return rows, cols, reduced, _DUAL_TOL

    def _since_base(
        self, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        assert self.base is not None
        base_u, base_v, pending_rows, pending_cols = self.base
        du, dv = u - base_u, v - base_v
        shift = 0.0
        best = np.count_nonzero(du > _SETTLED) + np.count_nonzero(dv > _SETTLED)
        median = float(np.median(np.concatenate([-du, dv])))
        if (
            np.count_nonzero(du + median > _SETTLED) + np.count_nonzero(dv - median > _SETTLED)
            < best
        ):
            shift = median
        rising_s = np.flatnonzero(du + shift > _SETTLED)
        rising_r = np.flatnonzero(dv - shift > _SETTLED)
        if rising_s.size + rising_r.size > _INCREMENTAL * (u.size + v.size):
            return None
        found_rows, found_cols = [pending_rows], [pending_cols]
        if rising_s.size:
            q, cols = self.receiver_tree.pairs_within(
                self.senders[rising_s], u[rising_s] - _DUAL_TOL, self.receiver_tree.node_max(v)
            )
            found_rows.append(rising_s[q])
            found_cols.append(cols)
        if rising_r.size:
            if self.sender_tree is None:
                self.sender_tree = _BoxTree(self.senders)
            q, rows = self.sender_tree.pairs_within(
                self.receivers[rising_r], v[rising_r] - _DUAL_TOL, self.sender_tree.node_max(u)
            )
            keep = du[rows] + shift <= _SETTLED  # the rising senders' pairs are found above
            found_rows.append(rows[keep])
            found_cols.append(rising_r[q[keep]])
        r = v.size
        keys = _sorted_unique(np.concatenate(found_rows) * r + np.concatenate(found_cols))
        rows, cols = keys // r, keys % r  # a pending pair may also be found by a query
        reduced = self.cost(rows, cols) - u[rows] - v[cols]
        bad = reduced < -_DUAL_TOL
        return rows[bad], cols[bad], reduced[bad]


def _tame(
    sizes: tuple[int, int],
    candidates: tuple[np.ndarray, np.ndarray, np.ndarray],
    support: tuple[np.ndarray, np.ndarray],
    u: np.ndarray,
    v: np.ndarray,
    reference: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal potentials of the restricted problem chosen close to ``reference``.

    The restricted optimum fixes ``u_i + v_j = d_ij`` only along its support, a forest; on
    each tree of the forest the potentials are fixed up to a constant ``c_k`` (``u + c_k``,
    ``v - c_k``), and any constants keeping ``d - u - v >= 0`` on the candidate pairs between
    trees are optimal too. POT picks arbitrary ones (trees joined through its artificial root can
    sit thousands of km off), which would make millions of pairs look violated. Here each
    ``c_k`` starts at the median of ``reference - f`` over its tree (``f = u`` on senders,
    ``-v`` on receivers; the reference is the coarser level's or the previous round's
    potential), then is lowered just enough to satisfy ``c_a - c_b <= d_ij - u_i - v_j`` on
    every candidate pair from tree ``a`` to tree ``b``: label correcting, which terminates
    because the restricted optimum admits such constants.
    """
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    s, r = sizes
    rows, cols, cost = candidates
    graph = coo_array(
        (np.ones(support[0].size), (support[0], s + support[1])), shape=(s + r, s + r)
    )
    count, label = connected_components(graph, directed=False)
    offset = reference - np.concatenate([u, -v])
    order = np.lexsort((offset, label))
    first = np.searchsorted(label[order], np.arange(count))
    shift = offset[order[first + np.bincount(label, minlength=count) // 2]]
    tail, head = label[:s][rows], label[s:][cols]
    cross = tail != head
    slack = cost[cross] - u[rows[cross]] - v[cols[cross]]
    key = tail[cross] * count + head[cross]
    order = np.lexsort((slack, key))
    key, slack = key[order], slack[order]
    distinct = np.r_[True, key[1:] != key[:-1]] if key.size else np.zeros(0, dtype=bool)
    key, slack = key[distinct], slack[distinct]  # the tightest pair per (tree, tree)
    tail, head = key // count, key % count
    if key.size:
        starts = np.r_[0, np.flatnonzero(tail[1:] != tail[:-1]) + 1]
        tails = tail[starts]
        for _ in range(10 * count + 10):
            bound = np.minimum.reduceat(shift[head] + slack, starts)
            lowered = bound < shift[tails] - 1e-12
            if not lowered.any():
                break
            shift[tails[lowered]] = bound[lowered]
    return u + shift[label[:s]], v - shift[label[s:]]


def _near_pairs(senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
    """Keys ``i * r + j`` of every sender's :data:`_NEAR` nearest receivers and every
    receiver's nearest senders (k-d trees on the unit sphere)."""
    from scipy.spatial import cKDTree

    s, r = senders.shape[0], receivers.shape[0]
    k_r, k_s = min(_NEAR, r), min(_NEAR, s)
    _, near_r = cKDTree(receivers).query(senders, k=k_r)
    _, near_s = cKDTree(senders).query(receivers, k=k_s)
    rows = np.concatenate([np.repeat(np.arange(s), k_r), np.ravel(near_s)])
    cols = np.concatenate([np.ravel(near_r), np.repeat(np.arange(r), k_s)])
    return _sorted_unique(rows.astype(np.int64) * r + cols.astype(np.int64))


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of int64 keys by one sort (numpy's hash-based unique is several times
    slower on the million-key candidate sets of a 100,000-hospital plan)."""
    keys = np.sort(keys)
    if keys.size:
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    return keys


def _lowest_per_group(group: np.ndarray, value: np.ndarray, keep: int) -> np.ndarray:
    """Mask of the ``keep`` smallest ``value`` entries of every ``group`` (ties by position)."""
    order = np.lexsort((value, group))
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1]
    rank = np.arange(group.size) - np.repeat(starts, np.diff(np.r_[starts, group.size]))
    mask = np.zeros(group.size, dtype=bool)
    mask[order[rank < keep]] = True
    return mask


class _Run:
    """What every level of one :func:`sparse_transport` call shares."""

    def __init__(self, progress: ProgressCallback | None, time_limit: float | None) -> None:
        self.started = time.perf_counter()
        self.progress = progress
        self.time_limit = time_limit
        self.levels = 0
        self.rounds = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(f"{message}, {self.elapsed():.1f} s")


def _coarsen(
    senders: np.ndarray, receivers: np.ndarray, supply: np.ndarray, demand: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Group senders and receivers into cells of about :data:`_CELL` points (k-d tree leaves
    over both together); each cell's senders become one coarse sender at their supply-weighted
    centre (on the sphere) with their total supply, likewise its receivers.

    Returns ``(coarse_senders, coarse_receivers, coarse_supply, coarse_demand, sender_cell,
    receiver_cell)``, the last two mapping every sender / receiver to its coarse node.
    """
    s = senders.shape[0]
    tree = _BoxTree(np.vstack([senders, receivers]), leaf=_CELL)
    bounds = tree.bounds[tree.depth]
    cell = np.empty(bounds[-1], dtype=np.int64)
    cell[tree.perm] = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    out: list[np.ndarray] = []
    mapping: list[np.ndarray] = []
    for points, mass, labels in ((senders, supply, cell[:s]), (receivers, demand, cell[s:])):
        used, index = np.unique(labels, return_inverse=True)
        total = np.bincount(index, weights=mass, minlength=used.size)
        centre = np.zeros((used.size, 3))
        np.add.at(centre, index, points * mass[:, None])
        length = np.linalg.norm(centre, axis=1)
        flat = length < 1e-9  # members all around the globe: any member will do
        centre[flat] = points[np.unique(index, return_index=True)[1][flat]]
        length[flat] = 1.0
        centre /= length[:, None]
        out += [centre, total]
        mapping.append(index)
    return out[0], out[2], out[1], out[3], mapping[0], mapping[1]


def _refine(
    coarse_rows: np.ndarray,
    coarse_cols: np.ndarray,
    sender_cell: np.ndarray,
    receiver_cell: np.ndarray,
    receivers: int,
) -> np.ndarray:
    """Candidate pairs of the finer level: every sender of coarse sender ``C`` with every
    receiver of coarse receiver ``D``, for each coarse pair ``(C, D)`` with flow. Feasible: the
    coarse flows split in proportion to the members' amounts give a plan on these pairs.
    Returns the pairs as keys ``i * receivers + j``.
    """
    s_order = np.argsort(sender_cell, kind="stable")
    s_count = np.bincount(sender_cell)
    s_start = np.cumsum(s_count) - s_count
    r_order = np.argsort(receiver_cell, kind="stable")
    r_count = np.bincount(receiver_cell)
    r_start = np.cumsum(r_count) - r_count
    many_s, many_r = s_count[coarse_rows], r_count[coarse_cols]
    block = many_s * many_r
    which = np.repeat(np.arange(coarse_rows.size), block)
    offset = np.arange(int(block.sum())) - np.repeat(np.cumsum(block) - block, block)
    fine_s = s_order[s_start[coarse_rows][which] + offset // many_r[which]]
    fine_r = r_order[r_start[coarse_cols][which] + offset % many_r[which]]
    return _sorted_unique(fine_s * receivers + fine_r)


def _merge_sorted(
    keys: np.ndarray, values: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``keys`` (with their ``values``) merged with sorted ``new_keys`` not among them;
    the costs of the pairs already held are kept, not recomputed."""
    at = np.searchsorted(keys, new_keys)
    return np.insert(keys, at, new_keys), np.insert(values, at, new_values)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """The 3 x 3 rotation by ``angle`` radians about the unit vector ``axis`` (Rodrigues)."""
    x, y, z = axis
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1.0 - math.cos(angle)) * (cross @ cross)


def _windows(points: np.ndarray, size: int, angle: float) -> np.ndarray:
    """A window label per point: the leaves (``size`` to ``2 size`` points) of a k-d tree over
    ``points`` turned by ``angle`` about their mean direction, so that windows of different
    angles straddle each other's borders."""
    centre = points.mean(axis=0)
    length = float(np.linalg.norm(centre))
    axis = centre / length if length > 1e-9 else np.array([0.0, 0.0, 1.0])
    tree = _BoxTree(points @ _rotation(axis, angle).T, leaf=size)
    bounds = tree.bounds[tree.depth]
    label = np.empty(points.shape[0], dtype=np.int64)
    label[tree.perm] = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    return label


def _window_sweep(
    senders: np.ndarray,
    receivers: np.ndarray,
    plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    label: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sweep of primal domain decomposition over the windows ``label`` (one per sender,
    then one per receiver): in each window, the flows between its own senders and receivers
    are replaced by an optimal transport of the same amounts over **all** their pairs (dense,
    by POT); flows that cross a window's border stay. Every window's plan keeps its row and
    column sums, so the plan stays feasible and its cost never rises.
    """
    from ot.lp.emd_wrap import emd_c

    rows, cols, flows = plan
    s = senders.shape[0]
    window = label[:s][rows]
    inside = window == label[s:][cols]
    kept = [(rows[~inside], cols[~inside], flows[~inside])]
    order = np.flatnonzero(inside)
    order = order[np.argsort(window[order], kind="stable")]
    held = window[order]
    starts = np.r_[0, np.flatnonzero(held[1:] != held[:-1]) + 1, held.size]
    if not held.size:
        starts = starts[:1]  # no flow inside any window

    def solve(entry: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from_, from_at = np.unique(rows[entry], return_inverse=True)
        to, to_at = np.unique(cols[entry], return_inverse=True)
        if from_.size <= 1 or to.size <= 1:
            return rows[entry], cols[entry], flows[entry]  # nothing to rearrange
        supply = np.bincount(from_at, weights=flows[entry])
        demand = np.bincount(to_at, weights=flows[entry])
        demand *= supply.sum() / demand.sum()  # float flows: equal totals for POT
        chord = np.sqrt(np.maximum(2.0 - 2.0 * (senders[from_] @ receivers[to].T), 0.0))
        moved, _, _, _, code = emd_c(supply, demand, _chord_km(chord), _EMD_MAX_ITER, 1)
        if code != 1:  # not optimal (float noise in the totals): keep what was there
            return rows[entry], cols[entry], flows[entry]
        at = np.nonzero(moved > 0)
        return from_[at[0]], to[at[1]], moved[at]

    entries = [order[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    # POT's dense solver releases the GIL: the windows are solved on every core
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        kept += pool.map(solve, entries)
    return (
        np.concatenate([k[0] for k in kept]),
        np.concatenate([k[1] for k in kept]),
        np.concatenate([k[2] for k in kept]),
    )


def _workers() -> int:
    """Threads for the window solves: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _improve_in_windows(
    senders: np.ndarray,
    receivers: np.ndarray,
    plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    cost: PairCost,
    run: _Run,
    depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:data:`_WINDOW_SWEEPS` sweeps of :func:`_window_sweep`, each over windows turned by a
    different angle. Returns the improved plan ``(rows, cols, flows)``."""
    points = np.vstack([senders, receivers])
    for sweep, size in enumerate(_WINDOW_SWEEPS):
        label = _windows(points, size, sweep * math.pi / (2 * len(_WINDOW_SWEEPS)))
        plan = _window_sweep(senders, receivers, plan, label)
        total = float(np.dot(cost(plan[0], plan[1]), plan[2]))
        run.say(
            f"transport plan: level {run.levels - depth} of {run.levels}, window sweep "
            f"{sweep + 1} of {len(_WINDOW_SWEEPS)}: {total:,.1f} km"
        )
    return plan


def _solve_level(
    senders: np.ndarray,
    receivers: np.ndarray,
    supply: np.ndarray,
    demand: np.ndarray,
    cost: PairCost,
    run: _Run,
    depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """One level of :func:`sparse_transport`: ``(rows, cols, flows, u, v, cost, lower)``."""
    s, r = supply.size, demand.size
    run.levels = max(run.levels, depth + 1)
    if s * r <= _DENSE_LEVEL_CELLS:
        rows, cols = np.repeat(np.arange(s), r), np.tile(np.arange(r), s)
        dense = cost(rows, cols).reshape(s, r)
        rows, cols, flows, u, v = dense_emd(dense, supply, demand)
        total = float(np.dot(dense[rows, cols], flows))
        reduced = dense - u[:, None] - v[None, :]
        lower = float(np.dot(supply, u) + np.dot(demand, v)) + min(
            0.0, float(reduced.min())
        ) * float(supply.sum())
        run.say(f"transport plan: coarsest level, {s:,} x {r:,} hospitals solved densely")
        return rows, cols, flows, u, v, total, lower

    coarse = _coarsen(senders, receivers, supply, demand)
    coarse_senders, coarse_receivers, coarse_supply, coarse_demand, sender_cell, receiver_cell = (
        coarse
    )

    coarse_cost = _pair_km(coarse_senders, coarse_receivers)
    coarse_rows, coarse_cols, _, coarse_u, coarse_v, _, _ = _solve_level(
        coarse_senders, coarse_receivers, coarse_supply, coarse_demand, coarse_cost, run, depth + 1
    )
    keys = _refine(coarse_rows, coarse_cols, sender_cell, receiver_cell, r)
    # the coarse potential at every hospital: where this level's potentials should lie
    reference = np.concatenate([coarse_u[sender_cell], -coarse_v[receiver_cell]])
    check = _DualCheck(senders, receivers, cost)
    pool = _near_pairs(senders, receivers)  # priced first, every round (partial pricing)
    pool_rows, pool_cols = pool // r, pool % r
    pool_cost = cost(pool_rows, pool_cols)
    finest = depth == 0
    rows, cols = keys // r, keys % r
    pair_cost = cost(rows, cols)
    for round_ in range(1, _MAX_ROUNDS + 1):
        warm = (reference[:s], -reference[s:])
        flow_rows, flow_cols, flows, u, v = _sparse_emd(supply, demand, rows, cols, pair_cost, warm)
        u, v = _tame((s, r), (rows, cols, pair_cost), (flow_rows, flow_cols), u, v, reference)
        if round_ == 1 and s + r >= _WINDOW_MIN_POINTS:
            # improve the plan window by window, then price with the potentials of its support
            flow_rows, flow_cols, flows = _improve_in_windows(
                senders, receivers, (flow_rows, flow_cols, flows), cost, run, depth
            )
            support = _sorted_unique(flow_rows * r + flow_cols)
            support_rows, support_cols = support // r, support % r
            support_cost = cost(support_rows, support_cols)
            round_1 = np.concatenate([u, -v])
            flow_rows, flow_cols, flows, u, v = _sparse_emd(
                supply, demand, support_rows, support_cols, support_cost, (u, v)
            )
            u, v = _tame(
                (s, r),
                (support_rows, support_cols, support_cost),
                (flow_rows, flow_cols),
                u,
                v,
                round_1,
            )
            new = support[~np.isin(support, keys, assume_unique=True)]
            keys, pair_cost = _merge_sorted(keys, pair_cost, new, cost(new // r, new % r))
            rows, cols = keys // r, keys % r
        total = float(np.dot(cost(flow_rows, flow_cols), flows))
        if finest:
            run.rounds = round_
        reference = np.concatenate([u, -v])
        near_reduced = pool_cost - u[pool_rows] - v[pool_cols]
        near_bad = near_reduced < -_DUAL_TOL
        if np.count_nonzero(near_bad) > _PARTIAL_PRICING * (s + r):
            # many violations among near pairs: add those, skip the check over all pairs
            bad_rows, bad_cols = pool_rows[near_bad], pool_cols[near_bad]
            bad_reduced = near_reduced[near_bad]
            lower = -math.inf
            status = "bound after the next full check"
        else:
            bad_rows, bad_cols, bad_reduced, tol = check(u, v)
            lower = _lower_bound(supply, demand, u, v, bad_cols, bad_reduced, tol)
            status = f"optimal within {max(0.0, total - lower):,.3g} km"
        run.say(
            f"transport plan: level {run.levels - depth} of {run.levels} "
            f"({s:,} x {r:,} hospitals), round {round_}: {total:,.1f} km, {status}, "
            f"{bad_rows.size:,} pairs to add"
        )
        out_of_time = finest and run.time_limit is not None and run.elapsed() > run.time_limit
        if bad_rows.size == 0 or (out_of_time and lower > -math.inf):
            return flow_rows, flow_cols, flows, u, v, total, lower
        add = _lowest_per_group(bad_rows, bad_reduced, _ADD_PER_NODE)
        add |= _lowest_per_group(bad_cols, bad_reduced, _ADD_PER_NODE)
        new = np.setdiff1d(_sorted_unique(bad_rows[add] * r + bad_cols[add]), keys, True)
        keys, pair_cost = _merge_sorted(keys, pair_cost, new, cost(new // r, new % r))
        rows, cols = keys // r, keys % r
    raise RuntimeError(  # pragma: no cover - a safety net, never reached in tests
        f"transfer plan: the sparse transport solver did not converge in {_MAX_ROUNDS} rounds"
    )


def sparse_transport(
    origin: np.ndarray,
    destination: np.ndarray,
    supply: np.ndarray,
    demand: np.ndarray,
    *,
    cost: PairCost | None = None,
    progress: ProgressCallback | None = None,
    time_limit: float | None = None,
) -> SparseTransportResult:
    """Exact minimum-distance transport without a dense cost matrix.

    Args:
        origin: the senders as (lat, lon) degrees, shape ``(s, 2)``.
        destination: the receivers, shape ``(r, 2)``.
        supply: what each sender gives, shape ``(s,)``, > 0.
        demand: what each receiver gets, shape ``(r,)``, > 0, same total.
        cost: ``cost(rows, cols)``, the km between senders ``rows`` and receivers ``cols``
            (shape ``(k,)`` each); default the great-circle distance on the sphere of radius
            :data:`EARTH_RADIUS_KM`. Must be the great-circle distance up to float rounding:
            the dual check prunes with it.
        progress: called with a status line after every restricted solve.
        time_limit: seconds; past it the finest level stops after its current round and the
            result carries the certified gap instead of being optimal. ``None``: run to the end.

    Algorithm (column generation on a coarse-to-fine hierarchy; ``docs/strategies.md``):

    1. **Coarsen**: k-d tree cells of about 4 hospitals; each cell's senders become one coarse
       sender (their total supply, at their centre), likewise its receivers; repeat until a
       level has at most 250,000 pairs, which POT solves densely.
    2. **Refine**: on the next finer level the candidate pairs are, for each coarse pair with
       flow, all its senders x all its receivers (always feasible). POT's network simplex
       solves the problem restricted to the candidates, warm-started from the coarser level's
       potentials (later rounds: the previous round's), which cuts its pivots several-fold.
       On levels of at least 40,000 senders and receivers that first plan is then improved
       window by window (:func:`_improve_in_windows`: exact dense solves on k-d tree windows
       of a few hundred hospitals, flows across window borders kept), and the improved plan's
       support joins the candidates: far fewer pivots for the rounds that follow.
    3. **Check the duals** over all pairs: the plan is optimal if no pair has a negative
       reduced cost ``d_ij - u_i - v_j``. The potentials are first chosen, among the optimal
       potentials of the restricted problem, close to the coarser level's (:func:`_tame`);
       the pairs with ``d_ij < u_i + v_j`` are found without a dense matrix by a ball query on
       a k-d tree of the receivers (:meth:`_BoxTree.pairs_within`); once few potentials move,
       only the hospitals whose potential rose are priced (:class:`_DualCheck`).
    4. **Widen** the candidates with the most violated pairs (4 per sender and per receiver) and
       solve again, until no pair is violated: then the plan is optimal over all pairs.

    Every round also yields the LP-duality lower bound :func:`_lower_bound`, reported as the
    certified gap. Returns a :class:`SparseTransportResult`.
    """
    senders, receivers = unit_vectors(origin), unit_vectors(destination)
    supply = np.asarray(supply, dtype=np.float64)
    demand = np.asarray(demand, dtype=np.float64)
    if cost is None:
        cost = _pair_km(senders, receivers)

    run = _Run(progress, time_limit)
    rows, cols, flows, _, _, total, lower = _solve_level(
        senders, receivers, supply, demand, cost, run, 0
    )
    return SparseTransportResult(rows, cols, flows, total, lower, run.rounds, run.levels)


# ---------------------------------------------------------------------- numpy transport simplex
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
