"""``dyps``: dynamic parameter sharing (paper 002, "DyPS", sections 3.2-3.5, Algorithm 1).

Agents are regrouped at the start of every iteration (every episode of every copy: one grouping
per iteration, shared by the copies) by a group-selection policy that reads learned
representations of the agents and of the groups; the group networks (the backbone's grouped
actor and, for IPPO, critic) are trained by the backbone (IPPO or MAPPO) as usual.

- **VLSTM** (:class:`VariationalLSTM`, Eq. 5-12; LSTM hidden 64, MLPs of 64 units, latent 16):
  a variational recurrent model of each agent's trajectory. At step ``t``, with ``h_{t-1}`` the
  LSTM state: prior ``p(z_t | h_{t-1})`` (Eq. 5-6), posterior ``q(z_t | s_t, h_{t-1})`` (Eq.
  10-11), decoder ``p(e_{t+1} | z_t, h_{t-1})`` of ``e_{t+1} = (s_{t+1}, r_{t+1})`` (Eq. 7-8),
  then ``h_t = LSTM(h_{t-1}; z_t, s_t, a_t, r_{t+1})`` (Eq. 9). It maximises the ELBO of Eq. 12
  (per step: reconstruction log-likelihood minus KL(q || p)). The agent's representation
  ``h[n]`` is the LSTM state after its whole trajectory (posterior means, no noise), averaged
  over ``repr_copies`` copies.
- **CVAE** (:class:`GroupCVAE`, Eq. 4; encoder 64, decoder 2 x 64, latent 16): ``q(z_m | I_m)``
  from the group's one-hot identity only, ``p(a | z_m, s)`` of the actions the group's agents
  took; ``z_m`` is the encoder's mean.
- **Group selector** (:class:`GroupSelector`, Eq. 13): ``P(agent n -> group m) =
  softmax_m([I_n, h_n] W z_m)`` with a one-hot identity ``I_n`` (so ``I_n W`` is a learned
  vector per agent), ``h_n`` centred over the agents and ``z_m`` centred over the groups (both
  scaled to unit root-mean-square), sampled once per agent per iteration. It is an
  actor-critic on a one-step problem (section 3.3): the reward is the episode's total reward
  over all agents (``dyps_selector_reward="team"``, mean over copies) or each agent's own
  return (``"agent"``); the critic ``V(I_n, h_n)`` is the baseline, the actor takes one
  policy-gradient step per iteration (Table 6's step sizes: ``dyps_selector_lr``).
- **Ablations** (Table 3): ``no-cvae`` (an MLP on ``[I_n, h_n]`` gives the group logits),
  ``no-vlstm`` (``I_n W z_m``), ``no-repr`` (an MLP on ``I_n``).

Memory is bounded: the VLSTM trains on ``sequences`` sequences an iteration in minibatches of
``seq_batch``, backpropagating through each step once (activations linear in the horizon); the
public code repeats each trajectory once per step (quadratic) and needs more than 25 GB on
ride-hailing(2).

Parameters belong to groups, not agents: regrouping moves agents between the group networks and
copies nothing (a group's network and Adam moments stay with the group).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .grouping import (
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    trajectories,
)
from .networks import ObsNorm, ValueNorm
from .sharing import SharingError, SharingScheme, register_sharing

__all__ = ["DyPSSharing", "VariationalLSTM", "GroupCVAE", "GroupSelector", "ABLATIONS"]

ABLATIONS = ("none", "no-cvae", "no-vlstm", "no-repr")
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_VAR_LIMIT = 8.0


def _gaussian_kl(mu_q: torch.Tensor, lv_q: torch.Tensor, mu_p: torch.Tensor,
                 lv_p: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p)) summed over the last dimension."""
    return 0.5 * (lv_p - lv_q + (lv_q.exp() + (mu_q - mu_p) ** 2) / lv_p.exp() - 1.0).sum(-1)


def _split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, log_var = out.chunk(2, dim=-1)
    return mu, log_var.clamp(-_LOG_VAR_LIMIT, _LOG_VAR_LIMIT)


