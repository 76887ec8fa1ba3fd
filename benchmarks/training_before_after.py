"""Before/after of the hospital learner across a code change: time to quality per seed, and the
check that two versions run the same algorithm.

Run it once per version, with that version's code first on the path, e.g. for marra 0.1
(commit ``28f164d``) against the working tree::

    git worktree add /tmp/before 28f164d
    PYTHONPATH=/tmp/before/src python benchmarks/training_before_after.py ttq \\
        --benchmarks /tmp/before/benchmarks --seed 2 --out before_s2.json
    python benchmarks/training_before_after.py ttq --seed 2 --out after_s2.json [--critic pool]

``ttq`` runs part (b) of ``benchmarks/training.py`` (that version's own ``marra_time_to_quality``
on the same evaluation set and target) for one seed and prints and writes its result; run the
two versions at the same time so that they share the machine's load. Env-steps to the target do
not depend on the load; seconds do.

``init`` / ``replay`` check that two versions train the same algorithm: ``init`` (with the old
code on the path) trains 5 iterations, saves the model's initial weights and prints the losses
of every iteration; ``replay`` (new code) trains the same config with those initial weights
loaded into the new model (0.1's layer names and ``(out, in)`` matrices mapped onto the grouped
layers) and prints its losses. Equal losses up to float rounding mean the only difference left
is the draw of the initial weights.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ENV = {"n_hospitals": 150, "scenario": "shifting", "transfer_budget": 150.0}
LOSSES = ("iteration", "policy_loss", "value_loss", "approx_kl")


def time_to_quality(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(args.benchmarks))
    import torch
    import training  # that version's benchmarks/training.py

    ns = argparse.Namespace(
        n_hospitals=150, scenario="shifting", horizon=50, transfer_budget=150.0, seed=args.seed,
        throughput_steps=50_000, cap_seconds=args.cap_seconds,
        total_steps=training.PPOConfig().total_steps, target_factor=1.1, eval_episodes=8,
        eval_seed=20_250, eval_every=8_000, quick=False, critic=args.critic,
    )  # fmt: skip
    torch.set_num_threads(1)
    eval_set = training.EvalSet(ENV, 8, 20_250)
    target = 1.1 * training.references(eval_set, 150.0)["qp"]
    result = training.marra_time_to_quality(ns, ENV, eval_set, target)
    return {"seed": args.seed, "critic": args.critic, "target": target, "ttq": result,
            "load": os.getloadavg()}  # fmt: skip


def _losses(out: str) -> list[dict[str, str]]:
    with open(Path(out) / "train_log.csv", newline="") as handle:
        return [{k: row[k] for k in LOSSES} for row in csv.DictReader(handle)]


def dump_initial(args: argparse.Namespace) -> list[dict[str, str]]:
    import torch

    from marra.rl import PPOConfig, train
    from marra.rl import ppo as old_ppo

    build = old_ppo.build_agent

    def saving(obs_dim: int, config: Any) -> Any:
        agent = build(obs_dim, config)
        torch.save(agent.state_dict(), args.weights)
        return agent

    old_ppo.build_agent = saving
    out = tempfile.mkdtemp()
    train(PPOConfig(seed=args.seed, total_steps=4000), ENV, out_dir=out, progress=False)
    return _losses(out)


def replay(args: argparse.Namespace) -> list[dict[str, str]]:
    import torch

    import marra.rl.algorithm as algorithm
    from marra.rl import PPOConfig, train

    old = torch.load(args.weights)
    build = algorithm.build_model

    def loading(spec: Any, config: Any) -> Any:
        model = build(spec, config)
        state = model.state_dict()
        for key, value in old.items():
            if key == "actor.log_std":
                state[key] = value.reshape(state[key].shape)
            elif key.startswith("actor.mean_net."):
                layer = {"0": 0, "2": 1, "4": 2}[key.split(".")[2]]
                kind = key.rsplit(".", 1)[1]
                new_key = f"actor.body.layers.{layer}.{kind}"
                state[new_key] = (value.T if kind == "weight" else value).unsqueeze(0)
            else:
                state[key] = value
        model.load_state_dict(state)
        return model

    algorithm.build_model = loading
    out = tempfile.mkdtemp()
    config = PPOConfig(seed=args.seed, total_steps=4000, critic=args.critic or "pool")
    train(config, ENV, env="hospital", out_dir=out, progress=False)
    return _losses(out)


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("ttq", "init", "replay"))
    parser.add_argument("--benchmarks", default=str(Path(__file__).parent),
                        help="the benchmarks folder of the version under test (ttq)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--critic", default=None, help="new code only: local, state or pool")
    parser.add_argument("--cap-seconds", type=float, default=1500.0)
    parser.add_argument("--weights", default="initial_weights.pt", help="init/replay")
    parser.add_argument("--out", default=None, help="JSON of the result")
    args = parser.parse_args(argv)
    if args.mode == "ttq":
        result: Any = time_to_quality(args)
        shown = {k: v for k, v in result["ttq"].items() if k != "evaluations"}
        print(json.dumps(shown, default=str))
    else:
        result = dump_initial(args) if args.mode == "init" else replay(args)
        for row in result:
            print(row)
    if args.out:
        Path(args.out).write_text(json.dumps(result, default=str, indent=1))
    return result


if __name__ == "__main__":
    main()
