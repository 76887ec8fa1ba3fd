"""Generic Gymnasium, Gymnasium-vector, PettingZoo and Stable-Baselines3 views of any registered
environment, written once.

Every view wraps ONE instance of the batched environment (:class:`marra.envs.MultiAgentEnv`) and
only converts between numpy and tensors; none re-implements a rule.

- :func:`gym_env` / :class:`GymView` (``gymnasium.Env``, one copy): the joint observation
  ``(num_agents * obs_dim,)`` (``flatten=False``: ``(num_agents, obs_dim)``) and the joint action:
  ``MultiDiscrete([n] * num_agents)`` for discrete actions, ``Box(low, high, (num_agents,))``
  (``(num_agents, dim)`` when ``dim > 1``) for continuous ones. The reward is the team reward for
  ``spec.reward == "team"`` and the sum of the agents' rewards otherwise. Registered as
  ``marra/<Name>-v0`` for every registered name.
- :func:`vector_env` / :class:`VectorView` (``gymnasium.vector.VectorEnv``): ``num_envs`` copies
  of the batched environment as one vector environment (same-step auto-reset, the final
  observation in ``info["final_obs"]``): ``gymnasium.make_vec("marra/<Name>-v0", num_envs=8,
  vectorization_mode="vector_entry_point")``.
- :func:`sb3_vec_env` (``stable_baselines3`` ``VecEnv``): the batched environment for SB3's
  learners without one process or one Python object per copy.
- :func:`parallel_env` / :class:`ParallelView` (``pettingzoo.ParallelEnv``): one agent per
  ``spec.agent_ids``; each observes its row and sends its own action (``Discrete(n)`` or
  ``Box(low, high, (dim,))``); ``state()`` and ``state_space`` give the global state; discrete
  environments put each agent's ``action_mask`` in its info.

Masks: the batched environment refuses a masked action; the views replace one by the agent's
first allowed action (tools such as Gymnasium's checker sample from the action space without
the mask); the mask is in ``info["action_mask"]`` for mask-aware users.

Render modes (all views): ``"ansi"`` returns a text line, ``"human"`` prints it, ``"rgb_array"``
returns a picture of the observation matrix (one row of cells per agent, one column per
feature), so tools that ask for frames (Stable-Baselines3's ``make_vec_env``, video recorders)
get something useful.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from .base import EnvError, MultiAgentEnv
from .registry import make

__all__ = [
    "GymView",
    "VectorView",
    "ParallelView",
    "gym_env",
    "vector_env",
    "parallel_env",
    "sb3_vec_env",
    "HospitalGymEnv",
    "HospitalParallelEnv",
    "hospital_parallel_env",
    "RENDER_MODES",
]

RENDER_MODES = ("human", "rgb_array", "ansi")
_SKIP_INFO = {"final_obs", "final_state", "reset_mask", "episode_metrics"}


def _core(name: str | None, env: MultiAgentEnv | None, options: dict[str, Any]) -> MultiAgentEnv:
    if env is not None:
        return env
    for key in ("num_envs", "autoreset", "auto_reset"):
        if key in options:
            raise EnvError(f"{key}: the single-copy views fix it; use marra.envs.make directly")
    assert name is not None
    return make(name, num_envs=1, **options)


def _check_render_mode(render_mode: str | None) -> str | None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise EnvError(
            f"render_mode: one of {', '.join(RENDER_MODES)} or None, got {render_mode!r}"
        )
    return render_mode


def _frame(obs: np.ndarray, cell: int = 6, max_rows: int = 256) -> np.ndarray:
    """An RGB picture ``(H, W, 3)`` uint8 of an ``(agents, features)`` matrix: each entry a
    ``cell x cell`` square, blue (negative) - white (0) - red (positive), squashed by tanh."""
    rows = obs[:max_rows]
    value = np.tanh(np.nan_to_num(rows.astype(np.float64)))
    red = np.where(value > 0, 1.0, 1.0 + value)
    blue = np.where(value < 0, 1.0, 1.0 - value)
    green = 1.0 - np.abs(value)
    image = (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)
    return np.repeat(np.repeat(image, cell, axis=0), cell, axis=1)


def _scalar_info(core: MultiAgentEnv, info: dict[str, Any], copy: int = 0) -> dict[str, Any]:
    """The info of one copy as plain Python: ``(num_envs,)`` tensors as floats, ``(num_envs,
    num_agents)`` tensors as arrays, episode metrics as a dict of floats."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key in _SKIP_INFO or not isinstance(value, torch.Tensor):
            continue
        row = value[copy].detach().cpu()
        out[key] = float(row) if row.ndim == 0 else row.numpy().copy()
    metrics = info.get("episode_metrics")
    if isinstance(metrics, dict):
        out["episode_metrics"] = {k: float(v[copy]) for k, v in metrics.items()}
    return out


