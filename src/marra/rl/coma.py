"""COMA (Foerster et al. 2018): a centralised Q-critic and the counterfactual baseline, for
discrete actions. ``--algo coma``.

The critic gives, for each agent ``i``, every own action's value with the other agents' actions
held fixed: ``Q_i(s, u_-i, .)``, one network shared by all agents, whose input is the global
state ``env.state()`` (or, where an environment has none, every agent's observation), the
other agents' actions (one-hot, agent ``i``'s own block zeroed) and agent ``i``'s one-hot
identity. COMA learns the team reward (the sum of the agents' rewards; an environment's team
reward as it is). Per iteration:

1. roll the decentralised policies (the sharing scheme's actor) without a critic;
2. ``Q_i(s_t, u_t)`` for the taken actions and, in the same batched call, for every
   alternative action of every agent;
3. TD(lambda) targets ``G^lambda_ti`` of ``Q_i(s_t, u_t)`` (GAE with ``gae_lambda`` on Q,
   bootstrapped from ``Q(s_T, u_T)`` with ``u_T`` drawn from the policies when the rollout cuts
   an episode);
4. the counterfactual advantage ``A_ti = G^lambda_ti - sum_a pi_i(a | o_ti) Q_i(s_t, (u_-i, a))``:
   the baseline marginalises agent ``i``'s own action only, so it does not depend on it and the
   gradient stays unbiased. The target ``G^lambda`` in place of ``Q(s, u)`` is what the
   FEN/SOTO authors' ``COMA.py`` (``matthieu637/DFRL``) uses: it leans less on an untrained
   critic early on;
5. one :func:`marra.rl.ppo_update` (clipped surrogate on ``A``, critic regression of
   ``Q_i(s, u)`` on ``G^lambda``), so the PPO math stays in one place: the update sees the
   joint action appended to the state, which is what the Q-critic reads.

A :class:`~marra.rl.algorithm.Constraint` (ELD) shapes ``A`` between steps 4 and 5; its form is
CTDE by default (COMA's critic is centralised).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from marra.envs.base import EnvSpec, MultiAgentEnv

from .algorithm import Constraint, PPOAlgorithm, check_rollout
from .config import ALGORITHMS, AlgorithmInfo, PPOConfig
from .networks import masked_logits, mlp
from .ppo import ActorCritic, CompatibilityError, build_model, ppo_update
from .rollout import collect_rollout, compute_gae, iteration_seed

__all__ = ["COMACritic", "COMAAlgorithm", "counterfactual_advantage"]


class COMACritic(nn.Module):
    """``Q_i(s, u_-i, a)`` for every agent ``i`` and own action ``a`` (module docstring).

    ``forward(obs, state_and_actions, groups)`` (the critic interface of
    :class:`~marra.rl.ppo.ActorCritic`) reads the joint action from the last ``N * A`` columns of
    ``state_and_actions`` and returns ``Q_i(s, u)`` of the taken actions ``(..., N)``, in
    normalised value units.
    """

    def __init__(
        self,
        *,
        obs_dim: int,
        state_dim: int,
        num_agents: int,
        num_actions: int,
        hidden: tuple[int, ...],
        activation: str,
    ) -> None:
        super().__init__()
        self.num_agents, self.num_actions = int(num_agents), int(num_actions)
        self.state_dim = int(state_dim)
        base = self.state_dim if self.state_dim > 0 else self.num_agents * int(obs_dim)
        n, a = self.num_agents, self.num_actions
        self.net = mlp(base + n * a + n, hidden, a, out_gain=1.0, activation=activation)
        self.register_buffer("others", 1.0 - torch.eye(n).unsqueeze(-1), persistent=False)
        self.register_buffer("ids", torch.eye(n), persistent=False)

    def q_values(
        self, obs: torch.Tensor, state: torch.Tensor | None, joint: torch.Tensor
    ) -> torch.Tensor:
        """``Q_i(s, u_-i, .)`` ``(..., N, A)`` from normalised ``obs (..., N, obs_dim)``, the
        state ``(..., state_dim)`` (ignored without one) and one-hot ``joint (..., N, A)``."""
        n, a = self.num_agents, self.num_actions
        lead = joint.shape[:-2]
        base = state if self.state_dim > 0 else obs.flatten(-2)
        assert base is not None
        others = (joint.unsqueeze(-3) * self.others).reshape(*lead, n, n * a)  # own block 0
        ids = self.ids.expand(*lead, n, n)
        x = torch.cat([base.unsqueeze(-2).expand(*lead, n, base.shape[-1]), others, ids], -1)
        return self.net(x)

    def split(self, state_and_actions: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(state, joint (..., N, A))`` from the update's state columns."""
        n, a = self.num_agents, self.num_actions
        joint = state_and_actions[..., self.state_dim :].reshape(
            *state_and_actions.shape[:-1], n, a
        )
        state = state_and_actions[..., : self.state_dim] if self.state_dim > 0 else None
        return state, joint

    def forward(
        self, obs: torch.Tensor, state_and_actions: torch.Tensor | None, groups: Any = None
    ) -> torch.Tensor:
        assert state_and_actions is not None
        state, joint = self.split(state_and_actions)
        return (self.q_values(obs, state, joint) * joint).sum(-1)

    def value_loss(
        self,
        obs: torch.Tensor,
        state_and_actions: torch.Tensor | None,
        groups: Any,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """``0.5 mean (Q_i(s, u) - G^lambda)^2`` on normalised targets."""
        return 0.5 * ((self(obs, state_and_actions, groups) - targets) ** 2).mean()


def counterfactual_advantage(
    targets: torch.Tensor, q_all: torch.Tensor, probs: torch.Tensor
) -> torch.Tensor:
    """``A_i = G_i - sum_a pi_i(a) Q_i(s, (u_-i, a))`` (COMA's counterfactual baseline):
    ``targets (..., N)``, ``q_all`` and ``probs`` ``(..., N, A)``."""
    return targets - (probs * q_all).sum(-1)


class COMAAlgorithm(PPOAlgorithm):
    """COMA behind the :class:`~marra.rl.algorithm.Algorithm` interface (module docstring)."""

    def __init__(
        self, spec: EnvSpec, config: PPOConfig, constraint: Constraint | None = None
    ) -> None:
        if not spec.action.is_discrete:
            raise CompatibilityError(
                f"algo 'coma' supports discrete actions only; {spec.name} has continuous actions"
            )
        if config.critic not in ("auto", "state"):
            raise CompatibilityError(
                f"algo 'coma' has its own centralised Q-critic; critic {config.critic!r} does "
                "not apply (leave it at auto)"
            )
        self.spec = spec
        self.config = config
        # the actor (with its sharing scheme) as the PPO family builds it; COMA's own critic
        base = build_model(spec, config.replace(critic="local"))
        critic = COMACritic(
            obs_dim=spec.obs_dim, state_dim=spec.state_dim, num_agents=spec.num_agents,
            num_actions=int(spec.action.n), hidden=(*config.critic_encoder_hidden,
            *config.critic_hidden), activation=config.activation,
        ).to(config.device)  # fmt: skip
        self.model = ActorCritic(
            base.actor, critic, base.sharing, norm_value=config.norm_value, team_value=False,
            needs_state=spec.state_dim > 0,
        ).to(config.device)  # fmt: skip
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
        config, model, spec = self.config, self.model, self.spec
        tick = time.perf_counter()
        if config.anneal_lr:
            frac = 1.0 - (iteration - 1) / num_iterations
            for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = frac * base_lr
        model.sharing.before_iteration(iteration, model)
        rollout = collect_rollout(
            env, model, steps=self.rollout_steps, generator=generator,
            seed=iteration_seed(config.seed, iteration), warm_obs_norm=iteration == 1,
            with_values=False,
        )  # fmt: skip
        check_rollout(rollout, iteration)
        sharing_stats = model.sharing.after_rollout(rollout, model)
        self.constraint.observe(rollout, model)
        rollout_s = time.perf_counter() - tick

        n, a = spec.num_agents, int(spec.action.n)
        team = rollout.rewards[..., 0] if spec.reward == "team" else rollout.rewards.sum(-1)
        rewards = team.unsqueeze(-1).expand_as(rollout.rewards)  # every agent: the team reward
        joint = nn.functional.one_hot(rollout.actions, a).to(torch.float32)  # (T, E, N, A)
        steps, copies = joint.shape[:2]
        parts = [] if rollout.state is None else [rollout.state]
        state_and_actions = torch.cat([*parts, joint.reshape(steps, copies, n * a)], dim=-1)
        groups = model.groups(rollout.obs.device)
        with torch.no_grad():
            obs_norm = model.actor.obs_norm(rollout.obs)
            q_all = model.value_norm.denormalize(
                model.critic.q_values(obs_norm, rollout.state, joint)
            )  # (T, E, N, A)
            q_taken = (q_all * joint).sum(-1)
            logits = masked_logits(model.actor(rollout.obs, groups), rollout.masks)
            probs = torch.softmax(logits, dim=-1)
            last_q = self._bootstrap(rollout, generator)
        _, targets = compute_gae(
            rewards, q_taken, rollout.dones, last_q, config.gamma, config.gae_lambda
        )  # TD(lambda) targets of Q (GAE on Q)
        advantages = counterfactual_advantage(targets, q_all, probs)
        advantages = self.transform_advantages(
            advantages, rollout, iteration, num_iterations, generator
        )
        advantages = self.constraint.shape_advantage(advantages, rollout, model)
        batch = dataclasses.replace(rollout, state=state_and_actions, values=q_taken)
        stats = ppo_update(model, self.optimizer, batch, advantages, targets, config, generator)
        constraint_stats = self.constraint.update(iteration)
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

    @torch.no_grad()
    def _bootstrap(self, rollout: Any, generator: torch.Generator) -> torch.Tensor:
        """``Q_i(s_T, u_T)`` ``(E, N)`` after the last step, ``u_T`` drawn from the policies
        (0 where the last step ended the episode: nothing is bootstrapped there)."""
        model = self.model
        if bool(rollout.dones[-1].all()) or rollout.final_obs is None:
            return torch.zeros(rollout.dones.shape[1:], device=rollout.dones.device)
        groups = model.groups(rollout.final_obs.device)
        action, _ = model.actor.sample(rollout.final_obs, groups, generator, rollout.final_mask)
        joint = nn.functional.one_hot(action, int(self.spec.action.n)).to(torch.float32)
        q = model.critic.q_values(
            model.actor.obs_norm(rollout.final_obs), rollout.final_state, joint
        )
        return model.value_norm.denormalize((q * joint).sum(-1))


def _build(spec: EnvSpec, config: Any, constraint: Constraint | None) -> COMAAlgorithm:
    return COMAAlgorithm(spec, config, constraint)


ALGORITHMS["coma"] = AlgorithmInfo(
    "coma",
    "ppo",
    "COMA: a centralised Q-critic and the counterfactual baseline (discrete actions)",
    discrete=True,
    continuous=False,
    needs_state=True,
    on_policy=True,
    default_critic="state",
    builder=_build,
)
