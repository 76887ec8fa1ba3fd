"""The PPO family (IPPO, MAPPO) written once: the model and the clipped update.

Paper 000 (section 3, Algorithm 1) trains PPO with GAE (Eq. 3-4), the clipped surrogate (Eq. 5-6)
and a squared-error critic (Eq. 7), gamma = 0.99, lambda = 0.95, epsilon = 0.2. marra runs it as
multi-agent PPO on the environment contract:

- every agent has a policy pi_{g(i)}(a_i | o_i) with the parameters of its group g(i) under the
  sharing scheme (:mod:`marra.rl.sharing`); discrete actions are categorical with masks,
  continuous ones Gaussian;
- ``algo="ippo"``: each agent's critic V_i(o_i) sees only its own observation, one advantage
  per agent from its own rewards (the team reward where the environment has one);
- ``algo="mappo"``: a centralised critic (CTDE). With a team reward it is one value V(s) per
  state and one team advantage shared by the agents of that state; with per-agent rewards it
  gives each agent its own value V_i(s, o_i);
- the ratio in Eq. 5 is taken per agent, r_i = pi(a_i|o_i) / pi_old(a_i|o_i), each multiplied by
  that agent's advantage and clipped on its own, then averaged over agents (as in MAPPO). The
  joint ratio prod_i r_i of many agents would clip nearly every sample and stall learning.

The rollout is in :mod:`marra.rl.rollout`, the training loop in :mod:`marra.rl.loop`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from marra.envs.base import EnvSpec

from .config import ALGORITHMS, PPOConfig
from .networks import Actor, AgentIdentity, Critic, ValueNorm
from .rollout import Rollout
from .sharing import SharingScheme, make_sharing

__all__ = [
    "ActorCritic",
    "build_model",
    "resolve_critic",
    "sharing_options",
    "build_agent",
    "ppo_update",
    "check_compatible",
    "CompatibilityError",
    "TrainingError",
    "action_scaling",
]


class TrainingError(ValueError):
    """Training produced non-finite numbers (rewards, losses or parameters) and was stopped.

    The last checkpoint written before the failure is kept; no policy file is written.
    """


class CompatibilityError(ValueError):
    """An algorithm, sharing scheme and environment that do not go together."""


def check_compatible(config: PPOConfig, spec: EnvSpec) -> None:
    """One clear error when ``config``'s algorithm cannot train on an environment with ``spec``.

    Raises:
        CompatibilityError: naming the algorithm, the environment and what is missing.
    """
    info = ALGORITHMS[config.algo]
    kind = spec.action.kind
    if kind == "discrete" and not info.discrete:
        raise CompatibilityError(
            f"algo {config.algo!r} supports continuous actions only; {spec.name} has discrete "
            "actions"
        )
    if kind == "continuous" and not info.continuous:
        raise CompatibilityError(
            f"algo {config.algo!r} supports discrete actions only; {spec.name} has continuous "
            "actions"
        )
    if config.critic_kind == "state" and spec.state_dim < 1:
        raise CompatibilityError(f"critic 'state' needs env.state(); {spec.name} has none")


def action_scaling(config: PPOConfig, spec: EnvSpec) -> tuple[float, float]:
    """``(center, scale)`` of Gaussian actions: the environment receives ``center + scale * a``."""
    action = spec.action
    if action.is_discrete:
        return 0.0, 1.0
    low, high = float(action.low), float(action.high)
    bounded = math.isfinite(low) and math.isfinite(high)
    center = (low + high) / 2.0 if bounded else 0.0
    if config.action_scale is not None:
        return center, float(config.action_scale)
    hint = getattr(spec, "action_scale", None)
    if hint is not None:
        return center, float(hint)
    return center, (high - low) / 2.0 if bounded else 1.0


class ActorCritic(nn.Module):
    """The trained parameters of one run: ``actor``, ``critic``, the ``value_norm`` statistics,
    and the ``sharing`` scheme that maps agents to parameter groups."""

    def __init__(
        self,
        actor: Actor,
        critic: Critic,
        sharing: SharingScheme,
        *,
        norm_value: bool,
        team_value: bool,
        needs_state: bool,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.critic = critic
        self.sharing = sharing
        self.value_norm = ValueNorm(enabled=norm_value)
        self.team_value = bool(team_value)
        self.needs_state = bool(needs_state)

    def groups(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        return self.sharing.groups(device)

    def critic_value(
        self, obs: torch.Tensor, state: torch.Tensor | None, groups: torch.Tensor | None
    ) -> torch.Tensor:
        """The critic on raw ``obs`` (normalised by the actor's :class:`ObsNorm`), in normalised
        value units: ``(...,)`` with a team value, else ``(..., N)``."""
        return self.critic(self.actor.obs_norm(obs), state, groups)

    def value(
        self, obs: torch.Tensor, state: torch.Tensor | None, groups: torch.Tensor | None
    ) -> torch.Tensor:
        """V in reward units."""
        return self.value_norm.denormalize(self.critic_value(obs, state, groups))

    def value_loss(
        self,
        obs: torch.Tensor,
        state: torch.Tensor | None,
        groups: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """The critic's regression loss on raw ``obs`` and normalised targets (paper 000 Eq. 7;
        PSA: the mean of its two critics' losses, :meth:`Critic.value_loss`)."""
        return self.critic.value_loss(self.actor.obs_norm(obs), state, groups, targets)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key, value in self.sharing.state_dict().items():
            if value is not None:
                state[f"{prefix}sharing.{key}"] = value
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        sharing = {
            k[len("sharing.") :]: v for k, v in state_dict.items() if k.startswith("sharing.")
        }
        rest = {k: v for k, v in state_dict.items() if not k.startswith("sharing.")}
        if sharing:
            self.sharing.load_state_dict(sharing)
        return super().load_state_dict(rest, strict=strict, assign=assign)


#: The config fields a sharing scheme may read (:func:`sharing_options`).
SHARING_FIELDS = (
    "id_onehot_max", "id_embedding_dim", "num_groups", "seps_pretrain_steps", "dyps_ablation",
    "dyps_selector_lr", "dyps_selector_reward", "seed", "device",
)  # fmt: skip


def sharing_options(config: Any, spec: EnvSpec) -> dict[str, Any]:
    """The options of :func:`~marra.rl.sharing.make_sharing` from any learner's config (a field
    the config lacks takes :class:`PPOConfig`'s default), plus the environment's ``spec``."""
    defaults = PPOConfig()
    options = {name: getattr(config, name, getattr(defaults, name)) for name in SHARING_FIELDS}
    options["spec"] = spec
    return options


def resolve_critic(config: PPOConfig, spec: EnvSpec) -> PPOConfig:
    """``config`` with ``critic="auto"`` replaced by the environment's hint ``spec.critic`` for
    MAPPO (the hospital: ``"pool"``); every other config unchanged. The resolved critic is what
    the checkpoint and the policy file record."""
    hint = getattr(spec, "critic", None)
    if hint is None or getattr(config, "algo", None) != "mappo" or config.critic != "auto":
        return config
    return config.replace(critic=hint)


def build_model(spec: EnvSpec, config: PPOConfig) -> ActorCritic:
    """The actor-critic that ``config`` describes for an environment with ``spec``.

    Raises:
        CompatibilityError: see :func:`check_compatible`; also sharing ``psa`` with the
            ``pool`` critic (PSA needs per-agent critics).
    """
    config = resolve_critic(config, spec)
    check_compatible(config, spec)
    n = spec.num_agents
    sharing = make_sharing(config.sharing, n, **sharing_options(config, spec))
    if sharing.shared_critic and config.critic_kind == "pool":
        raise CompatibilityError(
            f"sharing {config.sharing!r} gives every agent its own critic next to a shared one; "
            "the 'pool' critic has no per-agent parameters (use critic 'local' or 'state')"
        )
    action = spec.action
    center, scale = action_scaling(config, spec)
    actor = Actor(
        spec.obs_dim,
        action_kind=action.kind,
        action_dim=int(action.n) if action.is_discrete else int(action.dim),
        hidden=config.actor_hidden,
        num_groups=sharing.num_groups,
        identity=AgentIdentity(sharing.identity, n, sharing.id_dim or 16),
        activation=config.activation,
        obs_norm=config.obs_norm,
        init_log_std=config.init_log_std,
        action_scale=scale,
        action_center=center,
    )
    kind = config.critic_kind
    team_value = spec.reward == "team" and kind != "local" and not sharing.shared_critic
    critic = Critic(
        spec.obs_dim,
        spec.state_dim,
        kind=kind,
        per_agent=not team_value,
        hidden=config.critic_hidden,
        encoder_hidden=config.critic_encoder_hidden,
        num_groups=sharing.num_groups,
        identity=AgentIdentity(sharing.identity, n, sharing.id_dim or 16),
        activation=config.activation,
        shared_head=sharing.shared_critic,
    )
    return ActorCritic(
        actor, critic, sharing, norm_value=config.norm_value, team_value=team_value,
        needs_state=kind == "state",
    ).to(config.device)  # fmt: skip


def build_agent(obs_dim: int, config: PPOConfig) -> ActorCritic:
    """The model of marra 0.1's hospital learner for observations of ``obs_dim`` features (one
    continuous action per agent, a team reward): kept for old scripts; use :func:`build_model`."""
    from marra.envs.base import ActionSpec

    spec = EnvSpec(
        name="hospital", num_agents=1, agent_ids=("hospital_0",), obs_dim=obs_dim,
        state_dim=11 + 6, action=ActionSpec.continuous(1, -100.0, 100.0), horizon=50,
        reward="team", action_scale=10.0,
    )  # fmt: skip
    return build_model(spec, config)


def ppo_update(
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    config: PPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """K epochs of minibatch updates on one rollout; returns the iteration's loss statistics.

    ``advantages`` and ``returns`` are ``(T, E)`` (a team critic: one advantage per state,
    shared by its agents) or ``(T, E, N)`` (one per agent). Advantages are normalised over every
    entry. A sample is one environment state with all its agents, so a centralised critic always
    sees a whole state.

    Loss per minibatch (minimised):
        ``- L^CLIP + vf_coef * L^VF - ent_coef * H``, where
        L^CLIP = mean_{s,i} min(r_i A_{s,i}, clip(r_i, 1-eps, 1+eps) A_{s,i})   # paper 000 Eq. (5)
        r_i = exp(log pi(a_i|o_i) - log pi_old(a_i|o_i)), one ratio per agent i,
        L^VF = 0.5 mean_s (V(s) - R_s)^2                                       # paper 000 Eq. (7)
        (sharing ``psa``: the mean of L^VF over its two critics, :meth:`ActorCritic.value_loss`)
    and one Adam step on it (Eq. 6 for the actor, Eq. 7 for the critic), after clipping the
    actor's and the critic's gradient norms separately to ``max_grad_norm``.

    Raises:
        TrainingError: when a loss or, after the update, a parameter is not finite.
    """
    # flatten (T, E) into one batch of B states
    obs = rollout.obs.flatten(0, 1)  # (B, N, obs_dim)
    state = None if rollout.state is None else rollout.state.flatten(0, 1)  # (B, state_dim)
    masks = None if rollout.masks is None else rollout.masks.flatten(0, 1)  # (B, N, n)
    actions = rollout.actions.flatten(0, 1)  # (B, N) or (B, N, dim)
    old_log_probs = rollout.log_probs.flatten(0, 1)  # (B, N)
    old_values = rollout.values.flatten(0, 1)  # (B,) or (B, N)
    advantages = advantages.flatten(0, 1)  # (B,) team or (B, N) per agent
    returns = returns.flatten(0, 1)  # like advantages
    if config.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    model.value_norm.update(returns)
    value_targets = model.value_norm.normalize(returns)
    groups = model.groups(obs.device)

    batch_size = obs.shape[0]
    minibatch_size = math.ceil(batch_size / config.num_minibatches)
    actor_params = list(model.actor.parameters())
    critic_params = list(model.critic.parameters())
    totals = dict.fromkeys(("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"), 0.0)
    updates = 0
    for epoch in range(config.update_epochs):
        order = torch.randperm(batch_size, generator=generator).to(obs.device)
        epoch_kl = 0.0
        for start in range(0, batch_size, minibatch_size):
            idx = order[start : start + minibatch_size]
            mb_mask = None if masks is None else masks[idx]
            new_log_probs, entropy = model.actor.evaluate(obs[idx], groups, actions[idx], mb_mask)
            log_ratio = new_log_probs - old_log_probs[idx]  # (mb, N)
            ratio = log_ratio.exp()
            advantage = advantages[idx]  # (mb, N) per agent, or (mb,) team:
            if advantage.ndim == 1:
                advantage = advantage.unsqueeze(-1)  # (mb, 1): every agent shares it

            # clipped surrogate, paper 000 Eq. (5), as a loss to minimise
            surrogate = advantage * ratio
            clipped = advantage * ratio.clamp(1.0 - config.clip_coef, 1.0 + config.clip_coef)
            policy_loss = -torch.min(surrogate, clipped).mean()
            # critic regression onto the returns, paper 000 Eq. (7)
            mb_state = None if state is None else state[idx]
            value_loss = model.value_loss(obs[idx], mb_state, groups, value_targets[idx])
            loss = policy_loss - config.ent_coef * entropy + config.vf_coef * value_loss
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss in epoch {epoch + 1} (policy_loss={policy_loss.item()}, "
                    f"value_loss={value_loss.item()}); lower learning_rate / "
                    "critic_learning_rate or check the environment's reward scale"
                )

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(actor_params, config.max_grad_norm)
            nn.utils.clip_grad_norm_(critic_params, config.max_grad_norm)
            optimizer.step()

            with torch.no_grad():  # http://joschu.net/blog/kl-approx.html estimator k3
                approx_kl = ((ratio - 1.0) - log_ratio).mean().item()
                clipfrac = ((ratio - 1.0).abs() > config.clip_coef).float().mean().item()
            epoch_kl = max(epoch_kl, approx_kl)
            for key, value_ in (
                ("policy_loss", policy_loss.item()),
                ("value_loss", value_loss.item()),
                ("entropy", entropy.item()),
                ("approx_kl", approx_kl),
                ("clipfrac", clipfrac),
            ):
                totals[key] += value_
            updates += 1
        if config.target_kl is not None and epoch_kl > config.target_kl:
            break

    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise TrainingError(f"parameter {name!r} became non-finite during the update")
    stats = {key: value / updates for key, value in totals.items()}
    var_returns = returns.var().item()
    stats["explained_variance"] = (
        1.0 - (returns - old_values).var().item() / var_returns if var_returns > 0 else float("nan")
    )
    if not model.actor.discrete:
        stats["log_std"] = model.actor.log_std.mean().item()
    return stats
