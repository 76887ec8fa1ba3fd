"""Run a policy (or any function of the observation) through whole episodes of an environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["evaluate_policy"]


@torch.no_grad()
def evaluate_policy(
    act: Callable[[torch.Tensor], torch.Tensor], env: Any, *, seed: int | None = None
) -> dict[str, float]:
    """Run ``act(obs) -> actions`` for one episode of every copy of ``env`` (reset with
    ``seed``; copies that end early are reset and their first episode kept); returns means over
    copies of the last step's ``(num_envs,)`` info values (the hospital's ``mae``, ...), of the
    first episode's metrics (prefixed ``episode_``), and ``episode_reward`` (its undiscounted
    return, averaged over agents).

    ``act = lambda obs: torch.zeros(obs.shape[:-1])`` evaluates doing nothing (continuous).
    """
    autoreset = env.autoreset
    env.autoreset = True  # copies may end at different steps (early termination)
    try:
        obs = env.reset(seed=seed)
        finished = torch.zeros(env.num_envs, dtype=torch.bool)
        info: dict[str, Any] = {}
        first: dict[str, torch.Tensor] = {}
        for _ in range(10 * int(env.horizon)):
            step = env.step(act(obs))
            obs, info = step.obs, step.info
            done = (step.terminated | step.truncated).cpu() & ~finished
            if bool(done.any()):
                records = {f"episode_{k}": v for k, v in info["episode_metrics"].items()}
                records["episode_reward"] = info["episode_return"].to(torch.float64).mean(-1)
                for key, value in records.items():
                    first.setdefault(key, torch.zeros(env.num_envs, dtype=torch.float64))
                    first[key][done] = value.cpu().to(torch.float64)[done]
                finished |= done
            if bool(finished.all()):
                break
    finally:
        env.autoreset = autoreset
    result: dict[str, float] = {}
    for key, value in info.items():
        if isinstance(value, torch.Tensor) and value.ndim == 1 and value.is_floating_point():
            result[key] = value.to(torch.float64).mean().item()
    for key, value in first.items():
        result[key] = value.mean().item()
    current = getattr(env, "current", None)
    if isinstance(current, torch.Tensor) and "episode_gini" in result:
        from marra import metrics_torch

        result["gini"] = metrics_torch.gini(current).mean().item()
    return result
