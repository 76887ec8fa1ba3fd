"""The QP planner with an equity bound: nearest the targets with normalised MRE of coverage <= EPS.

Solves (issue 13, section 4)

    minimise sum_i (y_i - t_i)^2
    s.t.     the constraints of the plain ``qp`` strategy (conservation, minima, capacities,
             the transfer budget, minima first under a small budget),
             H(x) / N <= max_mre,

where ``x_i = y_i / t_i`` is coverage (1 where ``t_i = 0``, as in :func:`marra.metrics.coverage`)
and ``H`` is the MRE of paper 003 (section 3.2, tolerance ``tau``), the same number
:func:`marra.metrics.mre` reports as ``h_normalised``.

The bound is **not convex** in ``y``: paper 003's Proposition 2 proves convexity of
``H(e) = 0.5 sum |e_i - mean(e)|`` in the excess vector ``e``, but ``H`` is not monotone in
``e``, so composing it with the convex excess ``e(x)`` loses convexity (with ``tau = 0``,
``x = (0, 0, 2, 2)`` and ``(0, 2, 0, 2)`` both have ``H = 0``, their midpoint has ``H = 1``).
marra writes ``H = sum_i [e_i(y) - mean(e)(y)]_+`` (a difference of convex functions) and
replaces ``mean(e)``, which is convex, by its linearisation at the current plan, an affine
*under*-estimator: the constraint becomes convex (epigraph variables for every positive part),
every plan it admits meets the true bound, and each subproblem is a QP solved exactly by Clarabel.
Re-linearising at the new plan (the convex-concave procedure) lowers the objective until the
linearisation stops changing. The result always meets the bound; it is a stationary point of the
non-convex problem, not a certified global optimum. The formulation, the starting points, the
smallest feasible bound, the integer rounding and what the tests check are in
``docs/strategies.md`` ("QP with an equity bound").

Clarabel is called directly (no modelling layer); it is an optional dependency,
``pip install "marra[equity]"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from marra.hospital.network import HospitalNetwork
from marra.hospital.strategies.allocators import Allocator, StrategyOptionError, allocate
from marra.hospital.strategies.integer import round_separable_convex, snap_to_integers
from marra.metrics import coverage, mae, mre

__all__ = [
    "MRE_SLACK",
    "EquityPlan",
    "MREInfeasibleError",
    "MREConstrainedQP",
    "allocate_within_mre",
    "smallest_max_mre",
    "mre_normalised",
]

#: How far above ``max_mre`` a continuous plan's normalised MRE may land through solver tolerance
#: (in units of coverage). Whole-staff plans are checked against ``max_mre`` up to the float
#: rounding of the metric (relative 1e-12).
MRE_SLACK = 1e-9
#: Most convex subproblems per convex-concave run.
_MAX_ROUNDS = 30
#: A round that lowers the objective by less than this (relative) ends the run.
_IMPROVEMENT = 1e-9
#: Retries with a tighter bound when a solution misses it through solver tolerance, or, in
#: whole-staff mode, through rounding.
_TIGHTEN_TRIES = 4

INSTALL_HINT = 'the equity bound needs the Clarabel solver: pip install "marra[equity]"'


class MREInfeasibleError(ValueError):
    """No plan meets ``max_mre`` under the other constraints.

    Attributes:
        max_mre: the bound asked for.
        smallest: the smallest bound the planner can meet (rounded up so that passing it back
            succeeds).
        achieved: in whole-staff mode, the normalised MRE the rounded plan reached, when the
            continuous plan met the bound but rounding broke it; else ``None``.
    """

    def __init__(
        self, message: str, *, max_mre: float, smallest: float, achieved: float | None = None
    ) -> None:
        super().__init__(message)
        self.max_mre = max_mre
        self.smallest = smallest
        self.achieved = achieved


@dataclass(frozen=True)
class EquityPlan:
    """The plan under an equity bound, next to the plain QP plan (the price of equity).

    Attributes:
        allocation: ``y``, float64 ``(n,)``, with ``sum y == sum c``.
        unconstrained: the plain ``qp`` plan under the same budget and mode, ``(n,)``.
        max_mre, tau: the bound and the tolerance band it was asked with.
        mre_normalised: ``H / N`` of ``allocation``'s coverage (:func:`marra.metrics.mre`).
        mre_normalised_unconstrained: the same for ``unconstrained``.
        mae, mae_unconstrained: MAE to target of the two plans.
        price_of_equity: ``mae - mae_unconstrained``: staff per hospital further from target
            because of the bound (it can be 0 while the plan changes: moving staff between two
            hospitals that both stay below target leaves the MAE as it is).
        squared_deviation, squared_deviation_unconstrained: ``sum (y - t)^2`` of the two plans,
            the objective the planner minimises (never lower with the bound, up to rounding).
        method: ``"unconstrained"`` (the plain plan already meets the bound),
            ``"convex-concave"``, or ``"least-mre"`` (whole staff: the rounded least-MRE plan,
            when rounding the nearest plan broke the bound).
        solves: convex subproblems solved (Clarabel calls).
        integer: whole staff or not.
    """

    allocation: np.ndarray
    unconstrained: np.ndarray
    max_mre: float
    tau: float
    mre_normalised: float
    mre_normalised_unconstrained: float
    mae: float
    mae_unconstrained: float
    price_of_equity: float
    squared_deviation: float
    squared_deviation_unconstrained: float
    method: str
    solves: int
    integer: bool


def mre_normalised(allocation: np.ndarray, target: np.ndarray, tau: float) -> float:
    """``H / N`` of the coverage ``allocation / target`` (paper 003 section 3.2.3), exactly as
    :func:`marra.metrics.mre` computes it."""
    return mre(coverage(allocation, target), tau=tau).h_normalised


def _meets(value: float, max_mre: float, *, integer: bool) -> bool:
    """Whether a plan's normalised MRE ``value`` meets ``max_mre``: whole-staff plans up to the
    float rounding of the metric itself (relative 1e-12), continuous ones up to
    :data:`MRE_SLACK` (solver tolerance)."""
    if integer:
        return value <= max_mre + 1e-12 * max(max_mre, 1e-3)
    return value <= max_mre + MRE_SLACK


# ---------------------------------------------------------------------- validation
def _check_max_mre(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise StrategyOptionError(f"max_mre: must be a number >= 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise StrategyOptionError(f"max_mre: must be a finite number >= 0, got {value!r}")
    return value


def _check_tau(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise StrategyOptionError(f"tau: must be a number >= 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise StrategyOptionError(f"tau: must be a finite number >= 0, got {value!r}")
    return value


def _clarabel() -> Any:
    try:
        import clarabel
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return clarabel


# ---------------------------------------------------------------------- the feasible region
@dataclass
class _Region:
    """The plain QP's constraints: ``lower <= y <= upper``, one fixed sum per group, and at
    most ``budget`` staff moving (``sum max(0, y - c) <= budget``; ``None``: no cap).
    ``fixed``: the constraints leave exactly this plan."""

    current: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    groups: list[tuple[np.ndarray, float]]
    budget: float | None
    fixed: np.ndarray | None = None


def _region(
    network: HospitalNetwork,
    plain: np.ndarray,
    transfer_budget: float | None,
    integer: bool,
) -> _Region:
    """The branch the plain QP takes (``allocators._optimise``), as constraints; ``plain`` is
    its plan (the only one when no staff can move). An infeasible network reaches here only in
    shortfall mode (the plain QP raised otherwise)."""
    c = np.array(network.current, dtype=np.float64)
    m = np.array(network.minimum, dtype=np.float64)
    u = np.array(network.upper, dtype=np.float64)
    everyone = np.arange(network.n)
    budget = None if transfer_budget is None else float(transfer_budget)
    if budget is not None and integer:
        budget = float(math.floor(budget))
    infeasible = float(m.sum()) > network.total + 1e-9
    if budget == 0 or (infeasible and budget is None):
        # no move, or the shortfall spread: the constraints leave one plan
        return _Region(c, plain, plain, [(everyone, float(plain.sum()))], None, fixed=plain)
    deficit_total = float(np.maximum(m - c, 0.0).sum())
    if budget is not None and (infeasible or budget < deficit_total):
        # minima first: the budget goes from hospitals above their minimum to those below it
        surplus_total = float(np.maximum(c - m, 0.0).sum())
        volume = min(budget, deficit_total, surplus_total)
        below = c < m
        lower = np.where(below, c, m)
        upper = np.where(below, m, c)
        deficit, donors = np.flatnonzero(below), np.flatnonzero(~below)
        groups = [
            (deficit, float(c[deficit].sum()) + volume),
            (donors, float(c[donors].sum()) - volume),
        ]
        return _Region(c, lower, upper, [g for g in groups if g[0].size], None)
    return _Region(c, m, u, [(everyone, float(c.sum()))], budget)


# ---------------------------------------------------------------------- the excess pieces
class _Coverage:
    """Coverage ``x = scale * y + offset`` (``scale = 1/t``, or 0 with ``offset = 1`` where
    ``t = 0``) and the pieces of the excess ``e_i = max(0, d_i - tau mu, -d_i - tau mu)``,
    ``d = x - mu``, ``mu = mean(x)`` (paper 003 Eq. 2)."""

    def __init__(self, target: np.ndarray, tau: float) -> None:
        target = np.asarray(target, dtype=np.float64)
        positive = target > 0
        self.scale = np.zeros_like(target)
        self.scale[positive] = 1.0 / target[positive]
        self.offset = np.where(positive, 0.0, 1.0)
        self.tau = tau
        self.n = target.shape[0]

    def excess(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(e, d, mu)`` at ``y``."""
        x = self.scale * y + self.offset
        mu = float(x.mean())
        d = x - mu
        e = np.maximum(np.abs(d) - self.tau * mu, 0.0)
        return e, d, mu

    def h(self, y: np.ndarray) -> float:
        """``H = sum_i [e_i - mean(e)]_+`` (equal to ``0.5 sum |e_i - mean(e)|``)."""
        e = self.excess(y)[0]
        return float(np.maximum(e - e.mean(), 0.0).sum())

    def pieces(self, y: np.ndarray) -> np.ndarray:
        """Which affine piece of ``e_i`` is active at ``y``: +1 (above the band), -1 (below),
        0 (inside), int8 ``(n,)``; the linearisation of ``mean(e)`` takes these pieces."""
        e, d, mu = self.excess(y)
        noise = 1e-12 * (1.0 + self.tau) * max(mu, 1e-300)
        return np.where(e > noise, np.sign(d), 0.0).astype(np.int8)


