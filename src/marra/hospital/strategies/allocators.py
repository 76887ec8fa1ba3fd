"""Classical allocators: QP, Nash welfare, progressive taxation, hybrid, greedy and hold.

Paper 000 (section 2 and section 4) takes its four baselines -- QP, progressive taxation, Nash
welfare optimisation (NWO) and a hybrid -- from an earlier paper of its authors whose text is not
public. The definitions below are therefore marra's; ``docs/strategies.md`` states them with
formulas. Notation (paper 000 section 2): current staff ``c``, minimum ``m``, target ``t``
(``t >= m``), optional capacity ``u`` (``inf`` when absent), total ``C = sum c``; the new
allocation is ``y``, shape ``(n,)``.

Every strategy is called the same way (:func:`allocate`, or :func:`get_strategy` for an object)
and guarantees:

- ``sum y == C`` (exact in integer mode; exact up to float rounding in continuous mode);
- ``y <= u`` and ``y >= 0``; ``y >= m`` whenever the network is feasible and the transfer budget
  suffices to lift every hospital to its minimum;
- with a transfer budget ``B``: ``sum max(0, y - c) <= B`` (at most ``B`` staff change
  hospital), ``B = 0`` gives ``y = c``, and no move pushes a hospital below its minimum
  (senders give only what they hold above their minimum);
- minima first under a budget: a budget too small to lift everyone to the minimum is spent
  entirely on the deficits below minimum (the total shortfall ``sum max(0, m - y)`` is the least
  any plan within the budget can reach); only a remaining budget serves the targets;
- infeasible networks (``sum m > C``) raise :class:`~marra.hospital.network.InfeasibleError`
  stating the
  shortfall, unless ``shortfall=True``: then without a budget every re-planning strategy returns
  the *shortfall spread* ``y_i = m_i C / sum(m)`` (every hospital short of its minimum by the same
  fraction, nothing left for targets), and with a budget the budget moves what hospitals hold
  above their minimum to those below it (minima first, as above).

Water-filling. QP and NWO are separable concave/convex programmes with one sum constraint and
box bounds, solved exactly by :func:`water_fill`: their optimality conditions give
``y_i = clip(a_i + s_i * level, lower_i, upper_i)`` with one scalar ``level`` fixed by
``sum y = total``; the sum is piecewise linear and nondecreasing in ``level`` with breakpoints
``(lower_i - a_i)/s_i`` and ``(upper_i - a_i)/s_i``, so sorting the breakpoints and a binary
search over them brackets the level, which one linear equation then gives: O(n log n), no
generic solver.

Budgeted optimum (QP and NWO). With a budget the problem is

    minimise sum_i f_i(y_i)  s.t.  sum y = C,  lower <= y <= upper,  sum max(0, y - c) <= B,

``f_i`` convex (QP: ``(y - t)^2``; NWO: ``-w log(y - m + 1)``), ``lower = m`` once the budget
covers the deficits. Write ``y = c + r - s`` with ``r, s >= 0``, ``sum r = sum s <= B``.
Stationarity with a multiplier ``nu_s`` for conservation and ``beta >= 0`` for the budget gives:
a receiver (``r_i > 0``) has ``f_i'(y_i) = nu_r := nu_s - beta``, a sender (``s_i > 0``) has
``f_i'(y_i) = nu_s``, and a hospital that keeps its staff has ``nu_r <= f_i'(c_i) <= nu_s``
(up to the bounds). Hence the two-threshold structure

    y_i = clip(median(g_i(nu_r), c_i, g_i(nu_s)), lower_i, upper_i),   g_i = (f_i')^{-1},

with ``nu_r <= nu_s``. If the unbudgeted optimum moves ``V0 <= B`` staff it is the answer
(``beta = 0``). Otherwise the budget binds (``beta > 0``, complementary slackness): receivers get
exactly ``B`` and senders give exactly ``B``, and the two thresholds decouple into two independent
water-fillings, ``y^R = clip(g(nu_r), max(lower, c), upper)`` with ``sum y^R = C + B`` and
``y^S = clip(g(nu_s), min(lower, c), c)`` with ``sum y^S = C - B``; ``y = y^R + y^S - c``. Both
sums are monotone in their threshold, and since the unbudgeted level ``nu0`` moves ``V0 > B``,
``nu_r <= nu0 <= nu_s``: nobody both sends and receives. The conditions above are the KKT
conditions of a convex programme, so this ``y`` is optimal. In integer mode the same argument
holds for the separable relaxation ``f_i(c + r_i) + f_i(c - s_i) - f_i(c)`` (which equals
``f_i(y_i)`` when ``r_i s_i = 0``): its value ``phi(V)`` at volume ``V`` is the sum of two
integer resource-allocation optima, convex in ``V``, so the integer optimum moves exactly ``B``
when the unbudgeted integer optimum moves more, and each side is rounded optimally by
:func:`~marra.hospital.strategies.integer.round_separable_convex`.

Minima first. When the budget cannot lift every hospital to its minimum (``B < D``,
``D = sum max(0, m - c)``), every unit of budget must go to a hospital below its minimum and come
from one above its minimum, so the plan splits into two independent groups: the deficit
hospitals with ``c <= y <= m`` and ``sum = sum c + B``, and the others with ``m <= y <= c`` and
``sum = sum c - B``. QP then minimises its own objective in each group (so QP is the exact
lexicographic optimum: least shortfall, then least target deviation); NWO's logarithm is
undefined below ``m - 1``, so NWO raises the lowest coverage ``y/m`` first among the deficit
hospitals (``y = clip(k m, c, m)``, the minimiser of ``sum y^2 / m``) and maximises Nash welfare
among the donors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from marra.hospital.network import HospitalNetwork, InfeasibleError, NetworkError
from marra.hospital.strategies.integer import (
    MAX_EXACT_STAFF,
    MarginalCost,
    exact_sum,
    noise_reach,
    quadratic_marginal_cost,
    round_largest_remainder,
    round_separable_convex,
)

__all__ = [
    "STRATEGIES",
    "WEIGHTS",
    "DEFAULT_BRACKETS",
    "StrategyOptionError",
    "Allocator",
    "QPAllocator",
    "NashWelfareAllocator",
    "TaxationAllocator",
    "HybridAllocator",
    "GreedyAllocator",
    "HoldAllocator",
    "allocate",
    "get_strategy",
    "water_fill",
    "progressive_tax",
    "shortfall_spread",
]

#: The classical strategies, in the order the CLI lists them.
STRATEGIES = ("qp", "nwo", "taxation", "hybrid", "greedy", "hold")
#: Nash-welfare weights: ``"none"`` (w = 1, paper 000's utility) or ``"target"`` (w = t - m + 1).
WEIGHTS = ("none", "target")
#: Progressive tax brackets: (upper edge of the relative surplus s/t, marginal rate).
DEFAULT_BRACKETS: tuple[tuple[float, float], ...] = (
    (0.10, 0.10),
    (0.25, 0.25),
    (0.50, 0.40),
    (math.inf, 0.60),
)


class StrategyOptionError(TypeError, ValueError):
    """An option a strategy does not accept, or an invalid option value. It is both a
    ``TypeError`` (like an unexpected keyword argument) and a ``ValueError`` (marra's rule for
    bad input), so either ``except`` catches it."""


# ---------------------------------------------------------------------- the problem
@dataclass(frozen=True)
class _Problem:
    """One call's validated inputs, shape ``(n,)`` arrays (float64, writable copies)."""

    current: np.ndarray
    minimum: np.ndarray
    target: np.ndarray
    upper: np.ndarray
    total: float
    budget: float | None  # None: re-plan from scratch; floored in integer mode
    integer: bool
    infeasible: bool  # sum(minimum) > total (only possible with shortfall=True)

    @property
    def n(self) -> int:
        return int(self.current.shape[0])

    @property
    def budget_or_inf(self) -> float:
        return math.inf if self.budget is None else self.budget


