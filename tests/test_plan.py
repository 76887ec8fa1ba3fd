"""Tests for the transfer plan (``marra.strategies.transfer_plan``) and its transport solvers
(``marra.hospital.strategies.transport``).

Allocations are built directly (random conserving moves), never by the allocators, so these tests
pin down the plan alone.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marra.strategies.transfer_plan import (
    EARTH_RADIUS_KM,
    Plan,
    _integral_flows,
    _largest_first,
    haversine_km,
    plan,
    write_plan_csv,
)
from scipy.optimize import linprog

from marra.hospital.strategies import transport as transport_module
from marra.hospital.strategies.transport import (
    _BoxTree,
    _DualCheck,
    _lower_bound,
    _merge_sorted,
    _pair_km,
    _SimplexGaveUp,
    _sorted_unique,
    _sparse_emd,
    _tame,
    _transport_simplex,
    _tree_potentials,
    _violations,
    _window_sweep,
    _windows,
    sparse_transport,
    unit_vectors,
)
from marra.network import HospitalNetwork, default_network, generate_network
from marra.strategies import allocate

# the module itself, for its private helpers
plan_module = importlib.import_module("marra.strategies.transfer_plan")

KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180.0  # one degree of a great circle


# ---------------------------------------------------------------------- helpers
def _network(current, coords=None, names=None) -> HospitalNetwork:
    current = np.asarray(current, dtype=np.float64)
    zeros = np.zeros_like(current)
    return HospitalNetwork(current=current, minimum=zeros, target=zeros, coords=coords, names=names)


@st.composite
def instances(draw, *, integral: bool, with_coords: bool, max_n: int = 25):
    """A network and an allocation with the same total, made by random conserving moves."""
    n = draw(st.integers(1, max_n))
    if integral:
        current = np.array(draw(st.lists(st.integers(0, 60), min_size=n, max_size=n)), float)
    else:
        value = st.floats(0.0, 100.0, allow_nan=False, allow_subnormal=False)
        current = np.array(draw(st.lists(value, min_size=n, max_size=n)))
    allocation = current.copy()
    moves = draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.floats(0.0, 1.0)),
            max_size=3 * n,
        )
    )
    for i, j, share in moves:
        amount = math.floor(share * allocation[i]) if integral else share * allocation[i]
        allocation[i] -= amount
        allocation[j] += amount
    coords = None
    if with_coords:
        lat = st.floats(-70.0, 70.0, allow_nan=False)
        lon = st.floats(-180.0, 180.0, allow_nan=False)
        point = st.tuples(lat, lon)
        if draw(st.booleans()):  # few distinct places: many equal distances (ties)
            pool = draw(st.lists(point, min_size=1, max_size=3))
            coords = np.array([pool[draw(st.integers(0, len(pool) - 1))] for _ in range(n)])
        else:
            coords = np.array(draw(st.lists(point, min_size=n, max_size=n)))
    names = None
    if draw(st.booleans()):  # names whose order differs from the index order
        names = tuple(f"h{(7 * i) % n:03d}_{i}" for i in range(n))
    return _network(current, coords=coords, names=names), allocation


def _check_plan_invariants(network: HospitalNetwork, allocation: np.ndarray, result: Plan):
    """Properties every plan must have, whatever the method."""
    current = network.current
    change = allocation - current
    assert result.names == network.names
    assert np.all(result.counts > 0)
    assert np.intersect1d(result.senders, result.receivers).size == 0
    # senders lose, receivers gain: a plan never routes staff through a hospital
    assert np.all(change[result.senders] < 0)
    assert np.all(change[result.receivers] > 0)
    # a vertex of the transport polytope (and the largest-first matching) is a forest
    n_send = np.unique(result.senders).size
    n_take = np.unique(result.receivers).size
    assert len(result) <= max(0, n_send + n_take - 1)
    # no pair appears twice
    pairs = result.senders * network.n + result.receivers
    assert np.unique(pairs).size == len(result)
    # deterministic order: count descending, then sender name, then receiver name
    keys = [
        (-c, network.names[s], network.names[r])
        for s, r, c in zip(result.senders, result.receivers, result.counts, strict=True)
    ]
    assert keys == sorted(keys)
    if network.coords is None:
        assert result.distance_km is None and result.total_distance_km is None
    else:
        expected = haversine_km(network.coords[result.senders], network.coords[result.receivers])
        np.testing.assert_allclose(result.distance_km, expected, rtol=1e-12, atol=1e-9)
        assert result.total_distance_km == pytest.approx(
            float(np.sum(result.counts * expected)), rel=1e-12, abs=1e-9
        )


def _lp_min_distance(network: HospitalNetwork, allocation: np.ndarray) -> float:
    """The transport LP solved independently by scipy's HiGHS."""
    change = allocation - network.current
    senders, receivers = np.flatnonzero(change < 0), np.flatnonzero(change > 0)
    if senders.size == 0 or receivers.size == 0:
        return 0.0
    s, r = senders.size, receivers.size
    coords = network.coords
    cost = np.array(
        [[haversine_km(coords[i], coords[j]) for j in receivers] for i in senders]
    ).ravel()
    a_eq = np.zeros((s + r, s * r))
    for i in range(s):
        a_eq[i, i * r : (i + 1) * r] = 1.0
    for j in range(r):
        a_eq[s + j, j::r] = 1.0
    b_eq = np.concatenate([-change[senders], change[receivers]])
    b_eq[s:] *= b_eq[:s].sum() / b_eq[s:].sum()
    result = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert result.status == 0, result.message
    return float(result.fun)


def _naive_largest_first(change: np.ndarray) -> list[tuple[int, int, float]]:
    """Largest-first written the slow, obvious way: argmax (first index on ties) each round."""
    give = np.where(change < 0, -change, 0.0)
    take = np.where(change > 0, change, 0.0)
    out = []
    while give.max(initial=0.0) > 0 and take.max(initial=0.0) > 0:
        i, j = int(np.argmax(give)), int(np.argmax(take))
        moved = min(give[i], take[j])
        out.append((i, j, moved))
        give[i] -= moved
        take[j] -= moved
    return out


def _triples(result: Plan) -> list[tuple[int, int, float]]:
    return sorted(
        zip(result.senders.tolist(), result.receivers.tolist(), result.counts.tolist(), strict=True)
    )


# ---------------------------------------------------------------------- properties
@settings(deadline=None, max_examples=500)
@given(st.booleans().flatmap(lambda c: instances(integral=True, with_coords=c)))
def test_integral_plan_reaches_the_allocation_exactly(case):
    network, allocation = case
    result = plan(network, allocation)
    _check_plan_invariants(network, allocation, result)
    assert result.method == ("largest-first" if network.coords is None else "transport")
    assert np.array_equal(result.apply(network.current), allocation)
    assert np.array_equal(result.counts, np.round(result.counts))
    assert result.total_moved == float(np.maximum(0.0, allocation - network.current).sum())