# ---------------------------------------------------------------------- one convex subproblem
_Objective = Literal["targets", "excess"]


@dataclass
class _Counter:
    solves: int = 0
    failures: list[str] = field(default_factory=list)


def _subproblem(
    region: _Region,
    cov: _Coverage,
    target: np.ndarray,
    pieces: np.ndarray,
    bound: float | None,
    objective: _Objective,
    counter: _Counter,
) -> np.ndarray | None:
    """Solve one convex restriction; ``None`` when it is infeasible.

    Variables ``z = [y (n), s (n), mu, ell, r (n, with a budget)]``; ``ell`` is the affine
    under-estimator of ``mean(e)`` built from ``pieces`` (``ell = 0`` when every piece is 0),
    ``s_i >= [e_i - ell]_+`` its epigraph. ``objective="targets"``: minimise
    ``sum (y - t)^2`` s.t. ``sum s <= bound``; ``"excess"``: minimise ``sum s`` (``bound``
    unused).
    """
    from scipy import sparse

    clarabel = _clarabel()
    n, tau = cov.n, cov.tau
    a, b = cov.scale, cov.offset
    has_budget = region.budget is not None
    iy, i_s = np.arange(n), n + np.arange(n)
    imu, iell = 2 * n, 2 * n + 1
    ir = 2 * n + 2 + np.arange(n)
    nvar = 2 * n + 2 + (n if has_budget else 0)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rhs: list[np.ndarray] = []
    count = 0

    def add(row: np.ndarray, col: np.ndarray, val: np.ndarray) -> None:
        rows.append(np.asarray(row, dtype=np.int64))
        cols.append(np.asarray(col, dtype=np.int64))
        vals.append(np.asarray(val, dtype=np.float64))

    # ---- equalities: the group sums, mu = mean(x), ell = mean of the chosen pieces
    for index, total in region.groups:
        add(np.full(index.size, count), index, np.ones(index.size))
        rhs.append(np.array([total]))
        count += 1
    add(np.full(n + 1, count), np.append(iy, imu), np.append(-a / n, 1.0))
    rhs.append(np.array([b.sum() / n]))
    count += 1
    sigma = pieces.astype(np.float64)
    mu_coef = (
        np.count_nonzero(pieces > 0) * -(1.0 + tau) + np.count_nonzero(pieces < 0) * (1.0 - tau)
    ) / n
    add(np.full(n + 2, count), np.concatenate([iy, [imu, iell]]),
        np.concatenate([-sigma * a / n, [-mu_coef, 1.0]]))  # fmt: skip
    rhs.append(np.array([float((sigma * b).sum()) / n]))
    count += 1
    equalities = count

    # ---- inequalities A z <= rhs
    def block(k: int) -> np.ndarray:
        nonlocal count
        out = count + np.arange(k)
        count += k
        return out

    above = block(n)  # a y - (1 + tau) mu - ell - s <= -b
    add(above, iy, a)
    add(above, np.full(n, imu), np.full(n, -(1.0 + tau)))
    add(above, np.full(n, iell), -np.ones(n))
    add(above, i_s, -np.ones(n))
    rhs.append(-b)
    below = block(n)  # -a y + (1 - tau) mu - ell - s <= b
    add(below, iy, -a)
    add(below, np.full(n, imu), np.full(n, 1.0 - tau))
    add(below, np.full(n, iell), -np.ones(n))
    add(below, i_s, -np.ones(n))
    rhs.append(b)
    ell_nonneg = block(1)  # -ell <= 0 (so s >= [e - ell]_+ needs only s >= 0, see below)
    add(ell_nonneg, [iell], [-1.0])
    rhs.append(np.zeros(1))
    nonneg = block(n)  # -s <= 0
    add(nonneg, i_s, -np.ones(n))
    rhs.append(np.zeros(n))
    if objective == "targets":
        assert bound is not None
        row = block(1)
        add(np.full(n, row[0]), i_s, np.ones(n))
        rhs.append(np.array([bound]))
    low = block(n)  # -y <= -lower
    add(low, iy, -np.ones(n))
    rhs.append(-region.lower)
    capped = np.flatnonzero(np.isfinite(region.upper))
    high = block(capped.size)  # y <= upper
    add(high, capped, np.ones(capped.size))
    rhs.append(region.upper[capped])
    if has_budget:
        gain = block(n)  # y - r <= c
        add(gain, iy, np.ones(n))
        add(gain, ir, -np.ones(n))
        rhs.append(region.current)
        r_nonneg = block(n)  # -r <= 0
        add(r_nonneg, ir, -np.ones(n))
        rhs.append(np.zeros(n))
        cap = block(1)  # sum r <= B
        add(np.full(n, cap[0]), ir, np.ones(n))
        rhs.append(np.array([region.budget]))

    matrix = sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(count, nvar)
    )
    q = np.zeros(nvar)
    if objective == "targets":
        hessian = sparse.csc_matrix((np.full(n, 2.0), (iy, iy)), shape=(nvar, nvar))
        q[iy] = -2.0 * target
    else:
        hessian = sparse.csc_matrix((nvar, nvar))
        q[i_s] = 1.0
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    cones = [clarabel.ZeroConeT(equalities), clarabel.NonnegativeConeT(count - equalities)]
    solver = clarabel.DefaultSolver(hessian, q, matrix, np.concatenate(rhs), cones, settings)
    solution = solver.solve()
    counter.solves += 1
    status = solution.status
    if status not in (clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved):
        counter.failures.append(str(status))
        return None
    return _repair(np.asarray(solution.x)[:n], region)