def _check_budget(transfer_budget: Any, integer: bool) -> float | None:
    if transfer_budget is None:
        return None
    if isinstance(transfer_budget, bool) or not isinstance(
        transfer_budget, int | float | np.integer | np.floating
    ):
        raise ValueError(
            f"transfer_budget: must be a non-negative number or None, got {transfer_budget!r}"
        )
    budget = float(transfer_budget)
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(
            f"transfer_budget: must be a finite non-negative number (or None for no budget), "
            f"got {transfer_budget!r}"
        )
    return float(math.floor(budget)) if integer else budget


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name}: must be True or False, got {value!r}")
    return bool(value)


def _check_exact_range(network: HospitalNetwork) -> None:
    """Integer mode is exact while every figure and the total fit float64's whole numbers."""
    largest = max(
        float(np.max(network.current, initial=0.0)),
        float(np.max(network.minimum, initial=0.0)),
        float(np.max(network.target, initial=0.0)),
    )
    total = exact_sum(network.current)
    if max(largest, total) > MAX_EXACT_STAFF:
        raise NetworkError(
            f"current: whole-staff mode is exact up to 2^53 = {MAX_EXACT_STAFF:,} staff in all "
            f"(float64 holds every whole number only that far), but the network has "
            f"{total:,} staff (largest figure {largest:.6g}); use integer=False"
        )


def _prepare(
    network: HospitalNetwork, transfer_budget: Any, integer: Any, shortfall: Any
) -> _Problem:
    if not isinstance(network, HospitalNetwork):
        raise TypeError(f"network: expected a HospitalNetwork, got {type(network).__name__}")
    integer = _check_flag(integer, "integer")
    shortfall = _check_flag(shortfall, "shortfall")
    budget = _check_budget(transfer_budget, integer)
    if integer:
        network.check_integral()
        _check_exact_range(network)
    infeasible = False
    try:
        network.check_feasible()
    except InfeasibleError:
        if not shortfall:
            raise
        infeasible = True
    return _Problem(
        current=np.array(network.current, dtype=np.float64),
        minimum=np.array(network.minimum, dtype=np.float64),
        target=np.array(network.target, dtype=np.float64),
        upper=np.array(network.upper, dtype=np.float64),
        total=network.total,
        budget=budget,
        integer=integer,
        infeasible=infeasible,
    )


