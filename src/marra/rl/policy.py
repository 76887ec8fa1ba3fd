"""The trained policy as one self-contained file, and the object that runs it.

``policy.pt`` (a ``torch.save`` dict, loaded with ``weights_only=True``) holds:

- ``format`` = ``"marra-policy"`` and ``format_version`` (:data:`POLICY_FORMAT_VERSION`);
- ``marra_version``;
- ``actor``: the architecture (``obs_dim``, ``hidden``, ``action_scale``) and ``state_dict``;
- ``obs_spec``: ``obs_dim`` and, when the environment names them, the observation features;
- ``env_settings``: a JSON-safe description of the environment arguments used in training;
- ``metadata``: free-form facts about the run (seed, steps, ...).

Only the actor is stored: the policy needs nothing else to act, on any number of hospitals.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import marra

from .checkpoint import atomic_torch_save
from .networks import SharedActor

__all__ = [
    "POLICY_FORMAT_VERSION",
    "PolicyFileError",
    "LearnedPolicy",
    "save_policy",
    "load_policy",
]

POLICY_FORMAT_VERSION = 1
_POLICY_FORMAT = "marra-policy"


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message names the file and the problem."""


class LearnedPolicy:
    """A trained shared actor that maps observations to staff actions.

    ``act(obs (num_envs, n, obs_dim)) -> action (num_envs, n)`` in staff units (> 0 asks to
    receive, < 0 offers), ready for ``HospitalEnv.step``. A 2-D ``obs (n, obs_dim)`` gives
    ``(n,)``. The same policy runs on any number of hospitals n.
    """

    def __init__(
        self,
        actor: SharedActor,
        *,
        action_scale: float,
        obs_spec: dict[str, Any] | None = None,
        env_settings: Any = None,
        metadata: dict[str, Any] | None = None,
    ):
        self.actor = actor.eval()
        self.action_scale = float(action_scale)
        self.obs_dim = actor.obs_dim
        self.obs_spec = dict(obs_spec or {"obs_dim": actor.obs_dim})
        self.env_settings = env_settings
        self.metadata = dict(metadata or {})

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Actions for ``obs (num_envs, n, obs_dim)`` -> ``(num_envs, n)``: the Gaussian mean
        (``deterministic=True``) or a sample from it, times ``action_scale``."""
        obs = torch.as_tensor(obs, dtype=torch.float32)
        if obs.ndim not in (2, 3) or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"obs: expected shape (num_envs, n, {self.obs_dim}) or (n, {self.obs_dim}), "
                f"got {tuple(obs.shape)}"
            )
        if deterministic:
            action = self.actor(obs)
        else:
            action, _ = self.actor.sample(obs, generator)
        return self.action_scale * action

    __call__ = act

    def __repr__(self) -> str:
        return (
            f"LearnedPolicy(obs_dim={self.obs_dim}, hidden={self.actor.hidden}, "
            f"activation={self.actor.activation!r}, "
            f"action_scale={self.action_scale})"
        )


def save_policy(
    path: str | os.PathLike[str],
    actor: SharedActor,
    *,
    action_scale: float,
    obs_spec: dict[str, Any] | None = None,
    env_settings: Any = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``actor`` and everything needed to rebuild and run it to ``path``, atomically.

    ``env_settings`` should be JSON-safe (see :func:`marra.rl.checkpoint.describe_settings`).
    Returns the path written.
    """
    path = Path(path)
    state_dict = {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}
    atomic_torch_save(
        {
            "format": _POLICY_FORMAT,
            "format_version": POLICY_FORMAT_VERSION,
            "marra_version": marra.__version__,
            "actor": {
                "obs_dim": actor.obs_dim,
                "hidden": list(actor.hidden),
                "activation": actor.activation,
                "obs_norm": actor.obs_norm.enabled,
                "action_scale": float(action_scale),
                "state_dict": state_dict,
            },
            "obs_spec": dict(obs_spec or {"obs_dim": actor.obs_dim}),
            "env_settings": env_settings,
            "metadata": dict(metadata or {}),
        },
        path,
    )
    return path


def load_policy(path: str | os.PathLike[str]) -> LearnedPolicy:
    """Read a policy written by :func:`save_policy`.

    Raises:
        PolicyFileError: naming the file, when it is missing, truncated or corrupt, not a marra
            policy, of another format version, or its contents do not fit together.
    """
    path = Path(path)
    where = f"policy file {str(path)!r}"
    if not path.is_file():
        raise PolicyFileError(f"{where}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, ...: torch raises several types
        raise PolicyFileError(f"{where}: cannot be read (truncated or corrupt?): {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != _POLICY_FORMAT:
        raise PolicyFileError(f"{where}: not a marra policy file (no 'format': 'marra-policy')")
    version = data.get("format_version")
    if version != POLICY_FORMAT_VERSION:
        raise PolicyFileError(
            f"{where}: format version {version!r}, but this marra "
            f"({marra.__version__}) reads version {POLICY_FORMAT_VERSION}; "
            f"it was written by marra {data.get('marra_version')!r}"
        )
    try:
        spec = data["actor"]
        actor = SharedActor(
            int(spec["obs_dim"]),
            tuple(int(h) for h in spec["hidden"]),
            activation=str(spec["activation"]),
            obs_norm=bool(spec.get("obs_norm", False)),
        )
        actor.load_state_dict(spec["state_dict"])
        action_scale = float(spec["action_scale"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PolicyFileError(f"{where}: actor entry is incomplete or inconsistent: {exc}") from exc
    for name, tensor in actor.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise PolicyFileError(f"{where}: parameter {name!r} holds non-finite values")
    return LearnedPolicy(
        actor,
        action_scale=action_scale,
        obs_spec=data.get("obs_spec"),
        env_settings=data.get("env_settings"),
        metadata=data.get("metadata"),
    )
