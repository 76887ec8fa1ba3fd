"""MADDPG on the training loop: deterministic actors, centralised critics on the state and the
joint action, target networks, Gaussian exploration (Lowe et al. 2017).

- Actor ``mu_{g(i)}(o_i) = tanh(f_{g(i)}(o_i))`` per agent (policy units in ``[-1, 1]``,
  parameters per the sharing scheme); the environment receives ``center + scale * a`` with the
  action range's centre and half-width, so every policy action lies in the range.
- Critic, centralised: with a team reward one ``Q(s, a_1..a_N)`` on ``env.state()`` and the
  joint action; with per-agent rewards ``Q_i(s, a_1..a_N, o_i)`` (plus the identity features of
  the sharing scheme), one per agent's group.
- Critic target ``y = r + gamma (1 - d) Q'(s', mu'(o'))`` from the target actor and critic;
  squared error.
- Actor step: maximise ``Q(s, a)`` with ``a`` the current policy's joint action in which only
  agent ``i``'s own action carries agent ``i``'s gradient (the other agents' actions are the
  current policy's, detached, as in MAPDN's ``models/maddpg.py``; the original paper uses the
  replayed actions of the other agents).
- Targets track the online networks by Polyak averaging with ``tau``; exploration adds
  Gaussian noise of ``exploration_noise`` (policy units) and clips to the range; the first
  ``learning_starts`` env-steps act uniformly at random.

The saved policy is the deterministic actor (``act``: ``center + scale * mu(o)``); the policy
file records it as a continuous actor with ``squash = "tanh"``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from marra.envs.base import EnvSpec, MultiAgentEnv

from .algorithm import Algorithm, Constraint
from .config import ALGORITHMS, AlgorithmInfo
from .networks import Actor, AgentIdentity, GroupedMLP, ObsNorm, mlp
from .ppo import CompatibilityError, TrainingError
from .qlearning import (
    SharingStateMixin,
    _check_run_fields,
    _ConfigMixin,
    _positive_int,
    _widths,
    check_fixed_groups,
    check_replay_memory,
    replay_constraint,
    standardise,
)
from .replay import EpisodeBuffer, buffer_bytes, check_segment, collect_segment, gradient_steps
from .rollout import iteration_seed
from .sharing import make_sharing

__all__ = ["MADDPGConfig", "DeterministicActor", "JointCritic", "MADDPGModel", "MADDPG"]


@dataclass(frozen=True)
class MADDPGConfig(_ConfigMixin):
    """Every hyperparameter of MADDPG (``algo="maddpg"``).

    One iteration resets ``num_envs`` copies and runs the exploring policy for ``rollout_steps``
    steps (default: one whole episode), stores the episodes, then (once ``learning_starts``
    env-steps are stored) takes ``ceil(replay_ratio x env-steps / batch_size)`` gradient steps,
    each one critic step and one actor step.
    """

    # --- algorithm ---------------------------------------------------------------------------
    algo: str = "maddpg"
    """``"maddpg"``."""
    sharing: str = "full"
    """Parameter sharing of the actors and the per-agent critics: ``"none"``, ``"full"``,
    ``"id"``."""

    # --- run (as PPOConfig) --------------------------------------------------------------------
    seed: int = 1
    """Seed of everything."""
    total_steps: int = 200_000
    """Env-steps to train for (one env-step = one step of one copy)."""
    num_envs: int = 16
    """Environment copies stepped together."""
    rollout_steps: int | None = None
    """Steps per copy per iteration; None: the environment's horizon."""
    device: str = "cpu"
    """Torch device of the networks, the environment and the replay buffer."""
    torch_threads: int | None = 1
    """``torch.set_num_threads`` during training (None leaves it alone)."""
    checkpoint_every: int = 10
    """Write ``checkpoint.pt`` (with the replay buffer) every this many iterations."""

    # --- learning -------------------------------------------------------------------------------
    gamma: float = 0.99
    """Discount factor."""
    actor_learning_rate: float = 5e-4
    """Adam step size of the actors."""
    critic_learning_rate: float = 1e-3
    """Adam step size of the critics."""
    tau: float = 0.01
    """Polyak factor of the target networks: ``target <- (1 - tau) target + tau online`` after
    every gradient step."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip, for the actors and the critics separately."""
    reward_normalisation: bool = False
    """Standardise the rewards of every sampled batch before the critic targets (MAPDN's
    ``reward_normalisation``)."""
    buffer_episodes: int = 500
    """Replay capacity in segments (whole episodes by default) of one copy."""
    batch_size: int = 256
    """Transitions per gradient step."""
    learning_starts: int = 2000
    """Env-steps of uniformly random actions stored before the first gradient step."""
    replay_ratio: float = 2.0
    """How often each collected transition is sampled on average."""
    exploration_noise: float = 0.1
    """Standard deviation of the Gaussian exploration noise, in policy units (the action range
    is ``[-1, 1]`` there)."""
    action_l2: float = 1e-3
    """Weight of the mean squared pre-``tanh`` output in the actor's loss (the regulariser of
    the MADDPG authors' code, 1e-3): keeps the actors out of ``tanh``'s flat ends, where their
    gradient vanishes."""

    # --- networks -------------------------------------------------------------------------------
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the actors."""
    critic_hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the critics."""
    activation: str = "relu"
    """Hidden activation."""
    obs_norm: bool = True
    """Normalise observations and the critics' state by the statistics of the experience
    collected before learning starts (then frozen)."""
    id_onehot_max: int = 64
    """``sharing="id"``: one-hot identities up to this many agents, a learned embedding above."""
    id_embedding_dim: int = 16
    """``sharing="id"``: width of the learned identity embedding."""

    def __post_init__(self) -> None:
        _check_run_fields(self, ("maddpg",))
        for name in ("buffer_episodes", "batch_size", "id_onehot_max", "id_embedding_dim"):
            _positive_int(name, getattr(self, name))
        value = self.learning_starts
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"learning_starts: must be an integer >= 0, got {value!r}")
        for name in ("actor_learning_rate", "critic_learning_rate", "max_grad_norm",
                     "replay_ratio"):  # fmt: skip
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must lie in (0, 1], got {self.tau!r}")
        if not self.action_l2 >= 0.0:
            raise ValueError(f"action_l2: must be >= 0, got {self.action_l2!r}")
        if not self.exploration_noise >= 0.0:
            raise ValueError(f"exploration_noise: must be >= 0, got {self.exploration_noise!r}")
        _widths(self, "hidden")
        _widths(self, "critic_hidden")


class DeterministicActor(Actor):
    """``mu(o) = tanh(f(o))`` in policy units; ``act`` gives ``center + scale * mu(o)``.

    A continuous :class:`~marra.rl.networks.Actor` whose output is squashed by ``tanh``
    (``squash = "tanh"`` in the policy file). Its ``log_std`` (the exploration noise, not
    trained) serves ``LearnedPolicy.act(deterministic=False)``.
    """

    squash = "tanh"

    def pre_activation(self, obs: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        """The network's output before ``tanh``, ``(..., N, action_dim)``."""
        return self.body(self.features(obs), groups)

    def forward(self, obs: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(self.pre_activation(obs, groups))


class JointCritic(nn.Module):
    """The centralised critic: ``Q(s, a)`` with a team reward, ``(...,)``; else
    ``Q_i(s, a, o_i)`` per agent with its group's parameters, ``(..., N)``.

    ``forward(state (..., S), actions (..., N, dim), obs (..., N, obs_dim) normalised, groups,
    own_gradient_only)``: with ``own_gradient_only`` (the actor step) agent ``i``'s value takes
    the gradient of agent ``i``'s action only.
    """

    def __init__(
        self, *, num_agents: int, state_dim: int, obs_dim: int, action_dim: int, team: bool,
        hidden: tuple[int, ...], num_groups: int, identity: AgentIdentity, activation: str,
    ) -> None:  # fmt: skip
        super().__init__()
        self.team, self.num_agents, self.identity = bool(team), int(num_agents), identity
        joint = int(state_dim) + self.num_agents * int(action_dim)
        if self.team:
            self.net: nn.Module = mlp(joint, hidden, 1, out_gain=1.0, activation=activation)
        else:
            self.net = GroupedMLP(joint + int(obs_dim) + identity.width, hidden, 1,
                                  int(num_groups), out_gain=1.0, activation=activation)  # fmt: skip

    def forward(
        self, state: torch.Tensor, actions: torch.Tensor, obs: torch.Tensor,
        groups: torch.Tensor | None, own_gradient_only: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        flat = actions.flatten(-2)  # (..., N * dim)
        if self.team:
            return self.net(torch.cat([state, flat], dim=-1)).squeeze(-1)
        n = self.num_agents
        per_agent = flat.unsqueeze(-2).expand(*flat.shape[:-1], n, flat.shape[-1])
        if own_gradient_only:  # row i: agent i's action with gradient, the others detached
            dim = actions.shape[-1]
            own = torch.eye(n, device=flat.device, dtype=flat.dtype)
            own = own.repeat_interleave(dim, dim=1)  # (N, N * dim)
            detached = per_agent.detach()
            per_agent = detached + own * (per_agent - detached)
        joint = torch.cat(
            [state.unsqueeze(-2).expand(*state.shape[:-1], n, state.shape[-1]), per_agent,
             self.identity.append(obs)], dim=-1,
        )  # fmt: skip
        return self.net(joint, groups).squeeze(-1)


class MADDPGModel(SharingStateMixin):
    """``actor`` (:class:`DeterministicActor`), ``critic`` (:class:`JointCritic`),
    ``state_norm`` and the ``sharing`` scheme."""

    def __init__(self, actor: DeterministicActor, critic: JointCritic, sharing: Any,
                 state_norm: ObsNorm) -> None:  # fmt: skip
        super().__init__()
        self.actor, self.critic, self.sharing, self.state_norm = actor, critic, sharing, state_norm


def _check_maddpg_compatible(config: Any, spec: EnvSpec) -> None:
    if not isinstance(config, MADDPGConfig):
        raise CompatibilityError(
            f"algo {config.algo!r}: configured by marra.rl.MADDPGConfig, not "
            f"{type(config).__name__}"
        )
    action = spec.action
    if action.is_discrete:
        raise CompatibilityError(
            f"algo 'maddpg' supports continuous actions only; {spec.name} has discrete actions "
            "(use iql, vdn, qmix, wqmix, ippo or mappo)"
        )
    if not (math.isfinite(float(action.low)) and math.isfinite(float(action.high))):
        raise CompatibilityError(
            f"algo 'maddpg' needs bounded actions (its actors are squashed into the range); "
            f"{spec.name}'s actions are {action.describe()}"
        )


def build_maddpg_model(spec: EnvSpec, config: MADDPGConfig) -> MADDPGModel:
    """The networks ``config`` describes for an environment with ``spec``.

    Raises:
        CompatibilityError: discrete or unbounded actions, or a config of another family.
    """
    _check_maddpg_compatible(config, spec)
    n, action = spec.num_agents, spec.action
    dim = int(action.dim)
    check_fixed_groups(config.sharing, config.algo)
    sharing = make_sharing(config.sharing, n, id_onehot_max=config.id_onehot_max,
                           id_embedding_dim=config.id_embedding_dim)  # fmt: skip
    low, high = float(action.low), float(action.high)
    actor = DeterministicActor(
        spec.obs_dim, action_kind="continuous", action_dim=dim, hidden=config.hidden,
        num_groups=sharing.num_groups,
        identity=AgentIdentity(sharing.identity, n, sharing.id_dim or 16),
        activation=config.activation, obs_norm=config.obs_norm,
        init_log_std=math.log(max(config.exploration_noise, 1e-6)),
        action_scale=(high - low) / 2.0, action_center=(high + low) / 2.0,
    )  # fmt: skip
    actor.log_std.requires_grad_(False)
    critic = JointCritic(
        num_agents=n, state_dim=spec.state_dim, obs_dim=spec.obs_dim, action_dim=dim,
        team=spec.reward == "team", hidden=config.critic_hidden, num_groups=sharing.num_groups,
        identity=AgentIdentity(sharing.identity, n, sharing.id_dim or 16),
        activation=config.activation,
    )  # fmt: skip
    state_norm = ObsNorm(spec.state_dim, enabled=config.obs_norm)
    return MADDPGModel(actor, critic, sharing, state_norm).to(config.device)


class MADDPG(Algorithm):
    """MADDPG behind the :class:`~marra.rl.algorithm.Algorithm` interface."""

    def __init__(
        self, spec: EnvSpec, config: MADDPGConfig, constraint: Constraint | None = None
    ) -> None:
        _check_maddpg_compatible(config, spec)
        self.spec, self.config = spec, config
        self.constraint = constraint  # as given (the loop checks that it was taken)
        self.signals = replay_constraint(constraint, config.algo)
        self.rollout_steps = int(config.rollout_steps or spec.horizon)
        self.steps_per_iteration = self.rollout_steps * config.num_envs
        if config.buffer_episodes < config.num_envs:
            raise ValueError(
                f"buffer_episodes: {config.buffer_episodes} cannot hold one iteration of "
                f"{config.num_envs} copies"
            )
        dim = int(spec.action.dim)
        nbytes = buffer_bytes(
            capacity=config.buffer_episodes, steps=self.rollout_steps,
            num_agents=spec.num_agents, obs_dim=spec.obs_dim, state_dim=spec.state_dim,
            num_actions=None, action_dim=dim,
        )  # fmt: skip
        check_replay_memory(nbytes, config.device,
                            f"maddpg on {spec.name} ({spec.num_agents} agents)")  # fmt: skip
        self.model = build_maddpg_model(spec, config)
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        actor_params = [p for p in self.model.actor.parameters() if p.requires_grad]
        self.actor_optimizer = torch.optim.Adam(actor_params, lr=config.actor_learning_rate)
        self.critic_optimizer = torch.optim.Adam(
            self.model.critic.parameters(), lr=config.critic_learning_rate
        )
        self.optimizers = [self.actor_optimizer, self.critic_optimizer]
        self.buffer = EpisodeBuffer(
            config.buffer_episodes, self.rollout_steps, num_agents=spec.num_agents,
            obs_dim=spec.obs_dim, state_dim=spec.state_dim, num_actions=None, action_dim=dim,
            device=config.device,
        )  # fmt: skip
        self.updates = 0

    def _explore(self, random_actions: bool, generator: torch.Generator) -> Any:
        model, noise = self.model, self.config.exploration_noise
        actor = model.actor

        def act(obs: torch.Tensor, state: Any, mask: Any) -> tuple[Any, Any]:
            e, n = obs.shape[:2]
            shape = (e, n, actor.action_dim)
            if random_actions:
                a = 2.0 * torch.rand(shape, generator=generator).to(obs.device) - 1.0
            else:
                mu = actor(obs, model.groups(obs.device))
                eps = torch.randn(shape, generator=generator).to(obs.device)
                a = (mu + noise * eps).clamp(-1.0, 1.0)
            return actor.env_action(a), a

        return act

    def iteration(
        self, env: MultiAgentEnv, iteration: int, num_iterations: int, generator: torch.Generator
    ) -> dict[str, Any]:
        config, model = self.config, self.model
        tick = time.perf_counter()
        model.sharing.before_iteration(iteration, model)
        warmup = self.buffer.transitions < config.learning_starts
        with torch.no_grad():
            segment = collect_segment(
                env, self._explore(warmup, generator), steps=self.rollout_steps,
                seed=iteration_seed(config.seed, iteration), with_state=True,
            )  # fmt: skip
        check_segment(segment, iteration)
        if self.signals is not None:  # computed at collection, stored with the episode
            segment.signals = dict(self.signals.signals(segment))
            self.signals.observe(segment)
        sharing_stats = model.sharing.after_rollout(segment, model)
        self.buffer.add(segment)
        if self.updates == 0:  # statistics of the experience before learning, then frozen
            model.actor.obs_norm.update(segment.obs)
            assert segment.state is not None
            model.state_norm.update(segment.state)
            self.target.load_state_dict(model.state_dict())
        rollout_s = time.perf_counter() - tick
        stats: dict[str, float] = {}
        if self.buffer.transitions >= max(config.learning_starts, 1):
            count = gradient_steps(config.replay_ratio, self.steps_per_iteration,
                                   config.batch_size)  # fmt: skip
            totals: dict[str, float] = {}
            for _ in range(count):
                for key, value in self.update(generator).items():
                    totals[key] = totals.get(key, 0.0) + value
            stats = {key: value / count for key, value in totals.items()}
            stats["gradient_steps"] = float(count)
        constraint_stats = self.signals.update(iteration) if self.signals else {}
        return {
            "rollout_s": rollout_s,
            "update_s": time.perf_counter() - tick - rollout_s,
            **segment.metrics,
            **stats,
            **sharing_stats,
            **constraint_stats,
            "exploring_uniformly": float(warmup),
            "buffer_episodes": float(len(self.buffer)),
            "learning_rate": config.actor_learning_rate,
        }

    def update(self, generator: torch.Generator) -> dict[str, float]:
        """One critic step and one actor step on a sampled batch."""
        config, model, target = self.config, self.model, self.target
        batch = self.buffer.sample(config.batch_size, generator)
        rewards = batch.rewards
        if self.signals is not None:
            rewards = self.signals.shape_rewards(rewards, batch)
        if config.reward_normalisation:
            rewards = standardise(rewards)
        team = model.critic.team
        groups = model.groups(batch.obs.device)
        assert batch.state is not None and batch.next_state is not None
        state, next_state = model.state_norm(batch.state), model.state_norm(batch.next_state)
        obs = model.actor.obs_norm(batch.obs)
        next_obs = model.actor.obs_norm(batch.next_obs)
        not_done = 1.0 - batch.dones
        with torch.no_grad():
            next_action = target.actor(batch.next_obs, groups)
            q_next = target.critic(next_state, next_action, next_obs, groups)
            if team:
                targets = rewards.mean(-1) + config.gamma * not_done * q_next
            else:
                targets = rewards + config.gamma * not_done.unsqueeze(-1) * q_next
        q = model.critic(state, batch.actions, obs, groups)
        critic_loss = 0.5 * ((q - targets) ** 2).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        nn.utils.clip_grad_norm_(model.critic.parameters(), config.max_grad_norm)
        self.critic_optimizer.step()

        pre = model.actor.pre_activation(batch.obs, groups)
        policy_action = torch.tanh(pre)
        q_policy = model.critic(state, policy_action, obs, groups, own_gradient_only=not team)
        actor_loss = -q_policy.mean() + config.action_l2 * pre.square().mean()
        if not (torch.isfinite(critic_loss) and torch.isfinite(actor_loss)):
            raise TrainingError(
                f"non-finite loss at gradient step {self.updates + 1} (critic "
                f"{critic_loss.item()}, actor {actor_loss.item()}); lower the learning rates or "
                "check the environment's reward scale"
            )
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        nn.utils.clip_grad_norm_(model.actor.parameters(), config.max_grad_norm)
        self.actor_optimizer.step()
        model.critic.zero_grad(set_to_none=True)  # the actor step's gradients on the critic
        self.updates += 1
        with torch.no_grad():  # Polyak averaging of the targets
            for online, slow in zip(model.parameters(), target.parameters(), strict=True):
                slow.lerp_(online, config.tau)
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "q_mean": q.detach().mean().item(),
            "action_abs": policy_action.detach().abs().mean().item(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "target": self.target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "updates": self.updates,
            "constraint": self.signals.state_dict() if self.signals else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.target.load_state_dict(state["target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.updates = int(state["updates"])
        if self.signals is not None:
            self.signals.load_state_dict(state.get("constraint", {}))


def build_maddpg(spec: EnvSpec, config: Any, constraint: Constraint | None) -> MADDPG:
    """The :data:`~marra.rl.config.ALGORITHMS` builder of maddpg."""
    return MADDPG(spec, config, constraint)


ALGORITHMS["maddpg"] = AlgorithmInfo(
    "maddpg", "ddpg",
    "MADDPG: deterministic actors, centralised critics on env.state() and the joint action",
    discrete=False, continuous=True, needs_state=True, on_policy=False, default_critic="state",
    builder=build_maddpg, config_cls=MADDPGConfig,
)  # fmt: skip

__all__ += ["build_maddpg", "build_maddpg_model"]