# ---------------------------------------------------------------------- water-filling
def _fix_sum(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float) -> np.ndarray:
    """Move the float residue ``total - sum(y)`` onto entries with room (in place), so the
    sum is exact up to float rounding while every bound is kept."""
    for _ in range(4):
        residue = total - y.sum()
        if residue == 0.0:
            break
        room = upper - y if residue > 0 else y - lower
        i = int(np.argmax(room))
        if not room[i] > 0:
            break
        if room[i] >= abs(residue):
            y[i] += residue
        else:
            order = np.argsort(-room, kind="stable")
            sorted_room = room[order]
            before = np.cumsum(sorted_room) - sorted_room
            amount = np.clip(abs(residue) - before, 0.0, sorted_room)
            y[order] += math.copysign(1.0, residue) * amount
        np.clip(y, lower, upper, out=y)
    return y


def _water_fill(
    base: np.ndarray, slope: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float
) -> tuple[np.ndarray, float]:
    """:func:`water_fill` returning also the level (``-inf``/``inf`` when all sit at a bound)."""
    n = base.shape[0]
    if n == 0:
        return np.zeros(0), 0.0
    if total <= lower.sum():
        return lower.copy(), -math.inf
    if total >= upper.sum():
        return upper.copy(), math.inf
    free = upper > lower
    low_break = np.full(n, math.inf)
    high_break = np.full(n, -math.inf)
    low_break[free] = (lower[free] - base[free]) / slope[free]
    high_break[free] = (upper[free] - base[free]) / slope[free]
    points = np.sort(np.concatenate([low_break[free], high_break[free & np.isfinite(high_break)]]))

    def level_sum(level: float) -> float:
        return float(np.clip(base + slope * level, lower, upper).sum())

    # binary search for the last breakpoint whose sum does not exceed the total
    last = points.shape[0] - 1
    if level_sum(points[last]) <= total:
        k = last
    else:
        k, k_high = 0, last  # sum at points[0] is sum(lower) <= total
        while k_high - k > 1:
            mid = (k + k_high) // 2
            if level_sum(points[mid]) <= total:
                k = mid
            else:
                k_high = mid
    start = float(points[k])
    stop = math.inf if k == last else float(points[k + 1])
    active = free & (low_break <= start) & (high_break >= stop)
    slope_sum = float(slope[active].sum())
    level = start
    if slope_sum > 0:
        level = min(start + (total - level_sum(start)) / slope_sum, stop)
    y = np.clip(base + slope * level, lower, upper)
    return _fix_sum(y, lower, upper, total), level


def water_fill(
    base: np.ndarray,
    slope: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    total: float,
) -> np.ndarray:
    """Solve ``sum_i clip(base_i + slope_i * level, lower_i, upper_i) = total`` for ``level``.

    Returns ``y = clip(base + slope * level, lower, upper)``, shape ``(n,)``, with
    ``sum(y) == total`` up to float rounding. This is the optimum of every separable problem
    whose optimality condition reads ``y_i = clip(g_i(level), lower_i, upper_i)`` with ``g_i``
    affine: QP (``base = t``, ``slope = 1``) and NWO (``base = m - 1``, ``slope = w``,
    ``level = 1 / lambda``). The sum is piecewise linear and nondecreasing in ``level`` with
    breakpoints ``(lower - base)/slope`` and ``(upper - base)/slope``: they are sorted, a binary
    search finds the two around the solution, and one linear equation gives the level --
    O(n log n).

    Args:
        base, slope: shape ``(n,)``; ``slope > 0``.
        lower, upper: bounds, shape ``(n,)``; ``upper`` may hold ``inf``.
        total: ``sum(lower) <= total <= sum(upper)`` (outside, the nearest bound is returned).
    """
    base, slope, lower, upper = (
        np.asarray(a, dtype=np.float64) for a in (base, slope, lower, upper)
    )
    if not (base.shape == slope.shape == lower.shape == upper.shape) or base.ndim != 1:
        raise ValueError("base/slope/lower/upper: expected 1-D arrays of one shape")
    if np.any(~(slope > 0)) or not np.all(np.isfinite(slope)):
        raise ValueError("slope: every slope must be finite and > 0")
    if np.any(lower > upper):
        raise ValueError("lower/upper: a lower bound exceeds its upper bound")
    return _water_fill(base, slope, lower, upper, float(total))[0]


# ---------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class _Objective:
    """A separable convex objective ``sum f_i(y_i)`` to minimise, with ``f_i'(y) = level``
    solved by ``y = base_i + slope_i * level`` and integer marginal costs ``marginal``."""

    base: np.ndarray
    slope: np.ndarray
    marginal: MarginalCost


def _qp_objective(target: np.ndarray) -> _Objective:
    """``f_i = (y - t_i)^2``: ``y = t + level``; marginal ``2 (k - t) + 1``."""
    return _Objective(target, np.ones_like(target), quadratic_marginal_cost(target))


def _nwo_objective(minimum: np.ndarray, weight: np.ndarray) -> _Objective:
    """``f_i = -w_i log(y - m_i + 1)`` (paper 000 section 5's utility, weighted):
    ``w / (y - m + 1) = lambda`` gives ``y = m - 1 + w / lambda``; marginal
    ``-w log(1 + 1 / (k - m + 1))`` (only evaluated at ``k >= m``)."""

    def marginal(index: np.ndarray, level: np.ndarray) -> np.ndarray:
        return -weight[index] * np.log1p(1.0 / (level - minimum[index] + 1.0))

    return _Objective(minimum - 1.0, weight, marginal)


