"""What the grouped sharing schemes (SePS, DyPS) share: the parameters that belong to groups,
copying a group's parameters and Adam moments into other groups, optimiser state as plain
tensors (for checkpoints), and the ``groups.csv`` log of every agent's group.

A grouped network keeps one slice per group in every tensor whose first dimension is the group:
the ``(G, in, out)`` weights and ``(G, out)`` biases of :class:`~marra.rl.networks.GroupedLinear`
and the actor's ``(G, action_dim)`` log-std. :func:`group_parameters` finds them in a model;
:func:`copy_group_slots` copies slices (and the matching slices of Adam's first and second
moments) from one group to others, which is how SePS starts its K group networks from the
pretrained shared one.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from marra._io import atomic_write_text

from .networks import Actor, GroupedLinear

__all__ = [
    "GROUPS_NAME",
    "GroupsLog",
    "Trajectories",
    "trajectories",
    "group_parameters",
    "copy_group_slots",
    "optimizer_tensors",
    "load_optimizer_tensors",
    "optimizers_of",
    "module_tensors",
    "load_module_tensors",
]

GROUPS_NAME = "groups.csv"


@dataclass
class Trajectories:
    """One iteration's experience in one layout, whichever learner collected it; every field a
    view of the learner's buffers (nothing is copied until :meth:`at` gathers entries).

    ``obs (E, T, N, obs_dim)`` (before each step), ``next_obs (E, T', N, obs_dim)`` (after step
    ``t`` for ``t < T'``: ``T' = T - 1`` for a rollout, which does not keep the observation after
    its last step, ``T`` for a segment), ``actions (E, T, N)`` int64 or ``(E, T, N, dim)``,
    ``rewards (E, T, N)`` (a team reward is given to every agent), ``dones (E, T)`` bool (the
    episode ended with that step), ``valid (E, T)`` bool (the step's next observation is known).
    """

    obs: torch.Tensor
    next_obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    valid: torch.Tensor

    @property
    def num_copies(self) -> int:
        return int(self.obs.shape[0])

    @property
    def steps(self) -> int:
        return int(self.obs.shape[1])

    def at(self, name: str, copies: torch.Tensor, steps: torch.Tensor,
           agents: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """``name``'s entries at broadcastable index tensors (``next_obs`` past its last step
        repeats the last one; such steps are not ``valid``)."""
        tensor = getattr(self, name)
        if name == "next_obs":
            steps = steps.clamp(max=tensor.shape[1] - 1)
        device = tensor.device
        return tensor[copies.to(device), steps.to(device), agents.to(device)]


def trajectories(batch: Any) -> Trajectories:
    """:class:`Trajectories` from a PPO :class:`~marra.rl.rollout.Rollout` (``(T, E, ...)``,
    recognised by its ``log_probs``) or a replay learner's
    :class:`~marra.rl.replay.Segment` (``(E, T, ...)`` with ``T + 1`` observations)."""
    if hasattr(batch, "log_probs"):  # a Rollout: time first
        obs = batch.obs.transpose(0, 1)  # (E, T, N, d), a view
        e, t, n = obs.shape[:3]
        actions = batch.actions.transpose(0, 1)
        rewards = batch.rewards.transpose(0, 1)
        dones = batch.dones.transpose(0, 1)
        if rewards.ndim == 2:
            rewards = rewards.unsqueeze(-1).expand(e, t, n)
        if dones.ndim == 3:
            dones = dones[..., 0]
        dones = dones > 0.5
        next_obs = obs[:, 1:] if t > 1 else obs
        valid = ~dones
        valid[:, -1] = False  # the observation after the rollout's last step is not kept
    else:  # a Segment: copies first, T + 1 observations
        obs_all = batch.obs
        obs, next_obs = obs_all[:, :-1], obs_all[:, 1:]
        e, t, n = obs.shape[:3]
        actions, rewards = batch.actions, batch.rewards
        if rewards.ndim == 2:
            rewards = rewards.unsqueeze(-1).expand(e, t, n)
        dones = batch.dones > 0.5
        valid = ~dones
    return Trajectories(obs, next_obs, actions, rewards, dones, valid)


def group_parameters(model: nn.Module, num_groups: int) -> list[nn.Parameter]:
    """Every parameter of ``model`` whose first dimension indexes the sharing scheme's
    ``num_groups`` groups (grouped layers built with that many groups, and the actor's
    per-group log-std). Layers with another group count (a team critic's single group) are left
    out."""
    found: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, GroupedLinear) and module.num_groups == num_groups:
            found += [module.weight, module.bias]
        if isinstance(module, Actor) and module.num_groups == num_groups:
            log_std = getattr(module, "log_std", None)
            if isinstance(log_std, nn.Parameter):
                found.append(log_std)
    return found


@torch.no_grad()
def copy_group_slots(
    params: list[nn.Parameter],
    optimizers: list[torch.optim.Optimizer],
    source: int,
    targets: list[int],
) -> None:
    """``p[t] = p[source]`` for every parameter and target group, and the same for every
    per-element tensor the optimisers keep for it (Adam's ``exp_avg`` and ``exp_avg_sq``), so
    each target group continues exactly where the source group's optimisation stood. Adam's
    step count is one per tensor and is shared by every group already."""
    if not targets:
        return
    index = torch.as_tensor(targets, dtype=torch.long)
    for param in params:
        # clone: with one target the source row and the written rows overlap in memory
        param[index.to(param.device)] = (
            param[source].clone().unsqueeze(0).expand(len(targets), *param.shape[1:])
        )
        for optimizer in optimizers:
            state = optimizer.state.get(param)
            if not state:
                continue
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value[index.to(value.device)] = (
                        value[source].clone().unsqueeze(0).expand(len(targets), *value.shape[1:])
                    )


def optimizers_of(learner: Any) -> list[torch.optim.Optimizer]:
    """The optimisers of a learner (``learner.optimizer`` and/or ``learner.optimizers``)."""
    found: list[torch.optim.Optimizer] = []
    single = getattr(learner, "optimizer", None)
    if isinstance(single, torch.optim.Optimizer):
        found.append(single)
    for item in getattr(learner, "optimizers", None) or ():
        if isinstance(item, torch.optim.Optimizer) and item not in found:
            found.append(item)
    return found


def module_tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` as ``{prefix.key: tensor}`` (detached clones)."""
    return {f"{prefix}.{k}": v.detach().clone() for k, v in module.state_dict().items()}


def load_module_tensors(module: nn.Module, state: dict[str, Any], prefix: str) -> None:
    """Inverse of :func:`module_tensors` (entries without the prefix are ignored)."""
    start = len(prefix) + 1
    own = {k[start:]: v for k, v in state.items() if k.startswith(prefix + ".")}
    if own:
        module.load_state_dict(own)


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """The per-parameter state of ``optimizer`` (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``) as
    flat ``{prefix.index.key: tensor}`` entries; the hyperparameters come from the config."""
    flat: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            flat[f"{prefix}.{index}.{key}"] = tensor.detach().clone()
    return flat


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, state: dict[str, Any], prefix: str
) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    entries: dict[int, dict[str, torch.Tensor]] = {}
    start = len(prefix) + 1
    for key, value in state.items():
        if not key.startswith(prefix + "."):
            continue
        index, name = key[start:].split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    if not entries:
        return
    full = optimizer.state_dict()
    full["state"] = {i: {k: v.clone() for k, v in s.items()} for i, s in entries.items()}
    optimizer.load_state_dict(full)


class GroupsLog:
    """``groups.csv`` in a run folder: one row ``iteration,agent,group`` per agent and
    iteration, for schemes whose grouping changes during training.

    The history is also kept as an ``(iterations, N)`` int32 tensor that the checkpoint stores,
    so a resumed run rewrites the file from its checkpoint (atomically) and then appends, exactly
    as ``train_log.csv`` does: the file always matches the checkpoint it resumes from.
    """

    def __init__(self, out_dir: Path, history: torch.Tensor | None = None,
                 iterations: torch.Tensor | None = None) -> None:  # fmt: skip
        self.path = Path(out_dir) / GROUPS_NAME
        self.rows: list[torch.Tensor] = [] if history is None else list(history.to(torch.int32))
        self.iterations: list[int] = [] if iterations is None else [int(i) for i in iterations]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["iteration", "agent", "group"])
        for iteration, groups in zip(self.iterations, self.rows, strict=True):
            writer.writerows(self._rows(iteration, groups))
        atomic_write_text(self.path, buffer.getvalue())
        self._pending: tuple[int, torch.Tensor] | None = None

    @staticmethod
    def _rows(iteration: int, groups: torch.Tensor) -> list[tuple[int, int, int]]:
        return [(iteration, agent, int(g)) for agent, g in enumerate(groups.tolist())]

    def record(self, iteration: int, groups: torch.Tensor) -> None:
        """Take in an iteration's grouping (before the checkpoint is written)."""
        groups = groups.detach().to("cpu", torch.int32)
        self.rows.append(groups)
        self.iterations.append(int(iteration))
        self._pending = (int(iteration), groups)

    def flush(self) -> None:
        """Append the recorded iteration to the file (after the checkpoint)."""
        if self._pending is None:
            return
        iteration, groups = self._pending
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows(self._rows(iteration, groups))
        self._pending = None

    def state(self) -> dict[str, torch.Tensor]:
        """What the checkpoint keeps: ``groups_history`` and ``groups_iterations``."""
        if not self.rows:
            return {}
        return {
            "groups_history": torch.stack(self.rows),
            "groups_iterations": torch.tensor(self.iterations, dtype=torch.int64),
        }
