"""``vaccine``: scarce vaccine doses in a batched metapopulation epidemic (torch).

A synthetic counterpart of the Medical scenario of paper 002 (section 4.1), which ran on
Atlanta mobility data that is not public. Regions sit on an ``n x n`` grid (default 10 x 10 =
100 agents) with log-normal populations; residents spend a fraction of their time in other
regions by a distance-decay (gravity) commuting kernel; a daily discrete-time SEIR epidemic with
a vaccinated compartment runs on top, started in a few hot spots. Every day each region's agent
emits a score; the day's dose budget is split by softmax over the scores, capped at each
region's unvaccinated residents and rounded to whole doses that keep the budget exactly.
``docs/envs/vaccine.md`` gives the model, its equations, the parameters with their sources and
what is synthetic.

Timeline of day ``t`` of a copy:

1. agents observe the reported state (cases reported so far, doses given, neighbourhood means);
2. the scores become whole doses per region (:func:`allocate_doses`); doses reach unvaccinated
   residents at random, and the susceptible share of them moves ``S -> V``;
3. ``substeps`` steps of the SEIR model with commuter mixing advance the day;
4. symptom onsets join the reporting queue; each queued case is reported with probability
   ``1 / reporting_delay`` per day (Chang et al. 2021's confirmation lag), times the reporting
   rate;
5. reward: minus the day's new infections, ``-reward_scale * new / city population``.

Every copy also steps a *shadow* epidemic without any vaccination from the same state and with
the same random draws (common random numbers), so ``infections_averted`` is exact: it equals
the ``none`` baseline's infections on the same seed minus this episode's.

Dynamics are float64 tensors ``(num_envs, 2, n_regions)`` (axis 1: this epidemic, the shadow);
no Python loop over copies or regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from marra import metrics_torch
from marra.envs.base import (
    ActionSpec,
    Baseline,
    EnvError,
    EnvSpec,
    MultiAgentEnv,
    Step,
    check_int,
    check_number,
)
from marra.envs.rng import CounterRNG, copy_keys

__all__ = [
    "VaccineEnv",
    "allocate_doses",
    "round_preserving_sum",
    "binomial",
    "scores_for_weights",
    "OBS_FEATURES",
    "STATE_REGION_FEATURES",
    "STATE_GLOBAL_FEATURES",
    "EPISODE_METRICS",
    "BASELINES",
]

#: Per-region observation features, in order. Shares are percent of the region's residents.
OBS_FEATURES = (
    "log_population",  # log(N_i / median_population)
    "vaccinated",  # doses given so far, % of residents
    "cases_today",  # cases reported today, % of residents
    "cases_week",  # cases reported over the last 7 days, % of residents
    "cases_total",  # cases reported so far, % of residents
    "nb_vaccinated",  # the same four, mean over the Moore neighbourhood (up to 8 regions)
    "nb_cases_today",
    "nb_cases_week",
    "nb_cases_total",
    "city_cases_week",  # cases reported over the last 7 days, % of the city
    "time",  # t / horizon
    "dose_budget",  # daily dose budget, % of the city
)
#: Per-region features of :meth:`VaccineEnv.state` (fractions of the region's residents).
STATE_REGION_FEATURES = (
    "susceptible",
    "vaccinated_susceptible",
    "exposed",
    "infectious",
    "recovered",
    "awaiting_report",
    "doses_given",
    "cases_week",
    "cases_total",
    "log_population",
    "transmission",  # the region's transmission multiplier
)
#: Features of :meth:`VaccineEnv.state` after the per-region block.
STATE_GLOBAL_FEATURES = ("city_prevalence", "time", "dose_budget")

#: Episode metrics (``info["episode_metrics"]``).
EPISODE_METRICS = (
    "infections",  # new infections over the episode (people)
    "infections_averted",  # the same without any vaccination (shadow epidemic) minus this
    "peak_prevalence",  # max over days of infectious / city population
    "dose_gini",  # Gini over regions of doses per resident at the end
    "attack_rate",  # infections / city population
    "doses",  # doses given
    "wasted_doses",  # doses that reached residents who were not susceptible
)
#: Rule-based methods (``env.baseline(name)``).
BASELINES = (
    "none",
    "random",
    "pro-rata-population",
    "pro-rata-susceptible",
    "pro-rata-incidence",
    "pro-rata-cases",
    "greedy",
)

_U_MIN = 2.0**-54  # uniforms are clamped to [_U_MIN, 1 - _U_MIN] before the normal quantile


# --------------------------------------------------------------------------- random draws
def binomial(
    count: torch.Tensor,
    prob: torch.Tensor,
    u: torch.Tensor,
    *,
    inversion_below: float = 30.0,
    max_terms: int = 160,
) -> torch.Tensor:
    """Binomial(``count``, ``prob``) draws by inversion of the uniforms ``u`` (float64, any shape,
    broadcastable; ``count`` whole numbers >= 0, ``prob`` in [0, 1]).

    With ``q = min(prob, 1 - prob)`` (a draw for ``prob > 1/2`` is ``count`` minus a draw for
    ``1 - prob``, inverted at ``1 - u``): where ``count * q < inversion_below`` the exact CDF is
    inverted term by term (at most ``max_terms`` terms: beyond the mean + 20 standard
    deviations, so the truncated mass is below 1e-30); elsewhere the normal quantile with the
    Cornish-Fisher skewness correction ``z + g (z^2 - 1) / 6`` (``g = (1 - 2q) / sd``) and a
    continuity correction, clipped to ``[0, count]``. ``docs/envs/vaccine.md`` reports the
    measured accuracy. The draw is a non-decreasing function of ``u``, so two epidemics fed the
    same uniforms are coupled.

    Returns float64 whole numbers in ``[0, count]``, the broadcast shape.
    """
    count, prob, u = torch.broadcast_tensors(
        count.to(torch.float64), prob.to(torch.float64), u.to(torch.float64)
    )
    count = count.clamp_min(0.0)
    prob = prob.clamp(0.0, 1.0)
    flip = prob > 0.5
    q = torch.where(flip, 1.0 - prob, prob)
    u = torch.where(flip, 1.0 - u, u)  # so that the draw still grows with u
    mean = count * q
    small = mean < inversion_below
    # --- inversion of the exact CDF where the mean is small (on those entries only)
    x_small = torch.zeros_like(count)
    pick = (small & (count > 0) & (q > 0)).reshape(-1).nonzero().squeeze(1)
    if pick.numel():
        n_pick = count.reshape(-1)[pick]
        q_pick = q.reshape(-1)[pick]
        u_pick = u.reshape(-1)[pick]
        pmf = torch.exp(n_pick * torch.log1p(-q_pick))  # P(X = 0); q <= 1/2: no underflow
        cdf = pmf
        ratio = q_pick / (1.0 - q_pick)
        x_pick = torch.zeros_like(n_pick)
        active = cdf < u_pick
        for k in range(max_terms):
            if k % 4 == 0 and not bool(active.any()):
                break
            x_pick = x_pick + active.to(torch.float64)
            pmf = pmf * (n_pick - k).clamp_min(0.0) / (k + 1) * ratio
            cdf = cdf + pmf
            active = active & (cdf < u_pick) & (x_pick < n_pick)
        x_small = x_small.reshape(-1).index_put((pick,), x_pick).reshape(count.shape)
    # --- skewness-corrected normal quantile where the mean is large
    sd = torch.sqrt(count * q * (1.0 - q))
    z = torch.special.ndtri(u.clamp(_U_MIN, 1.0 - _U_MIN))
    skew = (1.0 - 2.0 * q) / sd.clamp_min(1e-300)
    z = z + skew * (z * z - 1.0) / 6.0
    x_large = torch.floor(mean + sd * z + 0.5)
    x = torch.where(small, x_small, x_large).clamp(min=torch.zeros_like(count), max=count)
    return torch.where(flip, count - x, x)


# --------------------------------------------------------------------------- dose rules
def round_preserving_sum(ideal: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Whole amounts ``(num_envs, n)`` summing exactly to the whole ``total (num_envs,)``
    (largest remainder).

    Each entry gets ``floor(ideal)``; the missing units go one each to the entries with the
    largest remainders (ties: lower index first). An entry with a zero remainder never gets a
    unit, so no entry exceeds ``ceil(ideal)``: whole caps ``>= ideal`` are kept.
    """
    base = torch.floor(ideal)
    remainder = ideal - base
    missing = torch.round(total - base.sum(dim=-1)).clamp_min(0.0)
    order = torch.argsort(remainder, dim=-1, descending=True, stable=True)
    positions = torch.arange(ideal.shape[-1], device=ideal.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)
    extra = (rank < missing.unsqueeze(-1)) & (remainder > 0)
    return base + extra.to(ideal.dtype)