def _coverage_objective(minimum: np.ndarray) -> _Objective:
    """``f_i = y^2 / m_i`` (used only where ``m_i > 0``): the minimiser equalises the coverage
    ``y / m`` (``y = level * m``); marginal ``(2k + 1) / m``."""

    def marginal(index: np.ndarray, level: np.ndarray) -> np.ndarray:
        return (2.0 * level + 1.0) / minimum[index]

    return _Objective(np.zeros_like(minimum), minimum, marginal)


def _solve_group(
    objective: _Objective,
    index: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    total: float | int,
    integer: bool,
) -> np.ndarray:
    """Optimum of ``objective`` over hospitals ``index`` with bounds and a total, shape
    ``(len(index),)``; integer mode rounds it optimally."""
    y = _water_fill(objective.base[index], objective.slope[index], lower, upper, float(total))[0]
    if integer:
        total = round(total)  # an exact int: callers pass integer totals in integer mode

        def marginal(local: np.ndarray, level: np.ndarray) -> np.ndarray:
            return objective.marginal(index[local], level)

        y = round_separable_convex(y, lower, upper, total, marginal)
    return y


def _combine(current: np.ndarray, receive: np.ndarray, send: np.ndarray) -> np.ndarray:
    """``y = receive + send - current``, exactly ``receive`` / ``send`` where only one moves."""
    gain, loss = receive > current, send < current
    y = current.copy()
    y[gain] = receive[gain]
    y[loss] = send[loss]
    both = gain & loss
    y[both] = receive[both] + send[both] - current[both]
    return y


def _volume(y: np.ndarray, current: np.ndarray) -> float:
    """Staff that change hospital: ``sum max(0, y - c)``."""
    return float(np.maximum(y - current, 0.0).sum())


def _minima_first(
    problem: _Problem, deficit_objective: _Objective, donor_objective: _Objective, volume: float
) -> np.ndarray:
    """Move ``volume`` from hospitals above their minimum to those below it: the deficit group
    ``c <= y <= m`` gains ``volume``, the donors ``m <= y <= c`` give it, each group at its
    objective's optimum."""
    c, m, integer = problem.current, problem.minimum, problem.integer
    y = c.copy()
    deficit = np.flatnonzero(c < m)
    donors = np.flatnonzero(c >= m)
    if integer:  # exact integer totals
        moved: float | int = int(volume)
        deficit_held: float | int = exact_sum(c[deficit])
        donor_held: float | int = exact_sum(c[donors])
    else:
        moved, deficit_held, donor_held = volume, c[deficit].sum(), c[donors].sum()
    if deficit.size:
        y[deficit] = _solve_group(
            deficit_objective, deficit, c[deficit], m[deficit], deficit_held + moved, integer
        )
    if donors.size:
        y[donors] = _solve_group(
            donor_objective, donors, m[donors], c[donors], donor_held - moved, integer
        )
    return y


def _optimise(
    problem: _Problem, objective: _Objective, deficit_objective: _Objective
) -> np.ndarray:
    """The (budgeted, minima-first) optimum of a separable convex objective; see the module
    docstring for the structure and its proof."""
    c, m, u, total, integer = (
        problem.current,
        problem.minimum,
        problem.upper,
        problem.total,
        problem.integer,
    )
    everyone = np.arange(problem.n)
    if integer:
        total = exact_sum(c)  # an exact int (float sums round beyond 2^53)
    if problem.budget is None:
        return _solve_group(objective, everyone, m, u, total, integer)
    budget = problem.budget
    deficit_total = float(np.maximum(m - c, 0.0).sum())
    surplus_total = float(np.maximum(c - m, 0.0).sum())
    if problem.infeasible or budget < deficit_total:
        volume = min(budget, deficit_total, surplus_total)
        return _minima_first(problem, deficit_objective, objective, volume)
    free = _solve_group(objective, everyone, m, u, total, integer)
    slack = 0.0 if integer else 1e-12 * max(1.0, total)
    if _volume(free, c) <= budget + slack:
        return free
    moved = int(budget) if integer else budget
    receive = _solve_group(objective, everyone, np.maximum(m, c), u, total + moved, integer)
    send = _solve_group(objective, everyone, np.minimum(m, c), c, total - moved, integer)
    return _combine(c, receive, send)


# ---------------------------------------------------------------------- shortfall spread
def shortfall_spread(network: HospitalNetwork, *, integer: bool = True) -> np.ndarray:
    """The plan for an infeasible network without a budget: ``y_i = m_i * C / sum(m)``.

    Every hospital is short of its minimum by the same fraction ``1 - C / sum(m)`` and nothing
    is left for targets; capacities hold automatically (``y_i < m_i <= u_i``). Integer mode
    rounds by largest remainder, keeping ``0 <= y_i <= m_i`` and the total.
    """
    problem = _prepare(network, None, integer, True)
    return _shortfall_spread(problem)


def _shortfall_spread(problem: _Problem) -> np.ndarray:
    m, total = problem.minimum, problem.total
    required = float(m.sum())
    if required <= total:  # feasible: nothing to spread
        return problem.current.copy()
    y = m * (total / required)
    zeros = np.zeros_like(m)
    if problem.integer:
        return round_largest_remainder(y, zeros, m, total)
    return _fix_sum(y, zeros, m, total)


