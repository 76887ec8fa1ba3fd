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
