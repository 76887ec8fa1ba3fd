"""``matthew``: the Matthew Effect game of FEN (Jiang and Lu 2019) and SOTO (Zimmer et al. 2021).

``num_agents`` Pac-Man-like agents (default 10) move in the unit square and eat ``num_resources``
resources (default 3). Every catch makes the eater bigger and faster, so early luck compounds
(the Matthew effect); an eaten resource reappears at a uniformly random point. The rules follow
the authoritative code of the FEN/SOTO line of work, ``common/env_matthew.py`` of
``matthieu637/DFRL`` (resource type ``all``, observations with the 3 nearest agents, no input
normalisation: learners normalise), step by step:

- reset: resources and agents uniform in ``[0, 1)^2``; each agent's size ``0.01 + 0.04 u`` with
  ``u`` uniform; its speed is always ``0.01 + size``;
- actions (5, discrete): 0 stay, 1 ``x -= speed``, 2 ``x += speed``, 3 ``y -= speed``,
  4 ``y += speed``, each clipped to ``[0, 1]``. Moves never interact, so the original's move
  loop over agents is one tensor operation here;
- eating, resources in index order: resource ``k`` is caught by the FIRST agent (lowest index)
  whose squared distance to it is strictly below its squared size (first-eater wins); the eater
  gets reward 1, its size becomes ``min(size + 0.005, 0.15)`` (so a later resource of the same
  step is checked against the grown size, as in the original) and resource ``k`` respawns. An
  agent may catch several resources in one step, each counted as an item and each growing it,
  but its reward for the step is still 1 (the original sets, not adds, the reward);
- observation of agent ``i`` (18 values, float32): its ``x, y, size, speed``, the same four of
  its 3 nearest other agents (Euclidean distance, nearest first, ties by lower index) and the
  ``x, y`` of its nearest resource (ties by lower index);
- episodes last ``horizon`` steps (default 1,000 as the original); they never terminate early.

The sequential "first-eater wins" rule is batched over copies with a Python loop over the
(small, fixed) resource index only; nothing loops over copies or agents. State is float64 so the
dynamics match the original's numpy arithmetic bit for bit; randomness differs only in its
source: each respawn point is a counter-based draw keyed by (copy's episode seed, step,
resource) (:mod:`marra.envs.rng`) rather than the next value of one global numpy stream, which
gives the same distribution and makes every copy reproducible on its own.

Metric ``efficiency``: the items collected in the episode by all agents. Outcome
(``info["episode_outcome"]``): the items each agent collected, so that the efficiency is the sum
of the outcomes (paper 003, Eq. 1: x_i is "items secured"). The return differs from the items
count only in the (rare) steps where one agent catches two resources at once.

Baselines: ``random`` and ``greedy`` (each agent steps along the axis of the larger gap towards
its nearest resource, as read from its observation).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import (
    ActionSpec,
    Baseline,
    EnvSpec,
    MultiAgentEnv,
    check_int,
)
from .rng import CounterRNG, copy_keys

__all__ = ["MatthewEnv", "MatthewGreedy", "OBS_NAMES", "NEIGHBOURS"]

#: nearest other agents in each observation
NEIGHBOURS = 3
#: the original's constants
INITIAL_SIZE, INITIAL_SIZE_RANGE = 0.01, 0.04
SPEED_OFFSET = 0.01
GROWTH, MAX_SIZE = 0.005, 0.15

OBS_NAMES = (
    ("x", "y", "size", "speed")
    + tuple(
        f"neighbour{k}_{f}" for k in range(1, NEIGHBOURS + 1) for f in ("x", "y", "size", "speed")
    )
    + ("resource_x", "resource_y")
)

# random streams of the counter-based generator
_STREAM_RESPAWN = 1
_STREAM_RESOURCES, _STREAM_POSITIONS, _STREAM_SIZES = 101, 102, 103


class MatthewEnv(MultiAgentEnv):
    """The Matthew Effect game: agents grow with every resource they catch (see the module
    docstring).

    Args:
        num_agents: agents per copy (default 10, at least 4: each observes its 3 nearest others).
        num_resources: resources on the square at any time (default 3).
        horizon: steps per episode (default 1000, as the original).
    """

    def __init__(
        self,
        num_agents: int = 10,
        num_resources: int = 3,
        horizon: int = 1000,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self.n_agents = check_int("num_agents", num_agents, minimum=NEIGHBOURS + 1, maximum=1000)
        self.n_resources = check_int("num_resources", num_resources, maximum=1000)
        self._horizon = check_int("horizon", horizon, maximum=10_000_000)
        n, r = self.n_agents, self.n_resources
        self._spec = EnvSpec(
            name="matthew",
            num_agents=n,
            agent_ids=tuple(f"agent_{i}" for i in range(n)),
            obs_dim=len(OBS_NAMES),
            state_dim=3 * n + 2 * r + 1,
            action=ActionSpec.discrete(5),
            horizon=self._horizon,
            reward="agent",
            metrics=("efficiency",),
            baselines=("random", "greedy"),
            obs_names=OBS_NAMES,
            outcome="items each agent collected in the episode",
            any_num_agents=True,
        )
        e, dev, f64 = self.num_envs, self.device, torch.float64
        self._rng = CounterRNG(e, dev)
        #: agent positions (num_envs, num_agents, 2), float64
        self.position = torch.zeros((e, n, 2), dtype=f64, device=dev)
        #: agent sizes (num_envs, num_agents), float64; the speed is 0.01 + size
        self.size = torch.full((e, n), INITIAL_SIZE, dtype=f64, device=dev)
        #: resource positions (num_envs, num_resources, 2), float64
        self.resources = torch.zeros((e, r, 2), dtype=f64, device=dev)
        #: items each agent caught in the current episode (num_envs, num_agents), float64
        self.items = torch.zeros((e, n), dtype=f64, device=dev)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    @property
    def speed(self) -> torch.Tensor:
        """Agent speeds ``(num_envs, num_agents)``: ``0.01 + size``."""
        return SPEED_OFFSET + self.size

    # ---------------------------------------------------------------- dynamics
    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        self._rng.set_keys(rows, copy_keys(seeds))
        n, r = self.n_agents, self.n_resources
        reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        reset[torch.as_tensor(rows, device=self.device)] = True
        resources = self._rng.uniform((r, 2), 0, stream=_STREAM_RESOURCES)
        position = self._rng.uniform((n, 2), 0, stream=_STREAM_POSITIONS)
        size = INITIAL_SIZE + self._rng.uniform((n,), 0, stream=_STREAM_SIZES) * INITIAL_SIZE_RANGE
        self.resources = torch.where(reset.view(-1, 1, 1), resources, self.resources)
        self.position = torch.where(reset.view(-1, 1, 1), position, self.position)
        self.size = torch.where(reset.view(-1, 1), size, self.size)
        self.items = torch.where(reset.view(-1, 1), 0.0, self.items)

    def _respawn_points(self) -> torch.Tensor:
        """Where each resource reappears if it is caught in the current step ``(num_envs,
        num_resources, 2)``: uniform draws keyed by (copy, step ``t``, resource)."""
        return self._rng.uniform((self.n_resources, 2), self.t, stream=_STREAM_RESPAWN)

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        # 1. moves (independent of each other): clip to the unit square
        speed = self.speed
        x, y = self.position[..., 0], self.position[..., 1]
        x = torch.where(actions == 1, (x - speed).clamp_min(0.0), x)
        x = torch.where(actions == 2, (x + speed).clamp_max(1.0), x)
        y = torch.where(actions == 3, (y - speed).clamp_min(0.0), y)
        y = torch.where(actions == 4, (y + speed).clamp_max(1.0), y)
        self.position = torch.stack((x, y), dim=-1)
        # 2. eating, resource by resource: the lowest-index agent in reach catches it
        respawn = self._respawn_points()
        size = self.size
        caught = torch.zeros_like(size)  # items caught this step
        resources = []
        for k in range(self.n_resources):
            dx = self.resources[:, k, 0].unsqueeze(1) - x
            dy = self.resources[:, k, 1].unsqueeze(1) - y
            reach = dx * dx + dy * dy < size * size  # (E, N)
            eaten = reach.any(dim=1)  # (E,)
            first = reach.to(torch.uint8).argmax(dim=1)  # first True (0 when none)
            eater = torch.nn.functional.one_hot(first, self.n_agents).to(torch.bool)
            eater &= eaten.unsqueeze(1)
            size = torch.where(eater, (size + GROWTH).clamp_max(MAX_SIZE), size)
            caught = caught + eater.to(caught.dtype)
            resources.append(torch.where(eaten.unsqueeze(1), respawn[:, k], self.resources[:, k]))
        self.resources = torch.stack(resources, dim=1)
        self.size = size
        self.items = self.items + caught
        reward = (caught > 0).to(torch.float32)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return reward, terminated, {"items": caught.to(torch.float32)}

    # ---------------------------------------------------------------- observations
    def neighbours(self) -> torch.Tensor:
        """The 3 nearest other agents of every agent ``(num_envs, num_agents, 3)`` (int64,
        nearest first, ties by lower index)."""
        x = self.position[..., 0].contiguous()
        y = self.position[..., 1].contiguous()
        dx = x.unsqueeze(2) - x.unsqueeze(1)  # (E, N, N)
        dy = y.unsqueeze(2) - y.unsqueeze(1)
        d2 = dx * dx + dy * dy
        eye = torch.eye(self.n_agents, dtype=torch.bool, device=self.device)
        d2 = d2.masked_fill(eye, float("inf"))
        # one stable sort (ties: lower index first). Three rounds of torch.min(dim) cost less
        # with one thread, but torch runs min over many small rows on several threads, which
        # was 100x slower on a busy 2-core machine; the sort stays one robust call.
        return torch.sort(d2, dim=-1, stable=True).indices[..., :NEIGHBOURS]

    def nearest_resource(self) -> torch.Tensor:
        """Index of every agent's nearest resource ``(num_envs, num_agents)`` (ties by lower
        index)."""
        dx = self.resources[..., 0].unsqueeze(1) - self.position[..., 0].unsqueeze(2)
        dy = self.resources[..., 1].unsqueeze(1) - self.position[..., 1].unsqueeze(2)
        return (dx * dx + dy * dy).argmin(dim=-1)  # (E, N, R) -> (E, N)

    def _observe(self) -> torch.Tensor:
        e, n = self.num_envs, self.n_agents
        f32 = torch.float32  # rounding each value first, then moving it, is the same
        own = torch.cat(
            (
                self.position.to(f32),
                self.size.unsqueeze(-1).to(f32),
                self.speed.unsqueeze(-1).to(f32),
            ),
            dim=-1,
        )  # (E, N, 4)
        index = self.neighbours().reshape(e, n * NEIGHBOURS, 1).expand(e, n * NEIGHBOURS, 4)
        near = own.gather(1, index).reshape(e, n, 4 * NEIGHBOURS)
        which = self.nearest_resource().unsqueeze(-1).expand(e, n, 2)
        resource = self.resources.to(f32).gather(1, which)
        return torch.cat((own, near, resource), dim=-1)

    def state(self) -> torch.Tensor:
        """Every agent's ``x, y, size``, every resource's ``x, y`` and the elapsed fraction
        ``t / horizon``: ``(num_envs, 3 num_agents + 2 num_resources + 1)``."""
        e = self.num_envs
        parts = (
            self.position.reshape(e, -1),
            self.size,
            self.resources.reshape(e, -1),
            (self.t.to(torch.float64) / self._horizon).unsqueeze(-1),
        )
        return torch.cat(parts, dim=-1).to(torch.float32)

    # ---------------------------------------------------------------- episode record
    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"efficiency": self.items.sum(dim=1)}

    def _episode_outcome(self, done: torch.Tensor) -> torch.Tensor:
        return self.items.to(torch.float32)

    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        """``random`` or ``greedy`` (:class:`MatthewGreedy`)."""
        if name == "greedy":
            return MatthewGreedy(self)
        return super().baseline(name, seed=seed)

    def render_text(self, copy: int = 0) -> str:
        items = self.items[copy]
        return (
            f"matthew: copy {copy}, step {int(self._t_host[copy])}/{self._horizon}, "
            f"{self.n_agents} agents, items {int(items.sum())} "
            f"(most {int(items.max())}, least {int(items.min())}), "
            f"largest size {float(self.size[copy].max()):.3f}"
        )


class MatthewGreedy:
    """Every agent steps along the axis of the larger gap towards its nearest resource (read
    from its observation: own ``x, y`` at columns 0-1, the resource at the last two)."""

    def __init__(self, env: MatthewEnv) -> None:
        self.env = env

    def reset(self) -> None:
        """No memory."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        dx = obs[..., -2] - obs[..., 0]
        dy = obs[..., -1] - obs[..., 1]
        along_x = torch.where(dx > 0, 2, 1)
        along_y = torch.where(dy > 0, 4, 3)
        return torch.where(dx.abs() >= dy.abs(), along_x, along_y).to(torch.int64)
