"""The two external packages, their presets and one package instance as numpy in and out.

This module imports numpy, gymnasium and the packages only, never torch: worker processes import
it to step their package instances.

- :func:`resolve` turns the adapter's options (``preset``, ``env_id``, ``env_kwargs``,
  ``max_episode_steps``) into a :class:`Source`: the package class and its complete constructor
  arguments, plus the episode length.
- :class:`PackageCopy` is one package instance: ``reset(seed)`` and ``step(actions)`` return
  flattened float32 observations ``(num_agents, obs_dim)``, the rewards, the package's own
  ``done`` split into "terminated" (the package's task ended) and "time limit", one event count
  per step (LBF: foods loaded; RWARE: shelves delivered) and the valid-action mask (LBF only).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from marra.envs.errors import EnvError

__all__ = [
    "FAMILIES",
    "PRESETS",
    "LBF_2_KWARGS",
    "Family",
    "Preset",
    "Source",
    "PackageCopy",
    "episode_seed",
    "package_seed",
    "resolve",
    "import_package",
]


@dataclass(frozen=True)
class Family:
    """What the adapter needs to know about one package."""

    name: str  # the marra registry name
    module: str  # the importable package
    distribution: str  # the PyPI name
    limit_kwarg: str  # the constructor argument holding the episode's step limit
    default_preset: str
    event: str  # what the per-step event count counts (the name of its metric)


FAMILIES: dict[str, Family] = {
    "lbf": Family("lbf", "lbforaging", "lbforaging", "max_episode_steps", "lbf-1", "foods"),
    "rware": Family("rware", "rware", "rware", "max_steps", "rware-1", "deliveries"),
}

#: ``lbf-2`` (DyPS, paper 002, Table 1: LBF (2), 100 grids, 12 agents, 10 foods) is not a
#: registered id (lbforaging registers 2..9 players and 1..4 foods). The field is 10 x 10 because
#: Table 1 gives 100 grids for both LBF scenarios; every other argument is the registered
#: ``Foraging-10x10-*-v3`` family's (levels 1-2, full sight, 50 steps, no forced cooperation).
LBF_2_KWARGS: dict[str, Any] = {
    "players": 12,
    "min_player_level": 1,
    "max_player_level": 2,
    "field_size": (10, 10),
    "min_food_level": 1,
    "max_food_level": None,
    "max_num_food": 10,
    "sight": 10,
    "max_episode_steps": 50,
    "force_coop": False,
    "grid_observation": False,
    "penalty": 0.0,
}


@dataclass(frozen=True)
class Preset:
    family: str
    env_id: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


PRESETS: dict[str, Preset] = {
    "lbf-1": Preset("lbf", "Foraging-10x10-6p-4f-v3", description="DyPS Table 1 LBF (1)"),
    "lbf-2": Preset("lbf", None, LBF_2_KWARGS, "DyPS Table 1 LBF (2): 10x10, 12 players, 10 foods"),
    "rware-1": Preset("rware", "rware-small-8ag-v2", description="DyPS Table 1 RWARE (1)"),
    "rware-2": Preset("rware", "rware-small-16ag-v2", description="DyPS Table 1 RWARE (2)"),
}


def import_package(family: Family) -> Any:
    """Import the package (which registers its Gymnasium ids) or say how to install it."""
    try:
        return importlib.import_module(family.module)
    except ImportError as exc:
        raise ImportError(
            f"the {family.name!r} environment needs the {family.distribution} package: "
            f"pip install 'marra[{family.name}]' (or pip install {family.distribution})"
        ) from exc


def package_seed(sequence: np.random.SeedSequence) -> int:
    """The integer seed handed to the package's ``reset(seed=...)`` for one episode of one copy."""
    return int(sequence.generate_state(1, np.uint64)[0])


def episode_seed(seed: int, copy: int, episode: int) -> int:
    """The package seed of episode ``episode`` of copy ``copy`` of an adapter reset with
    ``seed`` (marra's scheme ``SeedSequence(seed, spawn_key=(copy, episode))``): reset a package
    instance with it to replay that episode outside marra."""
    return package_seed(np.random.SeedSequence(seed, spawn_key=(copy, episode)))


@dataclass(frozen=True)
class Source:
    """A resolved package configuration (picklable: it travels to the worker processes)."""

    family: str
    entry: str  # "module:Class"
    kwargs: dict[str, Any]
    horizon: int
    label: str  # the env id, the preset or "custom", for messages and render_text


def _load(entry: str) -> Any:
    module_name, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _lookup(family: Family, env_id: str) -> Any:
    """The Gymnasium spec of ``env_id``, registering the package's optional families on demand."""
    package = import_package(family)
    try:
        return gymnasium.spec(env_id)
    except gymnasium.error.Error:
        pass
    extra = None
    if family.name == "lbf" and env_id.startswith("Foraging-grid"):
        extra = getattr(package, "register_grid_envs", None)
    if family.name == "rware" and env_id.startswith("rware-img"):
        extra = getattr(package, "image_registration", None)
    if extra is not None:
        extra()
        try:
            return gymnasium.spec(env_id)
        except gymnasium.error.Error:
            pass
    example = PRESETS[family.default_preset].env_id
    raise EnvError(
        f"env_id: {env_id!r} is not a registered {family.distribution} id (for example "
        f"{example!r}; `import {family.module}` registers them)"
    )


