"""Commands for experiment grids: sweep (methods x environments x seeds) and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from marra.cli._app import _fail, _note, app, console


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="the SPEC: a TOML file (docs/sweeps.md)")],
    out: Annotated[Path, typer.Option(help="sweep folder (a rerun into it resumes)")],
    backend: Annotated[str, typer.Option(help="local (process pool) or ray")] = "local",
    workers: Annotated[
        int | None,
        typer.Option(help="cells at once (local: processes; ray: a local Ray's CPUs) [CPUs]"),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="a running Ray cluster: auto or HOST:PORT (ray only)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check the SPEC, list the cells, run nothing")
    ] = False,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="write DIR/report.md at the end")
    ] = True,
) -> None:
    """Run every cell of SPEC (train if a learner, then evaluate) and write DIR/results.csv,
    manifest.json, failures.csv and report.md. Finished cells are skipped on a rerun,
    interrupted ones resume from their checkpoint; exit code 1 if any cell failed."""
    from marra.experiments.sweep import (
        SpecError,
        SweepError,
        cell_status,
        load_spec,
        plan_sweep,
        prepare_sweep_dir,
        run_sweep,
    )

    if backend not in ("local", "ray"):
        raise _fail(f"--backend: 'local' or 'ray', got {backend!r}")
    if workers is not None and workers < 1:
        raise _fail(f"--workers: must be at least 1, got {workers}")
    if address is not None and backend != "ray":
        raise _fail("--address: only with --backend ray")
    try:
        parsed = load_spec(spec)
        plan = plan_sweep(parsed)
        prepare_sweep_dir(parsed, out, plan=plan, create=False)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    if dry_run:
        _show_plan(parsed, plan, out, cell_status)
        return
    try:
        outcome = run_sweep(
            parsed, out, backend=backend, workers=workers, address=address, progress=True,
            spec_text=spec.read_text(encoding="utf-8"), console=console,
        )  # fmt: skip
    except (SpecError, SweepError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail(f"interrupted; rerun the same command to resume {out}", 130) from None
    console.print(
        f"{outcome.cells} cells: {outcome.already_done} already done, {outcome.ran} run now, "
        f"{len(outcome.failures)} failed, in {outcome.wall_s:.1f} s; "
        f"results: {outcome.results_path} ({outcome.rows:,} rows)"
    )
    if outcome.skipped:
        pairs = ", ".join(f"{s['method']} on {s['env']}" for s in outcome.skipped)
        _note(f"skipped: {pairs}")
    if report and outcome.rows:
        from marra.experiments.report import write_report

        console.print(f"report: {write_report(out)}")
    for failure in outcome.failures[:5]:
        console.print(
            f"[red]failed[/] {failure['env']} / {failure['method']} / seed {failure['seed']}: "
            f"{failure['error']}: {failure['message'][:200]}"
        )
    if outcome.failures:
        console.print(f"failures: {out / 'failures.csv'} (rerun to retry them)")
        raise typer.Exit(1)


def _show_plan(parsed: Any, plan: Any, out: Path, status: Any) -> None:
    table = Table(title=f"{parsed.title}: {len(plan.cells)} cells", title_justify="left")
    for column in ("env", "method", "seed", "run", "cell", "status"):
        table.add_column(column, justify="right" if column == "seed" else "left")
    counts: dict[str, int] = {}
    for entry in plan.grid:
        cell = plan.cells[entry.cell]
        state = status(out, entry.cell) if out.exists() else "todo"
        counts[state] = counts.get(state, 0) + 1
        if cell.train is not None:
            run = (
                f"train {cell.train['algo']}/{cell.train['sharing']} {cell.train['total_steps']:,}"
            )
        else:
            run = f"baseline {cell.baseline}"
        table.add_row(entry.env, entry.method, str(entry.seed), run, entry.cell, state)
    console.print(table)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    console.print(f"{len(plan.grid)} runs in {len(plan.cells)} cells ({summary}); nothing was run")
    for skip in plan.skipped:
        console.print(f"skipped: {skip['method']} on {skip['env']} ({skip['reason']})")


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="a sweep folder (marra sweep)")],
) -> None:
    """Write DIR/report.md: per environment and metric, methods by mean ± std over seeds, IQM
    and its 95% stratified bootstrap CI (best marked), with learning curves and performance
    profiles as PNGs."""
    from marra.experiments.report import write_report
    from marra.experiments.results import ResultsError
    from marra.experiments.sweep import SpecError

    try:
        path = write_report(folder)
    except (SpecError, ResultsError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"report: {path}")
