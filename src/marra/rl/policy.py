"""The trained policy as one self-contained file, and the object that runs it.

``policy.pt`` (a ``torch.save`` dict, loaded with ``weights_only=True``) holds, in format
version 2:

- ``format`` = ``"marra-policy"``, ``format_version`` (:data:`POLICY_FORMAT_VERSION`),
  ``marra_version``;
- ``algorithm`` (``"ippo"``, ``"mappo"``, ``"iql"``, ``"vdn"``, ``"qmix"``, ``"wqmix"``,
  ``"maddpg"``) and ``sharing`` (the scheme, its groups and identity
  features);
- ``actor``: the architecture (observation size, hidden widths, activation, action kind and
  size, action scaling, number of parameter groups, identity features, ``squash``: ``"none"``,
  or ``"tanh"`` for MADDPG's deterministic actor, whose outputs are ``tanh`` of the network's)
  and its ``state_dict`` (with the observation normalisation statistics). The value-based
  learners store their agent utilities as a discrete actor: its greedy action is theirs;
- ``env``: the environment's name, its options (when they can be stored as plain values) and
  its spec (number of agents, observation size, action), so ``marra evaluate`` can rebuild it;
- ``obs_spec`` (observation size and feature names), ``env_settings`` (a JSON-safe description
  of the options) and ``metadata`` (seed, steps, the training config).

Only the actor is stored: the policy needs nothing else to act. Files of format version 1 (marra
0.1's hospital policies) still load, as full sharing with one continuous action per agent.

Python use (``docs/policies.md``)::

    from marra.rl import load_policy
    policy = load_policy("runs/train/policy.pt")      # or the run folder "runs/train"
    env = policy.make_env(num_envs=4, seed=0)          # the environment it was trained on
    obs = env.reset()
    actions = policy.act(obs, mask=env.action_mask())  # deterministic
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import marra
from marra._io import atomic_torch_save

from .networks import Actor, AgentIdentity

__all__ = [
    "POLICY_FORMAT_VERSION",
    "PolicyFileError",
    "LearnedPolicy",
    "save_policy",
    "load_policy",
    "resolve_policy_path",
]

POLICY_FORMAT_VERSION = 2
_POLICY_FORMAT = "marra-policy"
_READABLE_VERSIONS = (1, 2)


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message names the file and the problem."""


