"""Sweeps: methods x environments x seeds, each cell an idempotent, resumable job.

A sweep is data: a TOML SPEC (``docs/sweeps.md``) names the seeds, the evaluation episodes, the
environments (with their options) and the methods (learners with any :class:`~marra.rl.PPOConfig`
field or ``marra train`` option, or a baseline of the environment)::

    seeds = [1, 2, 3]
    episodes = 10
    [[envs]]
    name = "roles"
    options = { num_agents = 8, num_roles = 4 }
    [[methods]]
    name = "ippo-id"
    algo = "ippo"
    sharing = "id"
    steps = 20000
    [[methods]]
    name = "random"
    baseline = "random"

Every cell of the product is one run (:func:`run_cell`): train (a learner, with
:func:`marra.rl.train`, resuming from the cell's own checkpoint) then evaluate (with
:func:`marra.experiments.evaluate.evaluate`, on the episodes seeded by the cell's seed, the same
for every method): exactly ``marra train`` + ``marra evaluate``. A cell lives in
``DIR/cells/<hash>/``, the hash of its full configuration (environment and options, the whole
training config or the baseline, seed, episodes); it is finished only once its ``result.json``
has been written atomically, so a rerun skips finished cells and resumes the others. Labels are
not part of the hash: two method entries with the same configuration share one cell.

:func:`run_sweep` maps the unfinished cells onto a backend: ``"local"`` (a process pool, one
torch thread per worker) or ``"ray"`` (Ray core tasks on a running cluster or a local Ray), then
writes ``DIR/results.csv`` (tidy: ``env,method,seed,episode,metric,value,cell``),
``DIR/results.parquet`` when pyarrow is installed, ``DIR/failures.csv`` and
``DIR/manifest.json``. Results depend only on the cells' configurations, never on the backend,
the number of workers or the order in which cells finish.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
import threading
import time
import tomllib
import traceback
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from marra._io import OutputPathError, atomic_write_text, check_output_dir

__all__ = [
    "SpecError",
    "SweepError",
    "EnvEntry",
    "MethodEntry",
    "SweepSpec",
    "Cell",
    "GridEntry",
    "SweepPlan",
    "SweepOutcome",
    "load_spec",
    "parse_spec",
    "plan_sweep",
    "run_cell",
    "cell_status",
    "prepare_sweep_dir",
    "run_sweep",
    "write_sweep_results",
    "read_sweep",
    "learner_keys",
    "config_class",
    "RESULT_COLUMNS",
    "TRAIN_ALIASES",
]

#: Columns of ``DIR/results.csv``.
RESULT_COLUMNS = ("env", "method", "seed", "episode", "metric", "value", "cell")
SWEEP_FILE = "sweep.json"
RESULT_FILE = "result.json"
CELL_FILE = "cell.json"
ERROR_FILE = "error.txt"
CELLS_DIR = "cells"
SPEC_FORMAT = 1
CELL_FORMAT = 1

#: ``marra train`` option names that are not :class:`~marra.rl.PPOConfig` field names. Every
#: field of the learner's config class (PPOConfig, or ``ALGORITHMS[algo].config_cls``) is a
#: method key under its own name (found by introspection), so a new field or a new learner with
#: its own config is accepted by sweeps without any change here.
TRAIN_ALIASES = {"steps": "total_steps"}
#: Method keys of the sweep itself.
METHOD_KEYS = ("name", "baseline", "env_options", "envs", "seeds")
#: PPOConfig fields a method may not set, and why.
FORBIDDEN_KEYS = {"seed": "the seeds come from a `seeds` list (top-level or the method's)"}
TOP_KEYS = ("seeds", "episodes", "envs", "methods", "title", "report")
ENV_KEYS = ("name", "label", "options")
REPORT_KEYS = ("lower_is_better", "higher_is_better")
MAX_EPISODES = 1_000_000


class SpecError(ValueError):
    """A SPEC that cannot run; the message is one line naming the field (``methods[1].steps``)."""


class SweepError(RuntimeError):
    """A sweep that cannot go on (e.g. a worker that cannot see the sweep folder)."""


# ---------------------------------------------------------------------------------- the SPEC
@dataclass(frozen=True)
class EnvEntry:
    """One ``[[envs]]`` entry: a registered environment with options, under a label."""

    label: str
    name: str
    options: dict[str, Any]


@dataclass(frozen=True)
class MethodEntry:
    """One ``[[methods]]`` entry: a learner (``train`` holds PPOConfig keyword arguments, without
    the seed) or a baseline of the environment (``baseline``)."""

    label: str
    baseline: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    env_options: dict[str, Any] = field(default_factory=dict)
    envs: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None

    @property
    def is_learner(self) -> bool:
        return self.baseline is None


@dataclass(frozen=True)
class SweepSpec:
    """A validated SPEC (:func:`parse_spec`)."""

    seeds: tuple[int, ...]
    episodes: int
    envs: tuple[EnvEntry, ...]
    methods: tuple[MethodEntry, ...]
    title: str = "sweep"
    lower_is_better: tuple[str, ...] = ()
    higher_is_better: tuple[str, ...] = ()

    def grid_dict(self) -> dict[str, Any]:
        """The part of the SPEC that decides the cells (what a rerun must not change)."""
        return {
            "seeds": list(self.seeds),
            "episodes": self.episodes,
            "envs": [dataclasses.asdict(e) for e in self.envs],
            "methods": [
                {
                    **dataclasses.asdict(m),
                    "envs": None if m.envs is None else list(m.envs),
                    "seeds": None if m.seeds is None else list(m.seeds),
                }
                for m in self.methods
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain JSON values."""
        return {
            **self.grid_dict(),
            "title": self.title,
            "report": {
                "lower_is_better": list(self.lower_is_better),
                "higher_is_better": list(self.higher_is_better),
            },
        }

    def fingerprint(self) -> str:
        from marra.experiments.results import config_fingerprint

        return config_fingerprint(_jsonable(self.grid_dict()))


