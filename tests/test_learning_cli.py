"""``marra envs``, ``marra train --env ...`` and ``marra evaluate``: outputs, the JSON contract,
and every bad-input case (exit 2, one line naming the option, nothing written)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from marra.cli import app

runner = CliRunner()
ROLES = ["--env", "roles", "--env-option", "num_agents=6", "--env-option", "num_roles=3"]


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_envs_lists_every_registered_environment_and_describes_one():
    result = _run("envs", "--json")
    assert result.exit_code == 0
    described = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert {"hospital", "roles"} <= set(described)
    roles = described["roles"]
    assert roles["agents"] == 8 and roles["action"] == "discrete(4)"
    assert roles["reward"] == "agent" and roles["metrics"] == ["accuracy"]
    assert roles["baselines"] == ["random"]
    assert roles["options"]["num_agents"]["default"] == "8"
    one = _run("envs", "hospital")
    assert one.exit_code == 0 and "n_hospitals" in one.stdout and "transfer_budget" in one.stdout
    bad = _run("envs", "nosuch")
    assert bad.exit_code == 2 and "unknown environment 'nosuch'" in bad.stderr


def test_train_on_roles_then_evaluate_against_the_baselines(tmp_path: Path):
    out = tmp_path / "run"
    result = _run("train", *ROLES, "--algo", "ippo", "--sharing", "id", "--steps", "1600",
                  "--num-envs", "16", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    for name in ("policy.pt", "checkpoint.pt", "train_log.csv"):
        assert (out / name).is_file()
    assert "accuracy" in result.stdout

    evaluated = _run("evaluate", str(out / "policy.pt"), "--episodes", "6", "--seed", "3",
                     "--out", str(tmp_path / "eval"), "--json")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.stderr
    payload = json.loads(evaluated.stdout)  # exactly one object and nothing else
    assert payload["env"] == "roles" and payload["episodes"] == 6
    assert set(payload["methods"]) == {"policy", "random"}
    for method in payload["methods"].values():
        assert {"accuracy", "return", "team_return"} <= set(method)
        assert set(method["accuracy"]) == {"mean", "std"}
    assert payload["methods"]["policy"]["accuracy"]["mean"] > 0.8
    assert payload["methods"]["random"]["accuracy"]["mean"] < 0.6
    with (tmp_path / "eval" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["method", "env", "seed", "episode", "metric", "value"]
    assert {r["episode"] for r in rows} == {str(i) for i in range(6)}
    manifest = json.loads((tmp_path / "eval" / "manifest.json").read_text())
    assert manifest["env"] == "roles" and manifest["episodes"] == 6

    # the same seeded episodes for every method and every call
    again = _run("evaluate", str(out), "--episodes", "6", "--seed", "3", "--json")
    assert json.loads(again.stdout) == payload
    # a policy tied to 6 agents cannot act for 9
    other = _run("evaluate", str(out), "--env-option", "num_agents=9")
    assert other.exit_code == 2 and "'id' for 6 agents" in other.stderr


def test_evaluate_without_a_policy_runs_the_baselines_of_an_env():
    result = _run("evaluate", "--env", "hospital", "--env-option", "n_hospitals=6",
                  "--env-option", "horizon=4", "--baseline", "qp", "--baseline", "hold",
                  "--episodes", "3", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    methods = json.loads(result.stdout)["methods"]
    assert list(methods) == ["qp", "hold"]
    assert methods["qp"]["mae"]["mean"] < methods["hold"]["mae"]["mean"]


def test_the_hospital_shortcuts_still_train(tmp_path: Path):
    out = tmp_path / "h"
    result = _run("train", "--scenario", "shifting", "--hospitals", "6", "--horizon", "5",
                  "--steps", "80", "--num-envs", "4", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "--budget 6" in result.stdout  # the suggested simulate command carries the budget
    network = tmp_path / "net.csv"
    network.write_text("name,current,minimum,target\nA,10,2,5\nB,1,1,6\nC,4,1,4\n")
    result = _run("train", "--network", str(network), "--horizon", "4", "--steps", "32",
                  "--num-envs", "4", "--out", str(tmp_path / "n"))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert f"--network {network}" in result.stdout  # item 8: the suggestion keeps --network


@pytest.mark.parametrize(
    "args, words",
    [
        (["--env", "nosuch"], "--env: unknown environment 'nosuch'"),
        (["--algo", "qmix9"], "--algo: unknown algorithm 'qmix9'; choose one of ippo, mappo"),
        (["--sharing", "odd"], "--sharing: unknown scheme 'odd'; choose one of none, full, id"),
        (["--env", "roles", "--env-option", "colour=red"], "has no option 'colour'"),
        (["--env", "roles", "--env-option", "num_agents=many"], "num_agents: expected int"),
        (["--env", "roles", "--env-option", "noequals"], "expected KEY=VALUE"),
        (["--env", "roles", "--scenario", "shifting"], "--scenario: is a shortcut for"),
        (["--steps", "0"], "--steps: must be at least 1"),
        (["--steps", str(10**13)], "--steps: must be at most"),
        (["--num-envs", "0"], "--num-envs: must be at least 1"),
        (["--seed", "-1"], "--seed: must be an integer from 0"),
        (["--seed", str(10**21)], "--seed"),
        (["--device", "nosuch"], "--device"),
        (["--device", "cuda"], "--device cuda"),
        (["--reward-terms", "foo"], "unknown term 'foo'; the terms are target, minima, fairness"),
        (["--budget", "-3"], "--budget"),
        (["--hospitals", "0"], "--hospitals: must be at least 1"),
        (["--scenario", "bogus"], "--scenario: unknown scenario 'bogus'"),
        (["--resume", "--overwrite"], "exclude each other"),
        (["--env", "roles", "--env-option", "num_agents=1000000", "--num-envs", "100000"],
         "needs about"),
    ],
)  # fmt: skip
def test_bad_train_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, args, words):
    out = tmp_path / "out"
    result = _run("train", *args, "--out", str(out))
    assert result.exit_code == 2, result.stdout
    assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_train_refuses_an_existing_run_naming_the_flags(tmp_path: Path):
    out = tmp_path / "run"
    args = ["train", *ROLES, "--steps", "60", "--num-envs", "6", "--out", str(out)]
    assert _run(*args).exit_code == 0
    again = _run(*args)
    assert again.exit_code == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert "resume=True" not in again.stderr
    file = tmp_path / "file"
    file.write_text("x")
    result = _run("train", *ROLES, "--out", str(file))
    assert result.exit_code == 2 and "--out" in result.stderr
    missing = _run("train", *ROLES, "--resume", "--out", str(tmp_path / "none"))
    assert missing.exit_code == 2 and "no checkpoint" in missing.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "--env: required when no policy file is given"),
        (["--env", "roles", "--baseline", "oracle"], "has no baseline 'oracle'"),
        (["--env", "roles", "--episodes", "0"], "--episodes: must be at least 1"),
        (["missing.pt"], "no such file"),
    ],
)
def test_bad_evaluate_arguments_exit_2(tmp_path, args, words):
    result = _run("evaluate", *args, "--out", str(tmp_path / "e"))
    assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert not (tmp_path / "e").exists()


def test_evaluate_names_a_folder_without_a_policy_and_a_file_that_is_not_one(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run("evaluate", str(empty))
    assert result.exit_code == 2 and "folder without a policy.pt" in result.stderr
    text = tmp_path / "net.csv"
    text.write_text("name,current\n")
    result = _run("evaluate", str(text))
    assert result.exit_code == 2 and "not a marra policy file" in result.stderr
    assert "weights_only" not in result.stderr and result.stderr.count("\n") == 1