def _rware_enums(kwargs: dict[str, Any]) -> None:
    """Strings (from JSON or the command line) to rware's enums, in place."""
    from rware.warehouse import ImageLayer, ObservationType, RewardType

    for key, enum in (("reward_type", RewardType), ("observation_type", ObservationType)):
        value = kwargs.get(key)
        if isinstance(value, str):
            try:
                kwargs[key] = enum[value.upper()]
            except KeyError:
                names = ", ".join(m.name.lower() for m in enum)
                raise EnvError(f"env_kwargs.{key}: one of {names}; got {value!r}") from None
    layers = kwargs.get("image_observation_layers")
    if isinstance(layers, list | tuple):
        try:
            kwargs["image_observation_layers"] = [
                ImageLayer[v.upper()] if isinstance(v, str) else v for v in layers
            ]
        except KeyError as exc:
            names = ", ".join(m.name.lower() for m in ImageLayer)
            raise EnvError(
                f"env_kwargs.image_observation_layers: each one of {names}; got {exc}"
            ) from None


def resolve(
    family_name: str,
    *,
    preset: str | None,
    env_id: str | None,
    env_kwargs: dict[str, Any] | None,
    max_episode_steps: int | None,
) -> Source:
    """The package class and its complete constructor arguments for the adapter's options.

    ``env_kwargs`` override the arguments of ``env_id`` or of the preset (the family's default
    preset when neither is given); ``max_episode_steps`` sets the package's step limit.
    """
    family = FAMILIES[family_name]
    import_package(family)
    if preset is not None and env_id is not None:
        raise EnvError("env_id: give env_id or preset, not both")
    wrapper_limit = None
    if env_id is not None:
        if not isinstance(env_id, str):
            raise EnvError(f"env_id: expected a string, got {env_id!r}")
        spec = _lookup(family, env_id)
        entry = spec.entry_point
        if not isinstance(entry, str) or not entry.startswith(family.module + "."):
            raise EnvError(
                f"env_id: {env_id!r} is registered by {entry!r}, not by {family.distribution}"
            )
        kwargs = dict(spec.kwargs)
        wrapper_limit = spec.max_episode_steps
        label = env_id
    else:
        name = family.default_preset if preset is None else preset
        choices = [p for p, v in PRESETS.items() if v.family == family.name]
        if name not in choices:
            raise EnvError(f"preset: one of {', '.join(choices)}; got {name!r}")
        chosen = PRESETS[name]
        if chosen.env_id is not None:
            source = resolve(
                family_name,
                preset=None,
                env_id=chosen.env_id,
                env_kwargs=env_kwargs,
                max_episode_steps=max_episode_steps,
            )
            label = f"{name} (modified)" if env_kwargs else name
            return Source(source.family, source.entry, source.kwargs, source.horizon, label)
        entry = {
            "lbf": "lbforaging.foraging:ForagingEnv",
            "rware": "rware.warehouse:Warehouse",
        }[family.name]
        kwargs = dict(chosen.kwargs)
        label = name
    cls = _load(entry)
    if env_kwargs is not None:
        if not isinstance(env_kwargs, dict) or not all(isinstance(k, str) for k in env_kwargs):
            raise EnvError(f"env_kwargs: expected a dict of argument names, got {env_kwargs!r}")
        parameters = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(env_kwargs) - set(parameters))
        if unknown:
            raise EnvError(
                f"env_kwargs: {cls.__name__} has no argument {unknown[0]!r}; its arguments are "
                f"{', '.join(parameters)}"
            )
        if "render_mode" in env_kwargs and env_kwargs["render_mode"] is not None:
            raise EnvError("env_kwargs.render_mode: the adapter renders text only; leave it None")
        kwargs.update(env_kwargs)
        if env_kwargs:
            label = f"{label} (modified)"
    if max_episode_steps is not None:
        if env_kwargs and family.limit_kwarg in env_kwargs:
            raise EnvError(
                f"max_episode_steps: also given as env_kwargs.{family.limit_kwarg}; give one"
            )
        kwargs[family.limit_kwarg] = max_episode_steps
    if family.name == "rware":
        _rware_enums(kwargs)
    limits = [v for v in (kwargs.get(family.limit_kwarg), wrapper_limit) if v]
    if not limits:
        raise EnvError(
            f"max_episode_steps: {label} has no step limit ({family.limit_kwarg}=None); "
            "give max_episode_steps"
        )
    horizon = int(min(limits))
    return Source(family.name, entry, kwargs, horizon, label)


# --------------------------------------------------------------------------- one instance
def _flatten(space: gymnasium.Space, value: Any) -> np.ndarray:
    if isinstance(space, gymnasium.spaces.Box):
        return np.asarray(value, dtype=np.float32).reshape(-1)
    return np.asarray(gymnasium.spaces.flatten(space, value), dtype=np.float32)


