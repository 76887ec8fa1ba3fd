"""How well and how fairly an allocation serves the hospitals: pure functions on arrays.

Every function takes 1-D arrays of shape ``(n,)`` (one entry per hospital), validates them once
and returns plain Python floats (or read-only arrays). Nothing here knows about strategies or
learning, and nothing imports torch.

Metrics and their sources
-------------------------
- :func:`mae` -- target deviation, paper 000 Eq. (8).
- :func:`gini` -- Gini index, paper 000 Eq. (9); algebraically identical to the mean-absolute-
  difference Gini of paper 003 Eq. (7b) (derivation in :func:`gini`), so there is one function.
- :func:`cv`, :func:`jain`, :func:`theil`, :func:`atkinson` -- paper 003 Eq. (7a), (7c), (7d),
  (7e).
- :func:`mre` -- the identity-aware equity suite of paper 003 section 3.2: outside-band excess
  (Eq. 2), incidence rate (Eq. 3), selection profile ``q_inc`` (Eq. 4) and its total variation
  from uniform ``H_inc`` (Eq. 5), magnitude profile ``q_mag`` and ``H_mag`` (Eq. 6), the minimum
  reallocation of excess ``H`` and ``H / N`` (section 3.2.3), returned as an :class:`MREResult`
  with the directional split (over- vs under-served) that section 3.3 suggests.
- :func:`coverage`, :func:`coverage_gini`, :func:`minima_shortfall`, :func:`transfer_volume` --
  marra's operational measures.

Convention used by :func:`report`
---------------------------------
``gini`` is computed on the staff counts ``y`` exactly as paper 000 Eq. (9) does. Everything
else about equity -- ``coverage_gini``, ``cv``, ``jain``, ``theil``, ``atkinson`` and the MRE
suite -- is computed on the coverage ``y / t``: hospitals differ in size, so equal *coverage* of
need, not equal headcount, is the equity that matters. The MRE suite uses the tolerance ``tau``
(default 0.1: coverage within +-10% of the mean coverage counts as equal).

Edge cases (never NaN, never a numpy ``RuntimeWarning``)
--------------------------------------------------------
- Empty input, a NaN, an infinity or a negative value raise :class:`MetricError` (a
  ``ValueError``) naming the argument and the first bad index (0-based); arrays of different
  shapes raise :class:`MetricError` naming both arguments.
- All values equal (including all zeros, and a single hospital) is perfect equality: Gini, CV,
  Theil, Atkinson, ``H``, ``H_inc``, ``H_mag`` are 0 and Jain is 1.
- The anonymous indices (Gini, CV, Jain, Theil, Atkinson) are scale invariant, so they are
  computed on ``x / max(x)``; this changes nothing mathematically and keeps squares and sums
  away from overflow and underflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from marra.hospital.network import HospitalNetwork

__all__ = [
    "MetricError",
    "MREResult",
    "METRIC_KEYS",
    "METRIC_DESCRIPTIONS",
    "EXCESS_RTOL",
    "mae",
    "gini",
    "coverage",
    "coverage_gini",
    "cv",
    "jain",
    "theil",
    "atkinson",
    "mre",
    "minima_shortfall",
    "transfer_volume",
    "report",
]

#: Outside-band excess up to ``EXCESS_RTOL * (1 + tau) * mean`` counts as zero, so that a value
#: lying on the band's edge (e.g. 1.1 with mean 1.0 and tau 0.1, which floating point stores as
#: 1.1000000000000000888) is not flagged by rounding noise. The band edge is inclusive.
EXCESS_RTOL = 1e-12

ArrayLike = np.ndarray | Sequence[float]


class MetricError(ValueError):
    """Invalid input to a metric. The message names the argument and, where one exists, the
    first offending index (0-based)."""


# ---------------------------------------------------------------------- validation
def _values(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array with finite, non-negative entries, or a MetricError."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{name}: values must be numbers ({exc})") from None
    if arr.ndim != 1:
        raise MetricError(f"{name}: expected a 1-D array of shape (n,), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise MetricError(f"{name}: is empty; at least one value is required")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricError(f"{name}: value at index {i} is {arr[i]}, not a finite number")
    negative = arr < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise MetricError(f"{name}: value at index {i} is {arr[i]:g}, which is negative")
    return arr


def _pair(first: ArrayLike, second: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, ...]:
    a = _values(first, names[0])
    b = _values(second, names[1])
    if a.shape != b.shape:
        raise MetricError(
            f"{names[0]} and {names[1]}: shapes differ, {a.shape} vs {b.shape} "
            "(one entry per hospital in both)"
        )
    return a, b


def _parameter(value: float, name: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise MetricError(f"{name}: must be a finite number >= 0, got {value}")
    return value


def _is_constant(x: np.ndarray) -> bool:
    return bool(x.min() == x.max())


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum_i a_i b_i`` with numpy's own (pairwise) summation, not BLAS: ``np.dot`` of two
    vectors goes through multithreaded OpenBLAS, whose threads cost 24 ms for 30,000 values on
    a busy 2-core machine against 0.02 ms here (measured), and that every simulation step."""
    return float(np.multiply(a, b).sum())


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


