"""`marra sweep` and `marra report`: the same numbers on every backend, on a rerun and after a
kill; malformed SPECs named in one line; the report's statistics against hand-computed values."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from marra.cli import app
from marra.experiments import sweep as sweep_module
from marra.experiments.report import (
    iqm,
    metric_direction,
    stratified_bootstrap_ci,
    summarise,
    write_report,
)
from marra.experiments.sweep import (
    RESULT_COLUMNS,
    SpecError,
    SweepError,
    load_spec,
    parse_spec,
    plan_sweep,
    run_sweep,
)

runner = CliRunner()

#: 2 environments x 2 methods x 2 seeds, a few seconds per learner cell; a checkpoint at every
#: iteration (10 of them), so a kill lands between checkpoints of a running cell.
TINY = """
title = "tiny"
seeds = [1, 2]
episodes = 3

[[envs]]
name = "roles"
options = { num_agents = 2, num_roles = 2, horizon = 5 }

[[envs]]
name = "hospital"
options = { n_hospitals = 5, horizon = 5, scenario = "shifting" }

[[methods]]
name = "ippo-id"
algo = "ippo"
sharing = "id"
steps = 200
num_envs = 4
checkpoint_every = 1

[[methods]]
name = "random"
baseline = "random"
"""


def write_spec(folder: Path, text: str = TINY, name: str = "spec.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny sweep, uninterrupted, on a local pool of 2 workers."""
    folder = tmp_path_factory.mktemp("reference")
    spec_path = write_spec(folder)
    outcome = run_sweep(load_spec(spec_path), folder / "out", backend="local", workers=2,
                        progress=False, spec_text=TINY)  # fmt: skip
    assert outcome.ok, outcome.failures
    return folder / "out", (folder / "out" / "results.csv").read_text(encoding="utf-8")


