"""``marra reproduce paper002``: every promised file from a tiny budget, the tables' marks (best
bold, second underlined), per-seed scores, resuming, and bad input through the function and the
CLI."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from marra.experiments.paper002 import (
    SCHEME_NAMES,
    TABLE2_COLUMNS,
    Paper002Budget,
    Paper002Result,
    Stat,
    rank_marks,
    reproduce_paper002,
    scores_by_method,
    table2_markdown,
)
from marra.experiments.sweep import SpecError

torch.set_num_threads(1)

#: One seed, two copies of one or two short episodes per cell, small cities and grids, two
#: groups (Figure 6a: K = 2 and 3), the roles check on one or two iterations.
TINY = Paper002Budget(
    seeds=(1,), episodes=1,
    steps={"lbf-1": 20, "lbf-2": 20, "rware-1": 20, "rware-2": 20, "rh-1": 24, "rh-2": 24,
           "medical": 12},
    num_envs={"lbf": 2, "rware": 2, "ride-hailing": 2, "medical": 2},
    num_groups=2, groups=(2, 3), sweep_report=False, roles_steps={"seps": 320, "dyps": 80},
    env_options={"lbf-1": {"max_episode_steps": 10}, "lbf-2": {"max_episode_steps": 10},
                 "rware-1": {"max_episode_steps": 10}, "rware-2": {"max_episode_steps": 10},
                 "rh-1": {"size": 3, "horizon": 12}, "rh-2": {"size": 4, "horizon": 12},
                 "medical": {"grid_size": 3, "horizon": 6}},
)  # fmt: skip
FILES = ("summary.md", "tables.csv", "learning_curves.csv", "roles.csv", "manifest.json",
         "figure9_learning_curves.png", "figure6a_groups.png", "figure6b_grouping.png")  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Paper002Result]:
    out = tmp_path_factory.mktemp("paper002")
    return out, reproduce_paper002(out, budget=TINY, workers=1, progress=False)


def test_a_tiny_run_writes_every_promised_file_and_every_table_cell(tiny_run) -> None:
    out, result = tiny_run
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
        assert result.files[name] == str(out / name)
    for scheme in SCHEME_NAMES:  # every Table 2 cell, a finite mean
        for env, metric, _ in TABLE2_COLUMNS:
            assert math.isfinite(result.tables.table2[scheme][f"{env}:{metric}"].mean)
    assert set(result.tables.table3) == {"w/o CVAE", "w/o VLSTM", "w/o Repr.", "DyPS"}
    assert set(result.tables.table4) == {"IPPO", "DyPS+IPPO", "MAPPO", "DyPS+MAPPO"}
    assert result.tables.table4["IPPO"] == {
        k: result.tables.table2["NoPS"][k] for k in ("rh-2:gmv", "rh-2:orr")
    }
    assert set(result.tables.table7) == {"greedy", "nearest", "fifo"}
    assert sorted(result.tables.figure6a) == [2, 3]
    assert {r["method"].split(" (")[0] for r in result.roles} == {"SePS", "DyPS"}
    for row in result.roles:
        assert -1.0 <= row["ari"] <= 1.0 and 1 <= row["groups_used"] <= row["agents"]
        assert isinstance(row["pure"], bool) and (row["ari"] < 1.0 or row["pure"])
    summary = (out / "summary.md").read_text()
    for heading in ("## Table 2 (ours)", "## Table 2 (paper 002)", "## Table 3", "## Table 4",
                    "## Table 7", "## Figure 6(a)", "## Figure 6(b)", "## Figure 9",
                    "## The mechanism on `roles`"):  # fmt: skip
        assert heading in summary, heading
    assert "smaller than the paper's" in summary and "backend='ray'" in summary
    with (out / "tables.csv").open() as handle:
        tables = {(r["table"], r["row"], r["env"], r["metric"]) for r in csv.DictReader(handle)}
    assert ("table2", "DyPS", "medical", "infections_averted") in tables
    with (out / "learning_curves.csv").open() as handle:
        curves = list(csv.DictReader(handle))
    assert {r["method"] for r in curves if r["env"] == "rh-2"} >= set(SCHEME_NAMES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["budget"]["steps"]["rh-2"] == 24 and manifest["cells_run_now"] > 0


def test_a_rerun_reuses_every_finished_cell_and_gives_the_same_tables(tiny_run) -> None:
    out, first = tiny_run
    stamp = (out / "training" / "results.csv").read_text()
    again = reproduce_paper002(out, budget=TINY, workers=1, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cells_run_now"] == 0 and manifest["cells"] == 70
    assert (out / "training" / "results.csv").read_text() == stamp
    assert again.tables.table2 == first.tables.table2
    assert again.tables.table3 == first.tables.table3


def test_rank_marks_bolds_the_best_and_underlines_the_second() -> None:
    assert rank_marks([3.0, 1.0, 2.0]) == ["best", "", "second"]
    assert rank_marks([3.0, 1.0, 2.0], higher=False) == ["", "best", "second"]
    assert rank_marks([2.0, 2.0, 1.0, 0.5]) == ["best", "best", "second", ""]  # ties share
    assert rank_marks([math.nan, 1.0, 4.0]) == ["", "second", "best"]
    assert rank_marks([5.0]) == ["best"]
    assert rank_marks([math.nan, math.nan]) == ["", ""]
    assert rank_marks([]) == []


def test_table2_markdown_marks_each_column_and_prints_mean_and_std() -> None:
    table = {s: {f"{e}:{m}": Stat(float(i), 0.5, 2) for e, m, _ in TABLE2_COLUMNS}
             for i, s in enumerate(SCHEME_NAMES)}  # fmt: skip
    table["PS"]["rh-1:orr"] = Stat(0.4567, 0.0123, 2)
    lines = table2_markdown(table).splitlines()
    assert lines[0].startswith("| scheme | LBF (1) Return |") and len(lines) == 2 + 6
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:]}
    assert rows["DyPS"].count("**5.00 ± 0.50**") == 7  # two decimals under 100
    assert rows["DyPS"].count("**5.000 ± 0.500**") == 2  # ORR: three decimals
    assert rows["SePS"].count("<u>4.00 ± 0.50</u>") == 7
    assert "| 0.000 ± 0.500 |" in rows["NoPS"]  # plain; under 1: 3 decimals
    assert "| 0.457 ± 0.012 |" in rows["PS"] and "<u>0.457" not in rows["PS"]
    paper = table2_markdown({}, paper=True)
    assert "**713,520 ± 3,480**" in paper and "<u>556,320 ± 3,970</u>" in paper
    missing = table2_markdown({"DyPS": {}})
    assert "| DyPS | – |" in missing


def test_scores_by_method_averages_each_seeds_episodes() -> None:
    rows = [{"method": "m", "metric": "gmv", "seed": "1", "value": "2"},
            {"method": "m", "metric": "gmv", "seed": "1", "value": "4"},
            {"method": "m", "metric": "gmv", "seed": "2", "value": "10"},
            {"method": "m", "metric": "orr", "seed": "2", "value": "0.5"},
            {"method": "r", "metric": "gmv", "seed": 1, "value": 1.0}]  # fmt: skip
    assert scores_by_method(rows) == {"m": {"gmv": {1: 3.0, 2: 10.0}, "orr": {2: 0.5}},
                                      "r": {"gmv": {1: 1.0}}}  # fmt: skip
    assert Stat.of([3.0, 10.0]).mean == 6.5
    assert Stat.of([3.0, 10.0]).std == pytest.approx(math.sqrt(24.5))  # sample std (n - 1)
    assert Stat.of([]).runs == 0 and math.isnan(Stat.of([]).mean)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "slurm"}, "backend: 'local' or 'ray', got 'slurm'"),
        ({"workers": 0}, "workers: must be a positive integer, got 0"),
        ({"address": "auto"}, "address: only with backend 'ray'"),
        ({"quick": True, "budget": TINY}, "quick: give either quick=True or a budget"),
        ({"budget": "tiny"}, "budget: expected a Paper002Budget, got str"),
        ({"budget": Paper002Budget(seeds=())}, "budget.seeds: at least one seed"),
        ({"budget": Paper002Budget(episodes=0)}, "budget.episodes: must be a positive integer"),
        ({"budget": Paper002Budget(steps={"lbf-1": 10})}, "no training steps for 'lbf-2'"),
        ({"budget": Paper002Budget(num_groups=1)}, "budget.num_groups: at least 2, got 1"),
        ({"budget": Paper002Budget(groups=(1, 2))}, "budget.groups: every number"),
        ({"budget": Paper002Budget(env_options={"rh-9": {}})}, "budget: unknown scenario 'rh-9'"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, message) -> None:
    out = tmp_path / "never"
    with pytest.raises(SpecError) as caught:
        reproduce_paper002(out, progress=False, **kwargs)
    assert message in str(caught.value)
    assert not out.exists()


def test_a_folder_holding_another_budgets_sweep_is_refused(tiny_run, tmp_path) -> None:
    out, _ = tiny_run
    other = Paper002Budget(**{**TINY.__dict__, "episodes": 2})
    with pytest.raises(SpecError, match="holds a sweep of another SPEC"):
        reproduce_paper002(out, budget=other, workers=1, progress=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "slurm"], "--backend: 'local' or 'ray', got 'slurm'"),
        (["--workers", "0"], "--workers: must be at least 1"),
        (["--address", "auto"], "--address: only with --backend ray"),
    ],
)
def test_the_cli_refuses_bad_quick_arguments(tmp_path, extra, message) -> None:
    out = tmp_path / "p2q"
    result = subprocess.run(
        [sys.executable, "-m", "marra.cli", "reproduce", "paper002", "--quick", "--out", str(out),
         *extra], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in " ".join(result.stderr.split())
    assert not out.exists()


def test_copying_a_group_slot_to_one_target_works() -> None:
    """SePS choosing K = 2 copies group 0 into group 1 alone (the rows once overlapped)."""
    from marra.rl.grouping import copy_group_slots

    param = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    optimizer = torch.optim.Adam([param])
    param.grad = torch.ones_like(param)
    optimizer.step()
    copy_group_slots([param], [optimizer], 0, [1])
    assert torch.equal(param[1], param[0])
    state = optimizer.state[param]
    assert torch.equal(state["exp_avg"][1], state["exp_avg"][0])
