"""One adapter of external multi-agent packages on marra's contract: ``lbf`` and ``rware``.

:class:`ExternalEnv` runs ``num_envs`` instances of a Gymnasium-style multi-agent package
(``lbforaging``'s ``ForagingEnv``, ``rware``'s ``Warehouse``) behind the batched contract of
:mod:`marra.envs.base`. It is the one kind of marra environment allowed a Python loop over
copies: the dynamics are the package's own, stepped instance by instance (in worker processes
when ``num_envs > 1``), and the adapter only converts. :class:`LBFEnv` (``lbf``) and
:class:`RwareEnv` (``rware``) are the same class with the package fixed.

What the adapter does with the package (``docs/envs/lbf-rware.md`` has the details):

- **configuration**: ``preset`` (DyPS, paper 002, Table 1), ``env_id`` (any id the package
  registers) and ``env_kwargs`` (the package constructor's own arguments, overriding those of
  the id or preset) resolve to one constructor call, made once per copy;
- **seeding**: episode ``k`` of copy ``i`` resets its instance with ``seed=episode_seed(seed, i,
  k)``, an integer drawn from ``SeedSequence(seed, spawn_key=(i, k))``; both packages draw all
  their randomness from the generator that ``reset(seed=...)`` creates, so every episode is
  reproducible and can be replayed with the package alone;
- **time limit**: both packages report the end of their step limit as ``terminated``; the
  adapter reports it as ``truncated`` (``terminated`` is LBF's "every food loaded" and RWARE's
  inactivity limit);
- **observations**: each agent's observation flattened to ``obs_dim`` float32 values, unscaled
  (exactly the package's numbers); ``state()`` is every agent's observation concatenated,
  ``(num_envs, num_agents * obs_dim)``;
- **rewards**: the package's per-agent rewards as ``(num_envs, num_agents)`` float32;
- **masks**: LBF's valid actions (the package turns an invalid action into NONE; the adapter
  reports them as the mask and, by default, refuses masked actions like every marra env;
  ``masked_action="noop"`` passes them to the package instead); RWARE has none (all allowed);
- **metrics**: the package's event count, the measure DyPS (paper 002, section 4.1) reports:
  ``foods`` (LBF: foods loaded) or ``deliveries`` (RWARE: requested shelves delivered); the
  per-step count is also in ``info``. Returns are the contract's ``info["episode_return"]``
  (``marra evaluate`` and the learners report them as ``return``, the mean over agents, and
  ``team_return``, the sum), so the adapter does not add a metric of that name.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch

from marra.envs.base import (
    ActionSpec,
    Baseline,
    EnvError,
    EnvSpec,
    MultiAgentEnv,
    check_choice,
    check_int,
)

from ._packages import FAMILIES, PackageCopy, package_seed, resolve
from ._workers import START_METHODS, SerialBackend, WorkerPool

__all__ = ["ExternalEnv", "LBFEnv", "RwareEnv", "NearestFoodBaseline", "MASKED_ACTIONS"]

MASKED_ACTIONS = ("error", "noop")

#: LBF's actions (``lbforaging.foraging.environment.Action``)
LBF_NONE, LBF_NORTH, LBF_SOUTH, LBF_WEST, LBF_EAST, LBF_LOAD = range(6)


class ExternalEnv(MultiAgentEnv):
    """``num_envs`` instances of an external package on the contract (see the module docstring).

    Use :class:`LBFEnv` or :class:`RwareEnv` (registered as ``lbf`` and ``rware``); their
    docstrings list the options.
    """

    #: the package (a key of ``FAMILIES``), fixed by the subclasses
    family: ClassVar[str] = ""

    def __init__(
        self,
        preset: str | None = None,
        env_id: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        max_episode_steps: int | None = None,
        workers: int | None = None,
        start_method: str | None = None,
        masked_action: str = "error",
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        if self.family not in FAMILIES:
            raise EnvError("ExternalEnv: use LBFEnv ('lbf') or RwareEnv ('rware')")
        if max_episode_steps is not None:
            max_episode_steps = check_int("max_episode_steps", max_episode_steps, maximum=10**9)
        if workers is None:
            workers = 0 if self.num_envs == 1 else min(self.num_envs, os.cpu_count() or 1)
        self.workers = check_int("workers", workers, minimum=0, maximum=self.num_envs)
        if start_method is not None:
            check_choice("start_method", start_method, START_METHODS)
        self.masked_action = check_choice("masked_action", masked_action, MASKED_ACTIONS)
        self._unmasked_check = False

        self.source = resolve(
            self.family,
            preset=preset,
            env_id=env_id,
            env_kwargs=env_kwargs,
            max_episode_steps=max_episode_steps,
        )
        probe = PackageCopy(self.source)
        self._event_name = FAMILIES[self.family].event
        self._lbf_layout = self._lbf_observation_layout(probe)
        baselines = ("random", "nearest") if self._lbf_layout is not None else ("random",)
        n, d = probe.num_agents, probe.obs_dim
        self._spec = EnvSpec(
            name=self.family,
            num_agents=n,
            agent_ids=tuple(f"agent_{i}" for i in range(n)),
            obs_dim=d,
            state_dim=n * d,
            action=ActionSpec.discrete(probe.num_actions),
            horizon=self.source.horizon,
            reward="team" if probe.team_reward else "agent",
            metrics=(self._event_name,),
            baselines=baselines,
            obs_names=probe.obs_names(),
            outcome="each agent's undiscounted return",
            any_num_agents=self.family == "rware",  # LBF's observation grows with the players
        )
        self._has_mask = probe.has_mask
        e = self.num_envs
        self._obs_np = np.zeros((e, n, d), dtype=np.float32)
        self._mask_np = np.ones((e, n, probe.num_actions), dtype=bool) if self._has_mask else None
        self._events = np.zeros(e, dtype=np.float64)
        self._publish()
        if self.workers <= 1:
            self._backend: SerialBackend | WorkerPool = SerialBackend(self.source, e, probe)
        else:  # this process steps the first block, workers - 1 processes the others
            layout = (n, d, probe.num_actions, probe.has_mask)
            self._backend = WorkerPool(self.source, e, self.workers, layout, start_method, probe)

    # ---------------------------------------------------------------- the contract
    @property
    def spec(self) -> EnvSpec:
        return self._spec

    def _publish(self) -> None:
        """Tensors of the current host arrays (which are replaced, never written in place)."""
        self._obs_t = torch.from_numpy(self._obs_np).to(self.device)
        self._mask_t = (
            None if self._mask_np is None else torch.from_numpy(self._mask_np).to(self.device)
        )

    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        obs, mask = self._backend.reset(rows.tolist(), [package_seed(s) for s in seeds])
        new_obs = self._obs_np.copy()
        new_obs[rows] = obs
        self._obs_np = new_obs
        if self._mask_np is not None and mask is not None:
            new_mask = self._mask_np.copy()
            new_mask[rows] = mask
            self._mask_np = new_mask
        events = self._events.copy()
        events[rows] = 0.0
        self._events = events
        self._publish()

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        joint = actions.detach().cpu().numpy().astype(np.int64, copy=False)
        obs, reward, terminated, done, events, mask = self._backend.step(joint)
        unexplained = done & ~terminated & (self._t_host + 1 < self.spec.horizon)
        if unexplained.any():
            copy = int(np.flatnonzero(unexplained)[0])
            raise RuntimeError(
                f"{self.source.label}: copy {copy}'s package ended its episode at step "
                f"{int(self._t_host[copy]) + 1} for a reason the adapter does not know"
            )
        self._obs_np = obs
        if mask is not None:
            self._mask_np = mask
        self._events = self._events + events
        self._publish()
        info = {self._event_name: torch.from_numpy(events.astype(np.float32)).to(self.device)}
        return (
            torch.from_numpy(reward.astype(np.float32)).to(self.device),
            torch.from_numpy(terminated).to(self.device),
            info,
        )

    def _observe(self) -> torch.Tensor:
        return self._obs_t

    def state(self) -> torch.Tensor:
        """Every agent's observation concatenated: ``(num_envs, num_agents * obs_dim)``."""
        return self._obs_t.reshape(self.num_envs, self.spec.state_dim)

    def _action_mask(self) -> torch.Tensor | None:
        if self._unmasked_check:
            return None
        return self._mask_t

    def _check_actions(self, actions: Any) -> torch.Tensor:
        if self.masked_action != "noop":
            return super()._check_actions(actions)
        self._unmasked_check = True  # the package turns masked actions into NONE itself
        try:
            return super()._check_actions(actions)
        finally:
            self._unmasked_check = False

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self._event_name: torch.from_numpy(self._events).to(self.device)}

    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        if name == "nearest" and "nearest" in self.spec.baselines:
            return NearestFoodBaseline(self, seed=seed)
        return super().baseline(name, seed=seed)

    def close(self) -> None:
        """Shut the worker processes down (also done when the env is garbage-collected)."""
        self._backend.close()

    def render_text(self, copy: int = 0) -> str:
        return (
            f"{self.spec.name} ({self.source.label}): copy {copy}, step "
            f"{int(self._t_host[copy])}/{self.spec.horizon}, {self.spec.num_agents} agents"
        )

    # ---------------------------------------------------------------- LBF's layout
    @staticmethod
    def _lbf_observation_layout(probe: PackageCopy) -> tuple[int, int] | None:
        """``(foods, values per player)`` of LBF's vector observation, or None (grid obs)."""
        if probe.family != "lbf" or probe.env._grid_observation:
            return None
        return int(probe.env.max_num_food), 3 if probe.env._observe_agent_levels else 2