def test_a_sweep_writes_every_cell_to_one_tidy_table(reference: tuple[Path, str]) -> None:
    import pandas as pd

    out, _ = reference
    frame = pd.read_csv(out / "results.csv")
    assert tuple(frame.columns) == RESULT_COLUMNS
    assert set(frame["env"]) == {"roles", "hospital"}
    assert set(frame["method"]) == {"ippo-id", "random"}
    assert set(frame["seed"]) == {1, 2}
    assert set(frame["episode"]) == {0, 1, 2}
    assert frame.groupby(["env", "method", "seed"])["cell"].nunique().eq(1).all()
    assert frame["cell"].nunique() == 8
    assert {"accuracy", "mae", "return"} <= set(frame["metric"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"cells": 8, "done": 8, "failed": 0, "grid": 8, "skipped_pairs": 0}
    assert all(c["wall_s"] > 0 for c in manifest["cells"].values())
    assert {"marra", "torch"} <= set(manifest["versions"]) and "git_revision" in manifest
    assert manifest["run"]["backend"] == "local"
    learner = [k for k, c in manifest["cells"].items() if c["kind"] == "learner"]
    for key in learner:  # marra train's files, in the cell's own folder
        for name in ("policy.pt", "checkpoint.pt", "train_log.csv", "result.json", "cell.json"):
            assert (out / "cells" / key / name).exists(), name
    assert (out / "failures.csv").read_text().splitlines() == ["cell,env,method,seed,error,message"]


def test_a_cell_is_exactly_marra_train_then_marra_evaluate(
    reference: tuple[Path, str], tmp_path: Path
) -> None:
    """The learner cell on roles, seed 1, against `marra train` + `marra evaluate` by hand."""
    import pandas as pd

    from marra.experiments.evaluate import PolicyRunner, evaluate
    from marra.rl import PPOConfig, load_policy, train

    out, _ = reference
    options = {"num_agents": 2, "num_roles": 2, "horizon": 5}
    config = PPOConfig(algo="ippo", sharing="id", total_steps=200, num_envs=4, seed=1,
                       checkpoint_every=1)  # fmt: skip
    result = train(config, options, env="roles", out_dir=tmp_path / "run", progress=False)
    policy = PolicyRunner(load_policy(result.policy_path))
    evaluation = evaluate("roles", options, {"policy": policy}, episodes=3, seed=1)
    frame = pd.read_csv(out / "results.csv")
    mine = frame[(frame["env"] == "roles") & (frame["method"] == "ippo-id") & (frame["seed"] == 1)]
    assert [(int(r.episode), r.metric, float(r.value)) for r in mine.itertuples()] == [
        (episode, metric, value) for _, _, _, episode, metric, value in evaluation.rows
    ]


def test_a_rerun_skips_finished_cells_and_writes_identical_results(
    reference: tuple[Path, str],
) -> None:
    out, text = reference
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/result.json")}
    outcome = run_sweep(load_spec(out / "spec.toml"), out, workers=2, progress=False)
    assert outcome.ran == 0 and outcome.already_done == 8
    assert (out / "results.csv").read_text(encoding="utf-8") == text
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_ray_backend_gives_identical_results(reference: tuple[Path, str], tmp_path: Path) -> None:
    ray = pytest.importorskip(
        "ray", reason="ray is not installed (pip install 'marra[ray]'); CI installs it"
    )
    _, text = reference
    spec_path = write_spec(tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 * 2**20)  # fmt: skip
    try:
        outcome = run_sweep(load_spec(spec_path), tmp_path / "out", backend="ray", progress=False)
    finally:
        ray.shutdown()
    assert outcome.ok, outcome.failures
    assert (tmp_path / "out" / "results.csv").read_text(encoding="utf-8") == text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["run"]["backend"] == "ray"


def test_a_killed_sweep_resumes_to_the_results_of_an_uninterrupted_one(
    reference: tuple[Path, str], tmp_path: Path
) -> None:
    _, text = reference
    spec_path = write_spec(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "marra.cli", "sweep", str(spec_path), "--out", str(out),
               "--workers", "1", "--no-report"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    killed = False
    try:
        while time.monotonic() < deadline and process.poll() is None:
            cells = list((out / "cells").glob("*")) if (out / "cells").exists() else []
            finished = [c for c in cells if (c / "result.json").exists()]
            midway = [c for c in cells if (c / "checkpoint.pt").exists()
                      and not (c / "result.json").exists()]  # fmt: skip
            if finished and midway:
                os.kill(process.pid, signal.SIGKILL)  # the sweep only: its workers must follow
                killed = True
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None and not killed:
            process.kill()
        process.wait(timeout=60)
    assert killed, "the sweep ended before it could be killed midway"
    assert not (out / "results.csv").exists()
    time.sleep(1.0)  # its orphaned worker notices within 0.5 s (and PR_SET_PDEATHSIG is instant)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "results.csv").read_text(encoding="utf-8") == text
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(c.get("resumed") for c in manifest["cells"].values()), "no cell resumed"


def test_a_failing_cell_is_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    text = """
seeds = [1, 2]
episodes = 2
[[envs]]
name = "roles"
options = { num_agents = 2, num_roles = 2, horizon = 3 }
[[methods]]
name = "random"
baseline = "random"
"""
    spec_path = write_spec(tmp_path, text)
    plan = plan_sweep(load_spec(spec_path))
    out = tmp_path / "out"
    broken = plan.grid[0].cell
    sweep_module.prepare_sweep_dir(load_spec(spec_path), out, plan=plan)
    (out / "cells").mkdir()
    (out / "cells" / broken).write_text("not a folder")  # the cell cannot make its folder
    result = runner.invoke(app, ["sweep", str(spec_path), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 1, result.output
    failures = (out / "failures.csv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith(f"{broken},roles,random,1,")
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) > 1 and all(row.endswith(plan.grid[1].cell) for row in rows[1:])
    assert "Failed cells" in (out / "report.md").read_text()
    (out / "cells" / broken).unlink()
    result = runner.invoke(app, ["sweep", str(spec_path), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len((out / "failures.csv").read_text().splitlines()) == 1


def test_another_spec_in_the_same_folder_is_refused(reference: tuple[Path, str],
                                                      tmp_path: Path) -> None:  # fmt: skip
    out, text = reference
    other = write_spec(tmp_path, TINY.replace("seeds = [1, 2]", "seeds = [1, 2, 3]"))
    result = runner.invoke(app, ["sweep", str(other), "--out", str(out)])
    assert result.exit_code == 2
    assert "another SPEC" in result.stderr and "seeds" in result.stderr
    assert (out / "results.csv").read_text(encoding="utf-8") == text
    cosmetic = write_spec(tmp_path, "# a comment\n" + TINY.replace('"tiny"', '"renamed"'), "b.toml")
    result = runner.invoke(app, ["sweep", str(cosmetic), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.stderr
    assert "8 done" in result.stdout


def test_a_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "results.csv").write_text("mine")
    result = runner.invoke(app, ["sweep", str(spec_path), "--out", str(tmp_path / "busy")])
    assert result.exit_code == 2 and "--out" in result.stderr
    assert (tmp_path / "busy" / "results.csv").read_text() == "mine"


def test_dry_run_lists_the_cells_and_writes_nothing(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, TINY + '\n[[methods]]\nname = "qp"\nbaseline = "qp"\n')
    result = runner.invoke(app, ["sweep", str(spec_path), "--out", str(tmp_path / "o"),
                                 "--dry-run"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "10 runs in 10 cells (10 todo)" in result.stdout
    assert "skipped: qp on roles (roles has no baseline 'qp')" in result.stdout
    assert not (tmp_path / "o").exists()


def replace(old: str, new: str) -> str:
    assert old in TINY, old
    return TINY.replace(old, new, 1)


MALFORMED = [
    (replace('name = "roles"', 'name = "nowhere"'), "envs[0].name: unknown environment 'nowhere'"),
    (replace("num_agents = 2,", "bogus = 2,"), "envs[0] (roles).options: option 'bogus'"),
    (replace("num_agents = 2,", "num_agents = 0,"), "envs[0] (roles).options: num_agents"),
    (
        replace('sharing = "id"', 'sharing = "id"\nstepz = 3'),
        "methods[0] (ippo-id).stepz: unknown key",
    ),
    (replace("steps = 200", 'steps = "200"'), "methods[0] (ippo-id).steps: expected an integer"),
    (replace("steps = 200", "steps = 0"), "methods[0] (ippo-id): steps: must be a positive"),
    (replace('sharing = "id"', "sharing = 3"), "methods[0] (ippo-id).sharing: expected a string"),
    (replace('sharing = "id"', 'sharing = "most"'), "methods[0] (ippo-id): sharing: unknown"),
    (
        replace('algo = "ippo"', 'algo = "qmax"'),
        "methods[0] (ippo-id).algo: unknown algorithm 'qmax'",
    ),
    (
        replace("num_envs = 4", "num_envs = 4.5"),
        "methods[0] (ippo-id).num_envs: expected an integer",
    ),
    (
        replace('algo = "ippo"\nsharing = "id"', 'algo = "maddpg"'),
        "methods[0] (ippo-id) on envs 'roles': algo 'maddpg' does not support discrete actions",
    ),
    (replace("checkpoint_every = 1", "seed = 3"), "methods[0] (ippo-id).seed: not a method key"),
    (replace('baseline = "random"', 'baseline = "oracle"'), "methods[1] (random).baseline: no"),
    (replace('baseline = "random"', 'baseline = "random"\nsteps = 5'), "methods[1] (random).steps"),
    (replace('name = "random"', 'name = "ippo-id"'), "methods[1].name: 'ippo-id' is used twice"),
    (replace("seeds = [1, 2]", "seeds = [1, 1]"), "seeds: 1 appears twice"),
    (replace("checkpoint_every = 1", "seeds = [3, 3]"), "methods[0] (ippo-id).seeds: 3 appears"),
    (replace('baseline = "random"', 'baseline = "random"\nenvs = ["x"]'), "(random).envs: no"),
    (replace("seeds = [1, 2]", "seeds = []"), "seeds: the list is empty"),
    (replace("seeds = [1, 2]", 'seeds = "1, 2"'), "seeds: expected a list of integers"),
    (replace("seeds = [1, 2]", "seeds = [1, -2]"), "seeds[1]: expected an integer"),
    (replace("seeds = [1, 2]", ""), "seeds: missing"),
    (replace("episodes = 3", "episodes = 0"), "episodes: expected an integer from 1"),
    (replace("episodes = 3", "episodes = 3\nseed = 4"), "seed: unknown key; valid keys: seeds"),
    ("seeds = [1]\nenvs = []\n[[methods]]\nname = 'r'\n", "envs: the list is empty"),
    ("seeds = [1]\nmethods = []\n[[envs]]\nname = 'roles'\n", "methods: the list is empty"),
    (replace("episodes = 3", "episodes = = 3"), "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_a_malformed_spec_exits_2_with_one_line_naming_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    spec_path = write_spec(tmp_path, text)
    result = runner.invoke(app, ["sweep", str(spec_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_a_method_may_have_its_own_seeds_and_envs(tmp_path: Path) -> None:
    extra = (
        '\n[[methods]]\nname = "more"\nbaseline = "random"\nseeds = [7, 8, 9]\nenvs = ["roles"]\n'
    )
    plan = plan_sweep(load_spec(write_spec(tmp_path, TINY + extra)))
    mine = [(g.env, g.seed) for g in plan.grid if g.method == "more"]
    assert mine == [("roles", 7), ("roles", 8), ("roles", 9)]
    assert {"env": "hospital", "method": "more", "reason": "not among the method's envs"} in (
        plan.skipped
    )
    assert len(plan.grid) == 8 + 3


def test_unknown_keys_list_every_valid_method_key(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, replace('sharing = "id"', 'sharing = "id"\nlr = 0.1'))
    with pytest.raises(SpecError) as caught:
        load_spec(spec_path)
    for key in ("steps", "learning_rate", "critic", "baseline", "env_options", "num_envs"):
        assert key in str(caught.value)


def test_a_new_ppoconfig_field_passes_through_without_sweep_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A field another issue adds (``equity = "eld"``) is a method key at once, typed by its
    annotation and part of the cell's configuration (and so of its hash)."""
    import tomllib

    import marra.rl
    from marra.rl import PPOConfig

    @dataclasses.dataclass(frozen=True)
    class WithEquity(PPOConfig):
        equity: str = "none"

    monkeypatch.setattr(marra.rl, "PPOConfig", WithEquity)
    data = tomllib.loads(replace('sharing = "id"', 'sharing = "id"\nequity = "eld"'))
    spec = parse_spec(data)
    cells = [c for c in plan_sweep(spec).cells.values() if c.train is not None]
    assert cells and all(c.train["equity"] == "eld" for c in cells)
    plain = [c for c in plan_sweep(parse_spec(tomllib.loads(TINY))).cells.values() if c.train]
    assert {c.key for c in cells}.isdisjoint(c.key for c in plain)
    with pytest.raises(SpecError, match=r"equity: expected a string"):
        parse_spec(tomllib.loads(replace('sharing = "id"', 'sharing = "id"\nequity = 1')))


def test_a_new_learner_with_its_own_config_class_passes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A learner registered in ALGORITHMS with its own ``config_cls`` (value-based learners):
    its fields are the method keys for ``algo = NAME``, with no sweep code."""
    import tomllib

    from marra.rl import ALGORITHMS, PPOConfig

    @dataclasses.dataclass(frozen=True)
    class QConfig(PPOConfig):
        buffer_size: int = 1000

    info = dataclasses.replace(ALGORITHMS["ippo"], name="iql", config_cls=QConfig)
    monkeypatch.setitem(ALGORITHMS, "iql", info)
    data = tomllib.loads(replace('algo = "ippo"', 'algo = "iql"\nbuffer_size = 50'))
    cells = [c for c in plan_sweep(parse_spec(data)).cells.values() if c.train is not None]
    assert cells and all(c.train["algo"] == "iql" and c.train["buffer_size"] == 50 for c in cells)
    with pytest.raises(SpecError, match=r"\(ippo-id\)\.buffer_size: unknown key"):
        parse_spec(tomllib.loads(replace('sharing = "id"', 'sharing = "id"\nbuffer_size = 5')))


def test_ray_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SweepError, match=r"pip install 'marra\[ray\]'"):
        sweep_module._import_ray()


# ---------------------------------------------------------------------------- statistics
def test_iqm_is_the_mean_of_the_middle_half() -> None:
    # sorted: 0 1 | 2 3 4 5 | 6 100: the middle half averages 3.5; the mean is 15.125
    assert iqm([4, 1, 3, 2, 100, 0, 5, 6]) == pytest.approx(3.5)
    assert iqm([1, 2, 3]) == pytest.approx(2.0)  # fewer than 4 runs: nothing is cut


def test_bootstrap_interval_of_two_runs_by_hand() -> None:
    # resampling 2 runs {0, 1}: the mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles are 0 and 1 (a normal interval would say 0.5 ± 0.98)
    assert stratified_bootstrap_ci([[0.0, 1.0]], np.mean) == (0.0, 1.0)
    # 80%: the 10% and 90% percentiles, still inside the end atoms
    assert stratified_bootstrap_ci([[0.0, 1.0]], np.mean, confidence=0.8) == (0.0, 1.0)


def test_stratified_bootstrap_resamples_within_each_stratum() -> None:
    # strata {0, 1} and {10, 10}: every resample keeps two runs of each; the IQM of
    # (a, b, 10, 10) cuts one run at each end: 5 when a = b = 0 (p = 1/4), else 5.5 (p = 3/4)
    assert stratified_bootstrap_ci([[0.0, 1.0], [10.0, 10.0]]) == (5.0, 5.5)
    summary = summarise([[0.0, 1.0], [10.0, 10.0]])
    assert summary.iqm == pytest.approx(5.5) and summary.runs == 4
    assert summary.mean == pytest.approx(5.25)
    # pooled into one stratum, a resample may hold no 10 at all: a far wider interval
    low, high = stratified_bootstrap_ci([[0.0, 1.0, 10.0, 10.0]])
    assert low < 5.0 and high == 10.0
    # a stratum of one run is a constant: the mean of (a, b, 7) is 7/3, 8/3 or 3 with
    # probabilities 1/4, 1/2, 1/4; every stratum of one run: no interval
    assert stratified_bootstrap_ci([[0.0, 1.0], [7.0]], np.mean) == (7.0 / 3.0, 3.0)
    assert all(np.isnan(stratified_bootstrap_ci([[3.0], [4.0]])))


def test_summary_of_runs_by_hand() -> None:
    s = summarise([0.0, 0.55, 0.55, 2.0], "b")
    assert s.mean == pytest.approx(0.775)
    assert s.std == pytest.approx(np.sqrt(2.2025 / 3))  # sample std (n - 1)
    assert s.iqm == pytest.approx(0.55)
    assert np.isnan(summarise([1.0]).std) and np.isnan(summarise([1.0]).ci[0])


def test_metric_directions() -> None:
    assert metric_direction("mae") == -1 and metric_direction("accuracy") == 1
    assert metric_direction("return") == 1 and metric_direction("length") == 0
    assert metric_direction("accuracy", lower=["accuracy"]) == -1
    assert metric_direction("mae", higher=["mae"]) == 1


def fake_sweep(folder: Path) -> Path:
    """A sweep folder with a fixed small table: methods a and b, 4 seeds x 2 episodes."""
    folder.mkdir()
    per_seed = {
        ("a", "accuracy"): [0.6, 0.6, 0.6, 0.6],
        ("b", "accuracy"): [0.0, 0.55, 0.55, 2.0],  # mean 0.775 (best), IQM 0.55 (not best)
        ("a", "mae"): [1.0, 1.0, 1.0, 1.0],
        ("b", "mae"): [2.0, 2.0, 2.0, 2.0],
    }
    lines = [",".join(RESULT_COLUMNS)]
    for (method, metric), scores in per_seed.items():
        for seed, score in enumerate(scores, start=1):
            for episode, offset in enumerate((-0.1, 0.1)):  # episode mean = the seed's score
                lines.append(f"e,{method},{seed},{episode},{metric},{score + offset!r},c{seed}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    methods = [
        {"label": label, "baseline": label, "train": {}, "env_options": {}, "envs": None}
        for label in ("a", "b")
    ]
    sweep = {
        "format": 1, "fingerprint": "0", "title": "fixed",
        "spec": {"seeds": [1, 2, 3, 4], "episodes": 2, "methods": methods,
                 "envs": [{"label": "e", "name": "roles", "options": {}}]},
        "report": {"lower_is_better": [], "higher_is_better": []}, "grid": [], "skipped": [],
    }  # fmt: skip
    (folder / "sweep.json").write_text(json.dumps(sweep))
    return folder


def test_report_tables_by_hand(tmp_path: Path) -> None:
    folder = fake_sweep(tmp_path / "fixed")
    text = write_report(folder).read_text()
    assert "### accuracy (higher is better)" in text and "### mae (lower is better)" in text
    # a: all runs 0.6, so mean, IQM and interval are 0.6; its IQM is the best
    assert "| a | 4 | 0.6 ± 0 | **0.6** | **[0.6, 0.6]** |" in text
    # b: mean 0.775 (best) ± sqrt(2.2025 / 3) = 0.8568, IQM 0.55
    assert "| b | 4 | **0.775 ± 0.8568** | 0.55 | [" in text
    assert "| a | 4 | **1 ± 0** | **1** | **[1, 1]** |" in text
    assert "| b | 4 | 2 ± 0 | 2 | [2, 2] |" in text
    profile = folder / "profile_e.png"
    assert profile.exists() and profile.stat().st_size > 10_000
    assert "![performance profiles on e](profile_e.png)" in text


def test_report_of_a_real_sweep_has_curves_profiles_and_best_marks(
    reference: tuple[Path, str],
) -> None:
    out, _ = reference
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.stderr
    text = (out / "report.md").read_text()
    for name in ("curves_roles.png", "curves_hospital.png", "profile_roles.png",
                 "profile_hospital.png"):  # fmt: skip
        assert (out / name).stat().st_size > 10_000 and f"({name})" in text
    assert "## roles" in text and "## hospital" in text and "## All environments" in text
    assert "### mae (lower is better)" in text and "**" in text


def test_report_of_a_folder_without_a_sweep_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no sweep" in result.stderr
