"""A native TorchRL view of any registered environment (extra ``marra[torchrl]``).

:func:`torchrl_env` wraps ONE batched :class:`~marra.envs.MultiAgentEnv` in a
``torchrl.envs.EnvBase`` (:class:`TorchRLView`) whose ``batch_size`` is ``[num_envs]``: every
TorchRL call steps all the copies at once, with no Python loop over copies or agents (the
PettingZoo route, ``PettingZooWrapper(marra.envs.parallel_env(...))``, loops over agents in
Python at every step). The keys follow TorchRL's multi-agent conventions, those of its VMAS and
PettingZoo wrappers (on which BenchMARL's tasks are built), so ``MultiAgentMLP``,
``ClipPPOLoss``/``MAPPOLoss``, ``GAE`` and the collectors work unchanged:

- ``("agents", "observation")`` ``(num_envs, num_agents, obs_dim)`` float32;
- ``("agents", "action")``: ``Bounded(low, high)`` ``(num_envs, num_agents, dim)`` float32 for
  continuous actions (``Unbounded`` where a bound is infinite); ``Categorical(n)``
  ``(num_envs, num_agents)`` int64 for discrete ones (``OneHot(n)`` ``(num_envs, num_agents,
  n)`` with ``categorical_actions=False``);
- ``("agents", "action_mask")`` ``(num_envs, num_agents, n)`` bool (discrete actions only);
- ``("agents", "reward")`` ``(num_envs, num_agents, 1)`` float32 (a team reward is every agent's);
- ``"done"``, ``"terminated"``, ``"truncated"`` ``(num_envs, 1)`` bool, and the same flags per
  agent under the group, ``(num_envs, num_agents, 1)``;
- ``"state"`` ``(num_envs, state_dim)`` float32, the global state for centralised critics;
- ``("episode_metrics", NAME)`` ``(num_envs, 1)`` float32 for each name in ``spec.metrics``: the
  episode's metric at the step where a copy's episode ends, 0 elsewhere.

The group is named ``"agents"`` (VMAS's name; ``group=`` changes it). Episodes end at the same
step for every agent of a copy, so the group's done flags are the copy's, broadcast; both levels
are there so that GAE can use either (``done=("agents", "done")`` or the root keys).

Resets follow TorchRL: the view never resets by itself; a collector or ``rollout`` resets the
finished copies through ``"_reset"`` (the copy's next episode, seeded as the contract says:
copy ``i`` of episode ``k`` draws from ``SeedSequence(seed, spawn_key=(i, k))``).
``set_seed(s)`` makes the next full reset ``reset(seed=s)`` of the batched environment, so
seeded TorchRL runs see the same episodes as marra's own learner and views.

Continuous actions go to the environment as they are (it treats NaN/inf as 0 and clips to the
bounds); discrete ones are checked against the mask by the environment, and the action spec's
mask is updated at every reset and step, so ``env.rand_action()`` (and TorchRL's
``check_env_specs``) only draws allowed actions.
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import torch

from .base import EnvError, MultiAgentEnv
from .registry import make

try:
    from tensordict import TensorDict, TensorDictBase
    from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
    from torchrl.envs import EnvBase
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    _MISSING: ImportError | None = _exc
    EnvBase = object  # type: ignore[assignment,misc]
else:
    _MISSING = None

__all__ = ["torchrl_env", "TorchRLView", "INSTALL_HINT"]

#: What to run when TorchRL is missing.
INSTALL_HINT = "pip install 'marra[torchrl]' (or: pip install torchrl)"


def _require_torchrl() -> None:
    if _MISSING is not None:
        raise ImportError(
            f"marra.envs.torchrl_env needs TorchRL and tensordict: {INSTALL_HINT} ({_MISSING})"
        ) from _MISSING


def torchrl_env(
    name: str | MultiAgentEnv,
    *,
    num_envs: int = 1,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    group: str = "agents",
    categorical_actions: bool = True,
    **options: Any,
) -> TorchRLView:
    """Environment ``name`` with ``num_envs`` copies as a TorchRL ``EnvBase`` (see the module
    docstring for its keys)::

        env = marra.envs.torchrl_env("hospital", num_envs=16, seed=0, n_hospitals=150)
        td = env.rollout(50)      # batch (16, 50); td["agents", "observation"]: (16, 50, 150, 11)

    Args:
        name: a registered name (``marra.envs.registered()``), or an environment instance built
            without ``autoreset`` (then ``num_envs``, ``device``, ``seed`` and ``options`` must be
            left out: the instance has them).
        num_envs: copies stepped at once; TorchRL's ``batch_size`` is ``[num_envs]``.
        device: torch device of the environment and of every tensor of the view.
        seed: seed of the first reset (None: fresh entropy); ``set_seed`` reseeds.
        group: name of the agent group in the tensordicts (default ``"agents"``).
        categorical_actions: discrete actions as indices (``Categorical``, default) or as
            one-hot vectors (``OneHot``).
        options: the environment's options (``marra envs NAME`` lists them).

    Raises:
        ImportError: TorchRL is not installed (the message says how to install it).
        EnvError: an unknown name or option, a bad value, or an instance with ``autoreset``.
    """
    _require_torchrl()
    if isinstance(name, MultiAgentEnv):
        given = {"num_envs": num_envs != 1, "device": str(device) != "cpu", "seed": seed}
        extra = [key for key, value in given.items() if value] + sorted(options)
        if extra:
            raise EnvError(f"{extra[0]}: set it on the environment instance, not on the view")
        core = name
    else:
        core = make(name, num_envs=num_envs, seed=seed, device=str(device), **options)
    return TorchRLView(core, group=group, categorical_actions=categorical_actions)


class TorchRLView(EnvBase):  # type: ignore[misc,valid-type]
    """TorchRL ``EnvBase`` over one batched marra environment (see the module docstring).

    Args:
        env: the batched environment (``autoreset`` must be off: TorchRL resets finished copies
            itself through ``"_reset"``).
        group: name of the agent group (default ``"agents"``).
        categorical_actions: discrete actions as indices (default) or one-hot vectors.

    Attributes:
        core: the wrapped :class:`~marra.envs.MultiAgentEnv`; ``group``; ``spec_marra`` (its
        :class:`~marra.envs.EnvSpec`).
    """

    def __init__(
        self, env: MultiAgentEnv, *, group: str = "agents", categorical_actions: bool = True
    ) -> None:
        _require_torchrl()
        if not isinstance(env, MultiAgentEnv):
            raise EnvError(f"env: expected a marra MultiAgentEnv, got {type(env).__name__}")
        if env.autoreset:
            raise EnvError(
                "autoreset: TorchRL resets finished copies itself; build the environment "
                "without autoreset"
            )
        if not isinstance(group, str) or not group or group.startswith("_"):
            raise EnvError(f"group: a non-empty name not starting with '_', got {group!r}")
        reserved = ("done", "terminated", "truncated", "state", "episode_metrics", "next")
        if group in reserved:
            raise EnvError(f"group: {group!r} is a reserved key; choose another name")
        super().__init__(device=env.device, batch_size=torch.Size([env.num_envs]))
        self.core = env
        self.group = group
        self.categorical_actions = bool(categorical_actions)
        self.spec_marra = env.spec
        self._pending_seed: int | None = None
        self._make_specs()

    # ---------------------------------------------------------------- specs
    def _make_specs(self) -> None:
        spec = self.spec_marra
        e, n = self.core.num_envs, spec.num_agents
        device = self.device
        action = spec.action
        agents = (e, n)
        if action.is_discrete:
            k = int(action.n)
            if self.categorical_actions:
                action_leaf: Any = Categorical(k, shape=agents, dtype=torch.int64, device=device)
            else:
                action_leaf = OneHot(k, shape=(*agents, k), dtype=torch.int64, device=device)
        else:
            shape = (*agents, int(action.dim))
            if math.isfinite(action.low) and math.isfinite(action.high):
                action_leaf = Bounded(
                    action.low, action.high, shape=shape, dtype=torch.float32, device=device
                )
            else:
                action_leaf = Unbounded(shape=shape, dtype=torch.float32, device=device)
        self.full_action_spec = Composite(
            {self.group: Composite({"action": action_leaf}, shape=agents, device=device)},
            shape=(e,),
            device=device,
        )
        group_obs: dict[str, Any] = {
            "observation": Unbounded(
                shape=(*agents, spec.obs_dim), dtype=torch.float32, device=device
            )
        }
        if action.is_discrete:
            group_obs["action_mask"] = Categorical(
                2, shape=(*agents, int(action.n)), dtype=torch.bool, device=device
            )
        observation = {
            self.group: Composite(group_obs, shape=agents, device=device),
            "state": Unbounded(shape=(e, spec.state_dim), dtype=torch.float32, device=device),
        }
        if spec.metrics:
            observation["episode_metrics"] = Composite(
                {
                    metric: Unbounded(shape=(e, 1), dtype=torch.float32, device=device)
                    for metric in spec.metrics
                },
                shape=(e,),
                device=device,
            )
        self.full_observation_spec = Composite(observation, shape=(e,), device=device)
        self.full_reward_spec = Composite(
            {
                self.group: Composite(
                    {"reward": Unbounded(shape=(*agents, 1), dtype=torch.float32, device=device)},
                    shape=agents,
                    device=device,
                )
            },
            shape=(e,),
            device=device,
        )

        def flags(shape: tuple[int, ...]) -> dict[str, Any]:
            return {
                key: Categorical(2, shape=shape, dtype=torch.bool, device=device)
                for key in ("done", "terminated", "truncated")
            }

        self.full_done_spec = Composite(
            {**flags((e, 1)), self.group: Composite(flags((*agents, 1)), shape=agents)},
            shape=(e,),
            device=device,
        )

    # ---------------------------------------------------------------- data
    def _update_mask(self) -> torch.Tensor | None:
        """The current action mask ``(num_envs, num_agents, n)``, also written into the action
        spec (so random actions are allowed ones); None for continuous actions."""
        mask = self.core.action_mask()
        if mask is None:
            return None
        leaf = self.full_action_spec[self.group, "action"]
        leaf.update_mask(mask.clone())
        return mask

    def _output(
        self,
        obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        reward: torch.Tensor | None = None,
        info: dict[str, Any] | None = None,
    ) -> TensorDictBase:
        e, n = self.core.num_envs, self.spec_marra.num_agents
        terminated = terminated.reshape(e, 1)
        truncated = truncated.reshape(e, 1)
        done = terminated | truncated
        group: dict[str, Any] = {
            "observation": obs,
            "done": done.unsqueeze(1).expand(e, n, 1),
            "terminated": terminated.unsqueeze(1).expand(e, n, 1),
            "truncated": truncated.unsqueeze(1).expand(e, n, 1),
        }
        if reward is not None:
            group["reward"] = reward.unsqueeze(-1)
        mask = self._update_mask()
        if mask is not None:
            group["action_mask"] = mask
        source: dict[str, Any] = {
            self.group: TensorDict(group, batch_size=(e, n), device=self.device),
            "done": done,
            "terminated": terminated,
            "truncated": truncated,
            "state": self.core.state(),
        }
        metrics = self.spec_marra.metrics
        if metrics:
            ended = {} if info is None else info.get("episode_metrics", {})
            values = {}
            for metric in metrics:
                value = ended.get(metric)
                if value is None:
                    values[metric] = torch.zeros((e, 1), dtype=torch.float32, device=self.device)
                else:
                    values[metric] = torch.where(done, value.reshape(e, 1).float(), 0.0)
            source["episode_metrics"] = TensorDict(values, batch_size=(e,), device=self.device)
        return TensorDict(source, batch_size=(e,), device=self.device)

    # ---------------------------------------------------------------- EnvBase hooks
    def _reset_rows(self, tensordict: TensorDictBase | None) -> torch.Tensor | None:
        """The copies a ``"_reset"`` entry asks to reset ``(num_envs,)`` bool; None: all."""
        if tensordict is None:
            return None
        flag = tensordict.get("_reset", None)
        if flag is None:
            flag = tensordict.get((self.group, "_reset"), None)
            if flag is None:
                return None
            return flag.reshape(self.core.num_envs, -1).any(dim=-1)
        return flag.reshape(self.core.num_envs, -1).any(dim=-1)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        rows = self._reset_rows(tensordict)
        core = self.core
        first = core._base_seed is None
        if self._pending_seed is not None:
            obs = core.reset(seed=self._pending_seed)
            self._pending_seed = None
        elif first or rows is None or bool(rows.all()):
            obs = core.reset()
        else:
            obs = core.reset_done(rows.cpu())
        false = torch.zeros(core.num_envs, dtype=torch.bool, device=self.device)
        return self._output(obs, false, false)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get((self.group, "action"))
        if self.spec_marra.action.is_discrete and not self.categorical_actions:
            action = action.argmax(dim=-1)
        step = self.core.step(action)
        return self._output(step.obs, step.terminated, step.truncated, step.reward, step.info)

    def _set_seed(self, seed: int | None) -> None:
        """The next full reset is ``reset(seed=seed)`` of the batched environment."""
        if seed is not None:
            self._pending_seed = int(seed) % (2**63)

    def close(self, *, raise_if_closed: bool = True) -> None:
        self.core.close()
        super().close(raise_if_closed=raise_if_closed)

    def __repr__(self) -> str:
        return f"TorchRLView({self.core!r}, group={self.group!r})"


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`torchrl_env`.

    The module and the function share the name ``marra.envs.torchrl_env``: importing the module
    (``from marra.envs.torchrl_env import TorchRLView``) sets the package's attribute to the
    module, so ``marra.envs.torchrl_env(...)`` must work on either.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> TorchRLView:
        return torchrl_env(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
