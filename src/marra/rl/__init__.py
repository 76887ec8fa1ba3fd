"""Learners on the environment contract: the PPO family (IPPO, MAPPO), sharing schemes, one
training loop, checkpoints and policy files.

Public API:

- :class:`PPOConfig` (every hyperparameter, documented; ``algo`` and ``sharing`` choose the
  learner), :data:`ALGORITHMS` (capability flags), :func:`check_compatible`.
- :func:`train` (:mod:`marra.rl.loop`): train on any registered environment, write
  ``policy.pt``, ``checkpoint.pt``, ``train_log.csv``; :class:`TrainResult`;
  :class:`TrainingError`.
- :func:`compute_gae`, :func:`collect_rollout` (:mod:`marra.rl.rollout`), :func:`ppo_update`,
  :func:`build_model` (:mod:`marra.rl.ppo`): the pieces of PPO.
- Sharing schemes (:mod:`marra.rl.sharing`): ``none``, ``full``, ``id``, and ``psa``, ``seps``,
  ``dyps`` (:mod:`marra.rl.psa`, :mod:`marra.rl.seps`, :mod:`marra.rl.dyps`);
  :func:`make_sharing`, :func:`register_sharing`.
- :func:`save_policy`, :func:`load_policy`, :class:`LearnedPolicy`, :class:`PolicyFileError`.
- :func:`evaluate_policy`: one seeded episode of every environment copy under a policy.
- Value-based learners (:mod:`marra.rl.qlearning`): :class:`QConfig` for ``iql``, ``vdn``,
  ``qmix``, ``wqmix``; the episode replay buffer :class:`EpisodeBuffer` and the
  :class:`ReplaySignals` hook (:mod:`marra.rl.replay`); :class:`MADDPGConfig` for
  ``maddpg`` (:mod:`marra.rl.maddpg`).
"""

from . import coma, dyps, fen, psa, seps, soto  # noqa: F401  (register learners, sharing)
from .algorithm import Algorithm, Constraint, PPOAlgorithm
from .checkpoint import CheckpointError, load_checkpoint
from .config import ALGORITHMS, PPOConfig
from .eld import ELD
from .evaluation import evaluate_policy
from .loop import MemoryEstimateError, RunExistsError, TrainResult, build_algorithm, train
from .maddpg import MADDPG, MADDPGConfig
from .networks import Actor, Critic, GroupedLinear, GroupedMLP, ObsNorm, RunningNorm, ValueNorm
from .policy import POLICY_FORMAT_VERSION, LearnedPolicy, PolicyFileError, load_policy, save_policy
from .ppo import (
    ActorCritic,
    CompatibilityError,
    TrainingError,
    build_agent,
    build_model,
    check_compatible,
    ppo_update,
)
from .qlearning import QConfig, QLearning, QModel
from .replay import EpisodeBuffer, ReplaySignals
from .rollout import Rollout, collect_rollout, compute_gae, iteration_seed
from .sharing import SHARING_SCHEMES, SharingScheme, make_sharing, register_sharing

__all__ = [
    "PPOConfig",
    "QConfig",
    "QLearning",
    "QModel",
    "MADDPGConfig",
    "MADDPG",
    "EpisodeBuffer",
    "ReplaySignals",
    "ALGORITHMS",
    "Algorithm",
    "PPOAlgorithm",
    "Constraint",
    "ELD",
    "check_compatible",
    "CompatibilityError",
    "train",
    "build_algorithm",
    "TrainResult",
    "TrainingError",
    "RunExistsError",
    "MemoryEstimateError",
    "Rollout",
    "compute_gae",
    "collect_rollout",
    "iteration_seed",
    "ppo_update",
    "build_model",
    "build_agent",
    "evaluate_policy",
    "ActorCritic",
    "Actor",
    "Critic",
    "GroupedLinear",
    "GroupedMLP",
    "ObsNorm",
    "RunningNorm",
    "ValueNorm",
    "SharingScheme",
    "SHARING_SCHEMES",
    "make_sharing",
    "register_sharing",
    "save_policy",
    "load_policy",
    "LearnedPolicy",
    "PolicyFileError",
    "POLICY_FORMAT_VERSION",
    "CheckpointError",
    "load_checkpoint",
]
