"""`marra simulate` and `marra plot`: tidy results, identical draws, resume, plots from the CSV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from marra.cli import app
from marra.experiments.simulate import (
    CORE_METRICS,
    ClassicalMethod,
    SimulationError,
    SimulationSpec,
    run_simulation,
)

runner = CliRunner()


def simulate(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marra.cli", "simulate", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_simulate_writes_tidy_table_manifest_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["simulate", "--scenario", "shifting+shock", "--strategy", "qp", "--strategy", "hold",
         "--hospitals", "20", "--steps", "12", "--seeds", "3", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns) == ["method", "scenario", "seed", "step", "metric", "value"]
    assert set(CORE_METRICS) <= set(frame["metric"])
    assert set(frame["method"]) == {"qp", "hold"}
    assert sorted(frame["seed"].unique()) == [0, 1, 2]
    assert sorted(frame["step"].unique()) == list(range(12))
    assert frame["value"].notna().all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1, 2]
    assert {"versions", "arguments", "git_revision"} <= set(manifest)
    assert manifest["arguments"]["scenario"] == "shifting+shock"
    for name in ("mae.png", "gini.png"):
        assert (out / name).stat().st_size > 10_000


class Recording(ClassicalMethod):
    """A classical method that remembers the networks and scenario draws it was given."""

    seen: list[tuple[object, object]]

    def run_episode(self, network, realisation, steps, *, tau=0.1):  # type: ignore[override]
        self.seen.append((network, realisation))
        return super().run_episode(network, realisation, steps, tau=tau)


def test_methods_see_identical_scenario_draws(tmp_path: Path) -> None:
    qp, hold = Recording("qp"), Recording("hold")
    object.__setattr__(qp, "seen", [])
    object.__setattr__(hold, "seen", [])
    spec = SimulationSpec(scenario="shifting+shock", seeds=[0, 1], steps=30, hospitals=25)
    run_simulation(spec, [qp, hold], tmp_path, progress=False)
    assert len(qp.seen) == len(hold.seen) == 2
    for (net_a, draw_a), (net_b, draw_b) in zip(qp.seen, hold.seen, strict=True):
        np.testing.assert_array_equal(net_a.current, net_b.current)
        np.testing.assert_array_equal(draw_a.target, draw_b.target)
        np.testing.assert_array_equal(draw_a.shock_hospital, draw_b.shock_hospital)
    # different seeds draw different networks and events
    assert not np.array_equal(qp.seen[0][1].target, qp.seen[1][1].target)


def test_budgeted_simulation_never_moves_more_than_the_budget(tmp_path: Path) -> None:
    spec = SimulationSpec(scenario="shifting", seeds=[0], steps=15, hospitals=30)
    run_simulation(spec, [ClassicalMethod("qp", transfer_budget=7)], tmp_path, progress=False)
    frame = pd.read_csv(tmp_path / "results.csv")
    moved = frame[frame["metric"] == "moved"]["value"]
    assert moved.max() <= 7 and moved.max() > 0
    assert set(frame["method"]) == {"qp (B=7)"}


def test_interrupted_run_resumes_and_reuses_finished_seeds(tmp_path: Path) -> None:
    spec = SimulationSpec(scenario="shock", seeds=[0, 1, 2], steps=10, hospitals=15)
    methods = [ClassicalMethod("qp"), ClassicalMethod("greedy")]
    run_simulation(spec, methods, tmp_path, progress=False)
    first = pd.read_csv(tmp_path / "results.csv")
    parts = sorted((tmp_path / "parts").rglob("*.csv"))
    assert len(parts) == 6
    # simulate an interruption: one part and the merged table were never written
    parts[0].unlink()
    (tmp_path / "results.csv").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in parts[1:]}
    run_simulation(spec, methods, tmp_path, progress=False)
    again = pd.read_csv(tmp_path / "results.csv")
    # the re-run part has new timings; every other value is identical
    timing = "decision_seconds"
    pd.testing.assert_frame_equal(
        again[again["metric"] != timing].reset_index(drop=True),
        first[first["metric"] != timing].reset_index(drop=True),
    )
    assert all(p.stat().st_mtime_ns == stamps[p] for p in parts[1:])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["reused_parts"] == 5


def test_rerun_with_other_settings_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    spec = SimulationSpec(scenario="static", seeds=[0], steps=3, hospitals=5)
    run_simulation(spec, [ClassicalMethod("qp")], tmp_path, progress=False)
    other = SimulationSpec(scenario="static", seeds=[0], steps=4, hospitals=5)
    with pytest.raises(SimulationError, match="steps"):
        run_simulation(other, [ClassicalMethod("qp")], tmp_path, progress=False)


def test_plot_redraws_from_the_csv_alone(tmp_path: Path) -> None:
    spec = SimulationSpec(scenario="shifting", seeds=[0, 1], steps=5, hospitals=10)
    run_simulation(spec, [ClassicalMethod("qp")], tmp_path, progress=False)
    result = runner.invoke(app, ["plot", str(tmp_path), "--metric", "coverage_gini"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "coverage_gini.png").exists()
    missing = runner.invoke(app, ["plot", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2


def test_simulate_on_a_user_network_and_csv_targets(tmp_path: Path) -> None:
    network = tmp_path / "net.csv"
    network.write_text("name,current,minimum,target\nA,10,3,5\nB,2,2,6\nC,6,2,6\n")
    targets = tmp_path / "targets.csv"
    targets.write_text("step,name,target\n2,A,9\n2,B,3\n")
    out = tmp_path / "run"
    result = simulate(out, "--network", str(network), "--scenario", f"csv:{targets}",
                      "--strategy", "qp", "--steps", "4", "--seeds", "1", "--no-plots")  # fmt: skip
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out / "results.csv")
    mae = frame[frame["metric"] == "mae"].sort_values("step")["value"].to_numpy()
    # steps 0-1: targets 5,6,6 with 18 staff -> exact (MAE 1/3 by rounding 0 -> 0);
    # steps 2-3: targets 9,3,6 = 18 staff -> QP meets every target exactly
    assert mae[2] == 0 and mae[3] == 0


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--scenario", "tsunami"], "tsunami"),
        (["--strategy", "magic"], "magic"),
        (["--seeds", "0"], "--seeds"),
        (["--steps", "0"], "--steps"),
        (["--budget", "-3"], "--budget"),
        (["--network", "missing.csv"], "not found"),
    ],
)
def test_bad_simulate_arguments_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], word: str
) -> None:
    out = tmp_path / "run"
    result = simulate(out, "--hospitals", "5", "--steps", "3", "--seeds", "1", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert word in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "results.csv").exists()


def test_a_simulation_step_does_not_rebuild_and_revalidate_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8, item 25: validating names every step cost 0.9 of 1.2 s at 30,000 hospitals."""
    from marra.hospital.network import HospitalNetwork

    built: list[int] = []
    original = HospitalNetwork.__post_init__

    def counting(self: HospitalNetwork) -> None:
        built.append(1)
        original(self)

    monkeypatch.setattr(HospitalNetwork, "__post_init__", counting)
    spec = SimulationSpec(scenario="shifting+shock", seeds=[0], steps=30, hospitals=40)
    run_simulation(spec, [ClassicalMethod("qp", transfer_budget=5)], tmp_path, progress=False)
    assert len(built) <= 3  # the generated network (and the validation draw), not one per step