# ---------------------------------------------------------------------- taxation
def _check_brackets(brackets: Any) -> tuple[tuple[float, float], ...]:
    try:
        pairs = [(float(edge), float(rate)) for edge, rate in brackets]
    except (TypeError, ValueError):
        raise StrategyOptionError(
            "brackets: expected a sequence of (upper edge of s/t, marginal rate) pairs, "
            f"got {brackets!r}"
        ) from None
    if not pairs:
        raise StrategyOptionError("brackets: at least one (edge, rate) bracket is required")
    previous = 0.0
    for k, (edge, rate) in enumerate(pairs):
        if math.isnan(edge) or edge <= previous:
            raise StrategyOptionError(
                f"brackets: bracket {k}: upper edge {edge:g} must exceed the previous edge "
                f"{previous:g} (edges are increasing and positive)"
            )
        if not (0.0 <= rate < 1.0):
            raise StrategyOptionError(
                f"brackets: bracket {k}: rate {rate:g} must lie in [0, 1) so that no payer "
                "falls below its target"
            )
        previous = edge
    if not math.isinf(pairs[-1][0]):
        raise StrategyOptionError(
            f"brackets: the last upper edge must be inf so every surplus is taxed, got "
            f"{pairs[-1][0]:g}"
        )
    return tuple(pairs)


def progressive_tax(
    surplus: np.ndarray,
    target: np.ndarray,
    brackets: Sequence[tuple[float, float]] = DEFAULT_BRACKETS,
) -> np.ndarray:
    """Progressive tax on each hospital's surplus over target, shape ``(n,)``.

    The relative surplus ``s / t`` is cut into brackets ``(e_{k-1}, e_k]`` (``e_0 = 0``) taxed at
    marginal rates ``r_k``:

        tax_i = t_i * sum_k r_k * overlap(s_i / t_i, (e_{k-1}, e_k])
              = sum_k r_k * (clip(s_i, t_i e_{k-1}, t_i e_k) - t_i e_{k-1}),

    computed in the second (staff) form, which also covers ``t_i = 0`` (the whole surplus falls
    in the top bracket: ``tax = r_top * s``). With rates < 1, ``tax_i < s_i``: no payer falls
    below its target. Example with the default brackets, ``t = 100``, ``s = 60``:
    ``0.10*10 + 0.25*15 + 0.40*25 + 0.60*10 = 20.75``.
    """
    brackets = _check_brackets(brackets)
    surplus = np.maximum(np.asarray(surplus, dtype=np.float64), 0.0)
    target = np.asarray(target, dtype=np.float64)
    tax = np.zeros_like(surplus)
    low_edge = 0.0
    for edge, rate in brackets:
        bottom = target * low_edge
        top = np.full_like(target, math.inf) if math.isinf(edge) else target * edge
        tax += rate * (np.clip(surplus, bottom, top) - bottom)
        low_edge = edge
    return tax


_Receive = Callable[[_Problem, np.ndarray, float, float], np.ndarray]


def _proportional_receive(
    problem: _Problem, y: np.ndarray, to_minima: float, to_targets: float
) -> np.ndarray:
    """Taxation's rule: deficits below minimum first, then gaps to target, each in proportion
    to need."""
    c, m, t = problem.current, problem.minimum, problem.target
    need = np.maximum(m - c, 0.0)
    gap = np.maximum(t - np.maximum(c, m), 0.0)
    gain = np.zeros_like(c)
    if to_minima > 0:
        gain += need * (to_minima / need.sum())
    if to_targets > 0:
        gain += gap * (to_targets / gap.sum())
    return y + gain


def _nash_receive(weights: str) -> _Receive:
    """Hybrid's rule: deficits below minimum first (lowest coverage ``y/m`` first, where the
    logarithm is undefined), then Nash-welfare water-filling of ``w log(y - m + 1)`` over the
    hospitals below target, capped at target."""

    def receive(
        problem: _Problem, y: np.ndarray, to_minima: float, to_targets: float
    ) -> np.ndarray:
        c, m, t = problem.current, problem.minimum, problem.target
        y = y.copy()
        deficit = np.flatnonzero(c < m)
        if to_minima > 0:
            y[deficit] = _water_fill(
                np.zeros(deficit.size),
                m[deficit],
                c[deficit],
                m[deficit],
                c[deficit].sum() + to_minima,
            )[0]
        if to_targets > 0:
            start = np.maximum(c, m)
            below = np.flatnonzero(start < t)
            weight = _nwo_weights(problem, weights)
            y[below] = _water_fill(
                m[below] - 1.0,
                weight[below],
                start[below],
                t[below],
                start[below].sum() + to_targets,
            )[0]
        return y

    return receive


