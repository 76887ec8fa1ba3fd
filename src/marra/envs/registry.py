"""The environment registry: names -> batched environment classes, options and Gymnasium ids.

Registering a class gives it every view (Gymnasium, PettingZoo, vector), every learner and every
command (``marra envs``, ``marra train --env``, ``marra evaluate``)::

    from marra.envs import MultiAgentEnv, register

    class MyEnv(MultiAgentEnv):
        ...

    register("my-env", MyEnv)            # or register("my-env", "mypackage.module:MyEnv")
    env = marra.envs.make("my-env", num_envs=64, seed=0, size=10)

An entry is a class or a lazy ``"module:Class"`` string (so importing :mod:`marra.envs` stays
cheap). The options of an environment are the keyword arguments of its ``__init__`` besides
``num_envs``, ``device``, ``seed`` and ``autoreset``; their defaults and annotations come from
the signature, their help from the ``Args:`` section of the class docstring.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import EnvError

if typing.TYPE_CHECKING:
    from .base import MultiAgentEnv

__all__ = [
    "register",
    "make",
    "registered",
    "env_class",
    "env_options",
    "gym_id",
    "parse_option",
    "OptionInfo",
]

#: keyword arguments every environment takes; not "options"
COMMON_ARGUMENTS = ("num_envs", "device", "seed", "autoreset")


@dataclass
class _Entry:
    name: str
    entry: str | type
    description: str = ""
    gym: bool = True


_REGISTRY: dict[str, _Entry] = {}


def gym_id(name: str) -> str:
    """The Gymnasium id of a registered name: ``"ride-hailing"`` -> ``"marra/RideHailing-v0"``."""
    camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_ ]+", name) if part)
    return f"marra/{camel}-v0"


def register(
    name: str,
    entry: str | type,
    *,
    description: str = "",
    overwrite: bool = False,
    gym: bool = True,
) -> None:
    """Register a batched environment class under ``name``.

    Args:
        name: lower-case name with letters, digits and ``-`` (``"roles"``, ``"ride-hailing"``).
        entry: a :class:`MultiAgentEnv` subclass or ``"module:Class"`` (imported on first use).
        description: one line for ``marra envs``.
        overwrite: replace an existing registration (otherwise an error).
        gym: also register the Gymnasium id :func:`gym_id` (one copy, joint action) and its
            vector entry point (the batched env as a ``gymnasium.vector.VectorEnv``).

    Raises:
        EnvError: a bad name, a taken name without ``overwrite``, or an entry that is not a
            class or a ``"module:Class"`` string.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise EnvError(f"name: lower-case letters, digits and '-', got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise EnvError(f"name: {name!r} is already registered (pass overwrite=True to replace it)")
    if isinstance(entry, str):
        if ":" not in entry:
            raise EnvError(f"entry: expected 'module:Class', got {entry!r}")
    elif not (isinstance(entry, type) and _is_env_class(entry)):
        raise EnvError(f"entry: expected a MultiAgentEnv subclass or 'module:Class', got {entry!r}")
    _REGISTRY[name] = _Entry(name, entry, description, gym)
    if gym:
        _register_gym(name)


def _is_env_class(entry: type) -> bool:
    from .base import MultiAgentEnv

    return issubclass(entry, MultiAgentEnv)


def _register_gym(name: str) -> None:
    from gymnasium.envs.registration import register as gym_register
    from gymnasium.envs.registration import registry as gym_registry

    identifier = gym_id(name)
    if identifier in gym_registry:
        return
    gym_register(
        id=identifier,
        entry_point=f"marra.envs.views:_gym_entry_{_slot(name)}",
        vector_entry_point=f"marra.envs.views:_vector_entry_{_slot(name)}",
        kwargs={},
        disable_env_checker=False,
    )


def _slot(name: str) -> str:
    return name.replace("-", "_")


def registered() -> list[str]:
    """The registered environment names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise EnvError(
            f"env: unknown environment {name!r}; registered: {', '.join(registered()) or '(none)'}"
        )
    return _REGISTRY[name]


def env_class(name: str) -> type[MultiAgentEnv]:
    """The class registered under ``name`` (imported on first use)."""
    entry = _entry(name)
    if isinstance(entry.entry, str):
        module_name, _, attr = entry.entry.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise EnvError(f"env {name!r}: cannot import {entry.entry!r}: {exc}") from exc
        entry.entry = cls
    return entry.entry


def description(name: str) -> str:
    entry = _entry(name)
    if entry.description:
        return entry.description
    doc = inspect.getdoc(env_class(name)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class OptionInfo:
    """One option of an environment: its name, default, annotation text and help line."""

    name: str
    default: Any
    annotation: str
    help: str
    required: bool = False


def _arg_help(cls: type) -> dict[str, str]:
    """``name -> first line`` from the ``Args:`` section of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    out: dict[str, str] = {}
    inside = False
    current: str | None = None
    for line in lines:
        if line.strip() in ("Args:", "Options:", "Arguments:"):
            inside = True
            continue
        if inside:
            if line and not line.startswith(" "):
                inside = False
                continue
            match = re.match(r"^    ([A-Za-z_][A-Za-z0-9_, ]*):\s*(.*)$", line)
            if match:
                names = [n.strip() for n in match.group(1).split(",")]
                for n in names:
                    out[n] = match.group(2).strip()
                current = names[-1]
            elif current and line.strip() and line.startswith("        "):
                for n in list(out):
                    if n == current:
                        out[n] = (out[n] + " " + line.strip()).strip()
    return out


def env_options(name: str) -> dict[str, OptionInfo]:
    """The documented options of environment ``name`` (keyword arguments of its class besides
    ``num_envs``, ``device``, ``seed``, ``autoreset``), in signature order."""
    cls = env_class(name)
    signature = inspect.signature(cls.__init__)
    helps = _arg_help(cls)
    options: dict[str, OptionInfo] = {}
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.name in COMMON_ARGUMENTS or parameter.kind in (
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            continue
        annotation = parameter.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        required = parameter.default is inspect.Parameter.empty
        options[parameter.name] = OptionInfo(
            parameter.name,
            None if required else parameter.default,
            str(text).replace("typing.", ""),
            helps.get(parameter.name, ""),
            required,
        )
    return options


def _kinds(cls: type, name: str, info: OptionInfo) -> set[str]:
    """The plain types an option accepts, from its annotation (or its default)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable forward references: fall back to the text
        hints = {}
    text = info.annotation
    hint = hints.get(name)
    if hint is not None:
        text = str(hint)
    kinds = set()
    for word, kind in (
        ("bool", "bool"),
        ("int", "int"),
        ("float", "float"),
        ("str", "str"),
        ("None", "none"),
        ("dict", "json"),
        ("Mapping", "json"),
        ("list", "json"),
        ("tuple", "json"),
        ("Sequence", "json"),
        ("Literal", "str"),
    ):
        if re.search(rf"\b{word}\b", text):
            kinds.add(kind)
    if hint is not None and hint is bool:
        kinds = {"bool"}
    if not kinds and info.default is not None:
        kinds.add(type(info.default).__name__)
    return kinds or {"str"}


def parse_option(name: str, text: str) -> tuple[str, Any]:
    """Parse one ``KEY=VALUE`` option of environment ``name`` (the ``--env-option`` syntax) into
    a typed value by the option's annotation: bools (``true/false/1/0/yes/no``), ints, floats,
    ``none``, JSON lists and dicts, else the string.

    Raises:
        EnvError: no ``=``, an unknown key (listing the known ones) or a value of the wrong type.
    """
    if "=" not in text:
        raise EnvError(f"--env-option: expected KEY=VALUE, got {text!r}")
    key, _, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    options = env_options(name)
    if key not in options:
        raise EnvError(
            f"--env-option {key}: {name} has no option {key!r}; its options are "
            f"{', '.join(options) or '(none)'}"
        )
    kinds = _kinds(env_class(name), key, options[key])
    lowered = raw.lower()
    if lowered in ("none", "null") and ("none" in kinds or options[key].default is None):
        return key, None
    if "bool" in kinds and lowered in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return key, lowered in ("true", "1", "yes", "on")
    if "int" in kinds:
        try:
            return key, int(raw)
        except ValueError:
            pass
    if "float" in kinds:
        try:
            return key, float(raw)
        except ValueError:
            pass
    if "json" in kinds and raw[:1] in "[{":
        try:
            return key, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EnvError(f"--env-option {key}: not valid JSON ({exc.msg}): {raw!r}") from None
    if "str" in kinds:
        return key, raw
    expected = " or ".join(sorted(k for k in kinds if k != "none"))
    raise EnvError(f"--env-option {key}: expected {expected}, got {raw!r}")


def make(
    name: str,
    *,
    num_envs: int = 1,
    seed: int | None = None,
    device: str = "cpu",
    autoreset: bool = False,
    **options: Any,
) -> MultiAgentEnv:
    """A new instance of environment ``name`` with ``num_envs`` copies.

    Raises:
        EnvError: unknown name (listing the registered ones), unknown option (listing the valid
            ones), or a value the environment rejects (its message names the option).
    """
    cls = env_class(name)
    known = env_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise EnvError(
            f"option {unknown[0]!r}: {name} has no such option; its options are "
            f"{', '.join(known) or '(none)'}"
        )
    try:
        env = cls(num_envs=num_envs, seed=seed, device=device, autoreset=autoreset, **options)
    except EnvError:
        raise
    except (ValueError, TypeError) as exc:
        raise EnvError(str(exc)) from exc
    return env


EnvFactory = Callable[..., "MultiAgentEnv"]