def _plain(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class LearnedPolicy:
    """A trained actor that maps observations to environment actions.

    ``act(obs)`` takes ``obs (num_envs, num_agents, obs_dim)`` (or one copy ``(num_agents,
    obs_dim)``, or the Gymnasium view's flat ``(num_agents * obs_dim,)``; a tensor or a numpy
    array) and returns actions in the environment's units, of the same kind as the input
    (numpy in, numpy out): ``(..., num_agents)`` int64 for discrete actions, ``(...,
    num_agents)`` floats for one continuous value per agent (the hospital's staff), else
    ``(..., num_agents, dim)``.
    """

    def __init__(
        self,
        actor: Actor,
        *,
        algorithm: str = "mappo",
        sharing: dict[str, Any] | None = None,
        env: dict[str, Any] | None = None,
        obs_spec: dict[str, Any] | None = None,
        env_settings: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.actor = actor.eval()
        self.algorithm = algorithm
        self.sharing = dict(sharing or {"name": "full", "num_groups": 1, "groups": None})
        self.env = dict(env or {})
        self.obs_dim = actor.obs_dim
        self.action_scale = actor.action_scale
        self.obs_spec = dict(obs_spec or {"obs_dim": actor.obs_dim})
        self.env_settings = env_settings
        self.metadata = dict(metadata or {})
        groups = self.sharing.get("groups")
        self._groups = None if groups is None else torch.as_tensor(groups, dtype=torch.int64)
        self.trained_agents = self.sharing.get("num_agents")

    @property
    def any_num_agents(self) -> bool:
        """Whether the policy runs on a different number of agents than it was trained on."""
        return self.actor.num_groups == 1 and self.actor.identity.kind == "none"

    def _groups_for(self, n: int) -> torch.Tensor | None:
        if self.any_num_agents:
            return None
        if self.trained_agents is not None and n != int(self.trained_agents):
            scheme = self.sharing.get("name", "?")
            raise PolicyFileError(
                f"policy: trained with sharing {scheme!r} for {self.trained_agents} agents, which "
                f"ties parameters to agent identities; it cannot act for {n} agents (only "
                "'full' sharing runs on any number)"
            )
        return self._groups

    @torch.no_grad()
    def act(
        self,
        obs: Any,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
        mask: Any = None,
    ) -> Any:
        """Actions for ``obs`` (see the class docstring). ``deterministic``: the Gaussian mean or
        the most likely allowed action; otherwise a sample. ``mask``: the environment's
        ``action_mask()`` for discrete actions (None: all allowed)."""
        numpy_in = isinstance(obs, np.ndarray)
        x = torch.as_tensor(obs, dtype=torch.float32)
        flat = x.ndim == 1
        if flat:
            if x.shape[0] % self.obs_dim:
                raise ValueError(
                    f"obs: a flat observation must have a multiple of {self.obs_dim} values, "
                    f"got {x.shape[0]}"
                )
            x = x.reshape(-1, self.obs_dim)
        if x.ndim not in (2, 3) or x.shape[-1] != self.obs_dim:
            raise ValueError(
                f"obs: expected shape (num_envs, num_agents, {self.obs_dim}), (num_agents, "
                f"{self.obs_dim}) or (num_agents * {self.obs_dim},), got {tuple(x.shape)}"
            )
        single = x.ndim == 2
        if single:
            x = x.unsqueeze(0)
        groups = self._groups_for(x.shape[-2])
        m = None
        if mask is not None:
            m = torch.as_tensor(mask, dtype=torch.bool).reshape(x.shape[0], x.shape[1], -1)
        if deterministic:
            action = self.actor.act(x, groups, m)
        else:
            action, _ = self.actor.sample(x, groups, generator, m)
            action = self.actor.env_action(action)
        if not self.actor.discrete and self.actor.action_dim == 1:
            action = action.squeeze(-1)
        if single:
            action = action.squeeze(0)
        return action.numpy() if numpy_in else action

    __call__ = act

    def make_env(self, **overrides: Any) -> Any:
        """The environment the policy was trained on (its stored options, updated by
        ``overrides`` such as ``num_envs`` or ``seed``)."""
        from marra.envs.registry import make

        name = self.env.get("name")
        if not name:
            raise PolicyFileError("policy: the file does not name its environment")
        options = dict(self.env.get("options") or {})
        options.update(overrides)
        return make(name, **options)

    def __repr__(self) -> str:
        kind = "discrete" if self.actor.discrete else "continuous"
        return (
            f"LearnedPolicy(algorithm={self.algorithm!r}, sharing={self.sharing.get('name')!r}, "
            f"env={self.env.get('name')!r}, obs_dim={self.obs_dim}, action={kind}"
            f"({self.actor.action_dim}), hidden={self.actor.hidden})"
        )


def save_policy(
    path: str | os.PathLike[str],
    model: Any,
    *,
    config: Any = None,
    spec: Any = None,
    env_name: str | None = None,
    env_options: dict[str, Any] | None = None,
    env_settings: Any = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s actor and everything needed to rebuild and run it to ``path``,
    atomically (see the module docstring). Returns the path written."""
    path = Path(path)
    actor: Actor = model.actor
    state_dict = {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}
    options = {k: v for k, v in (env_options or {}).items() if _plain(v)}
    dropped = sorted(set(env_options or {}) - set(options))
    env_entry: dict[str, Any] = {"name": env_name, "options": options, "dropped_options": dropped}
    if spec is not None:
        action = spec.action
        env_entry["spec"] = {
            "num_agents": int(spec.num_agents),
            "obs_dim": int(spec.obs_dim),
            "state_dim": int(spec.state_dim),
            "action": {
                "kind": action.kind,
                "n": action.n,
                "dim": action.dim,
                "low": None if action.low is None or not math.isfinite(action.low) else action.low,
                "high": None
                if action.high is None or not math.isfinite(action.high)
                else action.high,
            },
            "horizon": int(spec.horizon),
            "reward": spec.reward,
            "metrics": list(spec.metrics),
            "baselines": list(spec.baselines),
        }
    obs_spec: dict[str, Any] = {"obs_dim": actor.obs_dim}
    if spec is not None and spec.obs_names is not None:
        obs_spec["features"] = [str(f) for f in spec.obs_names]
    atomic_torch_save(
        {
            "format": _POLICY_FORMAT,
            "format_version": POLICY_FORMAT_VERSION,
            "marra_version": marra.__version__,
            "algorithm": getattr(config, "algo", "mappo"),
            "sharing": model.sharing.describe(),
            "actor": {
                "obs_dim": actor.obs_dim,
                "hidden": list(actor.hidden),
                "activation": actor.activation,
                "obs_norm": actor.obs_norm.enabled,
                "action_kind": actor.action_kind,
                "action_dim": actor.action_dim,
                "num_groups": actor.num_groups,
                "identity": actor.identity.kind,
                "identity_agents": actor.identity.num_agents,
                "identity_dim": actor.identity.width if actor.identity.kind == "embedding" else 0,
                "action_scale": actor.action_scale,
                "action_center": actor.action_center,
                "squash": getattr(actor, "squash", "none"),
                "state_dict": state_dict,
            },
            "env": env_entry,
            "obs_spec": obs_spec,
            "env_settings": env_settings,
            "metadata": dict(metadata or {}),
        },
        path,
    )
    return path


def resolve_policy_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``path/policy.pt`` when ``path`` is a run folder.

    Raises:
        PolicyFileError: no such file, or a folder without ``policy.pt``.
    """
    path = Path(path)
    if path.is_dir():
        inside = path / "policy.pt"
        if inside.is_file():
            return inside
        raise PolicyFileError(
            f"policy {str(path)!r}: is a folder without a policy.pt (give a run folder of "
            "marra train or a policy file)"
        )
    if not path.is_file():
        raise PolicyFileError(f"policy file {str(path)!r}: no such file")
    return path


def _actor_v1(spec: dict[str, Any]) -> Actor:
    """A marra 0.1 SharedActor (one Gaussian action per agent, full sharing) as an Actor."""
    hidden = tuple(int(h) for h in spec["hidden"])
    actor = Actor(
        int(spec["obs_dim"]), action_kind="continuous", action_dim=1, hidden=hidden,
        num_groups=1, identity=AgentIdentity("none", 1), activation=str(spec["activation"]),
        obs_norm=bool(spec.get("obs_norm", False)), init_log_std=0.0,
        action_scale=float(spec["action_scale"]), action_center=0.0,
    )  # fmt: skip
    old = spec["state_dict"]
    new: dict[str, torch.Tensor] = {}
    for key, value in old.items():
        if key.startswith("obs_norm."):
            new[key] = value
    for layer in range(len(hidden) + 1):
        weight = old[f"mean_net.{2 * layer}.weight"]  # (out, in) as nn.Linear stores it
        new[f"body.layers.{layer}.weight"] = weight.T.unsqueeze(0).contiguous()
        new[f"body.layers.{layer}.bias"] = old[f"mean_net.{2 * layer}.bias"].unsqueeze(0)
    new["log_std"] = old["log_std"].reshape(1, 1)
    actor.load_state_dict(new)
    return actor


def _actor_v2(spec: dict[str, Any]) -> Actor:
    identity = AgentIdentity(
        str(spec["identity"]), int(spec["identity_agents"]), int(spec.get("identity_dim") or 16)
    )
    squash = spec.get("squash", "none")  # "tanh": MADDPG's deterministic actor
    if squash not in ("none", "tanh"):
        raise ValueError(f"unknown squash {squash!r}")
    actor_class: type[Actor] = Actor
    if squash == "tanh":
        from .maddpg import DeterministicActor

        actor_class = DeterministicActor
    actor = actor_class(
        int(spec["obs_dim"]), action_kind=str(spec["action_kind"]),
        action_dim=int(spec["action_dim"]), hidden=tuple(int(h) for h in spec["hidden"]),
        num_groups=int(spec["num_groups"]), identity=identity, activation=str(spec["activation"]),
        obs_norm=bool(spec["obs_norm"]), init_log_std=0.0,
        action_scale=float(spec["action_scale"]), action_center=float(spec["action_center"]),
    )  # fmt: skip
    actor.load_state_dict(spec["state_dict"])
    return actor


def load_policy(path: str | os.PathLike[str]) -> LearnedPolicy:
    """Read a policy written by :func:`save_policy` (or a run folder holding ``policy.pt``).

    Raises:
        PolicyFileError: naming the file, in one line, when it is missing, a folder without a
            policy, truncated or corrupt, not a marra policy, of another format version, or its
            contents do not fit together.
    """
    path = resolve_policy_path(path)
    where = f"policy file {str(path)!r}"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise PolicyFileError(
            f"{where}: not a marra policy file (not a file written by torch.save; truncated, "
            "or another kind of file)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a pickle of something else, a text file, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it holds Python objects other than tensors"
        raise PolicyFileError(f"{where}: not a marra policy file ({first[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != _POLICY_FORMAT:
        raise PolicyFileError(f"{where}: not a marra policy file (no 'format': 'marra-policy')")
    version = data.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise PolicyFileError(
            f"{where}: format version {version!r}, but this marra ({marra.__version__}) reads "
            f"versions {', '.join(map(str, _READABLE_VERSIONS))}; it was written by marra "
            f"{data.get('marra_version')!r}"
        )
    try:
        spec = data["actor"]
        actor = _actor_v1(spec) if version == 1 else _actor_v2(spec)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PolicyFileError(
            f"{where}: actor entry is incomplete or inconsistent: {exc}"
        ) from None
    for name, tensor in actor.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise PolicyFileError(f"{where}: parameter {name!r} holds non-finite values")
    env = data.get("env")
    if version == 1:
        env = {"name": "hospital", "options": {}, "spec": None}
    return LearnedPolicy(
        actor,
        algorithm=str(data.get("algorithm", "mappo")),
        sharing=data.get("sharing"),
        env=env,
        obs_spec=data.get("obs_spec"),
        env_settings=data.get("env_settings"),
        metadata=data.get("metadata"),
    )
