"""Learning environments of marra, on one batched multi-agent contract.

- The contract (:mod:`marra.envs.base`): :class:`MultiAgentEnv`, :class:`EnvSpec`,
  :class:`ActionSpec`, :class:`Step`; the checker :func:`check_env`.
- The registry: :func:`make`, :func:`registered`, :func:`register` (a user's own class gets every
  view, learner and command), :func:`env_options`.
- Generic views of any registered environment: :func:`gym_env` (Gymnasium, one copy),
  :func:`vector_env` (Gymnasium vector env over the batched copies), :func:`sb3_vec_env`
  (Stable-Baselines3 VecEnv), :func:`parallel_env` (PettingZoo), :func:`torchrl_env` (TorchRL,
  extra ``marra[torchrl]``). Every name also has the Gymnasium id ``marra/<Name>-v0``.
- Environments: ``hospital`` (:class:`HospitalEnv`, paper 000) and ``roles`` (:class:`RolesEnv`,
  a sanity check for parameter sharing); ``marra envs`` lists them all with their specs.

Importing this package registers the names and the Gymnasium ids and nothing else: torch, the
environments and the views load on first use, so ``import marra.envs`` stays fast::

    import marra.envs
    env = marra.envs.make("roles", num_envs=64, seed=0, num_agents=8)
    obs = env.reset()                       # (64, 8, 1)
    step = env.step(env.baseline("random").act(obs))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from marra.envs.registry import (
    env_class,
    env_options,
    gym_id,
    make,
    parse_option,
    register,
    registered,
)

if TYPE_CHECKING:
    from marra.envs.base import ActionSpec, EnvError, EnvSpec, MultiAgentEnv, Step
    from marra.envs.checker import ContractError, check_env
    from marra.envs.hospital import (
        CONTEXT_FEATURES,
        LOCAL_FEATURES,
        HospitalEnv,
        RewardWeights,
        clear_transfers,
    )
    from marra.envs.roles import RolesEnv
    from marra.envs.torchrl_env import torchrl_env
    from marra.envs.views import (
        GymView,
        HospitalGymEnv,
        HospitalParallelEnv,
        ParallelView,
        VectorView,
        gym_env,
        hospital_parallel_env,
        parallel_env,
        sb3_vec_env,
        vector_env,
    )

__all__ = [
    "HOSPITAL_ENV_ID",
    "MultiAgentEnv",
    "EnvSpec",
    "ActionSpec",
    "Step",
    "EnvError",
    "check_env",
    "ContractError",
    "make",
    "register",
    "registered",
    "env_class",
    "env_options",
    "parse_option",
    "gym_id",
    "gym_env",
    "vector_env",
    "sb3_vec_env",
    "parallel_env",
    "torchrl_env",
    "GymView",
    "VectorView",
    "ParallelView",
    "HospitalEnv",
    "RolesEnv",
    "RewardWeights",
    "clear_transfers",
    "LOCAL_FEATURES",
    "CONTEXT_FEATURES",
    "HospitalGymEnv",
    "HospitalParallelEnv",
    "hospital_parallel_env",
]

#: Gymnasium id of the hospital environment (``gymnasium.make`` kwargs go to
#: :class:`HospitalGymEnv`; defaults as ``marra train``: shifting targets, a budget of one staff
#: per hospital per step).
HOSPITAL_ENV_ID = "marra/Hospital-v0"

_LAZY = {
    "MultiAgentEnv": "marra.envs.base",
    "EnvSpec": "marra.envs.base",
    "ActionSpec": "marra.envs.base",
    "Step": "marra.envs.base",
    "EnvError": "marra.envs.base",
    "check_env": "marra.envs.checker",
    "ContractError": "marra.envs.checker",
    "HospitalEnv": "marra.envs.hospital",
    "RewardWeights": "marra.envs.hospital",
    "clear_transfers": "marra.envs.hospital",
    "LOCAL_FEATURES": "marra.envs.hospital",
    "CONTEXT_FEATURES": "marra.envs.hospital",
    "RolesEnv": "marra.envs.roles",
    "torchrl_env": "marra.envs.torchrl_env",
    "GymView": "marra.envs.views",
    "VectorView": "marra.envs.views",
    "ParallelView": "marra.envs.views",
    "gym_env": "marra.envs.views",
    "vector_env": "marra.envs.views",
    "sb3_vec_env": "marra.envs.views",
    "parallel_env": "marra.envs.views",
    "HospitalGymEnv": "marra.envs.views",
    "HospitalParallelEnv": "marra.envs.views",
    "hospital_parallel_env": "marra.envs.views",
}

# marra's own environments (lazy entries: nothing is imported until first use)
_BUILTIN = {
    "hospital": (
        "marra.envs.hospital:HospitalEnv",
        "hospital staff reallocation (paper 000): one agent per hospital, continuous transfers",
    ),
    "roles": (
        "marra.envs.roles:RolesEnv",
        "hidden roles, identical observations: a sanity check for parameter sharing",
    ),
    "voltage": (
        "marra.envs.voltage:VoltageEnv",
        "distribution-grid voltage control by PV inverters (MAPDN, pandapower networks)",
    ),
    "voltage-discrete": (
        "marra.envs.voltage_discrete:DiscreteVoltageEnv",
        "the voltage task with a discretised set of reactive-power set-points (value learners)",
    ),
    "vaccine": (
        "marra.envs.vaccine:VaccineEnv",
        "scarce vaccine doses in a metapopulation SEIR epidemic (paper 002 Medical, synthetic)",
    ),
    "matthew": ("marra.envs.matthew:MatthewEnv", "Matthew Effect game (FEN/SOTO, paper 003)"),
    "job-scheduling": ("marra.envs.job_scheduling:JobSchedulingEnv", "Job Scheduling (FEN/SOTO)"),
    "ride-hailing": ("marra.envs.ride_hailing:RideHailingEnv", "order dispatch in a city (DyPS)"),
    "lbf": ("marra.envs.external.adapter:LBFEnv", "Level-Based Foraging (lbforaging package)"),
    "rware": ("marra.envs.external.adapter:RwareEnv", "multi-robot warehouse (rware package)"),
}
for _name, (_entry, _description) in _BUILTIN.items():
    if _name not in registered():
        register(_name, _entry, description=_description)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'marra.envs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