def allocate_doses(
    scores: torch.Tensor, budget: torch.Tensor, cap: torch.Tensor, low: float
) -> torch.Tensor:
    """Whole doses ``(num_envs, n)`` from the agents' scores (the env's dose rule).

    ``scores (num_envs, n)`` in ``[low, high]``; ``budget (num_envs,)`` and ``cap (num_envs, n)``
    (unvaccinated residents) whole numbers. A score equal to ``low`` declines doses (weight 0);
    the others get weights ``w_i = exp(s_i - max s)`` (a softmax). The ideal split is
    ``x_i = min(cap_i, lam * w_i)`` with ``lam`` such that ``sum x = min(budget, sum of the
    accepting regions' caps)``: doses a capped region cannot take go to the others in
    proportion to their weights (water-filling, exact by sorting). The ideal is rounded by
    :func:`round_preserving_sum`, so the doses are whole, sum exactly to that amount and never
    exceed a cap.
    """
    accept = scores > low
    top = torch.where(accept, scores, -math.inf).amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    weight = torch.where(accept, torch.exp(scores - top), 0.0)
    cap = torch.where(accept, cap, 0.0)
    amount = torch.minimum(budget, cap.sum(dim=-1))
    # water-filling: lam from the regions not yet at their cap; every region that lam would
    # push past its cap is capped for good (lam only grows), until none is (<= n rounds)
    positive = weight > 0
    capped = torch.zeros_like(positive)
    for _ in range(scores.shape[-1] + 1):
        free_weight = torch.where(capped, 0.0, weight).sum(dim=-1, keepdim=True)
        left = amount.unsqueeze(-1) - torch.where(capped, cap, 0.0).sum(dim=-1, keepdim=True)
        lam = torch.where(free_weight > 0, left / free_weight.clamp_min(1e-300), 0.0)
        more = positive & ~capped & (lam * weight >= cap)
        if not bool(more.any()):
            break
        capped = capped | more
    ideal = torch.where(capped, cap, torch.minimum(cap, lam * weight))
    return round_preserving_sum(ideal, amount)


