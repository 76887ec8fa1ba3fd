"""`marra reproduce paper000`: every file it promises, from a tiny and from the --quick run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from marra.experiments import reproduce as reproduce_module
from marra.experiments.reproduce import ReproduceConfig, reproduce_paper000

TINY = ReproduceConfig(
    hospitals=12,
    horizon=8,
    seeds=2,
    train_steps=320,
    ablation_trials=1,
    ablation_train_steps=160,
)
FILES = ("results.csv", "manifest.json", "summary.md", "figure1_shifting.png",
         "figure1_shock.png", "figure2_ablation.png")  # fmt: skip


def test_tiny_reproduction_writes_figures_summary_and_tidy_results(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # issue 8, item 2: every file readable by colleagues
    try:
        reproduce_paper000(tmp_path, config=TINY, progress=False)
    finally:
        os.umask(old_umask)
    for name in FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    mine = [p for p in tmp_path.rglob("*") if p.is_file() and "tensorboard" not in p.parts]
    assert {"result.json", "summary.md", "method.json"} <= {p.name for p in mine}
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in mine}
    assert {m for m in modes.values()} == {0o644}, modes
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame.columns) == ["method", "scenario", "seed", "step", "metric", "value"]
    assert set(frame["scenario"]) == {"shifting", "shock", "ablation"}
    fig1 = set(frame[frame["scenario"] == "shifting"]["method"])
    assert {"RL (PPO)", "qp", "nwo", "taxation", "hybrid", "greedy (B=12)", "hold",
            "qp (B=12)"} <= fig1  # fmt: skip
    ablation = set(frame[frame["scenario"] == "ablation"]["method"])
    assert ablation == {"RL full", "RL no fairness", "RL no minima", "RL no target"}
    summary = (tmp_path / "summary.md").read_text()
    for heading in ("## Shifting targets", "## Sudden shock", "## Ablation"):
        assert heading in summary
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["hospitals"] == 12


def test_rerun_reuses_trained_agents(tmp_path: Path) -> None:
    reproduce_paper000(tmp_path, config=TINY, progress=False)
    policy = reproduce_module.train_agents(tmp_path / "training", TINY)[
        ("shifting", "RL (PPO)", TINY.seed)
    ]
    stamp = policy.stat().st_mtime_ns
    reproduce_paper000(tmp_path, config=TINY, progress=False)
    assert policy.stat().st_mtime_ns == stamp


def test_unknown_paper_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "marra.cli", "reproduce", "paper999", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "paper999" in result.stderr


@pytest.mark.slow
def test_quick_reproduction_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "paper000"
    result = subprocess.run(
        [sys.executable, "-m", "marra.cli", "reproduce", "paper000", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for name in FILES:
        assert (out / name).exists(), name
