"""`marra train` end to end: policy file, resume, ablation terms, bad arguments, simulate it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch


def marra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marra.cli", *args], capture_output=True, text=True, timeout=300
    )


SMALL = ("--hospitals", "8", "--horizon", "10", "--num-envs", "4", "--seed", "3")


def test_train_writes_a_policy_that_simulate_runs_on_a_larger_network(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = marra("train", *SMALL, "--steps", "400", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("policy.pt", "checkpoint.pt", "train_log.csv"):
        assert (out / name).exists(), name
    log = pd.read_csv(out / "train_log.csv")
    assert log["env_steps"].iloc[-1] == 400
    sim = tmp_path / "sim"
    result = marra(
        "simulate", "--scenario", "shifting", "--strategy", f"policy:{out / 'policy.pt'}",
        "--strategy", "qp", "--hospitals", "40", "--steps", "6", "--seeds", "2",
        "--budget", "8", "--out", str(sim), "--no-plots",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    frame = pd.read_csv(sim / "results.csv")
    assert {"ppo (run, B=8)", "qp (B=8)"} == set(frame["method"])  # labels say the run and budget
    moved = frame[(frame["method"] == "ppo (run, B=8)") & (frame["metric"] == "moved")]["value"]
    assert len(moved) == 12 and moved.max() <= 8


def test_resume_continues_the_step_count(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert marra("train", *SMALL, "--steps", "200", "--out", str(out)).returncode == 0
    again = marra("train", *SMALL, "--steps", "200", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr.replace("resume=True", "--resume")
    longer = marra("train", *SMALL, "--steps", "400", "--out", str(out), "--resume")
    # a longer run is a different configuration: refused with a clear message, not silently mixed
    assert longer.returncode in (0, 2)
    if longer.returncode == 2:
        assert "config" in longer.stderr.lower() or "differ" in longer.stderr.lower()


def test_reward_terms_switch_terms_off(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = marra("train", *SMALL, "--steps", "120", "--reward-terms", "target,minima",
                   "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    settings = torch.load(out / "policy.pt", weights_only=True)["env_settings"]
    assert "fairness" in str(settings)


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--reward-terms", "target,luck"], "luck"),
        (["--steps", "0"], "--steps"),
        (["--budget", "-1"], "--budget"),
        (["--scenario", "meteor"], "meteor"),
    ],
)
def test_bad_train_arguments_exit_2(tmp_path: Path, args: list[str], word: str) -> None:
    result = marra("train", *SMALL, "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stdout[-500:] + result.stderr[-500:]
    assert word in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "policy.pt").exists()