def _repair(y: np.ndarray, region: _Region) -> np.ndarray:
    """Clip the solver's ``y`` to the bounds and move the float residue of each group sum onto
    the hospitals with room, so the sums are exact up to rounding."""
    y = np.clip(y, region.lower, region.upper)
    for index, total in region.groups:
        part = y[index]
        for _ in range(4):
            residue = total - float(part.sum())
            if residue == 0.0:
                break
            room = (region.upper[index] - part) if residue > 0 else (part - region.lower[index])
            room = np.where(np.isfinite(room), room, abs(residue))
            available = float(room.sum())
            if available <= 0:
                break
            part = part + math.copysign(1.0, residue) * room * min(1.0, abs(residue) / available)
            part = np.clip(part, region.lower[index], region.upper[index])
        y[index] = part
    if region.budget is not None:
        moved = float(np.maximum(y - region.current, 0.0).sum())
        if moved > region.budget > 0:  # float excess: shrink every move a hair towards c
            y = region.current + (y - region.current) * (region.budget / moved)
    return y


# ---------------------------------------------------------------------- the solver
@dataclass
class _Solved:
    allocation: np.ndarray
    h: float  # H (not normalised) by the fast formula


def _nearest(
    region: _Region,
    cov: _Coverage,
    target: np.ndarray,
    bound: float,
    starts: list[np.ndarray],
    counter: _Counter,
) -> _Solved | None:
    """The convex-concave procedure for ``min sum (y - t)^2`` s.t. ``H(y) <= bound``, run from
    every start (a piece pattern) whose restriction is feasible; the best plan. Every iterate
    meets the bound (a solution that misses it by solver tolerance is re-solved tighter)."""
    n = cov.n

    def solve(pieces: np.ndarray, limit: float) -> np.ndarray | None:
        for _ in range(_TIGHTEN_TRIES):
            y = _subproblem(region, cov, target, pieces, limit, "targets", counter)
            if y is None:
                return None
            over = cov.h(y) - bound
            if over <= n * MRE_SLACK * 0.5:
                return y
            limit = max(limit - 2.0 * over, 0.0)
        return None

    def distance(y: np.ndarray) -> float:
        return float(((y - target) ** 2).sum())

    best: np.ndarray | None = None
    for start in starts:
        # every piece 0: the restriction is E <= bound * N / (N - 1), since H <= (1 - 1/N) E
        limit = bound * n / (n - 1) if not start.any() and n > 1 else bound
        current = solve(start, limit)
        if current is None:
            continue
        pieces, value = start, distance(current)
        for _ in range(_MAX_ROUNDS):
            next_pieces = cov.pieces(current)
            if np.array_equal(next_pieces, pieces):
                break
            candidate = solve(next_pieces, bound)
            if candidate is None:
                break
            pieces, improvement = next_pieces, value - distance(candidate)
            if improvement >= 0:
                current, value = candidate, value - improvement
            if improvement <= _IMPROVEMENT * max(1.0, value):
                break
        if best is None or value < distance(best):
            best = current
    return None if best is None else _Solved(best, cov.h(best))