def scores_for_weights(weights: torch.Tensor, high: float, low: float) -> torch.Tensor:
    """Scores ``(num_envs, n, 1)`` that make :func:`allocate_doses` split doses in proportion to
    ``weights (num_envs, n)`` (>= 0): ``high + log(w / max w)``; a zero weight (or one below
    ``exp(low - high)`` of the largest) becomes ``low``, which declines."""
    top = weights.amax(dim=-1, keepdim=True).clamp_min(1e-300)
    score = high + torch.log((weights / top).clamp_min(1e-300))
    score = torch.where(weights > 0, score, low).clamp(low, high)
    return score.unsqueeze(-1)


# --------------------------------------------------------------------------- the model
@dataclass
class _Geography:
    """Per-copy tensors of the synthetic city, shaped ``(num_envs, 1, n)`` to broadcast over
    the (epidemic, shadow) axis; ``kernel (n, n)`` is shared."""

    population: torch.Tensor
    scale: torch.Tensor  # beta_j / P_j: transmission rate per day over the people present
    stay: torch.Tensor  # 1 - c_i: time share at home region
    away: torch.Tensor  # c_i / Z_i (0 where a region has no other region)
    kernel: torch.Tensor

    def flat(self) -> _Geography:
        """The same tensors ``(num_envs, n)``, without the (epidemic, shadow) axis, cloned (a
        tensor made under ``torch.inference_mode`` cannot be saved for backward)."""
        return _Geography(
            self.population[:, 0].clone(), self.scale[:, 0].clone(), self.stay[:, 0].clone(),
            self.away[:, 0].clone(), self.kernel.clone(),
        )  # fmt: skip


def _hazard(infectious: torch.Tensor, geo: _Geography) -> torch.Tensor:
    """Force of infection per resident of each region (per day), ``infectious (..., n)``.

    Infectious people present at location j: ``(1 - c_j) I_j + N_j sum_k K_jk c_k I_k / Z_k``;
    the force at j is ``beta_j * present infectious / present people``; a resident of i is
    exposed to ``(1 - c_i) lam_i + (c_i / Z_i) sum_j K_ij N_j lam_j``.
    """
    present_infectious = geo.stay * infectious + geo.population * (
        (geo.away * infectious) @ geo.kernel
    )
    force = geo.scale * present_infectious
    return geo.stay * force + geo.away * ((geo.population * force) @ geo.kernel)


