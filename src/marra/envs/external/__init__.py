"""Adapters of external multi-agent packages: ``lbf`` (lbforaging) and ``rware`` (rware).

:class:`ExternalEnv` (:mod:`marra.envs.external.adapter`) is the one adapter;
:class:`LBFEnv` and :class:`RwareEnv` fix its package. ``PRESETS`` holds the DyPS (paper 002,
Table 1) presets and :func:`episode_seed` the seed an episode of a copy gives its package
instance. Importing this package loads neither torch nor the packages (the worker processes
import its numpy-only modules).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ExternalEnv",
    "LBFEnv",
    "RwareEnv",
    "NearestFoodBaseline",
    "PRESETS",
    "LBF_2_KWARGS",
    "episode_seed",
]

_LAZY = {
    "ExternalEnv": "marra.envs.external.adapter",
    "LBFEnv": "marra.envs.external.adapter",
    "RwareEnv": "marra.envs.external.adapter",
    "NearestFoodBaseline": "marra.envs.external.adapter",
    "PRESETS": "marra.envs.external._packages",
    "LBF_2_KWARGS": "marra.envs.external._packages",
    "episode_seed": "marra.envs.external._packages",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'marra.envs.external' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