class LBFEnv(ExternalEnv):
    """Level-Based Foraging (the ``lbforaging`` package) on marra's contract.

    Players on a grid move (NORTH, SOUTH, WEST, EAST), wait (NONE) or LOAD an adjacent food;
    a food is loaded when the levels of the players loading it together reach its level, and
    each of them is rewarded its share (the package's normalised reward). The episode
    terminates when every food is loaded and is truncated at the step limit. Masks: the
    package's valid actions. Metric ``foods``: foods loaded in the episode. Baselines
    ``random`` and ``nearest`` (to the nearest visible food, then LOAD: the package's H1
    heuristic rule). Needs ``pip install 'marra[lbf]'``.

    Args:
        preset: ``lbf-1`` (``Foraging-10x10-6p-4f-v3``, the default) or ``lbf-2`` (10x10 field,
            12 players, 10 foods: DyPS Table 1 LBF (2); not a registered id).
        env_id: any id lbforaging registers (``Foraging-8x8-2p-1f-v3``, ...) instead of a
            preset.
        env_kwargs: ``ForagingEnv`` constructor arguments overriding the preset's or the id's
            (``{"players": 3, "sight": 2}``; a JSON dict on the command line).
        max_episode_steps: the step limit (default: the package's, 50 for registered ids).
        workers: processes stepping the copies, this one included (default: one per CPU core
            up to ``num_envs`` when ``num_envs > 1``; 0 or 1: every copy in this process; ``w``:
            this process steps the first block and ``w - 1`` worker processes the others).
        start_method: ``forkserver`` (default on Linux) or ``spawn`` for the workers.
        masked_action: ``error`` (default: a masked action raises EnvError) or ``noop`` (it is
            passed to the package, which turns it into NONE).
    """

    family: ClassVar[str] = "lbf"


