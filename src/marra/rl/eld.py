"""ELD, the Equity-Lagrangian Dual update (paper 003, section 4.2 and Algorithm 1), as a
:class:`~marra.rl.algorithm.Constraint` on any policy-gradient learner's advantages.

ELD enforces an expected-MRE budget while the backbone maximises its return (paper 003 Eq. 8-9):

    max_theta J_eff(theta)  s.t.  J_eq(theta) = E[H/N (x)] <= epsilon,
    L(theta, lambda) = J_eff(theta) - lambda (J_eq(theta) - epsilon),  lambda >= 0,

where ``x`` is each finished episode's outcome vector (``info["episode_outcome"]``, one value per
agent). The three parts, in the order the PPO iteration calls them:

1. **Episode reducer** (:meth:`ELD.observe`, :func:`reduce_outcomes`): for each finished
   episode the excess ``e`` (Eq. 2, tolerance ``tau``), ``E``, the MRE ``H`` and ``H/N``
   (section 3.2, computed by :func:`marra.metrics.mre`), and the identity signals
   ``s_i = e_i q_inc_i`` (Eq. 11).
2. **Shaped advantage** (:meth:`ELD.shape_advantage`, Eq. 13): with ``A^eff`` the backbone's
   advantage (GAE: ``G^eff - b^eff`` with the critic as ``b^eff``),

       FD (per-agent credit, local critics):   A_ti = A^eff_ti - lambda (G^id_ti - b^id_ti)
                                                      - lambda alpha (s_i - s_bar_t)
       CTDE (team cost, centralised critics):  A_ti = A^eff_ti - lambda (G^eq_t - b^eq_t)
                                                      - lambda alpha (s_i - s_bar_t)

   with ``G^id_ti = gamma^(T-1-t) s_i`` and ``G^eq_t = gamma^(T-1-t) H/N`` (Eq. 12b-c), ``T-1``
   the episode's last step. Steps of an episode the rollout cut before its end have no outcome
   yet: their extra terms are 0 (the cost-to-go is replaced by its baseline).
3. **Periodic dual ascent** (:meth:`ELD.update`, Eq. 10): every ``K`` finished episodes,
   ``lambda <- clip(lambda + eta (mean H/N over those K - epsilon), 0, lambda_max)``.

**Why the estimator stays unbiased.** The policy gradient is ``E[sum_t grad log pi(a_t|o_t)
A_t]``. ``G^id_t`` (``G^eq_t``) is the discounted equity cost-to-go from step ``t``, so
``A^eff - lambda G`` estimates ``grad J_eff - lambda grad J_eq = grad L(theta, lambda)`` at a
fixed lambda. Any baseline ``b`` that is fixed before ``a_t`` is drawn adds nothing in
expectation: ``E_{a~pi}[b grad log pi(a|o)] = b grad sum_a pi(a|o) = b grad 1 = 0``. ELD's
baselines use only the agent's identity, the in-episode step index ``k`` (the discount
``gamma^(horizon-1-k)`` is known before acting, whether or not the episode later ends early)
and running means of ``s_i`` and ``H/N`` from *earlier* rollouts, never the current rollout's
actions; and lambda is the one set before the rollout it shapes (the dual step comes after the
policy step, so lambda is not a function of the samples it weights). With ``alpha = 0`` (the
default) the shaped estimator is therefore unbiased for ``grad L(theta, lambda)``. The centred
term is not a baseline: ``s_i`` depends on the episode's actions, so it adds ``lambda alpha grad
E[s_i]`` (an undiscounted identity cost, the paper's optional extra pressure), and ``s_bar_t``
(the batch mean at step ``t``) holds each sample's own signal with weight ``1 / (copies x
agents)``, a vanishing dependence. ``tests/test_eld.py`` checks the testable part: the baseline
term has zero mean under the policy and the centred term sums to zero at every step.

Two choices where the paper leaves room, both documented in ``docs/equity.md``: the dual step
follows the policy step (Algorithm 1 puts it before, on the same episodes; doing it after keeps
lambda independent of the samples it weights), and the baselines are exponential moving
averages (decay 0.9, bias-corrected) of each agent's ``s_i`` and of ``H/N``. With lambda = 0 the
advantages are returned untouched, so a run whose budget is never exceeded is bitwise the
backbone's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from marra import metrics

from .algorithm import Constraint
from .ppo import TrainingError
from .rollout import Rollout

__all__ = [
    "ELD",
    "EpisodeEquity",
    "reduce_outcomes",
    "dual_step",
    "episode_positions",
    "make_constraint",
]

#: decay of the running means used as action-independent baselines
BASELINE_DECAY = 0.9


@dataclass(frozen=True)
class EpisodeEquity:
    """The reducer's output for ``K`` finished episodes of ``N`` agents (float64 tensors).

    Attributes:
        outcomes: ``x``, ``(K, N)``.
        excess: ``e_i = [|x_i - mean| - tau mean]_+`` (paper 003 Eq. 2), ``(K, N)``.
        total_excess: ``E = sum_i e_i``, ``(K,)``.
        mre: ``H = 0.5 ||e - E u||_1`` (section 3.2.3), ``(K,)``.
        mre_normalised: ``H / N``, ``(K,)``.
        inc_rate: share of agents outside the band (Eq. 3), ``(K,)``.
        signal: ``s_i = e_i 1(e_i > 0) / max(c, 1)`` (Eq. 11; Algorithm 1 line 6), ``(K, N)``.
    """

    outcomes: torch.Tensor
    excess: torch.Tensor
    total_excess: torch.Tensor
    mre: torch.Tensor
    mre_normalised: torch.Tensor
    inc_rate: torch.Tensor
    signal: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.outcomes.shape[0])


def reduce_outcomes(outcomes: torch.Tensor, tau: float = 0.1) -> EpisodeEquity:
    """The episode reducer (paper 003 Algorithm 1, lines 4 and 6) for outcomes ``(K, N)``.

    Every quantity comes from :func:`marra.metrics.mre` (one call per episode), so the
    definitions and edge cases are those of the metric: ``E = 0`` gives ``H = 0`` and ``s = 0``.

    Raises:
        TrainingError: an outcome that is negative or not finite (MRE is defined for
            non-negative outcomes such as shares, items or utilities, paper 003 section 3.1).
    """
    x = outcomes.detach().to(torch.float64).cpu()
    if x.ndim != 2:
        raise ValueError(f"outcomes: expected (episodes, agents), got {tuple(x.shape)}")
    k, n = x.shape
    rows = x.numpy()
    excess = np.zeros((k, n))
    signal = np.zeros((k, n))
    scalars = np.zeros((k, 4))  # E, H, H/N, IncRate
    for row in range(k):
        try:
            result = metrics.mre(rows[row], tau)
        except metrics.MetricError as exc:
            raise TrainingError(
                f"ELD: an episode outcome is not a finite number >= 0 ({exc}); MRE (paper 003) "
                "is defined for non-negative outcomes: train ELD on an environment whose "
                "info['episode_outcome'] is a share, a count or a utility"
            ) from None
        excess[row] = result.excess
        signal[row] = result.excess * result.q_inc  # paper 003 Eq. (11)
        scalars[row] = (result.total_excess, result.h, result.h_normalised, result.inc_rate)
    s = torch.from_numpy(scalars)
    return EpisodeEquity(
        outcomes=x,
        excess=torch.from_numpy(excess),
        total_excess=s[:, 0],
        mre=s[:, 1],
        mre_normalised=s[:, 2],
        inc_rate=s[:, 3],
        signal=torch.from_numpy(signal),
    )


def dual_step(
    lam: float, mre_normalised: float, budget: float, lr: float, lambda_max: float
) -> float:
    """``clip(lam + lr (mre_normalised - budget), 0, lambda_max)`` (paper 003 Eq. 10, with the
    cap of section 5's ablation)."""
    violation = mre_normalised - budget  # psi, paper 003 section 4.2.1
    return float(min(max(lam + lr * violation, 0.0), lambda_max))  # paper 003 Eq. (10)


def episode_positions(dones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a rollout that starts every copy with a fresh episode, ``dones (T, E)`` (1 where an
    episode ended with that step): ``(end, step)``, both ``(T, E)`` int64, where ``end[t, e]``
    is the step at which the episode holding step ``t`` ends (``T`` when it does not end within
    the rollout) and ``step[t, e]`` is ``t``'s index within its episode (0 at its first step)."""
    done = dones.to(torch.bool)
    steps = dones.shape[0]
    index = torch.arange(steps, device=dones.device).unsqueeze(-1).expand_as(done)
    # the first done at or after t: a reversed running minimum
    at_end = torch.where(done, index, torch.full_like(index, steps))
    end = torch.flip(torch.cummin(torch.flip(at_end, [0]), dim=0).values, [0])
    # the last done strictly before t: a running maximum, shifted by one step
    at_done = torch.where(done, index, torch.full_like(index, -1))
    last = torch.cummax(at_done, dim=0).values
    previous = torch.cat([torch.full_like(last[:1], -1), last[:-1]], dim=0)
    return end, index - previous - 1


class ELD(Constraint):
    """The Equity-Lagrangian Dual update (see the module docstring).

    Args:
        num_agents: ``N``.
        horizon: the environment's episode length (discounts of the baselines).
        gamma: the backbone's discount (Eq. 12).
        tau: tolerance band (Eq. 2).
        budget: epsilon, the budget of ``E[H/N]`` (Eq. 8).
        dual_lr: eta_lambda (Eq. 10).
        dual_every: ``K``, finished episodes per dual step.
        lambda_max: cap of lambda.
        alpha: weight of the centred identity term (Eq. 13), in [0, 1].
        form: ``"fd"`` (per-agent ``G^id``) or ``"ctde"`` (team ``G^eq``).
    """

    name: ClassVar[str] = "eld"

    def __init__(
        self,
        *,
        num_agents: int,
        horizon: int,
        gamma: float = 0.99,
        tau: float = 0.1,
        budget: float = 0.0,
        dual_lr: float = 1.0,
        dual_every: int = 16,
        lambda_max: float = 12.0,
        alpha: float = 0.0,
        form: str = "fd",
    ) -> None:
        if form not in ("fd", "ctde"):
            raise ValueError(f"form: 'fd' or 'ctde', got {form!r}")
        self.num_agents = int(num_agents)
        self.horizon = int(horizon)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.budget = float(budget)
        self.dual_lr = float(dual_lr)
        self.dual_every = int(dual_every)
        self.lambda_max = float(lambda_max)
        self.alpha = float(alpha)
        self.form = form
        self.lam = 0.0
        self.dual_steps = 0
        self.pending: list[float] = []  # H/N of episodes not yet in a dual step
        # running means (numerator, weight) of s_i and H/N: the action-independent baselines
        self.signal_sum = torch.zeros(self.num_agents, dtype=torch.float64)
        self.mre_sum = 0.0
        self.weight = 0.0
        self._episodes: EpisodeEquity | None = None
        self._ends: tuple[torch.Tensor, torch.Tensor] | None = None  # (t, copy) of each row

    @classmethod
    def from_config(cls, config: Any, spec: Any) -> ELD:
        """ELD with ``config``'s ``equity_*`` settings for an environment with ``spec``;
        ``equity_form="auto"`` is ``ctde`` with a centralised critic, else ``fd``."""
        form = config.equity_form
        if form == "auto":
            form = "fd" if config.critic_kind == "local" else "ctde"
        return cls(
            num_agents=spec.num_agents, horizon=spec.horizon, gamma=config.gamma,
            tau=config.equity_tau, budget=config.equity_budget, dual_lr=config.dual_lr,
            dual_every=config.dual_every, lambda_max=config.lambda_max,
            alpha=config.equity_alpha, form=form,
        )  # fmt: skip

    # ------------------------------------------------------------------------- the hooks
    def observe(self, rollout: Rollout, model: Any) -> None:
        """The episode reducer on the rollout's finished episodes (Algorithm 1, lines 4, 6)."""
        self._episodes, self._ends = None, None
        if not rollout.episode_outcomes:
            return
        outcomes = torch.cat(rollout.episode_outcomes, dim=0)
        steps = torch.cat(
            [torch.full((len(rows),), t, dtype=torch.int64) for t, rows in rollout.episode_ends]
        )
        copies = torch.cat([rows.to(torch.int64) for _, rows in rollout.episode_ends])
        self._episodes = reduce_outcomes(outcomes, self.tau)
        self._ends = (steps, copies)
        self.pending.extend(self._episodes.mre_normalised.tolist())

    def baselines(self) -> tuple[torch.Tensor, float]:
        """``(b_s (N,), b_H)``: the running means of ``s_i`` and ``H/N`` over earlier rollouts
        (zeros before the first)."""
        if self.weight == 0.0:
            return torch.zeros(self.num_agents, dtype=torch.float64), 0.0
        return self.signal_sum / self.weight, self.mre_sum / self.weight

    def equity_terms(self, dones: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pieces of Eq. 13 for the observed rollout with ``dones (T, E)``, float64:
        ``signal`` ``s_i`` of each step's episode ``(T, E, N)``, ``g_id`` and ``b_id``
        ``(T, E, N)``, ``g_eq`` and ``b_eq`` ``(T, E)``, ``centred`` ``s_i - s_bar_t``
        ``(T, E, N)`` and ``valid`` ``(T, E)`` (steps whose episode ended in the rollout)."""
        steps, copies = dones.shape[:2]
        n = self.num_agents
        end, step = episode_positions(dones.cpu())
        valid = end < steps
        signal_at_end = torch.zeros((steps, copies, n), dtype=torch.float64)
        mre_at_end = torch.zeros((steps, copies), dtype=torch.float64)
        if self._episodes is not None and self._ends is not None:
            t_end, copy = self._ends
            signal_at_end[t_end, copy] = self._episodes.signal
            mre_at_end[t_end, copy] = self._episodes.mre_normalised
        where = end.clamp(max=steps - 1)
        signal = signal_at_end.gather(0, where.unsqueeze(-1).expand(steps, copies, n))
        mre = mre_at_end.gather(0, where)
        mask = valid.to(torch.float64)
        ahead = (end - torch.arange(steps).unsqueeze(-1)).clamp(min=0).to(torch.float64)
        discount = self.gamma**ahead  # gamma^(T-1-t), paper 003 Eq. (12b-c)
        to_go = (self.horizon - 1 - step).clamp(min=0).to(torch.float64)
        b_signal, b_mre = self.baselines()
        signal = signal * mask.unsqueeze(-1)
        g_id = discount.unsqueeze(-1) * signal  # paper 003 Eq. (12c)
        g_eq = discount * mre * mask  # paper 003 Eq. (12b)
        b_discount = (self.gamma**to_go) * mask  # known before acting: action-independent
        b_id = b_discount.unsqueeze(-1) * b_signal
        b_eq = b_discount * b_mre
        count = mask.sum(dim=1) * n  # (T,)
        s_bar = signal.sum(dim=(1, 2)) / count.clamp(min=1.0)  # batch mean at step t
        centred = (signal - s_bar.view(-1, 1, 1)) * mask.unsqueeze(-1)
        return {
            "signal": signal, "g_id": g_id, "b_id": b_id, "g_eq": g_eq, "b_eq": b_eq,
            "centred": centred, "valid": valid,
        }  # fmt: skip

    def shape_advantage(
        self, advantages: torch.Tensor, rollout: Rollout, model: Any
    ) -> torch.Tensor:
        """Eq. 13 on the backbone's advantages ``(T, E)`` or ``(T, E, N)``; per agent
        ``(T, E, N)`` whenever the extra terms differ between agents (the FD form or
        ``alpha > 0``). Unchanged (the same tensor) while lambda is 0."""
        if self.lam == 0.0:
            return advantages
        dones = rollout.dones if rollout.dones.ndim == 2 else rollout.dones[..., 0]
        terms = self.equity_terms(dones)
        lam, alpha = self.lam, self.alpha
        per_agent = self.form == "fd" or alpha > 0.0 or advantages.ndim == 3
        if self.form == "fd":
            extra = lam * (terms["g_id"] - terms["b_id"])  # paper 003 Eq. (13)
        else:
            extra = lam * (terms["g_eq"] - terms["b_eq"])  # Eq. (13), CTDE form
            if per_agent:
                extra = extra.unsqueeze(-1).expand(*extra.shape, self.num_agents)
        if alpha > 0.0:
            extra = extra + lam * alpha * terms["centred"]  # Eq. (13), centred term
        if per_agent and advantages.ndim == 2:
            advantages = advantages.unsqueeze(-1).expand(*advantages.shape, self.num_agents)
        return advantages - extra.to(device=advantages.device, dtype=advantages.dtype)

    def update(self, iteration: int) -> dict[str, float]:
        """Dual steps for every ``K`` finished episodes (Eq. 10), then the baselines take in
        this rollout's episodes; returns the log values (``eld_*``)."""
        while len(self.pending) >= self.dual_every:
            batch, self.pending = self.pending[: self.dual_every], self.pending[self.dual_every :]
            self.lam = dual_step(
                self.lam, float(np.mean(batch)), self.budget, self.dual_lr, self.lambda_max
            )
            self.dual_steps += 1
        row = {"eld_lambda": self.lam, "eld_dual_steps": float(self.dual_steps)}
        episodes = self._episodes
        nan = float("nan")
        if episodes is None:
            return {**row, **dict.fromkeys(_LOGGED, nan)}
        self.signal_sum = BASELINE_DECAY * self.signal_sum + (1 - BASELINE_DECAY) * (
            episodes.signal.mean(dim=0)
        )
        self.mre_sum = BASELINE_DECAY * self.mre_sum + (1 - BASELINE_DECAY) * float(
            episodes.mre_normalised.mean()
        )
        self.weight = BASELINE_DECAY * self.weight + (1 - BASELINE_DECAY)
        x = episodes.outcomes
        return {
            **row,
            "eld_mre_normalised": float(episodes.mre_normalised.mean()),
            "eld_inc_rate": float(episodes.inc_rate.mean()),
            "eld_excess": float(episodes.total_excess.mean()),
            "eld_outcome_min": float(x.amin(dim=1).mean()),
            "eld_outcome_max": float(x.amax(dim=1).mean()),
        }

    # ------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "lambda": self.lam,
            "dual_steps": self.dual_steps,
            "pending": list(self.pending),
            "signal_sum": self.signal_sum.clone(),
            "mre_sum": self.mre_sum,
            "weight": self.weight,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.lam = float(state["lambda"])
        self.dual_steps = int(state["dual_steps"])
        self.pending = [float(v) for v in state["pending"]]
        self.signal_sum = torch.as_tensor(state["signal_sum"], dtype=torch.float64).clone()
        self.mre_sum = float(state["mre_sum"])
        self.weight = float(state["weight"])


_LOGGED = (
    "eld_mre_normalised", "eld_inc_rate", "eld_excess", "eld_outcome_min", "eld_outcome_max",
)  # fmt: skip


def make_constraint(config: Any, spec: Any) -> Constraint | None:
    """The constraint ``config.equity`` names (None for ``"none"``)."""
    equity = getattr(config, "equity", "none")
    if equity == "none":
        return None
    if equity == "eld":
        return ELD.from_config(config, spec)
    raise ValueError(f"equity: unknown constraint {equity!r}")