class _Render:
    core: MultiAgentEnv
    render_mode: str | None
    _last_obs: np.ndarray | None

    def render(self) -> Any:
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; nothing to render")
            return None
        text = self.core.render_text(0)
        if self.render_mode == "ansi":
            return text + "\n"
        if self.render_mode == "human":
            print(text)
            return None
        obs = self._last_obs
        if obs is None:
            obs = np.zeros((self.core.spec.num_agents, self.core.spec.obs_dim), dtype=np.float32)
        return _frame(obs)


class GymView(_Render, gymnasium.Env):
    """Gymnasium view of one copy of a registered environment (see the module docstring).

    Args:
        name: the registry name (``"roles"``, ``"hospital"``, ...).
        flatten: observation ``(num_agents * obs_dim,)`` (default) or ``(num_agents, obs_dim)``.
        render_mode: None, ``"ansi"``, ``"human"`` or ``"rgb_array"``.
        env: an already built single-copy environment to wrap instead of ``make(name, ...)``.
        **options: the environment's options (``marra envs NAME`` lists them).
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        name: str | None = None,
        *,
        flatten: bool = True,
        render_mode: str | None = None,
        env: MultiAgentEnv | None = None,
        **options: Any,
    ) -> None:
        self.render_mode = _check_render_mode(render_mode)
        self.core = _core(name, env, options)
        if self.core.num_envs != 1:
            raise EnvError(f"env: the Gymnasium view needs num_envs=1, got {self.core.num_envs}")
        spec = self.core.spec
        self.flatten = bool(flatten)
        n, obs_dim = spec.num_agents, spec.obs_dim
        shape = (n * obs_dim,) if self.flatten else (n, obs_dim)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        self.action_space = _joint_action_space(self.core)
        self._last_obs: np.ndarray | None = None

    @property
    def spec_(self) -> Any:
        """The marra :class:`~marra.envs.EnvSpec` (``spec`` is Gymnasium's registration)."""
        return self.core.spec

    def _obs(self, obs: torch.Tensor) -> np.ndarray:
        array = obs[0].detach().cpu().numpy().copy()
        self._last_obs = array
        return array.reshape(-1) if self.flatten else array

    def _mask_info(self) -> dict[str, Any]:
        mask = self.core.action_mask()
        return {} if mask is None else {"action_mask": mask[0].cpu().numpy().copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs = self.core.reset(seed=seed, options=options)
        return self._obs(obs), self._mask_info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        actions = _joint_actions(self.core, np.asarray(action), 1)
        obs, reward, terminated, truncated, info = self.core.step(actions)
        out = _scalar_info(self.core, info)
        out.update(self._mask_info())
        value = reward[0, 0] if self.core.spec.reward == "team" else reward[0].sum()
        return self._obs(obs), float(value), bool(terminated[0]), bool(truncated[0]), out

    def state(self) -> np.ndarray:
        """The global state ``(state_dim,)``."""
        return self.core.state()[0].detach().cpu().numpy().copy()

    def close(self) -> None:
        self.core.close()


def _joint_action_space(core: MultiAgentEnv) -> spaces.Space:
    spec = core.spec
    n = spec.num_agents
    if spec.action.is_discrete:
        return spaces.MultiDiscrete(np.full(n, int(spec.action.n), dtype=np.int64))
    dim = int(spec.action.dim)
    shape = (n,) if dim == 1 else (n, dim)
    low = np.float32(spec.action.low if math.isfinite(spec.action.low) else -np.inf)
    high = np.float32(spec.action.high if math.isfinite(spec.action.high) else np.inf)
    return spaces.Box(low, high, shape=shape, dtype=np.float32)


def _joint_actions(core: MultiAgentEnv, action: np.ndarray, num_envs: int) -> torch.Tensor:
    spec = core.spec
    n = spec.num_agents
    if spec.action.is_discrete:
        joint = torch.as_tensor(np.asarray(action, dtype=np.int64).reshape(num_envs, n))
        return _replace_masked(core, joint)
    dim = int(spec.action.dim)
    return torch.as_tensor(np.asarray(action, dtype=np.float64).reshape(num_envs, n, dim))


def _replace_masked(core: MultiAgentEnv, joint: torch.Tensor) -> torch.Tensor:
    """Views only: a masked (not allowed) action becomes the agent's first allowed action, so
    tools that sample from the action space without masks (checkers, mask-unaware learners) can
    drive every environment. The batched environment itself refuses masked actions."""
    mask = core.action_mask()
    if mask is None:
        return joint
    mask = mask.cpu()
    index = joint.clamp(0, mask.shape[-1] - 1)
    allowed = mask.gather(-1, index.unsqueeze(-1)).squeeze(-1) & (joint >= 0)
    allowed &= joint < mask.shape[-1]
    if bool(allowed.all()):
        return joint
    return torch.where(allowed, joint, mask.to(torch.int64).argmax(-1))


class VectorView(gymnasium.vector.VectorEnv):
    """The batched environment as a ``gymnasium.vector.VectorEnv`` of ``num_envs`` copies of
    :class:`GymView` (flattened observations, joint actions), with same-step auto-reset: when a
    copy's episode ends, the returned observation is its next episode's first and the final one
    is in ``info["final_obs"]`` (masked by ``info["_final_obs"]``)."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "autoreset_mode": None}

    def __init__(
        self, name: str, num_envs: int = 1, *, render_mode: str | None = None, **options: Any
    ) -> None:
        from gymnasium.vector import AutoresetMode

        self.metadata = {**self.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self.core = make(name, num_envs=num_envs, autoreset=True, **options)
        self.num_envs = self.core.num_envs
        self.render_mode = render_mode
        spec = self.core.spec
        self.single_observation_space = spaces.Box(
            -np.inf, np.inf, shape=(spec.num_agents * spec.obs_dim,), dtype=np.float32
        )
        self.single_action_space = _joint_action_space(self.core)
        self.observation_space = gymnasium.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gymnasium.vector.utils.batch_space(
            self.single_action_space, self.num_envs
        )

    def _obs(self, obs: torch.Tensor) -> np.ndarray:
        return obs.detach().cpu().numpy().reshape(self.num_envs, -1).copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, list | tuple):
            seed = seed[0]
        return self._obs(self.core.reset(seed=seed, options=options)), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        step = self.core.step(_joint_actions(self.core, np.asarray(actions), self.num_envs))
        reward = step.reward[:, 0] if self.core.spec.reward == "team" else step.reward.sum(-1)
        info: dict[str, Any] = {}
        for key, value in step.info.items():
            if isinstance(value, torch.Tensor) and key not in ("final_obs", "final_state"):
                info[key] = value.detach().cpu().numpy()
        done = (step.terminated | step.truncated).cpu().numpy()
        if done.any():
            info["final_obs"] = self._obs(step.info["final_obs"])
            info["_final_obs"] = done
        return (
            self._obs(step.obs),
            reward.detach().cpu().numpy().astype(np.float64),
            step.terminated.cpu().numpy(),
            step.truncated.cpu().numpy(),
            info,
        )

    def render(self) -> Any:
        return [self.core.render_text(i) for i in range(self.num_envs)]

    def close_extras(self, **kwargs: Any) -> None:
        self.core.close()


class ParallelView(_Render, ParallelEnv):
    """PettingZoo view: one agent per ``spec.agent_ids`` (see the module docstring).

    An agent missing from the action dict sends a default action: 0 for continuous actions
    (clipped to the bounds), the first allowed action for discrete ones. When an episode ends
    every agent is terminated or truncated and ``agents`` becomes empty.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        render_mode: str | None = None,
        env: MultiAgentEnv | None = None,
        **options: Any,
    ) -> None:
        self.render_mode = _check_render_mode(render_mode)
        self.core = _core(name, env, options)
        spec = self.core.spec
        self.metadata = {
            "name": f"marra_{spec.name.replace('-', '_')}_v0",
            "render_modes": list(RENDER_MODES),
            "is_parallelizable": True,
        }
        self.possible_agents = list(spec.agent_ids)
        self.agents: list[str] = []
        self._index = {agent: i for i, agent in enumerate(self.possible_agents)}
        box = spaces.Box(-np.inf, np.inf, shape=(spec.obs_dim,), dtype=np.float32)
        self._observation_spaces = {agent: box for agent in self.possible_agents}
        if spec.action.is_discrete:
            action: spaces.Space = spaces.Discrete(int(spec.action.n))
        else:
            low = spec.action.low if math.isfinite(spec.action.low) else -np.inf
            high = spec.action.high if math.isfinite(spec.action.high) else np.inf
            action = spaces.Box(
                np.float32(low), np.float32(high), shape=(int(spec.action.dim),), dtype=np.float32
            )
        self._action_spaces = {agent: action for agent in self.possible_agents}
        self.state_space = spaces.Box(-np.inf, np.inf, shape=(spec.state_dim,), dtype=np.float32)
        self._last_obs: np.ndarray | None = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_spaces[agent]

    def _obs(self, obs: torch.Tensor) -> dict[str, np.ndarray]:
        rows = obs[0].detach().cpu().numpy()
        self._last_obs = rows.copy()
        return {agent: rows[i].copy() for i, agent in enumerate(self.possible_agents)}

    def _masks(self) -> np.ndarray | None:
        mask = self.core.action_mask()
        return None if mask is None else mask[0].cpu().numpy()

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        obs = self.core.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        masks = self._masks()
        infos: dict[str, dict[str, Any]] = {agent: {} for agent in self.agents}
        if masks is not None:
            for agent in self.agents:
                infos[agent]["action_mask"] = masks[self._index[agent]].copy()
        return self._obs(obs), infos

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        spec = self.core.spec
        n = spec.num_agents
        if spec.action.is_discrete:
            masks = self._masks()
            default = np.zeros(n, dtype=np.int64) if masks is None else masks.argmax(-1)
            joint = torch.as_tensor(default.reshape(1, n))
        else:
            joint = torch.zeros((1, n, int(spec.action.dim)), dtype=torch.float64)
        for agent, value in actions.items():
            if agent not in self._index:
                raise EnvError(f"actions: unknown agent {agent!r}")
            i = self._index[agent]
            if spec.action.is_discrete:
                joint[0, i] = int(np.asarray(value).reshape(-1)[0])
            else:
                joint[0, i] = torch.as_tensor(np.asarray(value, dtype=np.float64).reshape(-1))
        if spec.action.is_discrete:
            joint = _replace_masked(self.core, joint)
        obs, reward, terminated, truncated, info = self.core.step(joint)
        team = _scalar_info(self.core, info)
        shared = {k: v for k, v in team.items() if not isinstance(v, np.ndarray)}
        per_agent = {k: v for k, v in team.items() if isinstance(v, np.ndarray) and v.shape[:1]
                     == (n,)}  # fmt: skip
        agents = self.agents
        observations = self._obs(obs)
        rewards = {agent: float(reward[0, self._index[agent]]) for agent in agents}
        term, trunc = bool(terminated[0]), bool(truncated[0])
        terminations = dict.fromkeys(agents, term)
        truncations = dict.fromkeys(agents, trunc)
        masks = self._masks()
        infos: dict[str, dict[str, Any]] = {}
        for agent in agents:
            i = self._index[agent]
            entry = dict(shared)
            for key, values in per_agent.items():
                entry[key] = values[i].item() if values.ndim == 1 else values[i].copy()
            if masks is not None:
                entry["action_mask"] = masks[i].copy()
            infos[agent] = entry
        observations = {agent: observations[agent] for agent in agents}
        if term or trunc:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The global state ``(state_dim,)``."""
        return self.core.state()[0].detach().cpu().numpy().copy()

    def close(self) -> None:
        self.core.close()


def gym_env(name: str, **options: Any) -> GymView:
    """A Gymnasium view of one copy of environment ``name`` (see :class:`GymView`)."""
    return GymView(name, **options)


def parallel_env(name: str, **options: Any) -> ParallelView:
    """A PettingZoo ``ParallelEnv`` of environment ``name`` (see :class:`ParallelView`)."""
    return ParallelView(name, **options)


def vector_env(name: str, num_envs: int = 1, **options: Any) -> VectorView:
    """``num_envs`` copies of environment ``name`` as a Gymnasium ``VectorEnv``."""
    return VectorView(name, num_envs, **options)


def sb3_vec_env(name: str, num_envs: int = 1, **options: Any) -> Any:
    """The batched environment as a Stable-Baselines3 ``VecEnv`` (flattened joint observations,
    joint actions, auto-reset with ``infos[i]["terminal_observation"]`` and
    ``"TimeLimit.truncated"``), so SB3's learners step every copy in one call::

        from stable_baselines3 import PPO
        venv = marra.envs.sb3_vec_env("hospital", num_envs=16, n_hospitals=150)
        PPO("MlpPolicy", venv).learn(100_000)

    Needs ``stable-baselines3`` (``pip install stable-baselines3``).
    """
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "sb3_vec_env needs stable-baselines3: pip install stable-baselines3"
        ) from exc

    class _BatchedVecEnv(VecEnv):
        def __init__(self) -> None:
            self.view = VectorView(name, num_envs, **options)
            super().__init__(
                self.view.num_envs, self.view.single_observation_space,
                self.view.single_action_space,
            )  # fmt: skip
            self._actions: Any = None
            self._seed: int | None = None

        def reset(self) -> np.ndarray:
            obs, _ = self.view.reset(seed=self._seed)
            self._seed = None
            return obs

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
            obs, reward, terminated, truncated, info = self.view.step(self._actions)
            dones = terminated | truncated
            infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = info["final_obs"][i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            return obs, reward.astype(np.float32), dones, infos

        def close(self) -> None:
            self.view.close()

        def seed(self, seed: int | None = None) -> list[int | None]:
            self._seed = seed
            return [seed] * self.num_envs

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            return [getattr(self.view, attr_name, None)] * self.num_envs

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            setattr(self.view, attr_name, value)

        def env_method(self, method_name: str, *args: Any, indices: Any = None,
                       **kwargs: Any) -> list[Any]:  # fmt: skip
            return [getattr(self.view, method_name)(*args, **kwargs)] * self.num_envs

        def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
            return [False] * self.num_envs

    return _BatchedVecEnv()


# --------------------------------------------------------------------------- the hospital
class HospitalGymEnv(GymView):
    """Gymnasium view of the hospital environment (``GymView("hospital", ...)``).

    Args:
        flatten: observation ``(n * obs_dim,)`` (default) or ``(n, obs_dim)``.
        render_mode: None, ``"ansi"``, ``"human"`` or ``"rgb_array"``.
        **kwargs: passed to :class:`~marra.envs.hospital.HospitalEnv` (``n_hospitals``,
            ``scenario``, ``transfer_budget``, ``integer``, ``horizon``, ``network``,
            ``reward_weights``, ...; not ``num_envs`` or ``auto_reset``).

    ``step`` returns the scaled team reward as a float, ``terminated`` always False,
    ``truncated`` True at the horizon, and ``info`` with the float metrics of
    ``HospitalEnv.step`` plus ``net_transfer`` (an ``(n,)`` array).
    """

    def __init__(self, *, flatten: bool = True, render_mode: str | None = None, **kwargs: Any):
        super().__init__("hospital", flatten=flatten, render_mode=render_mode, **kwargs)


class HospitalParallelEnv(ParallelView):
    """PettingZoo view of the hospital environment: agents ``hospital_0`` ... (or the network's
    hospital names), one ``Box(-max_action, max_action, (1,))`` action each, the shared team
    reward; every agent's info holds the team metrics plus its own ``net_transfer``,
    ``agent_reward`` and ``agent_reward_raw``."""

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        super().__init__("hospital", render_mode=render_mode, **kwargs)


def hospital_parallel_env(**kwargs: Any) -> HospitalParallelEnv:
    """A PettingZoo ``ParallelEnv`` of the hospital environment (kwargs as
    :class:`HospitalGymEnv`: ``n_hospitals``, ``scenario``, ``transfer_budget``, ``integer``,
    ``horizon``, ...)."""
    return HospitalParallelEnv(**kwargs)


# --------------------------------------------------------------------------- Gymnasium ids
def _hospital_train_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """``marra/Hospital-v0`` uses ``marra train``'s defaults: shifting targets and a budget of
    one staff per hospital per step (a random network of 150 hospitals)."""
    options = dict(options)
    options.setdefault("scenario", "shifting")
    if "transfer_budget" not in options:
        network = options.get("network")
        n = options.get("n_hospitals")
        if n is None and network is not None and hasattr(network, "n"):
            n = network.n
        options["transfer_budget"] = float(150 if n is None else n)
    return options


def _gym_entry(name: str) -> Any:
    def entry(**options: Any) -> GymView:
        if name == "hospital":
            return HospitalGymEnv(**_hospital_train_defaults(options))
        return GymView(name, **options)

    entry.__name__ = f"_gym_entry_{name.replace('-', '_')}"
    return entry


def _vector_entry(name: str) -> Any:
    def entry(num_envs: int = 1, **options: Any) -> VectorView:
        options.pop("vectorization_mode", None)
        options.pop("vector_kwargs", None)
        if name == "hospital":
            options = _hospital_train_defaults(options)
        return VectorView(name, num_envs, **options)

    entry.__name__ = f"_vector_entry_{name.replace('-', '_')}"
    return entry


def __getattr__(attr: str) -> Any:
    """``_gym_entry_<name>`` / ``_vector_entry_<name>``: the Gymnasium entry points of every
    registered environment (resolved on demand, so user registrations get them too)."""
    from .registry import registered

    for prefix, factory in (("_gym_entry_", _gym_entry), ("_vector_entry_", _vector_entry)):
        if attr.startswith(prefix):
            slot = attr[len(prefix) :]
            for name in registered():
                if name.replace("-", "_") == slot:
                    return factory(name)
    raise AttributeError(f"module 'marra.envs.views' has no attribute {attr!r}")