def _least_mre(
    region: _Region,
    cov: _Coverage,
    target: np.ndarray,
    counter: _Counter,
    starts: list[np.ndarray],
) -> _Solved | None:
    """The least ``H`` the planner reaches: from each start (a piece pattern; all 0 means
    minimise ``E``), minimise ``sum [e_i - ell]_+``, re-linearise ``mean(e)`` at the new plan
    and repeat until ``H`` stops falling (the difference-of-convex algorithm: a local minimum of
    the non-convex ``H``); the best over the starts."""
    best: _Solved | None = None
    for start in starts:
        pieces, previous = start, math.inf
        for _ in range(_MAX_ROUNDS):
            y = _subproblem(region, cov, target, pieces, None, "excess", counter)
            if y is None:
                break
            h = cov.h(y)
            if best is None or h < best.h:
                best = _Solved(y, h)
            next_pieces = cov.pieces(y)
            if h >= previous - 1e-12 * max(1.0, previous) or np.array_equal(next_pieces, pieces):
                break
            pieces, previous = next_pieces, h
    return best


def _least_starts(cov: _Coverage, plans: list[np.ndarray]) -> list[np.ndarray]:
    """Start patterns for :func:`_least_mre`: all 0 (least total excess ``E``), then for each
    of ``plans`` its own pieces and its *polarised* pattern (every hospital on its side of the
    mean counted as outside: the plans with uniform excess, ``H = 0``, that MRE also accepts)."""
    starts = [np.zeros(cov.n, dtype=np.int8)]
    for y in plans:
        d = cov.excess(y)[1]
        starts.append(cov.pieces(y))
        starts.append(np.where(d >= 0, 1, -1).astype(np.int8))
    unique: list[np.ndarray] = []
    for start in starts:
        if not any(np.array_equal(start, seen) for seen in unique):
            unique.append(start)
    return unique


