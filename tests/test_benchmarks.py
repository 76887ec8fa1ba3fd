"""Smoke tests of the benchmark scripts: they run end to end and write the JSON they promise.

Timings are not asserted (the machine is shared); only the structure of the output is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marra.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "strategies.py"
CASES = ("qp", "nwo", "qp, scarce", "nwo weighted, scarce")


def _run_strategies_benchmark(out: Path, env: dict[str, str] | None = None) -> dict:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--max-n", "1000", "--repeats", "1"]
        + ["--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def _check_common_structure(report: dict) -> None:
    meta = report["meta"]
    assert meta["sizes"] == [150, 1000]
    for key in ("cpu_count", "numpy", "scipy", "date", "command"):
        assert key in meta
    rows = report["strategies"]
    # every strategy x mode at every n, plus qp/nwo under a budget in both modes
    assert len(rows) == 2 * (2 * len(STRATEGIES) + 2 * 2)
    assert {r["strategy"] for r in rows} == set(STRATEGIES)
    for row in rows:
        assert row["median_s"] > 0 and row["repeats"] == 1
    budgeted = [r for r in rows if r["transfer_budget"] is not None]
    assert {r["strategy"] for r in budgeted} == {"qp", "nwo"}
    assert all(r["binding"] and r["moved"] <= r["transfer_budget"] + 1e-6 for r in budgeted)
    exact = report["exact"]
    assert {(r["n"], r["case"]) for r in exact} == {(n, c) for n in (150, 1000) for c in CASES}
    assert all(r["marra_median_s"] > 0 and r["water_fill_median_s"] > 0 for r in exact)
    # the scarce QP case puts hospitals at their minimum (the water-filling's long path)
    assert all(r["at_minimum"] > 0.2 for r in exact if r["case"] == "qp, scarce")
    plans = report["plan"]["rows"]
    assert {(p["n"], p["method"]) for p in plans} == {
        (n, m) for n in (150, 1000) for m in ("transport", "largest-first")
    }
    for n in (150, 1000):
        exact, greedy = (
            next(p for p in plans if p["n"] == n and p["method"] == m)
            for m in ("transport", "largest-first")
        )
        assert exact["moved"] == greedy["moved"]
        assert exact["distance_km"] <= greedy["distance_km"] + 1e-6


def test_strategies_benchmark_writes_medians_and_cvxpy_ratios(tmp_path: Path) -> None:
    pytest.importorskip("cvxpy")
    report = _run_strategies_benchmark(tmp_path / "strategies.json")
    _check_common_structure(report)
    assert report["cvxpy_note"] is None
    cvxpy_rows = report["cvxpy"]
    assert {(r["n"], r["case"]) for r in cvxpy_rows} == {(n, c) for n in (150, 1000) for c in CASES}
    for row in cvxpy_rows:
        assert row["ratio_total"] == pytest.approx(row["total_median_s"] / row["marra_median_s"])
        assert abs(row["objective_gap_rel"]) < 1e-4  # same problem, same optimum
        assert row["solver"] and row["ratio_resolve"] is not None


def test_strategies_benchmark_without_cvxpy_skips_the_comparison_with_a_note(
    tmp_path: Path,
) -> None:
    # a stand-in package that fails to import, found before the real cvxpy
    blocker = tmp_path / "blocker" / "cvxpy"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("cvxpy hidden by the test")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(blocker.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    report = _run_strategies_benchmark(tmp_path / "strategies.json", env)
    _check_common_structure(report)
    assert report["cvxpy"] == []
    assert "cvxpy is not installed" in report["cvxpy_note"]
    assert report["meta"]["cvxpy"] is None


TRAINING_SCRIPT = ROOT / "benchmarks" / "training.py"


def test_training_benchmark_compares_both_learners_on_the_same_evaluation_set(
    tmp_path: Path,
) -> None:
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "training.json"
    completed = subprocess.run(
        [sys.executable, str(TRAINING_SCRIPT), "--quick", "--cap-seconds", "1"]
        + ["--throughput-steps", "800", "--sb3-n-steps", "32", "--eval-every", "800"]
        + ["--eval-episodes", "4", "--sb3-cap-seconds", "2", "--sb3-total-steps", "512"]
        + ["--peers", "sb3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    for key in ("cpu_count", "date", "command", "load_average_before", "load_average_after"):
        assert key in report["meta"]
    evaluation = report["evaluation"]
    refs = evaluation["references"]
    # hold through the environment equals ClassicalMethod("hold"): same draws, same MAE
    assert refs["same_draws_check"] is True
    assert len(refs["qp_per_episode"]) == 4
    assert refs["qp"] < refs["hold"]
    assert evaluation["target_mae"] == pytest.approx(1.1 * refs["qp"])
    for side in ("marra", "sb3"):
        throughput = report[side]["throughput"]
        assert throughput["env_steps"] > 0 and throughput["env_steps_per_s"] > 0
        assert throughput["rollout_s"] + throughput["update_s"] <= throughput["seconds"] + 1e-6
        ttq = report[side]["time_to_quality"]
        assert ttq["curve"] and ttq["stopped_by"] in ("target", "cap", "total_steps")
        assert ttq["best_mae"] == min(point["mae"] for point in ttq["curve"])
        assert ttq["reached"] == (ttq["best_mae"] <= evaluation["target_mae"])
        assert report[side]["parameters"]["total"] > 0
    assert report["sb3"]["settings"]["n_steps"] == 32
    # SB3's own cap and budget: it never runs past 512 env-steps, marra keeps its budget
    meta = report["meta"]
    assert meta["sb3_cap_seconds"] == 2 and meta["sb3_total_steps"] == 512
    assert report["sb3"]["time_to_quality"]["cap_seconds"] == 2
    assert report["sb3"]["time_to_quality"]["env_steps_at_stop"] <= 512
    assert report["marra"]["time_to_quality"]["cap_seconds"] == 1
    # marra's policy scored one episode at a time through PolicyMethod agrees with the batch
    assert report["marra"]["time_to_quality"]["crosscheck"]["agree"] is True
    ratio = report["ratios"]["throughput_marra_over_sb3"]
    assert ratio == pytest.approx(
        report["marra"]["throughput"]["env_steps_per_s"]
        / report["sb3"]["throughput"]["env_steps_per_s"]
    )
    assert set(report["aims"]) == {
        "throughput_not_below_sb3",
        "marra_reached_target_within_cap",
        "time_to_quality_at_least_10x",
    }


def test_training_benchmark_runs_both_torchrl_routes_on_the_same_evaluation_set(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torchrl", reason="TorchRL is not installed (extra marra[torchrl])")
    out = tmp_path / "training.json"
    completed = subprocess.run(
        [sys.executable, str(TRAINING_SCRIPT), "--quick", "--cap-seconds", "1"]
        + ["--n-hospitals", "20", "--horizon", "10", "--transfer-budget", "20"]
        + ["--throughput-steps", "160", "--eval-every", "160", "--eval-episodes", "2"]
        + ["--total-steps", "480", "--peers", "torchrl-wrapper,torchrl-native"]
        + ["--critic", "state"]  # the peer's critic: a state MLP (the hospital default is pool)
        + ["--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["meta"]["peers"] == ["torchrl-wrapper", "torchrl-native"]
    assert "sb3" not in report and report["meta"]["torchrl"]
    target = report["evaluation"]["target_mae"]
    marra_parameters = report["marra"]["parameters"]
    for key in ("torchrl_wrapper", "torchrl_native"):
        side = report[key]
        # networks of marra's size: the same parameter counts
        assert side["parameters"] == marra_parameters
        assert side["settings"]["gamma"] == report["marra"]["config"]["gamma"]
        throughput = side["throughput"]
        assert throughput["env_steps"] > 0 and throughput["env_steps_per_s"] > 0
        assert throughput["rollout_s"] + throughput["update_s"] <= throughput["seconds"] + 1e-6
        ttq = side["time_to_quality"]
        assert ttq["curve"] and ttq["stopped_by"] in ("target", "cap", "total_steps")
        assert ttq["env_steps_at_stop"] <= 480
        assert ttq["reached"] == (ttq["best_mae"] <= target)
        ratios = report[f"ratios_{key}"]
        assert ratios["throughput_marra_over_peer"] == pytest.approx(
            report["marra"]["throughput"]["env_steps_per_s"] / throughput["env_steps_per_s"]
        )
    # quick: the wrapper route updates after every episode (horizon 10)
    assert report["torchrl_wrapper"]["settings"]["frames_per_batch"] == 10
    assert report["torchrl_native"]["settings"]["frames_per_batch"] == 16 * 10
    assert report["torchrl_native"]["settings"]["env"].startswith("marra.envs.torchrl_env")
    assert set(report["torchrl_aims"]) == {
        "native_route_through_torchrl_env",
        "marra_at_least_2x_faster_to_target_than_native",
    }