# ---------------------------------------------------------------------- paper 000
def mae(allocation: ArrayLike, target: ArrayLike) -> float:
    """Target deviation ``MAE = (1/N) * sum_i |y_i - t_i|`` in staff (paper 000 Eq. 8).

    Args:
        allocation: staff per hospital ``y``, shape ``(n,)``.
        target: target staff per hospital ``t``, shape ``(n,)``.

    Lower is better; 0 when every hospital has exactly its target.
    """
    y, t = _pair(allocation, target, ("allocation", "target"))
    return float(np.mean(np.abs(y - t)))  # paper 000 Eq. (8)


def _gini(x: np.ndarray) -> float:
    top = x.max()
    if top == x.min():
        return 0.0
    n = x.shape[0]
    y = np.sort(x / top)
    # paper 000 Eq. (9), rearranged: sum_i cumsum_i = (N + 1) S - sum_j j y_(j), hence
    # G = (2 sum_j j y_(j) / S - (N + 1)) / N = sum_j (2j - N - 1) y_(j) / (N S).
    weights = 2.0 * np.arange(1, n + 1, dtype=np.float64) - (n + 1)
    value = float(_dot(weights, y) / (n * y.sum()))
    return min(max(value, 0.0), 1.0 - 1.0 / n)


def gini(values: ArrayLike) -> float:
    """Gini index of ``values`` (paper 000 Eq. 9), in ``[0, 1 - 1/N]``.

    With ``y_(1) <= ... <= y_(N)`` sorted ascending and ``S = sum_j y_j``::

        G = (1/N) * (N + 1 - 2 * sum_i (sum_{j<=i} y_(j)) / S)            # paper 000 Eq. (9)

    Relation to paper 003 Eq. (7b), ``G = sum_i sum_j |x_i - x_j| / (2 N^2 mean)``: they are
    *identical*, with no ``1/N`` correction between them. Swapping the double sum,
    ``sum_i sum_{j<=i} y_(j) = sum_j (N - j + 1) y_(j) = (N + 1) S - sum_j j y_(j)``, so Eq. (9)
    equals ``sum_j (2j - N - 1) y_(j) / (N S)``; and ``sum_i sum_j |y_i - y_j| =
    2 sum_j (2j - N - 1) y_(j)``, which turns Eq. (7b) into the same expression. Both therefore
    peak at ``1 - 1/N`` (all staff in one hospital), not 1. The code evaluates the weighted-sum
    form (one dot product after the sort, O(N log N)). All zeros, all equal and ``N = 1`` give 0.

    Lower is more equal.
    """
    return _gini(_values(values, "values"))