class PackageCopy:
    """One instance of the package (see the module docstring)."""

    def __init__(self, source: Source) -> None:
        self.family = source.family
        self.source = source
        self._cls = _load(source.entry)
        self.env = self._construct()
        env = self.env
        if len(env.action_space) == 0:
            raise EnvError(f"env_kwargs: {source.label} has no agents")
        action_space = env.action_space[0]
        if not isinstance(action_space, gymnasium.spaces.Discrete):
            raise EnvError(
                f"env_kwargs: the adapter needs one discrete action per agent; {source.label} "
                f"has {action_space} (rware: msg_bits must be 0)"
            )
        self.num_agents = len(env.action_space)
        self.num_actions = int(action_space.n)
        self.spaces = list(env.observation_space)
        self.obs_dim = int(gymnasium.spaces.flatdim(self.spaces[0]))
        self.has_mask = self.family == "lbf"

    def _construct(self) -> Any:
        try:
            return self._cls(**self.source.kwargs)
        except (AssertionError, ValueError, TypeError) as exc:
            raise EnvError(
                f"env_kwargs: {self._cls.__name__}({self.source.label}) rejected its arguments: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # -------------------------------------------------------------- what the adapter reads
    @property
    def team_reward(self) -> bool:
        """Every agent always gets the same reward (rware's GLOBAL reward)."""
        if self.family == "rware":
            from rware.warehouse import RewardType

            return self.env.reward_type == RewardType.GLOBAL
        return False

    def obs_names(self) -> tuple[str, ...] | None:
        """Names of the flattened features where the layout is the package's default one."""
        env = self.env
        if self.family == "lbf":
            if env._grid_observation:
                return None
            per_player = ("row", "col", "level") if env._observe_agent_levels else ("row", "col")
            names = [
                f"food{i}_{k}" for i in range(env.max_num_food) for k in ("row", "col", "level")
            ]
            for j in range(len(env.players)):
                who = "self" if j == 0 else f"other{j}"
                names += [f"{who}_{k}" for k in per_player]
        else:
            if not env.fast_obs or env.msg_bits:
                return None
            names = ["x", "y", "carrying", "dir_up", "dir_down", "dir_left", "dir_right"]
            names.append("on_highway")
            side = 2 * env.sensor_range + 1
            for c in range(side * side):
                names += [f"cell{c}_{k}" for k in ("agent", "agent_up", "agent_down")]
                names += [f"cell{c}_{k}" for k in ("agent_left", "agent_right")]
                names += [f"cell{c}_shelf", f"cell{c}_requested"]
        return tuple(names) if len(names) == self.obs_dim else None

    # -------------------------------------------------------------- stepping
    def _observations(self, raw: Any) -> np.ndarray:
        return np.stack([_flatten(s, o) for s, o in zip(self.spaces, raw, strict=True)])

    def mask(self) -> np.ndarray | None:
        """LBF's valid actions ``(num_agents, 6)`` bool (what its step would not turn into NONE)."""
        if not self.has_mask:
            return None
        env = self.env
        out = np.zeros((self.num_agents, self.num_actions), dtype=bool)
        for i, player in enumerate(env.players):
            for action in env._valid_actions[player]:
                out[i, action.value] = True
        return out

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A new episode on a freshly built instance, reset with ``seed``.

        A fresh instance per episode makes the episode a function of the seed alone:
        lbforaging's ``reset`` places players away from where the previous episode left them,
        so a reused instance's episode depends on the one before.
        """
        self.env.close()
        self.env = self._construct()
        raw, _ = self.env.reset(seed=seed)
        return self._observations(raw), self.mask()

    def step(
        self, actions: list[int]
    ) -> tuple[np.ndarray, np.ndarray, bool, bool, float, np.ndarray | None]:
        """``(obs, reward (num_agents,) float64, terminated, package_done, events, mask)``."""
        env = self.env
        if self.family == "lbf":
            foods_before = int(np.count_nonzero(env.field))
            raw, reward, done, _, _ = env.step(actions)
            # the package ends an episode when every food is loaded or at its step limit; only
            # the first is the end of the task
            terminated = bool(env.field.sum() == 0)
            events = float(foods_before - np.count_nonzero(env.field))
        else:
            from rware.warehouse import RewardType

            queue = [id(s) for s in env.request_queue]
            raw, reward, done, _, _ = env.step(actions)
            reward_sum = float(np.sum(reward))
            if env.reward_type == RewardType.INDIVIDUAL:
                events = reward_sum  # 1 to the delivering agent per shelf
            elif env.reward_type == RewardType.GLOBAL:
                events = reward_sum / self.num_agents  # 1 to every agent per shelf
            else:  # TWO_STAGE: a delivered shelf is replaced in the request queue
                events = float(
                    sum(a != id(s) for a, s in zip(queue, env.request_queue, strict=True))
                )
            inactivity = env.max_inactivity_steps
            terminated = bool(inactivity and env._cur_inactive_steps >= inactivity)
        reward_array = np.asarray(reward, dtype=np.float64).reshape(self.num_agents)
        return self._observations(raw), reward_array, terminated, bool(done), events, self.mask()
