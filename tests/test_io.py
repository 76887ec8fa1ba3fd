"""``marra._io``: atomic writers give plain ``open()`` permissions, write through symlinks and
refuse special files (issue 8, items 2 and 35)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from marra._io import (
    OutputPathError,
    atomic_output,
    atomic_savefig,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    check_output_path,
)


@pytest.fixture
def umask_022() -> Iterator[int]:
    old = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(old)


def open_mode(folder: Path) -> int:
    """The mode bits a plain ``open(path, "w")`` gives a new file under the current umask."""
    probe = folder / "probe-open.txt"
    with open(probe, "w") as handle:
        handle.write("x")
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


def _figure() -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    return fig


WRITERS = {
    "text": lambda p: atomic_write_text(p, "a,b\n"),
    "bytes": lambda p: atomic_write_bytes(p, b"\x00\x01"),
    "torch": lambda p: atomic_torch_save({"x": 1}, p),
    "figure": lambda p: atomic_savefig(_figure(), p),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_get_the_mode_open_gives_under_the_umask(
    tmp_path: Path, writer: str, umask: int
) -> None:
    old = os.umask(umask)
    try:
        expected = open_mode(tmp_path)
        path = tmp_path / f"out.{'png' if writer == 'figure' else 'bin'}"
        WRITERS[writer](path)
        assert stat.S_IMODE(path.stat().st_mode) == expected == 0o666 & ~umask
    finally:
        os.umask(old)


def test_the_umask_is_left_as_it_was(tmp_path: Path, umask_022: int) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    assert os.umask(umask_022) == umask_022


def test_replacing_a_file_keeps_its_own_mode(tmp_path: Path, umask_022: int) -> None:
    path = tmp_path / "shared.csv"
    path.write_text("old")
    path.chmod(0o664)
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def test_writing_onto_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real" / "plan.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "plan.csv"
    link.symlink_to(Path("real") / "plan.csv")  # relative, as users make them
    atomic_write_text(link, "new")
    assert link.is_symlink()
    assert os.readlink(link) == str(Path("real") / "plan.csv")
    assert target.read_text() == "new"
    assert not any(p.name.endswith(".tmp") for p in target.parent.iterdir())


def test_a_chain_of_links_and_a_dangling_link_are_written_through(tmp_path: Path) -> None:
    final = tmp_path / "final.csv"
    (tmp_path / "middle.csv").symlink_to(final)
    (tmp_path / "first.csv").symlink_to(tmp_path / "middle.csv")
    atomic_write_text(tmp_path / "first.csv", "through")  # final does not exist yet
    assert final.read_text() == "through"
    assert (tmp_path / "first.csv").is_symlink() and (tmp_path / "middle.csv").is_symlink()


def special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link_to_null = tmp_path / "null-link"
    link_to_null.symlink_to("/dev/null")
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"device": Path("/dev/null"), "fifo": fifo, "link": link_to_null, "folder": folder}


@pytest.mark.parametrize("kind", ["device", "fifo", "link", "folder"])
def test_special_files_are_refused_and_left_alone(tmp_path: Path, kind: str) -> None:
    path = special_files(tmp_path)[kind]
    before = os.lstat(path)
    with pytest.raises(OutputPathError, match="expected a file path"):
        atomic_write_text(path, "x")
    with pytest.raises(OutputPathError):
        check_output_path(path)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if kind == "device":
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_file_as_parent_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    blocker = tmp_path / "report"
    blocker.write_text("a file")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_path(blocker / "plan.csv")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        atomic_write_text(blocker / "sub" / "plan.csv", "x")
    with pytest.raises(OutputPathError, match="not a folder"):
        check_output_dir(blocker)
    assert blocker.read_text() == "a file"


def test_a_symlink_loop_is_an_output_path_error_not_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OutputPathError, match="cannot be written"):
        atomic_write_text(tmp_path / "a", "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_an_output_path_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputPathError, match="cannot write"):
            atomic_write_text(folder / "x.csv", "x")
    finally:
        folder.chmod(0o755)


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("good")
    with pytest.raises(RuntimeError), atomic_output(path) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