# ---------------------------------------------------------------------- coverage
def _coverage(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    ratio = np.ones_like(y)
    np.divide(y, t, out=ratio, where=t > 0)
    return ratio


def coverage(allocation: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Coverage of need per hospital, ``y_i / t_i``, shape ``(n,)``.

    A hospital with target ``t_i = 0`` needs nobody, so its need is fully met whatever it holds:
    its coverage is defined as 1 (finite; it then counts as perfectly covered in every
    coverage-based index). Staff parked at such a hospital still shows in :func:`mae` and
    :func:`gini` (on staff counts), not in coverage.
    """
    y, t = _pair(allocation, target, ("allocation", "target"))
    return _coverage(y, t)


def coverage_gini(allocation: ArrayLike, target: ArrayLike) -> float:
    """Gini index (paper 000 Eq. 9) of the coverage ``y / t``; see :func:`coverage`.

    0 when every hospital covers the same fraction of its target; lower is better.
    """
    y, t = _pair(allocation, target, ("allocation", "target"))
    return _gini(_coverage(y, t))


# ---------------------------------------------------------------------- paper 003 Eq. 7
def _cv(x: np.ndarray) -> float:
    top = x.max()
    if top == x.min():
        return 0.0
    r = x / top
    n = r.shape[0]
    value = float(np.std(r) / np.mean(r))  # paper 003 Eq. (7a)
    return min(max(value, 0.0), float(np.sqrt(n - 1)))


def cv(values: ArrayLike) -> float:
    """Coefficient of variation ``CV = sigma / mean`` (paper 003 Eq. 7a).

    ``sigma`` is the population standard deviation (divisor N). Range ``[0, sqrt(N - 1)]``;
    0 for all-equal values (all zeros included). Lower is more equal.
    """
    return _cv(_values(values, "values"))


def _jain(x: np.ndarray) -> float:
    n = x.shape[0]
    top = x.max()
    if top == x.min():
        return 1.0
    r = x / top
    value = float(r.sum() ** 2 / (n * _dot(r, r)))  # paper 003 Eq. (7c)
    return min(max(value, 1.0 / n), 1.0)


def jain(values: ArrayLike) -> float:
    """Jain's fairness index ``J = (sum_i x_i)^2 / (N * sum_i x_i^2)`` (paper 003 Eq. 7c).

    Range ``[1/N, 1]``; 1 when all values are equal (all zeros are equal too, so 1), ``1/N`` when
    one hospital holds everything. Higher is more equal.
    """
    return _jain(_values(values, "values"))


def _theil(x: np.ndarray) -> float:
    top = x.max()
    if top == x.min():
        return 0.0
    n = x.shape[0]
    r = x / top
    r = r / r.mean()
    log_r = np.zeros_like(r)
    np.log(r, out=log_r, where=r > 0)  # 0 * log 0 = 0
    value = float(_dot(r, log_r) / n)  # paper 003 Eq. (7d)
    return min(max(value, 0.0), float(np.log(n)))


def theil(values: ArrayLike) -> float:
    """Theil's T index ``T = (1/N) sum_i (x_i/mean) log(x_i/mean)`` (paper 003 Eq. 7d).

    ``0 * log 0 = 0`` (its limit). Range ``[0, log N]``; 0 for all-equal values (all zeros
    included). Lower is more equal.
    """
    return _theil(_values(values, "values"))


def _atkinson(x: np.ndarray, epsilon: float) -> float:
    top = x.max()
    if top == x.min():
        return 0.0
    r = x / top
    r = r / r.mean()
    has_zero = bool((r == 0).any())
    if epsilon == 1.0:
        if has_zero:
            return 1.0  # the geometric mean is 0
        equally_distributed = float(np.exp(np.mean(np.log(r))))
    else:
        power = 1.0 - epsilon
        if power > 0:
            # r <= N, so r ** power stays finite; mean(r ** power) <= 1 by Jensen.
            equally_distributed = float(np.mean(r**power) ** (1.0 / power))
        else:
            if has_zero:
                return 1.0  # 0 ** (negative power) is infinite: the welfare-equivalent is 0
            # log domain, so tiny shares raised to a large negative power cannot overflow
            z = power * np.log(r)
            peak = z.max()
            log_mean = peak + np.log(np.exp(z - peak).sum()) - np.log(r.shape[0])
            equally_distributed = float(np.exp(log_mean / power))
    return min(max(1.0 - equally_distributed, 0.0), 1.0)


def atkinson(values: ArrayLike, epsilon: float = 0.5) -> float:
    """Atkinson index with inequality aversion ``epsilon >= 0`` (paper 003 Eq. 7e for 1/2).

    For ``epsilon != 1``::

        A = 1 - [ (1/N) sum_i (x_i/mean)^(1 - epsilon) ]^(1 / (1 - epsilon))  # paper 003 Eq. (7e)

    which for ``epsilon = 1/2`` is ``1 - (sum_i sqrt(x_i))^2 / (N^2 mean)``. For ``epsilon = 1``
    it is ``1 - geometric_mean(x) / mean``. Range ``[0, 1]``; 0 for all-equal values (all zeros
    included). A zero value makes ``A = 1`` when ``epsilon >= 1`` (the welfare-equivalent income
    is 0). ``epsilon = 0`` gives 0 (no aversion). Lower is more equal.

    Raises:
        MetricError: ``epsilon`` negative or not finite.
    """
    epsilon = _parameter(epsilon, "epsilon")
    return _atkinson(_values(values, "values"), epsilon)


# ---------------------------------------------------------------------- MRE suite
@dataclass(frozen=True, eq=False)
class MREResult:
    """The identity-aware equity suite of paper 003 section 3.2 for one outcome vector ``x``.

    Arrays have shape ``(n,)`` (or ``(k,)`` for index lists) and are read-only. Index order is the
    input order: nothing is sorted, so ``excess[i]`` belongs to identity ``i``.

    Attributes:
        tau: tolerance band half-width, relative to the mean.
        mean: ``mean(x)``.
        excess: ``e_i = [|x_i - mean| - tau * mean]_+`` (paper 003 Eq. 2), ``(n,)``.
        total_excess: ``E = sum_i e_i``.
        inc_rate: fraction of identities with ``e_i > 0`` (paper 003 Eq. 3).
        q_inc: ``1(e_i > 0) / #{j: e_j > 0}`` (paper 003 Eq. 4); uniform ``1/N`` when nobody is
            outside the band (so that ``h_inc = 0``).
        h_inc: ``0.5 * sum_i |q_inc_i - 1/N|`` (paper 003 Eq. 5), in ``[0, 1 - 1/N]``.
        q_mag: ``e_i / E`` (paper 003 section 3.2.2); uniform ``1/N`` when ``E = 0``.
        h_mag: ``0.5 * sum_i |q_mag_i - 1/N|`` (paper 003 Eq. 6), in ``[0, 1 - 1/N]``.
        h: MRE ``H = 0.5 * ||e - E u||_1`` (paper 003 section 3.2.3), equal to
            ``0.5 * sum_i |e_i - mean(e)|`` (Proposition 1) and to ``E * h_mag``: the least
            excess mass that must move so that every identity carries the same excess.
        h_normalised: ``H / N`` (paper 003 section 3.2.3); in the units of ``x``.
        outside: indices with ``e_i > 0`` (outside the band), ascending, ``(k,)`` int64.
        above: indices outside the band *above* the mean (over-served).
        below: indices outside the band *below* the mean (under-served).
        total_excess_above: ``sum of e_i`` over ``above`` (the directional split of section 3.3).
        total_excess_below: ``sum of e_i`` over ``below``.
        outside_names, above_names, below_names: the same as names, when ``names`` was given.
    """

    tau: float
    mean: float
    excess: np.ndarray
    total_excess: float
    inc_rate: float
    q_inc: np.ndarray
    h_inc: float
    q_mag: np.ndarray
    h_mag: float
    h: float
    h_normalised: float
    outside: np.ndarray
    above: np.ndarray
    below: np.ndarray
    total_excess_above: float
    total_excess_below: float
    outside_names: tuple[str, ...] | None = None
    above_names: tuple[str, ...] | None = None
    below_names: tuple[str, ...] | None = None

    @property
    def n(self) -> int:
        """Number of identities (hospitals)."""
        return int(self.excess.shape[0])


def _mre(x: np.ndarray, tau: float, names: tuple[str, ...] | None = None) -> MREResult:
    n = x.shape[0]
    uniform = 1.0 / n
    mean = float(x.mean())
    deviation = x - mean
    excess = np.abs(deviation) - tau * mean  # paper 003 Eq. (2), before the [.]_+
    excess[excess <= EXCESS_RTOL * (1.0 + tau) * mean] = 0.0
    flagged = excess > 0
    count = int(np.count_nonzero(flagged))
    total_excess = float(excess.sum())
    inc_rate = count / n  # paper 003 Eq. (3)
    if count > 0:
        q_inc = flagged / float(count)  # paper 003 Eq. (4)
        # TV of the selection profile: count entries of 1/count, n - count of 0
        h_inc = 0.5 * (count * abs(1.0 / count - uniform) + (n - count) * uniform)  # Eq. (5)
        q_mag = excess / total_excess
        h_mag = float(0.5 * np.abs(q_mag - uniform).sum())  # paper 003 Eq. (6)
        h = float(0.5 * np.abs(excess - total_excess * uniform).sum())  # paper 003 sec. 3.2.3
    else:
        q_inc = np.full(n, uniform)
        q_mag = np.full(n, uniform)
        h_inc = h_mag = h = 0.0
    h_inc = min(max(h_inc, 0.0), 1.0 - uniform)
    h_mag = min(max(h_mag, 0.0), 1.0 - uniform)
    outside = np.flatnonzero(flagged)
    is_above = deviation[outside] > 0
    above = outside[is_above]
    below = outside[~is_above]
    total_above = float(excess[above].sum())
    total_below = float(excess[below].sum())

    def pick(index: np.ndarray) -> tuple[str, ...] | None:
        return None if names is None else tuple(names[i] for i in index)

    return MREResult(
        tau=tau,
        mean=mean,
        excess=_readonly(excess),
        total_excess=total_excess,
        inc_rate=inc_rate,
        q_inc=_readonly(q_inc),
        h_inc=float(h_inc),
        q_mag=_readonly(q_mag),
        h_mag=h_mag,
        h=h,
        h_normalised=h / n,
        outside=_readonly(outside),
        above=_readonly(above),
        below=_readonly(below),
        total_excess_above=total_above,
        total_excess_below=total_below,
        outside_names=pick(outside),
        above_names=pick(above),
        below_names=pick(below),
    )


def mre(values: ArrayLike, tau: float = 0.1, names: Sequence[str] | None = None) -> MREResult:
    """The MRE equity suite of paper 003 section 3.2 for outcomes ``values``, shape ``(n,)``.

    With ``mean = (1/N) sum_i x_i`` and ``u = (1/N, ..., 1/N)``:

    - ``e_i = [|x_i - mean| - tau * mean]_+`` -- paper 003 Eq. (2); the band
      ``[(1 - tau) mean, (1 + tau) mean]`` is inclusive (see :data:`EXCESS_RTOL`);
    - ``IncRate = (1/N) sum_i 1(e_i > 0)`` -- Eq. (3);
    - ``q_inc_i = 1(e_i > 0) / sum_j 1(e_j > 0)``, ``H_inc = 0.5 sum_i |q_inc_i - u_i|`` --
      Eq. (4), (5);
    - ``E = sum_i e_i``, ``q_mag_i = e_i / E``, ``H_mag = 0.5 sum_i |q_mag_i - u_i|`` -- Eq. (6);
    - ``H = 0.5 ||e - E u||_1`` and ``H / N`` -- section 3.2.3.

    When nobody is outside the band (``E = 0``), ``q_inc`` and ``q_mag`` are defined as the
    uniform vector ``u`` (the paper defines them only when someone is flagged), so ``H_inc``,
    ``H_mag`` and ``H`` are all 0: no excess means nothing to reallocate. ``H = E * H_mag``
    always holds.

    Args:
        values: outcome per identity ``x``, shape ``(n,)``, finite and >= 0 (marra passes
            coverage ``y / t``).
        tau: relative tolerance band, finite and >= 0 (default 0.1).
        names: optional names, one per identity, used for ``*_names`` in the result.

    Raises:
        MetricError: bad ``values``, ``tau`` or ``names`` (naming which).
    """
    x = _values(values, "values")
    tau = _parameter(tau, "tau")
    name_tuple = None
    if names is not None:
        name_tuple = tuple(str(name) for name in names)
        if len(name_tuple) != x.shape[0]:
            raise MetricError(f"names: has {len(name_tuple)} entries but values has {x.shape[0]}")
    return _mre(x, tau, name_tuple)


# ---------------------------------------------------------------------- operational
def _minima_shortfall(y: np.ndarray, m: np.ndarray, atol: float) -> tuple[int, float]:
    missing = m - y
    short = missing > atol
    return int(np.count_nonzero(short)), float(missing[short].sum())


def minima_shortfall(
    allocation: ArrayLike, minimum: ArrayLike, *, atol: float = 1e-9
) -> tuple[int, float]:
    """How far an allocation falls short of the minima.

    Returns ``(count, total)``: the number of hospitals with ``y_i < m_i - atol`` and the staff
    they miss in all, ``sum_i (m_i - y_i)`` over those hospitals. ``atol`` (default ``1e-9``)
    keeps floating-point noise from a continuous solver (``y_i = m_i - 1e-15``) from being
    reported as a shortfall. ``(0, 0.0)`` means every minimum is met; lower is better.
    """
    y, m = _pair(allocation, minimum, ("allocation", "minimum"))
    return _minima_shortfall(y, m, _parameter(atol, "atol"))


def transfer_volume(before: ArrayLike, after: ArrayLike) -> float:
    """Staff that change hospital: ``sum_i max(0, after_i - before_i)``.

    Every arrival was a departure elsewhere, so when ``sum(before) == sum(after)`` this equals
    ``0.5 * sum_i |after_i - before_i|`` (half the L1 change). When the totals differ (a shock
    removed staff) it counts only the arrivals.
    """
    b, a = _pair(before, after, ("before", "after"))
    return float(np.maximum(a - b, 0.0).sum())


# ---------------------------------------------------------------------- report
#: The keys of :func:`report`, in display order.
METRIC_KEYS: tuple[str, ...] = (
    "mae",
    "gini",
    "coverage_gini",
    "cv",
    "jain",
    "theil",
    "atkinson",
    "mre",
    "mre_normalised",
    "inc_rate",
    "h_inc",
    "h_mag",
    "total_excess",
    "minima_shortfall",
    "minima_shortfall_count",
    "moved",
)

#: One line per report key: what it measures and which direction is better.
METRIC_DESCRIPTIONS: dict[str, str] = {
    "mae": "mean |staff - target| per hospital, in staff (paper 000 Eq. 8); lower is better",
    "gini": "Gini index of staff counts (paper 000 Eq. 9), 0..1-1/N; lower is better",
    "coverage_gini": "Gini index of coverage staff/target; lower is better (0 = equal coverage)",
    "cv": "coefficient of variation of coverage (paper 003 Eq. 7a); lower is better",
    "jain": "Jain index of coverage (paper 003 Eq. 7c), 1/N..1; higher is better",
    "theil": "Theil T index of coverage (paper 003 Eq. 7d), 0..log N; lower is better",
    "atkinson": "Atkinson index of coverage, epsilon 1/2 (paper 003 Eq. 7e), 0..1; lower is better",
    "mre": "coverage excess that must move to share it evenly (MRE H, paper 003); lower is better",
    "mre_normalised": "MRE divided by the number of hospitals (H/N, paper 003); lower is better",
    "inc_rate": "share of hospitals with coverage outside mean +-tau (paper 003 Eq. 3); lower is "
    "better",
    "h_inc": "concentration of who is outside the band (paper 003 Eq. 5), 0..1-1/N; lower is "
    "better",
    "h_mag": "concentration of how much excess each carries (paper 003 Eq. 6), 0..1-1/N; lower "
    "is better",
    "total_excess": "total coverage outside the band, E (paper 003 Eq. 2); lower is better",
    "minima_shortfall": "staff missing to bring every hospital to its minimum; lower is better",
    "minima_shortfall_count": "hospitals below their minimum; lower is better (0 = all met)",
    "moved": "staff that change hospital, sum max(0, after - before); lower is better",
}


def report(
    network: HospitalNetwork,
    allocation: ArrayLike,
    *,
    tau: float = 0.1,
    before: ArrayLike | None = None,
) -> dict[str, float]:
    """Every metric of one allocation of ``network``, keyed as :data:`METRIC_KEYS`.

    ``mae`` and ``gini`` are on staff ``y`` (paper 000 Eq. 8, 9); ``coverage_gini``, ``cv``,
    ``jain``, ``theil``, ``atkinson`` (epsilon 1/2) and the MRE suite (``mre``,
    ``mre_normalised``, ``inc_rate``, ``h_inc``, ``h_mag``, ``total_excess``, with tolerance
    ``tau``) are on coverage ``y / t`` (see :func:`coverage`); ``minima_shortfall`` and
    ``minima_shortfall_count`` come from :func:`minima_shortfall`; ``moved`` is
    ``transfer_volume(before, allocation)`` with ``before`` defaulting to ``network.current``.

    Args:
        network: the hospitals (its ``target``, ``minimum`` and ``current`` are used).
        allocation: staff per hospital after reallocation ``y``, shape ``(network.n,)``.
        tau: MRE tolerance band (default 0.1).
        before: staff per hospital before, shape ``(network.n,)``; default ``network.current``.

    Returns:
        ``{key: float}`` in the order of :data:`METRIC_KEYS`; every value is finite.
    """
    y, t = _pair(allocation, network.target, ("allocation", "network.target"))
    tau = _parameter(tau, "tau")
    if before is None:
        start = np.asarray(network.current, dtype=np.float64)
    else:
        start = _values(before, "before")
    if start.shape != y.shape:
        raise MetricError(f"before and allocation: shapes differ, {start.shape} vs {y.shape}")
    cover = _coverage(y, t)
    suite = _mre(cover, tau)
    count, missing = _minima_shortfall(y, np.asarray(network.minimum, dtype=np.float64), 1e-9)
    values = {
        "mae": float(np.mean(np.abs(y - t))),  # paper 000 Eq. (8)
        "gini": _gini(y),  # paper 000 Eq. (9)
        "coverage_gini": _gini(cover),
        "cv": _cv(cover),  # paper 003 Eq. (7a)
        "jain": _jain(cover),  # paper 003 Eq. (7c)
        "theil": _theil(cover),  # paper 003 Eq. (7d)
        "atkinson": _atkinson(cover, 0.5),  # paper 003 Eq. (7e)
        "mre": suite.h,
        "mre_normalised": suite.h_normalised,
        "inc_rate": suite.inc_rate,
        "h_inc": suite.h_inc,
        "h_mag": suite.h_mag,
        "total_excess": suite.total_excess,
        "minima_shortfall": missing,
        "minima_shortfall_count": float(count),
        "moved": float(np.maximum(y - start, 0.0).sum()),
    }
    return {key: values[key] for key in METRIC_KEYS}