@settings(deadline=None, max_examples=400)
@given(st.booleans().flatmap(lambda c: instances(integral=False, with_coords=c)))
def test_fractional_plan_reaches_the_allocation_to_1e9(case):
    network, allocation = case
    result = plan(network, allocation)
    _check_plan_invariants(network, allocation, result)
    scale = max(1.0, float(np.max(allocation)), float(np.max(network.current)))
    np.testing.assert_allclose(
        result.apply(network.current), allocation, rtol=0.0, atol=1e-9 * scale
    )
    moved = float(np.maximum(0.0, allocation - network.current).sum())
    assert result.total_moved == pytest.approx(moved, rel=1e-9, abs=1e-9 * scale)


@settings(deadline=None, max_examples=400)
@given(st.booleans().flatmap(lambda i: instances(integral=i, with_coords=True)))
def test_transport_plan_is_never_longer_than_largest_first(case):
    network, allocation = case
    best = plan(network, allocation, method="transport")
    greedy = plan(network, allocation, method="largest-first")
    _check_plan_invariants(network, allocation, greedy)
    assert greedy.method == "largest-first"
    assert best.total_distance_km <= greedy.total_distance_km * (1 + 1e-9) + 1e-9
    assert best.total_moved == pytest.approx(greedy.total_moved, rel=1e-12, abs=1e-9)


def _max_pair_km(network) -> float:
    coords = np.radians(network.coords)
    lat, lon = coords[:, 0], coords[:, 1]
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    h = np.sin(dlat / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dlon / 2) ** 2
    return float(2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))).max())


@settings(deadline=None, max_examples=250)
@given(st.booleans().flatmap(lambda i: instances(integral=i, with_coords=True, max_n=10)))
def test_transport_plan_matches_the_linear_program_optimum(case):
    network, allocation = case
    result = plan(network, allocation, method="transport")
    optimum = _lp_min_distance(network, allocation)
    # linprog (HiGHS) treats amounts below its feasibility tolerance (1e-7) as zero, so compare
    # to within what that tolerance can move over the longest route
    longest = max(_max_pair_km(network), 1.0)
    assert result.total_distance_km == pytest.approx(optimum, rel=1e-6, abs=2e-7 * longest)


@settings(deadline=None, max_examples=300)
@given(instances(integral=True, with_coords=False, max_n=30))
def test_largest_first_matches_a_naive_reference(case):
    network, allocation = case
    result = plan(network, allocation, method="largest-first")
    assert _triples(result) == sorted(_naive_largest_first(allocation - network.current))


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans().flatmap(lambda i: instances(integral=i, with_coords=True, max_n=40)),
    st.booleans(),
)
def test_sparse_transport_is_the_exact_optimum_with_its_certificate(case, windows):
    network, allocation = case
    # a dense level of at most 4 pairs: even these small plans go through the whole hierarchy
    # (coarsening, refinement, tamed duals, the dual check and column generation); with
    # ``windows`` every level also improves its first plan window by window
    with (
        mock.patch.object(transport_module, "_DENSE_LEVEL_CELLS", 4),
        mock.patch.object(transport_module, "_WINDOW_MIN_POINTS", 2 if windows else 10**9),
        mock.patch.object(transport_module, "_WINDOW_SWEEPS", (2, 4, 3)),
    ):
        sparse = plan(network, allocation, method="sparse-transport")
    _check_plan_invariants(network, allocation, sparse)
    assert sparse.method == "sparse-transport"
    scale = max(1.0, float(np.max(allocation)))
    np.testing.assert_allclose(sparse.apply(network.current), allocation, atol=1e-9 * scale)
    best = plan(network, allocation, method="transport")
    assert sparse.total_distance_km == pytest.approx(
        best.total_distance_km, rel=1e-9, abs=1e-6 + 1e-9 * scale
    )
    # the certificate: within 1e-7 km per staff moved (plus rounding) of the optimum
    assert sparse.optimality_gap_km <= 1e-7 * sparse.total_moved + 1e-9 * (
        1.0 + sparse.total_distance_km
    )
    assert best.optimality_gap_km <= 1e-6 * (1.0 + best.total_distance_km)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=12),
    st.lists(st.integers(0, 20), min_size=1, max_size=12),
    st.integers(0, 2**32 - 1),
)
def test_integral_repair_restores_exact_whole_marginals(supply, demand, seed):
    supply = np.array(supply, float)
    demand = np.array(demand, float)
    gap = supply.sum() - demand.sum()
    if gap > 0:
        demand[-1] += gap
    else:
        supply[-1] -= gap
    rows, cols, flows = _largest_first(supply, demand, 0.0)
    # already integral: passes through unchanged
    same = _integral_flows(rows, cols, flows, supply, demand)
    assert _sorted_flows(*same) == _sorted_flows(rows, cols, flows)
    # spoiled by float error, rounding in both directions and lost entries: repaired
    rng = np.random.default_rng(seed)
    noisy = flows + rng.uniform(-0.6, 0.6, size=flows.size)
    keep = rng.random(flows.size) > 0.2
    fixed_rows, fixed_cols, fixed = _integral_flows(
        rows[keep], cols[keep], noisy[keep], supply, demand
    )
    assert np.all(fixed > 0)
    assert np.array_equal(fixed, np.round(fixed))
    assert np.array_equal(np.bincount(fixed_rows, fixed, minlength=supply.size), supply)
    assert np.array_equal(np.bincount(fixed_cols, fixed, minlength=demand.size), demand)


def _sorted_flows(rows, cols, flows):
    triples = zip(np.asarray(rows).tolist(), np.asarray(cols).tolist(), flows.tolist(), strict=True)
    return sorted(triples)


# ---------------------------------------------------------------------- hand-worked examples
def test_three_hospitals_on_a_meridian_send_to_the_far_one_first():
    # A (lat 10) gives 4; B (lat 11, one degree away) takes 1; C (lat 12, two degrees) takes 3.
    network = _network(
        [10, 10, 10], coords=[[10.0, 5.0], [11.0, 5.0], [12.0, 5.0]], names=("A", "B", "C")
    )
    result = plan(network, [6, 11, 13])
    assert result.records() == [
        {"from": "A", "to": "C", "count": 3},
        {"from": "A", "to": "B", "count": 1},
    ]
    np.testing.assert_allclose(result.distance_km, [2 * KM_PER_DEGREE, KM_PER_DEGREE], rtol=1e-12)
    assert result.total_distance_km == pytest.approx(7 * KM_PER_DEGREE, rel=1e-12)


