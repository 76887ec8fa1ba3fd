"""Shared pieces of the ``marra`` command: the Typer app, consoles, exit codes, helpers.

Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the field and row); 3 the
minima cannot be met (infeasible) and ``--shortfall`` was not given. Heavy libraries (pandas,
matplotlib, torch) are imported inside the commands that need them, so ``marra recommend``
starts fast.

Usage errors (an unknown option, a value that is not a number, a missing argument) are caught
once, by :class:`MarraGroup`, for every command: one line ``error: ...`` on stderr naming the
option, exit code 2, never Typer's boxed panel.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as _click_errors  # type: ignore[no-redef]

EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3

#: Words a user may type after a switch, thinking it takes a value (``--continuous true``).
_BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0", "y", "n", "t", "f"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _option_name(param: Any) -> str:
    if getattr(param, "param_type_name", "") == "argument":
        return str(getattr(param, "name", "value")).upper()
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(
        getattr(param, "opts", [])
    )
    if opts:
        return opts[0]
    return str(getattr(param, "name", "") or "value")


def _find_switch(command: Any, token: str) -> Any:
    for param in getattr(command, "params", []):
        names = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
        if token in names and getattr(param, "is_flag", False):
            return param
    return None


def usage_message(error: Any, argv: Sequence[str]) -> str:
    """One line for a usage error of click/Typer, naming the option (without ``error:``)."""
    ctx = getattr(error, "ctx", None)
    command = ctx.command_path if ctx is not None else "marra"
    hint = f" (see '{command} --help')"
    message = _one_line(error.format_message() if hasattr(error, "format_message") else error)
    param = getattr(error, "param", None)
    if isinstance(error, _click_errors.MissingParameter) and param is not None:
        kind = "argument" if getattr(param, "param_type_name", "") == "argument" else "option"
        return f"{_option_name(param)}: missing {kind}{hint}"
    if isinstance(error, _click_errors.BadParameter) and param is not None:
        detail = _one_line(error.message)
        return f"{_option_name(param)}: {detail}{hint}"
    if message.startswith("Got unexpected extra argument") and ctx is not None:
        # `--continuous true`: a switch followed by a word that reads as a boolean value
        args = list(argv)
        for i, token in enumerate(args[1:], start=1):
            switch = _find_switch(ctx.command, args[i - 1])
            if token.lower() in _BOOLEAN_WORDS and switch is not None:
                name = args[i - 1]
                other = f" ({' or '.join(switch.secondary_opts)} to turn it off)"
                return (
                    f"{name}: is a switch and takes no value (got {token!r}); write {name} "
                    f"alone{other if switch.secondary_opts else ''}, or leave it out"
                )
    return f"{message.rstrip('.')}{hint}"


def _is_input_error(exc: BaseException) -> bool:
    """marra's own error classes (``NetworkError``, ``ScenarioError``, ``OutputPathError``, ...)
    are bad input by design: their messages name the field. A command that lets one escape
    still ends with one line and exit code 2, never a traceback."""
    return type(exc).__module__.startswith("marra.") and isinstance(exc, ValueError)


class MarraGroup(TyperGroup):
    """The ``marra`` group: every usage error becomes one line on stderr and exit code 2, and
    switches (boolean flags) show no ``<bool>`` type in the help."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(
                args=argv,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except _click_errors.NoArgsIsHelpError as exc:
            if not standalone_mode:
                raise
            code: int = exc.exit_code  # `marra` alone: the help was printed
        except _click_errors.UsageError as exc:
            if not standalone_mode:
                raise
            err_console.print(f"error: {usage_message(exc, argv)}", soft_wrap=True, markup=False)
            code = EXIT_BAD_INPUT
        except _click_errors.ClickException as exc:
            if not standalone_mode:
                raise
            message = _one_line(exc.format_message())
            err_console.print(f"error: {message}", soft_wrap=True, markup=False)
            code = exc.exit_code
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print("error: aborted", soft_wrap=True, markup=False)
            code = 1
        except ValueError as exc:
            if not (standalone_mode and _is_input_error(exc)):
                raise
            err_console.print(f"error: {_one_line(exc)}", soft_wrap=True, markup=False)
            code = EXIT_BAD_INPUT
        else:
            if not standalone_mode:
                return result
            code = result if isinstance(result, int) else 0
        sys.exit(code)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_switches(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_switches(self, ctx)
        for name in self.list_commands(ctx):
            _plain_switches(self.commands[name], ctx)
        super().format_help(ctx, formatter)


def _plain_switches(command: Any, ctx: Any) -> None:
    """Give switches an empty type label, so the help shows ``--json`` and not ``--json <bool>``
    (a switch takes no value)."""
    params = list(getattr(command, "params", []))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        help_option = command.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


app = typer.Typer(
    name="marra",
    cls=MarraGroup,
    help="Multi-Agent Resource Re-Allocation: move scarce staff between cooperating sites.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False)


def _print_version(value: bool) -> None:
    if value:
        from marra import __version__

        sys.stdout.write(f"marra {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Multi-Agent Resource Re-Allocation: move scarce staff between cooperating sites."""


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    err_console.print(f"error: {message}", soft_wrap=True, markup=False)
    return typer.Exit(code)


def _note(message: str) -> None:
    """One line on stderr that is not an error (a default chosen, a deprecated spelling)."""
    err_console.print(f"note: {message}", soft_wrap=True, markup=False)


def _num(value: float) -> int | float:
    """A JSON-friendly number: int when whole, float otherwise, None for non-finite."""
    value = float(value)
    if not math.isfinite(value):
        return None  # type: ignore[return-value]
    return int(value) if value.is_integer() else round(value, 9)


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        err_console.print(f"warning: {w.message}", soft_wrap=True, markup=False)


def _load_network(path: Path, *, integer: bool, option: str | None = None) -> Any:
    """Read a network CSV; every problem is one line naming ``option`` (when given), the column
    and the row. The memory the file needs is checked before it is read."""
    from marra.hospital.network import HospitalNetwork, NetworkError

    where = f"{option} {path}" if option else str(path)
    if not path.exists():
        raise _fail(f"{where}: file not found")
    if path.is_dir():
        raise _fail(f"{where}: is a folder, expected a CSV file")
    _check_memory(_csv_bytes_needed(path), f"{where}: reading this file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            network = HospitalNetwork.from_csv(path, integer=integer)
    except NetworkError as exc:
        raise _fail(f"{option}: {exc}" if option else str(exc)) from None
    except UnicodeDecodeError as exc:
        raise _fail(f"{where}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise _fail(f"{where}: cannot be read ({exc.strerror or exc})") from None
    _show_warnings(caught)
    return network


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _plural(count: float, word: str, plural: str | None = None) -> str:
    """``1 transfer``, ``2 transfers``, ``100,000 hospitals``: a count with its noun."""
    noun = word if count == 1 else (plural or word + "s")
    return f"{_fmt(count)} {noun}"


# ---------------------------------------------------------------------- shared options
#: Help of every ``--budget`` option.
BUDGET_HELP = (
    "at most this many staff change hospital per plan/step; 'none' (or 'inf') for no cap; "
    "whole staff unless --continuous"
)
BUDGET_METAVAR = "STAFF|none"
_NO_BUDGET = {"none", "inf", "infinity", "+inf", "no", "unlimited"}

#: Help of every ``--scenario`` option (``marra simulate``, ``marra train``).
SCENARIO_HELP = (
    "static, shifting, shock, seasonal, outbreak or csv:FILE; combine with '+' "
    "(shifting+shock); set parameters in brackets: shock(fraction=0.3,step=10), "
    "seasonal(amplitude=0.2,period=12), outbreak(speed=80,peak=0.5), shifting(every=5,"
    "max_change=3) (see docs/scenarios.md)"
)


def parse_budget(value: str | None, *, integer: bool, option: str = "--budget") -> float | None:
    """The value of a ``--budget`` option: None when not given, ``math.inf`` for an explicit
    'no cap' (``none``/``inf``), else a number >= 0 (a whole number in whole-staff mode).

    Raises:
        typer.Exit: one line naming ``option`` and exit code 2 for anything else.
    """
    if value is None:
        return None
    text = value.strip().lower()
    if text in _NO_BUDGET:
        return math.inf
    try:
        budget = float(text)
    except ValueError:
        raise _fail(
            f"{option}: {value!r} is not a number; give staff >= 0, or 'none' for no cap"
        ) from None
    if math.isnan(budget) or budget < 0:
        raise _fail(f"{option}: must be a number >= 0 or 'none' (no cap), got {value}")
    if math.isinf(budget):
        return math.inf
    if integer and not budget.is_integer():
        raise _fail(
            f"{option}: {value} is not a whole number of staff, and whole staff move "
            f"(give {math.floor(budget)} or {math.ceil(budget)}, or add --continuous for "
            "fractional staff)"
        )
    return budget


def budget_text(budget: float | None) -> str:
    """How a budget reads in a table or title: ``150``, or ``none`` for no cap."""
    return "none" if budget is None or math.isinf(budget) else f"{budget:g}"


def check_count(value: int, option: str, *, low: int = 1, high: int | None = None) -> int:
    """A count option (``--seeds``, ``--horizon``, ``--hospitals``): an integer in bounds."""
    if value < low:
        raise _fail(f"{option}: must be at least {low}, got {value}")
    if high is not None and value > high:
        raise _fail(f"{option}: must be at most {high:,}, got {value:,}")
    return value


def deprecated_alias(
    new_value: int | None,
    old_value: int | None,
    *,
    new: str,
    old: str,
    default: int,
    low: int = 1,
    high: int | None = None,
) -> int:
    """The count option ``new`` whose old spelling ``old`` still works, with a note (printed
    only once the value is known to be good, so a bad value gives one line)."""
    if old_value is None:
        return check_count(default if new_value is None else new_value, new, low=low, high=high)
    if new_value is not None and new_value != old_value:
        raise _fail(f"{old}: is the old spelling of {new}; give only {new}")
    check_count(old_value, old, low=low, high=high)
    _note(f"{old} is deprecated here; use {new} (the same value)")
    return old_value


def check_output_file(path: Path | None, option: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot be written (a folder, a device, a
    FIFO, or a path under a file)."""
    if path is None:
        return
    from marra._io import OutputPathError, check_output_path

    try:
        check_output_path(path)
    except OutputPathError as exc:
        raise _fail(f"{option}: {exc}") from None


def check_output_folder(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file or lies under one."""
    from marra._io import OutputPathError, check_output_dir

    try:
        check_output_dir(path)
    except OutputPathError as exc:
        raise _fail(f"{option}: {exc}") from None


# ---------------------------------------------------------------------- memory
def _check_memory(needed: float, what: str) -> None:
    """Refuse work whose memory estimate exceeds what is available, stating both (one line,
    exit code 2)."""
    from marra.experiments.simulate import available_memory_bytes, format_bytes

    available = available_memory_bytes()
    if needed > available:
        raise _fail(
            f"{what} needs about {format_bytes(needed)} of memory, more than the "
            f"{format_bytes(available)} available; make it smaller"
        )


def _csv_bytes_needed(path: Path) -> float:
    """Memory to parse a network CSV: the text, its cells as Python strings, the arrays."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0.0
    return 40.0 * size
