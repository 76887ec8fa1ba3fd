"""Parameter sharing as a mapping from agents to parameter groups.

A :class:`SharingScheme` says, for a learner's networks, how many parameter groups there are,
which group each agent uses (:meth:`SharingScheme.groups`) and which identity features are
appended to each agent's input. The PPO math never sees it: the grouped networks of
:mod:`marra.rl.networks` evaluate every agent with its group's parameters in one batched call.

- ``none`` (NoPS): one group per agent, the identity mapping (agent ``i`` uses group ``i``).
- ``full`` (PS): one group for all agents; the policy runs on any number of agents.
- ``id`` (PS-id): one group, plus the agent's identity: its one-hot up to
  ``id_onehot_max`` agents (default 64), a learned embedding of ``id_embedding_dim`` features
  (default 16) above that.

Schemes whose grouping changes during training (selective sharing after a pretraining phase,
dynamic regrouping every episode) implement the hooks :meth:`SharingScheme.before_iteration` and
:meth:`SharingScheme.after_rollout`; register them with :func:`register_sharing`. ``psa``
(:mod:`marra.rl.psa`), ``seps`` (:mod:`marra.rl.seps`) and ``dyps`` (:mod:`marra.rl.dyps`) are
registered that way (``docs/sharing.md``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

__all__ = [
    "SharingScheme",
    "NoSharing",
    "FullSharing",
    "IdSharing",
    "SHARING_SCHEMES",
    "register_sharing",
    "make_sharing",
    "SharingError",
]


class SharingError(ValueError):
    """An unknown scheme or a scheme that cannot serve this many agents."""


class SharingScheme:
    """Base class: every agent in group 0, no identity features (override what differs).

    Attributes:
        name: the scheme's name (``--sharing``).
        any_num_agents: a policy trained with this scheme runs on any number of agents.
        num_agents, num_groups, identity (``"none"``, ``"onehot"`` or ``"embedding"``),
        id_dim (embedding width).
    """

    name: ClassVar[str] = "base"
    any_num_agents: ClassVar[bool] = False
    regroups: ClassVar[bool] = False
    """The grouping may change during training (the loop logs it to ``groups.csv``)."""
    shared_critic: ClassVar[bool] = False
    """Per-agent critics get a second, shared critic next to them (PSA)."""
    takes_num_groups: ClassVar[bool] = False
    """The scheme reads the ``num_groups`` option (``--num-groups``)."""

    def __init__(self, num_agents: int, **options: Any) -> None:
        if num_agents < 1:
            raise SharingError(f"num_agents: must be >= 1, got {num_agents}")
        self.num_agents = int(num_agents)
        self.num_groups = 1
        self.identity = "none"
        self.id_dim = 0
        self._groups: torch.Tensor | None = torch.zeros(self.num_agents, dtype=torch.int64)

    def groups(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """``(num_agents,)`` int64 group of every agent, or None for the identity mapping."""
        return None if self._groups is None else self._groups.to(device)

    def bind(self, learner: Any) -> None:
        """Called once by the training loop with the learner (its optimisers), before any
        iteration and before a resume loads the checkpoint."""

    def before_iteration(self, iteration: int, learner: Any) -> None:
        """Called before each iteration's rollout (may change the grouping)."""

    def after_rollout(self, rollout: Any, learner: Any) -> dict[str, float]:
        """Called with each iteration's rollout; returns values to log."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What a policy file records to rebuild the scheme."""
        groups = None if self._groups is None else self._groups.tolist()
        return {
            "name": self.name,
            "num_agents": self.num_agents,
            "num_groups": self.num_groups,
            "identity": self.identity,
            "id_dim": self.id_dim,
            "groups": groups,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"groups": None if self._groups is None else self._groups.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        groups = state.get("groups")
        self._groups = None if groups is None else torch.as_tensor(groups, dtype=torch.int64)


class NoSharing(SharingScheme):
    """NoPS: separate parameters for every agent (one group per agent)."""

    name = "none"
    any_num_agents = False

    def __init__(self, num_agents: int, **options: Any) -> None:
        super().__init__(num_agents)
        self.num_groups = self.num_agents
        self._groups = None  # identity mapping: no gather needed


class FullSharing(SharingScheme):
    """PS: one network for all agents; runs on any number of agents."""

    name = "full"
    any_num_agents = True


class IdSharing(SharingScheme):
    """PS-id: one network that also sees the agent's identity (one-hot up to ``id_onehot_max``
    agents, a learned embedding of ``id_embedding_dim`` features above)."""

    name = "id"
    any_num_agents = False

    def __init__(
        self, num_agents: int, *, id_onehot_max: int = 64, id_embedding_dim: int = 16, **_: Any
    ) -> None:
        super().__init__(num_agents)
        if self.num_agents <= int(id_onehot_max):
            self.identity, self.id_dim = "onehot", self.num_agents
        else:
            self.identity, self.id_dim = "embedding", int(id_embedding_dim)


SHARING_SCHEMES: dict[str, type[SharingScheme]] = {
    "none": NoSharing,
    "full": FullSharing,
    "id": IdSharing,
}


def register_sharing(cls: type[SharingScheme]) -> type[SharingScheme]:
    """Add a scheme to :data:`SHARING_SCHEMES` under ``cls.name`` (usable as a decorator)."""
    SHARING_SCHEMES[cls.name] = cls
    return cls


def make_sharing(name: str, num_agents: int, **options: Any) -> SharingScheme:
    """The scheme ``name`` for ``num_agents`` agents.

    Raises:
        SharingError: unknown ``name`` (the message lists the valid ones).
    """
    if name not in SHARING_SCHEMES:
        raise SharingError(
            f"sharing: unknown scheme {name!r}; choose one of {', '.join(SHARING_SCHEMES)}"
        )
    return SHARING_SCHEMES[name](num_agents, **options)