def test_four_hospitals_on_the_equator_transport_beats_largest_first():
    # A(lon 0) gives 3, B(lon 1) takes 5, C(lon 2) takes 3, D(lon 3) gives 5.
    # Largest-first: D->B 5 (2 degrees), A->C 3 (2 degrees) = 16 staff-degrees.
    # Optimum on a line (monotone): A->B 3, D->C 3, D->B 2 = 3 + 3 + 4 = 10 staff-degrees.
    coords = [[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]
    network = _network([10, 10, 10, 10], coords=coords, names=("A", "B", "C", "D"))
    allocation = [7, 15, 13, 5]
    best = plan(network, allocation)
    assert best.method == "transport"
    assert best.records() == [
        {"from": "A", "to": "B", "count": 3},
        {"from": "D", "to": "C", "count": 3},
        {"from": "D", "to": "B", "count": 2},
    ]
    assert best.total_distance_km == pytest.approx(10 * KM_PER_DEGREE, rel=1e-12)
    greedy = plan(network, allocation, method="largest-first")
    assert greedy.records() == [
        {"from": "D", "to": "B", "count": 5},
        {"from": "A", "to": "C", "count": 3},
    ]
    assert greedy.total_distance_km == pytest.approx(16 * KM_PER_DEGREE, rel=1e-12)


def test_largest_first_breaks_ties_by_hospital_index():
    # A and B both give 3 (tie: A first); C takes 2, D takes 4.
    # A->D 3; then B(3) with C(2) (C=2 > D=1): B->C 2; then B->D 1.
    network = _network([5, 5, 0, 0], names=("A", "B", "C", "D"))
    result = plan(network, [2, 2, 2, 4])
    assert result.method == "largest-first"
    assert result.records() == [
        {"from": "A", "to": "D", "count": 3},
        {"from": "B", "to": "C", "count": 2},
        {"from": "B", "to": "D", "count": 1},
    ]


def test_equal_counts_are_ordered_by_sender_then_receiver_name():
    # largest-first pairs by index (zeta->beta, alpha->gamma); the plan lists them by name
    network = _network([4, 4, 0, 0], names=("zeta", "alpha", "beta", "gamma"))
    result = plan(network, [0, 0, 4, 4])
    assert [(r["from"], r["to"]) for r in result.records()] == [
        ("alpha", "gamma"),
        ("zeta", "beta"),
    ]


def test_unchanged_allocation_gives_an_empty_plan():
    network = _network([3, 4], coords=[[50.0, 0.0], [51.0, 1.0]])
    result = plan(network, network.current)
    assert len(result) == 0
    assert result.total_moved == 0.0
    assert result.total_distance_km == 0.0
    assert result.records() == []
    assert np.array_equal(result.apply(network.current), network.current)


def test_float_noise_is_not_a_transfer():
    network = _network([0.1, 0.2, 0.3])
    result = plan(network, network.current * (1 + 1e-15))
    assert len(result) == 0


def test_fractional_counts_are_floats_in_records_and_csv(tmp_path: Path):
    network = _network([1.5, 0.0], names=("A", "B"))
    result = plan(network, [0.25, 1.25])
    assert result.records() == [{"from": "A", "to": "B", "count": 1.25}]
    assert isinstance(result.records()[0]["count"], float)
    assert not result.is_integral
    write_plan_csv(result, tmp_path / "plan.csv")
    assert (tmp_path / "plan.csv").read_text() == "from,to,count\nA,B,1.25\n"


def test_integral_counts_are_ints_in_records_and_frame():
    network = _network([5, 0], names=("A", "B"))
    result = plan(network, [2, 3])
    assert result.records() == [{"from": "A", "to": "B", "count": 3}]
    assert isinstance(result.records()[0]["count"], int)
    frame = result.to_frame()
    assert list(frame.columns) == ["from", "to", "count"]
    assert frame["count"].dtype == np.int64
    assert frame.to_dict("records") == [{"from": "A", "to": "B", "count": 3}]


def test_frame_and_csv_carry_distances_when_coordinates_are_known(tmp_path: Path):
    network = _network(
        [10, 10, 10], coords=[[10.0, 5.0], [11.0, 5.0], [12.0, 5.0]], names=("A", "B, east", "C")
    )
    result = plan(network, [6, 11, 13])
    frame = result.to_frame()
    assert list(frame.columns) == ["from", "to", "count", "distance_km"]
    assert frame["distance_km"].tolist() == pytest.approx([2 * KM_PER_DEGREE, KM_PER_DEGREE])
    path = tmp_path / "out" / "plan.csv"
    write_plan_csv(result, path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["from", "to", "count", "distance_km"],
        ["A", "C", "3", f"{2 * KM_PER_DEGREE:.3f}"],
        ["A", "B, east", "1", f"{KM_PER_DEGREE:.3f}"],
    ]
    assert pd.read_csv(path)["count"].tolist() == [3, 1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["plan.csv"]  # no temp file left
    assert result.records(with_distance=True)[1]["distance_km"] == pytest.approx(KM_PER_DEGREE)


def test_plan_is_deterministic():
    network = generate_network(200, seed=3)
    allocation = _rounded_targets(network)
    first, second = plan(network, allocation), plan(network, allocation)
    for field in ("senders", "receivers", "counts", "distance_km"):
        assert np.array_equal(getattr(first, field), getattr(second, field))


# ---------------------------------------------------------------------- distances
def test_haversine_agrees_with_the_dot_product_formula():
    rng = np.random.default_rng(0)
    p = np.column_stack([rng.uniform(-89, 89, 500), rng.uniform(-180, 180, 500)])
    q = np.column_stack([rng.uniform(-89, 89, 500), rng.uniform(-180, 180, 500)])
    unit = unit_vectors
    cosine = np.clip(np.sum(unit(p) * unit(q), axis=1), -1.0, 1.0)
    np.testing.assert_allclose(haversine_km(p, q), EARTH_RADIUS_KM * np.arccos(cosine), atol=1e-3)
    np.testing.assert_allclose(haversine_km(p, q), haversine_km(q, p), rtol=1e-12)
    assert np.all(haversine_km(p, p) == 0.0)
    assert haversine_km([0.0, 0.0], [90.0, 0.0]) == pytest.approx(math.pi / 2 * EARTH_RADIUS_KM)
    assert haversine_km([0.0, 0.0], [0.0, 180.0]) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    # London to Paris, about 343.5 km
    assert haversine_km([51.5074, -0.1278], [48.8566, 2.3522]) == pytest.approx(343.5, abs=0.5)


# ---------------------------------------------------------------------- numpy transport solver
COST_KINDS = ("distinct", "ties", "equal", "distance", "same places")


@st.composite
def transport_problems(draw, *, min_side: int = 1, max_side: int = 15):
    """A balanced transportation problem ``(cost, supply, demand, integral)``.

    Costs: distinct random values, a few repeated values (ties), one value everywhere, haversine
    distances between random points, or between points drawn from a pool of three places (many
    equal distances and zeros). Supplies whole (1-9 each, so many equal partial sums: degenerate
    bases) or fractional; the last sender or receiver absorbs the difference.
    """
    senders = draw(st.integers(min_side, max_side))
    receivers = draw(st.integers(min_side, max_side))
    kind = draw(st.sampled_from(COST_KINDS))
    integral = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (senders, receivers)
    if kind == "distinct":
        cost = rng.uniform(0.0, 1000.0, shape)
    elif kind == "ties":
        cost = rng.integers(0, 3, shape).astype(float) * 7.5
    elif kind == "equal":
        cost = np.full(shape, float(rng.integers(0, 2)) * 42.0)
    else:
        places = rng.uniform([-60.0, -180.0], [60.0, 180.0], size=(3, 2))
        if kind == "distance":
            origin = rng.uniform([-60.0, -180.0], [60.0, 180.0], size=(senders, 2))
            destination = rng.uniform([-60.0, -180.0], [60.0, 180.0], size=(receivers, 2))
        else:
            origin = places[rng.integers(0, 3, senders)]
            destination = places[rng.integers(0, 3, receivers)]
        cost = haversine_km(origin[:, None, :], destination[None, :, :])
    if integral:
        supply = rng.integers(1, 10, senders).astype(float)
        demand = rng.integers(1, 10, receivers).astype(float)
        gap = supply.sum() - demand.sum()
        if gap > 0:
            demand[-1] += gap
        else:
            supply[-1] -= gap
    else:
        supply = rng.uniform(0.01, 10.0, senders)
        demand = rng.uniform(0.01, 10.0, receivers)
        demand *= supply.sum() / demand.sum()  # equal sums up to float rounding
    return cost, supply, demand, integral


def _pot_cost(cost, supply, demand) -> float:
    ot = transport_module.import_pot()
    return float(np.sum(ot.emd(supply, demand, cost, numItermax=10**8) * cost))


def _linprog_cost(cost, supply, demand) -> float:
    senders, receivers = cost.shape
    a_eq = np.zeros((senders + receivers, senders * receivers))
    for i in range(senders):
        a_eq[i, i * receivers : (i + 1) * receivers] = 1.0
    for j in range(receivers):
        a_eq[senders + j, j::receivers] = 1.0
    b_eq = np.concatenate([supply, demand])
    result = linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert result.status == 0, result.message
    return float(result.fun)


def _is_forest(rows, cols, senders: int) -> bool:
    """True when the cells (rows, cols) form no cycle in the sender-receiver graph."""
    root = list(range(senders + int(np.max(cols, initial=-1)) + 1))

    def find(node):
        while root[node] != node:
            root[node] = root[root[node]]
            node = root[node]
        return node

    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        a, b = find(i), find(senders + j)
        if a == b:
            return False
        root[a] = b
    return True


def _check_solution(cost, supply, demand, integral, solution) -> float:
    """Assert feasibility, vertex shape and the dual certificate; return the plan's cost."""
    senders, receivers = cost.shape
    rows, cols, flows = solution.rows, solution.cols, solution.flows
    assert np.all(flows > 0)
    assert len(flows) <= senders + receivers - 1
    assert _is_forest(rows, cols, senders)
    out = np.bincount(rows, weights=flows, minlength=senders)
    into = np.bincount(cols, weights=flows, minlength=receivers)
    if integral:
        assert np.array_equal(flows, np.round(flows))
        assert np.array_equal(out, supply) and np.array_equal(into, demand)
    else:
        total = float(supply.sum())
        np.testing.assert_allclose(out, supply, rtol=0, atol=1e-12 * total)
        np.testing.assert_allclose(into, demand, rtol=0, atol=1e-12 * total)
    # dual certificate: reduced costs >= 0 everywhere and = 0 where staff flow
    scale = max(1.0, float(cost.max()))
    reduced = cost - solution.sender_potential[:, None] - solution.receiver_potential[None, :]
    assert reduced.min() >= -1e-9 * scale
    assert np.abs(reduced[rows, cols]).max(initial=0.0) <= 1e-9 * scale
    return float(np.dot(cost[rows, cols], flows))


@settings(deadline=None, max_examples=250)
@given(transport_problems())
def test_numpy_solver_matches_pot_and_linprog_on_small_problems(problem):
    cost, supply, demand, integral = problem
    solution = _transport_simplex(cost, supply, demand)
    found = _check_solution(cost, supply, demand, integral, solution)
    scale = max(1.0, float(cost.max()))
    for reference in (_pot_cost(cost, supply, demand), _linprog_cost(cost, supply, demand)):
        assert found == pytest.approx(reference, rel=1e-9, abs=1e-9 * scale)


@settings(deadline=None, max_examples=25)
@given(transport_problems(min_side=20, max_side=120))
def test_numpy_solver_matches_pot_on_medium_problems(problem):
    cost, supply, demand, integral = problem
    solution = _transport_simplex(cost, supply, demand)
    found = _check_solution(cost, supply, demand, integral, solution)
    reference = _pot_cost(cost, supply, demand)
    assert found == pytest.approx(reference, rel=1e-9, abs=1e-9 * max(1.0, float(cost.max())))


@pytest.mark.parametrize(
    ("cost", "supply", "demand", "flows"),
    [
        # one sender: it serves every receiver
        ([[3.0, 1.0, 2.0]], [6.0], [1.0, 2.0, 3.0], [[1.0, 2.0, 3.0]]),
        # one receiver: every sender serves it
        ([[3.0], [1.0]], [2.0, 5.0], [7.0], [[2.0], [5.0]]),
        # one of each
        ([[9.0]], [4.0], [4.0], [[4.0]]),
        # the cheap diagonal is best
        ([[1.0, 5.0], [5.0, 1.0]], [3.0, 2.0], [3.0, 2.0], [[3.0, 0.0], [0.0, 2.0]]),
        # fully degenerate: equal halves, the cheap anti-diagonal wins
        ([[4.0, 0.0], [0.0, 4.0]], [2.0, 2.0], [2.0, 2.0], [[0.0, 2.0], [2.0, 0.0]]),
        # fractional
        ([[1.0, 2.0], [2.0, 1.0]], [0.5, 0.25], [0.25, 0.5], [[0.25, 0.25], [0.0, 0.25]]),
    ],
)
def test_numpy_solver_finds_the_hand_worked_optimum(cost, supply, demand, flows):
    cost, supply, demand = (np.array(x, dtype=float) for x in (cost, supply, demand))
    solution = _transport_simplex(cost, supply, demand)
    dense = np.zeros_like(cost)
    dense[solution.rows, solution.cols] = solution.flows
    np.testing.assert_array_equal(dense, np.array(flows))


def test_numpy_solver_with_equal_costs_keeps_the_least_cost_start():
    # every plan is optimal; the solver must still return a feasible vertex
    cost = np.full((6, 5), 3.0)
    supply = np.array([5.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    demand = np.array([2.0, 2.0, 2.0, 2.0, 2.0])
    solution = _transport_simplex(cost, supply, demand)
    assert _check_solution(cost, supply, demand, True, solution) == 30.0
    assert solution.pivots == 0  # the least-cost start is already optimal


@settings(deadline=None, max_examples=100)
@given(st.integers(1, 60), st.integers(0, 2**32 - 1))
def test_tree_potentials_sum_the_steps_to_the_root(size, seed):
    rng = np.random.default_rng(seed)
    parent = [0] + [int(rng.integers(0, node)) for node in range(1, size)]  # any rooted tree
    step = [0.0] + rng.normal(size=size - 1).tolist()
    expected = [0.0] * size
    for node in range(1, size):  # parents come first, so one pass suffices
        expected[node] = expected[parent[node]] + step[node]
    np.testing.assert_allclose(_tree_potentials(parent, step), expected, rtol=0, atol=1e-12)


def test_default_network_is_planned_by_numpy_in_milliseconds():
    network = default_network()
    allocation = allocate(network, "qp")
    # POT must not be touched: the numpy solver handles this size
    with mock.patch.object(transport_module, "_emd", side_effect=AssertionError("POT was used")):
        result = plan(network, allocation)
        elapsed = min(_timed(plan, network, allocation) for _ in range(3))
    assert result.method == "transport"
    assert np.array_equal(result.apply(network.current), allocation)
    pot = _pot_cost(*_plan_problem(network, allocation))
    assert result.total_distance_km == pytest.approx(pot, rel=1e-9)
    # about 4 ms on a loaded 2-core machine; the bound leaves room for load spikes
    assert elapsed < 0.05, f"default network plan took {elapsed * 1e3:.1f} ms"


def test_large_dense_plans_go_to_pot_and_a_stalled_simplex_falls_back_to_it():
    network = generate_network(40, seed=5)
    allocation = _rounded_targets(network)
    exact = plan(network, allocation).total_distance_km
    calls = []
    real_emd = plan_module.dense_emd

    def counting_emd(*args):
        calls.append(1)
        return real_emd(*args)

    with mock.patch.object(plan_module, "dense_emd", counting_emd):
        with mock.patch.object(plan_module, "_NUMPY_TRANSPORT_CELLS", 1):
            above = plan(network, allocation)
        assert len(calls) == 1
        gave_up = _SimplexGaveUp("test")
        with mock.patch.object(plan_module, "_transport_simplex", side_effect=gave_up):
            fallback = plan(network, allocation)
        assert len(calls) == 2
    for result in (above, fallback):
        assert result.method == "transport"
        assert np.array_equal(result.apply(network.current), allocation)
        assert result.total_distance_km == pytest.approx(exact, rel=1e-9)


def test_planning_the_default_network_imports_neither_pot_nor_scipy_solvers():
    code = (
        "import sys\n"
        "from marra.network import default_network\n"
        "from marra.strategies import allocate, plan\n"
        "network = default_network()\n"
        "result = plan(network, allocate(network, 'qp'))\n"
        "assert result.method == 'transport' and len(result) > 0, result\n"
        "heavy = ('ot', 'scipy.optimize', 'scipy.stats', 'pandas', 'torch')\n"
        "loaded = [name for name in heavy if name in sys.modules]\n"
        "assert not loaded, f'imported {loaded}'\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _plan_problem(network: HospitalNetwork, allocation: np.ndarray):
    """The (cost, supply, demand) transport problem that ``plan`` solves."""
    change = allocation - network.current
    senders, receivers = np.flatnonzero(change < 0), np.flatnonzero(change > 0)
    coords = network.coords
    cost = haversine_km(coords[senders][:, None, :], coords[receivers][None, :, :])
    return cost, -change[senders], change[receivers]


# ---------------------------------------------------------------------- methods and scale
def _rounded_targets(network: HospitalNetwork) -> np.ndarray:
    """Targets scaled to the current total and rounded by largest remainder (whole staff)."""
    share = network.target * network.total / network.target.sum()
    allocation = np.floor(share)
    left = int(round(network.total - allocation.sum()))
    allocation[np.argsort(-(share - allocation), kind="stable")[:left]] += 1
    return allocation


def test_transport_above_the_dense_limit_is_solved_sparsely_and_exactly():
    network = generate_network(60, seed=1)
    allocation = _rounded_targets(network)
    dense = plan(network, allocation)
    calls = []
    real = plan_module.sparse_transport

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    with mock.patch.object(plan_module, "DENSE_TRANSPORT_CELLS", 10):
        with mock.patch.object(plan_module, "sparse_transport", counting):
            result = plan(network, allocation)
    assert calls == [1]
    assert result.method == "transport"
    assert np.array_equal(result.apply(network.current), allocation)
    assert result.total_distance_km == pytest.approx(dense.total_distance_km, rel=1e-12)


def test_plan_for_a_thousand_hospitals_is_fast_and_matches_pot():
    network = generate_network(1000, seed=7)
    allocation = _rounded_targets(network)
    change = allocation - network.current
    cells = int(np.sum(change < 0)) * int(np.sum(change > 0))
    assert cells <= plan_module._NUMPY_TRANSPORT_CELLS  # so the numpy solver is timed
    start = time.perf_counter()
    result = plan(network, allocation)
    elapsed = time.perf_counter() - start
    assert result.method == "transport"
    assert np.array_equal(result.apply(network.current), allocation)
    assert elapsed < 2.0, f"n=1000 plan took {elapsed:.2f} s"
    with mock.patch.object(plan_module, "_NUMPY_TRANSPORT_CELLS", 0):  # through POT instead
        pot = plan(network, allocation)
    assert result.total_distance_km == pytest.approx(pot.total_distance_km, rel=1e-9)
    start = time.perf_counter()
    greedy = plan(network, allocation, method="largest-first")
    assert time.perf_counter() - start < 1.0
    assert greedy.total_distance_km >= result.total_distance_km


def test_planning_with_coordinates_does_not_import_torch():
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from marra.network import generate_network\n"
        "from marra.strategies.transfer_plan import plan\n"
        "net = generate_network(50, seed=0)\n"
        "y = np.full(50, net.total // 50); y[: int(net.total - y.sum())] += 1\n"
        "plan(net, y); plan(net, y, method='sparse-transport')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr


# ---------------------------------------------------------------------- bad input
@pytest.fixture
def small_network() -> HospitalNetwork:
    return _network([3, 4, 5], names=("A", "B", "C"))


@pytest.mark.parametrize(
    ("allocation", "pattern"),
    [
        ([3, 4], r"allocation: expected shape \(3,\)"),
        ([[3, 4, 5]], r"allocation: expected shape \(3,\)"),
        ([3, float("nan"), 5], r"allocation, row 2 \(hospital 'B'\).*not a finite number"),
        ([3, 4, float("inf")], r"allocation, row 3 \(hospital 'C'\).*not a finite number"),
        ([-1, 8, 5], r"allocation, row 1 \(hospital 'A'\).*negative"),
        (["x", 4, 5], r"allocation: values must be numbers"),
        ([3, 4, 6], r"allocation: its total 13 differs .* current total 12"),
        ([3, 4, 5 + 1e-6], r"allocation: its total .* differs"),
    ],
)
def test_bad_allocation_is_rejected_by_name(small_network, allocation, pattern):
    with pytest.raises(ValueError, match=pattern):
        plan(small_network, allocation)


def test_allocation_within_the_total_tolerance_is_accepted(small_network):
    result = plan(small_network, [2, 4, 6 + 1e-10])
    assert result.total_moved == pytest.approx(1.0)


def test_bad_method_and_network_are_rejected(small_network):
    with pytest.raises(ValueError, match=r"method: must be one of .*'largest-first'"):
        plan(small_network, [3, 4, 5], method="nearest")
    with pytest.raises(ValueError, match=r"method: 'transport' .*needs hospital coordinates"):
        plan(small_network, [3, 4, 5], method="transport")
    with pytest.raises(ValueError, match=r"method: 'sparse-transport' .*coordinates"):
        plan(small_network, [3, 4, 5], method="sparse-transport")
    with pytest.raises(TypeError, match=r"network: expected a HospitalNetwork"):
        plan(np.array([3, 4, 5]), [3, 4, 5])


def test_plan_rejects_inconsistent_transfers():
    names = ("A", "B", "C")
    with pytest.raises(ValueError, match=r"receivers: hospital 'B' both sends and receives"):
        Plan(senders=[0, 1], receivers=[1, 2], counts=[1.0, 1.0], names=names)
    with pytest.raises(ValueError, match=r"counts: every transfer"):
        Plan(senders=[0], receivers=[1], counts=[0.0], names=names)
    with pytest.raises(ValueError, match=r"receivers: has 2 values but senders has 1"):
        Plan(senders=[0], receivers=[1, 2], counts=[1.0], names=names)
    with pytest.raises(ValueError, match=r"senders: hospital indices must lie in \[0, 3\)"):
        Plan(senders=[3], receivers=[1], counts=[1.0], names=names)
    with pytest.raises(ValueError, match=r"distance_km: expected shape \(1,\)"):
        Plan(senders=[0], receivers=[1], counts=[1.0], names=names, distance_km=[1.0, 2.0])
    result = Plan(senders=[0], receivers=[1], counts=[2.0], names=names)
    with pytest.raises(ValueError, match=r"current: expected shape \(3,\)"):
        result.apply([1, 2])
    assert np.array_equal(result.apply([2, 0, 0]), [0, 2, 0])
    with pytest.raises(AttributeError):
        result.counts = np.array([1.0])  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.counts[0] = 5.0  # read-only array


# ---------------------------------------------------------------------- sparse exact solver
def _random_points(rng, count: int) -> np.ndarray:
    return np.column_stack([rng.uniform(50.0, 58.0, count), rng.uniform(-5.5, 1.5, count)])


def _random_transport(rng, senders: int, receivers: int):
    """Random points and whole amounts with equal totals, or ``None`` when the last receiver's
    demand would not be positive."""
    origin, destination = _random_points(rng, senders), _random_points(rng, receivers)
    supply = rng.integers(1, 9, senders).astype(float)
    demand = rng.integers(1, 9, receivers).astype(float)
    demand[-1] += supply.sum() - demand.sum()
    if demand[-1] <= 0:
        return None
    return origin, destination, supply, demand


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_dual_check_finds_exactly_the_violated_pairs(senders, receivers, seed):
    rng = np.random.default_rng(seed)
    origin, destination = _random_points(rng, senders), _random_points(rng, receivers)
    x, y = unit_vectors(origin), unit_vectors(destination)
    cost = haversine_km(origin[:, None, :], destination[None, :, :])
    # potentials near the costs, so that some pairs are violated and others are not
    u = rng.uniform(-50.0, 150.0, senders)
    v = rng.uniform(-50.0, 50.0, receivers)

    def pair_cost(rows, cols):
        return haversine_km(origin[rows], destination[cols])

    tree = _BoxTree(y, leaf=2)
    rows, cols, reduced = _violations(tree, x, u, v, pair_cost)
    expected = np.argwhere(cost - u[:, None] - v[None, :] < -transport_module._DUAL_TOL)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == sorted(
        map(tuple, expected.tolist())
    )
    np.testing.assert_allclose(reduced, cost[rows, cols] - u[rows] - v[cols], atol=1e-9)
    # the lower bound repairs the violations: it never exceeds the true optimum
    supply = rng.integers(1, 9, senders).astype(float)
    demand = rng.integers(1, 9, receivers).astype(float)
    demand[-1] += supply.sum() - demand.sum()
    if demand[-1] <= 0:
        return
    optimum = _pot_cost(cost, supply, demand)
    assert _lower_bound(supply, demand, u, v, cols, reduced) <= optimum + 1e-9 * optimum


@settings(deadline=None, max_examples=60)
@given(st.integers(2, 30), st.integers(2, 30), st.integers(0, 2**32 - 1))
def test_tamed_potentials_stay_optimal_for_the_restricted_problem(senders, receivers, seed):
    rng = np.random.default_rng(seed)
    drawn = _random_transport(rng, senders, receivers)
    if drawn is None:
        return
    origin, destination, supply, demand = drawn
    cost = haversine_km(origin[:, None, :], destination[None, :, :])
    # a sparse candidate set that is feasible: a largest-first plan plus random pairs
    lf_rows, lf_cols, _ = _largest_first(supply, demand, 0.0)
    extra = rng.integers(0, senders * receivers, 3 * (senders + receivers))
    keys = np.unique(np.concatenate([lf_rows * receivers + lf_cols, extra]))
    rows, cols = keys // receivers, keys % receivers
    flow_rows, flow_cols, flows, u, v = transport_module._sparse_emd(
        supply, demand, rows, cols, cost[rows, cols]
    )
    reference = rng.normal(0.0, 300.0, senders + receivers)
    candidates = (rows, cols, cost[rows, cols])
    tu, tv = _tame((senders, receivers), candidates, (flow_rows, flow_cols), u, v, reference)
    reduced = cost[rows, cols] - tu[rows] - tv[cols]
    assert reduced.min() >= -1e-7
    on_flows = cost[flow_rows, flow_cols] - tu[flow_rows] - tv[flow_cols]
    np.testing.assert_allclose(on_flows, 0.0, atol=1e-7)
    # same objective by duality on the restricted problem
    restricted = float(np.dot(cost[flow_rows, flow_cols], flows))
    assert float(supply @ tu + demand @ tv) == pytest.approx(restricted, rel=1e-9, abs=1e-6)


@settings(deadline=None, max_examples=80)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_pair_km_gives_the_great_circle_distance(senders, receivers, seed):
    rng = np.random.default_rng(seed)
    origin = np.column_stack([rng.uniform(-90, 90, senders), rng.uniform(-180, 180, senders)])
    destination = np.column_stack(
        [rng.uniform(-90, 90, receivers), rng.uniform(-180, 180, receivers)]
    )
    rows = rng.integers(0, senders, 50)
    cols = rng.integers(0, receivers, 50)
    cost = _pair_km(unit_vectors(origin), unit_vectors(destination))
    np.testing.assert_allclose(
        cost(rows, cols), haversine_km(origin[rows], destination[cols]), rtol=1e-9, atol=1e-9
    )


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 40), st.integers(2, 40), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_a_window_sweep_keeps_every_amount_and_never_costs_more(senders, receivers, size, seed):
    rng = np.random.default_rng(seed)
    drawn = _random_transport(rng, senders, receivers)
    if drawn is None:
        return
    origin, destination, supply, demand = drawn
    x, y = unit_vectors(origin), unit_vectors(destination)
    start = _largest_first(supply, demand, 0.0)  # a poor plan: much to improve
    label = _windows(np.vstack([x, y]), size, float(rng.uniform(0, math.pi)))
    rows, cols, flows = _window_sweep(x, y, start, label)
    assert np.all(flows > 0)
    np.testing.assert_allclose(np.bincount(rows, flows, senders), supply, atol=1e-9)
    np.testing.assert_allclose(np.bincount(cols, flows, receivers), demand, atol=1e-9)
    km = haversine_km(origin[:, None, :], destination[None, :, :])
    before = float(np.dot(km[start[0], start[1]], start[2]))
    after = float(np.dot(km[rows, cols], flows))
    assert after <= before + 1e-9 * (1.0 + before)
    # one window holding everything: the sweep solves the whole problem
    whole = _window_sweep(x, y, start, np.zeros(senders + receivers, dtype=np.int64))
    optimum = _pot_cost(km, supply, demand)
    assert float(np.dot(km[whole[0], whole[1]], whole[2])) == pytest.approx(optimum, rel=1e-9)
    # windows of one point each: nothing inside a window, nothing moves
    alone = _window_sweep(x, y, start, np.arange(senders + receivers))
    assert _sorted_flows(*alone) == _sorted_flows(*start)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.floats(0.0, 1.0),
    st.floats(-30.0, 30.0),
    st.integers(0, 2**32 - 1),
)
def test_the_incremental_dual_check_finds_what_a_full_check_finds(
    senders, receivers, moved, shift, seed
):
    rng = np.random.default_rng(seed)
    origin, destination = _random_points(rng, senders), _random_points(rng, receivers)
    x, y = unit_vectors(origin), unit_vectors(destination)
    cost = _pair_km(x, y)
    u = rng.uniform(-50.0, 150.0, senders)
    v = rng.uniform(-50.0, 50.0, receivers)
    check = _DualCheck(x, y, cost)
    tree = _BoxTree(y)
    first = check(u, v)
    assert first[3] == transport_module._DUAL_TOL  # the first check is a full one
    # move some potentials up, some down, and shift all by a constant (u + c, v - c)
    u2 = u + shift + np.where(rng.random(senders) < moved, rng.normal(0, 20, senders), 0.0)
    v2 = v - shift + np.where(rng.random(receivers) < moved, rng.normal(0, 20, receivers), 0.0)
    with mock.patch.object(transport_module, "_INCREMENTAL", 1.0):  # always incremental
        rows, cols, reduced, tol = check(u2, v2)
    assert tol > transport_module._DUAL_TOL
    expected = _violations(tree, x, u2, v2, cost)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == sorted(
        zip(expected[0].tolist(), expected[1].tolist(), strict=True)
    )
    np.testing.assert_allclose(reduced, cost(rows, cols) - u2[rows] - v2[cols], atol=1e-9)
    # told to check incrementally never: a full check again, at the plain tolerance
    with mock.patch.object(transport_module, "_INCREMENTAL", -1.0):
        again = check(u2 + 1.0, v2)
    assert again[3] == transport_module._DUAL_TOL
    expected = _violations(tree, x, u2 + 1.0, v2, cost)
    assert sorted(zip(again[0].tolist(), again[1].tolist(), strict=True)) == sorted(
        zip(expected[0].tolist(), expected[1].tolist(), strict=True)
    )


def test_sparse_plan_of_three_thousand_hospitals_equals_the_dense_optimum():
    network = generate_network(3000, seed=11)
    allocation = allocate(network, "qp")
    messages: list[str] = []
    sparse = plan(network, allocation, method="sparse-transport", progress=messages.append)
    dense = plan(network, allocation, method="transport")  # 1,500 x 1,500: dense POT
    assert dense.method == "transport" and sparse.method == "sparse-transport"
    assert np.array_equal(sparse.apply(network.current), allocation)
    assert sparse.total_distance_km == pytest.approx(dense.total_distance_km, rel=1e-10)
    assert sparse.optimality_gap_km <= 1e-7 * sparse.total_moved + 1e-6
    # progress: one line per restricted solve, ending with the proof of optimality
    assert messages and all(m.startswith("transport plan:") for m in messages)
    assert "0 pairs to add" in messages[-1]
    # window sweeps (used from 20,000 hospitals on) reach the same optimum
    messages.clear()
    with mock.patch.object(transport_module, "_WINDOW_MIN_POINTS", 1000):
        swept = plan(network, allocation, method="sparse-transport", progress=messages.append)
    assert any("window sweep 3 of 3" in m for m in messages)
    assert np.array_equal(swept.apply(network.current), allocation)
    assert swept.total_distance_km == pytest.approx(dense.total_distance_km, rel=1e-10)
    assert swept.optimality_gap_km <= 1e-7 * swept.total_moved + 1e-6


def test_a_time_limit_returns_a_feasible_plan_with_an_honest_gap():
    network = generate_network(3000, seed=11)
    allocation = allocate(network, "qp")
    optimum = plan(network, allocation, method="transport").total_distance_km
    rushed = plan(network, allocation, method="sparse-transport", time_limit=1e-9)
    assert np.array_equal(rushed.apply(network.current), allocation)
    excess = rushed.total_distance_km - optimum
    assert rushed.optimality_gap_km >= excess - 1e-6  # the stated gap covers the true one
    with pytest.raises(ValueError, match="time_limit"):
        plan(network, allocation, time_limit=0)


def test_sparse_solver_is_quiet_by_default_and_reports_levels(capsys):
    rng = np.random.default_rng(4)
    origin, destination = _random_points(rng, 700), _random_points(rng, 800)
    supply = rng.integers(1, 9, 700).astype(float)
    demand = rng.integers(1, 9, 800).astype(float)
    demand *= supply.sum() / demand.sum()
    result = sparse_transport(origin, destination, supply, demand)
    assert capsys.readouterr() == ("", "")
    assert result.levels >= 2 and result.rounds >= 1
    cost = haversine_km(origin[:, None, :], destination[None, :, :])
    assert result.cost_km == pytest.approx(_pot_cost(cost, supply, demand), rel=1e-9)
    assert 0.0 <= result.gap_km <= 1e-7 * supply.sum() + 1e-6


def test_plan_gap_is_validated_and_shown():
    names = ("A", "B")
    with pytest.raises(ValueError, match="optimality_gap_km: needs distance_km"):
        Plan(senders=[0], receivers=[1], counts=[1.0], names=names, optimality_gap_km=0.0)
    with pytest.raises(ValueError, match="optimality_gap_km: must be finite"):
        Plan(
            senders=[0],
            receivers=[1],
            counts=[1.0],
            names=names,
            distance_km=[2.0],
            method="transport",
            optimality_gap_km=-1.0,
        )
    shown = Plan(
        senders=[0],
        receivers=[1],
        counts=[1.0],
        names=names,
        distance_km=[2.0],
        method="transport",
        optimality_gap_km=0.5,
    )
    assert "optimality_gap_km=0.5" in repr(shown)
    network = generate_network(30, seed=2)
    allocation = _rounded_targets(network)
    assert plan(network, allocation, method="largest-first").optimality_gap_km is None
    assert plan(network, allocation).optimality_gap_km <= 1e-6


# ---------------------------------------------------------------------- recommend (issue 8, 20)
_CSV = (
    "name,current,minimum,target,lat,lon\n"
    "Alpha,30,10,15,51.5,-0.1\n"
    "Beta,5,8,20,52.2,0.1\n"
    "Gamma,12,6,12,53.4,-2.2\n"
    "Delta,3,4,9,50.9,-1.4\n"
)


def _recommend(tmp_path: Path, *args: str):
    import json

    from typer.testing import CliRunner

    from marra.cli import app

    path = tmp_path / "net.csv"
    path.write_text(_CSV, encoding="utf-8")
    result = CliRunner().invoke(app, ["recommend", str(path), *args])
    assert result.exit_code == 0, result.output
    return (json.loads(result.stdout) if "--json" in args else result.stdout), result.stderr


def test_recommend_states_the_certified_gap_in_json_and_title(tmp_path: Path):
    payload, _ = _recommend(tmp_path, "--json")
    assert 0.0 <= payload["optimality_gap_km"] <= 1e-6
    text, _ = _recommend(tmp_path)
    assert "km in all, optimal\n" in text


def test_the_title_says_how_far_an_early_plan_may_be_from_optimal():
    from marra.cli.hospital import _optimality_text

    def made(gap):
        return Plan(
            senders=[0],
            receivers=[1],
            counts=[4.0],
            names=("A", "B"),
            distance_km=[500.0],
            method="transport",
            optimality_gap_km=gap,
        )

    assert _optimality_text(made(1e-7)) == ", optimal"
    assert _optimality_text(made(12.5)) == ", optimal within 12.5 km (0.62% of it, certified)"
    lf = Plan(senders=[0], receivers=[1], counts=[4.0], names=("A", "B"))
    assert _optimality_text(lf) == ""


def _slow_plan(messages):
    """A stand-in for ``plan`` that reports ``messages`` and then plans as usual."""

    def slow(network, allocation, **options):
        for message in messages:
            options["progress"](message)
        options.pop("progress")
        return plan(network, allocation, **options)

    return slow


def test_recommend_shows_progress_only_on_long_plans(tmp_path: Path, monkeypatch):
    import marra.cli.hospital as cli
    import marra.hospital.strategies as strategies

    lines = ["transport plan: round 1: 10 km", "transport plan: round 2: 9 km"]
    monkeypatch.setattr(strategies, "plan", _slow_plan(lines))
    _, quick = _recommend(tmp_path)  # everything within the first second: silent
    assert "transport plan" not in quick
    monkeypatch.setattr(cli, "PROGRESS_DELAY_S", -1.0)  # as if a second had passed
    payload, slow = _recommend(tmp_path, "--json")  # stdout stays one JSON object
    assert lines[0] in slow and payload["transfers"]
    assert lines[1] not in slow  # not a terminal: at most one line per PROGRESS_LOG_EVERY_S
    monkeypatch.setattr(cli, "PROGRESS_LOG_EVERY_S", 0.0)
    _, every = _recommend(tmp_path)
    assert lines[0] in every and lines[1] in every


def test_progress_on_a_terminal_is_one_status_line_that_ends_with_the_plan(monkeypatch):
    from rich.console import Console

    import marra.cli.hospital as cli

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    progress = cli._PlanProgress(console)
    progress("transport plan: level 1 [of] 4")  # within the first second: nothing
    assert progress.status is None
    monkeypatch.setattr(cli, "PROGRESS_DELAY_S", -1.0)
    progress("transport plan: level 1 [of] 4")
    progress("transport plan: level 2 [of] 4")
    assert progress.status is not None
    progress.stop()
    progress.stop()  # idempotent
    assert progress.status is None and "level" in screen.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 50), max_size=40),
    st.lists(st.integers(0, 50), max_size=40),
)
def test_key_helpers_equal_numpy_set_operations(old, new):
    keys = np.unique(np.array(old, dtype=np.int64))
    values = keys * 0.5
    assert np.array_equal(_sorted_unique(np.array(old, dtype=np.int64)), keys)
    fresh = np.setdiff1d(np.array(new, dtype=np.int64), keys)
    merged, merged_values = _merge_sorted(keys, values, fresh, fresh * 0.5)
    assert np.array_equal(merged, np.union1d(keys, fresh))
    np.testing.assert_array_equal(merged_values, merged * 0.5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 30), st.integers(2, 30), st.integers(0, 10_000))
