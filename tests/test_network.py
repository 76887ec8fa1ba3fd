"""The hospital network: construction, CSV round trips, every bad-input case, the generator."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marra.network import (
    HospitalNetwork,
    InfeasibleError,
    NetworkError,
    NetworkWarning,
    default_network,
    generate_network,
)

GOOD = "name,current,minimum,target\nA,10,5,8\nB,3,4,6\nC,7,2,7\n"


def write(tmp_path: Path, text: str, name: str = "net.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_a_good_file(tmp_path: Path) -> None:
    network = HospitalNetwork.from_csv(write(tmp_path, GOOD))
    assert network.names == ("A", "B", "C")
    np.testing.assert_array_equal(network.current, [10, 3, 7])
    np.testing.assert_array_equal(network.minimum, [5, 4, 2])
    np.testing.assert_array_equal(network.target, [8, 6, 7])
    assert network.n == 3 and network.total == 20
    assert network.capacity is None and network.coords is None


def test_byte_order_mark_and_windows_line_endings_are_read(tmp_path: Path) -> None:
    text = "\ufeff" + GOOD.replace("\n", "\r\n")
    network = HospitalNetwork.from_csv(write(tmp_path, text))
    assert network.names == ("A", "B", "C")
    assert network.total == 20


def test_optional_columns_and_round_trip(tmp_path: Path) -> None:
    text = (
        "name,current,minimum,target,capacity,lat,lon\nA,10,5,8,12,51.5,-0.1\nB,3,4,6,,52.2,0.12\n"
    )
    network = HospitalNetwork.from_csv(write(tmp_path, text))
    assert network.capacity[0] == 12 and np.isinf(network.capacity[1])
    np.testing.assert_allclose(network.coords, [[51.5, -0.1], [52.2, 0.12]])
    out = tmp_path / "out.csv"
    network.to_csv(out)
    again = HospitalNetwork.from_csv(out)
    np.testing.assert_array_equal(again.current, network.current)
    np.testing.assert_array_equal(again.upper, network.upper)
    np.testing.assert_allclose(again.coords, network.coords)
    assert again.names == network.names


def test_network_is_immutable() -> None:
    network = HospitalNetwork([1, 2], [0, 0], [1, 2])
    with pytest.raises(ValueError):
        network.current[0] = 5
    updated = network.with_current([2, 1])
    assert network.current[0] == 1 and updated.current[0] == 2


def test_current_below_minimum_is_legal() -> None:
    network = HospitalNetwork([1, 20], [5, 5], [10, 10])
    assert network.current[0] < network.minimum[0]


def test_target_below_minimum_is_raised_with_a_warning() -> None:
    with pytest.warns(NetworkWarning, match="row 1"):
        network = HospitalNetwork([5, 5], [4, 1], [2, 3], names=["A", "B"])
    np.testing.assert_array_equal(network.target, [4, 3])


def test_infeasible_states_the_shortfall() -> None:
    network = HospitalNetwork([1, 2], [3, 4], [3, 4])
    assert network.shortfall == 4
    with pytest.raises(InfeasibleError, match="shortfall 4") as info:
        network.check_feasible()
    assert info.value.shortfall == 4


# fmt: off
BAD_CASES = [
    # (file text, words the message must contain)
    ("", ["empty"]),
    ("name,current,minimum,target\n", ["header but no hospital rows"]),
    ("name,current,minimum\nA,1,1\n", ["missing required column", "'target'"]),
    ("name,current,minimum,target,beds\nA,1,1,1,3\n", ["unknown column", "'beds'"]),
    (
        "name,current,minimum,target\nA,1,1,1\nB,x,1,1\n",
        ["'current'", "row 2", "'B'", "not a number"],
    ),
    ("name,current,minimum,target\nA,nan,1,1\n", ["'current'", "row 1", "not a finite"]),
    ("name,current,minimum,target\nA,1,inf,1\n", ["'minimum'", "row 1", "not a finite"]),
    ("name,current,minimum,target\nA,1,1,1\nB,-2,1,1\n", ["'current'", "row 2", "'B'", "negative"]),
    (
        "name,current,minimum,target,capacity\nA,5,6,6,5\n",
        ["'minimum'", "row 1", "exceeds capacity"],
    ),
    (
        "name,current,minimum,target,capacity\nA,5,2,9,6\n",
        ["'target'", "row 1", "exceeds capacity"],
    ),
    (
        "name,current,minimum,target,capacity\nA,9,2,5,6\n",
        ["'current'", "row 1", "exceeds capacity"],
    ),
    ("name,current,minimum,target\nA,1,1,1\nA,2,1,1\n", ["'name'", "row 2", "duplicate"]),
    ("name,current,minimum,target\nA,1,1,1\n ,2,1,1\n", ["'name'", "row 2", "empty"]),
    ("name,current,minimum,target,lat,lon\nA,1,1,1,91,0\n", ["'lat'", "row 1", "outside"]),
    ("name,current,minimum,target,lat,lon\nA,1,1,1,0,-181\n", ["'lon'", "row 1", "outside"]),
    ("name,current,minimum,target\nA,1.5,1,1\n", ["'current'", "row 1", "fractional"]),
    ("name,current,minimum,target,lat\nA,1,1,1,3\n", ["'lat' and 'lon'"]),
    ("name,current,minimum,target\nA,1,1\n", ["row 1", "cells"]),
    ("name,current,minimum,target\nA,1,,1\n", ["'minimum'", "row 1", "empty"]),
]
# fmt: on


@pytest.mark.parametrize(("text", "words"), BAD_CASES, ids=[w[0] for _, w in BAD_CASES])
def test_bad_csv_raises_network_error_naming_field_and_row(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    with pytest.raises(NetworkError) as info:
        HospitalNetwork.from_csv(write(tmp_path, text))
    for word in words:
        assert word in str(info.value)
    assert isinstance(info.value, ValueError)


def test_fractional_staff_is_legal_in_continuous_mode(tmp_path: Path) -> None:
    network = HospitalNetwork.from_csv(
        write(tmp_path, "name,current,minimum,target\nA,1.5,1,1\n"), integer=False
    )
    assert network.current[0] == 1.5
    with pytest.raises(NetworkError, match="fractional"):
        network.check_integral()


def test_constructor_errors_name_field_and_row() -> None:
    with pytest.raises(NetworkError, match=r"'minimum', row 2 \(hospital 'B'\)"):
        HospitalNetwork([1, 2], [0, -1], [1, 2], names=["A", "B"])
    with pytest.raises(NetworkError, match="'target': has 1 values"):
        HospitalNetwork([1, 2], [0, 0], [1])
    with pytest.raises(NetworkError, match="no hospitals"):
        HospitalNetwork([], [], [])


def test_generator_is_seeded_and_follows_documented_ranges() -> None:
    a = generate_network(400, seed=3)
    b = generate_network(400, seed=3)
    c = generate_network(400, seed=4)
    np.testing.assert_array_equal(a.current, b.current)
    assert a.names == b.names
    assert not np.array_equal(a.current, c.current)
    assert a.target.min() >= 20 and a.target.max() <= 80
    ratio = a.minimum / a.target
    assert ratio.min() >= 0.6 - 0.5 / 20 and ratio.max() <= 0.8 + 0.5 / 20
    assert abs(a.total - a.target.sum()) <= 0.05 * a.target.sum() + 1
    assert a.is_integral
    assert a.coords is not None and len(set(a.names)) == 400


@settings(deadline=None, max_examples=200)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**31 - 1))
def test_generated_networks_are_valid_and_feasible(n: int, seed: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        network = generate_network(n, seed=seed)
    assert network.n == n
    assert network.minimum.sum() <= network.total
    assert network.is_integral
    lo = np.ceil(network.target.sum() * 0.95)
    hi = np.floor(network.target.sum() * 1.05)
    assert lo <= network.total <= hi


def test_generator_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="target_range"):
        generate_network(5, target_range=(10, 5))
    with pytest.raises(ValueError, match="n:"):
        generate_network(0)
    with pytest.raises(ValueError, match="minimum_fraction"):
        generate_network(5, minimum_fraction=(0.5, 1.5))


def test_default_network_is_150_named_hospitals_with_coordinates() -> None:
    network = default_network()
    assert network.n == 150
    assert network.coords is not None
    assert len(set(network.names)) == 150
    assert network.minimum.sum() <= network.total
    regenerated = generate_network(150, seed=2025)
    np.testing.assert_array_equal(network.current, regenerated.current)
    np.testing.assert_array_equal(network.target, regenerated.target)


# ------------------------------------------------------------ issue 8 (items 3, 21, 25, 31)
def test_partly_filled_capacities_check_integrality_without_a_runtime_warning() -> None:
    network = HospitalNetwork(
        current=[30, 5, 12], minimum=[10, 8, 6], target=[15, 20, 12], capacity=[40, np.inf, np.inf]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        network.check_integral()
        assert network.is_integral
    fractional = HospitalNetwork(
        current=[1.5, 2], minimum=[0, 0], target=[1, 1], capacity=[np.inf, 3]
    )
    with pytest.raises(NetworkError, match="row 1"):
        fractional.check_integral()


@pytest.mark.parametrize(
    ("text", "integer"),
    [
        ("name;current;minimum;target\nA;10;5;8\nB;3;4;6\nC;7;2;7\n", True),
        ("name\tcurrent\tminimum\ttarget\nA\t10\t5\t8\nB\t3\t4\t6\nC\t7\t2\t7\n", True),
        ("name;current;minimum;target\nA;10,0;5;8\nB;3;4;6,0\nC;7;2;7\n", True),
        ("\ufeffname;current;minimum;target\r\nA;10;5;8\r\nB;3;4;6\r\nC;7;2;7\r\n", True),
    ],
    ids=["semicolon", "tab", "decimal-comma", "bom-crlf-semicolon"],
)
def test_semicolon_tab_and_decimal_comma_exports_are_read(
    tmp_path: Path, text: str, integer: bool
) -> None:
    network = HospitalNetwork.from_csv(write(tmp_path, text), integer=integer)
    assert network.names == ("A", "B", "C")
    np.testing.assert_array_equal(network.current, [10, 3, 7])
    np.testing.assert_array_equal(network.target, [8, 6, 7])


def test_decimal_commas_give_fractional_staff_and_coordinates(tmp_path: Path) -> None:
    text = "name;current;minimum;target;lat;lon\nA;10,5;5;8;51,5;-0,12\nB;2;1;4,5;52;0\n"
    network = HospitalNetwork.from_csv(write(tmp_path, text), integer=False)
    np.testing.assert_array_equal(network.current, [10.5, 2])
    np.testing.assert_array_equal(network.target, [8, 4.5])
    np.testing.assert_array_equal(network.coords, [[51.5, -0.12], [52, 0]])
    with pytest.raises(NetworkError, match=r"column 'current', row 1 .*fractional"):
        HospitalNetwork.from_csv(write(tmp_path, text))


def test_an_unknown_delimiter_is_named_as_the_likely_cause(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match=r"separated by '\|'"):
        HospitalNetwork.from_csv(write(tmp_path, "name|current|minimum|target\nA|1|1|1\n"))


def test_commas_inside_quoted_names_still_work(tmp_path: Path) -> None:
    text = 'name,current,minimum,target\n"Alpha, North",3,1,2\n"Beta ""B""",1,1,1\n'
    assert HospitalNetwork.from_csv(write(tmp_path, text)).names == ("Alpha, North", 'Beta "B"')


