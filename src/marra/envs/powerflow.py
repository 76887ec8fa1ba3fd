"""A batched AC power flow for distribution feeders, in real float64 torch arithmetic.

The ``voltage`` environment solves one AC power flow per step for every copy at once. This module
holds that solver. It is the matrix form of the backward/forward sweep (the implicit Z-bus Gauss
method): with the slack (external grid) buses held at their set voltages, the voltages ``V`` of
the other buses satisfy

    V = V0 + Z conj(S / V)

where ``S`` are the complex power injections (generation minus load, per unit), ``Z`` is the
inverse of the bus admittance matrix without the slack rows and columns, and ``V0`` the voltages
with no load at all (``-Z Y_slack V_slack``). On a radial feeder without shunts ``Z`` is exactly
the BCBV x BIBC product of Teng's direct load flow (the sum of the impedances shared by the
paths from the substation to two buses), so each iteration is one backward sweep (currents) and
one forward sweep (voltage drops) done as a single matrix product. Line charging, transformer
models, taps and shunts are folded into ``Z`` and ``V0``. The iteration converges linearly, in
about a dozen iterations on feeders like the 33-bus case, and stops when no voltage moves by more
than ``tolerance`` p.u.; a copy that has not converged after ``max_iterations`` (voltage
collapse: too much load for the feeder) is reported as not converged.

Everything is real arithmetic: ``V = Vr + j Vi`` is kept as two float64 tensors, the currents
``conj(S/V) = (P Vr + Q Vi + j (P Vi - Q Vr)) / |V|^2`` are computed elementwise and the product
with ``Z = R + j X`` is one real matrix product with the block matrix ``[[R, X], [-X, R]]``
(transposed), which is faster on CPUs than complex tensors.

The network model (``Y``, the slack buses and their voltages, the buses fused by closed bus-bus
switches) is read from pandapower once, by :func:`grid_from_pandapower`; pandapower is not
needed afterwards. The tests check every bus voltage against ``pandapower.runpp`` on the same
network and injections.

Shapes: ``num_buses`` counts the buses of the pandapower net in the order of ``net.bus.index``;
every per-bus tensor is ``(batch, num_buses)``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "Grid",
    "PowerFlow",
    "PowerFlowResult",
    "grid_from_pandapower",
    "require_pandapower",
]

#: pandapower element tables the solver models (any other non-empty table is refused)
_SUPPORTED_TABLES = ("bus", "line", "trafo", "switch", "load", "sgen", "ext_grid", "shunt")
_REFUSED_TABLES = (
    "gen",
    "ward",
    "xward",
    "storage",
    "dcline",
    "impedance",
    "trafo3w",
    "motor",
    "asymmetric_load",
    "asymmetric_sgen",
    "svc",
    "ssc",
    "tcsc",
    "vsc",
)


def require_pandapower() -> Any:
    """Import pandapower or raise an ImportError that says how to install it."""
    try:
        import pandapower
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the voltage environment needs pandapower to read its network: "
            "pip install 'marra[voltage]' (or pip install pandapower)"
        ) from exc
    return pandapower


@dataclass(frozen=True)
class Grid:
    """A distribution network reduced to what the batched power flow needs (numpy arrays).

    Attributes:
        name: a label (e.g. ``"case33bw"``).
        bus_ids: the pandapower bus indices, in the order of every ``(..., num_buses)`` tensor.
        vn_kv: nominal voltage of each bus (kV).
        sn_mva: the per-unit power base (MVA).
        slack: positions (in bus order) of the buses with an external grid.
        internal: for each bus, its index in the solver's internal bus list (buses joined by a
            closed bus-bus switch share one).
        free: the internal indices of the non-slack internal buses (the unknowns).
        ref: the internal indices of the slack buses.
        v_ref: complex voltages of the ``ref`` buses (p.u.).
        y_bus: the internal complex bus admittance matrix (p.u.), dense.
        lines: ``(from, to)`` bus positions of the in-service lines (for pictures and zones).
    """

    name: str
    bus_ids: np.ndarray
    vn_kv: np.ndarray
    sn_mva: float
    slack: np.ndarray
    internal: np.ndarray
    free: np.ndarray
    ref: np.ndarray
    v_ref: np.ndarray
    y_bus: np.ndarray
    lines: np.ndarray

    @property
    def num_buses(self) -> int:
        return int(self.bus_ids.shape[0])

    def position(self, bus_ids: Any) -> np.ndarray:
        """Positions (in bus order) of pandapower bus indices."""
        lookup = {int(b): i for i, b in enumerate(self.bus_ids)}
        return np.array([lookup[int(b)] for b in np.asarray(bus_ids).reshape(-1)], dtype=np.int64)


def grid_from_pandapower(net: Any, name: str = "") -> Grid:
    """Read the network model of a pandapower net (runs ``pandapower.runpp`` once on a copy).

    Only constant-power loads and static generators are supported as injections (they are given
    per step to :meth:`PowerFlow.solve`); the net's own load and sgen values are ignored. Every
    bus must be in service and connected to an external grid.

    Raises:
        ValueError: an element the solver does not model, a voltage-dependent load, an
            out-of-service or isolated bus, or a net without an external grid.
    """
    pp = require_pandapower()
    from pandapower.pypower.idx_bus import BUS_TYPE, REF, VA, VM

    net = copy.deepcopy(net)
    for table in _REFUSED_TABLES:
        if table in net and len(net[table]) and bool(np.any(net[table]["in_service"])):
            raise ValueError(f"network: {table} elements are not modelled by the power flow")
    if not len(net.ext_grid) or not bool(net.ext_grid.in_service.any()):
        raise ValueError("network: needs an in-service external grid (the slack bus)")
    if not bool(net.bus.in_service.all()):
        raise ValueError("network: every bus must be in service")
    for column in ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent",
                   "const_i_q_percent", "const_z_percent", "const_i_percent"):  # fmt: skip
        if column in net.load and bool(np.any(net.load[column].fillna(0.0).to_numpy() != 0)):
            raise ValueError(f"network: loads must be constant power ({column} is not 0)")
    # the injections are ours; a flat net keeps runpp fast and valid
    net.load["p_mw"] = 0.0
    net.load["q_mvar"] = 0.0
    if len(net.sgen):
        net.sgen["p_mw"] = 0.0
        net.sgen["q_mvar"] = 0.0
    _quiet_runpp(pp, net)
    ppci = net._ppc["internal"]
    lookup = np.asarray(net._pd2ppc_lookups["bus"])
    bus_ids = net.bus.index.to_numpy().astype(np.int64)
    internal = lookup[bus_ids].astype(np.int64)
    count = int(ppci["bus"].shape[0])
    if internal.min() < 0 or internal.max() >= count:
        raise ValueError("network: a bus is isolated from every external grid")
    if not np.isfinite(net.res_bus.vm_pu.to_numpy()).all():
        raise ValueError("network: a bus is isolated from every external grid")
    types = ppci["bus"][:, BUS_TYPE].astype(np.int64)
    ref = np.flatnonzero(types == REF)
    free = np.flatnonzero(types != REF)
    v_ref = ppci["bus"][ref, VM] * np.exp(1j * np.deg2rad(ppci["bus"][ref, VA]))
    y_bus = np.asarray(ppci["Ybus"].toarray(), dtype=np.complex128)
    slack_ids = net.ext_grid.bus[net.ext_grid.in_service].to_numpy()
    position = {int(b): i for i, b in enumerate(bus_ids)}
    slack = np.array(sorted({position[int(b)] for b in slack_ids}), dtype=np.int64)
    in_service = net.line[net.line.in_service]
    lines = np.array(
        [
            [position[int(f)], position[int(t)]]
            for f, t in zip(in_service.from_bus, in_service.to_bus, strict=True)
        ],
        dtype=np.int64,
    ).reshape(-1, 2)
    return Grid(
        name=name or str(getattr(net, "name", "") or "grid"),
        bus_ids=bus_ids,
        vn_kv=net.bus.vn_kv.to_numpy().astype(np.float64),
        sn_mva=float(ppci["baseMVA"]),
        slack=slack,
        internal=internal,
        free=free,
        ref=ref,
        v_ref=v_ref,
        y_bus=y_bus,
        lines=lines,
    )


def _quiet_runpp(pp: Any, net: Any, **kwargs: Any) -> None:
    """``pandapower.runpp`` without its advice to install numba."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            pp.runpp(net, numba=False, **kwargs)
        finally:
            logging.disable(previous)