class VariationalLSTM(nn.Module):
    """Paper 002's VLSTM (Eq. 5-12) over trajectories ``(B, T, ...)``.

    The networks: LSTM state 64; prior ``f^p`` and posterior ``phi^e``: one hidden layer of 64;
    decoder ``f^d``: two hidden layers of 64; latent 16. For speed the layers that read the same
    input are evaluated as one matrix product (``from_hidden`` holds the ``h_{t-1}`` columns of
    the LSTM gates, the posterior, the prior and the decoder's first layer; ``from_latent`` the
    ``z_t`` columns of the gates and the decoder), the parts that depend only on the observed
    ``(s_t, a_t, r_{t+1})`` are computed for all steps at once, and so are the prior's and the
    decoder's later layers: the loop over steps holds only the 64-unit recurrence.
    """

    def __init__(self, obs_dim: int, action_dim: int, *, hidden: int = 64, latent: int = 16,
                 width: int = 64) -> None:  # fmt: skip
        super().__init__()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.hidden, self.latent, self.width = int(hidden), int(latent), int(width)
        step_in = self.obs_dim + self.action_dim + 1
        self.input_gates = nn.Linear(step_in, 4 * hidden)  # (s_t, a_t, r_{t+1}) -> Eq. 9
        self.posterior_obs = nn.Linear(self.obs_dim, width)  # phi^e on s_t, Eq. (10)
        # h_{t-1} -> [LSTM gates (Eq. 9) | posterior (Eq. 10) | prior (Eq. 5) | decoder (Eq. 7)]
        self.from_hidden = nn.Linear(hidden, 4 * hidden + 3 * width, bias=False)
        # z_t -> [LSTM gates (Eq. 9) | decoder (Eq. 7)]
        self.from_latent = nn.Linear(latent, 4 * hidden + width, bias=False)
        self.posterior_out = nn.Linear(width, 2 * latent)
        self.prior_bias = nn.Parameter(torch.zeros(width))
        self.prior_out = nn.Linear(width, 2 * latent)
        self.decoder_bias = nn.Parameter(torch.zeros(width))
        self.decoder_hidden = nn.Linear(width, width)  # f^d's second hidden layer
        self.decoder_out = nn.Linear(width, 2 * (self.obs_dim + 1))

    def forward(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, h_T)``: the negative ELBO of Eq. 12 per step (mean over sequences and steps;
        0 without ``next_obs``) and the final LSTM state ``(B, hidden)``.

        ``obs (B, T, obs_dim)`` (normalised), ``actions (B, T, action_dim)`` (one-hot or
        continuous), ``rewards (B, T)`` (normalised ``r_{t+1}``), ``next_obs`` like ``obs``,
        ``valid (B, T)`` (steps whose ``s_{t+1}`` is known), ``starts (B, T)`` (an episode starts
        at ``t``: the LSTM state is reset), ``noise (B, T, latent)`` standard normal draws
        (None: the posterior mean).
        """
        b, t = obs.shape[:2]
        gates4, w = 4 * self.hidden, self.width
        step_in = torch.cat([obs, actions, rewards.unsqueeze(-1)], dim=-1)
        # per-step views of whole-sequence products (unbind: one backward op, where indexing
        # every step would add a full-size gradient per step, O(T^2))
        gates_in = self.input_gates(step_in).unbind(1)  # T x (B, 4H)
        posterior_in = self.posterior_obs(obs).unbind(1)  # T x (B, W)
        noises = None if noise is None else noise.unbind(1)
        keep = None if starts is None else (~starts).to(obs.dtype).unsqueeze(-1).unbind(1)
        h = obs.new_zeros(b, self.hidden)
        c = obs.new_zeros(b, self.hidden)
        decode = next_obs is not None
        posteriors, priors, decoded = [], [], []
        for step in range(t):
            if keep is not None and step > 0:
                h, c = h * keep[step], c * keep[step]
            from_h = self.from_hidden(h)
            recurrent, post_h = from_h[:, :gates4], from_h[:, gates4 : gates4 + w]
            post = F.relu(posterior_in[step] + post_h)
            q = self.posterior_out(post)  # Eq. (10)-(11)
            mu_q, lv_q = _split(q)
            z = mu_q if noises is None else mu_q + torch.exp(0.5 * lv_q) * noises[step]
            from_z = self.from_latent(z)
            if decode:
                posteriors.append(q)
                priors.append(from_h[:, gates4 + w : gates4 + 2 * w])  # Eq. (5), first layer
                decoded.append(from_h[:, gates4 + 2 * w :] + from_z[:, gates4:])  # Eq. (7)
            gates = gates_in[step] + from_z[:, :gates4] + recurrent
            i, f, g, o = gates.chunk(4, dim=-1)  # Eq. (9): an LSTM cell
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        if not decode:
            return obs.new_zeros(()), h
        mu_q, lv_q = _split(torch.stack(posteriors, dim=1))  # (B, T, latent)
        prior = self.prior_out(F.relu(torch.stack(priors, dim=1) + self.prior_bias))
        mu_p, lv_p = _split(prior)  # Eq. (5)-(6)
        kl = _gaussian_kl(mu_q, lv_q, mu_p, lv_p)  # (B, T)
        hidden = F.relu(torch.stack(decoded, dim=1) + self.decoder_bias)
        mu_e, lv_e = _split(self.decoder_out(F.relu(self.decoder_hidden(hidden))))  # Eq. (8)
        target = torch.cat([next_obs, rewards.unsqueeze(-1)], dim=-1)
        nll = 0.5 * (lv_e + (target - mu_e) ** 2 / lv_e.exp() + _LOG_2PI).sum(-1)  # (B, T)
        if valid is not None:
            nll = nll * valid.to(nll.dtype)
        return (nll + kl).mean(), h  # - ELBO of Eq. (12), per step


class GroupCVAE(nn.Module):
    """Paper 002's CVAE over groups (Eq. 4): ``q(z_m | I_m)``, ``p(a | z_m, s)``."""

    def __init__(self, num_groups: int, obs_dim: int, action_kind: str, action_dim: int, *,
                 latent: int = 16, hidden: int = 64) -> None:  # fmt: skip
        super().__init__()
        self.num_groups, self.latent = int(num_groups), int(latent)
        self.discrete = action_kind == "discrete"
        self.encoder = nn.Sequential(  # one hidden layer of 64
            nn.Linear(self.num_groups, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(  # two hidden layers of 64
            nn.Linear(latent + obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, action_dim),
        )  # fmt: skip

    def latents(self) -> torch.Tensor:
        """``z_m`` for every group: the encoder's means ``(M, latent)``."""
        eye = torch.eye(self.num_groups, device=self.encoder[0].weight.device)
        return _split(self.encoder(eye))[0]

    def loss(self, groups: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """- ELBO of Eq. 4 per sample: ``- log p(a | z, s) + KL(q(z | I) || N(0, I))``."""
        mu, log_var = _split(self.encoder(F.one_hot(groups, self.num_groups).to(obs.dtype)))
        z = mu + torch.exp(0.5 * log_var) * noise
        out = self.decoder(torch.cat([z, obs], dim=-1))
        if self.discrete:
            nll = F.cross_entropy(out, actions, reduction="none")
        else:
            nll = 0.5 * ((actions - out) ** 2 + _LOG_2PI).sum(-1)
        kl = -0.5 * (1.0 + log_var - mu**2 - log_var.exp()).sum(-1)
        return (nll + kl).mean()


class GroupSelector(nn.Module):
    """The group-selection actor (Eq. 13, or its ablations) and its critic.

    Eq. 13 with a one-hot identity: ``[I_n, h_n] W = W_I[n] + h_n W_h``, so the identity part is
    a learned vector per agent in the space of the group encodings (``agent_keys``, ``(N,
    latent)``) and the representation part a shared map ``W_h`` (``(repr_dim, latent)``); both
    start small, so the first groupings are near-uniform ("initially, group assignment is
    random", section 4.6). The ablations' MLPs read a learned 16-feature identity embedding.
    """

    def __init__(self, num_agents: int, num_groups: int, *, ablation: str, repr_dim: int = 64,
                 latent: int = 16, id_dim: int = 16, hidden: int = 64) -> None:  # fmt: skip
        super().__init__()
        if ablation not in ABLATIONS:
            raise SharingError(f"dyps_ablation: one of {', '.join(ABLATIONS)}; got {ablation!r}")
        self.ablation = ablation
        self.uses_repr = ablation in ("none", "no-cvae")
        self.uses_cvae = ablation in ("none", "no-vlstm")
        if self.uses_cvae:  # W of Eq. (13), split by its input: identity rows and W_h
            self.agent_keys = nn.Parameter(torch.randn(num_agents, latent) * 0.01)
            if self.uses_repr:
                self.repr_weight = nn.Parameter(torch.randn(repr_dim, latent) * 0.01)
        else:
            self.identity = nn.Embedding(num_agents, id_dim)
            in_dim = id_dim + (repr_dim if self.uses_repr else 0)
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, num_groups))  # fmt: skip
            nn.init.normal_(self.mlp[-1].weight, std=0.01)
            nn.init.zeros_(self.mlp[-1].bias)
        self.critic_identity = nn.Embedding(num_agents, id_dim)
        critic_in = id_dim + (repr_dim if self.uses_repr else 0)
        self.critic = nn.Sequential(nn.Linear(critic_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.value_norm = ValueNorm(enabled=True)

    def actor_parameters(self) -> list[nn.Parameter]:
        if self.uses_cvae:
            return [self.agent_keys] + ([self.repr_weight] if self.uses_repr else [])
        return list(self.identity.parameters()) + list(self.mlp.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic_identity.parameters()) + list(self.critic.parameters())

    @staticmethod
    def representation(h: torch.Tensor) -> torch.Tensor:
        """The representations centred over the agents and scaled to unit root-mean-square:
        what tells agents apart, not what they share (a shift common to every agent would
        move them all towards the same group)."""
        h = h - h.mean(dim=0, keepdim=True)
        return h / (h.pow(2).mean().sqrt() + 1e-6)

    def _features(self, identity: nn.Embedding, h: torch.Tensor) -> torch.Tensor:
        x = identity.weight
        return torch.cat([x, self.representation(h)], dim=-1) if self.uses_repr else x

    def logits(self, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """``(N, M)``: paper 002 Eq. (13) ``[I_n, h_n] W z_m`` (before the softmax over m)."""
        if self.uses_cvae:
            assert z is not None
            keys = self.agent_keys
            if self.uses_repr:  # divided by its width: each part of W moves the logits alike
                keys = keys + self.representation(h) @ self.repr_weight / h.shape[-1]
            return keys @ z.T
        return self.mlp(self._features(self.identity, h))

    def value(self, h: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the critic's value of each agent's decision, in normalised units."""
        return self.critic(self._features(self.critic_identity, h)).squeeze(-1)


@register_sharing
class DyPSSharing(SharingScheme):
    """DyPS (see the module docstring).

    Options (``PPOConfig`` fields): ``num_groups`` (default 4, at most the number of agents),
    ``dyps_ablation``, ``dyps_selector_lr``, ``dyps_selector_reward``; keyword-only extras:
    ``hidden`` (64), ``latent`` (16), ``repr_lr`` (1e-3, the VLSTM's and CVAE's Adam step),
    ``sequences`` (128 trajectories an iteration for the VLSTM), ``seq_batch`` (128),
    ``repr_copies`` (2), ``cvae_samples`` (2,048), ``cvae_batch`` (512), ``entropy_coef``
    (0.01, the selector's entropy bonus), ``max_grad_norm`` (0.5).
    """

    name = "dyps"
    any_num_agents = False
    regroups = True
    takes_num_groups = True

    def __init__(
        self,
        num_agents: int,
        *,
        num_groups: int | None = None,
        dyps_ablation: str = "none",
        dyps_selector_lr: float = 1e-4,
        dyps_selector_reward: str = "team",
        spec: Any = None,
        seed: int = 1,
        device: str | torch.device = "cpu",
        hidden: int = 64,
        latent: int = 16,
        repr_lr: float = 1e-3,
        sequences: int = 128,
        seq_batch: int = 128,
        repr_copies: int = 2,
        cvae_samples: int = 2048,
        cvae_batch: int = 512,
        entropy_coef: float = 0.01,
        max_grad_norm: float = 0.5,
        **_: Any,
    ) -> None:
        super().__init__(num_agents)
        n = self.num_agents
        k = min(4, n) if num_groups is None else int(num_groups)
        if not 1 <= k <= n:
            raise SharingError(
                f"num_groups: sharing 'dyps' needs 1..{n} groups for {n} agents, got {num_groups}"
            )
        if spec is None:
            raise SharingError(
                "sharing 'dyps' needs the environment's spec: build the scheme with "
                "marra.rl.ppo.sharing_options(config, spec)"
            )
        if dyps_selector_reward not in ("team", "agent"):
            raise SharingError(
                f"dyps_selector_reward: 'team' or 'agent', got {dyps_selector_reward!r}"
            )
        self.num_groups = k
        self.spec = spec
        self.ablation = dyps_ablation
        self.selector_reward = dyps_selector_reward
        self.device = torch.device(device)
        self.discrete = spec.action.is_discrete
        self.action_width = int(spec.action.n) if self.discrete else int(spec.action.dim)
        self.sequences, self.seq_batch = int(sequences), int(seq_batch)
        self.repr_copies = int(repr_copies)
        self.cvae_samples, self.cvae_batch = int(cvae_samples), int(cvae_batch)
        self.entropy_coef, self.max_grad_norm = float(entropy_coef), float(max_grad_norm)
        self.latent = int(latent)
        seq = np.random.SeedSequence([int(seed), 0xD795])
        init_seed, gen_seed = (int(v) for v in seq.generate_state(2))
        self.generator = torch.Generator().manual_seed(gen_seed)
        with torch.random.fork_rng(devices=[]):  # the backbone's initialisation is untouched
            torch.manual_seed(init_seed)
            self.selector = GroupSelector(n, k, ablation=dyps_ablation, repr_dim=hidden,
                                          latent=latent)  # fmt: skip
            self.vlstm = VariationalLSTM(spec.obs_dim, self.action_width, hidden=hidden,
                                         latent=latent)  # fmt: skip
            self.cvae = GroupCVAE(k, spec.obs_dim, spec.action.kind, self.action_width,
                                  latent=latent)  # fmt: skip
        self.reward_norm = ObsNorm(1)
        for module in (self.selector, self.vlstm, self.cvae, self.reward_norm):
            module.to(self.device)
        lr = float(dyps_selector_lr)
        self.actor_optimizer = torch.optim.Adam(self.selector.actor_parameters(), lr=lr)
        self.critic_optimizer = torch.optim.Adam(self.selector.critic_parameters(), lr=lr)
        self.vlstm_optimizer = torch.optim.Adam(self.vlstm.parameters(), lr=float(repr_lr))
        self.cvae_optimizer = torch.optim.Adam(self.cvae.parameters(), lr=float(repr_lr))
        self._h = torch.zeros(n, int(hidden), device=self.device)  # h^(a)[n]; 0 before any data
        self._groups = torch.zeros(n, dtype=torch.int64)
        self._decision: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._changed = 0.0
        self._norm: Any = None

    @property
    def uses_vlstm(self) -> bool:
        return self.selector.uses_repr

    @property
    def uses_cvae(self) -> bool:
        return self.selector.uses_cvae

    # ------------------------------------------------------------------ decisions
    def _latents(self) -> torch.Tensor | None:
        """``z^(g)[m]`` for Eq. 13: the CVAE's group encodings, centred over the groups and
        scaled to unit root-mean-square (the KL term of Eq. 4 pulls the raw means towards 0
        until the groups behave differently, which would scale every logit of Eq. 13 down
        with them; the scaling keeps the groups' relative geometry)."""
        if not self.uses_cvae:
            return None
        z = self.cvae.latents()
        z = z - z.mean(dim=0, keepdim=True)
        return z / (z.pow(2).mean().sqrt() + 1e-6)

    @torch.no_grad()
    def probabilities(self) -> torch.Tensor:
        """``(N, M)``: the selector's current probability of every agent for every group."""
        return torch.softmax(self.selector.logits(self._h, self._latents()), dim=-1)

    @torch.no_grad()
    def before_iteration(self, iteration: int, learner: Any) -> None:
        """Algorithm 1, lines 4-6: the selector's state from VLSTM and CVAE, one sampled group
        per agent (Gumbel-max over Eq. 13's logits, one batched draw)."""
        z = self._latents()
        logits = self.selector.logits(self._h, z)
        u = torch.rand(logits.shape, generator=self.generator).to(logits.device)
        gumbel = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))  # Gumbel(0, 1)
        groups = (logits + gumbel).argmax(dim=-1)
        previous = self._groups
        self._groups = groups.cpu()
        self._changed = float((self._groups != previous).float().mean())
        self._decision = (groups, self._h.clone(), None if z is None else z.clone())

    def after_rollout(self, rollout: Any, learner: Any) -> dict[str, float]:
        """Algorithm 1, lines 13-17: the selector's actor-critic step on the episode's reward,
        then the VLSTM (Eq. 12) and the CVAE (Eq. 4) on the rollout; the agents'
        representations for the next grouping. Only the trajectories and samples these use
        are gathered (and normalised by the backbone's observation statistics)."""
        batch = trajectories(rollout)
        stats: dict[str, float] = {
            "groups_used": float(torch.unique(self._groups).numel()),
            "groups_changed": self._changed,
        }
        if self._decision is not None:
            stats.update(self._train_selector(batch))
        self._norm = getattr(getattr(learner, "actor", None), "obs_norm", None)
        with torch.no_grad():
            self.reward_norm.update(batch.rewards.reshape(-1, 1))
        if self.uses_vlstm:
            stats.update(self._train_vlstm(batch))
            self._h = self._encode(batch)
        if self.uses_cvae:
            stats.update(self._train_cvae(batch))
        return stats

    def _train_selector(self, batch: Any) -> dict[str, float]:
        groups, h, z = self._decision  # type: ignore[misc]
        returns = batch.rewards.sum(dim=1).to(torch.float64)  # (E, N) over the rollout
        if self.selector_reward == "team":  # the episode's total reward over all agents
            reward = returns.sum(-1).mean().expand(self.num_agents)
        else:
            reward = returns.mean(0)
        value_norm = self.selector.value_norm
        value_norm.update(reward)
        target = value_norm.normalize(reward.float()).to(self.device)
        value = self.selector.value(h)
        value_loss = 0.5 * ((value - target) ** 2).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        nn.utils.clip_grad_norm_(self.selector.critic_parameters(), self.max_grad_norm)
        self.critic_optimizer.step()
        advantage = (target - value.detach()).to(torch.float32)
        log_p = torch.log_softmax(self.selector.logits(h, z), dim=-1)
        taken = log_p.gather(-1, groups.to(log_p.device).unsqueeze(-1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1).mean()
        policy_loss = -(advantage * taken).mean() - self.entropy_coef * entropy
        self.actor_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        nn.utils.clip_grad_norm_(self.selector.actor_parameters(), self.max_grad_norm)
        self.actor_optimizer.step()
        return {
            "selector_reward": float(reward.mean()),
            "selector_policy_loss": policy_loss.item(),
            "selector_value_loss": value_loss.item(),
            "selector_entropy": entropy.item(),
        }

    @torch.no_grad()
    def _inputs(self, batch: Any, copies: torch.Tensor, steps: torch.Tensor,
                agents: torch.Tensor, *, next_obs: bool) -> dict[str, torch.Tensor]:  # fmt: skip
        """The entries at broadcastable indices, ready for the models: observations normalised
        (the backbone's statistics), actions one-hot (discrete) or as floats, rewards
        normalised by their running statistics."""
        norm = self._norm
        obs = batch.at("obs", copies, steps, agents).float()
        out = {"obs": obs if norm is None else norm(obs)}
        if next_obs:
            following = batch.at("next_obs", copies, steps, agents).float()
            out["next_obs"] = following if norm is None else norm(following)
        actions = batch.at("actions", copies, steps, agents)
        out["actions_raw"] = actions
        if self.discrete:
            out["actions"] = F.one_hot(actions, self.action_width).to(obs.dtype)
        else:
            out["actions"] = actions.to(obs.dtype)
        rewards = batch.at("rewards", copies, steps, agents).float()
        out["rewards"] = self.reward_norm(rewards.unsqueeze(-1)).squeeze(-1).to(obs.dtype)
        return out

    def _starts(self, batch: Any) -> torch.Tensor:
        starts = torch.zeros_like(batch.dones)
        starts[:, 1:] = batch.dones[:, :-1]
        return starts  # (E, T)

    def _train_vlstm(self, batch: Any) -> dict[str, float]:
        e, t, n = batch.obs.shape[:3]
        pairs = torch.randperm(e * n, generator=self.generator)[: min(self.sequences, e * n)]
        copies, agents = pairs // n, pairs % n
        steps = torch.arange(t).unsqueeze(0)  # (1, T): whole trajectories
        starts = self._starts(batch)
        device = batch.obs.device
        total, count = 0.0, 0
        for begin in range(0, pairs.numel(), self.seq_batch):
            c, a = copies[begin : begin + self.seq_batch], agents[begin : begin + self.seq_batch]
            x = self._inputs(batch, c.unsqueeze(1), steps, a.unsqueeze(1), next_obs=True)
            noise = torch.randn((c.numel(), t, self.latent), generator=self.generator)
            loss, _ = self.vlstm(
                x["obs"], x["actions"], x["rewards"], x["next_obs"],
                valid=batch.valid[c.to(device)], starts=starts[c.to(device)],
                noise=noise.to(device),
            )  # fmt: skip
            self.vlstm_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.vlstm.parameters(), self.max_grad_norm)
            self.vlstm_optimizer.step()
            total, count = total + loss.item(), count + 1
        return {"vlstm_loss": total / max(count, 1)}

    @torch.no_grad()
    def _encode(self, batch: Any) -> torch.Tensor:
        """``h[n]``: the LSTM state after each agent's trajectory, mean over copies."""
        e, t, n = batch.obs.shape[:3]
        starts = self._starts(batch)
        steps = torch.arange(t).unsqueeze(0)
        agents = torch.arange(n).unsqueeze(1)
        states = []
        for copy in range(min(e, self.repr_copies)):
            cs = torch.full((n, 1), copy, dtype=torch.long)
            x = self._inputs(batch, cs, steps, agents, next_obs=False)
            _, h = self.vlstm(x["obs"], x["actions"], x["rewards"],
                              starts=starts[cs[:, 0].to(starts.device)])  # fmt: skip
            states.append(h)
        return torch.stack(states).mean(0)

    def _train_cvae(self, batch: Any) -> dict[str, float]:
        e, t, n = batch.obs.shape[:3]
        total_samples = e * t * n
        count = min(self.cvae_samples, total_samples)
        index = torch.randint(total_samples, (count,), generator=self.generator)
        copies, steps, agents = index // (t * n), (index // n) % t, index % n
        x = self._inputs(batch, copies, steps, agents, next_obs=False)
        groups = self._groups[agents].to(x["obs"].device)
        target = x["actions_raw"] if self.discrete else x["actions"]
        total, updates = 0.0, 0
        for begin in range(0, count, self.cvae_batch):
            part = slice(begin, begin + self.cvae_batch)
            noise = torch.randn((groups[part].numel(), self.latent), generator=self.generator)
            loss = self.cvae.loss(groups[part], x["obs"][part], target[part],
                                  noise.to(x["obs"].device))  # fmt: skip
            self.cvae_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.cvae.parameters(), self.max_grad_norm)
            self.cvae_optimizer.step()
            total, updates = total + loss.item(), updates + 1
        return {"cvae_loss": total / max(updates, 1)}

    # ------------------------------------------------------------------ records
    def describe(self) -> dict[str, Any]:
        """The policy file's record: the greedy grouping of the final selector (what a saved
        policy acts with), its probabilities, the representations and the selector itself."""
        record = super().describe()
        probabilities = self.probabilities().cpu()
        z = self._latents()
        record.update(
            groups=probabilities.argmax(dim=-1).tolist(),
            last_sampled_groups=self._groups.tolist(),
            ablation=self.ablation,
            probabilities=probabilities.tolist(),
            representations=self._h.cpu().tolist(),
            group_latents=None if z is None else z.detach().cpu().tolist(),
            selector={k: v.cpu() for k, v in module_tensors(self.selector, "selector").items()},
        )
        return record

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["generator"] = self.generator.get_state()
        state["representations"] = self._h.detach().cpu().clone()
        state["changed"] = torch.tensor(self._changed, dtype=torch.float64)
        for name in ("selector", "vlstm", "cvae", "reward_norm"):
            state.update({k: v.cpu() for k, v in module_tensors(getattr(self, name), name).items()})
        for name in ("actor_optimizer", "critic_optimizer", "vlstm_optimizer", "cvae_optimizer"):
            state.update(optimizer_tensors(getattr(self, name), name))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "generator" in state:
            self.generator.set_state(state["generator"])
        if "representations" in state:
            self._h = state["representations"].clone().to(self.device)
        if "changed" in state:
            self._changed = float(state["changed"])
        for name in ("selector", "vlstm", "cvae", "reward_norm"):
            load_module_tensors(getattr(self, name), state, name)
        for name in ("actor_optimizer", "critic_optimizer", "vlstm_optimizer", "cvae_optimizer"):
            load_optimizer_tensors(getattr(self, name), state, name)