def _mechanism(
    problem: _Problem, brackets: tuple[tuple[float, float], ...], receive: _Receive
) -> np.ndarray:
    """Taxation and hybrid: who pays (the progressive tax, plus a minimum-cover levy when the
    tax cannot cover the deficits below minimum) and how much moves; ``receive`` says who gets
    it. Returns ``y``, shape ``(n,)``.

    Volumes, with ``P`` the tax raised, ``D`` the deficits below minimum, ``G`` the gaps to
    target (``sum max(0, t - max(c, m))``), ``S`` what hospitals hold above their minimum and
    ``B`` the budget (``inf`` without one):

    - to minima ``X1 = min(D, B, S)``: first from the tax, then (levy) from what payers keep
      above target after tax, then from what hospitals hold between minimum and target, each
      tier in proportion to what it holds;
    - to targets ``X2 = min(G, P - min(P, X1), B - X1)``: from the tax only.

    Payers pay ``tax * (tax used / P)``: only what is needed is collected, scaled down
    proportionally, and a surplus pool stays with its payers.
    """
    c, m, t = problem.current, problem.minimum, problem.target
    budget = problem.budget_or_inf
    surplus = np.maximum(c - t, 0.0)
    tax = progressive_tax(surplus, t, brackets)
    pool = float(tax.sum())
    deficit_total = float(np.maximum(m - c, 0.0).sum())
    above_minimum = np.maximum(c - m, 0.0)
    gap_total = float(np.maximum(t - np.maximum(c, m), 0.0).sum())
    to_minima = min(deficit_total, budget, float(above_minimum.sum()))
    tax_to_minima = min(pool, to_minima)
    to_targets = max(0.0, min(gap_total, pool - tax_to_minima, budget - to_minima))
    paid = tax * ((tax_to_minima + to_targets) / pool) if pool > 0 else np.zeros_like(c)
    levy = to_minima - tax_to_minima
    if levy > 0:
        for tier in (surplus - tax, np.maximum(np.minimum(c, t) - m, 0.0)):
            held = float(tier.sum())
            take = min(levy, held)
            if take > 0:
                paid += tier * (take / held)
                levy -= take
    paid = np.minimum(paid, above_minimum)
    y = receive(problem, c - paid, to_minima, to_targets)
    y = np.minimum(y, problem.upper)
    if problem.integer:
        return _round_mechanism(problem, y)
    return _fix_sum(y, np.minimum(y, m), problem.upper, problem.total)