def _round(y: np.ndarray, region: _Region, cov: _Coverage) -> np.ndarray:
    """Whole staff: every hospital ends at ``floor(y)`` or ``ceil(y)``, receivers and senders
    rounded separately (as marra's mechanisms are, so the total, the bounds and the budget
    hold), each side by :func:`~marra.hospital.strategies.integer.round_separable_convex` with
    the cost ``(k - y_i)^2 + W [e_i(k) - mean(e)]_+``: the band excess of each hospital (mean
    coverage and ``mean(e)`` held at the continuous plan's) first, distance second (``W``
    large). Without the excess term it is largest-remainder rounding; with it, a hospital on the
    band's edge rounds inwards when the count allows."""

    c = region.current
    y = snap_to_integers(y)
    out = c.copy()
    gain, loss = np.flatnonzero(y > c), np.flatnonzero(y < c)
    if gain.size == 0 and loss.size == 0:
        return out
    e, _, mu = cov.excess(y)
    level = float(e.mean())
    weight = 1e3 * max(1.0, float(np.max(1.0 / cov.scale[cov.scale > 0], initial=1.0)))

    def cost(index: np.ndarray, k: np.ndarray) -> np.ndarray:
        x = cov.scale[index] * k + cov.offset[index]
        excess = np.maximum(np.abs(x - mu) - cov.tau * mu, 0.0)
        return (k - y[index]) ** 2 + weight * np.maximum(excess - level, 0.0)

    def side(index: np.ndarray, low: np.ndarray, high: np.ndarray, total: int) -> np.ndarray:
        def marginal(local: np.ndarray, k: np.ndarray) -> np.ndarray:
            return cost(index[local], k + 1.0) - cost(index[local], k)

        return round_separable_convex(y[index], low, high, total, marginal)

    gain_low = np.maximum(c[gain], np.maximum(region.lower[gain], np.floor(y[gain])))
    gain_high = np.minimum(region.upper[gain], np.ceil(y[gain]))
    loss_low = np.maximum(region.lower[loss], np.floor(y[loss]))
    loss_high = np.minimum(c[loss], np.minimum(region.upper[loss], np.ceil(y[loss])))
    volume = math.floor(float((y[gain] - c[gain]).sum()) + 0.5)
    low = max(int((gain_low - c[gain]).sum()), int((c[loss] - loss_high).sum()), 0)
    high = min(int((gain_high - c[gain]).sum()), int((c[loss] - loss_low).sum()))
    if region.budget is not None:
        high = min(high, int(region.budget))
    volume = min(max(volume, low), high)
    if gain.size:
        out[gain] = side(gain, gain_low, gain_high, int(c[gain].sum()) + volume)
    if loss.size:
        out[loss] = side(loss, loss_low, loss_high, int(c[loss].sum()) - volume)
    return out


