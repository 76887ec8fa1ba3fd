"""Integer mode: turn a continuous allocation into whole staff, optimally.

Every classical strategy first computes a continuous allocation ``y`` (paper 000 works with
fractional staff) and, in integer mode, rounds it to whole staff here. Rounding must keep the
total exact and every bound (minimum, capacity, and whatever bound the strategy imposed, such as a
target cap or the current staff of a sender), and, for strategies defined by an objective, it must
give the *integer optimum* of that objective, not merely a nearby integer point.

:func:`round_separable_convex` solves

    minimise   sum_i f_i(x_i)
    subject to sum_i x_i = total,  lower_i <= x_i <= upper_i,  x_i integer,

for convex ``f_i`` given through their marginal costs ``f_i(k + 1) - f_i(k)``.

Why it is optimal. Let ``d_i(k) = f_i(k + 1) - f_i(k)``; convexity means ``d_i`` is nondecreasing
in ``k``. A feasible integer ``x`` is optimal if and only if no single exchange (one unit taken
from hospital ``j`` and given to hospital ``i``) lowers the cost, i.e.

    max_j d_j(x_j - 1)  <=  min_i d_i(x_i)        (over j with x_j > lower_j, i with x_i < upper_i)

(the classical optimality condition of the separable convex resource-allocation problem, Gross
1956 / Ibaraki and Katoh 1988: exchange-local optima of separable convex functions on
``{sum x = total}`` with box bounds are global). The function therefore

1. starts from ``x = floor(y)`` clipped to the bounds (``y`` is the continuous optimum, so the
   start is usually inside an integer optimum; for the quadratic ``(x - t)^2`` this is proved:
   every unit below ``floor(y)`` costs at most ``2 nu - 1`` and every other unit more);
2. adds the ``total - sum(x)`` missing units (or removes surplus units) greedily, cheapest
   marginal cost first, in vectorised rounds: in one round every first unit that is no dearer
   than the cheapest *second* unit of any hospital is taken, which is exactly what the unit-by-unit
   greedy would take next, so the result equals the classical marginal-gain greedy;
3. verifies the exchange condition above and, should it fail (not for the quadratic started
   from its continuous optimum, by step 1; possible for an arbitrary convex ``f`` or an
   arbitrary ``y``), applies improving exchanges until it holds. Step 3 is what makes the result
   optimal whatever the start; steps 1 and 2 only make it fast.

Ties are broken towards the lower index, so results are deterministic. The cost is dominated by
a few vectorised passes and one sort of the candidates: O(n log n).

Largest-remainder rounding (:func:`round_largest_remainder`) is the special case
``f_i(x) = (x - y_i)^2`` (marginal cost ``2 (k - y_i) + 1``, which is ``1 - 2 frac(y_i)`` at
``k = floor(y_i)``), used for strategies that are mechanisms rather than optimisers
(taxation, hybrid, the shortfall spread).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

__all__ = [
    "MarginalCost",
    "round_separable_convex",
    "round_largest_remainder",
    "quadratic_marginal_cost",
    "snap_to_integers",
    "exact_sum",
    "noise_reach",
    "MAX_EXACT_STAFF",
]

#: ``marginal_cost(index, level)``: the cost ``f_i(level + 1) - f_i(level)`` of giving one more
#: unit to each hospital ``index[j]`` that holds ``level[j]``; both arrays have shape ``(k,)``.
MarginalCost = Callable[[np.ndarray, np.ndarray], np.ndarray]

_SNAP_TOLERANCE = 1e-12
#: Largest distance from an integer that :func:`snap_to_integers` treats as float noise.
_SNAP_MAX = 1e-3
_MAX_ROUNDS = 64

#: Largest staff figure (and total) integer mode handles exactly: 2^53, beyond which float64
#: cannot hold every whole number.
MAX_EXACT_STAFF = 2**53


def snap_to_integers(values: np.ndarray, tolerance: float = _SNAP_TOLERANCE) -> np.ndarray:
    """``values`` with entries within :func:`noise_reach` of an integer set to that integer.

    Floating-point water-filling leaves values such as ``4.999999999999`` where the exact answer
    is ``5``; snapping them first keeps ``floor`` from losing a unit (and a minimum) to rounding.
    The reach is ``min(tolerance * max(1, |v|), 1e-3)``: the relative tolerance (1e-12) is far
    above float noise (about 1e-16 relative per operation); the absolute cap (:data:`_SNAP_MAX`)
    keeps it far below a fraction of a person at any head count. Without the cap, values of
    10^12 staff would snap by up to one whole unit, and the rounded plan would no longer add up
    (issue 8, item 34).
    """
    values = np.array(values, dtype=np.float64)
    finite = np.isfinite(values)
    nearest = np.rint(values[finite])
    close = np.abs(values[finite] - nearest) <= noise_reach(nearest, tolerance)
    values[finite] = np.where(close, nearest, values[finite])
    return values


def noise_reach(values: np.ndarray, tolerance: float = _SNAP_TOLERANCE) -> np.ndarray:
    """How far from a whole number float noise may push each of ``values``:
    ``min(tolerance * max(1, |v|), 1e-3)``, shape of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return np.minimum(tolerance * np.maximum(1.0, np.abs(values)), _SNAP_MAX)


