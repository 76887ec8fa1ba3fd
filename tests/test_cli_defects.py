"""Issue 8, the command-line side: each test pins one defect a new user or a reliability probe
met (the item number is in the test's comment), for recommend, demo, simulate and plot."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
from typer.testing import CliRunner

from marra.cli import app

runner = CliRunner()

GOOD = (
    "name,current,minimum,target,lat,lon\n"
    "Alpha,30,10,15,51.5,-0.1\n"
    "Beta,5,8,20,52.2,0.1\n"
    "Gamma,12,6,12,53.4,-2.2\n"
    "Delta,3,4,9,50.9,-1.4\n"
)
SMALL = ["--hospitals", "6", "--horizon", "4", "--seeds", "2", "--no-plots"]


def write(tmp_path: Path, text: str, name: str = "net.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class Outcome(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run(*args: str) -> Outcome:
    """The command in this process (fast), with separate stdout and stderr."""
    result = runner.invoke(app, list(args))
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str, warnings_as_errors: bool = False) -> Outcome:
    """The real console entry point in a subprocess, as a user starts it."""
    flags = ["-W", "error::RuntimeWarning"] if warnings_as_errors else []
    done = subprocess.run(
        [sys.executable, *flags, "-m", "marra.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_usage_error(result: object, *words: str) -> None:
    """Exit 2, one line on stderr starting with ``error:`` and naming ``words``, no traceback."""
    code = getattr(result, "returncode", getattr(result, "exit_code", None))
    stderr = result.stderr  # type: ignore[attr-defined]
    assert code == 2, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "╭" not in stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def open_mode(folder: Path) -> int:
    probe = folder / "probe.txt"
    with open(probe, "w") as handle:
        handle.write("x")
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


# ---------------------------------------------------------------------- item 2: permissions
def test_every_file_simulate_and_recommend_write_gets_the_mode_open_gives(
    tmp_path: Path, umask_022: None
) -> None:
    expected = open_mode(tmp_path)
    assert expected == 0o644
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["simulate", "--strategy", "qp", "--strategy", "hold", "--out", str(out), *SMALL]
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["plot", str(out), "--metric", "mae"]).exit_code == 0
    network = write(tmp_path, GOOD)
    plan, allocation = tmp_path / "plan.csv", tmp_path / "allocation.csv"
    result = runner.invoke(
        app,
        ["recommend", str(network), "--out", str(plan), "--allocation-out", str(allocation)],
    )
    assert result.exit_code == 0, result.output
    written = [p for p in out.rglob("*") if p.is_file()] + [plan, allocation]
    names = {p.name for p in written}
    assert {"results.csv", "manifest.json", "config.json", "method.json", "mae.png"} <= names
    assert any(p.parent.parent.name == "parts" and p.suffix == ".csv" for p in written)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {expected}, modes


# ---------------------------------------------------------------------- item 3
def test_partly_filled_capacities_print_no_runtime_warning(tmp_path: Path) -> None:
    text = "name,current,minimum,target,capacity\nA,30,10,15,40\nB,5,8,20,\nC,12,6,12,\n"
    result = run_process("recommend", str(write(tmp_path, text)), "--json", warnings_as_errors=True)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert sum(json.loads(result.stdout)["allocation"].values()) == 47


# ---------------------------------------------------------------------- item 4
def test_an_output_file_under_a_file_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    blocker = write(tmp_path, "I am a file", name="report")
    result = run("recommend", str(write(tmp_path, GOOD)), "--out", str(blocker / "plan.csv"))
    assert_usage_error(result, "--out", "is a file, not a folder")
    assert blocker.read_text() == "I am a file"


def test_plot_accepts_the_results_file_itself(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, ["simulate", "--out", str(out), *SMALL]).exit_code == 0
    result = runner.invoke(app, ["plot", str(out / "results.csv"), "--metric", "gini"])
    assert result.exit_code == 0, result.output
    assert (out / "gini.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", ["is empty"]),
        ("method,scenario,seed,step,metric,value\n", ["no rows"]),
        ("method,scenario,seed,step,metric,value\nqp,s,0,0,mae,1\nqp,s,0,1,mae,x\n", ["line 3"]),
        ("method,scenario,seed,step,metric,value\nqp,s,0,0.5,mae,1\n", ["'step'", "line 2"]),
        ("a,b\n1,2\n", ["expected columns"]),
    ],
    ids=["empty", "header-only", "non-numeric", "fractional-step", "other-columns"],
)
def test_plot_on_a_broken_results_table_is_one_line(
    tmp_path: Path, content: str, words: list[str]
) -> None:
    path = write(tmp_path, content, name="results.csv")
    assert_usage_error(run("plot", str(path)), *words)
    assert_usage_error(run("plot", str(tmp_path)), *words)
    assert not (tmp_path / "mae.png").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--budget", "-5"], ["--budget", "-5"]),
        (["--budget", "many"], ["--budget", "many"]),
        (["--budget", "2.5"], ["--budget", "whole number", "--continuous"]),
        (["--horizon", "-1"], ["--horizon", "at least 0"]),
        (["--steps", "-1"], ["--steps", "at least 0"]),
        (["--horizon", str(10**8)], ["--horizon", "memory"]),
    ],
)
def test_demo_validates_its_options(args: list[str], words: list[str]) -> None:
    assert_usage_error(runner.invoke(app, ["demo", *args]), *words)


# ---------------------------------------------------------------------- item 10
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--scenario", "bogus"], ["--scenario", "bogus"]),
        (["--scenario", "shock(fraction=2)"], ["--scenario", "fraction"]),
        (["--tau", "-1"], ["--tau"]),
        (["--strategy", "magic"], ["--strategy", "magic"]),
        (["--budget", "0.5"], ["--budget", "whole number"]),
        (["--seeds", "0"], ["--seeds"]),
        (["--horizon", "0"], ["--horizon"]),
        (["--first-seed", "-3"], ["--first-seed"]),
    ],
)
def test_a_failing_simulate_creates_no_folder(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    out = tmp_path / "D"
    result = runner.invoke(app, ["simulate", "--out", str(out), *SMALL, *args])
    assert_usage_error(result, *words)
    assert not out.exists()


def test_a_scenario_that_fails_on_the_network_creates_no_folder(tmp_path: Path) -> None:
    network = write(tmp_path, "name,current,minimum,target\nA,3,1,2\nB,1,1,2\n")
    targets = write(tmp_path, "step,name,target\n1,Nobody,4\n", name="targets.csv")
    out = tmp_path / "D"
    result = runner.invoke(
        app,
        ["simulate", "--network", str(network), "--scenario", f"csv:{targets}",
         "--horizon", "3", "--seeds", "1", "--out", str(out)],
    )  # fmt: skip
    assert_usage_error(result, "--scenario", "Nobody")
    assert not out.exists()


# ---------------------------------------------------------------------- items 11, 12
def test_budget_none_and_inf_mean_no_cap(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    free = json.loads(run("recommend", str(path), "--json").stdout)
    for word in ("inf", "none", "INF"):
        result = run("recommend", str(path), "--budget", word, "--json")
        assert result.returncode == 0, result.stderr
        payload = json.loads(result.stdout)
        assert payload["transfer_budget"] is None
        assert payload["allocation"] == free["allocation"]
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", "--budget", "inf", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out / "results.csv")["method"]) == {"qp"}


def test_a_fractional_budget_in_whole_staff_mode_is_refused_not_floored(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert_usage_error(run("recommend", str(path), "--budget", "0.5"), "--budget", "0 or 1")
    ok = run("recommend", str(path), "--budget", "0.5", "--continuous", "--json")
    assert ok.returncode == 0, ok.stderr
    moved = sum(t["count"] for t in json.loads(ok.stdout)["transfers"])
    assert math.isclose(moved, 0.5)


def test_weights_with_a_strategy_that_ignores_them_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert_usage_error(
        run("recommend", str(path), "--weights", "target"), "--weights", "nwo and hybrid", "qp"
    )
    ok = run("recommend", str(path), "--strategy", "nwo", "--weights", "target", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["weights"] == "target"


# ---------------------------------------------------------------------- item 22
def test_horizon_first_seed_and_the_deprecated_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run("simulate", "--out", str(out), "--hospitals", "5", "--horizon", "3",
                 "--seeds", "2", "--first-seed", "7", "--no-plots")  # fmt: skip
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["seed"].unique()) == [7, 8]
    assert sorted(frame["step"].unique()) == [0, 1, 2]
    assert "deprecated" not in result.stderr
    old = run("simulate", "--out", str(tmp_path / "old"), "--hospitals", "5", "--steps", "3",
              "--seeds", "1", "--no-plots")  # fmt: skip
    assert old.returncode == 0, old.stderr
    assert "--steps is deprecated here; use --horizon" in old.stderr
    assert sorted(pd.read_csv(tmp_path / "old" / "results.csv")["step"].unique()) == [0, 1, 2]
    both = run("simulate", "--out", str(tmp_path / "x"), "--steps", "3", "--horizon", "4")
    assert_usage_error(both, "--steps", "--horizon")


def test_seeds_from_an_offset_reproduce_the_same_draws(tmp_path: Path) -> None:
    whole, tail = tmp_path / "whole", tmp_path / "tail"
    args = ["--hospitals", "8", "--horizon", "5", "--no-plots", "--scenario", "shifting+shock"]
    assert (
        runner.invoke(app, ["simulate", "--out", str(whole), "--seeds", "3", *args]).exit_code == 0
    )
    result = runner.invoke(
        app, ["simulate", "--out", str(tail), "--seeds", "1", "--first-seed", "2", *args]
    )
    assert result.exit_code == 0, result.output
    a = pd.read_csv(whole / "results.csv")
    b = pd.read_csv(tail / "results.csv")
    keep = (a["seed"] == 2) & (a["metric"] != "decision_seconds")
    pd.testing.assert_frame_equal(
        a[keep].reset_index(drop=True),
        b[b["metric"] != "decision_seconds"].reset_index(drop=True),
    )


def test_switches_show_no_bool_type_and_reject_values_clearly(tmp_path: Path) -> None:
    for command in ("recommend", "simulate", "demo", "plot", "reproduce"):
        help_text = runner.invoke(app, [command, "--help"]).output
        assert "<bool>" not in help_text, command
    top = runner.invoke(app, ["--help"]).output
    assert "<bool>" not in top and "--version" in top
    result = run("recommend", str(write(tmp_path, GOOD)), "--continuous", "true")
    assert_usage_error(result, "--continuous", "switch", "takes no value")
    plots = run("simulate", "--plots", "yes", "--out", str(tmp_path / "x"))
    assert_usage_error(plots, "--plots", "--no-plots")


def test_version_prints_the_package_version() -> None:
    import marra

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"marra {marra.__version__}"


def test_scenario_parameters_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    spec = "shifting(every=2,max_change=1)+shock(fraction=0.9,step=1)"
    result = runner.invoke(
        app,
        ["simulate", "--scenario", spec, "--strategy", "hold", "--hospitals", "10",
         "--horizon", "4", "--seeds", "1", "--out", str(out), "--no-plots"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    staff = frame[frame["metric"] == "total_staff"].sort_values("step")["value"].to_numpy()
    assert staff[0] == staff[1] + (staff[0] - staff[1])  # the step-1 shock removed staff
    assert staff[1] < staff[0] and staff[2] == staff[1]
    help_text = runner.invoke(app, ["simulate", "--help"], terminal_width=200).output
    assert "shock(fraction=0.3" in help_text


# ---------------------------------------------------------------------- item 23
def test_recommend_report_words_counts_and_json(tmp_path: Path) -> None:
    text = "name,current,minimum,target\nZürich,30,10,15\nBeta,5,8,20\n"
    path = write(tmp_path, text)
    one = run("recommend", str(path), "--budget", "1")
    assert one.returncode == 0, one.stderr
    assert "1 transfer," in one.stdout and "1 transfers" not in one.stdout
    assert "over-served" not in one.stdout and "under-served" not in one.stdout
    assert "still below their minimum: Beta" in one.stdout
    payload = run("recommend", str(path), "--json")
    assert "Zürich" in payload.stdout  # not \u00fc
    allocation = tmp_path / "allocation.csv"
    result = run("recommend", str(path), "--budget", "3", "--allocation-out", str(allocation))
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(allocation)
    assert list(rows.columns) == ["name", "current", "after", "change", "minimum", "target"]
    assert rows["change"].tolist() == [-3, 3] and rows["after"].sum() == rows["current"].sum()


def test_recommend_json_gives_each_transfer_its_distance(tmp_path: Path) -> None:
    payload = json.loads(run("recommend", str(write(tmp_path, GOOD)), "--json").stdout)
    distances = [t["distance_km"] for t in payload["transfers"]]
    assert all(d > 0 for d in distances)
    counts = [t["count"] for t in payload["transfers"]]
    total = sum(c * d for c, d in zip(counts, distances, strict=True))
    assert math.isclose(total, payload["total_distance_km"], rel_tol=1e-5)  # 3 decimals each


def test_large_counts_are_formatted_with_separators(tmp_path: Path) -> None:
    from marra.network import generate_network

    path = tmp_path / "big.csv"
    generate_network(12_000, seed=1, coords=False).to_csv(path)
    result = run("recommend", str(path), "--strategy", "hold")
    assert result.returncode == 0, result.stderr
    assert "12,000 hospitals" in result.stdout


# ---------------------------------------------------------------------- item 24
def test_rerun_with_other_strategies_merges_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = runner.invoke(app, ["simulate", "--strategy", "qp", "--out", str(out), *SMALL])
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        app, ["simulate", "--strategy", "greedy", "--budget", "2", "--out", str(out), *SMALL]
    )
    assert second.exit_code == 0, second.output
    assert "merges" in second.stderr and "qp" in second.stderr
    frame = pd.read_csv(out / "results.csv")
    assert list(dict.fromkeys(frame["method"])) == ["qp", "greedy (B=2)"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["label"] for m in manifest["methods"]] == ["qp", "greedy (B=2)"]
    assert manifest["merged_from_earlier_runs"] == ["qp"]
    assert manifest["methods"][1]["budget"] == 2
    # the same again reuses everything and changes nothing
    again = runner.invoke(
        app, ["simulate", "--strategy", "greedy", "--budget", "2", "--out", str(out), *SMALL]
    )
    assert again.exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["reused_parts"] == 2
    other = runner.invoke(app, ["simulate", "--scenario", "shock", "--out", str(out), *SMALL])
    assert_usage_error(other, "--out", "other settings", "scenario")


# ---------------------------------------------------------------------- item 32
@pytest.mark.parametrize(
    "args",
    [
        ["--seeds", str(10**9)],
        ["--horizon", str(10**9)],
        ["--hospitals", str(10**9)],
    ],
)
def test_absurd_sizes_are_refused_with_a_memory_estimate(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "D"
    sizes = {"--seeds": "2", "--horizon": "4", "--hospitals": "6"}
    sizes.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = runner.invoke(
        app, ["simulate", "--out", str(out), *[x for kv in sizes.items() for x in kv]]
    )
    assert_usage_error(result, args[0], "memory", "available")
    assert not out.exists()
    assert_usage_error(runner.invoke(app, ["simulate", *args[:1], "1" + "0" * 12]), args[0])


# ---------------------------------------------------------------------- item 33
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["recommend", "net.csv", "--bogus"], ["--bogus", "marra recommend --help"]),
        (["simulate", "--seeds", "many"], ["--seeds"]),
        (["recommend"], ["FILE", "missing"]),
        (["simulate", "--seeds"], ["--seeds", "requires an argument"]),
        (["nosuch"], ["nosuch"]),
    ],
)
def test_usage_errors_are_one_line_naming_the_option(args: list[str], words: list[str]) -> None:
    result = run(*args)
    assert result.stdout == ""
    assert_usage_error(result, *words)


def test_usage_errors_from_the_console_entry_point_are_one_line() -> None:
    assert_usage_error(run_process("demo", "--horizon", "x"), "--horizon")
    assert_usage_error(run_process("recommend", "a.csv", "--bogus"), "--bogus", "marra recommend")


# ---------------------------------------------------------------------- item 30
def test_plot_checks_every_metric_before_writing_any(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, ["simulate", "--out", str(out), *SMALL]).exit_code == 0
    (out / "mae.png").write_bytes(b"the good plot")
    result = runner.invoke(app, ["plot", str(out), "--metric", "mae", "--metric", "nosuch"])
    assert_usage_error(result, "nosuch", "mae")  # names the bad one, lists those present
    assert (out / "mae.png").read_bytes() == b"the good plot"


# ---------------------------------------------------------------------- item 35 (CLI side)
def test_out_onto_a_symlink_writes_its_target_and_onto_a_fifo_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "shared" / "plan.csv"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "plan.csv"
    link.symlink_to(real)
    network = write(tmp_path, GOOD)
    assert run("recommend", str(network), "--out", str(link)).returncode == 0
    assert link.is_symlink() and real.read_text().startswith("from,to,count")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert_usage_error(run("recommend", str(network), "--out", str(fifo)), "--out", "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# ---------------------------------------------------------------------- learned policies
def shipped_policy() -> Path:
    from marra.experiments.policy_method import default_policy_path

    path = default_policy_path()
    assert path is not None, "the shipped policy is package data"
    return path


def policy_copy(folder: Path, budget: float | None = None) -> Path:
    """The shipped policy in ``folder/policy.pt``; with ``budget``, a variant trained (so its
    file says) under that budget: other bytes, another SHA-256."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "policy.pt"
    data = torch.load(shipped_policy(), map_location="cpu", weights_only=True)
    if budget is not None:
        data["env_settings"] = {**(data.get("env_settings") or {}), "transfer_budget": budget}
    torch.save(data, path)
    return path


