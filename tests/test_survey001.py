"""``marra reproduce survey001`` end to end on a tiny budget, the discretised voltage task, and
the CLI's registration of the reproduction."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from marra.envs import check_env, make
from marra.experiments.survey001 import SurveyBudget, method_table, reproduce_survey001

torch.set_num_threads(1)

TINY = SurveyBudget(seeds=(1,), episodes=1, steps=24, num_envs=1, oracle=False, matrix_seeds=(),
                    scaling_agents=(10,), scaling_iterations=2, horizon=12)  # fmt: skip


def test_the_discretised_voltage_task_maps_levels_to_set_points_and_rounds_its_baselines():
    env = make("voltage-discrete", num_envs=3, seed=0, horizon=6, q_weight=0.01)
    check_env(env)
    assert env.spec.action.n == 7 and env.describe_levels()[3] == 0.0
    assert env.describe_levels()[0] == pytest.approx(-0.8)
    continuous = make("voltage", num_envs=3, seed=0, horizon=6, q_weight=0.01)
    obs, ref = env.reset(seed=4), continuous.reset(seed=4)
    torch.testing.assert_close(obs, ref)
    level = torch.full((3, 6), 5, dtype=torch.int64)  # the set-point 0.5333
    step = env.step(level)
    twin = continuous.step(torch.full((3, 6, 1), 0.8 * 4 / 6, dtype=torch.float64))
    torch.testing.assert_close(step.reward, twin.reward)
    torch.testing.assert_close(step.info["bus_vm"], twin.info["bus_vm"])
    assert torch.equal(env.baseline("no-control").act(step.obs), torch.full((3, 6), 3))
    droop = env.baseline("droop").act(step.obs)
    assert droop.shape == (3, 6) and droop.dtype == torch.int64


def test_method_table_is_the_mean_and_std_over_seeds_of_per_seed_means():
    rows = [{"method": "m", "metric": "x", "seed": s, "value": v}
            for s, v in ((1, 1.0), (1, 3.0), (2, 6.0))]  # fmt: skip
    assert method_table(rows) == {"m": {"x": (4.0, 2.0)}}  # seed means 2 and 6


@pytest.mark.slow
def test_survey_runs_end_to_end_on_a_tiny_budget(tmp_path):
    """Every part of the reproduction on 12-step days (about 40 s, most of it building the
    33-bus network once in this process and once in the sweep's worker)."""
    result = reproduce_survey001(tmp_path, budget=TINY, workers=1, progress=False)
    for name in ("summary.md", "survey_table.csv", "learning_curves.csv", "learning_curves.png",
                 "scaling.csv", "manifest.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    expected = {"no-control", "droop", "IPPO", "MAPPO", "MADDPG", "IQL (7 set-points)",
                "QMIX (7 set-points)"}  # fmt: skip
    assert expected <= set(result.table)
    for method in expected:
        assert set(result.table[method]) >= {"controllable_rate", "q_loss", "power_loss",
                                             "return"}  # fmt: skip
    assert result.table["no-control"]["q_loss"][0] == 0.0
    with (tmp_path / "learning_curves.csv").open() as handle:
        curves = list(csv.DictReader(handle))
    assert {r["method"] for r in curves} == {"IPPO", "MAPPO", "MADDPG", "IQL (7 set-points)",
                                             "QMIX (7 set-points)"}  # fmt: skip
    summary = (tmp_path / "summary.md").read_text()
    assert "| droop |" in summary and "controllable rate" in summary
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["q_weight"] == 0.01 and manifest["budget"]["steps"] == 24
    again = reproduce_survey001(tmp_path, budget=TINY, workers=1, progress=False)
    for method in expected:  # the sweep's cells are reused: the same numbers
        for metric in ("controllable_rate", "q_loss", "power_loss", "return"):
            assert again.table[method][metric] == result.table[method][metric]


def test_the_cli_knows_survey001_and_refuses_unknown_papers(tmp_path):
    out = subprocess.run([sys.executable, "-m", "marra.cli", "reproduce", "survey999", "--out",
                          str(tmp_path / "x")], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and "paper000, paper002, paper003, survey001" in out.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "spark"}, "backend: 'local' or 'ray'"),
        ({"workers": 0}, "workers: must be a positive integer"),
        ({"address": "auto"}, "address: only with backend 'ray'"),
        ({"quick": True, "budget": TINY}, "quick: give either quick=True or a budget"),
        ({"budget": "tiny"}, "budget: expected a SurveyBudget"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    from marra.experiments.sweep import SpecError

    out = tmp_path / "survey"
    with pytest.raises(SpecError, match=message):
        reproduce_survey001(out, progress=False, **kwargs)
    assert not out.exists()


def test_an_out_that_is_a_file_is_refused(tmp_path):
    from marra.experiments.sweep import SpecError

    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(SpecError, match="exists and is not a folder"):
        reproduce_survey001(out, budget=TINY, progress=False)
    assert out.read_text() == "x"
