"""``voltage-discrete``: the voltage task with a discretised action set, for value-based learners.

Everything is :class:`~marra.envs.voltage.VoltageEnv`'s (distributed mode: one agent per PV
inverter), except the action: agent ``i`` picks one of ``levels`` evenly spaced set-points

    a_k = -action_scale + 2 action_scale k / (levels - 1),   k = 0 .. levels - 1,

so with the default 7 levels and MAPDN's ``action_scale`` 0.8 the set-points are -0.8, -0.533,
-0.267, 0, 0.267, 0.533, 0.8 (an odd count keeps ``a = 0``, no control, among them), and the
inverter's reactive power is ``a_k sqrt(s_max^2 - p^2)`` as in the continuous task. Every level
is allowed at every step (no mask). The baselines are the continuous task's, with each action
rounded to the nearest set-point (``no-control`` is exact; ``droop`` and ``opf`` are then
approximations of themselves).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .base import ActionSpec, Baseline, EnvError, EnvSpec, check_int
from .voltage import VoltageEnv

__all__ = ["DiscreteVoltageEnv"]


class _Rounded:
    """A continuous baseline whose actions are rounded to the nearest set-point."""

    def __init__(self, env: DiscreteVoltageEnv, inner: Baseline) -> None:
        self.env, self.inner = env, inner

    def reset(self) -> None:
        self.inner.reset()

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.env.nearest_level(self.inner.act(obs))


class DiscreteVoltageEnv(VoltageEnv):
    """The voltage task with ``levels`` set-points per inverter (see the module docstring).

    Args:
        levels: number of evenly spaced set-points in ``[-action_scale, action_scale]`` (default
            7; at least 2).
        network: ``case33bw`` (default) or ``mv_oberrhein``.
        barrier: ``l1`` (default), ``l2``, ``bowl`` or ``courant_beltrami``.
        horizon: steps per episode, 3 minutes each (default 240).
        data_dir: a folder of MAPDN-format CSVs; None (default): synthetic profiles.
        load_scale: multiplies every load (default 1).
        pv_scale: multiplies every PV output and rating (default 1).
        action_scale: the largest set-point (MAPDN's 0.8; at most 1).
        q_weight: weight of the mean ``|q|`` (MVAr) in the reward (MAPDN's 0.1).
        voltage_weight: weight of the mean voltage barrier (MAPDN's 1).
        v_lower: lower end of the voltage band (p.u., default 0.95).
        v_upper: upper end of the voltage band (p.u., default 1.05).
        reset_action: start episodes from random reactive powers (default True).
        noise: measurement noise on CSV data (default 0.01).
        max_iterations: power-flow iterations before a copy is declared not converged (100).
    """

    def __init__(
        self,
        levels: int = 7,
        network: str = "case33bw",
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
        levels = check_int("levels", levels, minimum=2, maximum=1001)
        super().__init__(
            network=network, mode="distributed", barrier=barrier, horizon=horizon,
            data_dir=data_dir, load_scale=load_scale, pv_scale=pv_scale,
            action_scale=action_scale, q_weight=q_weight, voltage_weight=voltage_weight,
            v_lower=v_lower, v_upper=v_upper, reset_action=reset_action, noise=noise,
            max_iterations=max_iterations, num_envs=num_envs, device=device, seed=seed,
            autoreset=autoreset,
        )  # fmt: skip
        self.levels = levels
        k = torch.arange(levels, dtype=torch.float64, device=self.device)
        self.set_points = self.action_scale * (2.0 * k / (levels - 1) - 1.0)  # exact 0 if odd
        self._spec = dataclasses.replace(
            self._spec, name="voltage-discrete", action=ActionSpec.discrete(levels),
            action_scale=None,
        )  # fmt: skip

    def joint_actions(self, pv_actions: torch.Tensor) -> torch.Tensor:
        """Continuous joint actions ``(E, N, 1)`` giving each inverter ``pv_actions`` (as the
        continuous task's; the baselines build their actions with it)."""
        e = pv_actions.shape[0]
        joint = torch.zeros((e, self._spec.num_agents, 1), dtype=torch.float64,
                            device=self.device)  # fmt: skip
        joint[:, self._pv_agent, self._pv_slot] = pv_actions.to(torch.float64)
        return joint

    def nearest_level(self, actions: torch.Tensor) -> torch.Tensor:
        """The index ``(E, N)`` of the set-point nearest to continuous actions ``(E, N, 1)``."""
        values = torch.as_tensor(actions, dtype=torch.float64, device=self.device)
        if values.ndim == 3:
            values = values[..., 0]
        return (values.unsqueeze(-1) - self.set_points).abs().argmin(dim=-1)

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return super()._transition(self.set_points[actions].unsqueeze(-1))

    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        if name == "random":
            return super(VoltageEnv, self).baseline(name, seed=seed)
        if name in self._spec.baselines:
            return _Rounded(self, super().baseline(name, seed=seed))
        raise EnvError(
            f"baseline: {self._spec.name} has no baseline {name!r}; its baselines are "
            f"{', '.join(self._spec.baselines)}"
        )

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    def describe_levels(self) -> list[float]:
        """The set-points, for records."""
        return [float(v) for v in self.set_points]