@pytest.mark.parametrize("rows", [2_000, 20_000])
def test_an_unclosed_quote_names_the_row_and_line_where_it_opened(
    tmp_path: Path, rows: int
) -> None:
    lines = [f"H{i},{i % 7 + 1},1,2" for i in range(rows)]
    lines[1234] = '"H1234,3,1,2'  # data row 1235, file line 1237 (header, one blank line)
    text = "name,current,minimum,target\n\n" + "\n".join(lines) + "\n"
    with pytest.raises(NetworkError, match=r"row 1235 \(line 1237\): a quote .* never closed"):
        HospitalNetwork.from_csv(write(tmp_path, text))


def test_at_state_equals_the_full_constructor_and_shares_the_names() -> None:
    base = generate_network(40, seed=3, capacity_factor=1.5)
    rng = np.random.default_rng(0)
    current = np.floor(base.current * rng.uniform(0.5, 1.0, base.n))
    target = np.clip(base.target + rng.integers(-2, 3, base.n), base.minimum, base.capacity)
    fast = base.at_state(current, target, base.minimum)
    slow = HospitalNetwork(
        current=current,
        minimum=base.minimum,
        target=target,
        capacity=base.capacity,
        names=base.names,
        coords=base.coords,
    )
    for field in ("current", "minimum", "target", "capacity", "coords"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
        assert not getattr(fast, field).flags.writeable
    assert fast.names is base.names


def test_at_state_falls_back_to_full_validation_for_bad_values() -> None:
    base = generate_network(5, seed=1)
    with pytest.raises(NetworkError, match="column 'current', row 2"):
        base.at_state(np.array([1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.warns(NetworkWarning, match="target"):
        low = base.at_state(base.current, base.minimum - 1, base.minimum)
    np.testing.assert_array_equal(low.target, base.minimum)


def test_at_state_costs_no_python_loop_over_hospitals() -> None:
    import time

    base = generate_network(30_000, seed=0, names=True)
    started = time.perf_counter()
    for _ in range(20):
        base.at_state(base.current, base.target, base.minimum)
    fast = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(5):
        base.with_current(base.current)
    slow = (time.perf_counter() - started) * 4
    assert fast < slow / 5, (fast, slow)
