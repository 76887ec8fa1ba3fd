"""SOTO (Zimmer, Glanois, Siddique, Weng 2021): PPO whose advantages are weighted by a fair
social welfare function, with a self-oriented warm-up phase. ``--algo soto``.

SOTO is PPO with a different advantage, so marra writes it as that transform of the PPO
family's GAE advantages (:meth:`~marra.rl.algorithm.PPOAlgorithm.transform_advantages`); the
PPO math stays in :func:`marra.rl.ppo_update`. It needs per-agent rewards and per-agent critics
(``critic="auto"`` is MAPPO's ``state`` critic ``V_i(s, o_i)``: the centralised-learning variant
of the original, ``SOTO-*-CLDE.py`` in ``matthieu637/DFRL``). Within each period of ``period``
steps of an episode (the original's ``T``: 50 in Matthew, 25 in Job) every agent is, with
probability ``beta = max(0, 1 - (iteration - 1) / (self_phase * iterations))`` (the original's
``max(0, 1 - episode / (twophase_proportion n_episode))``, ``twophase_proportion`` 0.5),
*self-oriented* and learns from its own advantage, else *team-oriented* and learns from the
welfare-weighted advantage of everyone:

- ``welfare="ggf"`` (generalised Gini, ``SOTO(G_w)``): each agent's advantage is standardised
  (mean 0, std 1 over the rollout), then ``A_team = sum_j w_{rank(j)} A_j`` with
  ``w_k = ggf_base^-k`` and ``rank`` the agent's place when the returns so far in the episode
  ``J_j`` are sorted ascending (the worst-off first, weight 1) at the end of the period, as the
  original computes them (``get_omega``, ``ggi_type=xpowerminusn``, ``ggi_constant=2``);
- ``welfare="alpha"`` (alpha-fairness, ``SOTO(phi_alpha)``): ``A_team = sum_j (J_j + 1e-10)^-alpha
  A_j`` on the raw advantages (``alpha_fairness`` 0.9), the gradient of
  ``sum_j J_j^(1-alpha) / (1-alpha)``.

Where marra differs from the original, and why: the original keeps two networks per agent (a
self-oriented policy and a team-oriented one whose input also holds the self-oriented policy's
action distribution and the neighbours' normalised returns) and updates them after every
period; marra trains ONE policy per sharing group on the plain observation, with the two kinds
of advantage mixed by the phase draw, and updates once per iteration. The fairness signal (the
welfare weights on the advantages) and the phase schedule are the original's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from marra.envs.base import EnvSpec

from .algorithm import Constraint, PPOAlgorithm
from .config import ALGORITHMS, AlgorithmInfo, PPOConfig
from .eld import episode_positions
from .ppo import CompatibilityError
from .rollout import Rollout

__all__ = ["SOTOConfig", "SOTOAlgorithm", "welfare_advantage", "ggf_weights", "returns_so_far"]


@dataclass(frozen=True)
class SOTOConfig(PPOConfig):
    """:class:`~marra.rl.PPOConfig` plus SOTO's settings (module docstring)."""

    algo: str = "soto"  # type: ignore[assignment]
    welfare: Literal["ggf", "alpha"] = "ggf"
    """``"ggf"``: generalised Gini weights ``ggf_base^-rank`` (worst first); ``"alpha"``:
    alpha-fairness weights ``J^-alpha_fairness``."""
    ggf_base: float = 2.0
    """Base of the generalised Gini weights (the original's ``ggi_constant``)."""
    alpha_fairness: float = 0.9
    """alpha of the alpha-fairness welfare (the original's ``alpha_fairness``)."""
    self_phase: float = 0.5
    """Share of the run over which the self-oriented probability falls from 1 to 0."""
    period: int = 50
    """Steps per period: the phase is drawn, and the ranks taken, once per period."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.welfare not in ("ggf", "alpha"):
            raise ValueError(f"welfare: 'ggf' or 'alpha', got {self.welfare!r}")
        if not self.ggf_base >= 1.0:
            raise ValueError(f"ggf_base: must be >= 1, got {self.ggf_base!r}")
        if not self.alpha_fairness >= 0.0:
            raise ValueError(f"alpha_fairness: must be >= 0, got {self.alpha_fairness!r}")
        if not 0.0 < self.self_phase <= 1.0:
            raise ValueError(f"self_phase: must lie in (0, 1], got {self.self_phase!r}")
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise ValueError(f"period: must be a positive integer, got {self.period!r}")


def returns_so_far(rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
    """``J (T, E, N)``: each agent's return in its episode up to and including step ``t``
    (``rewards``, ``dones`` ``(T, E, N)``; every copy starts a fresh episode at ``t = 0``)."""
    out = torch.empty_like(rewards, dtype=torch.float64)
    running = torch.zeros(rewards.shape[1:], dtype=torch.float64, device=rewards.device)
    for t in range(rewards.shape[0]):
        running = running + rewards[t].to(torch.float64)
        out[t] = running
        running = running * (1.0 - dones[t].to(torch.float64))
    return out


def ggf_weights(values: torch.Tensor, base: float) -> torch.Tensor:
    """``base^-rank(j)`` per entry of ``values (..., N)``, rank 0 for the smallest (ties by
    lower index): the derivative of the generalised Gini welfare ``sum_k w_k v_(k)``."""
    order = torch.sort(values, dim=-1, stable=True).indices
    rank = torch.argsort(order, dim=-1)
    return torch.as_tensor(base, dtype=torch.float64) ** (-rank.to(torch.float64))


def _period_end_values(returns: torch.Tensor, dones: torch.Tensor, period: int) -> torch.Tensor:
    """``returns`` taken at the last step of each step's period (or of its episode, or of the
    rollout, whichever comes first)."""
    steps = returns.shape[0]
    end, step = episode_positions(dones[..., 0].cpu())
    index = torch.arange(steps).unsqueeze(-1)
    last = index + (period - 1 - step % period)
    last = torch.minimum(torch.minimum(last, end), torch.full_like(last, steps - 1))
    where = last.to(returns.device).unsqueeze(-1).expand_as(returns)
    return returns.gather(0, where)


def welfare_advantage(
    advantages: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    *,
    welfare: str,
    period: int,
    ggf_base: float = 2.0,
    alpha_fairness: float = 0.9,
) -> torch.Tensor:
    """The team-oriented advantage ``(T, E)`` from per-agent ``advantages``, ``rewards`` and
    ``dones`` ``(T, E, N)`` (module docstring), float64."""
    adv = advantages.to(torch.float64)
    returns = _period_end_values(returns_so_far(rewards, dones), dones, period)
    if welfare == "ggf":
        flat = adv.flatten(0, 1)
        standard = (adv - flat.mean(dim=0)) / (flat.std(dim=0) + 1e-10)
        return (ggf_weights(returns, ggf_base) * standard).sum(dim=-1)
    weights = (returns + 1e-10) ** (-alpha_fairness)
    return (weights * adv).sum(dim=-1)


class SOTOAlgorithm(PPOAlgorithm):
    """SOTO on the PPO family: the GAE advantages are replaced by the self- or team-oriented
    advantage of each agent and period (module docstring)."""

    def __init__(
        self, spec: EnvSpec, config: SOTOConfig, constraint: Constraint | None = None
    ) -> None:
        if spec.reward != "agent":
            raise CompatibilityError(
                f"algo 'soto' needs per-agent rewards; {spec.name} gives every agent the team "
                "reward (a welfare of equal returns is the return)"
            )
        if config.critic_kind == "pool":
            raise CompatibilityError("algo 'soto' needs per-agent critics: critic local or state")
        super().__init__(spec, config, constraint)

    def transform_advantages(
        self,
        advantages: torch.Tensor,
        rollout: Rollout,
        iteration: int,
        num_iterations: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        config: SOTOConfig = self.config  # type: ignore[assignment]
        team = welfare_advantage(
            advantages, rollout.rewards, rollout.dones, welfare=config.welfare,
            period=config.period, ggf_base=config.ggf_base,
            alpha_fairness=config.alpha_fairness,
        )  # fmt: skip
        out = team.unsqueeze(-1).expand_as(advantages).to(torch.float64)
        beta = max(0.0, 1.0 - (iteration - 1) / (config.self_phase * num_iterations))
        if beta > 0.0:  # self-oriented agents learn from their own (standardised) advantage
            steps, copies, n = advantages.shape
            _, step = episode_positions(rollout.dones[..., 0].cpu())
            period_index = torch.cumsum((step % config.period == 0).to(torch.int64), dim=0) - 1
            draws = torch.rand((steps, copies, n), generator=generator, dtype=torch.float64)
            where = period_index.unsqueeze(-1).expand(steps, copies, n)
            selfish = (draws.gather(0, where) < beta).to(advantages.device)
            flat = advantages.to(torch.float64).flatten(0, 1)
            own = (advantages - flat.mean(dim=0)) / (flat.std(dim=0) + 1e-10)
            out = torch.where(selfish, own, out)
        return out.to(advantages.dtype)


def _build(spec: EnvSpec, config: Any, constraint: Constraint | None) -> SOTOAlgorithm:
    if not isinstance(config, SOTOConfig):  # a plain PPOConfig(algo="soto"): SOTO's defaults
        known = {f.name for f in dataclasses.fields(SOTOConfig)}
        config = SOTOConfig.from_dict({k: v for k, v in config.to_dict().items() if k in known})
    return SOTOAlgorithm(spec, config, constraint)


ALGORITHMS["soto"] = AlgorithmInfo(
    "soto",
    "ppo",
    "SOTO: PPO on welfare-weighted advantages (generalised Gini or alpha-fairness) after a "
    "self-oriented phase",
    discrete=True,
    continuous=True,
    needs_state=True,
    on_policy=True,
    default_critic="state",
    builder=_build,
    config_cls=SOTOConfig,
)
