"""Tests for marra.metrics: hand-worked values, properties, edge cases and bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from marra.metrics import (
    METRIC_DESCRIPTIONS,
    METRIC_KEYS,
    MetricError,
    MREResult,
    atkinson,
    coverage,
    coverage_gini,
    cv,
    gini,
    jain,
    mae,
    minima_shortfall,
    mre,
    report,
    theil,
    transfer_volume,
)
from marra.network import HospitalNetwork, generate_network

ANONYMOUS_INDICES = {
    "gini": gini,
    "cv": cv,
    "jain": jain,
    "theil": theil,
    "atkinson": atkinson,
}

# Non-negative staff-like values without subnormals, so that rescaling is exact enough to test.
value = st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e3))
vectors = st.lists(value, min_size=1, max_size=30)
positive_vectors = st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=30)
taus = st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5, 1.0])
PROPERTY = settings(deadline=None, max_examples=60)


def literal_eq9(values: list[float]) -> float:
    """Paper 000 Eq. (9) written out term by term, O(N^2)."""
    y = sorted(values)
    n, total = len(y), sum(y)
    return (n + 1 - 2 * sum(sum(y[: i + 1]) / total for i in range(n))) / n


def pairwise_eq7b(values: list[float]) -> float:
    """Paper 003 Eq. (7b): sum_i sum_j |x_i - x_j| / (2 N^2 mean), O(N^2)."""
    x = np.asarray(values)
    n = len(x)
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n * x.mean()))


# ---------------------------------------------------------------------- hand-worked values
def test_mae_is_mean_absolute_gap_to_target():
    # |3-4| + |5-4| + |10-10| = 2 over N = 3 hospitals -> 2/3
    assert mae([3, 5, 10], [4, 4, 10]) == pytest.approx(2 / 3)


def test_gini_of_one_to_four_by_eq9():
    # y = 1,2,3,4, S = 10; cumulative shares 0.1, 0.3, 0.6, 1.0 sum to 2.0
    # G = (1/4) * (4 + 1 - 2 * 2.0) = 0.25
    assert gini([4, 1, 3, 2]) == pytest.approx(0.25)


def test_gini_peaks_at_one_minus_one_over_n():
    # y = 0,0,0,1: cumulative shares 0,0,0,1 sum to 1; G = (1/4)(5 - 2) = 0.75 = 1 - 1/N
    assert gini([0, 0, 7, 0]) == pytest.approx(0.75)


def test_gini_eq9_equals_mean_difference_eq7b_on_hand_case():
    # Eq. (7b) on 1,2,3,4: pairs i<j give |diffs| 1,2,3,1,2,1 = 10, doubled 20;
    # 20 / (2 * 16 * 2.5) = 0.25, the same as Eq. (9): the two definitions coincide.
    assert pairwise_eq7b([1, 2, 3, 4]) == pytest.approx(0.25)
    assert literal_eq9([1, 2, 3, 4]) == pytest.approx(0.25)


def test_cv_uses_population_std():
    # [1, 3]: mean 2, population std sqrt(((1-2)^2 + (3-2)^2) / 2) = 1 -> CV = 0.5
    # (the sample std would give sqrt(2)/2 ~ 0.707)
    assert cv([1, 3]) == pytest.approx(0.5)


def test_jain_hand_case():
    # [1, 3]: (1 + 3)^2 / (2 * (1 + 9)) = 16 / 20 = 0.8
    assert jain([1, 3]) == pytest.approx(0.8)


def test_theil_hand_case():
    # [1, 3]: mean 2, ratios 1/2 and 3/2
    # T = (1/2) * (0.5 ln 0.5 + 1.5 ln 1.5) = 0.75 ln 3 - ln 2 ~ 0.1308120
    assert theil([1, 3]) == pytest.approx(0.75 * math.log(3) - math.log(2))


def test_theil_treats_zero_log_zero_as_zero():
    # [0, 2]: ratios 0 and 2; T = (1/2)(0 + 2 ln 2) = ln 2 = log N, the maximum
    assert theil([0, 2]) == pytest.approx(math.log(2))


def test_atkinson_hand_cases():
    # [1, 4], mean 2.5
    # eps = 1/2 (Eq. 7e): 1 - (sqrt 1 + sqrt 4)^2 / (N^2 mean) = 1 - 9 / 10 = 0.1
    assert atkinson([1, 4]) == pytest.approx(0.1)
    # eps = 1: 1 - geometric mean / mean = 1 - 2 / 2.5 = 0.2
    assert atkinson([1, 4], epsilon=1) == pytest.approx(0.2)
    # eps = 2: 1 - harmonic mean / mean = 1 - (2 / (1 + 1/4)) / 2.5 = 1 - 1.6 / 2.5 = 0.36
    assert atkinson([1, 4], epsilon=2) == pytest.approx(0.36)
    # eps = 0: no aversion, 1 - mean / mean = 0
    assert atkinson([1, 4], epsilon=0) == pytest.approx(0.0, abs=1e-15)


def test_atkinson_with_a_zero():
    # [0, 4], eps = 1/2: 1 - (0 + 2)^2 / (4 * 2) = 0.5
    assert atkinson([0, 4]) == pytest.approx(0.5)
    # eps >= 1: the geometric / harmonic mean is 0, so A = 1
    assert atkinson([0, 4], epsilon=1) == 1.0
    assert atkinson([0, 4], epsilon=3) == 1.0


def test_coverage_is_staff_over_target_and_one_for_zero_target():
    # 5/10 = 0.5, 10/10 = 1; target 0: defined as 1 with or without staff
    cover = coverage([5, 10, 0, 3], [10, 10, 0, 0])
    np.testing.assert_array_equal(cover, [0.5, 1.0, 1.0, 1.0])


def test_coverage_gini_is_gini_of_ratios():
    # coverage 0.5, 1: S = 1.5, shares 1/3, 1 -> sum 4/3; G = (3 - 8/3) / 2 = 1/6
    assert coverage_gini([5, 10], [10, 10]) == pytest.approx(1 / 6)
    # same headcount Gini, but proportional staffing is perfectly equal coverage
    assert gini([10, 20]) > 0
    assert coverage_gini([10, 20], [5, 10]) == 0.0


def test_mre_suite_hand_case_tau_zero():
    # x = 0, 9, 10, 10, 11, 20: mean 10, tau 0 -> e = |x - 10| = 10, 1, 0, 0, 1, 10; E = 22
    # IncRate = 4/6; q_inc = 1/4 on {0,1,4,5}; H_inc = 4 * (1/4 - 1/6) = 1/3
    # q_mag = e / 22; H_mag = 2 * (10/22 - 1/6) = 19/33 (only entries above 1/6 count)
    # H = 0.5 * sum |e - 22/6| = 0.5 * 2 * (19/3 + 8/3 + 11/3) = 38/3 = E * H_mag; H/N = 19/9
    result = mre([0, 9, 10, 10, 11, 20], tau=0.0, names=["a", "b", "c", "d", "e", "f"])
    assert isinstance(result, MREResult)
    assert result.tau == 0.0 and result.mean == pytest.approx(10.0)
    np.testing.assert_allclose(result.excess, [10, 1, 0, 0, 1, 10])
    assert result.total_excess == pytest.approx(22.0)
    assert result.inc_rate == pytest.approx(4 / 6)
    np.testing.assert_allclose(result.q_inc, [0.25, 0.25, 0, 0, 0.25, 0.25])
    assert result.h_inc == pytest.approx(1 / 3)
    np.testing.assert_allclose(result.q_mag, np.array([10, 1, 0, 0, 1, 10]) / 22)
    assert result.h_mag == pytest.approx(19 / 33)
    assert result.h == pytest.approx(38 / 3)
    assert result.h_normalised == pytest.approx(19 / 9)
    # directional split: 11 and 20 are over-served, 0 and 9 under-served, 11 excess each side
    np.testing.assert_array_equal(result.outside, [0, 1, 4, 5])
    np.testing.assert_array_equal(result.above, [4, 5])
    np.testing.assert_array_equal(result.below, [0, 1])
    assert result.total_excess_above == pytest.approx(11.0)
    assert result.total_excess_below == pytest.approx(11.0)
    assert result.outside_names == ("a", "b", "e", "f")
    assert result.above_names == ("e", "f")
    assert result.below_names == ("a", "b")
    assert result.n == 6


def test_mre_band_edge_is_inclusive():
    # same x, tau 0.1: band [9, 11] -> 9 and 11 sit on the edge and are inside; e = 9,0,0,0,0,9
    # E = 18, mean(e) = 3: H = 0.5 * (6 + 6 + 4 * 3) = 12; IncRate = 2/6
    # q_inc = 1/2 on {0, 5}: H_inc = 2 * (1/2 - 1/6) = 2/3; H_mag equal (same profile)
    result = mre([0, 9, 10, 10, 11, 20], tau=0.1)
    np.testing.assert_allclose(result.excess, [9, 0, 0, 0, 0, 9])
    assert result.h == pytest.approx(12.0)
    assert result.inc_rate == pytest.approx(2 / 6)
    assert result.h_inc == pytest.approx(2 / 3)
    assert result.h_mag == pytest.approx(2 / 3)
    assert result.outside_names is None
    # 1.1 is stored as 1.1000000000000000888: floating noise at the edge flags nobody
    assert mre([0.9, 1.1], tau=0.1).inc_rate == 0.0


def test_mre_result_is_frozen_and_read_only():
    result = mre([1.0, 2.0, 6.0])
    with pytest.raises(AttributeError):
        result.h = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.excess[0] = 5.0


def test_minima_shortfall_counts_hospitals_and_missing_staff():
    # y = 5,3,0 vs m = 4,4,2: hospital 1 misses 1, hospital 2 misses 2 -> (2, 3.0)
    assert minima_shortfall([5, 3, 0], [4, 4, 2]) == (2, 3.0)
    assert minima_shortfall([4, 4], [4, 4]) == (0, 0.0)


def test_minima_shortfall_ignores_floating_noise():
    assert minima_shortfall([4 - 1e-13], [4]) == (0, 0.0)
    assert minima_shortfall([4 - 1e-6], [4], atol=1e-9)[0] == 1


def test_transfer_volume_counts_arrivals_and_is_half_the_l1_change():
    # 5,5,0 -> 3,4,3: arrivals 0 + 0 + 3 = 3; |changes| 2 + 1 + 3 = 6, half is 3
    before, after = [5, 5, 0], [3, 4, 3]
    assert transfer_volume(before, after) == 3.0
    assert transfer_volume(before, after) == 0.5 * np.abs(np.subtract(after, before)).sum()
    # a shock that only removes staff moves nobody
    assert transfer_volume([5, 5], [2, 5]) == 0.0


# ---------------------------------------------------------------------- paper 003's point
def test_cv_gini_jain_tie_while_mre_differs():
    # Construction: a = m + (-p, -q, q, p), b = m + (-r, -s, s, r) with m = 10.
    # Equal variance needs p^2 + q^2 = r^2 + s^2; equal Gini needs the rank-weighted sum
    # -3(m-p) - (m-q) + (m+q) + 3(m+p) = 6p + 2q equal, i.e. 3p + q = 3r + s.
    # (p, q) = (5, 0) reflected about the direction (3, 1) gives (r, s) = (4, 3).
    concentrated = np.array([5.0, 10.0, 10.0, 15.0])
    spread = np.array([6.0, 7.0, 13.0, 14.0])
    # mean 10 both; variance (25+0+0+25)/4 = (16+9+9+16)/4 = 12.5;
    # sum_{i<j} |diff| = 30 both -> Gini = 60 / (2 * 16 * 10) = 0.1875
    assert concentrated.mean() == spread.mean() == 10.0
    assert concentrated.std() == pytest.approx(spread.std())
    assert gini(concentrated) == pytest.approx(0.1875)
    assert gini(spread) == pytest.approx(0.1875)
    assert cv(concentrated) == pytest.approx(cv(spread))
    assert jain(concentrated) == pytest.approx(jain(spread))
    # tau = 0.1, band [9, 11]: concentrated e = 4,0,0,4 (E 8, H = 0.5 * 4 * 2 = 4);
    # spread e = 3,2,2,3 (E 10, mean 2.5, H = 0.5 * 4 * 0.5 = 1)
    a, b = mre(concentrated, tau=0.1), mre(spread, tau=0.1)
    assert a.h == pytest.approx(4.0)
    assert b.h == pytest.approx(1.0)
    assert a.inc_rate == pytest.approx(0.5) and b.inc_rate == pytest.approx(1.0)


# ---------------------------------------------------------------------- properties
@PROPERTY
@given(values=vectors)
def test_gini_is_eq9_and_eq7b(values):
    if sum(values) == 0:
        assert gini(values) == 0.0
        return
    assert gini(values) == pytest.approx(literal_eq9(values), abs=1e-9)
    assert gini(values) == pytest.approx(pairwise_eq7b(values), abs=1e-9)


@PROPERTY
@given(values=vectors, scale=st.floats(min_value=1e-2, max_value=1e2))
def test_anonymous_indices_are_scale_invariant(values, scale):
    scaled = [v * scale for v in values]
    for name, index in ANONYMOUS_INDICES.items():
        assert index(scaled) == pytest.approx(index(values), rel=1e-9, abs=1e-9), name
    for eps in (1.0, 2.0):
        assert atkinson(scaled, eps) == pytest.approx(atkinson(values, eps), rel=1e-9, abs=1e-9)


@PROPERTY
@given(data=st.data(), values=vectors, tau=taus)
def test_anonymous_indices_ignore_order(data, values, tau):
    order = data.draw(st.permutations(range(len(values))))
    shuffled = [values[i] for i in order]
    for name, index in ANONYMOUS_INDICES.items():
        assert index(shuffled) == pytest.approx(index(values), rel=1e-9, abs=1e-12), name
    first, second = mre(values, tau), mre(shuffled, tau)
    for field in ("h", "h_inc", "h_mag", "inc_rate", "total_excess"):
        assert getattr(second, field) == pytest.approx(getattr(first, field), abs=1e-9), field


@PROPERTY
@given(data=st.data(), values=vectors, tau=taus)
def test_mre_vectors_follow_their_identities(data, values, tau):
    order = np.array(data.draw(st.permutations(range(len(values)))), dtype=np.int64)
    first = mre(values, tau)
    second = mre(np.asarray(values)[order], tau)
    np.testing.assert_allclose(second.excess, first.excess[order], atol=1e-9)
    np.testing.assert_allclose(second.q_inc, first.q_inc[order], atol=1e-12)
    np.testing.assert_allclose(second.q_mag, first.q_mag[order], atol=1e-9)
    # identity i outside before <=> its new position is outside after
    np.testing.assert_array_equal(np.sort(order[second.outside]), first.outside)


@PROPERTY
@given(values=vectors, tau=taus)
def test_indices_stay_in_their_ranges(values, tau):
    n = len(values)
    assert 0.0 <= gini(values) <= 1.0 - 1.0 / n
    assert 1.0 / n <= jain(values) <= 1.0
    assert 0.0 <= cv(values) <= math.sqrt(n - 1) + 1e-12
    assert 0.0 <= theil(values) <= math.log(n) + 1e-12
    assert 0.0 <= atkinson(values) <= 1.0
    result = mre(values, tau)
    assert 0.0 <= result.h_inc <= 1.0 - 1.0 / n
    assert 0.0 <= result.h_mag <= 1.0 - 1.0 / n
    assert 0.0 <= result.inc_rate <= 1.0
    assert result.q_inc.sum() == pytest.approx(1.0)
    assert result.q_mag.sum() == pytest.approx(1.0)
    assert len(result.above) + len(result.below) == len(result.outside)


@PROPERTY
@given(values=vectors, tau=taus)
def test_proposition_1_mre_is_half_l1_distance_to_mean_excess(values, tau):
    result = mre(values, tau)
    e = np.asarray(result.excess)
    assert result.h == pytest.approx(0.5 * np.abs(e - e.mean()).sum(), abs=1e-9)
    # what must leave the identities above the mean excess is exactly H
    assert result.h == pytest.approx(np.maximum(e - e.mean(), 0).sum(), abs=1e-9)
    assert result.h == pytest.approx(result.total_excess * result.h_mag, abs=1e-9)
    assert result.h_normalised == pytest.approx(result.h / len(values))


@settings(deadline=None, max_examples=25)
@given(values=st.lists(value, min_size=2, max_size=6), tau=taus)
def test_proposition_1_mre_is_the_minimum_reassignment(values, tau):
    # Prop. 1 as a transport problem: move mass f_ij >= 0 from identity i to j (i != j) so that
    # every identity ends at mean(e); the least total mass moved equals H.
    result = mre(values, tau)
    e = np.asarray(result.excess)
    n = len(e)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    balance = np.zeros((n, len(pairs)))
    for k, (i, j) in enumerate(pairs):
        balance[i, k] -= 1.0
        balance[j, k] += 1.0
    solution = linprog(np.ones(len(pairs)), A_eq=balance, b_eq=e.mean() - e, method="highs")
    assert solution.status == 0
    assert result.h == pytest.approx(solution.fun, abs=1e-7)


@PROPERTY
@given(values=positive_vectors, data=st.data())
def test_pigou_dalton_transfer_never_raises_gini(values, data):
    poorer, richer = int(np.argmin(values)), int(np.argmax(values))
    gap = values[richer] - values[poorer]
    fraction = data.draw(st.floats(min_value=0.0, max_value=0.5))
    moved = list(values)
    moved[richer] -= fraction * gap
    moved[poorer] += fraction * gap
    assert gini(moved) <= gini(values) + 1e-12


# ---------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("values", [[3.0] * 5, [0.1] * 7, [0.0] * 4, [42.0], [0.0]])
def test_equal_values_are_perfect_equality(values):
    assert gini(values) == 0.0
    assert cv(values) == 0.0
    assert theil(values) == 0.0
    for eps in (0.5, 1.0, 2.0):
        assert atkinson(values, eps) == 0.0
    assert jain(values) == 1.0
    result = mre(values, tau=0.0)
    assert result.h == result.h_inc == result.h_mag == result.inc_rate == 0.0
    assert result.total_excess == 0.0
    np.testing.assert_allclose(result.q_inc, 1.0 / len(values))
    assert len(result.outside) == 0


def test_no_excess_gives_uniform_profiles_and_zero_mre():
    # all within +-10% of mean 1.0: E = 0, so q_inc = q_mag = u and H = H_inc = H_mag = 0
    result = mre([0.95, 1.05, 1.0], tau=0.1)
    assert result.total_excess == 0.0
    np.testing.assert_allclose(result.q_mag, [1 / 3] * 3)
    np.testing.assert_allclose(result.q_inc, [1 / 3] * 3)
    assert result.h == result.h_inc == result.h_mag == 0.0


def test_all_zero_allocation_and_targets_report_is_finite():
    network = HospitalNetwork(current=[0, 0], minimum=[0, 0], target=[0, 0])
    values = report(network, [0, 0])
    assert all(math.isfinite(v) for v in values.values())
    assert values["coverage_gini"] == 0.0 and values["jain"] == 1.0


def test_extreme_inputs_never_warn_or_give_nan():
    cases = [
        [1e-200, 2e-200],  # squares underflow without rescaling
        [1e-12, 1.0],
        [1e300, 1e300, 0.0],
        [0.0, 0.0, 5.0],
        [5e-324, 1.0],
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for values in cases:
            outputs = [index(values) for index in ANONYMOUS_INDICES.values()]
            outputs += [atkinson(values, eps) for eps in (0.0, 1.0, 2.0, 50.0)]
            outputs += [mre(values, tau).h for tau in (0.0, 0.1)]
            assert all(math.isfinite(x) for x in outputs), values
    assert jain([1e-200, 2e-200]) == pytest.approx(jain([1, 2]))
    assert atkinson([1e-12, 1.0], 50.0) == pytest.approx(1.0)


# ---------------------------------------------------------------------- report
def test_report_matches_the_individual_metrics():
    network = generate_network(12, seed=3)
    allocation = network.target.copy()
    allocation[0] = network.minimum[0] - 2  # one hospital below its minimum by 2
    values = report(network, allocation, tau=0.1)
    assert tuple(values) == METRIC_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
    cover = coverage(allocation, network.target)
    suite = mre(cover, tau=0.1)
    assert values["mae"] == pytest.approx(mae(allocation, network.target))
    assert values["gini"] == pytest.approx(gini(allocation))
    assert values["coverage_gini"] == pytest.approx(gini(cover))
    assert values["cv"] == pytest.approx(cv(cover))
    assert values["jain"] == pytest.approx(jain(cover))
    assert values["theil"] == pytest.approx(theil(cover))
    assert values["atkinson"] == pytest.approx(atkinson(cover, 0.5))
    assert values["mre"] == pytest.approx(suite.h)
    assert values["mre_normalised"] == pytest.approx(suite.h_normalised)
    assert values["inc_rate"] == pytest.approx(suite.inc_rate)
    assert values["h_inc"] == pytest.approx(suite.h_inc)
    assert values["h_mag"] == pytest.approx(suite.h_mag)
    assert values["total_excess"] == pytest.approx(suite.total_excess)
    assert values["minima_shortfall"] == 2.0
    assert values["minima_shortfall_count"] == 1.0
    assert values["moved"] == transfer_volume(network.current, allocation)


def test_report_moved_counts_from_before_when_given():
    network = HospitalNetwork(current=[5, 5, 0], minimum=[0, 0, 0], target=[4, 3, 3])
    assert report(network, [4, 3, 3])["moved"] == 3.0
    assert report(network, [4, 3, 3], before=[4, 3, 3])["moved"] == 0.0


def test_every_report_key_has_a_description_with_a_direction():
    assert set(METRIC_DESCRIPTIONS) == set(METRIC_KEYS)
    for key, text in METRIC_DESCRIPTIONS.items():
        assert ("lower is better" in text) != ("higher is better" in text), key


def test_report_on_a_million_hospitals_gives_finite_values():
    # Speed is measured in benchmarks/, not here; this pins that nothing overflows at scale.
    rng = np.random.default_rng(0)
    n = 1_000_000
    target = rng.integers(20, 81, n).astype(np.float64)
    current = np.round(target * rng.uniform(0.6, 1.4, n))
    network = HospitalNetwork(current=current, minimum=np.round(0.7 * target), target=target)
    allocation = np.maximum(current, network.minimum)
    values = report(network, allocation)
    assert all(math.isfinite(v) for v in values.values())


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("index", list(ANONYMOUS_INDICES.values()) + [mre])
def test_empty_values_are_rejected(index):
    with pytest.raises(MetricError, match=r"values: is empty"):
        index([])


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ([1.0, -2.0, 3.0], r"values: value at index 1 is -2, which is negative"),
        ([1.0, 2.0, float("nan")], r"values: value at index 2 is nan, not a finite number"),
        ([float("inf"), 1.0], r"values: value at index 0 is inf, not a finite number"),
        ([[1.0, 2.0]], r"values: expected a 1-D array"),
        (["x"], r"values: values must be numbers"),
    ],
)
def test_bad_values_name_the_argument_and_index(values, pattern):
    for index in list(ANONYMOUS_INDICES.values()) + [mre]:
        with pytest.raises(MetricError, match=pattern):
            index(values)


def test_metric_error_is_a_value_error():
    assert issubclass(MetricError, ValueError)


def test_two_argument_metrics_name_the_bad_argument():
    with pytest.raises(MetricError, match=r"allocation and target: shapes differ"):
        mae([1, 2], [1, 2, 3])
    with pytest.raises(MetricError, match=r"target: value at index 1 is -1"):
        coverage([1, 2], [1, -1])
    with pytest.raises(MetricError, match=r"allocation: is empty"):
        coverage_gini([], [])
    with pytest.raises(MetricError, match=r"minimum: value at index 0 is nan"):
        minima_shortfall([1], [float("nan")])
    with pytest.raises(MetricError, match=r"before and after: shapes differ"):
        transfer_volume([1, 2], [1])
    with pytest.raises(MetricError, match=r"after: value at index 1 is -3"):
        transfer_volume([1, 2], [1, -3])


def test_bad_parameters_are_named():
    with pytest.raises(MetricError, match=r"tau: must be a finite number >= 0"):
        mre([1, 2], tau=-0.1)
    with pytest.raises(MetricError, match=r"epsilon: must be a finite number >= 0"):
        atkinson([1, 2], epsilon=float("nan"))
    with pytest.raises(MetricError, match=r"names: has 1 entries but values has 2"):
        mre([1, 2], names=["only one"])


def test_report_rejects_an_allocation_of_the_wrong_length():
    network = HospitalNetwork(current=[1, 2], minimum=[0, 0], target=[1, 2])
    with pytest.raises(MetricError, match=r"allocation and network.target: shapes differ"):
        report(network, [1, 2, 3])
    with pytest.raises(MetricError, match=r"before and allocation: shapes differ"):
        report(network, [1, 2], before=[1])
    with pytest.raises(MetricError, match=r"allocation: value at index 0 is nan"):
        report(network, [float("nan"), 1])


def test_report_does_not_go_through_blas_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    """np.dot of two vectors runs on multithreaded OpenBLAS: 24 ms for 30,000 values on a busy
    2-core machine against 0.02 ms for numpy's own sum (issue 8, item 25); report() runs every
    simulation step."""
    network = generate_network(50, seed=1)
    expected = report(network, network.target)

    def no_blas(*args: object, **kwargs: object) -> None:
        raise AssertionError("np.dot called")

    monkeypatch.setattr(np, "dot", no_blas)
    assert report(network, network.target) == expected
