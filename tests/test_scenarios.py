"""Tests for marra.scenarios: seeded, composable episode events (paper 000 section 4.1)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import marra.scenarios as scenarios_module
from marra.network import HospitalNetwork, default_network, generate_network
from marra.scenarios import (
    SCENARIOS,
    Compose,
    CsvTargets,
    Outbreak,
    Realisation,
    ScenarioError,
    ScenarioWarning,
    Seasonal,
    ShiftingTargets,
    Static,
    SuddenShock,
    apply_events,
    apply_shock,
    from_csv,
    make_scenario,
    shock_loss,
)

RANDOM_SPECS = ("shifting", "shock", "seasonal", "outbreak", "shifting+shock")


@st.composite
def networks(draw: st.DrawFn, with_capacity: bool | None = None) -> HospitalNetwork:
    """Small whole-staff networks, with or without capacities."""
    n = draw(st.integers(1, 25))
    ints = st.lists(st.integers(0, 60), min_size=n, max_size=n)
    minimum = np.array(draw(ints), dtype=float)
    target = minimum + np.array(draw(st.lists(st.integers(0, 30), min_size=n, max_size=n)))
    current = np.array(draw(st.lists(st.integers(0, 120), min_size=n, max_size=n)), dtype=float)
    capacity = None
    if with_capacity if with_capacity is not None else draw(st.booleans()):
        extra = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
        capacity = np.maximum(target, current) + extra
    coords = None
    if draw(st.booleans()):
        coords = np.column_stack(
            [
                draw(st.lists(st.floats(49.0, 59.0), min_size=n, max_size=n)),
                draw(st.lists(st.floats(-6.0, 2.0), min_size=n, max_size=n)),
            ]
        )
    return HospitalNetwork(
        current=current, minimum=minimum, target=target, capacity=capacity, coords=coords
    )


def hold_through(realisation: Realisation, current: np.ndarray) -> list[np.ndarray]:
    """Staff after the events of each step when nobody reallocates (the 'hold' strategy)."""
    path = []
    for step in range(realisation.horizon):
        current, _, _ = apply_events(step, current, realisation)
        path.append(current)
    return path


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.csv"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- seeding
@pytest.mark.parametrize("spec", RANDOM_SPECS)
def test_same_seed_gives_same_events_and_different_seeds_differ(spec: str) -> None:
    network = default_network()
    scenario = make_scenario(spec)
    first, again = scenario.realise(network, 11), scenario.realise(network, 11)
    np.testing.assert_array_equal(first.target, again.target)
    np.testing.assert_array_equal(first.shock_hospital, again.shock_hospital)
    others = [scenario.realise(network, seed) for seed in range(12, 17)]
    assert any(
        not np.array_equal(first.target, other.target)
        or not np.array_equal(first.shock_hospital, other.shock_hospital)
        for other in others
    )


def test_generator_seed_is_reproducible_and_negative_seed_is_rejected() -> None:
    network = default_network()
    scenario = make_scenario("shifting+shock")
    a = scenario.realise(network, np.random.default_rng(5))
    b = scenario.realise(network, np.random.default_rng(5))
    np.testing.assert_array_equal(a.target, b.target)
    np.testing.assert_array_equal(a.shock_hospital, b.shock_hospital)
    with pytest.raises(ScenarioError, match="seed"):
        scenario.realise(network, -1)


def test_static_keeps_the_network_targets_and_minima_at_every_step() -> None:
    network = default_network()
    realisation = Static().realise(network, 0)
    assert realisation.target.shape == (50, network.n)
    np.testing.assert_array_equal(realisation.target, np.tile(network.target, (50, 1)))
    np.testing.assert_array_equal(realisation.minimum, np.tile(network.minimum, (50, 1)))
    assert realisation.shock_step.size == 0


def test_realisation_arrays_are_read_only() -> None:
    realisation = make_scenario("shifting+shock").realise(default_network(), 0)
    for array in (realisation.target, realisation.minimum, realisation.shock_hospital):
        with pytest.raises(ValueError):
            array[0] = 1


@settings(deadline=None, max_examples=40)
@given(network=networks(), seed=st.integers(0, 2**32))
def test_every_built_in_scenario_keeps_targets_within_minimum_and_capacity(
    network: HospitalNetwork, seed: int
) -> None:
    spec = "shifting+shock+seasonal" + ("+outbreak" if network.coords is not None else "")
    realisation = make_scenario(spec, seasonal={"amplitude": 1.5}).realise(network, seed)
    assert np.all(realisation.target >= realisation.minimum)
    assert np.all(realisation.target <= network.upper)
    np.testing.assert_array_equal(realisation.target, np.round(realisation.target))
    assert realisation.shock_step.tolist() == [25]


# ---------------------------------------------------------------------- shifting targets
@settings(deadline=None, max_examples=60)
@given(network=networks(), seed=st.integers(0, 2**32))
def test_shifting_changes_only_every_ten_steps_by_at_most_two_within_bounds(
    network: HospitalNetwork, seed: int
) -> None:
    realisation = ShiftingTargets().realise(network, seed)
    target = realisation.target
    np.testing.assert_array_equal(target[0], network.target)
    changes = np.diff(target, axis=0)  # changes[t - 1] = target[t] - target[t - 1]
    steps_with_change = {t + 1 for t in np.flatnonzero(np.any(changes != 0, axis=1))}
    assert steps_with_change <= {10, 20, 30, 40}
    assert np.abs(changes).max() <= 2
    assert np.all(target >= network.minimum)
    assert np.all(target <= network.upper)
    np.testing.assert_array_equal(target, np.round(target))


def test_shifting_moves_most_targets_at_each_change_step() -> None:
    network = generate_network(400, seed=3)
    target = ShiftingTargets().realise(network, 0).target
    for step in (10, 20, 30, 40):
        moved = np.mean(target[step] != target[step - 1])
        assert 0.6 < moved < 0.95  # P(delta != 0) = 4/5, less a few clipped at the minimum


@settings(deadline=None, max_examples=25)
@given(network=networks(), seed=st.integers(0, 1000))
def test_shifting_fast_path_equals_the_general_path(network: HospitalNetwork, seed: int) -> None:
    fast = ShiftingTargets(every=7, max_change=3).realise(network, seed)
    original = scenarios_module._constant_in_time
    scenarios_module._constant_in_time = lambda path: False
    try:
        general = ShiftingTargets(every=7, max_change=3).realise(network, seed)
    finally:
        scenarios_module._constant_in_time = original
    np.testing.assert_array_equal(fast.target, general.target)


# ---------------------------------------------------------------------- sudden shock
@settings(deadline=None, max_examples=60)
@given(network=networks(), seed=st.integers(0, 2**32))
def test_shock_at_midpoint_removes_half_floored_from_one_hospital_never_below_minimum(
    network: HospitalNetwork, seed: int
) -> None:
    realisation = SuddenShock().realise(network, seed)
    assert realisation.shock_step.tolist() == [25]
    assert realisation.shock_fraction.tolist() == [0.5]
    path = hold_through(realisation, network.current)
    before, after = path[24], path[25]
    hit = int(realisation.shock_hospital[0])
    c, m = network.current[hit], network.minimum[hit]
    expected_loss = max(0.0, min(np.floor(c / 2), c - m))
    changed = np.flatnonzero(after != before)
    assert set(changed.tolist()) <= {hit}
    assert after[hit] == c - expected_loss
    assert after[hit] >= min(c, m)
    assert before.sum() - after.sum() == expected_loss
    # nothing else changes at any other step
    for step in range(50):
        if step != 25:
            previous = network.current if step == 0 else path[step - 1]
            np.testing.assert_array_equal(path[step], previous)


def test_shock_loss_examples_half_floored_capped_at_minimum() -> None:
    current = np.array([40.0, 40.0, 5.0, 7.0, 0.0])
    minimum = np.array([10.0, 30.0, 8.0, 0.0, 0.0])
    np.testing.assert_array_equal(shock_loss(current, minimum, 0.5), [20, 10, 0, 3, 0])
    after, loss = apply_shock(current, minimum, 0.5)
    np.testing.assert_array_equal(after, [20, 30, 5, 4, 0])
    np.testing.assert_array_equal(loss, [20, 10, 0, 3, 0])
    assert not np.signbit(loss).any()  # no -0.0


def test_shock_loss_gives_identical_results_on_numpy_arrays_and_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    current = rng.uniform(0, 100, size=(8, 300))
    current[:, :100] = np.round(current[:, :100])
    minimum = rng.uniform(0, 60, size=(8, 300))
    fraction = rng.choice([0.0, 0.5, 0.3, 1.0], size=(8, 300))
    for frac in (fraction, 0.5):
        frac_t = torch.as_tensor(frac) if isinstance(frac, np.ndarray) else frac
        loss_np = shock_loss(current, minimum, frac)
        loss_t = shock_loss(torch.as_tensor(current), torch.as_tensor(minimum), frac_t)
        np.testing.assert_array_equal(loss_np, loss_t.numpy())
        after_np, _ = apply_shock(current, minimum, frac)
        after_t, _ = apply_shock(torch.as_tensor(current), torch.as_tensor(minimum), frac_t)
        np.testing.assert_array_equal(after_np, after_t.numpy())
        assert np.all(after_np >= np.minimum(current, minimum))


def test_apply_shock_lands_exactly_on_a_fractional_minimum() -> None:
    current, minimum = np.array([30.0, 10.3, 0.7]), np.array([3.1, 9.9, 0.1])
    assert (current - (current - minimum))[0] != minimum[0]  # plain subtraction misses it
    after, loss = apply_shock(current, minimum, 0.9)
    np.testing.assert_array_equal(after, [3.1, 9.9, 0.7])  # floor(0.63) = 0: 0.7 loses none
    assert loss[2] == 0


def test_shock_can_be_restricted_to_hospitals_able_to_lose_staff() -> None:
    network = HospitalNetwork(
        current=[10, 10, 10, 10], minimum=[10, 10, 4, 10], target=[10, 10, 10, 10]
    )
    for seed in range(20):
        realisation = SuddenShock(eligible="able").realise(network, seed)
        assert realisation.shock_hospital.tolist() == [2]


def test_shock_parameters_are_validated_by_name() -> None:
    with pytest.raises(ScenarioError, match="fraction"):
        SuddenShock(fraction=1.5)
    with pytest.raises(ScenarioError, match="step"):
        SuddenShock(step=50)
    with pytest.raises(ScenarioError, match="count"):
        SuddenShock(count=3).realise(HospitalNetwork([1, 2], [0, 0], [1, 2]), 0)
    with pytest.raises(ScenarioError, match="eligible"):
        SuddenShock(eligible="some")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- composition
def test_shifting_plus_shock_has_both_and_each_matches_its_scenario_alone() -> None:
    network = default_network()
    both = make_scenario("shifting+shock").realise(network, 4)
    shifting = make_scenario("shifting").realise(network, 4)
    shock = make_scenario("shock").realise(network, 4)
    np.testing.assert_array_equal(both.target, shifting.target)
    assert not np.array_equal(both.target[49], network.target)
    np.testing.assert_array_equal(both.shock_hospital, shock.shock_hospital)
    assert both.shock_step.tolist() == [25]


def test_plus_operator_and_compose_are_the_same_and_flatten() -> None:
    a, b, c = ShiftingTargets(), SuddenShock(), Seasonal()
    assert (a + b).name == Compose([a, b]).name == "shifting+shock"
    assert ((a + b) + c).parts == (a, b, c)
    network = default_network()
    np.testing.assert_array_equal(
        ((a + b) + c).realise(network, 3).target, Compose([a, b, c]).realise(network, 3).target
    )


def test_two_shocks_compose_to_two_events_and_horizons_must_agree() -> None:
    realisation = (SuddenShock(step=10) + SuddenShock(step=30)).realise(default_network(), 0)
    assert realisation.shock_step.tolist() == [10, 30]
    with pytest.raises(ScenarioError, match="horizon"):
        ShiftingTargets(horizon=50) + SuddenShock(horizon=40)


def test_apply_events_returns_the_step_targets_and_does_not_modify_current() -> None:
    network = default_network()
    realisation = make_scenario("shock").realise(network, 0)
    current = network.current.copy()
    after, target, minimum = apply_events(25, current, realisation)
    np.testing.assert_array_equal(current, network.current)
    assert after.sum() < current.sum()
    np.testing.assert_array_equal(target, realisation.target[25])
    np.testing.assert_array_equal(minimum, network.minimum)
    with pytest.raises(ScenarioError, match="step"):
        apply_events(50, current, realisation)


# ---------------------------------------------------------------------- seasonal
def test_seasonal_is_periodic_and_swings_only_the_chosen_hospitals() -> None:
    network = generate_network(200, seed=1)
    realisation = Seasonal(period=20).realise(network, 2)
    chosen = realisation.info["seasonal_hospitals"][0]
    assert len(chosen) == 40  # 20% of 200
    target = realisation.target
    np.testing.assert_array_equal(target[:30], target[20:50])
    others = np.setdiff1d(np.arange(200), chosen)
    np.testing.assert_array_equal(target[:, others], np.tile(network.target[others], (50, 1)))
    # t = 5 is a quarter period: sin = 1, target = base + round(0.25 * base)
    np.testing.assert_array_equal(
        target[5, chosen], network.target[chosen] + np.floor(0.25 * network.target[chosen] + 0.5)
    )
    assert np.all(target[15, chosen] < network.target[chosen])


def test_seasonal_by_name_never_goes_below_minimum_and_random_phase_shifts() -> None:
    network = default_network()
    names = network.names[:3]
    realisation = Seasonal(hospitals=names, amplitude=3.0).realise(network, 0)
    np.testing.assert_array_equal(realisation.info["seasonal_hospitals"][0], [0, 1, 2])
    assert np.all(realisation.target >= realisation.minimum)
    assert np.any(realisation.target[:, :3] == network.minimum[:3])  # clipped at the trough
    phased = Seasonal(phase="random").realise(network, 0)
    assert not np.array_equal(phased.target[0], network.target)
    with pytest.raises(ScenarioError, match="hospitals"):
        Seasonal(hospitals=("Nowhere General",)).realise(network, 0)


# ---------------------------------------------------------------------- outbreak
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outbreak_starts_at_the_epicentre_and_the_raised_set_grows(seed: int) -> None:
    network = generate_network(300, seed=seed)
    realisation = Outbreak().realise(network, seed)
    epicentre = realisation.info["outbreak_epicentre"][0]
    raised = realisation.target > network.target
    assert not raised[:10].any()
    assert np.flatnonzero(raised[10]).tolist() == [epicentre]
    counts = raised.sum(axis=1)
    assert np.all(np.diff(counts) >= 0)
    assert np.all(raised[1:] >= raised[:-1])  # once raised, stays raised (no duration)
    assert counts[-1] > 10 * counts[10]
    base = network.target[epicentre]
    assert realisation.target[10, epicentre] == base + np.floor(0.4 * base + 0.5)
    assert np.all(realisation.target >= network.target)


def test_outbreak_with_duration_returns_to_base_and_needs_coords() -> None:
    network = default_network()
    realisation = Outbreak(start=5, duration=3).realise(network, 0)
    epicentre = realisation.info["outbreak_epicentre"][0]
    column = realisation.target[:, epicentre]
    assert np.flatnonzero(column != network.target[epicentre]).tolist() == [5, 6, 7]
    bare = HospitalNetwork(current=[5, 5], minimum=[1, 1], target=[5, 5])
    with pytest.raises(ScenarioError, match="coords"):
        Outbreak().realise(bare, 0)


# ---------------------------------------------------------------------- CSV targets
def test_csv_targets_hold_until_the_next_listed_step(tmp_path: Path) -> None:
    network = default_network()
    a, b = network.names[0], network.names[1]
    assert (network.minimum[:2] <= [40, 70]).all()
    path = write_csv(tmp_path, f"step,name,target\n0,{a},50\n\n12,{a},41\n30,{b},70\n")
    realisation = from_csv(path).realise(network, 0)
    target = realisation.target
    assert target[:12, 0].tolist() == [50] * 12
    assert target[12:, 0].tolist() == [41] * 38
    assert target[:30, 1].tolist() == [network.target[1]] * 30
    assert target[30:, 1].tolist() == [70] * 20
    np.testing.assert_array_equal(target[:, 2:], np.tile(network.target[2:], (50, 1)))


def test_csv_target_below_minimum_is_raised_with_a_warning(tmp_path: Path) -> None:
    network = default_network()
    a = network.names[0]
    path = write_csv(tmp_path, f"step,name,target\n3,{a},0\n")
    with pytest.warns(ScenarioWarning, match="row 1"):
        realisation = from_csv(path).realise(network, 0)
    assert realisation.target[3, 0] == network.minimum[0]


BAD_CSV = [
    ("step,name,target\n0,Kington General,40\n1.5,Kington General,41\n", "'step'", 2),
    ("step,name,target\nabc,Kington General,41\n", "'step'", 1),
    ("step,name,target\n0,Kington General,40\n50,Kington General,41\n", "'step'", 2),
    ("step,name,target\n-1,Kington General,41\n", "'step'", 1),
    ("step,name,target\n0,Kington General,-3\n", "'target'", 1),
    ("step,name,target\n0,Kington General,forty\n", "'target'", 1),
    ("step,name,target\n0,Kington General,nan\n", "'target'", 1),
    ("step,name,target\n0,Kington General,40\n0,Kington General,41\n", "'step'", 2),
    ("step,name,target\n0,,40\n", "'name'", 1),
]


@pytest.mark.parametrize(("text", "column", "row"), BAD_CSV)
def test_csv_bad_values_name_the_column_and_row(
    tmp_path: Path, text: str, column: str, row: int
) -> None:
    path = write_csv(tmp_path, text)
    with pytest.raises(ScenarioError, match=rf"column {column}, row {row}\b") as info:
        from_csv(path)
    assert isinstance(info.value, ValueError)


def test_csv_unknown_hospital_names_column_and_row(tmp_path: Path) -> None:
    network = default_network()
    path = write_csv(tmp_path, f"step,name,target\n0,{network.names[0]},40\n4,Atlantis,41\n")
    scenario = from_csv(path)
    with pytest.raises(ScenarioError, match=r"column 'name', row 2: 'Atlantis'"):
        scenario.realise(network, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("step,name\n0,Kington General\n", "missing column 'target'"),
        ("name,target\nKington General,4\n", "missing column 'step'"),
        ("step,name,target,extra\n0,Kington General,4,1\n", "unknown column 'extra'"),
        ("step,name,target,step\n0,Kington General,4,1\n", "column 'step' appears more"),
        ("", "empty"),
        ("step,name,target\n0,Kington General\n", "row 1 has 2 cells"),
    ],
)
def test_csv_bad_header_or_shape_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        from_csv(write_csv(tmp_path, text))


def test_csv_header_order_bom_and_horizon_are_respected(tmp_path: Path) -> None:
    network = default_network()
    path = write_csv(tmp_path, f"\ufefftarget,step,name\n64,19,{network.names[5]}\n")
    realisation = from_csv(path, horizon=20).realise(network, 0)
    assert realisation.target.shape == (20, network.n)
    assert realisation.target[19, 5] == 64 and realisation.target[18, 5] == network.target[5]
    with pytest.raises(ScenarioError, match=r"column 'step', row 1"):
        from_csv(path, horizon=19)


# ---------------------------------------------------------------------- make_scenario
def test_make_scenario_parses_names_combinations_and_csv(tmp_path: Path) -> None:
    assert SCENARIOS == ("static", "shifting", "shock", "seasonal", "outbreak")
    kinds = {
        "static": Static,
        "shifting": ShiftingTargets,
        "shock": SuddenShock,
        "seasonal": Seasonal,
        "outbreak": Outbreak,
    }
    for name, kind in kinds.items():
        scenario = make_scenario(name, horizon=30)
        assert isinstance(scenario, kind) and scenario.horizon == 30 and scenario.name == name
    combo = make_scenario(" Shifting + shock ")
    assert isinstance(combo, Compose) and combo.name == "shifting+shock"
    path = write_csv(tmp_path, "step,name,target\n")
    from_file = make_scenario(f"csv:{path}+shock")
    assert isinstance(from_file.parts[0], CsvTargets) and from_file.name == f"csv:{path}+shock"


def test_make_scenario_routes_options_and_rejects_ambiguous_or_unknown_ones() -> None:
    assert make_scenario("shock", fraction=0.3).fraction == 0.3  # type: ignore[attr-defined]
    combo = make_scenario("shifting+shock", every=5, shock={"fraction": 0.25})
    assert combo.parts[0].every == 5  # type: ignore[attr-defined]
    assert combo.parts[1].fraction == 0.25  # type: ignore[attr-defined]
    with pytest.raises(ScenarioError, match="ambiguous"):
        make_scenario("seasonal+shock", fraction=0.3)
    with pytest.raises(ScenarioError, match="speed"):
        make_scenario("shifting", speed=3)
    with pytest.raises(ScenarioError, match="unknown option 'speed'"):
        make_scenario("shock", shock={"speed": 3})


def test_make_scenario_unknown_name_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'tsunami'") as info:
        make_scenario("shifting+tsunami")
    for name in SCENARIOS:
        assert name in str(info.value)
    assert "csv:PATH" in str(info.value)


# ---------------------------------------------------------------------- scale
def test_realise_scales_to_ten_thousand_hospitals() -> None:
    network = generate_network(10_000, seed=0)
    scenario = make_scenario("shifting+shock+seasonal+outbreak")
    scenario.realise(network, 0)
    start = time.perf_counter()
    realisation = scenario.realise(network, 1)
    elapsed = time.perf_counter() - start
    assert realisation.target.shape == (50, 10_000)
    assert np.all(realisation.target >= realisation.minimum)
    assert elapsed < 0.5  # typically ~20 ms; generous for a shared machine


# ---------------------------------------------------------------------- parameters in the spec
def test_parameters_in_the_spec_string_reach_each_part() -> None:
    combo = make_scenario("shock(fraction=0.3, step=10)+seasonal(amplitude=0.2,period=12)")
    shock, seasonal = combo.parts
    assert isinstance(shock, SuddenShock) and isinstance(seasonal, Seasonal)
    assert (shock.fraction, shock.shock_at) == (0.3, 10)
    assert (seasonal.amplitude, seasonal.period, seasonal.fraction) == (0.2, 12, 0.2)
    outbreak = make_scenario("outbreak(speed=80,peak=0.5,duration=none)")
    assert (outbreak.speed, outbreak.peak, outbreak.duration) == (80, 0.5, None)  # type: ignore
    shifting = make_scenario("shifting(every=5,max_change=3)", horizon=20)
    assert (shifting.every, shifting.max_change) == (5, 3)  # type: ignore[attr-defined]
    words = make_scenario("seasonal(phase=random,hospitals=Alpha|Beta)+shock(eligible=able)")
    assert words.parts[0].phase == "random"  # type: ignore[attr-defined]
    assert words.parts[0].hospitals == ("Alpha", "Beta")  # type: ignore[attr-defined]
    assert words.parts[1].eligible == "able"  # type: ignore[attr-defined]


def test_a_spec_with_parameters_draws_like_the_same_keywords() -> None:
    network = generate_network(30, seed=4)
    by_spec = make_scenario("shifting(every=4)+shock(fraction=0.25)", horizon=20)
    by_keywords = make_scenario("shifting+shock", horizon=20, every=4, shock={"fraction": 0.25})
    a, b = by_spec.realise(network, 9), by_keywords.realise(network, 9)
    np.testing.assert_array_equal(a.target, b.target)
    np.testing.assert_array_equal(a.shock_fraction, [0.25])
    np.testing.assert_array_equal(a.shock_hospital, b.shock_hospital)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("shock(frac=0.3)", r"shock: unknown option 'frac'.*accepts count, eligible, fraction"),
        ("shock(fraction)", r"expected name=value"),
        ("shock(fraction=2)", r"shock: fraction: must lie in \(0, 1\]"),
        ("shifting(every=2.5)", r"shifting: every: must be an integer >= 1"),
        ("shock(fraction=0.3", r"'\(' without '\)'"),
        ("shock)(", r"'\)' without '\('"),
        ("shock(step=10)x", r"text after the closing"),
        ("tsunami(size=3)", r"unknown scenario 'tsunami'"),
        ("shock(fraction=0.3,fraction=0.4)", r"given twice"),
    ],
)
def test_bad_parameters_in_the_spec_are_named(spec: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        make_scenario(spec)


def test_an_option_given_in_the_spec_and_as_a_keyword_must_agree() -> None:
    assert make_scenario("shock(fraction=0.3)", fraction=0.3).fraction == 0.3  # type: ignore
    with pytest.raises(ScenarioError, match="give it once"):
        make_scenario("shock(fraction=0.3)", fraction=0.4)


def test_events_give_the_fixed_steps_a_plot_marks() -> None:
    assert make_scenario("shock", horizon=50).events() == ((25, "shock"),)
    assert make_scenario("shock(step=7)", horizon=50).events() == ((7, "shock"),)
    assert make_scenario("shifting", horizon=35).events() == tuple(
        (s, "targets shift") for s in (10, 20, 30)
    )
    assert make_scenario("outbreak", horizon=50).events() == ((10, "outbreak starts"),)
    assert make_scenario("static").events() == make_scenario("seasonal").events() == ()
    combo = make_scenario("shifting+shock", horizon=30).events()
    assert combo == ((10, "targets shift"), (15, "shock"), (20, "targets shift"))


def test_a_semicolon_targets_csv_and_a_missing_one_are_handled(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "step;name;target\n2;A;9,0\n")
    scenario = make_scenario(f"csv:{path}", horizon=5)
    network = HospitalNetwork(current=[5, 5], minimum=[1, 1], target=[5, 5], names=("A", "B"))
    np.testing.assert_array_equal(scenario.realise(network, 0).target[:, 0], [5, 5, 9, 9, 9])
    with pytest.raises(ScenarioError, match="file not found"):
        make_scenario(f"csv:{tmp_path / 'missing.csv'}")
