"""Learners: the PPO core (MAPPO with a shared actor), its networks, checkpoints and policy files.

Public API:

- :class:`PPOConfig`: every hyperparameter, documented.
- :func:`train`: train on the batched environment, write ``policy.pt``, ``checkpoint.pt`` and
  ``train_log.csv``; :class:`TrainResult`; :class:`TrainingError`.
- :func:`compute_gae`, :func:`collect_rollout`, :func:`ppo_update`: the pieces of PPO.
- :func:`save_policy`, :func:`load_policy`, :class:`LearnedPolicy`, :class:`PolicyFileError`.
- :func:`evaluate_policy`: one seeded episode of every environment copy under a policy.
"""

from .checkpoint import CheckpointError, load_checkpoint
from .config import PPOConfig
from .networks import ActorCritic, CentralCritic, LocalCritic, SharedActor
from .policy import POLICY_FORMAT_VERSION, LearnedPolicy, PolicyFileError, load_policy, save_policy
from .ppo import (
    Rollout,
    TrainingError,
    TrainResult,
    collect_rollout,
    compute_gae,
    evaluate_policy,
    ppo_update,
    train,
)

__all__ = [
    "PPOConfig",
    "train",
    "TrainResult",
    "TrainingError",
    "Rollout",
    "compute_gae",
    "collect_rollout",
    "ppo_update",
    "evaluate_policy",
    "ActorCritic",
    "SharedActor",
    "CentralCritic",
    "LocalCritic",
    "save_policy",
    "load_policy",
    "LearnedPolicy",
    "PolicyFileError",
    "POLICY_FORMAT_VERSION",
    "CheckpointError",
    "load_checkpoint",
]
