"""Two tiny cooperative games that tell value-factorisation learners apart (not registered:
pass the class to ``marra.rl.train(..., make_env=TwoStepGame)``).

- :class:`TwoStepGame`, the QMIX paper's two-step game (Rashid et al. 2018, section 6.1): agent
  0's first action picks the second state, 2A (every joint action pays 7) or 2B (payoff
  ``[[0, 1], [1, 8]]``); agent 1's first action does nothing; the episode ends after the second
  step. Both agents see the one-hot of the state, ``state()`` is the same one-hot. The optimum
  is 8 (B, then B/B). Under uniform exploration an independent learner values 2B at 4.5 (its
  partner plays at random) and a sum of per-agent utilities fits 2B's payoff at most 6.5, so
  both choose 2A (7); QMIX's monotonic mixing represents 2B and finds 8.
- :class:`MatrixGame`, one step of a two-agent matrix game, by default the WQMIX paper's
  (Rashid et al. 2020, Figure 1) ``[[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]``: under uniform
  data QMIX's least-squares projection into monotonic functions loses the 8 behind the -12
  penalties; a weighting towards better joint actions (CW-QMIX) keeps it.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import ActionSpec, EnvSpec, MultiAgentEnv

__all__ = ["TwoStepGame", "MatrixGame", "WQMIX_PAYOFF"]

#: the WQMIX paper's Figure 1 payoff
WQMIX_PAYOFF = ((8.0, -12.0, -12.0), (-12.0, 0.0, 0.0), (-12.0, 0.0, 0.0))


class TwoStepGame(MultiAgentEnv):
    """The QMIX paper's two-step game (see the module docstring); team reward, horizon 2."""

    PAYOFF = torch.tensor([[[7.0, 7.0], [7.0, 7.0]], [[0.0, 1.0], [1.0, 8.0]]])

    def __init__(
        self,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self._spec = EnvSpec(
            name="two-step", num_agents=2, agent_ids=("agent_0", "agent_1"), obs_dim=3,
            state_dim=3, action=ActionSpec.discrete(2), horizon=2, reward="team",
            obs_names=("first", "2A", "2B"),
        )  # fmt: skip
        self._payoff = self.PAYOFF.to(self.device)
        self.where = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        self.where = self.where.clone()
        self.where[torch.as_tensor(rows, device=self.device)] = 0

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        first = self.where == 0
        game = (self.where - 1).clamp_min(0)
        paid = self._payoff[game, actions[:, 0], actions[:, 1]]
        reward = torch.where(first, 0.0, paid)
        self.where = torch.where(first, 1 + actions[:, 0], self.where)
        return reward.unsqueeze(-1).expand(-1, 2).contiguous(), ~first, {}

    def _observe(self) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(self.where, 3).to(torch.float32)
        return onehot.unsqueeze(1).expand(-1, 2, 3).contiguous()

    def state(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.where, 3).to(torch.float32)


class MatrixGame(MultiAgentEnv):
    """One step of a two-agent cooperative matrix game (see the module docstring).

    Args:
        payoff: the ``(n, n)`` team payoff (default the WQMIX paper's Figure 1).
    """

    def __init__(
        self,
        payoff: tuple[tuple[float, ...], ...] = WQMIX_PAYOFF,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self._payoff = torch.as_tensor(payoff, dtype=torch.float32, device=self.device)
        n = int(self._payoff.shape[0])
        self._spec = EnvSpec(
            name="matrix-game", num_agents=2, agent_ids=("agent_0", "agent_1"), obs_dim=1,
            state_dim=1, action=ActionSpec.discrete(n), horizon=1, reward="team",
        )  # fmt: skip

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        pass

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        reward = self._payoff[actions[:, 0], actions[:, 1]]
        done = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return reward.unsqueeze(-1).expand(-1, 2).contiguous(), done, {}

    def _observe(self) -> torch.Tensor:
        return torch.ones((self.num_envs, 2, 1), device=self.device)

    def state(self) -> torch.Tensor:
        return torch.ones((self.num_envs, 1), device=self.device)