def _ceil_significant(value: float, digits: int = 4) -> float:
    """``value`` rounded *up* to ``digits`` significant digits (so passing it back succeeds)."""
    if value <= 0:
        return 0.0
    exponent = math.floor(math.log10(value)) - digits + 1
    step = 10.0**exponent
    return float(f"{math.ceil(value / step * (1 - 1e-12)) * step:.{digits}g}")


# ---------------------------------------------------------------------- the plan
def _plan(
    region: _Region,
    cov: _Coverage,
    target: np.ndarray,
    plain: np.ndarray,
    max_mre: float,
    integer: bool,
    counter: _Counter,
) -> tuple[np.ndarray, str]:
    """The plan and how it was found, or :class:`MREInfeasibleError`.

    Continuous: the convex-concave procedure started from the plain plan's pieces, then from the
    excess bound ``E <= N^2 max_mre / (N - 1)``; failing both, from the least-MRE plan when that
    meets the bound (else infeasible, naming the least MRE). Whole staff: the continuous plan
    rounded; when rounding breaks the bound by ``delta``, the continuous bound is tightened by
    ``delta``, ``2 delta``, ``4 delta``, ``8 delta`` and the plan rounded again; failing that,
    the rounded least-MRE plan when it meets the bound. Any ``max_mre`` at or above the
    reported smallest value therefore succeeds.
    """
    n = cov.n
    bound = n * max_mre
    zeros = np.zeros(n, dtype=np.int8)
    least: _Solved | None = None

    def least_mre() -> _Solved:
        nonlocal least
        if least is None:
            starts = _least_starts(cov, [plain, region.current])
            least = _least_mre(region, cov, target, counter, starts)
            if least is None:
                raise ValueError(
                    "the solver could not solve the least-MRE problem "
                    f"(status {', '.join(counter.failures) or 'unknown'})"
                )
        return least

    solved = _nearest(region, cov, target, bound, [cov.pieces(plain), zeros], counter)
    if solved is None and _meets(least_mre().h / n, max_mre, integer=False):
        # the natural starts are out of reach: start from the least-MRE plan
        solved = _nearest(region, cov, target, bound, [cov.pieces(least_mre().allocation)], counter)
        if solved is None:  # solver tolerance at the very edge: the least-MRE plan itself
            solved = least_mre()
    if solved is not None and not integer:
        return solved.allocation, "convex-concave"
    achieved: float | None = None
    if solved is not None:
        for k in range(_TIGHTEN_TRIES + 1):
            rounded = _round(solved.allocation, region, cov)
            value = mre_normalised(rounded, target, cov.tau)
            if _meets(value, max_mre, integer=True):
                return rounded, "convex-concave"
            if achieved is None:
                achieved, overshoot = value, value - max_mre
            tight = n * (max_mre - overshoot * 2.0**k)  # the rounding's overshoot, doubled
            if tight < 0 or k == _TIGHTEN_TRIES:
                break
            retry = _nearest(
                region, cov, target, tight, [cov.pieces(solved.allocation), zeros], counter
            )
            if retry is None:
                break
            solved = retry
    candidate = _round(least_mre().allocation, region, cov) if integer else least_mre().allocation
    least_value = mre_normalised(candidate, target, cov.tau)
    if _meets(least_value, max_mre, integer=integer):
        return candidate, "least-mre"
    smallest = _ceil_significant(min(least_value, mre_normalised(plain, target, cov.tau)))
    staff = "whole-staff " if integer else ""
    message = (
        f"max_mre: no {staff}plan meets normalised MRE <= {max_mre:g} under these "
        f"constraints; the smallest feasible max_mre is {smallest:g}"
    )
    if achieved is not None:
        message += (
            f"; the continuous plan meets {max_mre:g}, but rounding it to whole staff reaches "
            f"{achieved:.6g} (--continuous keeps the bound)"
        )
    raise MREInfeasibleError(message, max_mre=max_mre, smallest=smallest, achieved=achieved)