def test_a_warm_start_reaches_the_same_optimum_as_a_cold_one(senders, receivers, seed):
    """The restricted simplex started from any potentials (good or bad) ends at the optimum."""
    rng = np.random.default_rng(seed)
    supply = (rng.integers(1, 6, senders) + -(-receivers // senders)).astype(float)
    demand = rng.multinomial(int(supply.sum()) - receivers, np.ones(receivers) / receivers) + 1.0
    points = rng.uniform(-5, 5, (senders + receivers, 2))
    cost = np.linalg.norm(points[:senders, None] - points[None, senders:], axis=2)
    keep = rng.random(cost.shape) < 0.6
    i = j = 0  # the north-west corner rule's cells: a feasible plan on the kept pairs
    left, need = supply.copy(), demand.copy()
    while i < senders and j < receivers:
        keep[i, j] = True
        moved = min(left[i], need[j])
        left[i] -= moved
        need[j] -= moved
        i, j = (i + 1, j) if left[i] == 0 else (i, j + 1)
    rows, cols = np.nonzero(keep)
    cold = _sparse_emd(supply, demand, rows, cols, cost[rows, cols])
    for init in ((cold[3], cold[4]), (rng.normal(0, 5, senders), rng.normal(0, 5, receivers))):
        warm = _sparse_emd(supply, demand, rows, cols, cost[rows, cols], init)
        assert float(np.dot(cost[warm[0], warm[1]], warm[2])) == pytest.approx(
            float(np.dot(cost[cold[0], cold[1]], cold[2])), rel=1e-12, abs=1e-9
        )
        np.testing.assert_allclose(np.bincount(warm[0], warm[2], senders), supply)
        np.testing.assert_allclose(np.bincount(warm[1], warm[2], receivers), demand)


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf"])
def test_recommend_refuses_a_bad_plan_time_limit_before_writing(tmp_path: Path, seconds: str):
    from typer.testing import CliRunner

    from marra.cli import app

    path = tmp_path / "net.csv"
    path.write_text(_CSV, encoding="utf-8")
    out = tmp_path / "plan.csv"
    result = CliRunner().invoke(
        app, ["recommend", str(path), "--plan-seconds", seconds, "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "--plan-seconds: must be a positive number of seconds" in result.stderr
    assert not out.exists()


def test_recommend_plan_seconds_stops_the_sparse_plan_with_its_certified_gap(
    tmp_path: Path, monkeypatch
):
    import json

    from typer.testing import CliRunner

    import marra.hospital.strategies as strategies
    from marra.cli import app

    seen = {}
    real = strategies.plan

    def spy(network, allocation, **options):
        seen.update(options)
        return real(network, allocation, method="sparse-transport", **options)

    monkeypatch.setattr(strategies, "plan", spy)
    path = tmp_path / "net.csv"
    generate_network(400, seed=3).to_csv(path)
    result = CliRunner().invoke(app, ["recommend", str(path), "--plan-seconds", "1e-9", "--json"])
    assert result.exit_code == 0, result.output
    assert seen["time_limit"] == 1e-9
    payload = json.loads(result.stdout)
    exact = json.loads(CliRunner().invoke(app, ["recommend", str(path), "--json"]).stdout)
    # stopped after its first check over all pairs: never shorter than the optimum, and the
    # certified gap covers the difference
    assert payload["optimality_gap_km"] >= 0.0
    assert payload["total_distance_km"] >= exact["total_distance_km"] - 1e-6
    assert (
        payload["total_distance_km"] - exact["total_distance_km"]
        <= payload["optimality_gap_km"] + 1e-6
    )