def _mean_field_substep(
    x: tuple[torch.Tensor, ...],
    geo: _Geography,
    dt: float,
    efficacy: float,
    sigma: float,
    gamma: float,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """One mean-field SEIR step of ``dt`` days of ``x = (S, V, E, I, R)``; returns the new
    compartments, the new infections and the onsets (each ``x``'s shape).

    ``S' = S exp(-h dt)`` is ``S - S (1 - exp(-h dt))``: the expected survivors of the hazard.
    """  # fmt: skip
    s, v, ex, inf, rec = x
    exponent = _hazard(inf, geo) * -dt
    s_new = s * torch.exp(exponent)
    v_new = v * torch.exp(exponent * (1.0 - efficacy))
    infected = (s - s_new) + (v - v_new)
    onsets = ex * -math.expm1(-sigma * dt)
    recovered = inf * -math.expm1(-gamma * dt)
    x = (s_new, v_new, ex - onsets + infected, inf - recovered + onsets, rec + recovered)
    return x, infected, onsets


class VaccineEnv(MultiAgentEnv):
    """Scarce vaccine doses in a metapopulation SEIR epidemic (see the module docstring).

    The ``vaccine`` environment of the registry: one agent per region of an ``n x n`` grid, one
    continuous score per day in ``[-max_score, max_score]`` (``-max_score`` declines doses),
    team reward. Episode metrics: ``infections``, ``infections_averted`` (against no vaccination
    on the same seed, from the shadow epidemic), ``peak_prevalence``, ``dose_gini``,
    ``attack_rate``, ``doses``, ``wasted_doses``. Outcome: each region's share of residents not
    infected during the episode. Baselines: ``none``, ``random``, ``pro-rata-population``,
    ``pro-rata-susceptible``, ``pro-rata-incidence``, ``pro-rata-cases``, ``greedy``.

    Args:
        grid_size: regions per side of the square grid (default 10: 100 regions), 1 to 50.
        horizon: days per episode (default 60).
        city_seed: seed of the synthetic city (populations, transmission multipliers), the same
            in every copy and episode (default 0); None draws a new city for every copy and
            episode from the reset seed.
        median_population: median residents per region (default 2,000).
        population_sigma: standard deviation of log population (default 0.5).
        commute_fraction: share of residents' time spent in other regions (default 0.3).
        commute_scale: length in grid cells of the exponential distance decay of commuting
            (default 1.5).
        r0: basic reproduction number of a homogeneous city (default 2.5).
        latent_days: mean latent period in days (default 4, Chang et al. 2021).
        infectious_days: mean infectious period in days (default 3.5, Chang et al. 2021).
        transmission_heterogeneity: standard deviation of the log transmission multiplier of a
            region (default 0.25; multipliers have mean 1).
        hot_spots: regions where the epidemic starts: a count drawn anew every episode (default
            3) or a list of region indices (row * grid_size + column) used in every episode.
        seed_fraction: share of a hot spot's residents infected at day 0 (default 0.01).
        dose_fraction: daily dose budget as a share of the city's population (default 0.002).
        efficacy: reduction of a vaccinated susceptible's infection hazard (default 0.9,
            Thompson et al. 2021).
        reporting_rate: share of infections that are ever reported (default 0.1, Chang et al.
            2021).
        reporting_delay: mean days from symptom onset to report, geometric (default 7, Chang et
            al. 2021); 0 reports on the day of onset.
        substeps: SEIR steps per day (default 4).
        stochastic: integer binomial transitions (default False: the deterministic mean-field
            model).
        max_score: bound of the scores; a score of -max_score declines doses (default 10).
        reward_scale: the reward is -reward_scale * new infections / city population (default
            100: percentage points of the city infected that day).
    """

    def __init__(
        self,
        grid_size: int = 10,
        horizon: int = 60,
        city_seed: int | None = 0,
        median_population: float = 2000.0,
        population_sigma: float = 0.5,
        commute_fraction: float = 0.3,
        commute_scale: float = 1.5,
        r0: float = 2.5,
        latent_days: float = 4.0,
        infectious_days: float = 3.5,
        transmission_heterogeneity: float = 0.25,
        hot_spots: int | Sequence[int] = 3,
        seed_fraction: float = 0.01,
        dose_fraction: float = 0.002,
        efficacy: float = 0.9,
        reporting_rate: float = 0.1,
        reporting_delay: float = 7.0,
        substeps: int = 4,
        stochastic: bool = False,
        max_score: float = 10.0,
        reward_scale: float = 100.0,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self.grid_size = check_int("grid_size", grid_size, maximum=50)
        self.n = self.grid_size**2
        self._horizon = check_int("horizon", horizon, maximum=100_000)
        if city_seed is not None:
            city_seed = check_int("city_seed", city_seed, minimum=0, maximum=2**63 - 1)
        self.city_seed = city_seed
        self.median_population = check_number(
            "median_population", median_population, minimum=1.0, maximum=1e8
        )
        self.population_sigma = check_number(
            "population_sigma", population_sigma, minimum=0.0, maximum=3.0
        )
        self.commute_fraction = check_number(
            "commute_fraction", commute_fraction, minimum=0.0, maximum=1.0
        )
        if self.commute_fraction == 1.0:
            raise EnvError("commute_fraction: must be < 1 (residents spend some time at home)")
        self.commute_scale = check_number(
            "commute_scale", commute_scale, minimum=0.0, strict=True, maximum=1e6
        )
        self.r0 = check_number("r0", r0, minimum=0.0, maximum=100.0)
        self.latent_days = check_number("latent_days", latent_days, minimum=0.0, strict=True)
        self.infectious_days = check_number(
            "infectious_days", infectious_days, minimum=0.0, strict=True
        )
        self.transmission_heterogeneity = check_number(
            "transmission_heterogeneity", transmission_heterogeneity, minimum=0.0, maximum=3.0
        )
        self._hot_spot_list: torch.Tensor | None = None
        if isinstance(hot_spots, bool):
            raise EnvError(f"hot_spots: a count or a list of region indices, got {hot_spots!r}")
        if isinstance(hot_spots, int | np.integer):
            self.hot_spots = check_int("hot_spots", hot_spots, maximum=self.n)
        elif isinstance(hot_spots, Sequence) and not isinstance(hot_spots, str):
            indices = [check_int("hot_spots", v, minimum=0, maximum=self.n - 1) for v in hot_spots]
            if not indices or len(set(indices)) != len(indices):
                raise EnvError(
                    f"hot_spots: a list needs distinct region indices in 0..{self.n - 1}, "
                    f"got {list(hot_spots)!r}"
                )
            self.hot_spots = len(indices)
            self._hot_spot_list = torch.as_tensor(indices, dtype=torch.int64, device=self.device)
        else:
            raise EnvError(f"hot_spots: a count or a list of region indices, got {hot_spots!r}")
        self.seed_fraction = check_number(
            "seed_fraction", seed_fraction, minimum=0.0, strict=True, maximum=1.0
        )
        self.dose_fraction = check_number("dose_fraction", dose_fraction, minimum=0.0, maximum=1.0)
        self.efficacy = check_number("efficacy", efficacy, minimum=0.0, maximum=1.0)
        self.reporting_rate = check_number(
            "reporting_rate", reporting_rate, minimum=0.0, maximum=1.0
        )
        self.reporting_delay = check_number(
            "reporting_delay", reporting_delay, minimum=0.0, maximum=1e6
        )
        if 0.0 < self.reporting_delay < 1.0:
            raise EnvError(
                f"reporting_delay: 0 (same day) or a mean of >= 1 day, got {reporting_delay!r}"
            )
        self.substeps = check_int("substeps", substeps, maximum=1000)
        if not isinstance(stochastic, bool | np.bool_):
            raise EnvError(f"stochastic: must be True or False, got {stochastic!r}")
        self.stochastic = bool(stochastic)
        self.max_score = check_number("max_score", max_score, minimum=0.0, strict=True, maximum=50)
        self.reward_scale = check_number(
            "reward_scale", reward_scale, minimum=0.0, strict=True, maximum=1e12
        )

        n = self.n
        self._spec = EnvSpec(
            name="vaccine",
            num_agents=n,
            agent_ids=tuple(
                f"region_{r}_{c}" for r in range(self.grid_size) for c in range(self.grid_size)
            ),
            obs_dim=len(OBS_FEATURES),
            state_dim=len(STATE_REGION_FEATURES) * n + len(STATE_GLOBAL_FEATURES),
            action=ActionSpec.continuous(1, -self.max_score, self.max_score),
            horizon=self._horizon,
            reward="team",
            metrics=EPISODE_METRICS,
            baselines=BASELINES,
            obs_names=OBS_FEATURES,
            outcome="each region's share of residents not infected during the episode",
            any_num_agents=True,
            action_scale=2.0,  # score units: weights e^2 ~ 7x apart already split doses well
        )

        # --- fixed geometry: commuting kernel and Moore neighbourhood (n x n, shared)
        dev = self.device
        f64 = {"dtype": torch.float64, "device": dev}
        side = torch.arange(self.grid_size, **f64)
        rows, cols = torch.meshgrid(side, side, indexing="ij")
        rows, cols = rows.reshape(-1), cols.reshape(-1)
        dr = rows[:, None] - rows[None, :]
        dc = cols[:, None] - cols[None, :]
        distance = torch.sqrt(dr**2 + dc**2)
        eye = torch.eye(n, dtype=torch.bool, device=dev)
        self.kernel = torch.where(eye, 0.0, torch.exp(-distance / self.commute_scale))
        neighbour = (torch.maximum(dr.abs(), dc.abs()) == 1).to(torch.float64)
        self.neighbourhood = neighbour / neighbour.sum(dim=1, keepdim=True).clamp_min(1.0)
        self.sigma = 1.0 / self.latent_days  # E -> I rate per day
        self.gamma = 1.0 / self.infectious_days  # I -> R rate per day
        self.beta_mean = self.r0 * self.gamma

        # --- state tensors
        e = self.num_envs
        self._rng = CounterRNG(e, dev)
        self.population = torch.ones((e, n), **f64)
        self.transmission = torch.ones((e, n), **f64)
        self._fixed_city = None
        if self.city_seed is not None:
            draws = np.random.default_rng(np.random.SeedSequence(self.city_seed))
            normals = torch.as_tensor(draws.standard_normal((2, n)), **f64)
            self._fixed_city = self._city(normals[0:1], normals[1:2])
        # S, V, E, I, R (compartment-major) x copies x (this epidemic, shadow) x regions
        self.compartments = torch.zeros((5, e, 2, n), **f64)
        self.doses_given = torch.zeros((e, n), **f64)
        self.awaiting_report = torch.zeros((e, n), **f64)
        self.reported_total = torch.zeros((e, n), **f64)
        self.reported_days = torch.zeros((e, 7, n), **f64)  # ring buffer of daily reports
        self.infections = torch.zeros((e, 2, n), **f64)  # new infections this episode
        self.incidence = torch.zeros((e, n), **f64)  # new infections of the last day
        self.wasted = torch.zeros(e, **f64)
        self.peak_prevalence = torch.zeros(e, **f64)
        self.budget = torch.zeros(e, **f64)
        self._geo = self._geography()

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    # ------------------------------------------------------------------ the city
    def _city(
        self, pop_normal: torch.Tensor, beta_normal: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Populations (whole, >= 1) and transmission multipliers (mean 1 in expectation) from
        standard normals ``(k, n)``."""
        population = torch.round(
            self.median_population * torch.exp(self.population_sigma * pop_normal)
        ).clamp_min(1.0)
        s = self.transmission_heterogeneity
        multiplier = torch.exp(s * beta_normal - 0.5 * s * s)
        return population, multiplier

    def _geography(self) -> _Geography:
        population = self.population
        reach = population @ self.kernel  # Z_i = sum_j K_ij N_j
        c = self.commute_fraction * (reach > 0).to(reach.dtype)  # no commuting without others
        away = c / reach.clamp_min(1e-300)
        present = population * ((1.0 - c) + (away * population) @ self.kernel)
        return _Geography(
            population=population.unsqueeze(1),
            scale=(self.beta_mean * self.transmission / present).unsqueeze(1),
            stay=(1.0 - c).unsqueeze(1),
            away=away.unsqueeze(1),
            kernel=self.kernel,
        )

    # ------------------------------------------------------------------ reset
    def _put(self, name: str, index: torch.Tensor, values: torch.Tensor | float) -> None:
        tensor = getattr(self, name)
        if tensor.is_inference() and not torch.is_inference_mode_enabled():
            tensor = tensor.clone()
        tensor[index] = values
        setattr(self, name, tensor)

    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        self._rng.set_keys(rows, copy_keys(seeds))
        index = torch.as_tensor(rows, device=self.device)
        n = self.n
        if self._fixed_city is not None:
            population, multiplier = (x.expand(len(rows), n) for x in self._fixed_city)
        else:
            pop_normal = self._rng.normal((n,), -1, stream=0)[index]
            beta_normal = self._rng.normal((n,), -1, stream=1)[index]
            population, multiplier = self._city(pop_normal, beta_normal)
        self._put("population", index, population)
        self._put("transmission", index, multiplier)
        if self._hot_spot_list is not None:
            hot = self._hot_spot_list.expand(len(rows), -1)
        else:
            draw = self._rng.uniform((n,), -2, stream=0)[index]
            hot = torch.argsort(draw, dim=1)[:, : self.hot_spots]
        seeded = torch.zeros((len(rows), n), dtype=torch.float64, device=self.device)
        start = torch.round(self.seed_fraction * population.gather(1, hot)).clamp_min(1.0)
        seeded.scatter_(1, hot, start)
        seeded = torch.minimum(seeded, population)
        exposed = torch.round(seeded * self.latent_days / (self.latent_days + self.infectious_days))
        infectious = seeded - exposed
        start_state = torch.stack(
            [population - seeded, torch.zeros_like(seeded), exposed, infectious,
             torch.zeros_like(seeded)], dim=1
        )  # fmt: skip
        start_state = start_state.transpose(0, 1).unsqueeze(2).expand(-1, -1, 2, -1)
        if self.compartments.is_inference() and not torch.is_inference_mode_enabled():
            self.compartments = self.compartments.clone()
        self.compartments[:, index] = start_state
        for name in ("doses_given", "awaiting_report", "reported_total", "reported_days",
                     "infections", "incidence", "wasted"):  # fmt: skip
            self._put(name, index, 0.0)
        total = population.sum(dim=1)
        self._put("peak_prevalence", index, infectious.sum(dim=1) / total)
        self._put("budget", index, torch.round(self.dose_fraction * total))
        self._geo = self._geography()

    # ------------------------------------------------------------------ dynamics
    def step(self, actions: Any) -> Step:
        """Advance every copy by one day.

        Args:
            actions: ``(num_envs, n)`` or ``(num_envs, n, 1)`` scores in ``[-max_score,
                max_score]`` (clipped; NaN and +-inf count as 0). ``-max_score`` declines doses.

        Returns:
            :class:`~marra.envs.base.Step`: obs ``(num_envs, n, obs_dim)`` float32 (see
            ``OBS_FEATURES``); reward ``(num_envs, n)`` float32, the team reward
            ``-reward_scale * new infections / city population``; terminated always False;
            truncated at the horizon. ``info``: ``doses`` ``(num_envs, n)`` (whole doses given
            today), ``new_infections`` and ``new_infections_none`` ``(num_envs,)`` (this
            epidemic and the shadow without vaccination), ``region_infections`` and
            ``reported_cases`` ``(num_envs, n)``, ``prevalence`` ``(num_envs,)``; at the end of
            an episode ``episode_metrics`` and ``episode_outcome``.
        """
        return super().step(actions)

    def _uniform(self, stream: int) -> torch.Tensor:
        """Uniforms ``(num_envs, 1, n)`` of this day and ``stream`` (shared by the epidemic and
        its shadow)."""
        return self._rng.uniform((self.n,), self.t, stream=stream).unsqueeze(1)

    def _vaccinate(self, doses: torch.Tensor) -> torch.Tensor:
        """Give ``doses (num_envs, n)`` to unvaccinated residents at random; returns how many of
        them were susceptible (moved S -> V in this epidemic, not in the shadow)."""
        susceptible = self.compartments[0, :, 0]
        unvaccinated = self.population - self.doses_given
        share = susceptible / unvaccinated.clamp_min(1.0)
        if self.stochastic:
            # with replacement instead of the hypergeometric draw (doses << residents)
            hit = binomial(doses, share, self._uniform(1000).squeeze(1))
            hit = torch.minimum(hit, susceptible).clamp_min(doses - (unvaccinated - susceptible))
        else:
            hit = doses * share
        return hit

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        scores = actions[..., 0]
        cap = self.population - self.doses_given
        doses = allocate_doses(scores, self.budget, cap, -self.max_score)
        hit = self._vaccinate(doses)
        x = self.compartments.clone()
        x[0, :, 0] -= hit
        x[1, :, 0] += hit
        self.doses_given = self.doses_given + doses
        self.wasted = self.wasted + (doses - hit).sum(dim=1)

        dt = 1.0 / self.substeps
        p_onset = -math.expm1(-self.sigma * dt)
        p_recover = -math.expm1(-self.gamma * dt)
        state = tuple(x.unbind(dim=0))
        new_infections = torch.zeros_like(state[0])
        onsets = torch.zeros_like(state[0][:, 0])
        for sub in range(self.substeps):
            if self.stochastic:
                s, v, ex, inf, rec = state
                hazard = _hazard(inf, self._geo) * dt
                base = 16 * sub
                a = binomial(s, -torch.expm1(-hazard), self._uniform(base))
                b = binomial(v, -torch.expm1(-(1.0 - self.efficacy) * hazard),
                             self._uniform(base + 1))  # fmt: skip
                o = binomial(ex, torch.full_like(ex, p_onset), self._uniform(base + 2))
                r = binomial(inf, torch.full_like(inf, p_recover), self._uniform(base + 3))
                infected = a + b
                state = (s - a, v - b, ex + (infected - o), inf + (o - r), rec + r)
            else:
                state, infected, o = _mean_field_substep(
                    state, self._geo, dt, self.efficacy, self.sigma, self.gamma
                )
            new_infections = new_infections + infected
            onsets = onsets + o[:, 0]
        s, v, ex, inf, rec = state
        x = torch.stack([s, v, ex, inf, rec], dim=0)
        self.compartments = x
        self.infections = self.infections + new_infections
        self.incidence = new_infections[:, 0]

        # reporting: queued cases are reported with probability 1 / delay per day
        if self.stochastic:
            queued = binomial(onsets, torch.full_like(onsets, self.reporting_rate),
                              self._uniform(1001).squeeze(1))  # fmt: skip
        else:
            queued = onsets * self.reporting_rate
        if self.reporting_delay == 0.0:
            reported = queued
            self.awaiting_report = torch.zeros_like(queued)
        else:
            p_report = 1.0 / self.reporting_delay
            waiting = self.awaiting_report
            if self.stochastic:
                reported = binomial(waiting, torch.full_like(waiting, p_report),
                                    self._uniform(1002).squeeze(1))  # fmt: skip
            else:
                reported = waiting * p_report
            self.awaiting_report = waiting - reported + queued
        self.reported_total = self.reported_total + reported
        slot = (self.t % 7).view(-1, 1, 1).expand(-1, 1, self.n)
        self.reported_days = self.reported_days.scatter(1, slot, reported.unsqueeze(1))

        total = self.population.sum(dim=1)
        prevalence = x[3, :, 0].sum(dim=1) / total
        self.peak_prevalence = torch.maximum(self.peak_prevalence, prevalence)
        city_new = new_infections.sum(dim=-1)  # (num_envs, 2)
        team = -self.reward_scale * city_new[:, 0] / total
        reward = team.to(torch.float32).unsqueeze(1).expand(self.num_envs, self.n).contiguous()
        info: dict[str, Any] = {
            "doses": doses,
            "new_infections": city_new[:, 0],
            "new_infections_none": city_new[:, 1],
            "region_infections": new_infections[:, 0],
            "reported_cases": reported,
            "prevalence": prevalence,
        }
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return reward, terminated, info

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        infections = self.infections[:, 0].sum(dim=1)
        total = self.population.sum(dim=1)
        return {
            "infections": infections,
            "infections_averted": self.infections[:, 1].sum(dim=1) - infections,
            "peak_prevalence": self.peak_prevalence,
            "dose_gini": metrics_torch.gini(self.doses_given / self.population),
            "attack_rate": infections / total,
            "doses": self.doses_given.sum(dim=1),
            "wasted_doses": self.wasted,
        }

    def _episode_outcome(self, done: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.infections[:, 0] / self.population).to(torch.float32)

    # ------------------------------------------------------------------ observation
    def _reported_features(self) -> torch.Tensor:
        """``(num_envs, 4, n)``: vaccinated, cases today, last 7 days, so far (% of residents)."""
        today = self.reported_days.gather(
            1, ((self.t - 1) % 7).view(-1, 1, 1).expand(-1, 1, self.n)
        ).squeeze(1)
        today = torch.where((self.t > 0).unsqueeze(1), today, 0.0)
        counts = torch.stack(
            [self.doses_given, today, self.reported_days.sum(dim=1), self.reported_total], dim=1
        )
        return 100.0 * counts / self.population.unsqueeze(1)

    def _observe(self) -> torch.Tensor:
        e, n = self.num_envs, self.n
        own = self._reported_features()
        neighbours = own @ self.neighbourhood.T
        total = self.population.sum(dim=1)
        city_week = 100.0 * self.reported_days.sum(dim=(1, 2)) / total
        obs = torch.empty((e, n, len(OBS_FEATURES)), dtype=torch.float32, device=self.device)
        obs[..., 0] = torch.log(self.population / self.median_population)
        obs[..., 1:5] = own.transpose(1, 2)
        obs[..., 5:9] = neighbours.transpose(1, 2)
        obs[..., 9] = city_week.unsqueeze(1)
        obs[..., 10] = (self.t.to(torch.float64) / self._horizon).unsqueeze(1)
        obs[..., 11] = 100.0 * self.dose_fraction
        return obs

    def state(self) -> torch.Tensor:
        """The whole hidden state ``(num_envs, state_dim)`` float32: ``STATE_REGION_FEATURES``
        for every region (feature-major: all regions' first feature, then the second, ...),
        then ``STATE_GLOBAL_FEATURES``."""
        population = self.population
        x = self.compartments[:, :, 0].transpose(0, 1) / population.unsqueeze(1)
        reported = self._reported_features()
        per_region = torch.cat(
            [
                x,
                (self.awaiting_report / population).unsqueeze(1),
                reported[:, [0, 2, 3]] / 100.0,
                torch.log(population / self.median_population).unsqueeze(1),
                self.transmission.unsqueeze(1),
            ],
            dim=1,
        )
        total = population.sum(dim=1)
        city = torch.stack(
            [
                self.compartments[3, :, 0].sum(dim=1) / total,
                self.t.to(torch.float64) / self._horizon,
                torch.full_like(total, self.dose_fraction),
            ],
            dim=1,
        )
        return torch.cat([per_region.reshape(self.num_envs, -1), city], dim=1).to(torch.float32)

    # ------------------------------------------------------------------ baselines
    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        """A rule-based method (one of :data:`BASELINES`); see ``docs/envs/vaccine.md``."""
        if name == "none":
            return _NoDoses(self)
        if name.startswith("pro-rata-") and name in BASELINES:
            return _ProRata(self, name.removeprefix("pro-rata-"))
        if name == "greedy":
            return GreedyBaseline(self)
        return super().baseline(name, seed=seed)

    def render_text(self, copy: int = 0) -> str:
        total = float(self.population[copy].sum())
        x = self.compartments[:, copy, 0]
        return (
            f"vaccine: copy {copy}, day {int(self._t_host[copy])}/{self._horizon}, "
            f"{self.n} regions, {total:,.0f} residents, infectious {float(x[3].sum()):,.0f}, "
            f"infected so far {float(self.infections[copy, 0].sum()):,.0f}, "
            f"doses {float(self.doses_given[copy].sum()):,.0f}"
        )


# --------------------------------------------------------------------------- baselines
class _NoDoses:
    """``none``: every region declines (score ``-max_score``): no vaccination."""

    def __init__(self, env: VaccineEnv) -> None:
        self.env = env

    def reset(self) -> None:
        """Stateless."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        env = self.env
        return torch.full((env.num_envs, env.n, 1), -env.max_score, dtype=torch.float64,
                          device=env.device)  # fmt: skip


class _ProRata:
    """Doses in proportion to a per-region quantity:

    - ``population``: residents;
    - ``susceptible``: unvaccinated susceptible residents (the true, hidden count);
    - ``incidence``: new infections of the last day (true, hidden);
    - ``cases``: cases reported over the last 7 days (observed).

    Where the quantity is 0 in every region of a copy (no infection yet, no report yet), the
    doses go in proportion to population instead.
    """

    def __init__(self, env: VaccineEnv, kind: str) -> None:
        self.env = env
        self.kind = kind

    def reset(self) -> None:
        """Stateless."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        env = self.env
        if self.kind == "population":
            weight = env.population
        elif self.kind == "susceptible":
            weight = env.compartments[0, :, 0]
        elif self.kind == "incidence":
            weight = env.incidence
        else:
            weight = env.reported_days.sum(dim=1)
        empty = (weight.sum(dim=1, keepdim=True) <= 0).expand_as(weight)
        weight = torch.where(empty, env.population, weight.clamp_min(0.0))
        return scores_for_weights(weight, env.max_score, -env.max_score)


class GreedyBaseline:
    """``greedy``: every day, the doses go where one dose averts the most infections.

    The marginal infections averted by a dose in region ``i``, ``g_i = -dF/dd_i`` at ``d = 0``,
    is the derivative (by autograd) of ``F``, the new infections over the next ``lookahead``
    days (or the days left of the least advanced copy) of the mean-field model started from the
    true current state with no further doses. Regions are filled to their caps in decreasing
    ``g`` until the budget is spent (the optimum of the linearised problem). It reads the hidden
    state and the model: an oracle reference, not a deployable rule.
    """

    def __init__(self, env: VaccineEnv, lookahead: int = 28) -> None:
        self.env = env
        self.lookahead = check_int("lookahead", lookahead)

    def reset(self) -> None:
        """Stateless."""

    def infections_ahead(self, doses: torch.Tensor) -> torch.Tensor:
        """New infections ``(num_envs,)`` over the look-ahead of the mean-field model, from the
        true current state after giving ``doses (num_envs, n)`` today and none afterwards
        (differentiable in ``doses``)."""
        env = self.env
        geo = env._geo.flat()
        x = env.compartments[:, :, 0].clone()  # clones: see _Geography.flat
        share = x[0] / (env.population - env.doses_given).clamp_min(1.0).clone()
        state = (x[0] - doses * share, x[1] + doses * share, x[2], x[3], x[4])
        days = int(min(self.lookahead, max(1, env.horizon - int(env._t_host.min()))))
        dt = 1.0 / env.substeps
        total = torch.zeros(env.num_envs, dtype=torch.float64, device=env.device)
        for _ in range(days * env.substeps):
            state, infected, _ = _mean_field_substep(
                state, geo, dt, env.efficacy, env.sigma, env.gamma
            )
            total = total + infected.sum(dim=-1)
        return total

    def marginal(self) -> torch.Tensor:
        """``g (num_envs, n)``: infections averted over the look-ahead per dose in each region
        (``-d infections_ahead / d doses`` at zero doses, by autograd)."""
        env = self.env
        with torch.inference_mode(False), torch.enable_grad():
            doses = torch.zeros((env.num_envs, env.n), dtype=torch.float64, device=env.device,
                                requires_grad=True)  # fmt: skip
            (gradient,) = torch.autograd.grad(self.infections_ahead(doses).sum(), doses)
        return -gradient

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        env = self.env
        gain = self.marginal()
        cap = env.population - env.doses_given
        order = torch.argsort(gain, dim=1, descending=True, stable=True)
        cap_sorted = cap.gather(1, order)
        before = torch.cumsum(cap_sorted, dim=1) - cap_sorted
        fill = torch.minimum(cap_sorted, (env.budget.unsqueeze(1) - before).clamp_min(0.0))
        plan = torch.zeros_like(cap).scatter(1, order, fill)
        return scores_for_weights(plan, env.max_score, -env.max_score)
