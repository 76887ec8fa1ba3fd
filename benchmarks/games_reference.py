"""One-copy numpy references of the Matthew Effect and Job Scheduling games, the peers of
``benchmarks/games.py``.

They follow the structure of the original code (``common/env_matthew.py`` and
``common/env_job.py`` of ``matthieu637/DFRL``, read to learn the rules; this is our own code):
one copy, Python lists of numpy values, a Python loop over agents for the moves, over resources
and agents for the catches, and an observation rebuilt every step with a numpy distance matrix.
That is the cost a user of the original pays per copy and step; the batched environments in
:mod:`marra.envs.matthew` and :mod:`marra.envs.job_scheduling` do the same work for thousands of
copies in tensor operations.

Both accept the start of an episode and (Matthew) the respawn points from outside, so that
``benchmarks/games.py`` can check, before timing anything, that they step exactly like the
batched environments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["MatthewReference", "JobReference"]


class MatthewReference:
    """The Matthew Effect game for one copy (10 agents, 3 resources by default)."""

    def __init__(
        self, n_agent: int = 10, n_resource: int = 3, rng: np.random.Generator | None = None
    ) -> None:
        self.n_agent = n_agent
        self.n_resource = n_resource
        self.n_neighbors = 3
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def reset(
        self,
        ant: np.ndarray | None = None,
        size: np.ndarray | None = None,
        resource: np.ndarray | None = None,
    ) -> list[list[float]]:
        rand = self.rng.random
        self.resource = (
            [np.array(p, dtype=float) for p in resource]
            if resource is not None
            else [rand(2) for _ in range(self.n_resource)]
        )
        self.ant = (
            [np.array(p, dtype=float) for p in ant]
            if ant is not None
            else [rand(2) for _ in range(self.n_agent)]
        )
        self.size = (
            [float(s) for s in size]
            if size is not None
            else [0.01 + rand() * 0.04 for _ in range(self.n_agent)]
        )
        self.speed = [0.01 + s for s in self.size]
        self.items = [0] * self.n_agent
        return self.obs()

    def obs(self) -> list[list[float]]:
        ant = np.array(self.ant)
        diff = ant[:, None, :] - ant[None, :, :]
        distances = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]
        np.fill_diagonal(distances, np.inf)
        nearest = np.argsort(distances, axis=1, kind="stable")[:, : self.n_neighbors]
        state = []
        for i in range(self.n_agent):
            h = [self.ant[i][0], self.ant[i][1], self.size[i], self.speed[i]]
            for j in nearest[i]:
                h += [self.ant[j][0], self.ant[j][1], self.size[j], self.speed[j]]
            best, k_best = 10.0, 0
            for k in range(self.n_resource):
                dx = self.resource[k][0] - self.ant[i][0]
                dy = self.resource[k][1] - self.ant[i][1]
                d = dx * dx + dy * dy
                if d < best:
                    best, k_best = d, k
            h += [self.resource[k_best][0], self.resource[k_best][1]]
            state.append(h)
        return state

    def step(
        self,
        action: list[int],
        respawn: Callable[[int], np.ndarray] | None = None,
    ) -> tuple[list[list[float]], list[float]]:
        reward = [0.0] * self.n_agent
        for i in range(self.n_agent):
            a, ant = action[i], self.ant[i]
            if a == 1:
                ant[0] = max(ant[0] - self.speed[i], 0.0)
            elif a == 2:
                ant[0] = min(ant[0] + self.speed[i], 1.0)
            elif a == 3:
                ant[1] = max(ant[1] - self.speed[i], 0.0)
            elif a == 4:
                ant[1] = min(ant[1] + self.speed[i], 1.0)
        for k in range(self.n_resource):
            for j in range(self.n_agent):
                dx = self.resource[k][0] - self.ant[j][0]
                dy = self.resource[k][1] - self.ant[j][1]
                if dx * dx + dy * dy < self.size[j] * self.size[j]:
                    reward[j] = 1.0
                    self.items[j] += 1
                    self.resource[k] = (
                        respawn(k) if respawn is not None else self.rng.random(2)
                    ).astype(float)
                    self.size[j] = min(self.size[j] + 0.005, 0.15)
                    self.speed[j] = 0.01 + self.size[j]
                    break
        return self.obs(), reward


class JobReference:
    """The Job Scheduling game for one copy (4 agents on a 5 x 5 grid, one server)."""

    def __init__(self, n_agent: int = 4, rng: np.random.Generator | None = None) -> None:
        self.n_agent = n_agent
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def reset(
        self, ant: np.ndarray | None = None, target: np.ndarray | None = None
    ) -> list[list[float]]:
        self.env = np.zeros((8, 8))
        self.target = (
            [int(v) for v in target] if target is not None else list(self.rng.integers(2, 5, 2))
        )
        if ant is not None:
            self.ant = [[int(v) for v in p] for p in ant]
        else:
            self.ant = []
            for _ in range(self.n_agent):
                candidate = list(self.rng.integers(1, 6, 2))
                while candidate in self.ant:
                    candidate = list(self.rng.integers(1, 6, 2))
                self.ant.append(candidate)
        for x, y in self.ant:
            self.env[x][y] = 1
        return self.obs()

    def obs(self) -> list[list[float]]:
        h = []
        for x, y in self.ant:
            state = [x, y, self.target[0] - x, self.target[1] - y]
            for i in (-1, 0, 1):
                for j in (-1, 0, 1):
                    state.append(self.env[x + i][y + j])
            h.append(state)
        return h

    def step(self, action: list[int]) -> tuple[list[list[float]], list[float]]:
        next_ant = []
        for i in range(self.n_agent):
            x, y = self.ant[i]
            a = action[i]
            nx, ny = x, y
            if a == 1:
                nx = x - 1
            elif a == 2:
                nx = x + 1
            elif a == 3:
                ny = y - 1
            elif a == 4:
                ny = y + 1
            if a != 0 and 0 < nx < 6 and 0 < ny < 6 and self.env[nx][ny] != 1:
                self.env[nx][ny] = 1  # claimed at once
                next_ant.append([nx, ny])
            else:
                next_ant.append([x, y])
        self.ant = next_ant
        self.env *= 0  # vacated cells are freed only now
        reward = [0.0] * self.n_agent
        for i, (x, y) in enumerate(self.ant):
            self.env[x][y] = 1
            if x == self.target[0] and y == self.target[1]:
                reward[i] = 1.0
        return self.obs(), reward
