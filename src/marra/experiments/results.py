"""Tidy results and run manifests.

Every run writes a tidy long table with exactly the columns :data:`RESULT_COLUMNS`
(``method,scenario,seed,step,metric,value``) and a ``manifest.json`` (versions, arguments, seeds,
git revision). Plots are drawn from the table, never from in-memory state.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marra._io import atomic_write_text

RESULT_COLUMNS = ("method", "scenario", "seed", "step", "metric", "value")


class ResultsError(ValueError):
    """A results folder or table that cannot be used as asked."""


def rows_to_csv_text(rows: Iterable[tuple[Any, ...]], *, header: bool = True) -> str:
    """Render result rows ``(method, scenario, seed, step, metric, value)`` as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(RESULT_COLUMNS)
    for method, scenario, seed, step, metric, value in rows:
        writer.writerow([method, scenario, int(seed), int(step), metric, repr(float(value))])
    return buffer.getvalue()


def merge_csv_parts(parts: Iterable[Path], destination: Path) -> int:
    """Concatenate part files (each with the header) into ``destination`` atomically.

    Returns the number of data rows written.
    """
    lines = [",".join(RESULT_COLUMNS)]
    for part in parts:
        with part.open(encoding="utf-8") as handle:
            content = handle.read().splitlines()
        if not content or content[0] != lines[0]:
            raise ResultsError(f"{part}: not a results part (header {content[:1]})")
        lines.extend(content[1:])
    atomic_write_text(destination, "\n".join(lines) + "\n")
    return len(lines) - 1


def results_path(folder_or_file: str | os.PathLike[str]) -> Path:
    """The results table of a run: ``folder/results.csv``, or the CSV file itself when one is
    given (``marra plot DIR`` and ``marra plot DIR/results.csv`` read the same table).

    Raises:
        ResultsError: when there is no such file, or the path is neither a folder nor a file.
    """
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / "results.csv"
    if not path.exists():
        raise ResultsError(f"{path}: no results table here (run `marra simulate --out ...` first)")
    if not path.is_file():
        raise ResultsError(f"{path}: not a file (expected a results.csv or its folder)")
    return path


def read_results(folder_or_file: str | os.PathLike[str]) -> Any:
    """Read ``results.csv`` (or the given CSV) as a pandas DataFrame, checking it: the columns
    :data:`RESULT_COLUMNS`, at least one row, whole ``seed`` and ``step`` numbers and numeric
    ``value`` cells.

    Raises:
        ResultsError: naming the file, and the line and column of the first bad cell.
    """
    import pandas as pd

    path = results_path(folder_or_file)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ResultsError(
            f"{path}: the file is empty; expected the header {','.join(RESULT_COLUMNS)}"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path}: not a results table ({_first_line(exc)})") from None
    if tuple(frame.columns) != RESULT_COLUMNS:
        raise ResultsError(
            f"{path}: expected columns {','.join(RESULT_COLUMNS)}, got "
            f"{','.join(str(c) for c in frame.columns)}"
        )
    if frame.empty:
        raise ResultsError(f"{path}: has a header but no rows")
    for column, integral in (("seed", True), ("step", True), ("value", False)):
        raw = frame[column]
        if pd.api.types.is_integer_dtype(raw) or (
            not integral and pd.api.types.is_float_dtype(raw)
        ):
            continue  # the common case: parsed as numbers already
        numbers = pd.to_numeric(raw, errors="coerce")
        bad = numbers.isna() if integral else numbers.isna() & raw.notna()
        if integral:
            bad |= numbers.notna() & (numbers % 1 != 0)
        if not integral:
            bad &= ~raw.astype(str).str.strip().str.lower().isin(["nan", "inf", "-inf"])
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ResultsError(
                f"{path}: column {column!r}, line {row + 2}: {raw.iloc[row]!r} is not "
                f"{'an integer' if integral else 'a number'}"
            )
        frame[column] = numbers.astype("int64") if integral else numbers.astype(float)
    return frame


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def git_revision() -> str | None:
    """The git commit of the marra source tree, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def versions() -> dict[str, str | None]:
    """Versions of marra, Python and the main libraries that are loaded."""
    import numpy

    import marra

    found: dict[str, str | None] = {
        "marra": marra.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
    }
    for module in ("scipy", "pandas", "torch", "gymnasium", "pettingzoo", "ot"):
        loaded = sys.modules.get(module)
        if loaded is not None:
            found[module] = getattr(loaded, "__version__", None)
    return found


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_manifest(
    path: Path,
    *,
    arguments: Mapping[str, Any],
    seeds: list[int],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``manifest.json`` atomically and return what was written."""
    manifest: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "git_revision": git_revision(),
        "arguments": dict(arguments),
        "seeds": list(seeds),
        "command": " ".join(sys.argv),
    }
    if extra:
        manifest.update(extra)
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest
