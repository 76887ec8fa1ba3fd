"""FEN, the Fair-Efficient Network (Jiang and Lu 2019): a hierarchical learner whose controller
picks one of several sub-policies every ``period`` steps and is rewarded for fair efficiency.
``--algo fen``.

Each agent ``i`` has a controller ``pi_c(z | o_i, rat_i, utili_i)`` over ``signals`` (4)
sub-policies ``pi_z(a | o_i)``. The rules follow the FEN/SOTO authors' code (``FEN-FD.py`` and
``FEN-CLDE.py`` of ``matthieu637/DFRL``):

- at every in-episode step ``k`` with ``k % period == 0`` the controller draws ``z``; the agent
  acts with ``pi_z`` until the next draw (``period`` 50 in Matthew, 25 in Job);
- after every step, each agent's average reward so far ``u_bar_i = (sum of its rewards) / k``
  and an estimate ``avg_i`` of the team mean of ``u_bar``: by gossip (``gossip_rounds`` rounds,
  default 10, in which every agent averages its estimate with ``gossip_peers`` (3) uniformly
  drawn agents' estimates, ``avg_i <- 0.02 avg_i + 0.98 (avg_i + sum_peers) / 4 + U(-5e-5,
  5e-5)``), or the exact mean with ``gossip_rounds = 0`` (the CLDE variant). Then
  ``rat_i = (u_bar_i - avg_i) / avg_i`` (0 when ``avg_i = 0``) and ``utili_i = min(1, avg_i /
  max_u)`` (``max_u`` 0.15 in Matthew, 0.25 in Job; None: ``avg_i``);
- the controller's reward at the end of every full period is the fair-efficient reward
  ``r_hat_i = utili_i / (0.1 + |rat_i|)`` (FEN, Eq. 3), learned without bootstrapping (the
  original's ``meta_skip_etrace``: the target is ``r_hat`` itself); a period the episode cuts
  short gets no reward and is not learned, as in the original;
- sub-policy 0 learns the environment reward; sub-policy ``z > 0`` learns the "information"
  reward ``pi_c(z | o'_i, rat'_i, utili'_i)``, the controller's probability of the active signal
  after the step (the original's ``r_p = p_z[signal]``), which makes the sub-policies diverse;
- each sub-policy learns only from its own periods: GAE runs within a period and bootstraps at
  the period's end from the same sub-policy's value of the next observation (the original
  updates ``Pi[i][z]`` on each period with ``V[i][z]``).

Both levels are updated once per iteration with :func:`marra.rl.ppo_update` (the PPO math is in
one place): the sub-policies see the observation with the active signal appended (their actor
and critic evaluate every sub-policy of every agent in one grouped call and keep the active
one), the controller sees its decision points. Sub-policies (and the controller) follow the
sharing scheme: ``none`` (one network per agent and sub-policy, as the original) or ``full``
(one network per sub-policy).

Where marra differs from the original, and why: the gossip rounds update every agent at once
(the original updates agents one after another within a round, so later agents see earlier
agents' new estimates); the updates come once per iteration instead of once per period; the
networks are the PPO family's (sizes from the config). A :class:`~marra.rl.algorithm.Constraint`
(ELD) shapes the sub-policies' advantages (the per-step ones, FD form by default).

``policy.pt`` holds the sub-policies as one grouped actor with every agent on sub-policy 0 (what
a plain policy file can describe); ``marra evaluate`` on a FEN run plays the whole hierarchy
from the run's ``checkpoint.pt`` (:func:`load_fen_runner`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from marra.envs.base import ActionSpec, EnvSpec, MultiAgentEnv

from .algorithm import Algorithm, Constraint, check_rollout
from .config import ALGORITHMS, AlgorithmInfo, PPOConfig
from .networks import Actor, AgentIdentity, Critic, ObsNorm, masked_logits
from .ppo import ActorCritic, CompatibilityError, build_model, ppo_update
from .rollout import EpisodeStats, Rollout, compute_gae, iteration_seed
from .sharing import SharingScheme

__all__ = [
    "FENConfig",
    "FENAlgorithm",
    "FENModel",
    "FENRunner",
    "fair_efficient_reward",
    "gossip_mean",
    "load_fen_runner",
]


@dataclass(frozen=True)
class FENConfig(PPOConfig):
    """:class:`~marra.rl.PPOConfig` plus FEN's settings (module docstring)."""

    algo: str = "fen"  # type: ignore[assignment]
    sharing: str = "none"
    period: int = 50
    """T: steps between two controller decisions (the original: 50 Matthew, 25 Job)."""
    signals: int = 4
    """Sub-policies per agent (the original's ``n_signal``)."""
    max_u: float | None = 0.15
    """``utili = min(1, avg / max_u)`` (the original: 0.15 Matthew, 0.25 Job); None: ``avg``."""
    gossip_rounds: int = 10
    """Gossip rounds per step estimating the team's mean utility; 0: the exact mean (CLDE)."""
    gossip_peers: int = 3
    """Agents each agent hears from in one gossip round."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("period", "signals", "gossip_peers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        value = self.gossip_rounds
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"gossip_rounds: must be an integer >= 0, got {value!r}")
        if self.max_u is not None and not (math.isfinite(self.max_u) and self.max_u > 0):
            raise ValueError(f"max_u: must be > 0 or None, got {self.max_u!r}")
        if self.sharing not in ("none", "full"):
            raise ValueError(f"sharing: FEN supports 'none' or 'full', got {self.sharing!r}")


# --------------------------------------------------------------------------- the FEN rules
def gossip_mean(
    u_bar: torch.Tensor, rounds: int, peers: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Every agent's estimate of the mean of ``u_bar (E, N)`` after ``rounds`` gossip rounds
    (module docstring); ``rounds = 0``: the exact mean."""
    if rounds == 0:
        return u_bar.mean(dim=-1, keepdim=True).expand_as(u_bar).clone()
    e, n = u_bar.shape
    avg = u_bar.to(torch.float64)
    for _ in range(rounds):
        heard = torch.randint(0, n, (e, n * peers), generator=generator).to(u_bar.device)
        total = avg.gather(1, heard).view(e, n, peers).sum(-1)
        noise = torch.rand((e, n), generator=generator, dtype=torch.float64).to(u_bar.device)
        avg = avg * 0.02 + (avg + total) / (peers + 1) * 0.98 + (noise - 0.5) * 1e-4
    return avg


def fair_efficient_reward(
    u_bar: torch.Tensor, avg: torch.Tensor, max_u: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rat, utili, r_hat)`` ``(E, N)``: ``rat = (u_bar - avg) / avg`` (0 where ``avg = 0``),
    ``utili = min(1, avg / max_u)`` and the controller's reward ``utili / (0.1 + |rat|)``."""
    safe = torch.where(avg != 0, avg, torch.ones_like(avg))
    rat = torch.where(avg != 0, (u_bar - avg) / safe, torch.zeros_like(avg))
    utili = avg if max_u is None else torch.clamp(avg / max_u, max=1.0)
    return rat, utili, utili / (0.1 + rat.abs())  # FEN (Jiang and Lu 2019), Eq. 3


class _Tracker:
    """Per-copy episode statistics the controller observes: rewards so far, steps so far, and
    the resulting ``rat``, ``utili`` (reset where an episode ends)."""

    def __init__(self, e: int, n: int, device: torch.device, config: FENConfig) -> None:
        self.config = config
        self.total = torch.zeros((e, n), dtype=torch.float64, device=device)
        self.steps = torch.zeros((e, 1), dtype=torch.float64, device=device)
        self.rat = torch.zeros((e, n), dtype=torch.float64, device=device)
        self.utili = torch.zeros((e, n), dtype=torch.float64, device=device)

    def step(self, reward: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Take in a step's rewards; returns the fair-efficient reward ``r_hat (E, N)``."""
        self.total = self.total + reward.to(torch.float64)
        self.steps = self.steps + 1.0
        u_bar = self.total / self.steps
        avg = gossip_mean(u_bar, self.config.gossip_rounds, self.config.gossip_peers, generator)
        self.rat, self.utili, r_hat = fair_efficient_reward(u_bar, avg, self.config.max_u)
        return r_hat

    def reset(self, done: torch.Tensor) -> None:
        keep = (~done).to(torch.float64).unsqueeze(-1)
        self.total, self.steps = self.total * keep, self.steps * keep
        self.rat, self.utili = self.rat * keep, self.utili * keep

    def features(self) -> torch.Tensor:
        """``(E, N, 2)`` float32: ``rat``, ``utili``."""
        return torch.stack((self.rat, self.utili), dim=-1).to(torch.float32)


# --------------------------------------------------------------------------- the networks
class _BankSharing(SharingScheme):
    """The groups of the sub-policy bank: the bank's virtual agents are (agent ``i``, signal
    ``z``) at index ``i * K + z``; ``none``: one group each, ``full``: one group per signal."""

    name = "fen-bank"

    def __init__(self, num_agents: int, signals: int, per_agent: bool) -> None:
        super().__init__(num_agents * signals)
        self.num_groups = num_agents * signals if per_agent else signals
        self._groups = None if per_agent else torch.arange(num_agents * signals) % signals


class _PolicySharing(SharingScheme):
    """What ``policy.pt`` records: every agent on its sub-policy 0."""

    def __init__(self, name: str, num_agents: int, signals: int, num_groups: int) -> None:
        super().__init__(num_agents)
        self.name = name  # type: ignore[misc]
        self.num_groups = num_groups
        per_agent = name == "none"
        index = torch.arange(num_agents) * signals if per_agent else torch.zeros(num_agents)
        self._groups = index.to(torch.int64)


def _virtual(x: torch.Tensor, signals: int) -> torch.Tensor:
    """``(..., N, d) -> (..., N * K, d)``: every agent once per sub-policy."""
    return x.repeat_interleave(signals, dim=-2)


def _active(out: torch.Tensor, z: torch.Tensor, signals: int) -> torch.Tensor:
    """Keep sub-policy ``z (..., N)`` of ``out (..., N * K[, A])``."""
    if out.ndim == z.ndim:  # values (..., N * K)
        return out.view(*z.shape, signals).gather(-1, z.unsqueeze(-1)).squeeze(-1)
    width = out.shape[-1]
    grouped = out.view(*z.shape, signals, width)
    index = z.unsqueeze(-1).unsqueeze(-1).expand(*z.shape, 1, width)
    return grouped.gather(-2, index).squeeze(-2)


def _split(obs_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return obs_z[..., :-1], obs_z[..., -1].round().to(torch.int64)


class _SignalledActor(nn.Module):
    """The sub-policy bank as :func:`ppo_update` sees an actor: observations carry the active
    signal in their last column; every sub-policy is evaluated and the active one kept."""

    discrete = True

    def __init__(self, bank: Actor, signals: int) -> None:
        super().__init__()
        self.bank = bank
        self.signals = int(signals)
        self.obs_norm = ObsNorm(1, enabled=False)  # the bank normalises the observation part

    def logits(self, obs_z: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        obs, z = _split(obs_z)
        return _active(self.bank(_virtual(obs, self.signals), groups), z, self.signals)

    def evaluate(
        self,
        obs_z: torch.Tensor,
        groups: torch.Tensor | None,
        action: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_p = torch.log_softmax(masked_logits(self.logits(obs_z, groups), mask), dim=-1)
        log_prob = log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return log_prob, -(log_p.exp() * log_p).sum(-1).mean()


class _SignalledCritic(nn.Module):
    """``V_{i,z}(o_i)`` of the active sub-policy (observations carry the signal)."""

    def __init__(self, bank: Critic, obs_norm: ObsNorm, signals: int) -> None:
        super().__init__()
        self.bank = bank
        self.signals = int(signals)
        self._obs_norm = [obs_norm]  # the bank actor's (not a second copy of its statistics)

    def forward(
        self, obs_z: torch.Tensor, state: torch.Tensor | None, groups: torch.Tensor | None
    ) -> torch.Tensor:
        obs, z = _split(obs_z)
        normed = self._obs_norm[0](obs)
        return _active(self.bank(_virtual(normed, self.signals), None, groups), z, self.signals)

    def value_loss(
        self,
        obs_z: torch.Tensor,
        state: torch.Tensor | None,
        groups: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        return 0.5 * ((self(obs_z, state, groups) - targets) ** 2).mean()


class FENModel(nn.Module):
    """Every trained parameter of a FEN run: the sub-policy ``bank`` (an
    :class:`~marra.rl.ppo.ActorCritic` over signalled observations) and the ``controller`` (an
    ActorCritic over ``(o_i, rat_i, utili_i)``). ``actor`` and ``sharing`` are what
    ``policy.pt`` stores (the sub-policies, every agent on sub-policy 0)."""

    def __init__(self, bank: ActorCritic, controller: ActorCritic, sharing: SharingScheme):
        super().__init__()
        self.bank = bank
        self.controller = controller
        self.policy_sharing = sharing

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Each part through :meth:`ActorCritic.load_state_dict` (which restores the sharing
        groups its ``state_dict`` adds)."""
        for name in ("bank", "controller"):
            prefix = f"{name}."
            part = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            getattr(self, name).load_state_dict(part, strict=strict, assign=assign)
        rest = sorted(k for k in state_dict if not k.startswith(("bank.", "controller.")))
        if strict and rest:
            raise RuntimeError(f"FENModel: unexpected key(s) in state_dict: {rest}")

    @property
    def actor(self) -> Actor:
        return self.bank.actor.bank  # type: ignore[return-value]

    @property
    def sharing(self) -> SharingScheme:
        return self.policy_sharing

    @property
    def signals(self) -> int:
        return int(self.bank.actor.signals)  # type: ignore[arg-type]

    @torch.no_grad()
    def decide(
        self, obs: torch.Tensor, tracker: _Tracker, generator: torch.Generator | None,
        mask: torch.Tensor | None = None, deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """The controller's draw: ``(z, log_prob, controller obs)``."""
        ctrl_obs = torch.cat((obs, tracker.features().to(obs.device)), dim=-1)
        groups = self.controller.groups(obs.device)
        if deterministic:
            return self.controller.actor.act(ctrl_obs, groups), torch.zeros(()), ctrl_obs
        z, log_prob = self.controller.actor.sample(ctrl_obs, groups, generator)
        return z, log_prob, ctrl_obs

    @torch.no_grad()
    def controller_probs(self, obs: torch.Tensor, tracker: _Tracker) -> torch.Tensor:
        ctrl_obs = torch.cat((obs, tracker.features().to(obs.device)), dim=-1)
        logits = self.controller.actor(ctrl_obs, self.controller.groups(obs.device))
        return torch.softmax(logits, dim=-1)


def build_fen_model(spec: EnvSpec, config: FENConfig) -> FENModel:
    """The sub-policy bank and the controller for an environment with ``spec``."""
    if not spec.action.is_discrete:
        raise CompatibilityError(
            f"algo 'fen' supports discrete actions only; {spec.name} has continuous actions"
        )
    n, k, d = spec.num_agents, config.signals, spec.obs_dim
    per_agent = config.sharing == "none"
    bank_sharing = _BankSharing(n, k, per_agent)
    none = AgentIdentity("none", n * k)
    actor = Actor(
        d, action_kind="discrete", action_dim=int(spec.action.n), hidden=config.actor_hidden,
        num_groups=bank_sharing.num_groups, identity=none, activation=config.activation,
        obs_norm=config.obs_norm, init_log_std=config.init_log_std,
    )  # fmt: skip
    critic = Critic(
        d, spec.state_dim, kind="local", per_agent=True, hidden=config.critic_hidden,
        encoder_hidden=config.critic_encoder_hidden, num_groups=bank_sharing.num_groups,
        identity=none, activation=config.activation,
    )  # fmt: skip
    bank = ActorCritic(
        _SignalledActor(actor, k), _SignalledCritic(critic, actor.obs_norm, k), bank_sharing,
        norm_value=config.norm_value, team_value=False, needs_state=False,
    )  # fmt: skip
    controller_spec = EnvSpec(
        name=f"{spec.name}:fen-controller", num_agents=n, agent_ids=spec.agent_ids,
        obs_dim=d + 2, state_dim=spec.state_dim, action=ActionSpec.discrete(k),
        horizon=max(1, spec.horizon // config.period), reward="agent",
    )  # fmt: skip
    controller = build_model(controller_spec, config.replace(critic="local"))
    policy_sharing = _PolicySharing(config.sharing, n, k, bank_sharing.num_groups)
    return FENModel(bank, controller, policy_sharing).to(config.device)


# --------------------------------------------------------------------------- the learner
@dataclass
class _FENRollout:
    """One iteration of FEN experience (shapes as :class:`~marra.rl.rollout.Rollout`)."""

    episodes: Rollout  # env rewards and episode dones: what a constraint observes
    bank: Rollout  # signalled observations, sub-policy rewards, period ends as dones
    controller: Rollout | None  # decision points (D, 1, N, ...) with complete periods
    signal0_share: float


class FENAlgorithm(Algorithm):
    """FEN behind the :class:`~marra.rl.algorithm.Algorithm` interface (module docstring)."""

    def __init__(
        self, spec: EnvSpec, config: FENConfig, constraint: Constraint | None = None
    ) -> None:
        self.spec = spec
        self.config = config
        self.model = build_fen_model(spec, config)
        self.controller_config = config.replace(gamma=0.0, gae_lambda=0.0)
        self.optimizers = {
            name: torch.optim.Adam(
                [
                    {"params": part.actor.parameters(), "lr": config.learning_rate},
                    {"params": part.critic.parameters(), "lr": config.critic_learning_rate},
                ],
                eps=1e-5,
            )
            for name, part in (("bank", self.model.bank), ("controller", self.model.controller))
        }
        self.base_lrs = (config.learning_rate, config.critic_learning_rate)
        self.rollout_steps = int(config.rollout_steps or spec.horizon)
        self.steps_per_iteration = self.rollout_steps * config.num_envs
        self.constraint = constraint or Constraint()

    # ------------------------------------------------------------------------- collection
    @torch.no_grad()
    def collect(
        self, env: MultiAgentEnv, generator: torch.Generator, seed: int, warm: bool
    ) -> _FENRollout:
        config, model, k = self.config, self.model, self.config.signals
        obs = env.reset(seed=seed)
        bank_actor: Actor = model.actor
        if warm:
            bank_actor.obs_norm.update(obs)
        e, n, d = obs.shape
        steps, device, period = self.rollout_steps, obs.device, config.period
        tracker = _Tracker(e, n, device, config)
        if warm:
            model.controller.actor.obs_norm.update(torch.cat((obs, tracker.features()), -1))
        bank_groups = model.bank.groups(device)
        f32 = torch.float32
        obs_buf = torch.empty((steps, e, n, d + 1), dtype=f32, device=device)
        next_obs = torch.empty((steps, e, n, d), dtype=f32, device=device)
        masks = torch.empty((steps, e, n, int(self.spec.action.n)), dtype=torch.bool, device=device)
        actions = torch.empty((steps, e, n), dtype=torch.int64, device=device)
        log_probs = torch.empty((steps, e, n), device=device)
        env_rewards = torch.empty((steps, e, n), device=device)
        sub_rewards = torch.empty((steps, e, n), device=device)
        dones = torch.empty((steps, e, n), device=device)
        decide = torch.zeros((steps, e), dtype=torch.bool, device=device)
        period_end = torch.zeros((steps, e), dtype=torch.bool, device=device)
        ctrl_obs = torch.empty((steps, e, n, d + 2), dtype=f32, device=device)
        ctrl_z = torch.zeros((steps, e, n), dtype=torch.int64, device=device)
        ctrl_logp = torch.zeros((steps, e, n), device=device)
        ctrl_reward = torch.zeros((steps, e, n), device=device)
        z = torch.zeros((e, n), dtype=torch.int64, device=device)
        k_in_episode = torch.zeros(e, dtype=torch.int64, device=device)
        stats = EpisodeStats()
        autoreset = env.autoreset
        try:
            for t in range(steps):
                mask = env.action_mask()
                start = k_in_episode % period == 0
                if bool(start.any()):
                    new_z, logp, c_obs = model.decide(obs, tracker, generator)
                    z = torch.where(start.unsqueeze(-1), new_z, z)
                    ctrl_obs[t], ctrl_z[t], ctrl_logp[t] = c_obs, new_z, logp
                decide[t] = start
                obs_buf[t] = torch.cat((obs, z.to(f32).unsqueeze(-1)), dim=-1)
                masks[t] = mask
                logits = _active(bank_actor(_virtual(obs, k), bank_groups), z, k)
                action, logp = _sample(logits, mask, generator)
                actions[t], log_probs[t] = action, logp
                if t == steps - 1:
                    env.autoreset = False
                step = env.step(action)
                done = step.terminated | step.truncated
                env_rewards[t] = step.reward
                dones[t] = done.to(f32).unsqueeze(-1)
                stats.add(step.info, done, t)
                after = step.info.get("final_obs", step.obs)  # the true next observation
                next_obs[t] = after
                r_hat = tracker.step(step.reward, generator)
                k_in_episode = k_in_episode + 1
                period_end[t] = k_in_episode % period == 0
                ctrl_reward[t] = r_hat.to(f32)
                p_z = model.controller_probs(after, tracker).gather(-1, z.unsqueeze(-1))
                sub_rewards[t] = torch.where(z == 0, step.reward, p_z.squeeze(-1))
                tracker.reset(done)
                k_in_episode = torch.where(done, torch.zeros_like(k_in_episode), k_in_episode)
                obs = step.obs
        finally:
            env.autoreset = autoreset
        return self._assemble(
            obs_buf, next_obs, masks, actions, log_probs, env_rewards, sub_rewards, dones,
            decide, period_end, ctrl_obs, ctrl_z, ctrl_logp, ctrl_reward, stats, obs, z,
        )  # fmt: skip

    def _assemble(
        self, obs_buf: torch.Tensor, next_obs: torch.Tensor, masks: torch.Tensor,
        actions: torch.Tensor, log_probs: torch.Tensor, env_rewards: torch.Tensor,
        sub_rewards: torch.Tensor, dones: torch.Tensor, decide: torch.Tensor,
        period_end: torch.Tensor, ctrl_obs: torch.Tensor, ctrl_z: torch.Tensor,
        ctrl_logp: torch.Tensor, ctrl_reward: torch.Tensor, stats: EpisodeStats,
        final_obs: torch.Tensor, final_z: torch.Tensor,
    ) -> _FENRollout:  # fmt: skip
        model, config = self.model, self.config
        steps, e, n, _ = obs_buf.shape
        bank = model.bank
        groups = bank.groups(obs_buf.device)
        values = bank.value(obs_buf, None, groups)  # V_{i,z_t}(o_t), reward units
        # each period is its own episode for the sub-policies: at a period's end (not an
        # episode's) bootstrap from the same sub-policy's value of the next observation
        z = obs_buf[..., -1:]
        following = bank.value(torch.cat((next_obs, z), dim=-1), None, groups)
        cut = period_end.unsqueeze(-1) & (dones == 0)
        rewards = sub_rewards + config.gamma * following * cut.to(sub_rewards.dtype)
        sub_dones = torch.maximum(dones, period_end.unsqueeze(-1).to(dones.dtype))
        last_obs_z = torch.cat((final_obs, final_z.to(final_obs.dtype).unsqueeze(-1)), dim=-1)
        last_value = bank.value(last_obs_z, None, groups)
        metrics = stats.means()
        bank_rollout = Rollout(
            obs_buf, None, masks, actions, log_probs, values, rewards, sub_dones, last_value,
            metrics,
        )  # fmt: skip
        episodes = dataclasses.replace(
            bank_rollout, rewards=env_rewards, dones=dones, episode_outcomes=stats.outcomes,
            episode_ends=stats.ends,
        )  # fmt: skip
        # controller samples: decisions whose period ran to its full length. A decision at t
        # (in-episode step k, a multiple of the period) is complete iff step t + period - 1 ends
        # a period: had its episode ended earlier, the next episode's step count there would be
        # 1..period-1, not a multiple of the period
        complete = torch.zeros_like(decide)
        reward_at = torch.zeros((steps, e, n), device=obs_buf.device)
        span = config.period - 1
        if span < steps:
            complete[: steps - span] = decide[: steps - span] & period_end[span:]
            reward_at[: steps - span] = ctrl_reward[span:]
        controller = None
        if bool(complete.any()):
            where = complete.nonzero(as_tuple=True)
            c_obs = ctrl_obs[where].unsqueeze(1)  # (D, 1, N, d + 2)
            c_values = model.controller.value(c_obs, None, model.controller.groups(c_obs.device))
            ones = torch.ones(c_obs.shape[:-1], device=c_obs.device)
            controller = Rollout(
                c_obs, None, None, ctrl_z[where].unsqueeze(1), ctrl_logp[where].unsqueeze(1),
                c_values, reward_at[where].unsqueeze(1), ones, torch.zeros_like(c_values[0]),
                {},
            )  # fmt: skip
        share = float((obs_buf[..., -1] == 0).to(torch.float64).mean())
        return _FENRollout(episodes, bank_rollout, controller, share)

    # ------------------------------------------------------------------------- iteration
    def iteration(
        self, env: MultiAgentEnv, iteration: int, num_iterations: int, generator: torch.Generator
    ) -> dict[str, Any]:
        config, model = self.config, self.model
        tick = time.perf_counter()
        if config.anneal_lr:
            frac = 1.0 - (iteration - 1) / num_iterations
            for optimizer in self.optimizers.values():
                for group, base_lr in zip(optimizer.param_groups, self.base_lrs, strict=True):
                    group["lr"] = frac * base_lr
        data = self.collect(
            env, generator, iteration_seed(config.seed, iteration), warm=iteration == 1
        )
        check_rollout(data.episodes, iteration)
        self.constraint.observe(data.episodes, model)
        rollout_s = time.perf_counter() - tick
        bank = data.bank
        advantages, returns = compute_gae(
            bank.rewards, bank.values, bank.dones, bank.last_value, config.gamma,
            config.gae_lambda,
        )  # fmt: skip
        advantages = self.constraint.shape_advantage(advantages, data.episodes, model)
        stats = ppo_update(
            model.bank, self.optimizers["bank"], bank, advantages, returns, config, generator
        )
        row: dict[str, Any] = {}
        if data.controller is not None:
            c = data.controller
            c_adv, c_ret = compute_gae(c.rewards, c.values, c.dones, c.last_value, 0.0, 0.0)
            c_stats = ppo_update(
                model.controller, self.optimizers["controller"], c, c_adv, c_ret,
                self.controller_config, generator,
            )  # fmt: skip
            row = {f"controller_{key}": value for key, value in c_stats.items()}
            row["controller_reward"] = float(c.rewards.mean())
            model.controller.actor.obs_norm.update(c.obs)
        constraint_stats = self.constraint.update(iteration)
        model.actor.obs_norm.update(bank.obs[..., :-1])
        return {
            "rollout_s": rollout_s,
            "update_s": time.perf_counter() - tick - rollout_s,
            **bank.metrics,
            **stats,
            **row,
            "fen_signal0_share": data.signal0_share,
            **constraint_stats,
            "learning_rate": self.optimizers["bank"].param_groups[0]["lr"],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": {k: o.state_dict() for k, o in self.optimizers.items()},
            "constraint": self.constraint.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizer"][key])
        self.constraint.load_state_dict(state.get("constraint", {}))


def _sample(
    logits: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A categorical draw by the Gumbel-max trick (as :meth:`Actor.sample`)."""
    logits = masked_logits(logits, mask)
    device = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape, generator=generator, device=device, dtype=logits.dtype)
    u = u.to(logits.device).clamp_min(1e-20)
    scores = logits - torch.log((-torch.log(u)).clamp_min(1e-20))
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    action = scores.argmax(dim=-1)
    log_prob = torch.log_softmax(logits, dim=-1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
    return action, log_prob


# --------------------------------------------------------------------------- evaluation
class FENRunner:
    """The whole FEN hierarchy as a method of :func:`marra.experiments.evaluate.evaluate`:
    ``start(env)``, ``act(obs)`` (deterministic: the controller's and the sub-policies' most
    likely choices), ``observe(step)`` (the agents' own rewards feed ``rat`` and ``utili``;
    gossip draws from a generator seeded by ``seed``)."""

    def __init__(self, model: FENModel, config: FENConfig, seed: int = 0) -> None:
        self.model = model.eval()
        self.config = config
        self.seed = int(seed)

    def start(self, env: Any) -> None:
        self.env = env
        e, n = env.num_envs, env.spec.num_agents
        self.generator = torch.Generator().manual_seed(self.seed)
        self.tracker = _Tracker(e, n, env.device, self.config)
        self.k = torch.zeros(e, dtype=torch.int64, device=env.device)
        self.z = torch.zeros((e, n), dtype=torch.int64, device=env.device)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        model, k = self.model, self.config.signals
        start = self.k % self.config.period == 0
        if bool(start.any()):
            new_z, _, _ = model.decide(obs, self.tracker, None, deterministic=True)
            self.z = torch.where(start.unsqueeze(-1), new_z, self.z)
        logits = _active(model.actor(_virtual(obs, k), model.bank.groups(obs.device)), self.z, k)
        return masked_logits(logits, self.env.action_mask()).argmax(dim=-1)

    def observe(self, step: Any) -> None:
        done = step.terminated | step.truncated
        self.tracker.step(step.reward, self.generator)
        self.tracker.reset(done)
        self.k = torch.where(done, torch.zeros_like(self.k), self.k + 1)


def load_fen_runner(policy_path: str | Path, seed: int = 0) -> FENRunner:
    """The FEN hierarchy of the run that wrote ``policy_path``, from its ``checkpoint.pt``.

    Raises:
        ValueError: no checkpoint next to the policy, or not a FEN run.
    """
    from marra.envs.registry import make

    from .checkpoint import load_checkpoint

    path = Path(policy_path)
    folder = path if path.is_dir() else path.parent
    checkpoint = folder / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ValueError(
            f"policy {str(path)!r}: a FEN policy is played from its run's checkpoint.pt, which "
            f"is not in {str(folder)!r}"
        )
    state = load_checkpoint(checkpoint)
    config = FENConfig.from_dict(state["config"])
    from .policy import load_policy

    policy = load_policy(path)
    options = dict(policy.env.get("options") or {})
    spec = make(str(policy.env.get("name")), num_envs=1, **options).spec
    model = build_fen_model(spec, config)
    model.load_state_dict(state["model"])
    return FENRunner(model, config, seed=seed)


def _build(spec: EnvSpec, config: Any, constraint: Constraint | None) -> FENAlgorithm:
    if not isinstance(config, FENConfig):  # a plain PPOConfig(algo="fen"): FEN's defaults
        known = {f.name for f in dataclasses.fields(FENConfig)}
        config = FENConfig.from_dict({k: v for k, v in config.to_dict().items() if k in known})
    return FENAlgorithm(spec, config, constraint)


ALGORITHMS["fen"] = AlgorithmInfo(
    "fen",
    "ppo",
    "FEN: a controller switching sub-policies every period for the fair-efficient reward "
    "(discrete actions)",
    discrete=True,
    continuous=False,
    needs_state=False,
    on_policy=True,
    default_critic="local",
    builder=_build,
    config_cls=FENConfig,
)
