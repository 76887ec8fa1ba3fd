"""Commands of the learning researcher: train."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from marra.cli._app import (
    _fail,
    _load_network,
    app,
    console,
)

REWARD_TERMS = ("target", "minima", "fairness")


def _parse_reward_terms(value: str) -> dict[str, float]:
    """``"target,minima"`` -> weights with the unnamed terms switched off (paper 000 Fig. 2)."""
    terms = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in terms if t not in REWARD_TERMS]
    if unknown or not terms:
        raise _fail(
            f"--reward-terms: unknown term {unknown[0]!r}; "
            if unknown
            else f"--reward-terms: empty; use a comma list of {', '.join(REWARD_TERMS)}"
        )
    return {term: 1.0 if term in terms else 0.0 for term in REWARD_TERMS}


@app.command()
def train(
    scenario: Annotated[str, typer.Option(help="scenario to train on")] = "shifting",
    hospitals: Annotated[int, typer.Option(help="hospitals per random training network")] = 150,
    network_file: Annotated[
        Path | None, typer.Option("--network", help="train on this CSV network instead")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(help="staff that may move per step (default: one per hospital)"),
    ] = None,
    steps: Annotated[int, typer.Option(help="environment steps (one copy, one step) to train")] = (
        400_000
    ),
    seed: Annotated[int, typer.Option(help="seed of the whole run")] = 1,
    reward_terms: Annotated[
        str, typer.Option(help="reward terms of paper 000 Eq. 1 to keep (the ablation)")
    ] = "target,minima,fairness",
    horizon: Annotated[int, typer.Option(help="steps per episode T")] = 50,
    num_envs: Annotated[int, typer.Option(help="environment copies stepped together")] = 16,
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda")] = "cpu",
    out: Annotated[Path, typer.Option(help="run folder (policy.pt, logs, checkpoint)")] = Path(
        "runs/train"
    ),
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="start afresh even if --out holds a run")
    ] = False,
) -> None:
    """Train the PPO agent of paper 000 (shared actor, centralised critic); write policy.pt."""
    if steps < 1:
        raise _fail(f"--steps: must be at least 1, got {steps}")
    if hospitals < 1:
        raise _fail(f"--hospitals: must be at least 1, got {hospitals}")
    if budget is not None and (not math.isfinite(budget) or budget < 0):
        raise _fail(f"--budget: must be a non-negative number, got {budget:g}")
    if resume and overwrite:
        raise _fail("--resume and --overwrite exclude each other")
    weights = _parse_reward_terms(reward_terms)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise _fail(f"--device {device}: CUDA is not available on this machine")
    from marra.envs.hospital import RewardWeights
    from marra.rl import PPOConfig, TrainingError
    from marra.rl import train as run_training
    from marra.rl.checkpoint import CheckpointError

    network = None if network_file is None else _load_network(network_file, integer=False)
    n = hospitals if network is None else network.n
    env_kwargs: dict[str, Any] = {
        "scenario": scenario,
        "horizon": horizon,
        "transfer_budget": float(n) if budget is None else float(budget),
        "reward_weights": RewardWeights(**weights),
    }
    if network is None:
        env_kwargs["n_hospitals"] = hospitals
    else:
        env_kwargs["network"] = network
    try:
        config = PPOConfig(total_steps=steps, seed=seed, num_envs=num_envs, device=device)
        result = run_training(
            config, env_kwargs, out_dir=out, resume=resume, overwrite=overwrite, progress=True
        )
    except (TrainingError, CheckpointError) as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    final = result.final
    console.print(
        f"trained {result.env_steps:,} env-steps in {result.wall_s:.0f} s "
        f"({result.steps_per_s:,.0f} steps/s); final MAE {final.get('mae', float('nan')):.3f}"
    )
    console.print(f"policy: {result.policy_path}; log: {result.log_path}")
    console.print(
        f"compare: marra simulate --scenario {scenario} --strategy policy:{result.policy_path} "
        f"--strategy qp --budget {env_kwargs['transfer_budget']:g}"
    )