# ---------------------------------------------------------------------- public interface
def allocate_within_mre(
    network: HospitalNetwork,
    max_mre: float,
    *,
    tau: float = 0.1,
    transfer_budget: float | None = None,
    integer: bool = True,
    shortfall: bool = False,
) -> EquityPlan:
    """The plan nearest the targets whose coverage has normalised MRE at most ``max_mre``.

    The constraints are the plain ``qp`` strategy's (``allocate(network, "qp", ...)``, whose plan
    is ``unconstrained`` in the result) plus ``H / N <= max_mre`` on coverage ``y / t`` with
    tolerance ``tau`` (paper 003 section 3.2). See the module docstring for the method.

    Args:
        network: the hospitals.
        max_mre: the bound on the normalised MRE, ``>= 0`` (coverage units; a continuous plan may
            exceed it by float noise up to :data:`MRE_SLACK`).
        tau: the MRE tolerance band, ``>= 0`` (default 0.1, as ``marra recommend --tau``).
        transfer_budget, integer, shortfall: as for :func:`~marra.hospital.strategies.allocate`.

    Returns:
        An :class:`EquityPlan` (``allocation``, the price of equity, ...).

    Raises:
        MREInfeasibleError: no plan meets ``max_mre``; it names the smallest bound that can be
            met (``smallest``).
        InfeasibleError, NetworkError, ValueError: as the plain ``qp`` strategy.
        StrategyOptionError: bad ``max_mre`` or ``tau``.
        ImportError: Clarabel is not installed (the message says how to install it).
    """
    max_mre = _check_max_mre(max_mre)
    tau = _check_tau(tau)
    plain = allocate(
        network, "qp", transfer_budget=transfer_budget, integer=integer, shortfall=shortfall
    )
    target = np.array(network.target, dtype=np.float64)
    counter = _Counter()
    plain_mre = mre_normalised(plain, target, tau)
    if _meets(plain_mre, max_mre, integer=integer):
        allocation, method = plain, "unconstrained"
    else:
        region = _region(network, plain, transfer_budget, integer)
        if region.fixed is not None:
            smallest = _ceil_significant(plain_mre)
            raise MREInfeasibleError(
                f"max_mre: the constraints leave a single plan (no staff can move), whose "
                f"normalised MRE is {plain_mre:.6g} > {max_mre:g}; the smallest feasible max_mre "
                f"is {smallest:g}",
                max_mre=max_mre,
                smallest=smallest,
            )
        _clarabel()  # fail early, with the install hint, before any work
        cov = _Coverage(target, tau)
        allocation, method = _plan(region, cov, target, plain, max_mre, integer, counter)
    mae_plain, mae_plan = mae(plain, target), mae(allocation, target)
    return EquityPlan(
        allocation=allocation,
        unconstrained=plain,
        max_mre=max_mre,
        tau=tau,
        mre_normalised=mre_normalised(allocation, target, tau),
        mre_normalised_unconstrained=plain_mre,
        mae=mae_plan,
        mae_unconstrained=mae_plain,
        price_of_equity=mae_plan - mae_plain,
        squared_deviation=float(((allocation - target) ** 2).sum()),
        squared_deviation_unconstrained=float(((plain - target) ** 2).sum()),
        method=method,
        solves=counter.solves,
        integer=integer,
    )