def exact_sum(values: np.ndarray) -> int:
    """The exact sum of whole numbers held as float64, as a Python ``int``.

    ``values`` must be finite whole numbers of magnitude at most :data:`MAX_EXACT_STAFF`
    (2^53, the range where float64 holds every integer); they are summed as int64, exactly
    (float sums round once totals pass 2^53), or as Python ints where int64 could overflow.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return 0
    if float(np.abs(values).max()) * values.size < 2.0**62:  # no int64 overflow possible
        return int(values.astype(np.int64).sum(dtype=np.int64))
    return sum(int(v) for v in values.tolist())


def quadratic_marginal_cost(centre: np.ndarray) -> MarginalCost:
    """Marginal cost of ``f_i(x) = (x - centre_i)^2``: ``2 (k - centre_i) + 1``."""
    centre = np.asarray(centre, dtype=np.float64)

    def cost(index: np.ndarray, level: np.ndarray) -> np.ndarray:
        return 2.0 * (level - centre[index]) + 1.0

    return cost


def round_largest_remainder(
    values: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float
) -> np.ndarray:
    """Round ``values`` to integers with ``sum == total`` and ``lower <= x <= upper``.

    Largest remainder: every entry gets ``floor(v)``, and the missing units go to the largest
    fractional parts (ties: lower index first). It is the integer minimiser of
    ``sum (x - v)^2``, computed by :func:`round_separable_convex`; when ``total`` lies between
    ``sum(floor(v))`` and ``sum(ceil(v))`` every entry ends at ``floor(v)`` or ``ceil(v)``, so
    every integral bound that ``v`` respects is kept.

    Args:
        values: the continuous allocation, shape ``(n,)``.
        lower, upper: integral bounds, shape ``(n,)`` (``upper`` may hold ``inf``).
        total: the integral total to reach.

    Returns:
        Integral float64 array, shape ``(n,)``.
    """
    values = snap_to_integers(values)
    return round_separable_convex(values, lower, upper, total, quadratic_marginal_cost(values))


def round_separable_convex(
    y_cont: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    total: float,
    marginal_cost: MarginalCost,
) -> np.ndarray:
    """The integer minimiser of a separable convex objective with a fixed total and box bounds.

    Solves ``min sum_i f_i(x_i)`` s.t. ``sum x = total``, ``lower <= x <= upper``, ``x`` integer,
    where ``marginal_cost(index, level) = f_i(level + 1) - f_i(level)`` (nondecreasing in
    ``level``, i.e. ``f_i`` convex). ``y_cont`` (the continuous optimum) only sets the starting
    point ``floor(y_cont)``; the result is optimal for any start (see the module docstring for
    the algorithm and the proof). Ties go to the lower index.

    Args:
        y_cont: continuous allocation, shape ``(n,)``.
        lower: integral lower bounds, shape ``(n,)``.
        upper: integral upper bounds, shape ``(n,)``; ``inf`` for none.
        total: integral total, ``sum(lower) <= total <= sum(upper)``; an ``int`` is taken
            exactly (a float only up to 2^53).
        marginal_cost: see above; it is only ever called at levels ``lower <= k < upper``.

    Returns:
        Integral float64 array, shape ``(n,)``, summing exactly to ``total``.

    Raises:
        ValueError: naming the argument when the bounds or the total are not integral or the
            total is out of reach.
    """
    y_cont = np.asarray(y_cont, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    n = y_cont.shape[0]
    if lower.shape != (n,) or upper.shape != (n,):
        raise ValueError(
            f"lower/upper: expected shape ({n},) like y_cont, got {lower.shape} and {upper.shape}"
        )
    if not np.all(np.isfinite(y_cont)):
        raise ValueError("y_cont: every value must be finite")
    if not np.all(np.isfinite(lower)) or np.any(np.mod(lower, 1.0) != 0.0):
        raise ValueError("lower: bounds must be finite whole numbers")
    finite_upper = np.isfinite(upper)
    if np.any(np.mod(upper[finite_upper], 1.0) != 0.0) or np.any(np.isneginf(upper)):
        raise ValueError("upper: bounds must be whole numbers or +inf")
    if np.any(lower > upper):
        i = int(np.flatnonzero(lower > upper)[0])
        raise ValueError(f"lower/upper: lower {lower[i]:g} exceeds upper {upper[i]:g} at {i}")
    if isinstance(total, int | np.integer) and not isinstance(total, bool):
        want = int(total)
    else:
        total_value = float(total)
        if not np.isfinite(total_value) or total_value != np.floor(total_value):
            raise ValueError(f"total: must be a whole number, got {total!r}")
        want = int(total_value)
    big = max(float(np.abs(lower).max(initial=0.0)), float(upper[finite_upper].max(initial=0.0)))
    if big > MAX_EXACT_STAFF:
        raise ValueError(
            f"lower/upper: whole-number rounding is exact up to 2^53 = {MAX_EXACT_STAFF:,} staff "
            f"per hospital (float64 holds every whole number only that far); got {big:.6g}"
        )
    # every sum below is exact: whole numbers summed as integers, never as float64
    low_sum = exact_sum(lower)
    if want < low_sum or (finite_upper.all() and want > exact_sum(upper)):
        high = f"{exact_sum(upper)}" if finite_upper.all() else "inf"
        raise ValueError(f"total: {want} is outside [sum(lower), sum(upper)] = [{low_sum}, {high}]")
    if n == 0:
        return np.zeros(0)
    x = np.clip(np.floor(snap_to_integers(y_cont)), lower, upper)
    missing = want - exact_sum(x)
    if missing > 0:
        _add_units(x, lower, upper, missing, marginal_cost)
    elif missing < 0:
        _remove_units(x, lower, upper, -missing, marginal_cost)
    _exchange_until_optimal(x, lower, upper, marginal_cost)
    if float(x.max()) > MAX_EXACT_STAFF:
        raise ValueError(
            f"total: {want} puts more than 2^53 = {MAX_EXACT_STAFF:,} staff on one hospital, "
            "beyond float64's whole numbers"
        )
    return x


def _costs_at(
    marginal_cost: MarginalCost, index: np.ndarray, level: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Marginal costs at ``level`` where ``valid``, +inf elsewhere (never evaluated there)."""
    out = np.full(index.shape[0], np.inf)
    if valid.any():
        out[valid] = marginal_cost(index[valid], level[valid])
    return out


