"""Stepping ``num_envs`` package instances: in this process, or split between this process and
worker processes over pipes (this process steps the first block itself).

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
import pickle
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


#: one byte in front of every message: the parent sends STEP (raw int64 actions), RESET (a
#: pickled ``(rows, seeds)``) or CLOSE; a worker answers OK (raw arrays) or ERROR (a traceback)
STEP, RESET, CLOSE, OK, ERROR = b"S", b"R", b"C", b"K", b"E"

_STEP_DTYPES = (np.float32, np.float64, np.bool_, np.bool_, np.float64, np.bool_)
_RESET_DTYPES = (np.float32, np.bool_)


def _pack(arrays: Sequence[np.ndarray | None], dtypes: Sequence[Any]) -> bytes:
    """The arrays' bytes back to back (None, LBF's absent mask, is skipped)."""
    return b"".join(
        np.ascontiguousarray(a, dtype=t).tobytes()
        for a, t in zip(arrays, dtypes, strict=True)
        if a is not None
    )


def _unpack(
    buffer: memoryview, shapes: Sequence[tuple[int, ...] | None], dtypes: Sequence[Any]
) -> list[np.ndarray | None]:
    """Read-only views of ``shapes`` (None: absent) back to back in ``buffer`` (the callers
    copy them into fresh arrays)."""
    out: list[np.ndarray | None] = []
    offset = 0
    for shape, dtype in zip(shapes, dtypes, strict=True):
        if shape is None:
            out.append(None)
            continue
        count = int(np.prod(shape))
        out.append(np.frombuffer(buffer, dtype, count, offset).reshape(shape))
        offset += count * np.dtype(dtype).itemsize
    if offset != len(buffer):
        raise RuntimeError(f"worker answer of {len(buffer)} bytes, expected {offset}")
    return out


def _worker_main(conn: Any, source: Source, count: int) -> None:
    """The loop of one worker process: build ``count`` instances, then serve requests.

    Steps travel as raw bytes (int64 actions in, the result arrays out, back to back): no
    pickling on the path taken every step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    try:
        copies = [PackageCopy(source) for _ in range(count)]
    except BaseException:
        conn.send_bytes(ERROR + traceback.format_exc().encode())
        conn.close()
        return
    conn.send_bytes(OK)
    shape = (count, copies[0].num_agents)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            break
        kind = message[:1]
        if kind == CLOSE:
            break
        try:
            if kind == STEP:
                actions = np.frombuffer(message, np.int64, offset=1).reshape(shape)
                reply = _pack(_step_block(copies, actions), _STEP_DTYPES)
            elif kind == RESET:
                rows, seeds = pickle.loads(message[1:])
                reply = _pack(_reset_block(copies, rows, seeds), _RESET_DTYPES)
            else:
                raise ValueError(f"unknown message kind {kind!r}")
            conn.send_bytes(OK + reply)
        except Exception:
            conn.send_bytes(ERROR + traceback.format_exc().encode())
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
            conn.send_bytes(CLOSE)
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
    """``num_envs`` package instances stepped by ``workers`` processes, this one included, in
    contiguous blocks: block 0 in this process, blocks 1.. in ``workers - 1`` worker processes.

    ``step`` sends every worker its block of actions first, steps block 0 here while they step
    theirs, and then collects the answers: with two processes on two cores both cores step and
    neither waits idle for the other (a first version kept every copy in workers and the parent
    only waited: 1.2-1.4x for two workers against one). :meth:`close` (or garbage collection of
    the pool, or interpreter exit) shuts the workers down.
    """

    def __init__(
        self,
        source: Source,
        num_envs: int,
        workers: int,
        layout: tuple[int, int, int, bool],
        start_method: str | None = None,
        first: PackageCopy | None = None,
    ) -> None:
        if workers < 2:
            raise ValueError(f"WorkerPool needs at least 2 processes, got {workers}")
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
        self.num_agents, self.obs_dim, self.num_actions, self.has_mask = layout
        self.blocks = np.array_split(np.arange(num_envs), workers)
        self._starts = np.array([int(b[0]) for b in self.blocks])
        self.conns: list[Any] = []
        self.processes: list[Any] = []  # processes[k] steps block k + 1
        self._finalizer = weakref.finalize(self, _shutdown, self.conns, self.processes)
        for i, block in enumerate(self.blocks[1:], start=1):
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
            here = len(self.blocks[0])
            self.local = [first or PackageCopy(source)]
            self.local += [PackageCopy(source) for _ in range(here - 1)]
            for i in range(1, workers):
                self._receive(i)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _died(self, i: int) -> RuntimeError:
        """Worker ``i`` (the process stepping block ``i >= 1``) is gone."""
        self.processes[i - 1].join(timeout=1)
        code = self.processes[i - 1].exitcode
        self.close()
        return RuntimeError(
            f"{self.source.family} worker {i} died (exit code {code}); the pool is closed"
        )

    def _receive(self, i: int) -> memoryview:
        """Worker ``i``'s answer after its OK byte; raises its error or its death."""
        try:
            message = self.conns[i - 1].recv_bytes()
        except (EOFError, OSError):
            raise self._died(i) from None
        if message[:1] != OK:
            self.close()
            text = message[1:].decode(errors="replace")
            last = text.strip().splitlines()[-1] if text.strip() else text
            if last.startswith("marra.envs.errors.EnvError: "):
                raise EnvError(last.split(": ", 1)[1])
            raise RuntimeError(f"{self.source.family} worker {i} failed:\n{text}")
        return memoryview(message)[1:]

    def _send(self, i: int, message: bytes) -> None:
        try:
            self.conns[i - 1].send_bytes(message)
        except (OSError, ValueError):
            raise self._died(i) from None

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
        picks = {w: np.flatnonzero(owner == w) for w in busy}
        for w in busy:
            if w == 0:
                continue
            local = (rows_array[picks[w]] - self._starts[w]).tolist()
            seeds_w = [int(seeds[p]) for p in picks[w]]
            self._send(w, RESET + pickle.dumps((local, seeds_w)))
        n, d, a = self.num_agents, self.obs_dim, self.num_actions
        obs = np.empty((len(rows_array), n, d), dtype=np.float32)
        mask = np.empty((len(rows_array), n, a), dtype=bool) if self.has_mask else None
        for w in busy:
            if w == 0:  # this process's block, reset while the workers reset theirs
                seeds_0 = [int(seeds[p]) for p in picks[0]]
                block_obs, block_mask = _reset_block(self.local, rows_array[picks[0]], seeds_0)
            else:
                r = len(picks[w])
                shapes = [(r, n, d), (r, n, a) if self.has_mask else None]
                block_obs, block_mask = _unpack(self._receive(w), shapes, _RESET_DTYPES)
            obs[picks[w]] = block_obs
            if mask is not None:
                mask[picks[w]] = block_mask
        return obs, mask

    def step(self, actions: np.ndarray) -> StepArrays:
        self._check_open()
        actions = np.ascontiguousarray(actions, dtype=np.int64)
        for i, block in enumerate(self.blocks[1:], start=1):
            self._send(i, STEP + actions[block[0] : block[-1] + 1].tobytes())
        here = len(self.blocks[0])
        parts: list[Any] = [_step_block(self.local, actions[:here])]  # while the workers step
        n, d, a = self.num_agents, self.obs_dim, self.num_actions
        for i, block in enumerate(self.blocks[1:], start=1):
            k = len(block)
            shapes = [(k, n, d), (k, n), (k,), (k,), (k,), (k, n, a) if self.has_mask else None]
            parts.append(_unpack(self._receive(i), shapes, _STEP_DTYPES))
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
        for copy in getattr(self, "local", []):
            copy.env.close()
        self.local = []