POLICY_RUN = ["--hospitals", "12", "--horizon", "3", "--seeds", "1", "--no-plots"]


def test_two_policies_get_labels_from_their_run_folders_or_from_at(tmp_path: Path) -> None:
    # item 6
    a, b = policy_copy(tmp_path / "runs" / "a"), policy_copy(tmp_path / "runs" / "b", 12.0)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["simulate", "--strategy", f"policy:{a}", "--strategy", f"policy:{b}",
         "--budget", "6", "--out", str(out), *POLICY_RUN],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out / "results.csv")["method"]) == {"ppo (a, B=6)", "ppo (b, B=6)"}
    labelled = tmp_path / "labelled"
    result = runner.invoke(
        app,
        ["simulate", "--strategy", f"policy:{a}@mine", "--strategy", f"policy:{a}@again",
         "--out", str(labelled), *POLICY_RUN],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(labelled / "results.csv")["method"]) == {"mine", "again"}
    twice = runner.invoke(
        app, ["simulate", "--strategy", f"policy:{a}", "--strategy", f"policy:{a}", *POLICY_RUN]
    )
    assert_usage_error(twice, "--strategy", "more than once", "@label")


def test_classical_methods_default_to_the_policy_budget_and_say_so(tmp_path: Path) -> None:
    # item 7
    policy = policy_copy(tmp_path / "runs" / "a", 9.0)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["simulate", "--strategy", f"policy:{policy}", "--strategy", "qp", "--out", str(out),
         *POLICY_RUN],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--budget not given: qp plays under B=9" in result.stderr
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["method"]) == {"ppo (a, B=9)", "qp (B=9)"}
    assert frame[frame["metric"] == "moved"]["value"].max() <= 9
    manifest = json.loads((out / "manifest.json").read_text())
    assert {m["label"]: m["budget"] for m in manifest["methods"]} == {
        "ppo (a, B=9)": 9,
        "qp (B=9)": 9,
    }
    free = tmp_path / "free"
    result = runner.invoke(
        app,
        ["simulate", "--strategy", f"policy:{policy}", "--strategy", "qp", "--budget", "none",
         "--out", str(free), *POLICY_RUN],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((free / "manifest.json").read_text())
    assert {m["label"]: m["budget"] for m in manifest["methods"]} == {"ppo (a)": None, "qp": None}
    assert "budget" in result.output  # the table has a budget column


def test_a_different_policy_file_under_the_same_label_is_refused(tmp_path: Path) -> None:
    # item 27
    out = tmp_path / "run"
    first = policy_copy(tmp_path / "one" / "a")
    args = ["simulate", "--budget", "5", "--out", str(out), *POLICY_RUN]
    assert runner.invoke(app, [*args, "--strategy", f"policy:{first}"]).exit_code == 0
    results = (out / "results.csv").read_text()
    other = policy_copy(tmp_path / "two" / "a", 30.0)  # same label 'ppo (a, B=5)', other bytes
    refused = runner.invoke(app, [*args, "--strategy", f"policy:{other}"])
    assert_usage_error(refused, "--out", "ppo (a, B=5)", "policy_sha256", "refused")
    assert (out / "results.csv").read_text() == results
    same = policy_copy(tmp_path / "three" / "a")  # the same bytes elsewhere: the same policy
    again = runner.invoke(app, [*args, "--strategy", f"policy:{same}"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "manifest.json").read_text())["reused_parts"] == 1
    record = json.loads((out / "parts" / "ppo_a_B=5" / "method.json").read_text())
    assert record["policy_sha256"] == __import__("hashlib").sha256(first.read_bytes()).hexdigest()
    assert record["budget"] == 5


def test_policy_inference_runs_on_one_thread_and_restores_the_count() -> None:
    # item 13
    import torch

    from marra.experiments.policy_method import PolicyMethod
    from marra.network import generate_network
    from marra.scenarios import make_scenario

    method = PolicyMethod.from_file(shipped_policy(), transfer_budget=10.0)
    seen: list[int] = []
    act = method.policy.act

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return act(*args, **kwargs)

    method.policy.act = recording  # type: ignore[method-assign]
    network = generate_network(20, seed=0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        series = method.run_episode(
            network, make_scenario("shock", horizon=4).realise(network, 0), 4
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1, 1]
    assert (series["decision_seconds"] > 0).all()
    assert (series["decision_seconds"] < 1.0).all()


def test_demo_shows_the_shipped_policy_with_a_budget_and_honest_notes() -> None:
    result = runner.invoke(app, ["demo", "--horizon", "3", "--budget", "none"])
    assert result.exit_code == 0, result.output
    assert "ppo (shipped)" in result.output and "no cap on staff moved" in result.output
    assert "Lower is better for all" not in result.output
    assert "moved, transfers, km and ms are what a plan costs" in result.output


def test_recommend_checks_the_memory_a_file_needs_before_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import marra.experiments.simulate as simulate_module

    path = write(tmp_path, GOOD + "".join(f"H{i},1,1,1,51,0\n" for i in range(2_000)))
    monkeypatch.setattr(simulate_module, "available_memory_bytes", lambda: 2**20)
    out = tmp_path / "plan.csv"
    result = run("recommend", str(path), "--out", str(out))
    assert_usage_error(result, str(path), "memory", "1.0 MiB available")
    assert not out.exists()