class RwareEnv(ExternalEnv):
    """The multi-robot warehouse (the ``rware`` package) on marra's contract.

    Robots turn (LEFT, RIGHT), move FORWARD, wait (NOOP) or TOGGLE_LOAD a shelf; bringing a
    requested shelf to a goal cell earns 1 (the delivering robot with the registered ids'
    individual reward) and a new shelf is requested. The episode is truncated at the step
    limit (500 for registered ids) and terminates only at the optional inactivity limit. No
    masks. Metric ``deliveries``: shelves delivered in the episode. Baseline ``random``. Needs
    ``pip install 'marra[rware]'``.

    Args:
        preset: ``rware-1`` (``rware-small-8ag-v2``, the default) or ``rware-2``
            (``rware-small-16ag-v2``).
        env_id: any id rware registers (``rware-tiny-2ag-v2``, ``rware-small-8ag-hard-v2``, ...)
            instead of a preset.
        env_kwargs: ``Warehouse`` constructor arguments overriding the preset's or the id's
            (``{"n_agents": 4, "reward_type": "global"}``; a JSON dict on the command line;
            enums by name).
        max_episode_steps: the step limit (default: the package's ``max_steps``).
        workers: processes stepping the copies, this one included (default: one per CPU core
            up to ``num_envs`` when ``num_envs > 1``; 0 or 1: every copy in this process; ``w``:
            this process steps the first block and ``w - 1`` worker processes the others).
        start_method: ``forkserver`` (default on Linux) or ``spawn`` for the workers.
        masked_action: accepted for symmetry with ``lbf``; rware masks nothing.
    """

    family: ClassVar[str] = "rware"


class NearestFoodBaseline:
    """LBF: every player heads for the nearest visible food and loads it.

    The rule of lbforaging's ``H1`` heuristic agent, batched over copies and players from the
    observation alone: the target is the visible food at the smallest Euclidean distance (the
    first in the observation's row-major order on a tie); a player next to it (Manhattan
    distance 1) LOADs; otherwise it takes the first allowed move of NORTH, SOUTH, EAST, WEST
    that brings it closer (in that order); with no food in sight or no such move it takes a
    uniformly random allowed action (seeded by ``seed``).
    """

    def __init__(self, env: ExternalEnv, seed: int = 0) -> None:
        assert env._lbf_layout is not None
        self.env = env
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    def reset(self) -> None:
        self.generator.manual_seed(self.seed)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        env = self.env
        foods, per_player = env._lbf_layout  # type: ignore[misc]
        obs = obs.detach().cpu().to(torch.float64)
        e, n = obs.shape[:2]
        food = obs[..., : 3 * foods].reshape(e, n, foods, 3)
        row, col, level = food.unbind(-1)
        me_row = obs[..., 3 * foods].unsqueeze(-1)
        me_col = obs[..., 3 * foods + 1].unsqueeze(-1)
        dist2 = (row - me_row) ** 2 + (col - me_col) ** 2
        dist2 = torch.where(level > 0, dist2, torch.inf)
        nearest = dist2.argmin(dim=-1, keepdim=True)  # first minimum, as numpy's argmin
        seen = torch.isfinite(dist2.gather(-1, nearest)).squeeze(-1)
        target_row = row.gather(-1, nearest).squeeze(-1)
        target_col = col.gather(-1, nearest).squeeze(-1)
        me_row, me_col = me_row.squeeze(-1), me_col.squeeze(-1)
        mask = env.action_mask()
        assert mask is not None
        mask = mask.cpu()
        random_scores = torch.rand((e, n, mask.shape[-1]), generator=self.generator)
        action = torch.where(mask, random_scores, -1.0).argmax(dim=-1)
        adjacent = (target_row - me_row).abs() + (target_col - me_col).abs() == 1
        candidates = (
            (LBF_WEST, target_col < me_col),
            (LBF_EAST, target_col > me_col),
            (LBF_SOUTH, target_row > me_row),
            (LBF_NORTH, target_row < me_row),
        )  # reversed priority: later assignments win
        for move, wanted in candidates:
            take = seen & ~adjacent & wanted & mask[..., move]
            action = torch.where(take, move, action)
        load = seen & adjacent & mask[..., LBF_LOAD]
        action = torch.where(load, LBF_LOAD, action)
        return action.to(env.device)
