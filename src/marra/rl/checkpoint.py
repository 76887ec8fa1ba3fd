"""Training checkpoints: written atomically, complete enough to continue the same run exactly.

A checkpoint (``checkpoint.pt``, a ``torch.save`` dict loaded with ``weights_only=True``) holds

- ``model`` (actor, critic, value-normalisation stats) and ``optimizer`` state dicts;
- ``rng``: the learner's own generator (action noise, minibatch order) and the global torch,
  numpy and python RNG states;
- ``iteration`` and ``env_steps`` counters, ``elapsed_s`` (wall time so far);
- ``config`` (:class:`PPOConfig` as a dict) and ``env_settings`` (a JSON-safe description of the
  environment arguments), used to refuse resuming a different run;
- ``env_name`` and ``log_rows`` (every row of ``train_log.csv`` so far: a resume rewrites the
  log from them, so the log and the checkpoint always agree);
- ``format_version`` and ``marra_version``.

Environment copies are reset from seeds derived from ``(config.seed, iteration)`` at the start of
every iteration, so the iteration counter is all the environment state a resume needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

import marra
from marra._io import atomic_torch_save

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "atomic_torch_save",
    "capture_rng",
    "restore_rng",
    "describe_settings",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 2
_CHECKPOINT_KIND = "marra-ppo-checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to a different run."""


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """All RNG states a run depends on, as tensors and plain python values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def describe_settings(value: Any) -> Any:
    """A JSON-safe description of environment settings, for records and run comparison.

    Primitives pass through; dicts, lists and tuples recurse; dataclasses become dicts with their
    class name; arrays and tensors become ``{"shape", "sha256"}``; a network-like object (with
    ``current``/``minimum``/``target`` arrays) becomes its size and a hash of its arrays; anything
    else becomes its ``repr``.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): describe_settings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [describe_settings(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value, dtype=np.float64).tobytes()).hexdigest()
        return {"shape": list(value.shape), "sha256": digest}
    if all(hasattr(value, name) for name in ("current", "minimum", "target")):
        arrays = [
            np.asarray(getattr(value, name), dtype=np.float64)
            for name in ("current", "minimum", "target")
        ]
        capacity = getattr(value, "capacity", None)
        if capacity is not None:
            arrays.append(np.asarray(capacity, dtype=np.float64))
        digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()
        return {"type": type(value).__name__, "n": int(arrays[0].shape[-1]), "sha256": digest}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: describe_settings(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
        return {"type": type(value).__name__, **fields}
    return repr(value)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    state: dict[str, Any],
    generator: torch.Generator,
    iteration: int,
    env_steps: int,
    elapsed_s: float,
    config: dict[str, Any],
    env_settings: Any,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the checkpoint of a run atomically (see the module docstring for the contents).

    ``state`` is the learner's own state (``Algorithm.state_dict()``: ``model``, ``optimizer``
    and whatever else it keeps), stored at the top level; ``extra`` entries (the environment
    name, the log rows so far) are stored alongside."""
    atomic_torch_save(
        {
            **(extra or {}),
            **state,
            "kind": _CHECKPOINT_KIND,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "marra_version": marra.__version__,
            "rng": capture_rng(generator),
            "iteration": int(iteration),
            "env_steps": int(env_steps),
            "elapsed_s": float(elapsed_s),
            "config": config,
            "env_settings": env_settings,
        },
        path,
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: naming the file when it is missing, unreadable (truncated, corrupt), not
            a marra checkpoint, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r}: cannot be read (truncated or corrupt?): {first}"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != _CHECKPOINT_KIND:
        raise CheckpointError(f"checkpoint {str(path)!r}: not a marra PPO checkpoint")
    version = data.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: format version {version!r}, this marra reads version "
            f"{CHECKPOINT_FORMAT_VERSION} (a run of an older marra cannot be resumed; its "
            "policy.pt still loads)"
        )
    return data
