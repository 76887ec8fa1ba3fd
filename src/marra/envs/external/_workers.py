"""Stepping ``num_envs`` package instances: in this process, or in worker processes over pipes.

numpy only (no torch): a worker process imports this module, builds its block of
:class:`~marra.envs.external._packages.PackageCopy` instances and answers ``reset`` / ``step``
requests until it is told to close or its pipe breaks. The workers are started with the
``forkserver`` (Linux default) or ``spawn`` method, never ``fork``: the parent usually holds
torch, whose threads do not survive a fork.

Both backends answer the same two calls with stacked arrays over the copies they were asked for:

- ``reset(rows, seeds) -> (obs (len(rows), num_agents, obs_dim) float32, mask or None)``;
- ``step(actions (num_envs, num_agents) int64) -> (obs, reward (num_envs, num_agents) float64,
  terminated (num_envs,) bool, package_done (num_envs,) bool, events (num_envs,) float64,
  mask (num_envs, num_agents, num_actions) bool or None)``.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from marra.envs.errors import EnvError

from ._packages import PackageCopy, Source

__all__ = ["SerialBackend", "WorkerPool", "START_METHODS", "default_start_method"]

START_METHODS = ("forkserver", "spawn")

StepArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


def default_start_method() -> str:
    """``forkserver`` where the platform has it (Linux), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _reset_block(
    copies: Sequence[PackageCopy], rows: Sequence[int], seeds: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    results = [copies[int(r)].reset(int(s)) for r, s in zip(rows, seeds, strict=True)]
    obs = np.stack([r[0] for r in results])
    mask = None if results[0][1] is None else np.stack([r[1] for r in results])
    return obs, mask


def _step_block(copies: Sequence[PackageCopy], actions: np.ndarray) -> StepArrays:
    results = [copy.step(row.tolist()) for copy, row in zip(copies, actions, strict=True)]
    obs = np.stack([r[0] for r in results])
    reward = np.stack([r[1] for r in results])
    terminated = np.array([r[2] for r in results], dtype=bool)
    done = np.array([r[3] for r in results], dtype=bool)
    events = np.array([r[4] for r in results], dtype=np.float64)
    mask = None if results[0][5] is None else np.stack([r[5] for r in results])
    return obs, reward, terminated, done, events, mask


class SerialBackend:
    """Every package instance in this process, stepped one after the other."""

    def __init__(self, source: Source, num_envs: int, first: PackageCopy | None = None) -> None:
        self.copies = [first or PackageCopy(source)]
        self.copies += [PackageCopy(source) for _ in range(num_envs - 1)]
        self.workers = 0

    def reset(
        self, rows: Sequence[int], seeds: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return _reset_block(self.copies, rows, seeds)

    def step(self, actions: np.ndarray) -> StepArrays:
        return _step_block(self.copies, actions)

    def close(self) -> None:
        for copy in self.copies:
            copy.env.close()


def _worker_main(conn: Any, source: Source, count: int) -> None:
    """The loop of one worker process: build ``count`` instances, then serve requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    try:
        copies = [PackageCopy(source) for _ in range(count)]
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return
    conn.send(("ok", None))
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        if command == "close":
            break
        try:
            if command == "step":
                out: Any = _step_block(copies, payload)
            elif command == "reset":
                out = _reset_block(copies, *payload)
            else:
                raise ValueError(f"unknown command {command!r}")
            conn.send(("ok", out))
        except Exception:
            conn.send(("error", traceback.format_exc()))
    conn.close()


def _preload_in_forkserver(context: Any) -> None:
    """Add this module and both packages to the forkserver's preload list (keeping what is there,
    ``__main__`` by default), so that workers fork with them imported instead of importing
    gymnasium and the package (about a second) each. It only matters before the forkserver
    starts; the modules are numpy-only, so the server still never holds torch on our account."""
    from multiprocessing import forkserver

    current = list(getattr(forkserver._forkserver, "_preload_modules", ["__main__"]))
    wanted = [__name__, "lbforaging", "rware"]  # a missing package is skipped by the server
    if any(m not in current for m in wanted):
        context.set_forkserver_preload(current + [m for m in wanted if m not in current])


def _shutdown(conns: list[Any], processes: list[Any]) -> None:
    """Ask every worker to close, then join, terminate or kill it (idempotent)."""
    for conn in conns:
        try:
            conn.send(("close", None))
        except (OSError, ValueError, BrokenPipeError):
            pass
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=2)
        if process.is_alive():  # pragma: no cover - a worker that ignores SIGTERM
            process.kill()
            process.join(timeout=2)
    for conn in conns:
        try:
            conn.close()
        except OSError:
            pass


class WorkerPool:
    """``num_envs`` package instances in ``workers`` processes, in contiguous blocks.

    ``step`` sends every worker its block of actions first and then collects the answers, so the
    workers step in parallel. :meth:`close` (or garbage collection of the pool, or interpreter
    exit) shuts the workers down.
    """

    def __init__(
        self, source: Source, num_envs: int, workers: int, start_method: str | None = None
    ) -> None:
        method = default_start_method() if start_method is None else start_method
        if method not in START_METHODS or method not in multiprocessing.get_all_start_methods():
            raise EnvError(
                f"start_method: one of {', '.join(START_METHODS)} available here "
                f"(never fork: the parent holds torch); got {start_method!r}"
            )
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            _preload_in_forkserver(context)
        self.source = source
        self.workers = workers
        self.blocks = np.array_split(np.arange(num_envs), workers)
        self._starts = np.array([int(b[0]) for b in self.blocks])
        self.conns: list[Any] = []
        self.processes: list[Any] = []
        self._finalizer = weakref.finalize(self, _shutdown, self.conns, self.processes)
        for i, block in enumerate(self.blocks):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(child_end, source, len(block)),
                name=f"marra-{source.family}-worker-{i}",
                daemon=True,
            )
            process.start()
            child_end.close()
            self.conns.append(parent_end)
            self.processes.append(process)
        try:
            for i in range(workers):
                self._receive(i)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _receive(self, i: int) -> Any:
        try:
            status, payload = self.conns[i].recv()
        except (EOFError, OSError):
            self.processes[i].join(timeout=1)
            code = self.processes[i].exitcode
            self.close()
            raise RuntimeError(
                f"{self.source.family} worker {i} died (exit code {code}); the pool is closed"
            ) from None
        if status != "ok":
            self.close()
            last = payload.strip().splitlines()[-1] if payload.strip() else payload
            if last.startswith("marra.envs.errors.EnvError: "):
                raise EnvError(last.split(": ", 1)[1])
            raise RuntimeError(f"{self.source.family} worker {i} failed:\n{payload}")
        return payload

    def _send(self, i: int, message: tuple[str, Any]) -> None:
        try:
            self.conns[i].send(message)
        except (OSError, ValueError):
            self.processes[i].join(timeout=1)
            code = self.processes[i].exitcode
            self.close()
            raise RuntimeError(
                f"{self.source.family} worker {i} died (exit code {code}); the pool is closed"
            ) from None

    def _check_open(self) -> None:
        if self.closed:
            raise EnvError("the environment's worker processes were closed (close() was called)")

    def reset(
        self, rows: Sequence[int], seeds: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_open()
        rows_array = np.asarray(rows, dtype=np.int64)
        owner = np.searchsorted(self._starts, rows_array, side="right") - 1
        busy = [int(w) for w in np.unique(owner)]
        for w in busy:
            pick = np.flatnonzero(owner == w)
            local = (rows_array[pick] - self._starts[w]).tolist()
            self._send(w, ("reset", (local, [int(seeds[p]) for p in pick])))
        answers = {w: self._receive(w) for w in busy}
        obs: np.ndarray | None = None
        mask: np.ndarray | None = None
        for w in busy:
            pick = np.flatnonzero(owner == w)
            block_obs, block_mask = answers[w]
            if obs is None:
                obs = np.empty((len(rows_array), *block_obs.shape[1:]), dtype=block_obs.dtype)
                if block_mask is not None:
                    mask = np.empty((len(rows_array), *block_mask.shape[1:]), dtype=bool)
            obs[pick] = block_obs
            if mask is not None:
                mask[pick] = block_mask
        assert obs is not None
        return obs, mask

    def step(self, actions: np.ndarray) -> StepArrays:
        self._check_open()
        for i, block in enumerate(self.blocks):
            self._send(i, ("step", actions[block[0] : block[-1] + 1]))
        parts = [self._receive(i) for i in range(self.workers)]
        obs, reward, terminated, done, events, mask = zip(*parts, strict=True)
        return (
            np.concatenate(obs),
            np.concatenate(reward),
            np.concatenate(terminated),
            np.concatenate(done),
            np.concatenate(events),
            None if mask[0] is None else np.concatenate(mask),
        )

    def close(self) -> None:
        self._finalizer()