def config_class(algo: str | None = None) -> Any:
    """The config dataclass of a learner: ``ALGORITHMS[algo].config_cls``, or
    :class:`~marra.rl.PPOConfig` (the PPO family, and ``algo`` None)."""
    import marra.rl

    info = marra.rl.ALGORITHMS.get(algo) if algo is not None else None
    return getattr(info, "config_cls", None) or marra.rl.PPOConfig


def learner_keys(algo: str | None = None) -> dict[str, str]:
    """Every key a learner method may set -> the config field it sets: the fields of the
    learner's config class (introspected, :func:`config_class`) and :data:`TRAIN_ALIASES`."""
    fields = dataclasses.fields(config_class(algo))
    keys = {f.name: f.name for f in fields if f.name not in FORBIDDEN_KEYS}
    keys.update(TRAIN_ALIASES)
    return keys


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a TOML SPEC file.

    Raises:
        SpecError: the file cannot be read, is not TOML, or a field is wrong (one line naming it).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"SPEC {path}: file not found") from None
    except IsADirectoryError:
        raise SpecError(f"SPEC {path}: is a folder, expected a TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"SPEC {path}: cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"SPEC {path}: not valid TOML ({_one_line(exc)})") from None
    return parse_spec(data)


def parse_spec(data: Mapping[str, Any]) -> SweepSpec:
    """Validate a SPEC given as a mapping (the parsed TOML); see the module docstring.

    Environments are built once (one copy) to check their options and to learn their
    baselines; every learner's config is built and checked against every environment it runs on.

    Raises:
        SpecError: one line naming the field, e.g. ``methods[1] (ippo).steps: expected an
            integer, got '100'`` or ``seeds: 2 appears twice``.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"SPEC: expected a table, got {type(data).__name__}")
    _unknown_keys(data, TOP_KEYS, "SPEC")
    seeds = _seeds(data.get("seeds"))
    episodes = data.get("episodes", 10)
    if not _is_int(episodes) or not 1 <= episodes <= MAX_EPISODES:
        raise SpecError(
            f"episodes: expected an integer from 1 to {MAX_EPISODES:,}, got {episodes!r}"
        )
    title = data.get("title", "sweep")
    if not isinstance(title, str) or not title.strip():
        raise SpecError(f"title: expected a non-empty string, got {title!r}")
    envs = _envs(data.get("envs"))
    methods = _methods(data.get("methods"), envs)
    report = data.get("report", {})
    if not isinstance(report, Mapping):
        raise SpecError(f"report: expected a table, got {_type(report)}")
    _unknown_keys(report, REPORT_KEYS, "report")
    directions = {}
    for key in REPORT_KEYS:
        names = report.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SpecError(f"report.{key}: expected a list of metric names, got {names!r}")
        directions[key] = tuple(names)
    both = set(directions["lower_is_better"]) & set(directions["higher_is_better"])
    if both:
        raise SpecError(f"report: metric {sorted(both)[0]!r} is both lower and higher is better")
    spec = SweepSpec(
        seeds=seeds, episodes=int(episodes), envs=envs, methods=methods, title=title.strip(),
        lower_is_better=directions["lower_is_better"],
        higher_is_better=directions["higher_is_better"],
    )  # fmt: skip
    if not plan_sweep(spec).cells:
        raise SpecError("methods: no method runs on any environment (every cell is skipped)")
    return spec


def _seeds(value: Any, where: str = "seeds") -> tuple[int, ...]:
    if value is None:
        raise SpecError(f"{where}: missing; give a list of integers, e.g. seeds = [1, 2, 3]")
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a list of integers, got {_type(value)} {value!r}")
    if not value:
        raise SpecError(f"{where}: the list is empty; give at least one seed")
    seen: set[int] = set()
    for i, seed in enumerate(value):
        if not _is_int(seed) or not 0 <= seed < 2**63:
            raise SpecError(f"{where}[{i}]: expected an integer from 0 to 2**63 - 1, got {seed!r}")
        if seed in seen:
            raise SpecError(f"{where}: {seed} appears twice")
        seen.add(seed)
    return tuple(int(s) for s in value)


def _envs(value: Any) -> tuple[EnvEntry, ...]:
    from marra.envs import EnvError, make, registered

    if value is None:
        raise SpecError('envs: missing; add at least one [[envs]] table with name = "..."')
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise SpecError(f"envs: expected an array of tables ([[envs]]), got {_type(value)}")
    if not value:
        raise SpecError("envs: the list is empty; add at least one [[envs]] table")
    entries: list[EnvEntry] = []
    for i, raw in enumerate(value):
        where = f"envs[{i}]"
        _unknown_keys(raw, ENV_KEYS, where)
        name = raw.get("name")
        if name is None:
            raise SpecError(f"{where}.name: missing; registered: {', '.join(registered())}")
        if not isinstance(name, str):
            raise SpecError(f"{where}.name: expected a string, got {_type(name)} {name!r}")
        if name not in registered():
            raise SpecError(
                f"{where}.name: unknown environment {name!r}; registered: {', '.join(registered())}"
            )
        label = raw.get("label", name)
        if not isinstance(label, str) or not label.strip():
            raise SpecError(f"{where}.label: expected a non-empty string, got {label!r}")
        options = raw.get("options", {})
        if not isinstance(options, Mapping):
            raise SpecError(f"{where}.options: expected a table, got {_type(options)} {options!r}")
        options = _jsonable(dict(options))
        if any(e.label == label for e in entries):
            raise SpecError(
                f"{where}.label: {label!r} is used twice; give each [[envs]] its own label"
            )
        try:
            make(name, num_envs=1, seed=0, **options).close()
        except EnvError as exc:
            raise SpecError(f"{where} ({label}).options: {_one_line(exc)}") from None
        except ImportError as exc:
            raise SpecError(f"{where}.name: {name} is not available ({_one_line(exc)})") from None
        entries.append(EnvEntry(label=label, name=name, options=options))
    return tuple(entries)


def _methods(value: Any, envs: Sequence[EnvEntry]) -> tuple[MethodEntry, ...]:
    from marra.envs import EnvError, make
    from marra.rl import ALGORITHMS, CompatibilityError

    if value is None:
        raise SpecError('methods: missing; add at least one [[methods]] table with name = "..."')
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise SpecError(f"methods: expected an array of tables ([[methods]]), got {_type(value)}")
    if not value:
        raise SpecError("methods: the list is empty; add at least one [[methods]] table")
    specs = {e.label: make(e.name, num_envs=1, seed=0, **e.options).spec for e in envs}
    labels = [e.label for e in envs]
    entries: list[MethodEntry] = []
    for i, raw in enumerate(value):
        raw = {str(k).replace("-", "_"): v for k, v in raw.items()}
        label = raw.get("name")
        if label is None:
            raise SpecError(f'methods[{i}].name: missing; every method needs a label, name = "..."')
        if not isinstance(label, str) or not label.strip():
            raise SpecError(f"methods[{i}].name: expected a non-empty string, got {label!r}")
        where = f"methods[{i}] ({label})"
        if any(m.label == label for m in entries):
            raise SpecError(f"methods[{i}].name: {label!r} is used twice; labels must differ")
        algo = raw.get("algo", config_class().algo)
        if not isinstance(algo, str) or algo not in ALGORITHMS:
            raise SpecError(
                f"{where}.algo: unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        cls = config_class(algo)
        keys = learner_keys(algo)
        hints = typing.get_type_hints(cls)
        for key in raw:
            if key in FORBIDDEN_KEYS:
                raise SpecError(f"{where}.{key}: not a method key; {FORBIDDEN_KEYS[key]}")
            if key not in METHOD_KEYS and key not in keys:
                valid = ", ".join(sorted({*METHOD_KEYS, *keys}))
                raise SpecError(f"{where}.{key}: unknown key; valid keys: {valid}")
        env_options = raw.get("env_options", {})
        if not isinstance(env_options, Mapping):
            raise SpecError(f"{where}.env_options: expected a table, got {_type(env_options)}")
        env_options = _jsonable(dict(env_options))
        only = raw.get("envs")
        if only is not None:
            if not isinstance(only, list) or not all(isinstance(x, str) for x in only) or not only:
                raise SpecError(f"{where}.envs: expected a non-empty list of env labels")
            for name in only:
                if name not in labels:
                    raise SpecError(
                        f"{where}.envs: no [[envs]] labelled {name!r}; labels: {', '.join(labels)}"
                    )
            only = tuple(only)
        runs_on = [e for e in envs if only is None or e.label in only]
        seeds = None if raw.get("seeds") is None else _seeds(raw["seeds"], f"{where}.seeds")
        baseline = raw.get("baseline")
        if baseline is not None:
            if not isinstance(baseline, str):
                raise SpecError(f"{where}.baseline: expected a string, got {_type(baseline)}")
            extra = sorted(k for k in raw if k not in METHOD_KEYS)
            if extra:
                raise SpecError(
                    f"{where}.{extra[0]}: a baseline is evaluated, not trained; drop the key "
                    "or the baseline"
                )
            having = [e for e in runs_on if baseline in specs[e.label].baselines]
            if not having:
                offered = sorted({b for e in runs_on for b in specs[e.label].baselines})
                raise SpecError(
                    f"{where}.baseline: no environment of the sweep has a baseline "
                    f"{baseline!r}; their baselines: {', '.join(offered) or '(none)'}"
                )
            entries.append(
                MethodEntry(
                    label=label, baseline=baseline, env_options=env_options, envs=only, seeds=seeds
                )  # fmt: skip
            )
            _check_env_options(where, env_options, runs_on)
            continue
        train: dict[str, Any] = {}
        for key, raw_value in raw.items():
            if key in METHOD_KEYS:
                continue
            target = keys[key]
            if target in train:
                raise SpecError(f"{where}.{key}: sets {target} a second time")
            hint = Any if target == "algo" else hints.get(target, Any)  # algo: checked above
            train[target] = _typed(f"{where}.{key}", raw_value, hint)
        try:
            config = cls(**train, seed=0)
        except (ValueError, TypeError) as exc:
            message = _one_line(exc)
            for alias, target in TRAIN_ALIASES.items():
                if alias in raw and message.startswith(f"{target}:"):
                    message = f"{alias}{message[len(target) :]}"
            raise SpecError(f"{where}: {message}") from None
        for env in runs_on:
            options = {**env.options, **env_options}
            try:
                env_spec = make(env.name, num_envs=1, seed=0, **options).spec
                _check_learner(config, env_spec)
            except EnvError as exc:
                raise SpecError(f"{where}.env_options on {env.label}: {_one_line(exc)}") from None
            except CompatibilityError as exc:
                raise SpecError(f"{where} on envs {env.label!r}: {_one_line(exc)}") from None
        entries.append(MethodEntry(label=label, train=_jsonable(train), env_options=env_options,
                                   envs=only, seeds=seeds))  # fmt: skip
    return tuple(entries)


def _check_learner(config: Any, spec: Any) -> None:
    """A learner against an environment, before anything runs: the capability flags of
    ``ALGORITHMS[config.algo]`` for every learner, and :func:`marra.rl.check_compatible` for the
    PPO family (the rest is checked when the learner is built, at the cell's start)."""
    from marra.rl import ALGORITHMS, CompatibilityError, PPOConfig, check_compatible

    info = ALGORITHMS[config.algo]
    kind = spec.action.kind
    if (kind == "discrete" and not info.discrete) or (kind == "continuous" and not info.continuous):
        raise CompatibilityError(
            f"algo {config.algo!r} does not support {kind} actions, which {spec.name} has"
        )
    if info.needs_state and spec.state_dim < 1:
        raise CompatibilityError(f"algo {config.algo!r} needs env.state(); {spec.name} has none")
    if isinstance(config, PPOConfig):
        check_compatible(config, spec)


def _check_env_options(where: str, env_options: dict[str, Any], envs: Iterable[EnvEntry]) -> None:
    from marra.envs import EnvError, make

    if not env_options:
        return
    for env in envs:
        try:
            make(env.name, num_envs=1, seed=0, **{**env.options, **env_options}).close()
        except EnvError as exc:
            raise SpecError(f"{where}.env_options on {env.label}: {_one_line(exc)}") from None


def _typed(where: str, value: Any, hint: Any) -> Any:
    """``value`` checked against a PPOConfig field's annotation (a new field needs no code
    here): bools, ints, floats (ints become floats), strings, ``Literal`` choices, tuples (from
    TOML arrays) and unions of these; anything else is left to PPOConfig's own validation."""
    ok, converted = _match(value, hint)
    if not ok:
        raise SpecError(f"{where}: expected {_describe(hint)}, got {_type(value)} {value!r}")
    return converted


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, converted = _match(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in typing.get_args(hint), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return _is_int(value), value
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, value
        args = typing.get_args(hint)
        element = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        out = []
        for item in value:
            ok, converted = _match(item, element)
            if not ok:
                return False, value
            out.append(converted)
        return True, tuple(out)
    return True, value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is tuple:
        return "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))


# ---------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Cell:
    """One run: train (``train`` is a PPOConfig dict, seed included) or a baseline, then
    evaluate ``episodes`` episodes seeded by ``seed``. ``key`` is the hash of :meth:`config`."""

    env: str
    options: dict[str, Any]
    seed: int
    episodes: int
    train: dict[str, Any] | None
    baseline: str | None

    def config(self) -> dict[str, Any]:
        """The full configuration the cell's hash is taken of."""
        return _jsonable({
            "format": CELL_FORMAT, "env": self.env, "options": self.options, "seed": self.seed,
            "episodes": self.episodes, "eval_seed": self.seed, "train": self.train,
            "baseline": self.baseline,
        })  # fmt: skip

    @property
    def key(self) -> str:
        from marra.experiments.results import config_fingerprint

        return config_fingerprint(self.config())

    @property
    def cost(self) -> int:
        """A rough work estimate (env-steps to train), to start the longest cells first."""
        return 0 if self.train is None else int(self.train.get("total_steps", 0))


@dataclass(frozen=True)
class GridEntry:
    """One (environment label, method label, seed) of the product and its cell."""

    env: str
    method: str
    seed: int
    cell: str


@dataclass
class SweepPlan:
    """The cells of a SPEC (unique, by key, in grid order), the grid and the skipped pairs."""

    cells: dict[str, Cell]
    grid: list[GridEntry]
    skipped: list[dict[str, str]]


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Every (env, method, seed) of ``spec`` as a cell; a method whose baseline an environment
    lacks (or that lists other environments in ``envs``) is skipped there, with the reason."""
    from marra.envs import make

    baselines = {e.label: make(e.name, num_envs=1, seed=0, **e.options).spec.baselines
                 for e in spec.envs}  # fmt: skip
    cells: dict[str, Cell] = {}
    grid: list[GridEntry] = []
    skipped: list[dict[str, str]] = []
    for env in spec.envs:
        for method in spec.methods:
            if method.envs is not None and env.label not in method.envs:
                skipped.append({"env": env.label, "method": method.label,
                                "reason": "not among the method's envs"})  # fmt: skip
                continue
            if method.baseline is not None and method.baseline not in baselines[env.label]:
                reason = f"{env.name} has no baseline {method.baseline!r}"
                skipped.append({"env": env.label, "method": method.label, "reason": reason})
                continue
            options = {**env.options, **method.env_options}
            for seed in method.seeds or spec.seeds:
                train = None
                if method.is_learner:
                    cls = config_class(method.train.get("algo", config_class().algo))
                    train = cls(**_ppo_arguments(method.train), seed=seed).to_dict()
                cell = Cell(env=env.name, options=options, seed=seed, episodes=spec.episodes,
                            train=train, baseline=method.baseline)  # fmt: skip
                key = cell.key
                cells.setdefault(key, cell)
                grid.append(GridEntry(env=env.label, method=method.label, seed=seed, cell=key))
    return SweepPlan(cells=cells, grid=grid, skipped=skipped)


def _ppo_arguments(train: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in train.items()}


# ---------------------------------------------------------------------------------- one cell
def cell_dir(root: str | os.PathLike[str], key: str) -> Path:
    return Path(root) / CELLS_DIR / key


def cell_status(root: str | os.PathLike[str], key: str) -> str:
    """``"done"`` (its result is written), ``"partial"`` (a checkpoint to resume from) or
    ``"todo"``."""
    folder = cell_dir(root, key)
    if (folder / RESULT_FILE).exists():
        return "done"
    if (folder / "checkpoint.pt").exists():
        return "partial"
    return "todo"


def run_cell(cell: Cell, root: str | os.PathLike[str]) -> dict[str, Any]:
    """Run one cell in ``root/cells/<key>/`` and return its result (also written, atomically and
    last, to ``result.json``): train (a learner; resumed from the folder's ``checkpoint.pt`` when
    one is there) then evaluate on ``cell.episodes`` episodes seeded by ``cell.seed``.

    Idempotent: a finished cell returns its stored result. A failure writes ``error.txt`` (the
    traceback) in the cell folder and raises.

    Raises:
        SweepError: ``root`` holds no sweep (e.g. a Ray worker on a machine that does not share
            the sweep folder's file system).
    """
    root = Path(root)
    folder = cell_dir(root, cell.key)
    done = folder / RESULT_FILE
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    if not (root / SWEEP_FILE).exists():
        import socket

        raise SweepError(
            f"{root}: no {SWEEP_FILE} here on host {socket.gethostname()}; every worker must "
            "see the sweep folder (put --out on a file system shared by all machines)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CELL_FILE, json.dumps(cell.config(), indent=2) + "\n")
    (folder / ERROR_FILE).unlink(missing_ok=True)
    try:
        return _run_cell(cell, folder)
    except BaseException:
        with contextlib.suppress(OSError):
            atomic_write_text(folder / ERROR_FILE, traceback.format_exc())
        raise


def _run_cell(cell: Cell, folder: Path) -> dict[str, Any]:
    from marra.experiments.evaluate import BaselineRunner, evaluate, policy_runner

    start, cpu_start = time.perf_counter(), time.process_time()
    resumed = False
    train_s = 0.0
    env_steps = 0
    if cell.train is not None:
        from marra.rl import train
        from marra.rl.loop import CHECKPOINT_NAME, POLICY_NAME

        config = config_class(cell.train.get("algo")).from_dict(cell.train)
        resumed = (folder / CHECKPOINT_NAME).exists()
        trained = train(config, cell.options, env=cell.env, out_dir=folder, resume=resumed,
                        overwrite=not resumed, progress=False)  # fmt: skip
        train_s = time.perf_counter() - start
        env_steps = trained.env_steps
        runner: Any = policy_runner(folder / POLICY_NAME, seed=cell.seed)  # FEN: the hierarchy
        label = "policy"
    else:
        runner = BaselineRunner(str(cell.baseline), seed=cell.seed)
        label = str(cell.baseline)
    tick = time.perf_counter()
    evaluation = evaluate(cell.env, cell.options, {label: runner}, episodes=cell.episodes,
                          seed=cell.seed)  # fmt: skip
    eval_s = time.perf_counter() - tick
    import socket

    result = {
        "format": CELL_FORMAT,
        "cell": cell.key,
        "rows": [[episode, metric, value] for _, _, _, episode, metric, value in evaluation.rows],
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu_start,
        "train_s": train_s,
        "eval_s": eval_s,
        "env_steps": env_steps,
        "resumed": resumed,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    atomic_write_text(folder / RESULT_FILE, json.dumps(result) + "\n")
    return result


# ---------------------------------------------------------------------------------- the folder
def prepare_sweep_dir(
    spec: SweepSpec, out: str | os.PathLike[str], *, spec_text: str | None = None,
    plan: SweepPlan | None = None, create: bool = True,
) -> Path:  # fmt: skip
    """Check that ``out`` is new, empty or holds a sweep of the same SPEC; unless ``create`` is
    False, create it and write ``sweep.json`` (and ``spec.toml``, the SPEC's text, when given).

    Raises:
        SpecError: ``out`` is a file, holds other files, or holds a sweep of another SPEC (the
            changed keys named).
    """
    out = Path(out)
    try:
        check_output_dir(out)
    except OutputPathError as exc:
        raise SpecError(f"--out: {exc}") from None
    marker = out / SWEEP_FILE
    if marker.exists():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
            saved_grid = saved["spec"]
            saved_print = saved["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpecError(f"--out: {marker} is damaged ({_one_line(exc)})") from None
        if saved_print != spec.fingerprint():
            grid = _jsonable(spec.grid_dict())
            changed = [k for k in grid if saved_grid.get(k) != grid[k]] or ["the cells"]
            raise SpecError(
                f"--out: {out} holds a sweep of another SPEC (changed: {', '.join(changed)}); "
                "rerun with the same SPEC to resume it, or choose a new --out folder"
            )
    elif out.exists() and any(out.iterdir()):
        raise SpecError(
            f"--out: {out} holds other files and no {SWEEP_FILE}; choose a new or empty folder"
        )
    if not create:
        return out
    plan = plan or plan_sweep(spec)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": SPEC_FORMAT,
        "fingerprint": spec.fingerprint(),
        "spec": _jsonable(spec.grid_dict()),
        "title": spec.title,
        "report": spec.to_dict()["report"],
        "grid": [dataclasses.asdict(g) for g in plan.grid],
        "skipped": plan.skipped,
    }
    atomic_write_text(marker, json.dumps(payload, indent=2) + "\n")
    if spec_text is not None and not (out / "spec.toml").exists():
        atomic_write_text(out / "spec.toml", spec_text)
    return out


def read_sweep(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``DIR/sweep.json`` of a sweep folder.

    Raises:
        SpecError: no sweep there, or a damaged file.
    """
    marker = Path(out) / SWEEP_FILE
    if not marker.exists():
        raise SpecError(f"DIR: {out} holds no sweep (no {SWEEP_FILE}); run `marra sweep` first")
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"DIR: {marker} is damaged ({_one_line(exc)})") from None


# ---------------------------------------------------------------------------------- backends
Event = Literal["start", "done", "failed"]
Callback = Callable[[Event, Cell, Any], None]


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _init_worker(parent: int) -> None:
    """A pool worker: one thread for every numeric library, and die with the sweep (a killed
    sweep must not leave workers writing into cell folders a rerun is using)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="marra-sweep-parent-watch").start()


def _run_local(cells: Sequence[Cell], root: Path, workers: int, callback: Callback) -> None:
    """The cells on a process pool of ``workers`` spawned processes, at most ``workers`` in
    flight; a pool whose worker died is replaced (its running cells fail)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = deque(cells)
    context = multiprocessing.get_context("spawn")
    while pending:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(os.getpid(),))  # fmt: skip
        in_flight: dict[Any, Cell] = {}
        broken = False
        try:
            while (pending and not broken) or in_flight:
                while pending and not broken and len(in_flight) < workers:
                    cell = pending.popleft()
                    try:
                        in_flight[pool.submit(run_cell, cell, str(root))] = cell
                    except BrokenProcessPool:
                        pending.appendleft(cell)
                        broken = True
                        break
                    callback("start", cell, None)
                if not in_flight:
                    break
                finished, _ = wait(list(in_flight), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = in_flight.pop(future)
                    try:
                        callback("done", cell, future.result())
                    except BrokenProcessPool:
                        broken = True
                        callback("failed", cell, SweepError(
                            "its worker process died (killed, or out of memory)"))  # fmt: skip
                    except Exception as exc:
                        callback("failed", cell, exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError(
            "--backend ray: Ray is not installed; install it with pip install 'marra[ray]' "
            "(or pip install ray)"
        ) from None
    return ray


def _run_ray(cells: Sequence[Cell], root: Path, workers: int | None, address: str | None,
             callback: Callback) -> None:  # fmt: skip
    """The cells as Ray tasks (one CPU each) on the cluster at ``address``, or on a local Ray
    with ``workers`` CPUs; at most ``workers`` (default: the cluster's CPUs) in flight. Ray
    retries a task whose worker or node died; the retry resumes from the cell's checkpoint."""
    import logging

    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        settings: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address is None:
            settings.update(num_cpus=workers or default_workers(), include_dashboard=False,
                            object_store_memory=256 * 2**20)  # fmt: skip
        else:
            settings["address"] = address
        ray.init(**settings)
        started = True
    try:
        capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, max_retries=2)(run_cell)
        pending = deque(cells)
        in_flight: dict[Any, Cell] = {}
        while pending or in_flight:
            while pending and len(in_flight) < capacity:
                cell = pending.popleft()
                in_flight[task.remote(cell, str(root))] = cell
                callback("start", cell, None)
            finished, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in finished:
                cell = in_flight.pop(ref)
                try:
                    callback("done", cell, ray.get(ref))
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    callback("failed", cell, cause if isinstance(cause, BaseException) else exc)
                except ray.exceptions.RayError as exc:
                    callback("failed", cell, SweepError(_one_line(exc)))
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------- a sweep
@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did."""

    out: Path
    cells: int
    already_done: int
    ran: int
    failures: list[dict[str, Any]]
    wall_s: float
    results_path: Path
    rows: int
    skipped: list[dict[str, str]]

    @property
    def ok(self) -> bool:
        return not self.failures


def run_sweep(
    spec: SweepSpec,
    out: str | os.PathLike[str],
    *,
    backend: Literal["local", "ray"] = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    spec_text: str | None = None,
    console: Any = None,
) -> SweepOutcome:
    """Run every unfinished cell of ``spec`` into ``out`` and write the sweep's tables.

    Args:
        spec: a validated SPEC (:func:`load_spec`).
        out: the sweep folder (new, empty, or a sweep of the same SPEC to resume).
        backend: ``"local"`` (process pool) or ``"ray"``.
        workers: cells run at once (local: pool processes, default the CPU count; ray: the CPUs
            of a local Ray when ``address`` is None, and at most this many tasks in flight).
        address: a running Ray cluster (``"auto"`` or ``"HOST:PORT"``); only with ray.
        progress: a live bar over cells (done, running, failed, time left).
        spec_text: the SPEC file's text, kept as ``out/spec.toml``.

    Raises:
        SpecError: ``out`` holds another SPEC's sweep, or a bad ``backend``/``workers``.
        SweepError: Ray asked for but not installed.
    """
    if backend not in ("local", "ray"):
        raise SpecError(f"--backend: 'local' or 'ray', got {backend!r}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise SpecError(f"--workers: must be a positive integer, got {workers!r}")
    if address is not None and backend != "ray":
        raise SpecError("--address: only with --backend ray")
    if backend == "ray":
        _import_ray()
    plan = plan_sweep(spec)
    root = prepare_sweep_dir(spec, out, spec_text=spec_text, plan=plan)
    start = time.perf_counter()
    done_before = [k for k in plan.cells if cell_status(root, k) == "done"]
    todo = sorted((c for k, c in plan.cells.items() if k not in set(done_before)),
                  key=lambda c: -c.cost)  # fmt: skip
    failures: list[dict[str, Any]] = []
    labels = _labels_by_cell(plan)
    bar = _SweepProgress(len(plan.cells), len(done_before), enabled=progress, console=console)

    def callback(event: Event, cell: Cell, payload: Any) -> None:
        if event == "start":
            bar.started()
        elif event == "done":
            bar.finished(failed=False)
        else:
            bar.finished(failed=True)
            failures.append(_failure_row(cell, payload, labels.get(cell.key, [])))

    ran = 0
    try:
        with bar:
            if todo:
                if backend == "local":
                    _run_local(todo, root, workers or default_workers(), callback)
                else:
                    _run_ray(todo, root, workers, address, callback)
            ran = bar.processed
    finally:
        wall_s = time.perf_counter() - start
        results_path, rows = write_sweep_results(
            root, plan, spec=spec, failures=failures,
            run={"backend": backend, "workers": workers, "address": address, "wall_s": wall_s},
        )  # fmt: skip
    return SweepOutcome(out=root, cells=len(plan.cells), already_done=len(done_before), ran=ran,
                        failures=failures, wall_s=wall_s, results_path=results_path, rows=rows,
                        skipped=plan.skipped)  # fmt: skip


def _labels_by_cell(plan: SweepPlan) -> dict[str, list[GridEntry]]:
    labels: dict[str, list[GridEntry]] = {}
    for entry in plan.grid:
        labels.setdefault(entry.cell, []).append(entry)
    return labels


def _failure_row(cell: Cell, error: Any, entries: Sequence[GridEntry]) -> dict[str, Any]:
    return {
        "cell": cell.key,
        "env": ";".join(dict.fromkeys(e.env for e in entries)) or cell.env,
        "method": ";".join(dict.fromkeys(e.method for e in entries)),
        "seed": cell.seed,
        "error": type(error).__name__,
        "message": _one_line(error)[:2000],
    }


def write_sweep_results(
    root: Path,
    plan: SweepPlan,
    *,
    spec: SweepSpec,
    failures: Sequence[Mapping[str, Any]] = (),
    run: Mapping[str, Any] | None = None,
) -> tuple[Path, int]:
    """``results.csv`` (grid order, then each cell's evaluation order), ``results.parquet``
    (pyarrow installed), ``failures.csv`` and ``manifest.json``, all atomic, from the cells'
    ``result.json`` files. Returns the results path and its row count."""
    from marra.experiments.results import git_revision, versions

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    columns: dict[str, list[Any]] = {c: [] for c in RESULT_COLUMNS}
    cells: dict[str, dict[str, Any]] = {}
    rows = 0
    for entry in plan.grid:
        result = _read_result(root, entry.cell)
        if result is None:
            continue
        cells.setdefault(entry.cell, result)
        for episode, metric, value in result["rows"]:
            line = (entry.env, entry.method, entry.seed, int(episode), metric, float(value),
                    entry.cell)  # fmt: skip
            writer.writerow([*line[:5], repr(line[5]), line[6]])
            for column, item in zip(RESULT_COLUMNS, line, strict=True):
                columns[column].append(item)
            rows += 1
    results_path = root / "results.csv"
    atomic_write_text(results_path, buffer.getvalue())
    parquet = root / "results.parquet"
    if _have_pyarrow():
        import pandas as pd

        from marra._io import atomic_output

        with atomic_output(parquet, "wb") as handle:
            pd.DataFrame(columns).to_parquet(handle, index=False)
    failure_text = io.StringIO()
    failure_writer = csv.DictWriter(failure_text, ["cell", "env", "method", "seed", "error",
                                                   "message"], lineterminator="\n")  # fmt: skip
    failure_writer.writeheader()
    for failure in failures:
        failure_writer.writerow(failure)
    atomic_write_text(root / "failures.csv", failure_text.getvalue())
    status = {key: ("done" if key in cells else "missing") for key in plan.cells}
    for failure in failures:
        status[failure["cell"]] = "failed"
    manifest = {
        "title": spec.title,
        "spec": spec.to_dict(),
        "fingerprint": spec.fingerprint(),
        "versions": versions(),
        "git_revision": git_revision(),
        "command": " ".join(sys.argv),
        "run": dict(run or {}),
        "counts": {
            "cells": len(plan.cells),
            "done": sum(s == "done" for s in status.values()),
            "failed": len(failures),
            "grid": len(plan.grid),
            "skipped_pairs": len(plan.skipped),
        },
        "skipped": plan.skipped,
        "cells": {
            key: {
                "env": cell.env,
                "labels": [[g.env, g.method] for g in plan.grid if g.cell == key][:1],
                "seed": cell.seed,
                "kind": "learner" if cell.train is not None else "baseline",
                "status": status[key],
                **{k: cells[key][k] for k in _TIMINGS if k in cells.get(key, {})},  # fmt: skip
            }
            for key, cell in plan.cells.items()
        },
    }
    atomic_write_text(root / "manifest.json",
                      json.dumps(manifest, indent=2, default=str) + "\n")  # fmt: skip
    return results_path, rows


#: what ``manifest.json`` keeps of each cell's ``result.json``
_TIMINGS = ("wall_s", "cpu_s", "train_s", "eval_s", "env_steps", "resumed", "host")


def _read_result(root: Path, key: str) -> dict[str, Any] | None:
    path = cell_dir(root, key) / RESULT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


class _SweepProgress:
    """A rich bar over cells: done / running / failed and the time left."""

    def __init__(self, total: int, done: int, *, enabled: bool, console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.done, self.running, self.failed, self.processed = done, 0, 0, 0
        self.bar = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
            TextColumn("[green]{task.fields[done]} done[/] [cyan]{task.fields[running]} "
                       "running[/] [red]{task.fields[failed]} failed[/]"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            disable=not enabled, console=console, speed_estimate_period=3600.0,
        )  # fmt: skip
        self.task = self.bar.add_task("sweep", total=total, completed=done, done=done, running=0,
                                      failed=0)  # fmt: skip

    def __enter__(self) -> _SweepProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def _show(self) -> None:
        self.bar.update(self.task, completed=self.done + self.failed, done=self.done,
                        running=self.running, failed=self.failed)  # fmt: skip

    def started(self) -> None:
        self.running += 1
        self._show()

    def finished(self, *, failed: bool) -> None:
        self.running -= 1
        self.processed += 1
        if failed:
            self.failed += 1
        else:
            self.done += 1
        self._show()


# ---------------------------------------------------------------------------------- helpers
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _unknown_keys(table: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in table:
        if key not in known:
            prefix = key if where == "SPEC" else f"{where}.{key}"
            raise SpecError(f"{prefix}: unknown key; valid keys: {', '.join(known)}")


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def _jsonable(value: Any) -> Any:
    """Plain JSON values (tuples as lists, string keys), so a configuration hashes the same
    however it was written."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
