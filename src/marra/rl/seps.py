"""``seps``: selective parameter sharing (Christianos et al. 2021, "Scaling Multi-Agent
Reinforcement Learning with Selective Parameter Sharing"; paper 002's SePS baseline, ref. [6]).

1. **Pretraining** (``seps_pretrain_steps`` env-steps, SePS's default 200,000 = 5,000 updates of 8
   environments x 5 steps): every agent uses ONE shared network (group 0), trained by the
   backbone as usual; each agent's transitions ``(one-hot id, obs, action, next obs, reward)``
   are kept in a bounded uniform sample (``samples_per_agent`` per agent, reservoir sampling by
   random keys) instead of SePS's buffer of every transition.
2. **Encoding**: a VAE whose encoder sees only the agent's one-hot id, ``q(z | id)``, and whose
   decoder reconstructs ``(next obs, reward)`` from ``(z, obs, action)``; SePS's sizes and
   training (64 hidden units, 10 latent features, KL weight 1e-4, Adam 3e-4, minibatches of 128,
   summed squared error) for ``vae_steps`` minibatches (2,000; SePS takes 10 epochs over its
   whole buffer, far more on its default pretraining, but a few epochs' worth proved too few to
   separate the roles of ``roles``). Inputs and targets are standardised first (observations by
   the backbone's statistics, rewards by their own).
3. **Clustering**: scikit-learn's ``KMeans`` on the agents' encoded means ``mu(id)``, with
   ``num_groups`` clusters, or the number among 2..N-1 with the lowest
   ``davies_bouldin_score`` (as SePS's ``find_optimal_cluster_number``).
4. **K group networks**, fixed for the rest of training. The networks are built with one slot
   per possible group; at the clustering every used slot is set to the pretrained shared
   network, weights AND Adam moments (:func:`~marra.rl.grouping.copy_group_slots`), so each
   group continues from where the shared network stood. (SePS's code keeps the pretrained
   network for cluster 0 only and starts the others from their initialisation.) Unused slots
   never receive a gradient and stay as they are.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from .grouping import copy_group_slots, group_parameters, optimizers_of, trajectories
from .sharing import SharingError, SharingScheme, register_sharing

__all__ = ["SePSSharing", "EncoderVAE", "choose_num_clusters", "cluster_agents", "VAE_STEPS"]

#: Minibatches the VAE trains for (the default of ``SePSSharing(vae_steps=...)``).
VAE_STEPS = 2000


def _sklearn() -> Any:
    try:
        import sklearn.cluster
        import sklearn.metrics
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError(
            "sharing 'seps' clusters agents with scikit-learn: pip install scikit-learn"
        ) from exc
    return sklearn


class EncoderVAE(nn.Module):
    """SePS's VAE: ``q(z | agent id)`` and ``p(next obs, reward | z, obs, action)``."""

    def __init__(self, num_agents: int, decoder_in: int, target_dim: int, *,
                 latent: int = 10, hidden: int = 64) -> None:  # fmt: skip
        super().__init__()
        self.latent = int(latent)
        self.encoder = nn.Sequential(
            nn.Linear(num_agents, hidden), nn.ReLU(), nn.Linear(hidden, 2 * self.latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.latent + decoder_in, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, target_dim),
        )  # fmt: skip

    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of ``q(z | id)`` for one-hot ids ``(B, N)``."""
        out = self.encoder(ids)
        return out[:, : self.latent], out[:, self.latent :]

    def loss(self, ids: torch.Tensor, decoder_in: torch.Tensor, target: torch.Tensor,
             noise: torch.Tensor, kl_weight: float) -> torch.Tensor:  # fmt: skip
        """Summed squared reconstruction error + ``kl_weight`` KL(q || N(0, I)), per sample."""
        mu, log_var = self.encode(ids)
        z = mu + torch.exp(0.5 * log_var) * noise
        reconstruction = self.decoder(torch.cat([z, decoder_in], dim=-1))
        squared = ((reconstruction - target) ** 2).sum()
        kl = -0.5 * (1.0 + log_var - mu**2 - log_var.exp()).sum()
        return (squared + kl_weight * kl) / ids.shape[0]


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    sklearn = _sklearn()
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # one thread: on a busy machine OpenMP's threads make these tiny fits 30x slower
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # duplicate points give fewer distinct clusters: fine
        model = sklearn.cluster.KMeans(n_clusters=k, init="k-means++", n_init=10,
                                       random_state=seed)  # fmt: skip
        return model.fit_predict(points)


def choose_num_clusters(points: np.ndarray, seed: int) -> tuple[int, dict[int, float]]:
    """The number of clusters in 2..N-1 with the lowest Davies-Bouldin score of a k-means
    clustering of ``points (N, d)`` (SePS's rule), and every score. Points that are all alike
    (every score undefined) give 1: nothing tells the agents apart."""
    sklearn = _sklearn()
    scores: dict[int, float] = {}
    for k in range(2, points.shape[0]):
        labels = _kmeans(points, k, seed)
        if len(np.unique(labels)) < 2:
            continue
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            score = float(sklearn.metrics.davies_bouldin_score(points, labels))
        if math.isfinite(score):
            scores[k] = score
    if not scores:
        return 1, scores
    return min(scores, key=lambda k: (scores[k], k)), scores


def cluster_agents(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels ``(N,)`` of ``points`` (0..k-1, numbered by first appearance)."""
    if k == 1:
        return np.zeros(points.shape[0], dtype=np.int64)
    labels = _kmeans(points, k, seed)
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.asarray([order[label] for label in labels.tolist()], dtype=np.int64)


@register_sharing
class SePSSharing(SharingScheme):
    """SePS (see the module docstring).

    Options (``PPOConfig`` fields): ``num_groups`` (clusters; None: Davies-Bouldin over 2..N-1),
    ``seps_pretrain_steps``; keyword-only extras with SePS's defaults: ``samples_per_agent``
    (256), ``z_features`` (10), ``kl_weight`` (1e-4), ``vae_lr`` (3e-4), ``vae_batch`` (128), and
    ``vae_steps`` (2,000 minibatches; SePS takes 10 epochs over its whole pretraining buffer).
    """

    name = "seps"
    any_num_agents = False
    regroups = True
    takes_num_groups = True

    def __init__(
        self,
        num_agents: int,
        *,
        num_groups: int | None = None,
        seps_pretrain_steps: int = 200_000,
        spec: Any = None,
        seed: int = 1,
        device: str | torch.device = "cpu",
        samples_per_agent: int = 256,
        z_features: int = 10,
        kl_weight: float = 1e-4,
        vae_lr: float = 3e-4,
        vae_batch: int = 128,
        vae_steps: int | None = None,
        **_: Any,
    ) -> None:
        super().__init__(num_agents)
        n = self.num_agents
        if num_groups is not None:
            if not 1 <= int(num_groups) <= n:
                raise SharingError(
                    f"num_groups: sharing 'seps' clusters {n} agents into 1..{n} groups, got "
                    f"{num_groups}"
                )
            self.clusters: int | None = int(num_groups)
            self.num_groups = self.clusters
        else:
            if n < 3:
                raise SharingError(
                    f"num_groups: with {n} agents there is no number of clusters in 2..N-1 for "
                    "the Davies-Bouldin score to choose; give num_groups"
                )
            self.clusters = None
            self.num_groups = n - 1  # a slot for every number the score may choose
        if spec is None:
            raise SharingError(
                "sharing 'seps' needs the environment's spec: build the scheme with "
                "marra.rl.ppo.sharing_options(config, spec)"
            )
        self.spec = spec
        self.device = torch.device(device)
        self.pretrain_steps = int(seps_pretrain_steps)
        self.samples_per_agent = int(samples_per_agent)
        self.z_features, self.kl_weight = int(z_features), float(kl_weight)
        self.vae_lr, self.vae_batch = float(vae_lr), int(vae_batch)
        self.vae_steps = int(VAE_STEPS if vae_steps is None else vae_steps)
        self.vae_losses: list[float] = []
        self.seed = int(seed)
        seq = np.random.SeedSequence([self.seed, 0x5E95])
        self.generator = torch.Generator().manual_seed(int(seq.generate_state(1)[0]))
        self.discrete = spec.action.is_discrete
        self.action_width = int(spec.action.n) if self.discrete else int(spec.action.dim)
        self._groups = torch.zeros(n, dtype=torch.int64)
        self.steps_seen = 0
        self.grouped = False
        self.chosen = 0  # the number of clusters once grouped
        self.latents: torch.Tensor | None = None
        self.scores: dict[int, float] = {}
        width = 2 * spec.obs_dim + self.action_width + 1  # obs, action, next obs, reward
        self._buffer = torch.zeros((n, 0, width))  # (N, kept, width)
        self._keys = torch.zeros((n, 0))
        self._optimizers: list[torch.optim.Optimizer] = []

    # ------------------------------------------------------------------ hooks
    def bind(self, learner: Any) -> None:
        self._optimizers = optimizers_of(learner)

    def after_rollout(self, rollout: Any, learner: Any) -> dict[str, float]:
        if self.grouped:
            return {"seps_grouped": 1.0, "groups_used": float(self.chosen)}
        batch = trajectories(rollout)
        self._keep(batch)
        self.steps_seen += batch.num_copies * batch.steps
        return {"seps_grouped": 0.0, "groups_used": 1.0}

    def before_iteration(self, iteration: int, learner: Any) -> None:
        if self.grouped or self.steps_seen < self.pretrain_steps:
            return
        labels = self.fit(learner)
        self._set_groups(labels, learner)

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def _keep(self, batch: Any) -> None:
        """Merge the batch's transitions into each agent's uniform sample (bottom-k of random
        keys: the kept transitions are a uniform sample of all those seen so far)."""
        e, t, n = batch.obs.shape[:3]
        cap = self.samples_per_agent
        keys = torch.rand((n, e * t), generator=self.generator)
        valid = batch.valid.reshape(-1).cpu()  # (E * T,)
        keys[:, ~valid] = math.inf
        take = min(cap, e * t)
        new_keys, index = torch.topk(keys, take, dim=1, largest=False)  # (N, take)
        copies, steps = index // t, index % t  # (N, take)
        agents = torch.arange(n).unsqueeze(1).expand_as(index)

        def rows(name: str) -> torch.Tensor:  # (N, take, ...)
            return batch.at(name, copies, steps, agents)

        if self.discrete:
            action = nn.functional.one_hot(rows("actions"), self.action_width).float()
        else:
            action = rows("actions").float()
        new = torch.cat([rows("obs").float(), action, rows("next_obs").float(),
                         rows("rewards").unsqueeze(-1).float()], dim=-1).cpu()  # fmt: skip
        keys = torch.cat([self._keys, new_keys], dim=1)
        data = torch.cat([self._buffer, new], dim=1)
        keep = min(cap, keys.shape[1])
        self._keys, order = torch.topk(keys, keep, dim=1, largest=False)
        self._buffer = torch.take_along_dim(data, order.unsqueeze(-1), dim=1)

    def fit(self, learner: Any) -> np.ndarray:
        """Train the VAE on the kept transitions, encode every agent, cluster: labels ``(N,)``."""
        n, obs_dim, width = self.num_agents, self.spec.obs_dim, self.action_width
        finite = torch.isfinite(self._keys)  # (N, kept): transitions actually seen
        data = self._buffer[finite]  # (M, width)
        agent = torch.arange(n).unsqueeze(1).expand_as(finite)[finite]
        if data.shape[0] == 0:
            raise SharingError("seps: no transitions were kept during pretraining")
        obs, action = data[:, :obs_dim], data[:, obs_dim : obs_dim + width]
        next_obs, reward = data[:, obs_dim + width : 2 * obs_dim + width], data[:, -1:]
        norm = getattr(getattr(learner, "actor", None), "obs_norm", None)
        if norm is not None:  # the backbone's observation statistics
            obs, next_obs = norm(obs.to(self.device)).cpu(), norm(next_obs.to(self.device)).cpu()
        reward = (reward - reward.mean()) / (reward.std(correction=0) + 1e-8)
        decoder_in = torch.cat([obs, action], dim=-1)
        target = torch.cat([next_obs, reward], dim=-1)
        ids = nn.functional.one_hot(agent, n).float()
        seq = np.random.SeedSequence([self.seed, 0x5E95, 1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seq.generate_state(1)[0]))
            vae = EncoderVAE(n, decoder_in.shape[1], target.shape[1], latent=self.z_features)
        optimizer = torch.optim.Adam(vae.parameters(), lr=self.vae_lr)
        count = ids.shape[0]
        # SePS: 10 epochs over every pretraining transition; here vae_steps minibatches drawn
        # by passes over the kept uniform sample
        order = torch.zeros(0, dtype=torch.long)
        self.vae_losses = []
        for _ in range(self.vae_steps):
            if order.numel() < self.vae_batch:
                order = torch.cat([order, torch.randperm(count, generator=self.generator)])
            idx, order = order[: self.vae_batch], order[self.vae_batch :]
            noise = torch.randn((idx.numel(), self.z_features), generator=self.generator)
            loss = vae.loss(ids[idx], decoder_in[idx], target[idx], noise, self.kl_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.vae_losses.append(loss.item())
        with torch.no_grad():
            means = vae.encode(torch.eye(n))[0]
        self.latents = means.clone()
        points = means.double().numpy()
        seed = self.seed % 2**31
        if self.clusters is None:
            k, self.scores = choose_num_clusters(points, seed)
        else:
            k = self.clusters
        return cluster_agents(points, k, seed)

    def _set_groups(self, labels: np.ndarray, learner: Any) -> None:
        k = int(labels.max()) + 1
        params = group_parameters(learner, self.num_groups)
        copy_group_slots(params, self._optimizers, 0, list(range(1, k)))
        self._groups = torch.as_tensor(labels, dtype=torch.int64)
        self.grouped, self.chosen = True, k
        self._buffer = torch.zeros((self.num_agents, 0, self._buffer.shape[-1]))
        self._keys = torch.zeros((self.num_agents, 0))

    # ------------------------------------------------------------------ records
    def describe(self) -> dict[str, Any]:
        record = super().describe()
        record.update(
            clusters=self.chosen if self.grouped else None,
            grouped=self.grouped,
            latents=None if self.latents is None else self.latents.tolist(),
            davies_bouldin={str(k): v for k, v in self.scores.items()},
        )
        return record

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            counters=torch.tensor([self.steps_seen, int(self.grouped), self.chosen]),
            generator=self.generator.get_state(),
            buffer=self._buffer.clone(),
            keys=self._keys.clone(),
        )
        if self.latents is not None:
            state["latents"] = self.latents.clone()
        if self.scores:
            state["scores"] = torch.tensor(sorted(self.scores.items()), dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "counters" in state:
            steps, grouped, chosen = (int(v) for v in state["counters"].tolist())
            self.steps_seen, self.grouped, self.chosen = steps, bool(grouped), chosen
        if "generator" in state:
            self.generator.set_state(state["generator"])
        if "buffer" in state:
            self._buffer, self._keys = state["buffer"].clone(), state["keys"].clone()
        if "latents" in state:
            self.latents = state["latents"].clone()
        if "scores" in state:
            self.scores = {int(k): float(v) for k, v in state["scores"].tolist()}
