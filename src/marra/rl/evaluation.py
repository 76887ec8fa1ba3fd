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
    ``seed``); returns means over copies of the final step's ``(num_envs,)`` info values (the
    hospital's ``mae``, ...), of the episode metrics (prefixed ``episode_``), and
    ``episode_reward`` (the undiscounted return, averaged over agents).

    ``act = lambda obs: torch.zeros(obs.shape[:-1])`` evaluates doing nothing (continuous).
    """
    obs = env.reset(seed=seed)
    info: dict[str, Any] = {}
    for _ in range(int(env.horizon)):
        step = env.step(act(obs))
        obs, info = step.obs, step.info
        if bool((step.terminated | step.truncated).all()):
            break
    result: dict[str, float] = {}
    for key, value in info.items():
        if isinstance(value, torch.Tensor) and value.ndim == 1 and value.is_floating_point():
            result[key] = value.to(torch.float64).mean().item()
    for key, value in info.get("episode_metrics", {}).items():
        result[f"episode_{key}"] = value.to(torch.float64).mean().item()
    if "episode_return" in info:
        result["episode_reward"] = info["episode_return"].to(torch.float64).mean().item()
    current = getattr(env, "current", None)
    if isinstance(current, torch.Tensor) and "episode_gini" in result:
        from marra import metrics_torch

        result["gini"] = metrics_torch.gini(current).mean().item()
    return result
