"""The ``marra`` command end to end: recommend, demo, exit codes, JSON contract, no stray files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from marra.cli import app
from marra.network import HospitalNetwork, default_network

runner = CliRunner()

GOOD = (
    "name,current,minimum,target,lat,lon\n"
    "Alpha,30,10,15,51.5,-0.1\n"
    "Beta,5,8,20,52.2,0.1\n"
    "Gamma,12,6,12,53.4,-2.2\n"
    "Delta,3,4,9,50.9,-1.4\n"
)
JSON_KEYS = {
    "mae", "gini", "coverage_gini", "cv", "jain", "theil", "atkinson", "mre",
    "mre_normalised", "inc_rate", "minima_shortfall", "moved",
}  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "net.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess (separate stdout and stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "marra.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("strategy", ["qp", "nwo", "taxation", "hybrid", "greedy", "hold"])
def test_recommend_json_is_one_object_with_the_contract_keys(tmp_path: Path, strategy: str) -> None:
    path = write(tmp_path, GOOD)
    result = run("recommend", str(path), "--strategy", strategy, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON object, nothing else
    assert set(payload) >= {"allocation", "transfers", "metrics"}
    assert set(payload["allocation"]) == {"Alpha", "Beta", "Gamma", "Delta"}
    assert sum(payload["allocation"].values()) == 50
    assert JSON_KEYS <= set(payload["metrics"]["before"])
    assert JSON_KEYS <= set(payload["metrics"]["after"])
    # the transfers applied to current give the allocation
    network = HospitalNetwork.from_csv(path)
    current = dict(zip(network.names, network.current, strict=True))
    for transfer in payload["transfers"]:
        assert set(transfer) == {"from", "to", "count", "distance_km"}  # GOOD has lat, lon
        current[transfer["from"]] -= transfer["count"]
        current[transfer["to"]] += transfer["count"]
    assert current == payload["allocation"]


def test_recommend_qp_meets_minima_and_reduces_mae(tmp_path: Path) -> None:
    result = run("recommend", str(write(tmp_path, GOOD)), "--json")
    payload = json.loads(result.stdout)
    allocation = payload["allocation"]
    assert allocation["Beta"] >= 8 and allocation["Delta"] >= 4
    assert payload["metrics"]["after"]["mae"] < payload["metrics"]["before"]["mae"]
    assert payload["metrics"]["after"]["minima_shortfall"] == 0


def test_recommend_budget_caps_staff_moved(tmp_path: Path) -> None:
    result = run("recommend", str(write(tmp_path, GOOD)), "--budget", "3", "--json")
    payload = json.loads(result.stdout)
    assert sum(t["count"] for t in payload["transfers"]) <= 3
    assert payload["metrics"]["after"]["moved"] <= 3


def test_recommend_prints_transfers_and_metrics_table(tmp_path: Path) -> None:
    out = tmp_path / "plan.csv"
    result = run("recommend", str(write(tmp_path, GOOD)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Before and after" in result.stdout and "MAE" in result.stdout
    assert "Alpha" in result.stdout
    lines = out.read_text().splitlines()
    assert lines[0].startswith("from,to,count")
    assert len(lines) > 1


def test_recommend_continuous_accepts_fractional_staff(tmp_path: Path) -> None:
    text = "name,current,minimum,target\nA,10.5,2,5\nB,1.5,2,7.5\n"
    assert run("recommend", str(write(tmp_path, text)), "--json").returncode == 2
    result = run("recommend", str(write(tmp_path, text)), "--continuous", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    # QP: y = t + nu with nu = (12 - 12.5) / 2 = -0.25
    assert payload["allocation"] == pytest.approx({"A": 4.75, "B": 7.25})


BAD_FILES = [
    ("name,current,minimum\nA,1,1\n", "target"),
    ("name,current,minimum,target,beds\nA,1,1,1,2\n", "beds"),
    ("", "empty"),
    ("name,current,minimum,target\n", "no hospital rows"),
    ("name,current,minimum,target\nA,1,1,1\nB,two,1,1\n", "row 2"),
    ("name,current,minimum,target\nA,1,1,1\nB,-3,1,1\n", "negative"),
    ("name,current,minimum,target\nA,1,1,1\nA,1,1,1\n", "duplicate"),
    ("name,current,minimum,target,capacity\nA,9,1,1,5\n", "capacity"),
    ("name,current,minimum,target,lat,lon\nA,1,1,1,100,0\n", "lat"),
    ("name,current,minimum,target\nA,nan,1,1\n", "finite"),
]


@pytest.mark.parametrize(("text", "word"), BAD_FILES, ids=[w for _, w in BAD_FILES])
def test_bad_input_exits_2_with_one_line_and_no_output_file(
    tmp_path: Path, text: str, word: str
) -> None:
    out = tmp_path / "plan.csv"
    result = run("recommend", str(write(tmp_path, text)), "--out", str(out), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert word in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_infeasible_exits_3_and_keeps_an_existing_output_file(tmp_path: Path) -> None:
    text = "name,current,minimum,target\nA,3,5,6\nB,2,4,4\n"
    out = tmp_path / "plan.csv"
    out.write_text("old plan\n")
    result = run("recommend", str(write(tmp_path, text)), "--out", str(out))
    assert result.returncode == 3
    assert "shortfall 4" in result.stderr
    assert out.read_text() == "old plan\n"
    ok = run("recommend", str(write(tmp_path, text)), "--shortfall", "--json")
    assert ok.returncode == 0, ok.stderr
    allocation = json.loads(ok.stdout)["allocation"]
    assert sum(allocation.values()) == 5


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert run("recommend", str(path), "--strategy", "magic").returncode == 2
    assert run("recommend", str(path), "--budget", "-1").returncode == 2
    missing = run("recommend", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_target_below_minimum_warns_on_stderr_and_keeps_json_clean(tmp_path: Path) -> None:
    text = "name,current,minimum,target\nA,10,6,4\nB,2,1,8\n"
    result = run("recommend", str(write(tmp_path, text)), "--json")
    assert result.returncode == 0
    assert "warning" in result.stderr
    json.loads(result.stdout)


def test_demo_compares_every_strategy_on_the_default_network() -> None:
    result = runner.invoke(app, ["demo", "--steps", "5"])
    assert result.exit_code == 0, result.output
    for name in ("qp", "nwo", "taxation", "hybrid", "greedy", "hold"):
        assert name in result.output
    assert str(default_network().n) in result.output
    assert "ppo (shipped)" in result.output  # the pre-trained policy ships as package data


def test_recommend_on_the_default_network_matches_library_call(tmp_path: Path) -> None:
    from marra.strategies import allocate

    path = tmp_path / "default.csv"
    default_network().to_csv(path)
    result = run("recommend", str(path), "--strategy", "qp", "--json")
    payload = json.loads(result.stdout)
    expected = allocate(default_network(), "qp")
    got = np.array([payload["allocation"][n] for n in default_network().names])
    np.testing.assert_array_equal(got, expected)


def test_planner_path_does_not_import_torch(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    code = (
        "import sys; from marra.cli import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['recommend', {str(path)!r}, '--json']); "
        "assert r.exit_code == 0, r.output; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr
