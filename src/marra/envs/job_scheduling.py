"""``job-scheduling``: the Job Scheduling game of FEN (Jiang and Lu 2019) and SOTO (Zimmer et al.
2021).

``num_agents`` agents (default 4) live on a 5 x 5 grid with one server cell; an agent standing
on the server is served (reward 1 for that step). Only one agent fits on a cell, so agents must
take turns for the utilization to stay high and the service to be shared. The rules follow the
authoritative code of the FEN/SOTO line of work, ``common/env_job.py`` of ``matthieu637/DFRL``
(resource type ``all``, no input normalisation: learners normalise), step by step:

- coordinates: cells are ``(x, y)`` with ``x, y`` in ``1..5`` (0 and 6 are walls, as in the
  original's padded array); the server is uniform in ``2..4`` x ``2..4`` (the inner 3 x 3) and
  fixed for the episode; agents start on distinct cells, uniform over the 25 (the original's
  rejection sampling gives the same distribution);
- actions (5, discrete): 0 stay, 1 ``x - 1``, 2 ``x + 1``, 3 ``y - 1``, 4 ``y + 1``;
- blocking moves in agent order: agents move one after another, lowest index first. A move into
  a wall fails; a move into a cell that is occupied fails, where "occupied" means held by an
  agent at the start of the step OR claimed earlier in this step: a successful move claims its
  cell at once, but a vacated cell is freed only at the end of the step (so an agent can never
  follow another into the cell it leaves in the same step). A failed move leaves the agent
  where it was. Hence at most one agent per cell, always;
- reward: 1 for the agent on the server after the moves, 0 for the others;
- observation of agent ``i`` (13 values, float32): ``x, y``, the server offset ``sx - x,
  sy - y`` and the occupancy (1 / 0) of the 3 x 3 cells around it, its own included, in the
  order ``(x-1, y-1), (x-1, y), (x-1, y+1), (x, y-1), ... (x+1, y+1)``; walls read 0, as in the
  original;
- episodes last ``horizon`` steps (default 1,000 as the original); they never terminate early.

"Blocking moves in agent order" is a sequential rule: it is batched over copies with a Python
loop over the (small, fixed) agent index only; nothing loops over copies. After reset the game
draws nothing, so given the start, the trajectory is a pure function of the actions.

Metric ``utilization``: the fraction of the episode's steps in which the server was occupied.
Outcome (``info["episode_outcome"]``): each agent's utility, the fraction of the episode's steps
it spent on the server (its return divided by the episode length; the original's ``su /
max_steps`` and paper 003's "utility" of Table 2), so the utilization is the sum of the outcomes
(paper 003, Eq. 1).

Baselines: ``random`` and ``greedy`` (every agent heads for the server: x first, then y; what
the original's two-action variant does for its "go" action).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import ActionSpec, Baseline, EnvSpec, MultiAgentEnv, check_int
from .rng import CounterRNG, copy_keys

__all__ = ["JobSchedulingEnv", "JobGreedy", "OBS_NAMES", "GRID"]

#: the grid is GRID x GRID cells with coordinates 1..GRID; 0 and GRID + 1 are walls
GRID = 5
_SIDE = GRID + 2  # padded side of the occupancy array
#: the server is drawn in SERVER_LOW..SERVER_HIGH on both axes (the original's randint(2, 5))
SERVER_LOW, SERVER_HIGH = 2, 4
#: (dx, dy) of the five actions
MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
_OFFSETS = tuple((i, j) for i in (-1, 0, 1) for j in (-1, 0, 1))

OBS_NAMES = ("x", "y", "server_dx", "server_dy") + tuple(
    f"occupied[{i:+d},{j:+d}]" for i, j in _OFFSETS
)

_STREAM_CELLS, _STREAM_SERVER = 101, 102


class JobSchedulingEnv(MultiAgentEnv):
    """Agents share one server cell on a 5 x 5 grid (see the module docstring).

    Args:
        num_agents: agents per copy (default 4; at most 25, one per cell).
        horizon: steps per episode (default 1000, as the original).
    """

    def __init__(
        self,
        num_agents: int = 4,
        horizon: int = 1000,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self.n_agents = check_int("num_agents", num_agents, maximum=GRID * GRID)
        self._horizon = check_int("horizon", horizon, maximum=10_000_000)
        n = self.n_agents
        self._spec = EnvSpec(
            name="job-scheduling",
            num_agents=n,
            agent_ids=tuple(f"agent_{i}" for i in range(n)),
            obs_dim=len(OBS_NAMES),
            state_dim=2 * n + 3,
            action=ActionSpec.discrete(len(MOVES)),
            horizon=self._horizon,
            reward="agent",
            metrics=("utilization",),
            baselines=("random", "greedy"),
            obs_names=OBS_NAMES,
            outcome="each agent's utility: the fraction of steps it spent on the server",
            any_num_agents=True,
        )
        e, dev = self.num_envs, self.device
        self._rng = CounterRNG(e, dev)
        #: agent cells (num_envs, num_agents, 2), int64 in 1..5
        self.position = torch.ones((e, n, 2), dtype=torch.int64, device=dev)
        #: the server cell (num_envs, 2), int64 in 2..4
        self.server = torch.full((e, 2), 3, dtype=torch.int64, device=dev)
        #: steps of the current episode in which the server was occupied (num_envs,)
        self.busy = torch.zeros(e, dtype=torch.float64, device=dev)
        self._moves = torch.tensor(MOVES, dtype=torch.int64, device=dev)  # (5, 2)
        self._offsets = torch.tensor(_OFFSETS, dtype=torch.int64, device=dev)  # (9, 2)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    # ---------------------------------------------------------------- dynamics
    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        self._rng.set_keys(rows, copy_keys(seeds))
        reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        reset[torch.as_tensor(rows, device=self.device)] = True
        # distinct start cells: the first num_agents of a uniformly random order of the 25
        keys = self._rng.uniform((GRID * GRID,), 0, stream=_STREAM_CELLS)
        cells = torch.sort(keys, dim=1, stable=True).indices[:, : self.n_agents]
        position = torch.stack((1 + cells // GRID, 1 + cells % GRID), dim=-1)
        span = SERVER_HIGH - SERVER_LOW + 1
        draw = self._rng.uniform((2,), 0, stream=_STREAM_SERVER)
        server = SERVER_LOW + (draw * span).floor().to(torch.int64).clamp_max(span - 1)
        self.position = torch.where(reset.view(-1, 1, 1), position, self.position)
        self.server = torch.where(reset.view(-1, 1), server, self.server)
        self.busy = torch.where(reset, 0.0, self.busy)

    def occupancy(self) -> torch.Tensor:
        """Occupied cells ``(num_envs, 7, 7)`` bool of the padded grid (walls at 0 and 6)."""
        flat = self._flat(self.position)  # (E, N)
        grid = torch.zeros((self.num_envs, _SIDE * _SIDE), dtype=torch.bool, device=self.device)
        grid.scatter_(1, flat, True)
        return grid.view(self.num_envs, _SIDE, _SIDE)

    @staticmethod
    def _flat(cells: torch.Tensor) -> torch.Tensor:
        return cells[..., 0] * _SIDE + cells[..., 1]

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        # every agent's target cell at once; only the claims are sequential
        there = self.position + self._moves[actions]  # (E, N, 2), 0..6 on both axes
        wants = (actions != 0) & ((there >= 1) & (there <= GRID)).all(dim=-1)  # not a wall
        target = self._flat(there)  # (E, N) cells of the padded array
        claimed = self.occupancy().view(self.num_envs, -1).clone()  # held or claimed
        go = []
        for i in range(self.n_agents):  # the rule is sequential in the agent index
            cell = target[:, i : i + 1]
            taken = claimed.gather(1, cell)
            moves = wants[:, i : i + 1] & ~taken
            claimed.scatter_(1, cell, taken | moves)  # claimed at once; nothing is freed
            go.append(moves)
        self.position = torch.where(torch.cat(go, dim=1).unsqueeze(-1), there, self.position)
        on_server = (self.position == self.server.unsqueeze(1)).all(dim=-1)  # (E, N)
        self.busy = self.busy + on_server.any(dim=1).to(torch.float64)
        reward = on_server.to(torch.float32)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return reward, terminated, {}

    # ---------------------------------------------------------------- observations
    def _observe(self) -> torch.Tensor:
        e, n = self.num_envs, self.n_agents
        grid = self.occupancy().view(e, -1)
        around = self.position.unsqueeze(2) + self._offsets  # (E, N, 9, 2)
        seen = grid.gather(1, self._flat(around).view(e, -1)).view(e, n, len(_OFFSETS))
        offset = self.server.unsqueeze(1) - self.position
        obs = torch.cat((self.position, offset, seen.to(torch.int64)), dim=-1)
        return obs.to(torch.float32)

    def state(self) -> torch.Tensor:
        """Every agent's cell, the server's cell and the elapsed fraction ``t / horizon``:
        ``(num_envs, 2 num_agents + 3)``."""
        e = self.num_envs
        parts = (
            self.position.reshape(e, -1).to(torch.float64),
            self.server.to(torch.float64),
            (self.t.to(torch.float64) / self._horizon).unsqueeze(-1),
        )
        return torch.cat(parts, dim=-1).to(torch.float32)

    # ---------------------------------------------------------------- episode record
    def _steps(self) -> torch.Tensor:
        # called from step() after the clock advanced: t is the episode length so far
        return self.t.to(torch.float64).clamp_min(1.0)

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"utilization": self.busy / self._steps()}

    def _episode_outcome(self, done: torch.Tensor) -> torch.Tensor:
        assert self._returns is not None
        return (self._returns / self._steps().unsqueeze(1)).to(torch.float32)

    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        """``random`` or ``greedy`` (:class:`JobGreedy`)."""
        if name == "greedy":
            return JobGreedy(self)
        return super().baseline(name, seed=seed)

    def render_text(self, copy: int = 0) -> str:
        rows = []
        cells = {tuple(p): i for i, p in enumerate(self.position[copy].tolist())}
        sx, sy = self.server[copy].tolist()
        for x in range(1, GRID + 1):
            line = ""
            for y in range(1, GRID + 1):
                if (x, y) in cells:
                    line += str(cells[(x, y)] % 10)
                else:
                    line += "S" if (x, y) == (sx, sy) else "."
            rows.append(line)
        steps = int(self._t_host[copy])
        return (
            f"job-scheduling: copy {copy}, step {steps}/{self._horizon}, server busy "
            f"{int(self.busy[copy])} steps | " + " / ".join(rows)
        )


class JobGreedy:
    """Every agent heads for the server, along x first, then y (read from its observation's
    server offset); the one standing on it stays."""

    def __init__(self, env: JobSchedulingEnv) -> None:
        self.env = env

    def reset(self) -> None:
        """No memory."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        dx, dy = obs[..., 2], obs[..., 3]
        action = torch.where(dy > 0, 4, torch.where(dy < 0, 3, 0))
        action = torch.where(dx > 0, 2, torch.where(dx < 0, 1, action))
        return action.to(torch.int64)
