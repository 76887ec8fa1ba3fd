"""Hyperparameters of the PPO family (IPPO, MAPPO), in one documented dataclass.

gamma, gae_lambda and clip_coef are paper 000's values (section 3); the rest are marra's choices,
tuned on the hospital task so that the default run trains a useful policy for 150 hospitals in a
few minutes on a small CPU (figures in ``docs/performance.md``, "Training").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PPOConfig", "ALGORITHMS", "AlgorithmInfo", "CRITICS", "EQUITY_CONSTRAINTS"]


@dataclass(frozen=True)
class AlgorithmInfo:
    """What an algorithm supports (capability flags), so an unsupported pairing with an
    environment or a sharing scheme is one clear error (:func:`marra.rl.check_compatible`)."""

    name: str
    family: str
    description: str
    discrete: bool
    continuous: bool
    needs_state: bool
    on_policy: bool
    default_critic: str
    builder: Any = None
    """``builder(spec, config, constraint) -> Algorithm``; None: the PPO family
    (:class:`marra.rl.algorithm.PPOAlgorithm`)."""
    config_cls: Any = None
    """The config dataclass of the learner; None: :class:`PPOConfig`."""


#: The learners of the PPO family (value-based learners register theirs the same way).
ALGORITHMS: dict[str, AlgorithmInfo] = {
    "ippo": AlgorithmInfo(
        "ippo",
        "ppo",
        "independent PPO: each agent's critic sees only its own observation",
        discrete=True,
        continuous=True,
        needs_state=False,
        on_policy=True,
        default_critic="local",
    ),  # fmt: skip
    "mappo": AlgorithmInfo(
        "mappo",
        "ppo",
        "multi-agent PPO: a centralised critic on the global state (CTDE)",
        discrete=True,
        continuous=True,
        needs_state=True,
        on_policy=True,
        default_critic="state",
    ),  # fmt: skip
}

#: Constraints on the advantages (``PPOConfig.equity``): ``eld`` is :mod:`marra.rl.eld`.
EQUITY_CONSTRAINTS = ("none", "eld")

#: Critic inputs: ``local`` (own observation), ``state`` (``env.state()``), ``pool`` (a deep set
#: over every agent's observation: centralised, any number of agents).
CRITICS = ("local", "state", "pool")


@dataclass(frozen=True)
class PPOConfig:
    """Every hyperparameter of :func:`marra.rl.train`.

    One *env-step* is one step of one copy of the environment (all its agents at once); one
    *agent-step* is one agent's part of it. One *iteration* rolls ``num_envs`` copies for
    ``rollout_steps`` steps (default: the environment's horizon, so every iteration is one whole
    episode of every copy, freshly reset), then updates the networks for ``update_epochs``
    epochs of ``num_minibatches`` minibatches each. ``total_steps`` is rounded UP to whole
    iterations (the run says so when it rounds).
    """

    # --- algorithm ---------------------------------------------------------------------------
    algo: Literal["ippo", "mappo"] = "mappo"
    """``"ippo"``: per-agent critics on their own observation; ``"mappo"``: a centralised critic
    (``critic`` below)."""
    sharing: str = "full"
    """Parameter sharing of the actor and the per-agent critics: ``"none"``, ``"full"``, ``"id"``
    (:mod:`marra.rl.sharing`), ``"psa"``, ``"seps"``, ``"dyps"`` (``docs/sharing.md``)."""
    critic: Literal["auto", "local", "state", "pool"] = "auto"
    """Critic input: ``"auto"`` (ippo: ``local``, mappo: ``state``), ``"local"``, ``"state"``
    (``env.state()``), ``"pool"`` (mean and max pooling of per-agent encodings of every agent's
    observation; centralised, defined for any number of agents)."""

    # --- run ---------------------------------------------------------------------------------
    seed: int = 1
    """Seed of everything: network initialisation, action sampling, minibatch order and the
    environment seeds (copies are reset from ``(seed, iteration)``)."""
    total_steps: int = 400_000
    """Env-steps to train for (one env-step = one step of one copy)."""
    num_envs: int = 16
    """Environment copies stepped together (the batch dimension of the environment)."""
    rollout_steps: int | None = None
    """Steps per copy per iteration; None: the environment's horizon (one whole episode)."""
    device: str = "cpu"
    """Torch device for the networks and the environment."""
    torch_threads: int | None = 1
    """``torch.set_num_threads`` during training (restored afterwards); None leaves it alone.
    One by default: the networks are small and every step runs many short ops at each of which
    OpenMP threads synchronise, which on a busy machine costs far more than it gains
    (``docs/performance.md``). Thread counts do not change the numbers a run produces."""

    # --- advantage estimation (paper 000 Eq. 3-4) -------------------------------------------
    gamma: float = 0.99
    """Discount factor gamma (paper 000: 0.99)."""
    gae_lambda: float = 0.95
    """GAE lambda (paper 000: 0.95)."""

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
    """Minibatches per epoch; a minibatch holds whole environment states (every agent of a copy
    at one step), so a centralised critic always sees complete states."""
    clip_coef: float = 0.2
    """Clipping epsilon of the surrogate objective (paper 000 Eq. 5: 0.2)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss (paper 000 Eq. 7) in the total loss."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip, applied to the actor's and the critic's gradients separately."""
    norm_adv: bool = True
    """Normalise the advantages of each rollout to mean 0, std 1."""
    obs_norm: bool = True
    """Normalise each observation feature by running statistics (:class:`ObsNorm`, part of the
    actor and of the saved policy), updated after every iteration's update."""
    norm_value: bool = True
    """Learn the value in normalised units (running mean/std of the returns, as MAPPO does)."""
    target_kl: float | None = None
    """Stop an iteration's epochs early once the approximate KL exceeds this; None: never."""

    # --- networks --------------------------------------------------------------------------
    actor_hidden: tuple[int, ...] = (32, 32)
    """Hidden widths of the per-agent actor MLP."""
    activation: Literal["relu", "tanh"] = "relu"
    """Hidden activation of every MLP (ReLU: on CPU tanh costs several times a small matmul)."""
    critic_encoder_hidden: tuple[int, ...] = (32,)
    """Hidden widths of the critic's first part (the per-agent encoder of the ``pool`` critic;
    for ``local``/``state`` critics simply the first hidden layers)."""
    critic_hidden: tuple[int, ...] = (32,)
    """Hidden widths of the critic's second part."""
    init_log_std: float = -1.5
    """Initial log standard deviation of Gaussian policies (learned, state-independent)."""
    action_scale: float | None = None
    """Environment units per unit of Gaussian policy output (the environment receives
    ``center + action_scale * a``); None: the environment's hint ``spec.action_scale`` (the
    hospital: 10 staff), else half the action range (1 for unbounded actions)."""
    id_onehot_max: int = 64
    """``sharing="id"``: one-hot identities up to this many agents, a learned embedding above."""
    id_embedding_dim: int = 16
    """``sharing="id"``: width of the learned identity embedding."""
    num_groups: int | None = None
    """``sharing="seps"``: the number of clusters (None: chosen by the Davies-Bouldin score over
    2..N-1, as SePS does); ``"dyps"``: the number of parameter groups (None: 4, the best number
    on ride-hailing(2) in paper 002, Figure 6a; at most the number of agents)."""
    seps_pretrain_steps: int = 200_000
    """``sharing="seps"``: env-steps of the pretraining phase with one shared network (SePS's
    default: 5,000 updates of 8 environments x 5 steps)."""
    dyps_ablation: Literal["none", "no-cvae", "no-vlstm", "no-repr"] = "none"
    """``sharing="dyps"``: paper 002 Table 3's variants: ``no-cvae`` (an MLP on the VLSTM
    representation picks the group), ``no-vlstm`` (agent identity against the CVAE's group
    encodings), ``no-repr`` (an MLP on the agent identity only)."""
    dyps_selector_lr: float = 1e-4
    """``sharing="dyps"``: Adam step size of the group-selection actor and critic (paper 002
    Table 6: 1e-4 on ride-hailing, 1e-5 on LBF and RWARE)."""
    dyps_selector_reward: Literal["team", "agent"] = "team"
    """``sharing="dyps"``: the group selector's reward: ``"team"`` the episode's total reward
    over all agents (paper 002 section 3.3), ``"agent"`` each agent's own episode return."""

    # --- equity constraint (ELD, paper 003 section 4.2; :mod:`marra.rl.eld`) ----------------
    equity: Literal["none", "eld"] = "none"
    """``"eld"``: enforce E[H/N] <= ``equity_budget`` on the episode outcomes with the
    Equity-Lagrangian Dual update (paper 003, Algorithm 1); ``"none"``: the backbone alone."""
    equity_tau: float = 0.1
    """ELD: tolerance band tau of the excess (paper 003 Eq. 2), relative to the mean outcome."""
    equity_budget: float = 0.0
    """ELD: the budget epsilon of the normalised MRE H/N (paper 003 Eq. 8), in outcome units."""
    dual_lr: float = 1.0
    """ELD: step size eta_lambda of the dual ascent (paper 003 Eq. 10), per unit of H/N."""
    dual_every: int = 16
    """ELD: K, finished episodes per dual step (paper 003 Algorithm 1, line 5)."""
    lambda_max: float = 12.0
    """ELD: the cap of the dual variable (paper 003 Figure 7 recommends 12-15)."""
    equity_alpha: float = 0.0
    """ELD: weight alpha in [0, 1] of the centred identity term (paper 003 Eq. 13)."""
    equity_form: Literal["auto", "fd", "ctde"] = "auto"
    """ELD: ``"fd"`` (per-agent G^id) or ``"ctde"`` (team G^eq) form of Eq. 13; ``"auto"``:
    ``ctde`` with a centralised critic, ``fd`` with local critics."""

    # --- bookkeeping -----------------------------------------------------------------------
    checkpoint_every: int = 10
    """Write ``checkpoint.pt`` every this many iterations (and at the end)."""

    def __post_init__(self) -> None:
        from marra.rl.sharing import SHARING_SCHEMES

        if self.algo not in ALGORITHMS:
            raise ValueError(
                f"algo: unknown algorithm {self.algo!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        if self.sharing not in SHARING_SCHEMES:
            raise ValueError(
                f"sharing: unknown scheme {self.sharing!r}; choose one of "
                f"{', '.join(SHARING_SCHEMES)}"
            )
        if self.critic == "central":  # the name of marra 0.1
            object.__setattr__(self, "critic", "pool")
        if self.critic not in ("auto", *CRITICS):
            raise ValueError(f"critic: one of auto, {', '.join(CRITICS)}; got {self.critic!r}")
        positive_ints = ("total_steps", "num_envs", "update_epochs", "num_minibatches")
        for name in (*positive_ints, "checkpoint_every", "id_onehot_max", "id_embedding_dim",
                     "seps_pretrain_steps"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if self.rollout_steps is not None and (
            isinstance(self.rollout_steps, bool)
            or not isinstance(self.rollout_steps, int)
            or self.rollout_steps < 1
        ):
            raise ValueError(
                f"rollout_steps: a positive integer or None, got {self.rollout_steps!r}"
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not (0 <= self.seed < 2**63)
        ):
            raise ValueError(f"seed: must be an integer in [0, 2**63), got {self.seed!r}")
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
        if self.num_groups is not None and (
            isinstance(self.num_groups, bool)
            or not isinstance(self.num_groups, int)
            or self.num_groups < 1
        ):
            raise ValueError(f"num_groups: a positive integer or None, got {self.num_groups!r}")
        if self.dyps_ablation not in ("none", "no-cvae", "no-vlstm", "no-repr"):
            raise ValueError(
                "dyps_ablation: one of none, no-cvae, no-vlstm, no-repr; got "
                f"{self.dyps_ablation!r}"
            )
        if not self.dyps_selector_lr > 0.0:
            raise ValueError(f"dyps_selector_lr: must be > 0, got {self.dyps_selector_lr!r}")
        if self.dyps_selector_reward not in ("team", "agent"):
            raise ValueError(
                f"dyps_selector_reward: 'team' or 'agent', got {self.dyps_selector_reward!r}"
            )
        if self.action_scale is not None and not self.action_scale > 0.0:
            raise ValueError(f"action_scale: must be > 0 or None, got {self.action_scale!r}")
        if self.target_kl is not None and self.target_kl <= 0.0:
            raise ValueError(f"target_kl: must be > 0 or None, got {self.target_kl!r}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads: must be >= 1 or None, got {self.torch_threads!r}")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation: must be 'relu' or 'tanh', got {self.activation!r}")
        self._check_equity()
        for name in ("actor_hidden", "critic_encoder_hidden", "critic_hidden"):
            widths = tuple(getattr(self, name))
            if not widths or any(int(w) != w or w < 1 for w in widths):
                raise ValueError(
                    f"{name}: must be a non-empty tuple of positive ints, got {widths}"
                )
            object.__setattr__(self, name, tuple(int(w) for w in widths))

    def _check_equity(self) -> None:
        if self.equity not in EQUITY_CONSTRAINTS:
            raise ValueError(f"equity: one of {', '.join(EQUITY_CONSTRAINTS)}; got {self.equity!r}")
        if self.equity_form not in ("auto", "fd", "ctde"):
            raise ValueError(f"equity_form: auto, fd or ctde; got {self.equity_form!r}")
        for name in ("equity_tau", "equity_budget", "lambda_max"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.dual_lr, int | float) and math.isfinite(self.dual_lr)
                and self.dual_lr > 0):  # fmt: skip
            raise ValueError(f"dual_lr: must be a finite number > 0, got {self.dual_lr!r}")
        if not (isinstance(self.equity_alpha, int | float) and 0.0 <= self.equity_alpha <= 1.0):
            raise ValueError(f"equity_alpha: must lie in [0, 1], got {self.equity_alpha!r}")
        value = self.dual_every
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"dual_every: must be a positive integer, got {value!r}")

    @property
    def critic_kind(self) -> str:
        """The critic input actually used (``critic`` with ``"auto"`` resolved)."""
        if self.critic != "auto":
            return self.critic
        return ALGORITHMS[self.algo].default_critic

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
