"""Atomic output files, written once for every command and layer.

Every file marra writes (CSV tables, JSON manifests, plots, policies, checkpoints) goes through
:func:`atomic_output`: the content is written to a temporary file in the destination's folder,
flushed to disk, given the permissions a plain ``open()`` would give, then renamed over the
destination in one step. Readers never see a half-written file, and a failure leaves any
previous file untouched.

Two details a plain ``tempfile.mkstemp`` + ``os.replace`` gets wrong:

- permissions: ``mkstemp`` creates ``-rw-------`` files; a new file here gets ``0o666 & ~umask``
  (what ``open(path, "w")`` gives) and a replaced file keeps its own mode;
- links and special files: writing onto a symlink replaces the *target* of the link (the link
  stays a link, as with ``open()``); a destination that exists and is not a regular file (a
  folder, a device, a FIFO, a socket) is refused with :class:`OutputPathError` instead of being
  replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "OutputPathError",
    "check_output_path",
    "check_output_dir",
    "atomic_output",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_torch_save",
    "atomic_savefig",
]


class OutputPathError(ValueError):
    """An output path that cannot be written: its folder is a file, or it is a special file."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _resolve(path: str | os.PathLike[str]) -> Path:
    """The file to replace: ``path`` itself, or the end of its symlink chain."""
    path = Path(path)
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Check, before any work is done, that ``path`` can be written as a file; return the
    file that will actually be replaced (the target when ``path`` is a symlink).

    Raises:
        OutputPathError: ``path`` exists and is not a regular file, or one of its parent folders
            exists as a file.
    """
    target = _resolve(path)
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:  # a symlink loop, a name too long, no permission to look
        raise OutputPathError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputPathError(f"{path}: is {_kind(mode)}, expected a file path")
    _check_parents(target, original=path)
    return target


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is (or can be created as) a folder, without creating it.

    Raises:
        OutputPathError: ``path`` or one of its parents exists and is not a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: exists and is not a folder")
    _check_parents(path / "_", original=path)
    return path


def _check_parents(target: Path, *, original: str | os.PathLike[str]) -> None:
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(
                    f"{original}: {parent} is a file, not a folder (cannot create files in it)"
                )
            return


def _current_umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux), so
    that another thread creating a file meanwhile never sees a umask of 0."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _new_file_mode() -> int:
    return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file to write; on success it replaces ``path`` atomically.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes). Parent folders are created. On any error
    (also ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched.

    Raises:
        OutputPathError: see :func:`check_output_path`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: 'w' or 'wb', got {mode!r}")
    target = check_output_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, or no permission
        raise OutputPathError(f"{path}: cannot create its folder ({exc})") from exc
    try:
        file_mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        file_mode = _new_file_mode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # e.g. a read-only folder
        raise OutputPathError(f"{path}: cannot write in {target.parent} ({exc.strerror})") from None
    try:
        os.fchmod(fd, file_mode)
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, "w", newline="") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_output`)."""
    import torch

    with atomic_output(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_savefig(figure: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``figure.savefig`` to ``path`` atomically; the format comes from the suffix of ``path``
    (default PNG) unless ``format=`` is given."""
    kwargs.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    with atomic_output(path, "wb") as handle:
        figure.savefig(handle, **kwargs)