class PowerFlowResult(NamedTuple):
    """The solution of :meth:`PowerFlow.solve` for a batch of ``B`` copies.

    ``vm`` ``(B, num_buses)`` voltage magnitudes (p.u.); ``va`` ``(B, num_buses)`` voltage angles
    (radians); ``converged`` ``(B,)`` bool (where False the voltages are the last iterate,
    made finite: do not use them); ``ext_grid_p_mw`` / ``ext_grid_q_mvar`` ``(B,)`` the power
    the external grids supply in total; ``loss_mw`` ``(B,)`` the active power lost in lines and
    transformers; ``v_real`` / ``v_imag`` ``(B, num_free)`` the internal unknowns (a warm start
    for the next solve); ``iterations`` the iterations run.
    """

    vm: torch.Tensor
    va: torch.Tensor
    converged: torch.Tensor
    ext_grid_p_mw: torch.Tensor
    ext_grid_q_mvar: torch.Tensor
    loss_mw: torch.Tensor
    v_real: torch.Tensor
    v_imag: torch.Tensor
    iterations: int


class PowerFlow:
    """The batched power flow of one :class:`Grid` on one device (see the module docstring).

    Args:
        grid: the network (:func:`grid_from_pandapower`).
        device: torch device of the tensors.
        tolerance: convergence threshold on the largest voltage change in one iteration (p.u.).
        max_iterations: iterations after which a copy still moving is reported not converged.
    """

    def __init__(
        self,
        grid: Grid,
        *,
        device: str | torch.device = "cpu",
        tolerance: float = 1e-10,
        max_iterations: int = 100,
    ) -> None:
        if not (math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"tolerance: must be a positive number, got {tolerance!r}")
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations: must be >= 1, got {max_iterations!r}")
        self.grid = grid
        self.device = torch.device(device)
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        y = grid.y_bus
        free, ref = grid.free, grid.ref
        z = np.linalg.inv(y[np.ix_(free, free)])
        # entries between separate islands are round-off; as subnormal floats they would slow
        # every matrix product down a hundredfold
        z[np.abs(z) < 1e-14 * np.abs(z).max()] = 0.0
        v0 = -z @ (y[np.ix_(free, ref)] @ grid.v_ref)
        m = free.shape[0]
        f64 = dict(dtype=torch.float64, device=self.device)
        # [Ir, Ii] @ kernel = [R Ir - X Ii, X Ir + R Ii] (row vectors)
        kernel = np.block([[z.real.T, z.imag.T], [-z.imag.T, z.real.T]])
        self._kernel = torch.as_tensor(np.ascontiguousarray(kernel), **f64)
        self._v0 = torch.as_tensor(np.concatenate([v0.real, v0.imag]), **f64)
        self.num_free = m
        # bus injections (MW) -> per-unit injections of the free internal buses
        count = y.shape[0]
        to_internal = np.zeros((grid.num_buses, count))
        to_internal[np.arange(grid.num_buses), grid.internal] = 1.0 / grid.sn_mva
        self._to_free = torch.as_tensor(to_internal[:, free], **f64)
        self._to_all = torch.as_tensor(to_internal, **f64)
        # internal voltages -> buses
        slot = np.full(count, -1, dtype=np.int64)
        slot[free] = np.arange(m)
        self._bus_slot = torch.as_tensor(slot[grid.internal], device=self.device)
        self._bus_is_ref = torch.as_tensor(slot[grid.internal] < 0, device=self.device)
        ref_slot = np.zeros(count, dtype=np.int64)
        ref_slot[ref] = np.arange(ref.shape[0])
        self._bus_ref_slot = torch.as_tensor(ref_slot[grid.internal], device=self.device)
        self._v_ref = torch.as_tensor(np.stack([grid.v_ref.real, grid.v_ref.imag]), **f64)
        # slack rows of Y, split by (free, ref) columns, for the power the external grids give
        self._y_ref_free = (
            torch.as_tensor(y[np.ix_(ref, free)].real, **f64),
            torch.as_tensor(y[np.ix_(ref, free)].imag, **f64),
        )
        i_ref_fixed = y[np.ix_(ref, ref)] @ grid.v_ref
        self._i_ref_fixed = torch.as_tensor(np.stack([i_ref_fixed.real, i_ref_fixed.imag]), **f64)

    @property
    def num_buses(self) -> int:
        return self.grid.num_buses

    def no_load_voltages(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The internal unknowns with no injection at all, ``(batch, num_free)`` twice."""
        m = self.num_free
        return (
            self._v0[:m].expand(batch, m).clone(),
            self._v0[m:].expand(batch, m).clone(),
        )

    def solve(
        self,
        p_mw: torch.Tensor,
        q_mvar: torch.Tensor,
        *,
        init: tuple[torch.Tensor, torch.Tensor] | None = None,
        grad_steps: int = 0,
    ) -> PowerFlowResult:
        """Solve the power flow of a batch of copies.

        Args:
            p_mw: ``(B, num_buses)`` net active power injected at each bus (generation minus
                load, MW); injections at slack buses only change what the grid supplies.
            q_mvar: ``(B, num_buses)`` net reactive power injected (MVAr).
            init: a warm start ``(v_real, v_imag)`` from an earlier result (default: the
                no-load voltages).
            grad_steps: after convergence, run this many more iterations with autograd on
                (``p_mw`` and ``q_mvar`` may require gradients): the truncated Neumann series of
                the implicit derivative. 0 (default): everything under ``torch.no_grad``.

        A copy stops iterating once it has converged, so its result never depends on the other
        copies of the batch.
        """
        m = self.num_free
        batch = p_mw.shape[0]
        with torch.no_grad():
            p_free = p_mw.detach().to(torch.float64) @ self._to_free
            q_free = q_mvar.detach().to(torch.float64) @ self._to_free
            if init is None:
                voltage = self._v0.expand(batch, 2 * m).clone()
            else:
                voltage = torch.cat([init[0].detach(), init[1].detach()], dim=1)
            done = torch.zeros(batch, dtype=torch.bool, device=self.device)
            stuck = torch.zeros_like(done)
            iterations = 0
            for iterations in range(1, self.max_iterations + 1):  # noqa: B007
                new = self._iterate(voltage, p_free, q_free)
                change = (new - voltage).abs().amax(dim=1)
                voltage = torch.where((done | stuck).unsqueeze(1), voltage, new)
                done = done | (change < self.tolerance)
                stuck = stuck | ~torch.isfinite(change)
                if bool((done | stuck).all()):
                    break
            converged = done & ~stuck
            voltage = torch.where(
                converged.unsqueeze(1), voltage, torch.nan_to_num(voltage, 0.0, 0.0, 0.0)
            )
        if grad_steps > 0:
            p_free = p_mw.to(torch.float64) @ self._to_free
            q_free = q_mvar.to(torch.float64) @ self._to_free
            for _ in range(int(grad_steps)):
                voltage = self._iterate(voltage, p_free, q_free)
        return self._result(voltage[:, :m], voltage[:, m:], p_mw, q_mvar, converged, iterations)

    def _iterate(self, voltage: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """One fixed-point iteration on ``voltage = [Vr | Vi]`` ``(B, 2 num_free)``."""
        m = self.num_free
        vr, vi = voltage[:, :m], voltage[:, m:]
        inv = (vr * vr + vi * vi).reciprocal()
        a, b = p * inv, q * inv
        current = torch.cat([a * vr + b * vi, a * vi - b * vr], dim=1)  # conj(S / V)
        return torch.addmm(self._v0, current, self._kernel)

    def _result(
        self,
        vr: torch.Tensor,
        vi: torch.Tensor,
        p_mw: torch.Tensor,
        q_mvar: torch.Tensor,
        converged: torch.Tensor,
        iterations: int,
    ) -> PowerFlowResult:
        slot = self._bus_slot.clamp_min(0)
        ref_slot = self._bus_ref_slot
        bus_vr = torch.where(self._bus_is_ref, self._v_ref[0][ref_slot], vr[:, slot])
        bus_vi = torch.where(self._bus_is_ref, self._v_ref[1][ref_slot], vi[:, slot])
        vm = torch.sqrt(bus_vr * bus_vr + bus_vi * bus_vi)
        va = torch.atan2(bus_vi, bus_vr)
        # current the slack buses send into the network: I_ref = Y_rf V_f + Y_rr V_r
        g, b = self._y_ref_free
        i_re = vr @ g.T - vi @ b.T + self._i_ref_fixed[0]
        i_im = vr @ b.T + vi @ g.T + self._i_ref_fixed[1]
        ur, ui = self._v_ref[0], self._v_ref[1]
        s_re = (ur * i_re + ui * i_im) * self.grid.sn_mva  # V conj(I)
        s_im = (ui * i_re - ur * i_im) * self.grid.sn_mva
        p_all = p_mw.to(torch.float64)
        q_all = q_mvar.to(torch.float64)
        # injections at slack buses are served by the grid: they are part of S_ref
        at_ref = self._bus_is_ref.to(torch.float64)
        ext_p = s_re.sum(dim=1) - (p_all * at_ref).sum(dim=1)
        ext_q = s_im.sum(dim=1) - (q_all * at_ref).sum(dim=1)
        loss = ext_p + p_all.sum(dim=1)
        return PowerFlowResult(vm, va, converged, ext_p, ext_q, loss, vr, vi, iterations)
