"""Hyperparameters of the PPO learner, in one documented dataclass.

gamma, gae_lambda and clip_coef are paper 000's values (section 3); the rest are marra's choices,
tuned so that the default run trains a useful policy for 150 hospitals in under five minutes on a
small CPU. Measured on a shared 2-core machine (one torch thread), shifting targets, n = 150,
B = 150, MAE averaged over the 50 steps of 8 held-out episodes (``benchmarks/training.py``'s
evaluation set): 1,450-1,600 env-steps/s; seed 1 scores 1.04 after the default 400,000
env-steps (272 s), seed 2 1.05 after 120,000 (85 s) and 1.01 after 400,000, against 10.39 for
doing nothing and 0.955 for re-planning with the QP under the same budget at every step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PPOConfig"]


@dataclass(frozen=True)
class PPOConfig:
    """Every hyperparameter of :func:`marra.rl.train`.

    One *env-step* is one step of one copy of the environment (all its hospitals at once). One
    *iteration* rolls ``num_envs`` copies through one whole episode of ``horizon`` steps (the
    rollout length equals the environment's horizon, so every iteration starts from freshly reset
    copies), then updates the networks for ``update_epochs`` epochs of ``num_minibatches``
    minibatches each. ``total_steps`` is rounded down to whole iterations (at least one).
    """

    # --- run --------------------------------------------------------------------------------
    seed: int = 1
    """Seed of everything: network initialisation, action sampling, minibatch order and the
    environment seeds (copy resets are seeded from ``(seed, iteration)``)."""
    total_steps: int = 400_000
    """Env-steps to train for (one env-step = one step of one copy)."""
    num_envs: int = 16
    """Environment copies stepped together (the batch dimension of the environment)."""
    device: str = "cpu"
    """Torch device for the networks and the environment."""
    torch_threads: int | None = 1
    """``torch.set_num_threads`` during training (restored afterwards); None leaves it alone.
    One by default: the networks are small and every step runs many short ops, at each of which
    OpenMP threads synchronise; on a machine where another process is busy a second thread made
    training 35 times slower (49 against 1,838 env-steps/s, 2 cores). In that measurement both
    thread counts gave the same parameters."""

    # --- advantage estimation (paper 000 Eq. 3-4) -------------------------------------------
    gamma: float = 0.99
    """Discount factor gamma (paper 000: 0.99)."""
    gae_lambda: float = 0.95
    """GAE lambda (paper 000: 0.95)."""
    reward_mode: Literal["team", "agent"] = "team"
    """"team": every hospital is credited with the team reward (paper 000 Eq. 1), one advantage
    per network state. "agent": each hospital i gets its own share r_i of Eq. (1) (the
    environment's ``info["agent_reward"]``, which sums exactly to the team reward; paper 000's
    Algorithm 1 gives each agent its own reward), its own GAE from a per-hospital value (the
    critic then outputs one value per hospital), and advantages normalised over (step, copy,
    hospital). Environments without ``agent_reward`` credit every hospital with the team
    reward."""

    # --- optimisation ----------------------------------------------------------------------
    learning_rate: float = 1e-3
    """Adam step size of the actor (alpha_theta in paper 000, Algorithm 1)."""
    critic_learning_rate: float = 1e-3
    """Adam step size of the critic (alpha_phi in paper 000, Algorithm 1)."""
    anneal_lr: bool = True
    """Anneal both step sizes linearly from their value to 0 over the run."""
    update_epochs: int = 4
    """K: passes over each rollout (paper 000, Algorithm 1)."""
    num_minibatches: int = 8
    """Minibatches per epoch; a minibatch holds whole network states (all hospitals of a copy at
    one step), so the centralised critic always sees complete networks."""
    clip_coef: float = 0.2
    """Clipping epsilon of the surrogate objective (paper 000 Eq. 5: 0.2)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss (paper 000 Eq. 7) in the total loss."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip, applied to the actor's and the critic's gradients separately."""
    norm_adv: bool = True
    """Normalise the team advantages of each rollout to mean 0, std 1."""
    obs_norm: bool = True
    """Normalise each observation feature by running statistics (:class:`RunningNorm`, part of
    the actor and of the saved policy), updated after every iteration's update. The gap
    ``(c - t) / s`` that tracking depends on is of order 0.03 next to features of order 1;
    measured (shifting, n = 150, seed 1, 400,000 env-steps, held-out MAE): 1.29 without,
    1.06 with (budgeted QP 0.955)."""
    norm_value: bool = True
    """Learn the value in normalised units (running mean/std of the returns, as MAPPO does),
    so the critic copes with reward scales that differ by orders of magnitude (eta, ablations)."""
    target_kl: float | None = None
    """Stop an iteration's epochs early once the approximate KL exceeds this; None: never."""

    # --- networks --------------------------------------------------------------------------
    actor_hidden: tuple[int, ...] = (32, 32)
    """Hidden widths of the shared per-hospital actor MLP."""
    activation: Literal["relu", "tanh"] = "relu"
    """Hidden activation of every MLP. ReLU by default: on CPU, tanh costs about six times as
    much as the matrix products of a 64-wide layer, and the networks run on n hospitals x
    num_envs rows per step."""
    critic: Literal["central", "local"] = "central"
    """"central": one value of the whole network state (per-hospital encoder, mean and max
    pooling, MLP; CTDE, MAPPO). "local": each hospital estimates the team value from its own
    observation and the estimates are averaged (independent learners, IPPO)."""
    critic_encoder_hidden: tuple[int, ...] = (32,)
    """Hidden widths of the critic's per-hospital encoder (central critic) or of the whole
    per-hospital value MLP together with ``critic_hidden`` (local critic)."""
    critic_hidden: tuple[int, ...] = (32,)
    """Hidden widths of the critic's MLP after pooling (central) / after the encoder (local)."""
    init_log_std: float = -1.5
    """Initial log standard deviation of the Gaussian policy (learned, state-independent):
    exp(-1.5) x ``action_scale`` = 2.2 staff of exploration noise at the start. Measured as
    for ``obs_norm``: 1.06 with -1.0, 1.04 with -1.5 (reached at 320,000 env-steps)."""
    action_scale: float = 10.0
    """Staff units per unit of policy output: the environment receives ``action_scale * a``.
    The default matches the typical gap |t - c| of the default network (about 10 staff)."""

    # --- bookkeeping -----------------------------------------------------------------------
    checkpoint_every: int = 10
    """Write ``checkpoint.pt`` every this many iterations (and at the end)."""

    def __post_init__(self) -> None:
        positive_ints = ("total_steps", "num_envs", "update_epochs", "num_minibatches")
        for name in (*positive_ints, "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: must lie in [0, 1], got {value!r}")
        for name in ("learning_rate", "critic_learning_rate", "clip_coef", "max_grad_norm"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"{name}: must be > 0, got {value!r}")
        for name in ("ent_coef", "vf_coef"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.action_scale <= 0.0:
            raise ValueError(f"action_scale: must be > 0, got {self.action_scale!r}")
        if self.target_kl is not None and self.target_kl <= 0.0:
            raise ValueError(f"target_kl: must be > 0 or None, got {self.target_kl!r}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads: must be >= 1 or None, got {self.torch_threads!r}")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation: must be 'relu' or 'tanh', got {self.activation!r}")
        if self.reward_mode not in ("team", "agent"):
            raise ValueError(f"reward_mode: must be 'team' or 'agent', got {self.reward_mode!r}")
        if self.critic not in ("central", "local"):
            raise ValueError(f"critic: must be 'central' or 'local', got {self.critic!r}")
        for name in ("actor_hidden", "critic_encoder_hidden", "critic_hidden"):
            widths = tuple(getattr(self, name))
            if not widths or any(int(w) != w or w < 1 for w in widths):
                raise ValueError(
                    f"{name}: must be a non-empty tuple of positive ints, got {widths}"
                )
            object.__setattr__(self, name, tuple(int(w) for w in widths))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (tuples as lists) that :meth:`from_dict` turns back into the config."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PPOConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"PPOConfig: unknown field(s) {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def replace(self, **changes: Any) -> PPOConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
