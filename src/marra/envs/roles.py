"""``roles``: a sanity environment for parameter-sharing schemes.

Each of ``num_agents`` agents has a hidden role in ``0..num_roles-1`` (assigned round-robin:
agent ``i`` has role ``i % num_roles``). Every agent sees the SAME observation, a noisy step
counter, so nothing in the observation tells agents apart. Each picks one of ``num_roles``
discrete actions and is rewarded 1 when the action equals its role, else 0.

A fully shared policy without agent identities cannot beat ``1 / num_roles`` (it must give all
agents the same action distribution); separate parameters per agent, or a shared network that
sees the agent's identity, reach 1. The same holds for grouped sharing with one group per role,
which is what SePS and DyPS should discover.

Metric ``accuracy``: the mean reward per agent-step of the episode. Outcome: each agent's return.
Baseline ``random``.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import ActionSpec, EnvSpec, MultiAgentEnv, check_int, check_number
from .rng import CounterRNG, copy_keys

__all__ = ["RolesEnv"]


class RolesEnv(MultiAgentEnv):
    """Agents with hidden roles and identical observations (see the module docstring).

    Args:
        num_agents: agents per copy (default 8).
        num_roles: hidden roles, assigned round-robin (default 4); also the number of actions.
        horizon: steps per episode (default 10).
        noise: standard deviation of the noise on the observed step counter (default 0.1).
    """

    def __init__(
        self,
        num_agents: int = 8,
        num_roles: int = 4,
        horizon: int = 10,
        noise: float = 0.1,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self.n_agents = check_int("num_agents", num_agents, maximum=10_000_000)
        self.num_roles = check_int("num_roles", num_roles, maximum=100_000)
        self._horizon = check_int("horizon", horizon, maximum=10_000_000)
        self.noise = check_number("noise", noise, minimum=0.0)
        self.roles = torch.arange(self.n_agents, device=self.device) % self.num_roles
        self._spec = EnvSpec(
            name="roles",
            num_agents=self.n_agents,
            agent_ids=tuple(f"agent_{i}" for i in range(self.n_agents)),
            obs_dim=1,
            state_dim=1,
            action=ActionSpec.discrete(self.num_roles),
            horizon=self._horizon,
            reward="agent",
            metrics=("accuracy",),
            baselines=("random",),
            obs_names=("noisy_step",),
            any_num_agents=True,
        )
        self._rng = CounterRNG(self.num_envs, self.device)
        self._correct = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        self._rng.set_keys(rows, copy_keys(seeds))
        index = torch.as_tensor(rows, device=self.device)
        if self._correct.is_inference() and not torch.is_inference_mode_enabled():
            self._correct = self._correct.clone()
        self._correct[index] = 0.0

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        reward = (actions == self.roles).to(torch.float32)  # (E, N)
        self._correct = self._correct + reward.to(torch.float64).mean(dim=1)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return reward, terminated, {}

    def _observe(self) -> torch.Tensor:
        step = self.t.to(torch.float64) / self._horizon
        noise = self._rng.normal((), self.t, stream=0) * self.noise
        value = (step + noise).to(torch.float32)
        return value.view(-1, 1, 1).expand(self.num_envs, self.n_agents, 1).contiguous()

    def state(self) -> torch.Tensor:
        return (self.t.to(torch.float32) / self._horizon).unsqueeze(-1)

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"accuracy": self._correct / self.t.to(torch.float64).clamp_min(1.0)}

    def render_text(self, copy: int = 0) -> str:
        return (
            f"roles: copy {copy}, step {int(self._t_host[copy])}/{self._horizon}, "
            f"{self.n_agents} agents, {self.num_roles} roles"
        )
