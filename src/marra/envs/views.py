"""Gymnasium and PettingZoo views of :class:`~marra.envs.hospital.HospitalEnv`.

Both are thin wrappers around one ``HospitalEnv`` with ``num_envs=1`` on the CPU: they convert
numpy actions to tensors and tensors to numpy, and never re-implement the dynamics.

- :class:`HospitalGymEnv` (``gymnasium.Env``, registered as ``marra/Hospital-v0``): one action
  vector of length n; the observation is the ``(n, obs_dim)`` feature matrix, flattened to
  ``(n * obs_dim,)`` unless ``flatten=False``.
- :func:`hospital_parallel_env` (``pettingzoo.ParallelEnv``): agents ``hospital_0`` ...; each
  gets a ``Box(obs_dim,)`` observation and one ``Box(1,)`` action, and all share the team reward.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marra.envs.hospital import HospitalEnv

__all__ = ["HospitalGymEnv", "HospitalParallelEnv", "hospital_parallel_env"]

_INFO_SCALARS = (
    "target_error",
    "minima_violation",
    "fairness",
    "reward_raw",
    "mae",
    "moved",
    "total",
    "shock_loss",
)


def _core(kwargs: dict[str, Any]) -> HospitalEnv:
    for name in ("num_envs", "auto_reset"):
        if name in kwargs:
            raise ValueError(f"{name}: the single-copy views fix it; use HospitalEnv directly")
    return HospitalEnv(num_envs=1, auto_reset=False, **kwargs)


def _scalar_info(info: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(info[key][0]) for key in _INFO_SCALARS}


class HospitalGymEnv(gymnasium.Env):
    """Gymnasium view: one hospital network, one action per hospital.

    Args:
        flatten: observation ``(n * obs_dim,)`` (default) or ``(n, obs_dim)``.
        **kwargs: passed to :class:`HospitalEnv` (``n_hospitals``, ``scenario``,
            ``transfer_budget``, ``integer``, ``horizon``, ``network``, ``reward_weights``, ...;
            not ``num_envs`` or ``auto_reset``).

    ``step`` returns the scaled reward as a float, ``terminated`` always False, ``truncated`` True
    at the horizon, and ``info`` with the float metrics of ``HospitalEnv.step`` plus
    ``net_transfer`` (an ``(n,)`` array).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, *, flatten: bool = True, render_mode: str | None = None, **kwargs: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode: this environment does not render, got {render_mode!r}")
        self.core = _core(kwargs)
        self.flatten = bool(flatten)
        n, obs_dim = self.core.n, self.core.obs_dim
        shape = (n * obs_dim,) if self.flatten else (n, obs_dim)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        bound = np.float32(self.core.max_action)
        self.action_space = spaces.Box(-bound, bound, shape=(n,), dtype=np.float32)

    def _obs(self, obs: torch.Tensor) -> np.ndarray:
        array = obs[0].numpy().copy()
        return array.reshape(-1) if self.flatten else array

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return self._obs(self.core.reset(seed=seed, options=options)), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        vector = np.asarray(action, dtype=np.float64).reshape(1, self.core.n)
        obs, reward, terminated, truncated, info = self.core.step(torch.from_numpy(vector))
        out = _scalar_info(info)
        out["net_transfer"] = info["net_transfer"][0].numpy().copy()
        return self._obs(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out


class HospitalParallelEnv(ParallelEnv):
    """PettingZoo view: one agent per hospital (``hospital_0`` ...), shared team reward.

    Each agent observes its row of the ``(n, obs_dim)`` feature matrix and sends one action
    ``Box(-max_action, max_action, (1,))``; an agent missing from the action dict does nothing.
    When the horizon is reached every agent is truncated and ``agents`` becomes empty. Every
    agent's info holds the team metrics of ``HospitalEnv.step`` plus its own ``net_transfer``.
    """

    metadata: dict[str, Any] = {"name": "marra_hospital_v0", "render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        self.core = _core(kwargs)
        self.possible_agents = [f"hospital_{i}" for i in range(self.core.n)]
        self.agents: list[str] = []
        self._index = {agent: i for i, agent in enumerate(self.possible_agents)}
        bound = np.float32(self.core.max_action)
        self._observation_spaces = {
            agent: spaces.Box(-np.inf, np.inf, shape=(self.core.obs_dim,), dtype=np.float32)
            for agent in self.possible_agents
        }
        self._action_spaces = {
            agent: spaces.Box(-bound, bound, shape=(1,), dtype=np.float32)
            for agent in self.possible_agents
        }

    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self._action_spaces[agent]

    def _obs(self, obs: torch.Tensor) -> dict[str, np.ndarray]:
        rows = obs[0].numpy()
        return {agent: rows[i].copy() for i, agent in enumerate(self.possible_agents)}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        obs = self.core.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._obs(obs), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        vector = np.zeros((1, self.core.n))
        for agent, value in actions.items():
            if agent not in self._index:
                raise ValueError(f"actions: unknown agent {agent!r}")
            vector[0, self._index[agent]] = float(
                np.asarray(value, dtype=np.float64).reshape(-1)[0]
            )
        obs, reward, terminated, truncated, info = self.core.step(torch.from_numpy(vector))
        team = _scalar_info(info)
        net = info["net_transfer"][0].numpy()
        team_reward, done = float(reward[0]), bool(truncated[0])
        agents = self.agents
        observations = self._obs(obs)
        rewards = dict.fromkeys(agents, team_reward)
        terminations = dict.fromkeys(agents, bool(terminated[0]))
        truncations = dict.fromkeys(agents, done)
        infos = {
            agent: {**team, "net_transfer": float(net[self._index[agent]])} for agent in agents
        }
        observations = {agent: observations[agent] for agent in agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The pooled global state ``(state_dim,)`` (``HospitalEnv.global_state``)."""
        return self.core.global_state()[0].numpy().copy()

    def close(self) -> None:
        self.core.close()


def hospital_parallel_env(**kwargs: Any) -> HospitalParallelEnv:
    """A PettingZoo ``ParallelEnv`` of the hospital environment (kwargs as
    :class:`HospitalGymEnv`: ``n_hospitals``, ``scenario``, ``transfer_budget``, ``integer``,
    ``horizon``, ...)."""
    return HospitalParallelEnv(**kwargs)
