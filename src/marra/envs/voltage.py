"""``voltage``: active voltage control on a distribution feeder by PV inverters (after MAPDN).

The task of MAPDN (Wang et al. 2021, "Multi-Agent Reinforcement Learning for Active Voltage
Control on Power Distribution Networks"; public code ``Future-Power-Networks/MAPDN``,
``environments/var_voltage_control/``), rebuilt on the batched contract: every copy's power flow
is solved at once by :mod:`marra.envs.powerflow` (real float64 torch arithmetic, checked against
``pandapower.runpp`` in the tests), and the loads and PV come from synthetic daily profiles drawn
per copy, or from the user's own CSV files in MAPDN's format. ``docs/envs/voltage.md`` states
the model, the data, the reward and every place where this differs from MAPDN.

The network (``network=``):

- ``case33bw`` (default): MAPDN's 33-bus case, built as MAPDN builds it: pandapower's
  ``case33bw`` (Baran and Wu, 12.66 kV) with its five tie lines out of service (radial), six PV
  units at buses 12, 17, 21, 24, 28 and 32 (0-based), zones ``main`` 0-5, ``zone1`` 6-17,
  ``zone2`` 18-21, ``zone3`` 22-24, ``zone4`` 25-32, peak load 3.5 MW (the 32 loads in the
  proportions of ``case33bw``, at their own power factors) and peak PV 8.75 MW (6 equal units).
- ``mv_oberrhein``: pandapower's ``mv_oberrhein``, a real 20 kV network in south-west Germany
  (179 buses, two 110/20 kV substations, operated radially: its ring switches are open), with
  its own 153 PV units as agents and its own 147 loads. Zones are its four open-ring feeder
  groups (the buses reached from a substation's 20 kV busbar without passing another busbar);
  ``main`` holds the 110 kV buses and the busbars. Peak load 0.6 x the rated load of its
  stations (pandapower's own ``"load"`` case, 37.1 MW), peak PV 2.5 x that (MAPDN's
  PV-to-load ratio of its 33- and 322-bus cases) in the proportions of the rated PV units.

Timeline of one step ``t`` (3 minutes; ``horizon`` 240 steps = 12 hours from a random start):

1. the loads and PV powers of slot ``t`` are known (drawn at the end of the previous step, or by
   ``reset``); the agents' observation shows them, with the voltages of the last power flow;
2. each inverter sets ``q = a sqrt(s_max^2 - p^2)`` (MVAr) from its action ``a`` in
   ``[-action_scale, action_scale]``, ``s_max = 1.2 x`` its peak power (MAPDN);
3. the AC power flow of slot ``t`` with these ``q`` gives every bus voltage
   (``info["bus_vm"]``), the losses and the reward;
4. if it does not converge the copy's episode ends (``terminated``) with MAPDN's penalty: the
   reward of the last solved state minus 200 (``info["power_flow_failed"]``);
5. the loads and PV of slot ``t + 1`` are drawn.

Observation of an agent (MAPDN's distributed layout, float32): the load active power (MW) of
every bus of its zone, their load reactive power (MVAr), its own PV active and reactive power,
the voltage magnitudes (p.u.) and the voltage angles (radians) of its zone's buses; zero-padded
at the end to the longest observation (the largest zone). ``state()``: the loads' active and
reactive power at every bus, every PV's active and reactive power, every bus voltage magnitude
and angle.

Reward (team, MAPDN's): ``-(voltage_weight x mean over buses of barrier(v) + q_weight x mean over
inverters of |q|)``; barriers as MAPDN's: ``l1`` ``|v - 1|``, ``l2`` ``2 (v - 1)^2``, ``bowl``
(``2 |v - 1| - 0.095`` outside the band, a shallow Gaussian bowl inside), ``courant_beltrami``
(squared distance outside the band, 0 inside).

Metrics (means over the episode's steps): ``controllable_rate`` (share of steps with every bus
in band), ``out_of_band`` (share of bus-steps outside it), ``q_loss`` (mean |q| per inverter,
MVAr), ``power_loss`` (network losses, MW). A step whose power flow failed counts as not
controllable and keeps the last solved voltages.

Baselines: ``no-control`` (q = 0), ``droop`` (MAPDN's traditional controller), ``opf`` (an
ORACLE: each step's reward maximised by projected gradient on the exact power flow, knowing the
step's loads and PV; actions do not change later states, so this bounds every policy from
above) and ``random``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import (
    ActionSpec,
    Baseline,
    EnvError,
    EnvSpec,
    EpisodeAccumulator,
    MultiAgentEnv,
    check_choice,
    check_int,
    check_number,
)
from .powerflow import Grid, PowerFlow, grid_from_pandapower, require_pandapower
from .rng import CounterRNG, copy_keys

__all__ = [
    "VoltageEnv",
    "Feeder",
    "feeder",
    "NETWORKS",
    "BARRIERS",
    "MODES",
    "EPISODE_METRICS",
    "voltage_barrier",
    "load_shape",
    "clear_sky",
    "DroopBaseline",
    "OPFBaseline",
]

NETWORKS = ("case33bw", "mv_oberrhein")
MODES = ("distributed", "zone")
BARRIERS = ("l1", "l2", "bowl", "courant_beltrami")
EPISODE_METRICS = ("controllable_rate", "out_of_band", "q_loss", "power_loss")

#: minutes per step (MAPDN's data are 3-minute readings)
STEP_MINUTES = 3
#: inverter apparent-power rating over the PV peak (MAPDN's ``factor``)
OVERSIZE = 1.2
#: MAPDN's penalty for a power flow that does not converge
FAILURE_PENALTY = 200.0
#: droop controller of MAPDN's ``pf_droop_matpower_all.m``
DROOP_GAIN, DROOP_ITERATIONS, DROOP_TOLERANCE = 0.1, 100, 1e-4
DROOP_V_REF, DROOP_V_SATURATION = 1.0, 0.05

# synthetic profiles (docs/envs/voltage.md, "Data")
LOAD_NIGHT, LOAD_MORNING, LOAD_EVENING = 0.45, 0.30, 0.55
MORNING_HOUR, MORNING_WIDTH, EVENING_HOUR, EVENING_WIDTH = 8.0, 1.5, 19.0, 2.0
SUNRISE, SUNSET, CLEAR_SKY_EXPONENT = 6.0, 20.0, 1.3
CLEARNESS_LOW, CLEARNESS_HIGH = 0.4, 1.0
CLOUD_RHO, CLOUD_COMMON, CLOUD_SPREAD = 0.95, 0.8, 0.5
LOAD_RHO, LOAD_NOISE = 0.9, 0.05

# counter-based random streams (normal streams use uniform streams 2s+1, 2s+2)
_N_LOAD, _N_CLOUD_COMMON, _N_CLOUD_OWN, _N_DATA = 1, 2, 3, 4
_U_START, _U_CLEARNESS, _U_ACTION = 101, 102, 103


# --------------------------------------------------------------------------- formulas
def voltage_barrier(
    name: str, vm: torch.Tensor, v_lower: float = 0.95, v_upper: float = 1.05
) -> torch.Tensor:
    """MAPDN's voltage barrier functions, elementwise on voltage magnitudes (p.u.).

    ``l1``: ``|v - 1|``; ``l2``: ``2 (v - 1)^2``; ``bowl``: ``2 |v - 1| - 0.095`` where
    ``|v - 1| > 0.05``, else ``0.04 - 0.01 N(v; 1, 0.1)`` (N the normal density);
    ``courant_beltrami``: ``max(0, v - v_upper)^2 + max(0, v_lower - v)^2``
    (MAPDN ``voltage_barrier/*.py``; v_ref = 1).
    """
    deviation = vm - 1.0
    if name == "l1":
        return deviation.abs()
    if name == "l2":
        return 2.0 * deviation.square()
    if name == "bowl":
        scale = 0.1
        density = torch.exp(-0.5 * deviation.square() / scale**2) / math.sqrt(
            2.0 * math.pi * scale**2
        )
        inside = -0.01 * density + 0.04
        return torch.where(deviation.abs() > 0.05, 2.0 * deviation.abs() - 0.095, inside)
    if name == "courant_beltrami":
        return (vm - v_upper).clamp_min(0.0).square() + (v_lower - vm).clamp_min(0.0).square()
    raise EnvError(f"barrier: must be one of {', '.join(BARRIERS)}; got {name!r}")


def _circular(hour: torch.Tensor, centre: float) -> torch.Tensor:
    return torch.remainder(hour - centre + 12.0, 24.0) - 12.0


def load_shape(hour: torch.Tensor) -> torch.Tensor:
    """The synthetic load as a fraction of its peak at ``hour`` (0-24, any shape).

    ``0.45 + 0.30 g(h; 8, 1.5) + 0.55 g(h; 19, 2)`` with ``g(h; c, w) = exp(-d^2 / 2 w^2)``, ``d``
    the circular distance in hours: a night floor of 0.45, a morning peak of about 0.75 at 8:00
    and the daily peak 1.0 at 19:00.
    """
    morning = torch.exp(-0.5 * (_circular(hour, MORNING_HOUR) / MORNING_WIDTH).square())
    evening = torch.exp(-0.5 * (_circular(hour, EVENING_HOUR) / EVENING_WIDTH).square())
    return LOAD_NIGHT + LOAD_MORNING * morning + LOAD_EVENING * evening


def clear_sky(hour: torch.Tensor) -> torch.Tensor:
    """Clear-sky PV output as a fraction of the peak: ``sin(pi (h - 6) / 14)^1.3`` between
    sunrise 6:00 and sunset 20:00 (a summer day, peak 1.0 at 13:00), 0 at night."""
    phase = ((hour - SUNRISE) / (SUNSET - SUNRISE)).clamp(0.0, 1.0)
    day = (hour > SUNRISE) & (hour < SUNSET)
    return torch.where(day, torch.sin(math.pi * phase).clamp_min(0.0).pow(CLEAR_SKY_EXPONENT), 0.0)


# --------------------------------------------------------------------------- the feeders
@dataclass(frozen=True)
class Feeder:
    """A network with its loads, PV units and zones, ready for :class:`VoltageEnv`.

    ``load_bus`` / ``pv_bus``: bus positions (in ``grid`` bus order) of each load / PV unit;
    ``load_p_peak`` / ``load_q_peak`` (MW / MVAr) and ``pv_peak`` (MW) the peaks of the synthetic
    profiles; ``zone_of_bus``: zone number of every bus (0 = ``main``); ``zone_names``.
    """

    name: str
    grid: Grid
    load_bus: np.ndarray
    load_p_peak: np.ndarray
    load_q_peak: np.ndarray
    pv_bus: np.ndarray
    pv_peak: np.ndarray
    zone_of_bus: np.ndarray
    zone_names: tuple[str, ...]

    def zone_buses(self, zone: int) -> np.ndarray:
        return np.flatnonzero(self.zone_of_bus == zone)


#: MAPDN's 33-bus case (gen_pandapower_pv ``bus33bw.py`` and the MAPDN README's table)
CASE33_PV_BUSES = (12, 17, 21, 24, 28, 32)
CASE33_ZONES = ((0, 6), (6, 18), (18, 22), (22, 25), (25, 33))  # main, zone1..zone4
CASE33_PEAK_LOAD_MW, CASE33_PEAK_PV_MW = 3.5, 8.75
OBERRHEIN_LOAD_SCALING, OBERRHEIN_PV_TO_LOAD = 0.6, 2.5


@functools.cache
def feeder(name: str) -> Feeder:
    """The :class:`Feeder` ``name`` (one of :data:`NETWORKS`), read from pandapower once per
    process."""
    check_choice("network", name, NETWORKS)
    pp = require_pandapower()
    import pandapower.networks as pn

    with _quiet():
        if name == "case33bw":
            net = pn.case33bw()
            for bus in CASE33_PV_BUSES:
                pp.create_sgen(net, bus, p_mw=0.0, q_mvar=0.0, name=f"pv_{bus}", type="PV")
        else:
            net = pn.mv_oberrhein()
        grid = grid_from_pandapower(net, name)
    loads = net.load[net.load.in_service]
    sgens = net.sgen[net.sgen.in_service]
    load_bus = grid.position(loads.bus.to_numpy())
    pv_bus = grid.position(sgens.bus.to_numpy())
    load_p = loads.p_mw.to_numpy(dtype=np.float64)
    load_q = loads.q_mvar.to_numpy(dtype=np.float64)
    if name == "case33bw":
        factor = CASE33_PEAK_LOAD_MW / load_p.sum()
        load_p, load_q = load_p * factor, load_q * factor
        pv_peak = np.full(len(pv_bus), CASE33_PEAK_PV_MW / len(pv_bus))
        zone_of_bus = np.zeros(grid.num_buses, dtype=np.int64)
        for zone, (lo, hi) in enumerate(CASE33_ZONES):
            zone_of_bus[grid.position(np.arange(lo, hi))] = zone
        names = ("main", "zone1", "zone2", "zone3", "zone4")
    else:
        load_p, load_q = load_p * OBERRHEIN_LOAD_SCALING, load_q * OBERRHEIN_LOAD_SCALING
        rated = sgens.p_mw.to_numpy(dtype=np.float64)
        pv_peak = rated / rated.sum() * OBERRHEIN_PV_TO_LOAD * load_p.sum()
        zone_of_bus = _feeder_zones(net, grid)
        names = ("main", *(f"zone{k}" for k in range(1, int(zone_of_bus.max()) + 1)))
    return Feeder(
        name=name,
        grid=grid,
        load_bus=load_bus,
        load_p_peak=load_p,
        load_q_peak=load_q,
        pv_bus=pv_bus,
        pv_peak=pv_peak,
        zone_of_bus=zone_of_bus,
        zone_names=names,
    )


def _feeder_zones(net: Any, grid: Grid) -> np.ndarray:
    """Zone numbers: 0 for the high-voltage buses and the transformers' low-voltage busbars,
    then one zone per connected group of the remaining buses (ordered by their first bus)."""
    import networkx as nx
    import pandapower.topology as top

    graph = top.create_nxgraph(net, respect_switches=True, include_out_of_service=False)
    main = set(net.trafo.hv_bus[net.trafo.in_service]) | set(net.trafo.lv_bus[net.trafo.in_service])
    main |= {int(b) for b in net.ext_grid.bus}
    graph.remove_nodes_from(main)
    groups = sorted(
        (sorted(grid.position(list(c)).tolist()) for c in nx.connected_components(graph)),
        key=lambda g: g[0],
    )
    zone = np.zeros(grid.num_buses, dtype=np.int64)
    for k, group in enumerate(groups, start=1):
        zone[np.asarray(group)] = k
    return zone


class _quiet:
    """Silence pandapower's logging and warnings (its advice to install numba)."""

    def __enter__(self) -> None:
        import logging
        import warnings

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._previous = logging.root.manager.disable
        logging.disable(logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        import logging

        logging.disable(self._previous)
        self._warnings.__exit__(*exc)


# --------------------------------------------------------------------------- CSV data
def _read_series(path: Path, columns: int, what: str) -> np.ndarray:
    import pandas as pd

    if not path.is_file():
        raise EnvError(f"data_dir: {path} is missing (MAPDN's {what} file)")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises many kinds
        raise EnvError(f"data_dir: cannot read {path.name}: {exc}") from None
    if frame.shape[1] != columns + 1:
        raise EnvError(
            f"data_dir: {path.name} has {frame.shape[1] - 1} value columns after the datetime "
            f"column; the network needs {columns}"
        )
    stamps = pd.to_datetime(frame.iloc[:, 0], errors="coerce")
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise EnvError(f"data_dir: {path.name} row {row + 1}: the first column is not a datetime")
    if not stamps.is_monotonic_increasing or stamps.duplicated().any():
        raise EnvError(f"data_dir: {path.name}: the datetimes must increase strictly")
    values = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise EnvError(
            f"data_dir: {path.name} row {row + 1}, column {frame.columns[col + 1]!r}: "
            "not a finite number"
        )
    if (values < 0).any() and what != "load_reactive":
        row, col = (int(v) for v in np.argwhere(values < 0)[0])
        raise EnvError(
            f"data_dir: {path.name} row {row + 1}, column {frame.columns[col + 1]!r}: negative"
        )
    return values


# --------------------------------------------------------------------------- the environment
class VoltageEnv(MultiAgentEnv):
    """Voltage control on a distribution feeder by PV inverters (see the module docstring).

    Args:
        network: ``case33bw`` (default; MAPDN's 33-bus case) or ``mv_oberrhein`` (pandapower's
            179-bus 20 kV network, 153 PV inverters).
        mode: ``distributed`` (default; one agent per PV inverter, action dim 1) or ``zone`` (one
            agent per zone with PV, MAPDN's decentralised mode; action dim = the most PV units
            in one zone, entry ``k`` drives the zone's ``k``-th unit, extra entries are ignored).
        barrier: voltage barrier of the reward: ``l1`` (default, MAPDN's configuration), ``l2``,
            ``bowl`` or ``courant_beltrami``.
        horizon: steps per episode, 3 minutes each (default 240 = 12 hours).
        data_dir: a folder with MAPDN's ``pv_active.csv``, ``load_active.csv`` and
            ``load_reactive.csv`` (a datetime column, then one column per PV unit / load in the
            network's order; one row per step); None (default): synthetic profiles.
        load_scale: multiplies every load (MAPDN's ``demand_scale``; default 1).
        pv_scale: multiplies every PV output and rating (MAPDN's ``pv_scale``; default 1).
        action_scale: actions lie in ``[-action_scale, action_scale]`` (MAPDN's 0.8 for the 33-bus
            case; at most 1).
        q_weight: weight of the mean ``|q|`` (MVAr) in the reward (MAPDN's 0.1).
        voltage_weight: weight of the mean voltage barrier in the reward (MAPDN's 1).
        v_lower: lower end of the voltage band (p.u., default 0.95).
        v_upper: upper end of the voltage band (p.u., default 1.05).
        reset_action: start each episode from random reactive powers, as MAPDN does (default
            True); False: from q = 0.
        noise: MAPDN's measurement noise on CSV data: each value plus a half-normal draw with
            this fraction of its column's standard deviation (default 0.01; 0 replays the data
            exactly). Unused by the synthetic profiles, which have their own noise.
        max_iterations: power-flow iterations before a copy is declared not converged (100).
    """

    def __init__(
        self,
        network: str = "case33bw",
        mode: str = "distributed",
        barrier: str = "l1",
        horizon: int = 240,
        data_dir: str | Path | None = None,
        load_scale: float = 1.0,
        pv_scale: float = 1.0,
        action_scale: float = 0.8,
        q_weight: float = 0.1,
        voltage_weight: float = 1.0,
        v_lower: float = 0.95,
        v_upper: float = 1.05,
        reset_action: bool = True,
        noise: float = 0.01,
        max_iterations: int = 100,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self.network = check_choice("network", network, NETWORKS)
        self.mode = check_choice("mode", mode, MODES)
        self.barrier = check_choice("barrier", barrier, BARRIERS)
        self._horizon = check_int("horizon", horizon, maximum=1_000_000)
        self.load_scale = check_number("load_scale", load_scale, minimum=0.0)
        self.pv_scale = check_number("pv_scale", pv_scale, minimum=0.0)
        self.action_scale = check_number("action_scale", action_scale, minimum=0.0, maximum=1.0,
                                         strict=True)  # fmt: skip
        self.q_weight = check_number("q_weight", q_weight, minimum=0.0)
        self.voltage_weight = check_number("voltage_weight", voltage_weight, minimum=0.0)
        self.v_lower = check_number("v_lower", v_lower, minimum=0.0, strict=True)
        self.v_upper = check_number("v_upper", v_upper, minimum=0.0, strict=True)
        if not self.v_lower < 1.0 < self.v_upper:
            raise EnvError(
                f"v_lower, v_upper: need v_lower < 1 < v_upper, got {self.v_lower}, {self.v_upper}"
            )
        if not isinstance(reset_action, bool):
            raise EnvError(f"reset_action: must be True or False, got {reset_action!r}")
        self.reset_action = reset_action
        self.noise = check_number("noise", noise, minimum=0.0)
        self.max_iterations = check_int("max_iterations", max_iterations, maximum=100_000)

        self.feeder = feeder(self.network)
        fd = self.feeder
        grid = fd.grid
        self.power_flow = PowerFlow(grid, device=self.device, max_iterations=self.max_iterations)
        self.num_buses = grid.num_buses
        self.num_pv = int(fd.pv_bus.shape[0])
        self.num_loads = int(fd.load_bus.shape[0])
        f64 = dict(dtype=torch.float64, device=self.device)
        dev = self.device

        # data: synthetic peaks or the user's series
        self.data_dir = None if data_dir is None else Path(data_dir)
        if self.data_dir is None:
            pv_peak = fd.pv_peak * self.pv_scale
            self._load_p_peak = torch.as_tensor(fd.load_p_peak * self.load_scale, **f64)
            self._load_q_peak = torch.as_tensor(fd.load_q_peak * self.load_scale, **f64)
            days = (479 + self._horizon) * STEP_MINUTES // 1440 + 1
            self._num_days = int(days)
            self._series: tuple[torch.Tensor, ...] | None = None
        else:
            if not self.data_dir.is_dir():
                raise EnvError(f"data_dir: {self.data_dir} is not a folder")
            pv = _read_series(self.data_dir / "pv_active.csv", self.num_pv, "pv_active")
            lp = _read_series(self.data_dir / "load_active.csv", self.num_loads, "load_active")
            lq = _read_series(self.data_dir / "load_reactive.csv", self.num_loads, "load_reactive")
            rows = {pv.shape[0], lp.shape[0], lq.shape[0]}
            if len(rows) != 1:
                raise EnvError(
                    f"data_dir: the three files have different numbers of rows {sorted(rows)}"
                )
            if pv.shape[0] < self._horizon + 1:
                raise EnvError(
                    f"data_dir: {pv.shape[0]} rows; an episode of horizon {self._horizon} needs "
                    f"at least {self._horizon + 1}"
                )
            pv, lp, lq = pv * self.pv_scale, lp * self.load_scale, lq * self.load_scale
            pv_peak = pv.max(axis=0)
            self._series = tuple(torch.as_tensor(x, **f64) for x in (pv, lp, lq))
            self._series_std = tuple(torch.as_tensor(x.std(axis=0), **f64) for x in (pv, lp, lq))
            self._num_days = 1
        self._pv_peak = torch.as_tensor(pv_peak, **f64)
        self._s_max = OVERSIZE * self._pv_peak
        self._load_bus = torch.as_tensor(fd.load_bus, device=dev)
        self._pv_bus = torch.as_tensor(fd.pv_bus, device=dev)

        # agents and observation layout
        pv_zone = fd.zone_of_bus[fd.pv_bus]
        self._agent_zone, self._agent_pvs, agent_ids = self._agents(pv_zone)
        self._obs_index, obs_dim = self._observation_index()
        self._pv_agent, self._pv_slot = self._action_layout()
        n_agents = len(agent_ids)
        dim = 1 if self.mode == "distributed" else int(self._agent_pvs.shape[1])
        self._spec = EnvSpec(
            name="voltage",
            num_agents=n_agents,
            agent_ids=agent_ids,
            obs_dim=obs_dim,
            state_dim=4 * self.num_buses + 2 * self.num_pv,
            action=ActionSpec.continuous(dim, -self.action_scale, self.action_scale),
            horizon=self._horizon,
            reward="team",
            metrics=EPISODE_METRICS,
            baselines=("no-control", "droop", "opf", "random"),
            outcome="each agent's undiscounted return (the team's)",
            any_num_agents=False,
        )

        # per-copy state
        e = self.num_envs
        self._rng = CounterRNG(e, dev)
        self._start_slot = torch.zeros(e, dtype=torch.int64, device=dev)
        self._clearness = torch.ones((e, self._num_days), **f64)
        self._z_load = torch.zeros((e, self.num_loads), **f64)
        self._z_common = torch.zeros(e, **f64)
        self._z_pv = torch.zeros((e, self.num_pv), **f64)
        self._p_pv = torch.zeros((e, self.num_pv), **f64)
        self._p_load = torch.zeros((e, self.num_loads), **f64)
        self._q_load = torch.zeros((e, self.num_loads), **f64)
        self._q_pv = torch.zeros((e, self.num_pv), **f64)
        self._vm = torch.ones((e, self.num_buses), **f64)
        self._va = torch.zeros((e, self.num_buses), **f64)
        self._loss = torch.zeros(e, **f64)
        self._sums = EpisodeAccumulator(EPISODE_METRICS, e, dev)

    # ------------------------------------------------------------------ layout
    def _agents(self, pv_zone: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Zone of each agent ``(N,)`` and the PV units each drives ``(N, K)`` (-1 padded)."""
        fd = self.feeder
        if self.mode == "distributed":
            ids = tuple(f"pv_{int(fd.grid.bus_ids[b])}" for b in fd.pv_bus)
            if len(set(ids)) != len(ids):
                ids = tuple(f"pv{j}_{int(fd.grid.bus_ids[b])}" for j, b in enumerate(fd.pv_bus))
            return pv_zone.copy(), np.arange(self.num_pv).reshape(-1, 1), ids
        zones = sorted(set(pv_zone.tolist()))
        width = max(int((pv_zone == z).sum()) for z in zones)
        pvs = np.full((len(zones), width), -1, dtype=np.int64)
        for i, z in enumerate(zones):
            members = np.flatnonzero(pv_zone == z)
            pvs[i, : members.shape[0]] = members
        return np.asarray(zones), pvs, tuple(fd.zone_names[z] for z in zones)

    def _source_layout(self) -> dict[str, int]:
        b, n = self.num_buses, self.num_pv
        return {"load_p": 0, "load_q": b, "vm": 2 * b, "va": 3 * b, "pv_p": 4 * b,
                "pv_q": 4 * b + n, "zero": 4 * b + 2 * n}  # fmt: skip

    def _observation_index(self) -> tuple[torch.Tensor, int]:
        """Gather index ``(N, obs_dim)`` into the per-copy source vector (see ``_source``)."""
        at = self._source_layout()
        rows = []
        for zone, pvs in zip(self._agent_zone, self._agent_pvs, strict=True):
            buses = self.feeder.zone_buses(int(zone))
            units = pvs[pvs >= 0]
            row = [at["load_p"] + buses, at["load_q"] + buses, at["pv_p"] + units,
                   at["pv_q"] + units, at["vm"] + buses, at["va"] + buses]  # fmt: skip
            rows.append(np.concatenate(row))
        width = max(r.shape[0] for r in rows)
        index = np.full((len(rows), width), at["zero"], dtype=np.int64)
        for i, r in enumerate(rows):
            index[i, : r.shape[0]] = r
        return torch.as_tensor(index, device=self.device), width

    def _action_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        agent = np.zeros(self.num_pv, dtype=np.int64)
        slot = np.zeros(self.num_pv, dtype=np.int64)
        for i, pvs in enumerate(self._agent_pvs):
            for k, j in enumerate(pvs):
                if j >= 0:
                    agent[j], slot[j] = i, k
        return torch.as_tensor(agent, device=self.device), torch.as_tensor(slot, device=self.device)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    # ------------------------------------------------------------------ data
    def _hour(self, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        minute = (self._start_slot + slot) * STEP_MINUTES
        return (minute % 1440).to(torch.float64) / 60.0, minute // 1440

    def _draw(self, slot: torch.Tensor, fresh: bool) -> tuple[torch.Tensor, ...]:
        """PV and load powers of ``slot`` ``(E,)`` for every copy; ``fresh``: start the noise
        processes (stationary draws) instead of advancing them. Returns the new noise states
        and powers (nothing is stored)."""
        rng = self._rng
        if self._series is not None:
            row = self._start_slot + slot
            pv, lp, lq = (series[row.clamp(max=series.shape[0] - 1)] for series in self._series)
            if self.noise > 0:
                scale = [self.noise * std for std in self._series_std]
                pv = pv + scale[0] * rng.normal((self.num_pv,), slot, _N_DATA).abs()
                lp = lp + scale[1] * rng.normal((self.num_loads,), slot, _N_DATA + 10).abs()
                lq = lq + scale[2] * rng.normal((self.num_loads,), slot, _N_DATA + 20).abs()
            return self._z_load, self._z_common, self._z_pv, pv, lp, lq
        e_load = rng.normal((self.num_loads,), slot, _N_LOAD)
        e_common = rng.normal((), slot, _N_CLOUD_COMMON)
        e_pv = rng.normal((self.num_pv,), slot, _N_CLOUD_OWN)
        if fresh:
            z_load, z_common, z_pv = e_load, e_common, e_pv
        else:
            z_load = LOAD_RHO * self._z_load + math.sqrt(1 - LOAD_RHO**2) * e_load
            z_common = CLOUD_RHO * self._z_common + math.sqrt(1 - CLOUD_RHO**2) * e_common
            z_pv = CLOUD_RHO * self._z_pv + math.sqrt(1 - CLOUD_RHO**2) * e_pv
        hour, day = self._hour(slot)
        clearness = self._clearness.gather(1, day.clamp(max=self._num_days - 1).unsqueeze(1))
        cloud = CLOUD_COMMON * z_common.unsqueeze(1) + math.sqrt(1 - CLOUD_COMMON**2) * z_pv
        sky = (clearness + CLOUD_SPREAD * (1.05 - clearness) * cloud).clamp(0.0, 1.0)
        pv = self._pv_peak * clear_sky(hour).unsqueeze(1) * sky
        level = load_shape(hour).unsqueeze(1) * (1.0 + LOAD_NOISE * z_load).clamp_min(0.0)
        return z_load, z_common, z_pv, pv, self._load_p_peak * level, self._load_q_peak * level

    def _injections(
        self, q_pv: torch.Tensor, p_pv: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Net bus injections (MW, MVAr) ``(E, num_buses)`` of the current slot with ``q_pv``."""
        p_pv = self._p_pv if p_pv is None else p_pv
        e = q_pv.shape[0]
        p = torch.zeros((e, self.num_buses), dtype=torch.float64, device=self.device)
        q = torch.zeros_like(p)
        p = p.index_add(1, self._pv_bus, p_pv).index_add(1, self._load_bus, -self._p_load)
        q = q.index_add(1, self._pv_bus, q_pv).index_add(1, self._load_bus, -self._q_load)
        return p, q

    def q_capacity(self, p_pv: torch.Tensor | None = None) -> torch.Tensor:
        """``sqrt(s_max^2 - p^2)`` ``(E, num_pv)`` (MVAr): the reactive power an inverter
        gives at action 1."""
        p_pv = self._p_pv if p_pv is None else p_pv
        return (self._s_max.square() - p_pv.square()).clamp_min(0.0).sqrt()

    # ------------------------------------------------------------------ contract hooks
    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        self._rng.set_keys(rows, copy_keys(seeds))
        index = torch.as_tensor(rows, device=self.device)
        e = self.num_envs
        zero = torch.zeros(e, dtype=torch.int64, device=self.device)
        if self._series is None:
            start = (self._rng.uniform((), zero, _U_START) * (1440 // STEP_MINUTES)).long()
            u = self._rng.uniform((self._num_days,), zero, _U_CLEARNESS)
            clearness = CLEARNESS_LOW + (CLEARNESS_HIGH - CLEARNESS_LOW) * u
        else:
            rows_available = self._series[0].shape[0] - self._horizon
            start = (self._rng.uniform((), zero, _U_START) * rows_available).long()
            clearness = self._clearness
        self._start_slot = _put(self._start_slot, index, start)
        self._clearness = _put(self._clearness, index, clearness)
        z_load, z_common, z_pv, pv, lp, lq = self._draw(zero, fresh=True)
        self._z_load = _put(self._z_load, index, z_load)
        self._z_common = _put(self._z_common, index, z_common)
        self._z_pv = _put(self._z_pv, index, z_pv)
        self._p_pv = _put(self._p_pv, index, pv)
        self._p_load = _put(self._p_load, index, lp)
        self._q_load = _put(self._q_load, index, lq)
        if self.reset_action:
            u = self._rng.uniform((self.num_pv,), zero, _U_ACTION)
            action = self.action_scale * (2.0 * u - 1.0)
        else:
            action = torch.zeros((e, self.num_pv), dtype=torch.float64, device=self.device)
        q = action * self.q_capacity()
        self._q_pv = _put(self._q_pv, index, q)
        # the whole batch is solved so that a copy's numbers never depend on the others'
        p_inj, q_inj = self._injections(self._q_pv)
        result = self.power_flow.solve(p_inj, q_inj)
        ok = result.converged
        vm = torch.where(ok.unsqueeze(1), result.vm, 1.0)
        va = torch.where(ok.unsqueeze(1), result.va, 0.0)
        loss = torch.where(ok, result.loss_mw, 0.0)
        self._vm = _put(self._vm, index, vm)
        self._va = _put(self._va, index, va)
        self._loss = _put(self._loss, index, loss)
        self._sums.reset(rows)

    def pv_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Each inverter's action ``(E, num_pv)`` from the joint action ``(E, N, dim)``."""
        return actions[:, self._pv_agent, self._pv_slot]

    def joint_actions(self, pv_actions: torch.Tensor) -> torch.Tensor:
        """The joint action ``(E, N, dim)`` that gives each inverter ``pv_actions (E, num_pv)``."""
        e = pv_actions.shape[0]
        spec = self._spec
        joint = torch.zeros((e, spec.num_agents, int(spec.action.dim)), dtype=torch.float64,
                            device=self.device)  # fmt: skip
        joint[:, self._pv_agent, self._pv_slot] = pv_actions.to(torch.float64)
        return joint

    def reward_terms(self, vm: torch.Tensor, q_pv: torch.Tensor) -> dict[str, torch.Tensor]:
        """MAPDN's reward and its parts for voltages ``vm (E, num_buses)`` and ``q_pv``."""
        barrier = voltage_barrier(self.barrier, vm, self.v_lower, self.v_upper).mean(dim=1)
        q_loss = q_pv.abs().mean(dim=1)
        reward = -(self.voltage_weight * barrier + self.q_weight * q_loss)
        return {"reward": reward, "voltage_barrier": barrier, "q_loss": q_loss}

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        q = self.pv_actions(actions) * self.q_capacity()
        p_inj, q_inj = self._injections(q)
        result = self.power_flow.solve(p_inj, q_inj)
        ok = result.converged
        failed = ~ok
        ok2 = ok.unsqueeze(1)
        vm = torch.where(ok2, result.vm, self._vm)
        va = torch.where(ok2, result.va, self._va)
        loss = torch.where(ok, result.loss_mw, self._loss)
        # MAPDN: a failed power flow is scored on the last solved state, minus the penalty
        q_scored = torch.where(ok2, q, self._q_pv)
        terms = self.reward_terms(vm, q_scored)
        reward = terms["reward"] - FAILURE_PENALTY * failed.to(torch.float64)
        outside = (vm < self.v_lower) | (vm > self.v_upper)
        out_of_band = outside.to(torch.float64).mean(dim=1)
        controllable = (~outside.any(dim=1) & ok).to(torch.float64)
        q_loss = q.abs().mean(dim=1)
        self._vm, self._va, self._loss, self._q_pv = vm, va, loss, q
        self._sums.add({"controllable_rate": controllable, "out_of_band": out_of_band,
                        "q_loss": q_loss, "power_loss": loss})  # fmt: skip
        info = {
            "bus_vm": vm,
            "power_flow_failed": failed,
            "voltage_barrier": terms["voltage_barrier"],
            "q_loss": q_loss,
            "power_loss": loss,
            "out_of_band": out_of_band,
            "controllable": controllable,
        }
        # the next slot's loads and PV
        z_load, z_common, z_pv, pv, lp, lq = self._draw(self.t + 1, fresh=False)
        self._z_load, self._z_common, self._z_pv = z_load, z_common, z_pv
        self._p_pv, self._p_load, self._q_load = pv, lp, lq
        team = reward.to(torch.float32).unsqueeze(1).expand(-1, self._spec.num_agents)
        return team.contiguous(), failed, info

    def _bus_loads(self) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.num_envs
        p = torch.zeros((e, self.num_buses), dtype=torch.float64, device=self.device)
        q = torch.zeros_like(p)
        return p.index_add(1, self._load_bus, self._p_load), q.index_add(
            1, self._load_bus, self._q_load
        )

    def _source(self) -> torch.Tensor:
        load_p, load_q = self._bus_loads()
        zero = torch.zeros((self.num_envs, 1), dtype=torch.float64, device=self.device)
        return torch.cat([load_p, load_q, self._vm, self._va, self._p_pv, self._q_pv, zero], 1)

    def _observe(self) -> torch.Tensor:
        source = self._source().to(torch.float32)
        return source[:, self._obs_index]

    def state(self) -> torch.Tensor:
        load_p, load_q = self._bus_loads()
        parts = [load_p, load_q, self._p_pv, self._q_pv, self._vm, self._va]
        return torch.cat(parts, dim=1).to(torch.float32)

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._sums.means(self.t)

    # ------------------------------------------------------------------ baselines
    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        if name == "no-control":
            return _NoControl(self)
        if name == "droop":
            return DroopBaseline(self)
        if name == "opf":
            return OPFBaseline(self)
        return super().baseline(name, seed=seed)

    def render_text(self, copy: int = 0) -> str:
        hour, _ = self._hour(self.t)
        h = float(hour[copy])
        vm = self._vm[copy]
        outside = int(((vm < self.v_lower) | (vm > self.v_upper)).sum())
        return (
            f"voltage ({self.network}): copy {copy}, step {int(self._t_host[copy])}/"
            f"{self._horizon}, {int(h):02d}:{int(round(60 * (h % 1))):02d}, "
            f"v in [{float(vm.min()):.4f}, {float(vm.max()):.4f}] p.u., "
            f"{outside}/{self.num_buses} buses out of band, "
            f"PV {float(self._p_pv[copy].sum()):.2f} MW, load {float(self._p_load[copy].sum()):.2f}"
            " MW"
        )


def _put(tensor: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``tensor`` with rows ``index`` taken from ``values`` (a full-batch tensor)."""
    out = tensor.clone()
    out[index] = values[index].to(out.dtype)
    return out


# --------------------------------------------------------------------------- baselines
class _NoControl:
    """Every inverter at q = 0."""

    def __init__(self, env: VoltageEnv) -> None:
        self.env = env

    def reset(self) -> None:
        pass

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        env = self.env
        return env.joint_actions(torch.zeros((env.num_envs, env.num_pv), dtype=torch.float64,
                                             device=env.device))  # fmt: skip


class DroopBaseline:
    """MAPDN's traditional droop controller (``traditional_control/pf_droop_matpower_all.m``),
    batched over copies.

    Inside each step, from q = 0: solve the power flow with the current q, read the PV buses'
    voltages ``v``; stop when they moved by less than 1e-4 (Euclidean norm over the PV buses)
    since the last iteration, or after 100 iterations; otherwise set
    ``q_new = clip(-q_max (v - 1) / 0.05, -q_max, q_max)`` and ``q = 0.9 q + 0.1 q_new`` (gain
    0.1). The q of the last power flow is the step's action. ``q_max`` is the env's bound,
    ``action_scale x sqrt(s_max^2 - p^2)`` (MAPDN's MATLAB script may use the whole
    ``sqrt(s_max^2 - p^2)``; here the droop acts through the same actions as every policy).
    Copies that have converged stop iterating, so each copy's action depends only on its own
    state. A power flow that fails inside the loop stops that copy with its last q.
    """

    def __init__(self, env: VoltageEnv) -> None:
        self.env = env

    def reset(self) -> None:
        pass

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        env = self.env
        capacity = env.q_capacity()
        q_max = env.action_scale * capacity
        _, q_applied = self.solve(q_max)
        action = torch.where(capacity > 0, q_applied / capacity.clamp_min(1e-300), 0.0)
        return env.joint_actions(action.clamp(-env.action_scale, env.action_scale))

    def solve(self, q_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The droop iteration for every copy: ``(q after the last update, q of the last power
        flow)``, both ``(E, num_pv)`` MVAr."""
        env = self.env
        e = env.num_envs
        q = torch.zeros((e, env.num_pv), dtype=torch.float64, device=env.device)
        q_applied = q.clone()
        v_last = torch.full_like(q, 100.0)
        done = torch.zeros(e, dtype=torch.bool, device=env.device)
        init = None
        for _ in range(DROOP_ITERATIONS):
            p_inj, q_inj = env._injections(q)
            result = env.power_flow.solve(p_inj, q_inj, init=init)
            init = (result.v_real, result.v_imag)
            active = ~done
            q_applied = torch.where(active.unsqueeze(1), q, q_applied)
            v = result.vm[:, env._pv_bus]
            moved = torch.linalg.vector_norm(v_last - v, dim=1)
            stop = (moved < DROOP_TOLERANCE) | ~result.converged
            done = done | stop
            if bool(done.all()):
                break
            keep = done.unsqueeze(1)
            v_last = torch.where(keep, v_last, v)
            q_new = torch.minimum(
                torch.maximum(-q_max * (v - DROOP_V_REF) / DROOP_V_SATURATION, -q_max), q_max
            )
            q = torch.where(keep, q, (1.0 - DROOP_GAIN) * q + DROOP_GAIN * q_new)
        return q, q_applied


class OPFBaseline:
    """An ORACLE, not a controller: each step's reward maximised over the inverters' actions.

    It knows the step's loads and PV (the env's state) and solves the exact power flow: projected
    gradient ascent on MAPDN's reward (barrier + q term) in ``[-action_scale, action_scale]``,
    with gradients through the power flow's fixed
    point (:meth:`PowerFlow.solve` with ``grad_steps``) from the better of q = 0 and the droop's
    answer; each copy's step grows by 1.5 where a step improves its reward and halves where it
    does not, and the best point seen is kept. Actions do not change later loads or PV, so
    the per-step optimum is the best return any policy can reach (up to the optimiser's
    accuracy): use it as an upper bound, never as a baseline a learner must beat.

    Args:
        iterations: gradient steps per start (default 40).
        grad_steps: fixed-point iterations differentiated per gradient (default 8).
    """

    def __init__(self, env: VoltageEnv, iterations: int = 40, grad_steps: int = 8) -> None:
        self.env = env
        self.iterations = check_int("iterations", iterations)
        self.grad_steps = check_int("grad_steps", grad_steps)

    def reset(self) -> None:
        pass

    def _evaluate(
        self, action: torch.Tensor, capacity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward of ``action (E, num_pv)`` for every copy (-inf where the power flow fails)
        and its gradient."""
        env = self.env
        trial = action.detach().requires_grad_(True)
        with torch.enable_grad():
            q = trial * capacity
            p_inj, q_inj = env._injections(q)
            result = env.power_flow.solve(p_inj, q_inj, grad_steps=self.grad_steps)
            value = env.reward_terms(result.vm, q)["reward"]
            (grad,) = torch.autograd.grad(value.sum(), trial)
        ok = result.converged & torch.isfinite(value)
        value = torch.where(ok, value.detach(), -math.inf)
        return value, torch.where(ok.unsqueeze(1), grad, 0.0)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        # evaluations run baselines under inference mode, where nothing can be differentiated
        with torch.inference_mode(False):
            return self._act()

    def _act(self) -> torch.Tensor:
        env = self.env
        bound = env.action_scale
        capacity = env.q_capacity().clone()  # a normal tensor even if the env's are not
        _, q_droop = DroopBaseline(env).solve(bound * capacity)
        droop = torch.where(capacity > 0, q_droop / capacity.clamp_min(1e-300), 0.0)
        best = torch.zeros_like(capacity)
        best_value, best_grad = self._evaluate(best, capacity)
        for start in (droop.clamp(-bound, bound),):
            value, grad = self._evaluate(start, capacity)
            better = value > best_value
            best = torch.where(better.unsqueeze(1), start, best)
            best_value = torch.where(better, value, best_value)
            best_grad = torch.where(better.unsqueeze(1), grad, best_grad)
        step = torch.full_like(best_value, 0.25 * bound)
        for _ in range(self.iterations):
            # projected gradient: no push through a bound the point already sits on
            blocked = ((best >= bound) & (best_grad > 0)) | ((best <= -bound) & (best_grad < 0))
            grad = torch.where(blocked, 0.0, best_grad)
            scale = grad.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
            trial = (best + step.unsqueeze(1) * grad / scale).clamp(-bound, bound)
            value, grad = self._evaluate(trial, capacity)
            better = value > best_value
            best = torch.where(better.unsqueeze(1), trial, best)
            best_value = torch.where(better, value, best_value)
            best_grad = torch.where(better.unsqueeze(1), grad, best_grad)
            step = torch.where(better, (1.5 * step).clamp(max=bound), 0.5 * step)
        return env.joint_actions(best)