def _add_units(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, missing: int, marginal_cost: MarginalCost
) -> None:
    """Give ``missing`` units, cheapest first (in place): the marginal-gain greedy, batched."""
    for _ in range(_MAX_ROUNDS):
        if missing == 0:
            return
        cand = np.flatnonzero(x <= upper - 1.0)
        level = x[cand]
        first = marginal_cost(cand, level)
        second = _costs_at(marginal_cost, cand, level + 1.0, level + 1.0 <= upper[cand] - 1.0)
        cheapest_second = second.min()
        # every first unit no dearer than any hospital's second unit is next in greedy order
        take = first <= cheapest_second
        chosen, chosen_cost = cand[take], first[take]
        if chosen.shape[0] >= missing:
            order = np.argsort(chosen_cost, kind="stable")[:missing]
            x[chosen[order]] += 1.0
            return
        x[chosen] += 1.0
        missing -= chosen.shape[0]
    _add_units_heap(x, upper, missing, marginal_cost)


def _add_units_heap(
    x: np.ndarray, upper: np.ndarray, missing: int, marginal_cost: MarginalCost
) -> None:
    cand = np.flatnonzero(x <= upper - 1.0)
    costs = marginal_cost(cand, x[cand])
    heap = [(float(c), int(i)) for c, i in zip(costs, cand, strict=True)]
    heapq.heapify(heap)
    for _ in range(missing):
        _, i = heapq.heappop(heap)
        x[i] += 1.0
        if x[i] <= upper[i] - 1.0:
            idx = np.array([i])
            heapq.heappush(heap, (float(marginal_cost(idx, x[idx])[0]), i))


