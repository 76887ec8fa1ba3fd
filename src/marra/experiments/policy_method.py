"""A saved learned policy as a simulation method, on any network size.

The policy acts through the batched environment (:class:`marra.envs.hospital.HospitalEnv`), the
one implementation of the clearing rule, on exactly the scenario draw the classical methods see:
the episode's :class:`~marra.hospital.scenarios.Realisation` is handed to the environment unchanged.
Metrics are computed by :func:`marra.metrics.report` as for every other method.
"""

from __future__ import annotations

import hashlib
import math
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


def policy_file_sha256(path: str | Path) -> str:
    """SHA-256 of a policy file's bytes: what identifies the policy in a run's records."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_label(path: str | Path) -> str:
    """``ppo (a)`` for ``runs/a/policy.pt`` (the run folder names the policy), ``ppo (best)``
    for ``runs/a/best.pt``, ``ppo`` for a ``policy.pt`` in the working folder."""
    path = Path(path)
    if path.name == "policy.pt":
        folder = path.resolve().parent.name if path.parent != Path(".") else ""
        return f"ppo ({folder})" if folder else "ppo"
    return f"ppo ({path.stem})"


@dataclass
class PolicyMethod:
    """Play episodes with a learned policy (deterministic actions: the Gaussian mean).

    ``transfer_budget`` None uses the budget the policy was trained with (recorded in the file);
    ``math.inf`` plays without a budget. Inference runs on one torch thread, as training does
    (the previous thread count is restored afterwards): on small networks torch's thread pool
    costs more than it gains (14 ms against 2 ms a step measured with two threads), and the
    decision time reported must be the policy's, not the pool's.
    """

    policy: Any
    transfer_budget: float | None = None
    integer: bool = True
    label: str = "ppo"
    path: str | None = None
    sha256: str | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        transfer_budget: float | None = None,
        integer: bool = True,
        label: str | None = None,
    ) -> PolicyMethod:
        """Load ``path`` (a ``policy.pt`` or a run folder holding one); raises
        ``PolicyFileError`` naming the file.

        Without ``label`` the label names the run folder and the effective budget, e.g.
        ``ppo (a, B=150)`` for ``runs/a/policy.pt`` played under 150 staff a step.
        """
        from marra.rl.policy import load_policy, resolve_policy_path

        path = resolve_policy_path(path)  # a run folder means its policy.pt
        policy = load_policy(path)
        method = cls(
            policy,
            transfer_budget=transfer_budget,
            integer=integer,
            path=str(path),
            sha256=policy_file_sha256(path),
        )
        if label is None:
            label = default_label(path)
            if method.budget is not None:
                cap = f"B={method.budget:g}"
                label = f"{label[:-1]}, {cap})" if label.endswith(")") else f"{label} ({cap})"
        method.label = label
        return method

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.policy.env_settings
        return dict(settings) if isinstance(settings, dict) else {}

    @property
    def trained_budget(self) -> float | None:
        """The per-step budget the policy was trained with (None: none recorded)."""
        trained = self.settings.get("transfer_budget")
        if trained is None or not math.isfinite(float(trained)):
            return None
        return float(trained)

    @property
    def budget(self) -> float | None:
        """The per-step budget this method plays under (None: no cap)."""
        if self.transfer_budget is None:
            return self.trained_budget
        if math.isinf(self.transfer_budget):
            return None
        return float(self.transfer_budget)

    def budget_for(self, network: HospitalNetwork) -> float | None:
        """The per-step budget this method plays under."""
        return self.budget

    def identity(self) -> dict[str, Any]:
        """What makes this method's results what they are (recorded next to its parts)."""
        return {
            "label": self.label,
            "kind": "policy",
            "policy_sha256": self.sha256,
            "policy_file": self.path,
            "budget": self.budget,
            "trained_budget": self.trained_budget,
            "integer": self.integer,
        }

    def run_episode(
        self, network: HospitalNetwork, realisation: Realisation, steps: int, *, tau: float = 0.1
    ) -> dict[str, np.ndarray]:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._play(network, realisation, steps, tau=tau)
        finally:
            torch.set_num_threads(threads)

    def _play(
        self, network: HospitalNetwork, realisation: Realisation, steps: int, *, tau: float
    ) -> dict[str, np.ndarray]:
        import torch

        from marra.envs.hospital import HospitalEnv

        if steps > realisation.horizon:
            raise ValueError(f"steps: {steps} exceeds the scenario horizon {realisation.horizon}")
        env = HospitalEnv(
            network=network,
            num_envs=1,
            scenario=FixedRealisation(realisation),
            transfer_budget=self.budget,
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
                # decision time: the policy's action and the clearing into transfers only
                started = time.perf_counter()
                action = self.policy.act(obs, deterministic=True)
                obs, _, _, _, info = env.step(action)
                net_transfer = info["net_transfer"][0].cpu().numpy()
                elapsed = time.perf_counter() - started
                # y = c + net transfers (env.current already holds the next step's events)
                allocation = state.current + net_transfer
                metrics = report(state, allocation, tau=tau)
                metrics["decision_seconds"] = elapsed
                metrics["total_staff"] = float(allocation.sum())
                for key, value in metrics.items():
                    series.setdefault(key, []).append(float(value))
        return {key: np.asarray(values) for key, values in series.items()}
