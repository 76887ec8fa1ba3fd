"""The ``marra`` command: thin Typer front end over the library layers.

Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the field and row); 3 the
minima cannot be met (infeasible) and ``--shortfall`` was not given. Heavy libraries (pandas,
matplotlib, torch) are imported inside the commands that need them, so ``marra recommend``
starts fast. Commands live in :mod:`marra.cli.hospital` and :mod:`marra.cli.learning`; both add
themselves to the one Typer ``app`` of :mod:`marra.cli._app`.
"""

from __future__ import annotations

from marra.cli import hospital as _hospital  # noqa: F401  (registers the commands)
from marra.cli import learning as _learning  # noqa: F401
from marra.cli import sweep as _sweep  # noqa: F401
from marra.cli._app import app, console, err_console

__all__ = ["app", "main", "console", "err_console"]


def main() -> None:
    """Entry point of the ``marra`` console script (and of ``python -m marra.cli``).

    Usage errors of every command end here as one line ``error: ...`` on stderr naming the
    option, with exit code 2 (see :class:`marra.cli._app.MarraGroup`); the program is called
    ``marra`` in messages however it was started.
    """
    app(prog_name="marra")
