"""Shared pieces of the ``marra`` command: the Typer app, consoles, exit codes, helpers.

Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the field and row); 3 the
minima cannot be met (infeasible) and ``--shortfall`` was not given. Heavy libraries (pandas,
matplotlib, torch) are imported inside the commands that need them, so ``marra recommend``
starts fast.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(
    name="marra",
    help="Multi-Agent Resource Re-Allocation: move scarce staff between cooperating sites.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False)

EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    err_console.print(f"error: {message}", soft_wrap=True, markup=False)
    return typer.Exit(code)


def _num(value: float) -> int | float:
    """A JSON-friendly number: int when whole, float otherwise, None for non-finite."""
    value = float(value)
    if not math.isfinite(value):
        return None  # type: ignore[return-value]
    return int(value) if value.is_integer() else round(value, 9)


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        err_console.print(f"warning: {w.message}", soft_wrap=True, markup=False)


def _load_network(path: Path, *, integer: bool) -> Any:
    from marra.hospital.network import HospitalNetwork, NetworkError

    if not path.exists():
        raise _fail(f"{path}: file not found")
    if path.is_dir():
        raise _fail(f"{path}: is a folder, expected a CSV file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            network = HospitalNetwork.from_csv(path, integer=integer)
    except NetworkError as exc:
        raise _fail(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise _fail(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    _show_warnings(caught)
    return network


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"