def _round_mechanism(problem: _Problem, y: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of a mechanism's plan, receivers and senders separately, so
    the moved volume is a whole number within the budget.

    Every bound is an exact whole number and every total an exact integer sum
    (:func:`exact_sum`), so the rounding cannot ask one side to move more than the other can: the
    volume is the continuous plan's, rounded, and clamped to what the receivers can take and the
    senders can give (float noise in ``y`` grows with the head count: at 10^12 staff it is about
    10^-4, and a plan that nearly fills a side must not become one unit too many; issue 8,
    item 34). A receiver whose continuous value lies within noise of a whole number never ends
    above it, a sender never below it, so every integral bound the continuous plan met (target cap
    of receivers, target floor of payers) is kept.
    """
    c, m, u = problem.current, problem.minimum, problem.upper
    gain = np.flatnonzero(y > c)
    loss = np.flatnonzero(y < c)
    noise = noise_reach(y)
    take_cap = np.maximum(c[gain], np.minimum(u[gain], np.ceil(y[gain] - noise[gain])))
    low = np.minimum(m[loss], c[loss])
    give_floor = np.minimum(c[loss], np.maximum(low, np.floor(y[loss] + noise[loss])))
    volume = math.floor(float((y[gain] - c[gain]).sum()) + 0.5)
    gain_current, loss_current = exact_sum(c[gain]), exact_sum(c[loss])
    volume = min(
        max(volume, 0),
        exact_sum(take_cap) - gain_current,
        loss_current - exact_sum(give_floor),
    )
    if problem.budget is not None:
        volume = min(volume, int(problem.budget))
    out = c.copy()
    if gain.size:
        out[gain] = round_largest_remainder(y[gain], c[gain], take_cap, gain_current + volume)
    if loss.size:
        out[loss] = round_largest_remainder(y[loss], give_floor, c[loss], loss_current - volume)
    return out


# ---------------------------------------------------------------------- greedy
def _level_fill(
    base: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    total: float,
    *,
    fill_up: bool,
    integer: bool,
) -> np.ndarray:
    """The end state of greedy unit moves on one side: ``y = clip(base + level, lower, upper)``
    with ``sum y = total``.

    Receivers are filled one unit at a time at the lowest ``y - base`` (largest gap), donors
    emptied at the highest ``y - base`` (largest surplus); ties go to the lowest index. After
    all moves the levels are equal up to one unit, so the end state is the integer water level
    plus the leftover units, which unit-by-unit greedy assigns to the lowest-index hospitals at
    the last level: to be raised (``fill_up``) or lowered first (donors). In continuous mode the
    moves are infinitesimal and the end state is the exact continuous water level.
    """
    if not integer:
        return _water_fill(base, np.ones_like(base), lower, upper, total)[0]
    if total <= lower.sum():
        return lower.copy()
    if total >= upper.sum():
        return upper.copy()
    level = math.floor(_water_fill(base, np.ones_like(base), lower, upper, total)[1])
    while True:
        low = np.clip(base + level, lower, upper)
        if low.sum() > total:
            level -= 1
            continue
        high = np.clip(base + (level + 1), lower, upper)
        if high.sum() < total:
            level += 1
            continue
        break
    steppers = np.flatnonzero(high > low)
    if fill_up:
        y = low
        y[steppers[: int(total - low.sum())]] += 1.0
    else:
        y = high
        y[steppers[: int(high.sum() - total)]] -= 1.0
    return y


def _greedy(problem: _Problem) -> np.ndarray:
    """Greedy: one unit at a time from the largest surplus to the largest deficit, minima first.

    Stage 1 (minima): while a hospital is below its minimum, a hospital can give without falling
    below its own minimum and budget remains, move one unit from the donor with the largest
    surplus over target ``y - t`` (which may be negative: then the donor closest to its target)
    to the hospital with the largest deficit ``m - y``. Stage 2 (targets): while a hospital is
    above target, another below and budget remains, move one unit from the largest surplus
    ``y - t`` to the largest gap ``t - y``. Ties go to the lowest index. The result is computed in
    closed form (:func:`_level_fill`), identical to the unit-by-unit process, in O(n log n).
    """
    c, m, t, integer = problem.current, problem.minimum, problem.target, problem.integer
    budget = problem.budget_or_inf
    y = c.copy()
    deficit = np.flatnonzero(c < m)
    donors = np.flatnonzero(c > m)
    to_minima = min(
        budget, float((m[deficit] - c[deficit]).sum()), float((c[donors] - m[donors]).sum())
    )
    if to_minima > 0:
        y[deficit] = _level_fill(
            m[deficit],
            c[deficit],
            m[deficit],
            c[deficit].sum() + to_minima,
            fill_up=True,
            integer=integer,
        )
        y[donors] = _level_fill(
            t[donors],
            m[donors],
            c[donors],
            c[donors].sum() - to_minima,
            fill_up=False,
            integer=integer,
        )
    left = budget - to_minima
    below = np.flatnonzero(y < t)
    above = np.flatnonzero(y > t)
    to_targets = min(left, float((t[below] - y[below]).sum()), float((y[above] - t[above]).sum()))
    if to_targets > 0:
        start = y.copy()
        y[below] = _level_fill(
            t[below],
            start[below],
            t[below],
            start[below].sum() + to_targets,
            fill_up=True,
            integer=integer,
        )
        y[above] = _level_fill(
            t[above],
            t[above],
            start[above],
            start[above].sum() - to_targets,
            fill_up=False,
            integer=integer,
        )
    if not integer:
        _fix_sum(y, np.minimum(y, m), problem.upper, problem.total)
    return y


# ---------------------------------------------------------------------- the strategies
def _nwo_weights(problem: _Problem, weights: str) -> np.ndarray:
    if weights == "target":
        return problem.target - problem.minimum + 1.0
    return np.ones(problem.n)


def _check_weights(weights: Any) -> str:
    if not isinstance(weights, str) or weights not in WEIGHTS:
        raise StrategyOptionError(
            f"weights: must be one of {', '.join(map(repr, WEIGHTS))}, got {weights!r}"
        )
    return str(weights)


class Allocator:
    """One classical strategy with its options; :meth:`allocate` gives the new allocation.

    A small scikit-learn-like interface: options are fixed at construction and validated there
    (:class:`StrategyOptionError` names the option), :meth:`get_params` returns them, and every
    strategy is called the same way.
    """

    name: ClassVar[str] = ""
    option_names: ClassVar[tuple[str, ...]] = ()

    def get_params(self) -> dict[str, Any]:
        """The options this strategy was built with."""
        return {key: getattr(self, key) for key in self.option_names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def allocate(
        self,
        network: HospitalNetwork,
        *,
        transfer_budget: float | None = None,
        integer: bool = True,
        shortfall: bool = False,
    ) -> np.ndarray:
        """The new allocation ``y``, float64 array of shape ``(n,)``; see :func:`allocate`."""
        problem = _prepare(network, transfer_budget, integer, shortfall)
        if problem.budget == 0 or self.name == "hold":
            return problem.current.copy()
        if problem.infeasible and problem.budget is None:
            return _shortfall_spread(problem)
        return self._solve(problem)

    def _solve(self, problem: _Problem) -> np.ndarray:
        raise NotImplementedError


class QPAllocator(Allocator):
    """QP: minimise ``sum (y - t)^2`` s.t. ``sum y = C``, ``m <= y <= u`` (and the budget).

    Unbudgeted optimum ``y = clip(t + nu, m, u)`` by exact water-filling; budgeted optimum by two
    water-fillings (module docstring); integer mode rounds to the integer optimum. Under a budget
    too small for the minima it is the exact lexicographic optimum (least total shortfall below
    minima, then least squared target deviation).
    """

    name = "qp"

    def _solve(self, problem: _Problem) -> np.ndarray:
        objective = _qp_objective(problem.target)
        return _optimise(problem, objective, objective)


class NashWelfareAllocator(Allocator):
    """NWO: maximise ``sum w_i log(y_i - m_i + 1)`` s.t. ``sum y = C``, ``m <= y <= u``.

    Optimum ``y_i = clip(m_i - 1 + w_i / lambda, m_i, u_i)`` by exact water-filling in
    ``1 / lambda``. With ``weights="none"`` (``w = 1``, paper 000's utility) every hospital
    gets the *same surplus over its minimum* (up to capacity): targets play no part at all.
    ``weights="target"`` uses ``w_i = t_i - m_i + 1``, so surplus over minimum is shared in
    proportion to ``t - m + 1``. Budgets as for QP; below minimum, where the logarithm is
    undefined, deficits are filled lowest coverage ``y/m`` first.
    """

    name = "nwo"
    option_names = ("weights",)

    def __init__(self, weights: str = "none") -> None:
        self.weights = _check_weights(weights)

    def _solve(self, problem: _Problem) -> np.ndarray:
        weight = _nwo_weights(problem, self.weights)
        return _optimise(
            problem,
            _nwo_objective(problem.minimum, weight),
            _coverage_objective(problem.minimum),
        )


class TaxationAllocator(Allocator):
    """Progressive taxation: hospitals above target pay a progressive tax on their surplus
    (:func:`progressive_tax`); the pool fills deficits below minimum first, then gaps to
    target, in proportion to need. Only what is needed is collected (taxes scaled down
    proportionally); a minimum-cover levy tops the pool up when it cannot cover the deficits
    below minimum. Under a budget the moved volume is scaled to the budget, minima first."""

    name = "taxation"
    option_names = ("brackets",)

    def __init__(self, brackets: Sequence[tuple[float, float]] = DEFAULT_BRACKETS) -> None:
        self.brackets = _check_brackets(brackets)

    def _solve(self, problem: _Problem) -> np.ndarray:
        return _mechanism(problem, self.brackets, _proportional_receive)


class HybridAllocator(Allocator):
    """Hybrid: the taxation pool decides who pays (and how much moves); Nash welfare decides
    who receives: water-filling of ``w log(y - m + 1)`` over the hospitals below target, capped
    at target, after the deficits below minimum have been filled."""

    name = "hybrid"
    option_names = ("weights", "brackets")

    def __init__(
        self,
        weights: str = "none",
        brackets: Sequence[tuple[float, float]] = DEFAULT_BRACKETS,
    ) -> None:
        self.weights = _check_weights(weights)
        self.brackets = _check_brackets(brackets)

    def _solve(self, problem: _Problem) -> np.ndarray:
        return _mechanism(problem, self.brackets, _nash_receive(self.weights))


class GreedyAllocator(Allocator):
    """Greedy: one unit at a time from the largest surplus to the largest deficit (minima
    first) until the budget or the gaps run out; see :func:`_greedy`."""

    name = "greedy"

    def _solve(self, problem: _Problem) -> np.ndarray:
        return _greedy(problem)


class HoldAllocator(Allocator):
    """Hold: move nothing, ``y = c`` (the floor every method must beat)."""

    name = "hold"

    def _solve(self, problem: _Problem) -> np.ndarray:
        return problem.current.copy()


_REGISTRY: dict[str, type[Allocator]] = {
    "qp": QPAllocator,
    "nwo": NashWelfareAllocator,
    "taxation": TaxationAllocator,
    "hybrid": HybridAllocator,
    "greedy": GreedyAllocator,
    "hold": HoldAllocator,
}


def get_strategy(strategy: str, **options: Any) -> Allocator:
    """The strategy object named ``strategy`` with ``options``.

    Raises:
        ValueError: naming ``strategy`` and listing the valid ones.
        StrategyOptionError: (a ``TypeError`` and a ``ValueError``) naming an option the
            strategy does not accept, or an invalid option value.
    """
    if not isinstance(strategy, str) or strategy not in _REGISTRY:
        raise ValueError(
            f"strategy: unknown strategy {strategy!r}; valid strategies are {', '.join(STRATEGIES)}"
        )
    cls = _REGISTRY[strategy]
    for key in options:
        if key not in cls.option_names:
            accepted = ", ".join(cls.option_names) if cls.option_names else "no options"
            raise StrategyOptionError(
                f"{key}: unknown option for strategy {strategy!r} (it accepts {accepted})"
            )
    return cls(**options)


def allocate(
    network: HospitalNetwork,
    strategy: str,
    *,
    transfer_budget: float | None = None,
    integer: bool = True,
    shortfall: bool = False,
    **options: Any,
) -> np.ndarray:
    """The new allocation of ``network``'s staff by ``strategy``.

    Args:
        network: the hospitals (current, minimum, target, optional capacity).
        strategy: one of :data:`STRATEGIES`.
        transfer_budget: at most this many staff change hospital
            (``sum max(0, y - c) <= B``); ``None`` re-plans from scratch (paper 000's
            baselines). Floored in integer mode.
        integer: whole staff (the network must be integral) or continuous staff (paper 000).
        shortfall: for an infeasible network (``sum m > C``), return the best plan instead of
            raising.
        **options: ``weights`` (``"none"``/``"target"``; nwo, hybrid), ``brackets`` (taxation,
            hybrid).

    Returns:
        ``y``, float64 array of shape ``(n,)``, with ``sum y == sum c``.

    Raises:
        InfeasibleError: ``sum m > C`` and not ``shortfall`` (the message states the shortfall).
        NetworkError: integer mode on a network with fractional staff figures.
        ValueError: unknown ``strategy``, bad ``transfer_budget``; :class:`StrategyOptionError`
            for a bad option.
    """
    return get_strategy(strategy, **options).allocate(
        network, transfer_budget=transfer_budget, integer=integer, shortfall=shortfall
    )