def _remove_units(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, surplus: int, marginal_cost: MarginalCost
) -> None:
    """Take ``surplus`` units back, dearest last unit first (in place)."""
    for _ in range(_MAX_ROUNDS):
        if surplus == 0:
            return
        cand = np.flatnonzero(x >= lower + 1.0)
        level = x[cand]
        top = marginal_cost(cand, level - 1.0)
        valid = level - 2.0 >= lower[cand]
        below = np.full(cand.shape[0], -np.inf)
        if valid.any():
            below[valid] = marginal_cost(cand[valid], level[valid] - 2.0)
        dearest_below = below.max()
        take = top >= dearest_below
        chosen, chosen_cost = cand[take], top[take]
        if chosen.shape[0] >= surplus:
            order = np.argsort(-chosen_cost, kind="stable")[:surplus]
            x[chosen[order]] -= 1.0
            return
        x[chosen] -= 1.0
        surplus -= chosen.shape[0]
    for _ in range(surplus):  # pragma: no cover - pathological marginal costs only
        cand = np.flatnonzero(x >= lower + 1.0)
        top = marginal_cost(cand, x[cand] - 1.0)
        x[cand[int(np.argmax(top))]] -= 1.0


def _exchange_until_optimal(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, marginal_cost: MarginalCost
) -> None:
    """Apply improving one-unit exchanges until ``max_j d_j(x_j - 1) <= min_i d_i(x_i)``."""
    index = np.arange(x.shape[0])
    for _ in range(10 * _MAX_ROUNDS):
        add = _costs_at(marginal_cost, index, x, x <= upper - 1.0)
        removable = x >= lower + 1.0
        remove = _costs_at(marginal_cost, index, x - 1.0, removable)
        remove[~removable] = -np.inf  # cost of the last unit held; -inf where none can go
        best_add, best_remove = add.min(), remove.max()
        slack = 1e-12 * max(1.0, abs(best_add), abs(best_remove))
        if not best_add < best_remove - slack:
            return
        add_order = np.argsort(add, kind="stable")
        remove_order = np.argsort(-remove, kind="stable")
        # gain of the k-th cheapest addition paired with the k-th dearest removal: nonincreasing
        gain = remove[remove_order] - add[add_order]
        pairs = max(int(np.count_nonzero(gain > slack)), 1)
        x[add_order[:pairs]] += 1.0
        x[remove_order[:pairs]] -= 1.0
