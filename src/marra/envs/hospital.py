"""The hospital environment: ONE batched implementation of the dynamics (torch).

:class:`HospitalEnv` steps ``num_envs`` independent copies of a hospital network at once. Every
tensor has shape ``(num_envs, n)`` (``n`` hospitals = agents) or ``(num_envs,)``; ``step`` has no
Python loop over hospitals or copies. The Gymnasium and PettingZoo views in
:mod:`marra.envs.views` wrap this class and never re-implement it. ``docs/environment.md`` states
the observation, the clearing rule (with a worked example), the reward, its scale and the
timeline.

Timeline of one step ``t`` (0-based) of a copy:

1. the events of step ``t`` have already happened (they are applied when the previous step ends,
   or by ``reset`` for ``t = 0``): targets become ``target[t]``, minima ``minimum[t]``, and every
   shock scheduled at ``t`` removes staff from its hospital (``apply_shock``:
   ``max(0, min(floor(fraction * c), c - m))``; they leave the system);
   the observation the agents see shows this state, ``c``;
2. the agents act: ``action`` ``(num_envs, n)``, in staff units, > 0 asks to receive, < 0 offers;
3. the clearing rule (:func:`clear_transfers`) turns the joint action into feasible transfers,
   giving the new staffing ``y``;
4. the reward of paper 000 Eq. (1) and the metrics in ``info`` are computed on ``y`` against
   ``target[t]`` and ``minimum[t]``;
5. ``t`` advances; if ``t < horizon`` the events of the new step happen; ``truncated`` is True
   when ``t == horizon``. ``terminated`` is always False.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from marra import metrics_torch
from marra.envs.base import (
    ActionSpec,
    Baseline,
    EnvError,
    EnvSpec,
    EpisodeAccumulator,
    MultiAgentEnv,
    Step,
    check_int,
)
from marra.hospital.network import HospitalNetwork, generate_network
from marra.hospital.scenarios import Scenario, apply_shock, make_scenario

__all__ = [
    "HospitalEnv",
    "RewardWeights",
    "clear_transfers",
    "LOCAL_FEATURES",
    "CONTEXT_FEATURES",
    "POOLED_STATISTICS",
    "EPISODE_METRICS",
    "CLASSICAL_BASELINES",
    "ClassicalBaseline",
]

#: Per-hospital features of the observation, in order (``s`` is the copy's scale, the mean
#: target at step 0; ``u`` the capacity).
LOCAL_FEATURES = (
    "current/s",
    "minimum/s",
    "target/s",
    "(current-target)/s",
    "(current-minimum)/s",
    "capacity_headroom",  # (u-c)/(u-c+s) in [0, 1]; 1 when there is no capacity
)
#: Network-wide features broadcast to every hospital (the last ``context_dim`` columns).
CONTEXT_FEATURES = (
    "surplus",  # sum max(0, c-t) / (n s)
    "deficit",  # sum max(0, t-c) / (n s)
    "minima_deficit",  # sum max(0, m-c) / (n s)
    "time_left",  # (horizon - t) / horizon
    "budget",  # min(1, B / (n s)); 1 without a budget
)
#: Statistics over hospitals pooled into :meth:`HospitalEnv.global_state` after the context.
POOLED_STATISTICS = ("mean", "std")

#: Episode metrics of the hospital environment (means over the episode's steps).
EPISODE_METRICS = (
    "mae",
    "gini",
    "coverage_gini",
    "mre_normalised",
    "minima_shortfall",
    "moved",
)
#: The classical strategies offered as baselines (same budget and staff mode as the env).
CLASSICAL_BASELINES = ("hold", "qp", "nwo", "taxation", "hybrid", "greedy")

_TINY = 1e-300


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the three terms of paper 000 Eq. (1); a weight of 0 switches a term off.

    ``target`` weighs ``sum (y-t)^2``, ``minima`` weighs ``eta * sum max(0, m-y)``, ``fairness``
    weighs ``var(net transfers)`` (the reward ablation of paper 000, Figure 2).
    """

    target: float = 1.0
    minima: float = 1.0
    fairness: float = 1.0

    def __post_init__(self) -> None:
        for name in ("target", "minima", "fairness"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"reward_weights.{name}: must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"reward_weights.{name}: must be finite and >= 0, got {value!r}")


def _round_largest_remainder(ideal: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """Whole amounts ``(num_envs, n)`` summing exactly to ``volume`` ``(num_envs,)``.

    Each entry gets ``floor(ideal)``; the ``volume - sum floor(ideal)`` missing units go one
    each to the entries with the largest remainders (ties: lower index first). Entries with a
    zero remainder never get a unit, so an entry never exceeds ``ceil(ideal)``: a whole-number
    cap ``>= ideal`` is kept. Needs ``sum ideal == volume`` (up to rounding) and whole ``volume``.
    """
    base = torch.floor(ideal)
    remainder = ideal - base
    missing = torch.round(volume - base.sum(dim=1)).clamp_min(0.0)
    order = torch.argsort(remainder, dim=1, descending=True, stable=True)
    n = ideal.shape[1]
    positions = torch.arange(n, device=ideal.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    extra = (rank < missing.unsqueeze(1)) & (remainder > 0)
    return base + extra.to(ideal.dtype)


def clear_transfers(
    current: torch.Tensor,
    minimum: torch.Tensor,
    capacity: torch.Tensor,
    action: torch.Tensor,
    transfer_budget: float | torch.Tensor | None = None,
    *,
    integer: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clearing rule: turn a joint action into feasible transfers (pro rata).

    All tensors ``(num_envs, n)`` float64; ``action`` must be finite (the environment maps
    NaN/inf to 0 first). For every copy:

    - offers ``o_i = clip(-a_i, 0, k_i)`` with ``k_i = max(c_i - m_i, 0)`` (``floor``-ed in
      integer mode): a sender never goes below its minimum and a hospital at or below its
      minimum offers nothing;
    - requests ``r_i = clip(a_i, 0, q_i)`` with ``q_i = max(u_i - c_i, 0)`` (``floor``-ed in
      integer mode): a receiver never exceeds its capacity;
    - volume ``V = min(sum o, sum r, B)`` (``floor``-ed in integer mode);
    - sender ``i`` gives ``o_i V / sum o``, receiver ``j`` gets ``r_j V / sum r``. In integer
      mode each side is rounded to whole staff by floor + largest remainder, which keeps each
      side's sum exactly ``V`` and never exceeds a cap (the caps are whole numbers).

    Returns:
        ``(given, received, volume)``: staff given and received per hospital ``(num_envs, n)``
        (both >= 0, a hospital is never both) and the moved volume ``V`` ``(num_envs,)``.
        The new staffing is ``current - given + received``; the total is conserved (to
        rounding in continuous mode, exactly in integer mode).
    """
    give_cap = torch.clamp(current - minimum, min=0.0)
    take_cap = torch.clamp(capacity - current, min=0.0)
    if integer:
        give_cap = torch.floor(give_cap)
        take_cap = torch.floor(take_cap)
    offer = torch.minimum(torch.clamp(-action, min=0.0), give_cap)
    request = torch.minimum(torch.clamp(action, min=0.0), take_cap)
    offered = offer.sum(dim=1)
    requested = request.sum(dim=1)
    volume = torch.minimum(offered, requested)
    if transfer_budget is not None:
        volume = torch.clamp(volume, max=transfer_budget)
    if integer:
        volume = torch.floor(volume)
    given = offer * (volume / offered.clamp_min(_TINY)).unsqueeze(1)
    received = request * (volume / requested.clamp_min(_TINY)).unsqueeze(1)
    if integer:
        given = _round_largest_remainder(given, volume)
        received = _round_largest_remainder(received, volume)
    return given, received, volume


class HospitalEnv(MultiAgentEnv):
    """``num_envs`` copies of a hospital network, stepped together (torch, any device).

    The ``hospital`` environment of the registry (``marra.envs.make("hospital", ...)``): one agent
    per hospital, one continuous action each (staff; ``spec.action`` is ``continuous(dim=1,
    [-max_action, max_action])``), the team reward of paper 000 Eq. (1) given to every agent
    (``spec.reward == "team"``; each hospital's exact share is ``info["agent_reward"]``).
    Episode metrics (means over the episode's steps): ``mae``, ``gini`` (staff),
    ``coverage_gini``, ``mre_normalised`` (coverage, tau 0.1), ``minima_shortfall`` (staff below
    minima, summed over hospitals) and ``moved`` (staff moved per step). Outcome: each hospital's
    coverage ``y / t`` at the last step. Baselines: the classical strategies of
    :mod:`marra.hospital.strategies` re-planning every step under the same transfer budget and
    staff mode (``hold``, ``qp``, ``nwo``, ``taxation``, ``hybrid``, ``greedy``) and ``random``.

    Args:
        network: the network every copy starts from (a ``HospitalNetwork`` or the path of a
            network CSV). ``None`` (default) draws a fresh random network for every copy at
            every reset, ``generate_network(n_hospitals, seed)`` with a seed derived from (reset
            seed, copy index, episode), so a policy learns to generalise across networks.
        n_hospitals: hospitals per copy when ``network`` is None (default 150); when a network
            is given it must be None or equal to ``network.n``.
        scenario: a scenario spec for ``make_scenario`` (``static``, ``shifting``, ``shock``,
            ``shifting+shock``, ...) or a Scenario object. Each copy draws its own realisation
            at every reset.
        horizon: steps per episode (default 50, paper 000 section 4.1); with a Scenario object
            the scenario's horizon is used and a different value is an error.
        transfer_budget: per-step cap B on the staff moved in one copy (None: no cap).
        integer: whole-staff transfers (exact); default False: fractional staff as in paper 000.
        reward_weights: weights of the three terms of Eq. (1), a RewardWeights or a dict such
            as ``{"fairness": 0.0}`` (missing terms weigh 1).
        eta: weight of the minima violations in Eq. (1) (paper 000: 100).
        reward_scale: positive divisor of the learning reward; "auto" (default) uses
            ``n * s**2`` per copy (``s`` = mean target at step 0), fixed over an episode.
        max_action: actions are clipped to ``[-max_action, max_action]`` staff. None: the
            largest current or target of ``network``, or 100 for random networks.
        network_kwargs: extra keyword arguments for ``generate_network`` (e.g.
            ``{"capacity_factor": 1.5}``); only when ``network`` is None.
        agent_rewards: give each hospital its own exact share of Eq. (1) as its reward
            (``spec.reward == "agent"``; the shares sum to the team reward) instead of the team
            reward (default False).
        auto_reset: the old name of ``autoreset`` (kept working).

    Attributes:
        num_envs, n, horizon, obs_dim, local_dim, context_dim, state_dim, max_action, integer,
        transfer_budget, device; tensors ``current``, ``minimum``, ``target``, ``capacity``
        (``inf`` where none) ``(num_envs, n)`` float64, ``t`` ``(num_envs,)`` int64, ``scale``
        ``(num_envs,)``; ``networks`` (the starting network of each copy) and ``realisations``
        (each copy's scenario draw) of the current episodes.
    """

    local_dim = len(LOCAL_FEATURES)
    context_dim = len(CONTEXT_FEATURES)
    obs_dim = local_dim + context_dim
    state_dim = context_dim + len(POOLED_STATISTICS) * local_dim

    def __init__(
        self,
        *,
        network: HospitalNetwork | str | None = None,
        n_hospitals: int | None = None,
        scenario: str | Scenario = "static",
        horizon: int | None = None,
        transfer_budget: float | None = None,
        integer: bool = False,
        reward_weights: RewardWeights | Mapping[str, float] | None = None,
        eta: float = 100.0,
        reward_scale: float | Literal["auto"] = "auto",
        max_action: float | None = None,
        network_kwargs: dict[str, Any] | None = None,
        agent_rewards: bool = False,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
        auto_reset: bool | None = None,
    ) -> None:
        if auto_reset is not None:
            autoreset = bool(auto_reset)
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        if isinstance(network, str | Path):
            network = HospitalNetwork.from_csv(network, integer=bool(integer))
        if network is not None and not isinstance(network, HospitalNetwork):
            raise EnvError(f"network: expected a HospitalNetwork or None, got {network!r}")
        if network is not None:
            if n_hospitals is not None and n_hospitals != network.n:
                raise EnvError(
                    f"n_hospitals: {n_hospitals!r} differs from the given network's "
                    f"{network.n} hospitals (leave n_hospitals out)"
                )
            if network_kwargs:
                raise EnvError("network_kwargs: only used when network is None")
            if integer:
                network.check_integral()
            self.n = network.n
        else:
            self.n = check_int(
                "n_hospitals", 150 if n_hospitals is None else n_hospitals, maximum=10_000_000
            )
        if isinstance(scenario, str):
            self._horizon = check_int("horizon", 50 if horizon is None else horizon, maximum=10**7)
            scenario = make_scenario(scenario, horizon=self._horizon)
        elif isinstance(scenario, Scenario):
            if horizon is not None and horizon != scenario.horizon:
                raise EnvError(
                    f"horizon: {horizon!r} differs from the scenario's horizon "
                    f"{scenario.horizon} (leave horizon out)"
                )
            self._horizon = check_int("horizon", scenario.horizon)
        else:
            raise EnvError(f"scenario: expected a spec string or a Scenario, got {scenario!r}")
        self.scenario = scenario
        if transfer_budget is not None:
            transfer_budget = float(transfer_budget)
            if math.isnan(transfer_budget) or transfer_budget < 0:
                raise EnvError(f"transfer_budget: must be >= 0 or None, got {transfer_budget}")
            if math.isinf(transfer_budget):
                transfer_budget = None
        self.transfer_budget = transfer_budget
        self.integer = bool(integer)
        if reward_weights is None:
            reward_weights = RewardWeights()
        elif isinstance(reward_weights, Mapping):
            unknown = set(reward_weights) - {"target", "minima", "fairness"}
            if unknown:
                raise EnvError(
                    f"reward_weights: unknown term {sorted(unknown)[0]!r}; the terms are "
                    "'target', 'minima', 'fairness'"
                )
            reward_weights = RewardWeights(**reward_weights)
        if not isinstance(reward_weights, RewardWeights):
            raise EnvError(
                "reward_weights: expected a RewardWeights or a dict, got "
                f"{type(reward_weights).__name__}"
            )
        self.reward_weights = reward_weights
        eta = float(eta)
        if not math.isfinite(eta) or eta < 0:
            raise EnvError(f"eta: must be finite and >= 0, got {eta}")
        self.eta = eta
        if reward_scale != "auto":
            if isinstance(reward_scale, str):
                raise EnvError(f"reward_scale: 'auto' or a positive number, got {reward_scale!r}")
            reward_scale = float(reward_scale)
            if not math.isfinite(reward_scale) or reward_scale <= 0:
                raise EnvError(f"reward_scale: must be finite and > 0, got {reward_scale}")
        self.reward_scale = reward_scale
        if max_action is None:
            if network is not None:
                max_action = max(1.0, float(np.max(np.maximum(network.current, network.target))))
            else:
                max_action = 100.0
        max_action = float(max_action)
        if not math.isfinite(max_action) or max_action <= 0:
            raise EnvError(f"max_action: must be finite and > 0, got {max_action}")
        self.max_action = max_action
        self.network = network
        self.network_kwargs = {"names": False, **(network_kwargs or {})}
        if not isinstance(agent_rewards, bool):
            raise EnvError(f"agent_rewards: must be true or false, got {agent_rewards!r}")
        self.agent_rewards = agent_rewards
        self.networks: list[HospitalNetwork | None] = [None] * self.num_envs
        self.realisations: list[Any] = [None] * self.num_envs
        if network is not None:
            agent_ids = tuple(network.names)
        else:
            agent_ids = tuple(f"hospital_{i}" for i in range(self.n))
        self._spec = EnvSpec(
            name="hospital",
            num_agents=self.n,
            agent_ids=agent_ids,
            obs_dim=self.obs_dim,
            state_dim=self.state_dim,
            action=ActionSpec.continuous(1, -self.max_action, self.max_action),
            horizon=self._horizon,
            reward="agent" if self.agent_rewards else "team",
            metrics=EPISODE_METRICS,
            baselines=(*CLASSICAL_BASELINES, "random"),
            obs_names=(*LOCAL_FEATURES, *CONTEXT_FEATURES),
            outcome="each hospital's coverage y/t at the last step",
            any_num_agents=True,
            action_scale=10.0,  # staff: the typical gap |t - c| of the default network
            # marra 0.1's centralised critic (a deep set over hospitals): MAPPO with it is
            # that learner (docs/performance.md, 'Training: before and after the multi-agent core')
            critic="pool",
        )

        shape = (self.num_envs, self.n)
        f64 = {"dtype": torch.float64, "device": self.device}
        self.current = torch.zeros(shape, **f64)
        self.minimum = torch.zeros(shape, **f64)
        self.target = torch.zeros(shape, **f64)
        self.capacity = torch.full(shape, math.inf, **f64)
        self.scale = torch.ones(self.num_envs, **f64)
        self._coverage = torch.ones(shape, **f64)
        self._reward_divisor = torch.ones(self.num_envs, **f64)
        self._target_timeline = torch.zeros((self.num_envs, self._horizon, self.n), **f64)
        self._minimum_timeline = torch.zeros((self.num_envs, self._horizon, self.n), **f64)
        self._shock_hospital = torch.zeros(
            (self.num_envs, self._horizon, 0), dtype=torch.int64, device=self.device
        )
        self._shock_fraction = torch.zeros((self.num_envs, self._horizon, 0), **f64)
        self._rows = torch.arange(self.num_envs, device=self.device)
        self._sums = EpisodeAccumulator(EPISODE_METRICS, self.num_envs, self.device)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    @property
    def auto_reset(self) -> bool:
        """The old name of :attr:`autoreset`."""
        return self.autoreset

    # ------------------------------------------------------------------ reset
    def _draw(self, copy: int, sequence: np.random.SeedSequence) -> tuple[HospitalNetwork, Any]:
        network_seed, scenario_seed = (int(x) for x in sequence.generate_state(2, np.uint32))
        network = self.network
        if network is None:
            network = generate_network(self.n, network_seed, **self.network_kwargs)
        realisation = self.scenario.realise(network, scenario_seed)
        for field in ("target", "minimum"):
            shape = np.shape(getattr(realisation, field))
            if shape != (self._horizon, self.n):
                raise EnvError(
                    f"scenario: realisation {field} has shape {shape}, expected "
                    f"({self._horizon}, {self.n}) (horizon, n)"
                )
        return network, realisation

    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        """Draw networks and realisations for copies ``rows`` and apply the events of step 0."""
        k, horizon, n = len(rows), self._horizon, self.n
        current = np.empty((k, n))
        capacity = np.empty((k, n))
        target = np.empty((k, horizon, n))
        minimum = np.empty((k, horizon, n))
        shocks: list[dict[int, np.ndarray]] = []
        for j, copy in enumerate(rows):
            network, realisation = self._draw(int(copy), seeds[j])
            self.networks[copy] = network
            self.realisations[copy] = realisation
            current[j] = network.current
            capacity[j] = network.upper
            target[j] = realisation.target
            minimum[j] = realisation.minimum
            if self.integer and np.any(np.mod(current[j], 1.0) != 0.0):
                raise EnvError("network: integer mode needs whole current staff")
            # shocks of one step on one hospital combine as the scenario says (1 - prod(1 - f))
            shocks.append(
                {
                    int(step): np.flatnonzero(realisation.shock_fractions(int(step)))
                    for step in np.unique(realisation.shock_step)
                }
            )
        # shocks as (copy, step, slot) tables; slots = most hospitals shocked at one step
        slots = max(
            [len(hit) for by_step in shocks for hit in by_step.values()]
            + [self._shock_hospital.shape[2]]
        )
        if slots > self._shock_hospital.shape[2]:
            pad = slots - self._shock_hospital.shape[2]
            self._shock_hospital = torch.nn.functional.pad(self._shock_hospital, (0, pad))
            self._shock_fraction = torch.nn.functional.pad(self._shock_fraction, (0, pad))
        shock_hospital = np.zeros((k, horizon, slots), dtype=np.int64)
        shock_fraction = np.zeros((k, horizon, slots))
        for j, by_step in enumerate(shocks):
            realisation = self.realisations[rows[j]]
            for step, hit in by_step.items():
                shock_hospital[j, step, : len(hit)] = hit
                shock_fraction[j, step, : len(hit)] = realisation.shock_fractions(step)[hit]

        index = torch.as_tensor(rows, device=self.device)

        def put(name: str, values: np.ndarray | float) -> None:
            tensor = getattr(self, name)
            if tensor.is_inference() and not torch.is_inference_mode_enabled():
                tensor = tensor.clone()  # made under torch.inference_mode, reset outside it
            tensor[index] = torch.as_tensor(values, dtype=tensor.dtype).to(self.device)
            setattr(self, name, tensor)

        put("current", current)
        put("capacity", capacity)
        put("_target_timeline", target)
        put("_minimum_timeline", minimum)
        put("_shock_hospital", shock_hospital)
        put("_shock_fraction", shock_fraction)
        mean_target = target[:, 0, :].mean(axis=1)
        scale = np.where(mean_target > 0, mean_target, 1.0)
        put("scale", scale)
        divisor = n * scale**2 if self.reward_scale == "auto" else np.full(k, self.reward_scale)
        put("_reward_divisor", divisor)
        put("_coverage", 1.0)
        self._sums.reset(rows)
        started = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        started[index] = True
        step0 = torch.where(started, 0, self.t)
        self._apply_events(started, step0)
        put("_coverage", metrics_torch.coverage(self.current, self.target)[index].cpu().numpy())

    # ------------------------------------------------------------------ dynamics
    def _apply_events(self, rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Events of step ``t`` ``(num_envs,)`` for copies where ``rows`` ``(num_envs,)`` is True
        and ``t < horizon``: targets, minima, shocks. Returns the staff lost ``(num_envs,)``."""
        active = rows & (t < self._horizon)
        step = t.clamp(max=self._horizon - 1)
        keep = active.unsqueeze(1)
        self.target = torch.where(keep, self._target_timeline[self._rows, step], self.target)
        self.minimum = torch.where(keep, self._minimum_timeline[self._rows, step], self.minimum)
        lost_total = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)
        for slot in range(self._shock_hospital.shape[2]):  # shocks at one step (usually <= 1)
            hospital = self._shock_hospital[self._rows, step, slot].unsqueeze(1)
            fraction = self._shock_fraction[self._rows, step, slot].unsqueeze(1)
            staff = self.current.gather(1, hospital)
            after, lost = apply_shock(staff, self.minimum.gather(1, hospital), fraction)
            hit = keep & (fraction > 0)
            self.current = self.current.scatter(1, hospital, torch.where(hit, after, staff))
            lost_total = lost_total + torch.where(hit, lost, 0.0).squeeze(1)
        return lost_total

    def step(self, actions: Any) -> Step:
        """Act in every copy.

        Args:
            actions: ``(num_envs, n)`` or ``(num_envs, n, 1)`` staff per hospital: > 0 asks to
                receive that many, < 0 offers that many. NaN and +-inf are treated as 0 (no-op),
                then actions are clipped to ``[-max_action, max_action]``.

        Returns:
            :class:`~marra.envs.base.Step` ``(obs, reward, terminated, truncated, info)``: obs
            ``(num_envs, n, obs_dim)`` float32; reward ``(num_envs, n)`` float32, the team reward
            ``reward_raw / reward_scale`` given to every hospital (``info["team_reward"]``
            ``(num_envs,)`` holds it once); terminated always False; truncated True at the
            horizon. ``info`` holds ``(num_envs,)`` float64 tensors ``target_error``
            (``sum (y-t)^2``), ``minima_violation`` (``sum max(0, m-y)``), ``fairness``
            (population variance over hospitals of the net transfers ``y - c``),
            ``reward_raw`` (Eq. 1 with the weights, unscaled), ``mae`` (``mean |y-t|``),
            ``moved`` (staff that changed hospital), ``total`` (``sum y``), ``shock_loss``
            (staff removed by the events that followed the step), plus ``net_transfer``
            ``(num_envs, n)`` (``y - c``), ``agent_reward_raw`` ``(num_envs, n)`` float64
            (each hospital's share of Eq. 1, summing to ``reward_raw``), ``agent_reward``
            ``(num_envs, n)`` float32 (``agent_reward_raw / reward_scale``); at the end of an
            episode ``episode_outcome``, ``episode_metrics`` (see the class docstring); with
            auto-reset ``final_obs``, ``final_state`` and ``reset_mask``.
        """
        return super().step(actions)

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        action = actions[..., 0]
        current, minimum, target = self.current, self.minimum, self.target
        given, received, volume = clear_transfers(
            current, minimum, self.capacity, action, self.transfer_budget, integer=self.integer
        )
        allocation = current - given + received
        net_transfer = allocation - current
        weights = self.reward_weights
        target_error = torch.sum((allocation - target) ** 2, dim=1)
        minima_gap = torch.clamp(minimum - allocation, min=0.0)
        minima_violation = torch.sum(minima_gap, dim=1)
        fairness = torch.var(net_transfer, dim=1, correction=0)
        reward_raw = -(  # paper 000 Eq. (1)
            weights.target * target_error
            + weights.minima * self.eta * minima_violation
            + weights.fairness * fairness
        )
        # Eq. (1) split exactly into per-hospital terms (sum over i = reward_raw): the
        # population variance is sum_i (d_i - mean d)^2 / n with d = y - c
        deviation = net_transfer - net_transfer.mean(dim=1, keepdim=True)
        agent_reward_raw = -(  # paper 000 Eq. (1), hospital i's share
            weights.target * (allocation - target) ** 2
            + weights.minima * self.eta * minima_gap
            + weights.fairness * deviation**2 / self.n
        )
        mae = torch.mean(torch.abs(allocation - target), dim=1)
        info: dict[str, Any] = {
            "target_error": target_error,
            "minima_violation": minima_violation,
            "fairness": fairness,
            "reward_raw": reward_raw,
            "mae": mae,
            "moved": volume,
            "total": allocation.sum(dim=1),
        }
        team_reward = (reward_raw / self._reward_divisor).to(torch.float32)
        cover = metrics_torch.coverage(allocation, target)
        self._coverage = cover
        self._sums.add(
            {
                "mae": mae,
                "gini": metrics_torch.gini(allocation),
                "coverage_gini": metrics_torch.gini(cover),
                "mre_normalised": metrics_torch.mre_normalised(cover, 0.1),
                "minima_shortfall": minima_violation,
                "moved": volume,
            }
        )

        self.current = allocation
        info["shock_loss"] = self._apply_events(torch.ones_like(self.t, dtype=torch.bool),
                                                self.t + 1)  # fmt: skip
        info["net_transfer"] = net_transfer
        info["agent_reward_raw"] = agent_reward_raw
        info["agent_reward"] = (agent_reward_raw / self._reward_divisor.unsqueeze(1)).to(
            torch.float32
        )
        info["team_reward"] = team_reward
        if self.agent_rewards:
            reward = info["agent_reward"]
        else:
            reward = team_reward.unsqueeze(1).expand(self.num_envs, self.n).contiguous()
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return reward, terminated, info

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._sums.means(self.t)

    def _episode_outcome(self, done: torch.Tensor) -> torch.Tensor:
        return self._coverage.to(torch.float32)

    # ------------------------------------------------------------------ observation
    def _local_features(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """``LOCAL_FEATURES`` written column by column into ``out`` ``(num_envs, n, >= 6)``
        float32 (allocated when None); returns the ``(num_envs, n, local_dim)`` part."""
        if out is None:
            out = torch.empty(
                (self.num_envs, self.n, self.local_dim), dtype=torch.float32, device=self.device
            )
        scale = self.scale.unsqueeze(1)
        inverse = 1.0 / scale
        current, minimum, target = self.current, self.minimum, self.target
        room = torch.clamp(self.capacity - current, min=0.0)
        out[..., 0] = current * inverse
        out[..., 1] = minimum * inverse
        out[..., 2] = target * inverse
        out[..., 3] = (current - target) * inverse
        out[..., 4] = (current - minimum) * inverse
        out[..., 5] = torch.where(torch.isinf(room), 1.0, room / (room + scale).clamp_min(_TINY))
        return out[..., : self.local_dim]

    def context(self) -> torch.Tensor:
        """The network-wide context ``(num_envs, context_dim)`` (see ``CONTEXT_FEATURES``)."""
        per_hospital = self.n * self.scale
        current, minimum, target = self.current, self.minimum, self.target
        surplus = torch.clamp(current - target, min=0.0).sum(dim=1) / per_hospital
        deficit = torch.clamp(target - current, min=0.0).sum(dim=1) / per_hospital
        minima_deficit = torch.clamp(minimum - current, min=0.0).sum(dim=1) / per_hospital
        time_left = (self._horizon - self.t).clamp_min(0).to(torch.float64) / self._horizon
        if self.transfer_budget is None:
            budget = torch.ones_like(surplus)
        else:
            budget = torch.clamp(self.transfer_budget / per_hospital, max=1.0)
        return torch.stack([surplus, deficit, minima_deficit, time_left, budget], dim=-1)

    def observe(self) -> torch.Tensor:
        """Observation ``(num_envs, n, obs_dim)`` float32: ``LOCAL_FEATURES`` then the
        broadcast ``CONTEXT_FEATURES`` (``obs[..., -context_dim:]`` is the context)."""
        obs = torch.empty(
            (self.num_envs, self.n, self.obs_dim), dtype=torch.float32, device=self.device
        )
        self._local_features(obs)
        obs[..., self.local_dim :] = self.context().unsqueeze(1)
        return obs

    _observe = observe

    def global_state(self) -> torch.Tensor:
        """Fixed-size state for a centralised critic, ``(num_envs, state_dim)`` float32:
        the context, then the mean and the standard deviation over hospitals of each local
        feature (the same size for any n)."""
        local = self._local_features().to(torch.float64)
        mean = local.mean(dim=1)
        std = local.std(dim=1, correction=0)
        return torch.cat([self.context(), mean, std], dim=-1).to(torch.float32)

    def state(self) -> torch.Tensor:
        """The global state ``(num_envs, state_dim)`` (:meth:`global_state`)."""
        return self.global_state()

    # ------------------------------------------------------------------ baselines
    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        """``random`` or a classical strategy (:data:`CLASSICAL_BASELINES`) re-planning every
        step under this environment's transfer budget and staff mode."""
        if name in CLASSICAL_BASELINES:
            return ClassicalBaseline(self, name)
        return super().baseline(name, seed=seed)

    def network_now(self, copy: int) -> HospitalNetwork:
        """Copy ``copy``'s network as it stands now (current staff, this step's targets and
        minima), with the names, capacities and coordinates it started with."""
        base = self.networks[copy]
        if base is None:
            raise EnvError("network_now() called before reset()")
        return HospitalNetwork(
            current=self.current[copy].cpu().numpy().copy(),
            minimum=self.minimum[copy].cpu().numpy().copy(),
            target=self.target[copy].cpu().numpy().copy(),
            capacity=base.capacity,
            names=base.names,
            coords=base.coords,
        )

    def render_text(self, copy: int = 0) -> str:
        c = self.current[copy]
        t = self.target[copy]
        return (
            f"hospital: copy {copy}, step {int(self._t_host[copy])}/{self._horizon}, "
            f"{self.n} hospitals, staff {float(c.sum()):,.1f}, "
            f"MAE {float((c - t).abs().mean()):.3f}"
        )


class ClassicalBaseline:
    """A classical strategy as a baseline of :class:`HospitalEnv`: at every step each copy's
    network is re-planned by :func:`marra.hospital.strategies.allocate` (``shortfall=True``,
    the environment's budget and staff mode) and the action is the change ``y - c``, which the
    clearing rule executes exactly (offers and requests balance and fit the budget)."""

    def __init__(self, env: HospitalEnv, strategy: str) -> None:
        self.env = env
        self.strategy = strategy

    def reset(self) -> None:
        """Stateless."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        from marra.hospital.strategies import allocate

        env = self.env
        actions = np.zeros((env.num_envs, env.n))
        for copy in range(env.num_envs):  # evaluation only: the solvers are numpy
            network = env.network_now(copy)
            allocation = allocate(
                network,
                self.strategy,
                transfer_budget=env.transfer_budget,
                integer=env.integer,
                shortfall=True,
            )
            actions[copy] = np.asarray(allocation, dtype=np.float64) - network.current
        return torch.as_tensor(actions, device=env.device).unsqueeze(-1)
