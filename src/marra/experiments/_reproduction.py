"""What every sweep-based ``marra reproduce`` pipeline shares (paper002, paper003, survey001):
the checks of its arguments, made before anything is written, and the run of its training grid
as a sweep that stops with one clear error when a cell failed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

B = TypeVar("B")


def check_arguments(
    budget: B | None,
    budget_type: type[B],
    *,
    quick: bool,
    backend: str,
    workers: int | None,
    address: str | None,
    out: str | Path,
) -> tuple[B, Path]:
    """The budget to run (``budget``, else ``budget_type.quick()`` or ``.full()``) and ``out``
    as a path, after checking every argument.

    Raises:
        SpecError: naming the first bad argument (or, through ``budget.check()``, budget field).
    """
    from marra.experiments.sweep import SpecError

    if backend not in ("local", "ray"):
        raise SpecError(f"backend: 'local' or 'ray', got {backend!r}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise SpecError(f"workers: must be a positive integer, got {workers!r}")
    if address is not None and backend != "ray":
        raise SpecError("address: only with backend 'ray'")
    if budget is not None and quick:
        raise SpecError("quick: give either quick=True or a budget, not both")
    chosen: Any = budget
    if chosen is None:
        chosen = budget_type.quick() if quick else budget_type.full()  # type: ignore[attr-defined]
    if not isinstance(chosen, budget_type):
        raise SpecError(f"budget: expected a {budget_type.__name__}, got {type(chosen).__name__}")
    check = getattr(chosen, "check", None)
    if check is not None:
        check()
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SpecError(f"out: {path} exists and is not a folder")
    return chosen, path


def stage_printer(console: Any) -> Callable[[str], None]:
    """A rule on ``console`` naming each stage of a reproduction (silent without a console)."""
    if console is None:
        return lambda _title: None
    return console.rule


def run_training_grid(
    paper: str,
    spec: dict[str, Any],
    out: Path,
    *,
    backend: str,
    workers: int | None,
    address: str | None,
    progress: bool,
    console: Any,
) -> Any:
    """Run (or resume) the sweep ``spec`` in ``out / "training"``; its outcome.

    Raises:
        SweepError: a cell failed; the message names the first one and ``failures.csv``
            (a rerun retries the failed cells and reuses the rest).
    """
    from marra.experiments.sweep import SweepError, run_sweep

    outcome = run_sweep(spec, out / "training", backend=backend, workers=workers,
                        address=address, progress=progress, console=console)  # fmt: skip
    if outcome.failures:
        first = outcome.failures[0]
        raise SweepError(
            f"{paper}: {len(outcome.failures)} cell(s) failed, first {first['method']} on "
            f"{first['env']} seed {first['seed']}: {first['message']} (see "
            f"{out / 'training' / 'failures.csv'}; rerun to retry)"
        )
    return outcome
