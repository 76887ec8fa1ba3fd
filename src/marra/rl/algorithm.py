"""What the training loop needs from a learner: the :class:`Algorithm` interface, the PPO
family's implementation of it, and the :class:`Constraint` hook that shapes advantages.

The loop (:mod:`marra.rl.loop`) owns the run: the environment, the seeds, the run folder,
checkpoints, logs, timers and the evaluation hook. An algorithm owns its networks, optimisers
and buffers, and does one *iteration* at a time (collect experience, update); it tells the loop
how many env-steps an iteration takes. Value-based and off-policy learners implement the same
interface (their iteration collects into a replay buffer and runs gradient steps on it).

To add a learner: write an ``Algorithm`` subclass and a config dataclass with the run fields of
:class:`marra.rl.PPOConfig` (``seed``, ``total_steps``, ``num_envs``, ``rollout_steps``,
``device``, ``torch_threads``, ``checkpoint_every``, ``algo``, ``sharing``, ``to_dict``,
``from_dict``), and register an :class:`AlgorithmInfo` with ``builder`` in
:data:`marra.rl.config.ALGORITHMS`.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from torch import nn

from marra.envs.base import EnvSpec, MultiAgentEnv

from .config import PPOConfig
from .ppo import ActorCritic, TrainingError, build_model, ppo_update
from .rollout import Rollout, collect_rollout, compute_gae, iteration_seed

__all__ = ["Algorithm", "PPOAlgorithm", "Constraint", "check_rollout"]


class Constraint:
    """A hook on a policy-gradient learner's advantages (e.g. ELD, paper 003 Eq. 10-13).

    The PPO iteration calls, in order: :meth:`observe` with each rollout (its finished
    episodes' outcomes are in ``rollout.episode_outcomes``), :meth:`shape_advantage` on the
    GAE advantages before the update, and :meth:`update` after it (periodic dual ascent).
    The base class changes nothing, so a learner without a constraint is exactly the
    backbone.
    """

    name: ClassVar[str] = "none"

    def observe(self, rollout: Rollout, model: ActorCritic) -> None:
        """Take in a rollout's finished episodes."""

    def shape_advantage(
        self, advantages: torch.Tensor, rollout: Rollout, model: ActorCritic
    ) -> torch.Tensor:
        """The advantages the update uses (``(T, E)`` team or ``(T, E, N)`` per agent)."""
        return advantages

    def update(self, iteration: int) -> dict[str, float]:
        """After the update: adjust internal state (dual variables); values to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""


def check_rollout(rollout: Rollout, iteration: int) -> None:
    """Stop training on non-finite rewards or observations (naming where)."""
    for name in ("rewards", "obs"):
        tensor = getattr(rollout, name)
        if not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
            raise TrainingError(
                f"iteration {iteration}: the environment returned non-finite {name} "
                f"(first at step {bad[0]}, copy {bad[1]}); training stopped and no policy file "
                "was written"
            )


class Algorithm:
    """One learner as the training loop drives it.

    Attributes:
        model: the ``nn.Module`` holding every trained parameter (checkpointed) with an
            ``actor`` (saved as the policy) and a ``sharing`` scheme.
        steps_per_iteration: env-steps one :meth:`iteration` takes.
    """

    model: nn.Module
    steps_per_iteration: int

    def iteration(
        self, env: MultiAgentEnv, iteration: int, num_iterations: int, generator: torch.Generator
    ) -> dict[str, Any]:
        """Collect and learn once; return the log values (including ``rollout_s``,
        ``update_s`` and the episode metrics of the rollout)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class PPOAlgorithm(Algorithm):
    """IPPO / MAPPO (:mod:`marra.rl.ppo`) behind the :class:`Algorithm` interface."""

    def __init__(
        self, spec: EnvSpec, config: PPOConfig, constraint: Constraint | None = None
    ) -> None:
        self.spec = spec
        self.config = config
        self.model = build_model(spec, config)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.model.actor.parameters(), "lr": config.learning_rate},
                {"params": self.model.critic.parameters(), "lr": config.critic_learning_rate},
            ],
            eps=1e-5,
        )
        self.base_lrs = (config.learning_rate, config.critic_learning_rate)
        self.rollout_steps = int(config.rollout_steps or spec.horizon)
        self.steps_per_iteration = self.rollout_steps * config.num_envs
        self.constraint = constraint or Constraint()

    def iteration(
        self, env: MultiAgentEnv, iteration: int, num_iterations: int, generator: torch.Generator
    ) -> dict[str, Any]:
        config, model = self.config, self.model
        tick = time.perf_counter()
        if config.anneal_lr:  # linear anneal to 0 over the run
            frac = 1.0 - (iteration - 1) / num_iterations
            for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = frac * base_lr
        model.sharing.before_iteration(iteration, model)
        rollout = collect_rollout(
            env,
            model,
            steps=self.rollout_steps,
            generator=generator,
            seed=iteration_seed(config.seed, iteration),
            warm_obs_norm=iteration == 1,
        )
        check_rollout(rollout, iteration)
        sharing_stats = model.sharing.after_rollout(rollout, model)
        self.constraint.observe(rollout, model)
        rollout_s = time.perf_counter() - tick
        advantages, returns = compute_gae(
            rollout.rewards, rollout.values, rollout.dones, rollout.last_value,
            config.gamma, config.gae_lambda,
        )  # fmt: skip
        advantages = self.transform_advantages(
            advantages, rollout, iteration, num_iterations, generator
        )
        advantages = self.constraint.shape_advantage(advantages, rollout, model)
        stats = ppo_update(model, self.optimizer, rollout, advantages, returns, config, generator)
        constraint_stats = self.constraint.update(iteration)
        # observation statistics change between iterations only, never inside one: the
        # update above saw the normalisation the rollout was collected with
        model.actor.obs_norm.update(rollout.obs)
        return {
            "rollout_s": rollout_s,
            "update_s": time.perf_counter() - tick - rollout_s,
            **rollout.metrics,
            **stats,
            **sharing_stats,
            **constraint_stats,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
        }

    def transform_advantages(
        self,
        advantages: torch.Tensor,
        rollout: Rollout,
        iteration: int,
        num_iterations: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """A learner's own transform of the GAE advantages, before the constraint shapes them
        (SOTO's welfare weights, :mod:`marra.rl.soto`); IPPO and MAPPO keep them."""
        return advantages

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "constraint": self.constraint.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.constraint.load_state_dict(state.get("constraint", {}))
