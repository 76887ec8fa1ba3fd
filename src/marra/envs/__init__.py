"""Learning environments of marra.

- :class:`HospitalEnv` (``marra.envs.hospital``): the one batched implementation of the hospital
  dynamics, torch tensors ``(num_envs, n, ...)`` on any device.
- :class:`HospitalGymEnv` and :func:`hospital_parallel_env` (``marra.envs.views``): Gymnasium and
  PettingZoo views that wrap it.

Importing this package registers ``marra/Hospital-v0`` with Gymnasium (once) and nothing else:
torch, the environment and the views load on first use, so ``import marra.envs`` stays fast::

    import gymnasium, marra.envs
    env = gymnasium.make("marra/Hospital-v0", n_hospitals=10, scenario="shifting+shock")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gymnasium.envs.registration import register, registry

if TYPE_CHECKING:
    from marra.envs.hospital import (
        CONTEXT_FEATURES,
        LOCAL_FEATURES,
        HospitalEnv,
        RewardWeights,
        clear_transfers,
    )
    from marra.envs.views import HospitalGymEnv, HospitalParallelEnv, hospital_parallel_env

__all__ = [
    "HOSPITAL_ENV_ID",
    "HospitalEnv",
    "RewardWeights",
    "clear_transfers",
    "LOCAL_FEATURES",
    "CONTEXT_FEATURES",
    "HospitalGymEnv",
    "HospitalParallelEnv",
    "hospital_parallel_env",
]

#: Gymnasium id of the hospital environment (kwargs of ``gymnasium.make`` go to
#: :class:`HospitalGymEnv`: ``n_hospitals``, ``scenario``, ``transfer_budget``, ``integer``,
#: ``horizon``, ...).
HOSPITAL_ENV_ID = "marra/Hospital-v0"

_LAZY = {
    "HospitalEnv": "marra.envs.hospital",
    "RewardWeights": "marra.envs.hospital",
    "clear_transfers": "marra.envs.hospital",
    "LOCAL_FEATURES": "marra.envs.hospital",
    "CONTEXT_FEATURES": "marra.envs.hospital",
    "HospitalGymEnv": "marra.envs.views",
    "HospitalParallelEnv": "marra.envs.views",
    "hospital_parallel_env": "marra.envs.views",
}

if HOSPITAL_ENV_ID not in registry:
    register(id=HOSPITAL_ENV_ID, entry_point="marra.envs.views:HospitalGymEnv")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'marra.envs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