def smallest_max_mre(
    network: HospitalNetwork,
    *,
    tau: float = 0.1,
    transfer_budget: float | None = None,
    integer: bool = True,
    shortfall: bool = False,
) -> float:
    """The smallest ``max_mre`` :func:`allocate_within_mre` meets on ``network`` (rounded up to
    4 significant digits): the least normalised MRE the planner reaches under the plain QP's
    constraints (a local minimum of a non-convex function: a lower value may exist elsewhere).
    """
    tau = _check_tau(tau)
    plain = allocate(
        network, "qp", transfer_budget=transfer_budget, integer=integer, shortfall=shortfall
    )
    target = np.array(network.target, dtype=np.float64)
    plain_mre = mre_normalised(plain, target, tau)
    if plain_mre == 0.0:
        return 0.0
    region = _region(network, plain, transfer_budget, integer)
    if region.fixed is not None:
        return _ceil_significant(plain_mre)
    cov = _Coverage(target, tau)
    counter = _Counter()
    least = _least_mre(region, cov, target, counter, _least_starts(cov, [plain, region.current]))
    if least is None:
        raise ValueError(
            "the solver could not solve the least-MRE problem "
            f"(status {', '.join(counter.failures) or 'unknown'})"
        )
    candidate = _round(least.allocation, region, cov) if integer else least.allocation
    return _ceil_significant(min(mre_normalised(candidate, target, tau), plain_mre))


class MREConstrainedQP(Allocator):
    """QP with an equity bound: :func:`allocate_within_mre` as a strategy object.

    ``MREConstrainedQP(max_mre=0.01, tau=0.1).allocate(network, transfer_budget=...)`` returns
    ``y`` like every strategy; :meth:`solve` returns the whole :class:`EquityPlan`.
    """

    name: ClassVar[str] = "qp"
    option_names: ClassVar[tuple[str, ...]] = ("max_mre", "tau")

    def __init__(self, max_mre: float, tau: float = 0.1) -> None:
        self.max_mre = _check_max_mre(max_mre)
        self.tau = _check_tau(tau)

    def solve(
        self,
        network: HospitalNetwork,
        *,
        transfer_budget: float | None = None,
        integer: bool = True,
        shortfall: bool = False,
    ) -> EquityPlan:
        """The plan with its price of equity; see :func:`allocate_within_mre`."""
        return allocate_within_mre(
            network,
            self.max_mre,
            tau=self.tau,
            transfer_budget=transfer_budget,
            integer=integer,
            shortfall=shortfall,
        )

    def allocate(
        self,
        network: HospitalNetwork,
        *,
        transfer_budget: float | None = None,
        integer: bool = True,
        shortfall: bool = False,
    ) -> np.ndarray:
        """The new allocation ``y``, float64 ``(n,)``; see :func:`allocate_within_mre`."""
        plan = self.solve(
            network, transfer_budget=transfer_budget, integer=integer, shortfall=shortfall
        )
        return plan.allocation
