"""A saved learned policy as a simulation method, on any network size.

The policy acts through the batched environment (:class:`marra.envs.hospital.HospitalEnv`), the
one implementation of the clearing rule, on exactly the scenario draw the classical methods see:
the episode's :class:`~marra.hospital.scenarios.Realisation` is handed to the environment unchanged.
Metrics are computed by :func:`marra.metrics.report` as for every other method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from marra.experiments.simulate import network_at
from marra.hospital.network import HospitalNetwork
from marra.hospital.scenarios import Realisation, Scenario
from marra.metrics import report

#: File name of the policy shipped as package data. It is the shifting-targets agent of the full
#: ``marra reproduce paper000`` run, i.e. exactly what this command makes (same seed, same result):
#: ``marra train --scenario shifting --hospitals 150 --budget 150 --steps 400000 --seed 1``
#: (then copy ``runs/train/policy.pt`` to ``src/marra/data/default_policy.pt``).
DEFAULT_POLICY_FILE = "default_policy.pt"


def default_policy_path() -> Path | None:
    """The pre-trained policy shipped with marra, or None when it is absent."""
    ref = resources.files("marra").joinpath(f"data/{DEFAULT_POLICY_FILE}")
    return Path(str(ref)) if ref.is_file() else None


class FixedRealisation(Scenario):
    """A scenario that replays one given realisation, whatever the seed.

    It lets the environment run exactly the events a classical method saw.
    """

    kind = "fixed"

    def __init__(self, realisation: Realisation) -> None:
        self.realisation = realisation
        self.horizon = realisation.horizon

    def realise(self, network: HospitalNetwork, seed: Any) -> Realisation:
        return self.realisation

    def modify(self, network: HospitalNetwork, realisation: Realisation, rng: Any) -> Realisation:
        return self.realisation


@dataclass
class PolicyMethod:
    """Play episodes with a learned policy (deterministic actions: the Gaussian mean).

    ``transfer_budget`` None uses the budget the policy was trained with (recorded in the file).
    """

    policy: Any
    transfer_budget: float | None = None
    integer: bool = True
    label: str = "ppo"

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        transfer_budget: float | None = None,
        integer: bool = True,
        label: str | None = None,
    ) -> PolicyMethod:
        """Load ``path`` (a ``policy.pt``); raises ``PolicyFileError`` naming the file."""
        from marra.rl.policy import load_policy

        policy = load_policy(path)
        if label is None:
            label = "ppo" if Path(path).name == "policy.pt" else f"ppo ({Path(path).stem})"
        return cls(policy, transfer_budget=transfer_budget, integer=integer, label=label)

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.policy.env_settings
        return dict(settings) if isinstance(settings, dict) else {}

    def budget_for(self, network: HospitalNetwork) -> float | None:
        """The per-step budget this method plays under."""
        if self.transfer_budget is not None:
            return self.transfer_budget
        trained = self.settings.get("transfer_budget")
        return None if trained is None else float(trained)

    def run_episode(
        self, network: HospitalNetwork, realisation: Realisation, steps: int, *, tau: float = 0.1
    ) -> dict[str, np.ndarray]:
        import torch

        from marra.envs.hospital import HospitalEnv

        if steps > realisation.horizon:
            raise ValueError(f"steps: {steps} exceeds the scenario horizon {realisation.horizon}")
        env = HospitalEnv(
            network=network,
            num_envs=1,
            scenario=FixedRealisation(realisation),
            transfer_budget=self.budget_for(network),
            integer=self.integer,
            max_action=self.settings.get("max_action"),
        )
        obs = env.reset(seed=0)
        series: dict[str, list[float]] = {}
        with torch.inference_mode():
            for _ in range(steps):
                state = network_at(
                    network,
                    env.current[0].cpu().numpy().copy(),
                    env.target[0].cpu().numpy().copy(),
                    env.minimum[0].cpu().numpy().copy(),
                )
                started = time.perf_counter()
                action = self.policy.act(obs, deterministic=True)
                obs, _, _, _, info = env.step(action)
                # y = c + net transfers (env.current already holds the next step's events)
                allocation = state.current + info["net_transfer"][0].cpu().numpy()
                elapsed = time.perf_counter() - started
                metrics = report(state, allocation, tau=tau)
                metrics["decision_seconds"] = elapsed
                metrics["total_staff"] = float(allocation.sum())
                for key, value in metrics.items():
                    series.setdefault(key, []).append(float(value))
        return {key: np.asarray(values) for key, values in series.items()}
