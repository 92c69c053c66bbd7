"""CLI `validate`: GX suites over each stage's newest output (validation/pipeline.py); exits
non-zero on failure, prints a table and writes an HTML report under <workspace>/reports/.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from userrep.cli.app import emit_json, fail, out, parse_time, state

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py

validate_app = typer.Typer(
    help="Data-quality and drift gates (Great Expectations); exit 1 on failure.",
    no_args_is_help=True,
)
commands.add_typer(validate_app, name="validate")

NowOption = Annotated[
    str | None,
    typer.Option(help="Reference time for freshness: ISO time or 'wall' (default: newest event)."),
]
ShowAll = Annotated[bool, typer.Option("--all-checks", help="List passing expectations too.")]
AsJson = Annotated[
    bool, typer.Option("--json", help="One JSON document on stdout: every outcome and check.")
]


def _now(value: str | None) -> pd.Timestamp | None:
    return pd.Timestamp.now(tz="UTC") if value == "wall" else parse_time(value)


def _fmt(value: object) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _show(outcome, all_checks: bool) -> None:  # outcome: validation.outcome.ValidationOutcome
    verdict = "[green]passed[/green]" if outcome.success else "[red]FAILED[/red]"
    title = f"{outcome.target_kind} {outcome.target_ref} ({outcome.suite}): {verdict}"
    table = Table(title=title)
    table.add_column("expectation", overflow="fold")
    for name in ("observed", "threshold", "result"):
        table.add_column(name, overflow="fold")
    for c in outcome.checks:
        if c.success and not all_checks:
            continue
        result = (
            "pass" if c.success else ("[red]FAIL[/red]" if c.blocking else "[yellow]warn[/yellow]")
        )
        table.add_row(c.name, c.error or _fmt(c.observed), c.threshold, result)
    if table.row_count:
        out.print(table)
    out.print(outcome.headline(), markup=False)
    if outcome.report_path:
        out.print(f"report: {outcome.report_path}", markup=False, soft_wrap=True)


def _as_dict(outcome) -> dict:
    return {
        "target_kind": outcome.target_kind,
        "target_ref": outcome.target_ref,
        "suite": outcome.suite,
        "success": outcome.success,
        "failed": outcome.failed,
        "warnings": outcome.warnings,
        "report": None if outcome.report_path is None else str(outcome.report_path),
        "checks": [asdict(c) for c in outcome.checks],
    }


def _run(call, all_checks: bool, as_json: bool = False) -> None:
    """Run one validation (a callable), print it (stdout), exit 1 if it failed."""
    from representation.batches import BatchError

    try:
        outcomes = call()
    except (FileNotFoundError, ValueError, BatchError) as err:
        fail(str(err))
    outcomes = outcomes if isinstance(outcomes, list) else [outcomes]
    if not outcomes:
        fail("nothing to validate in this workspace")
    if as_json:
        emit_json([_as_dict(o) for o in outcomes])
    for outcome in [] if as_json else outcomes:
        _show(outcome, all_checks)
    if not all(o.success for o in outcomes):
        raise typer.Exit(code=1)


@validate_app.command("events")
def validate_events_cmd(
    part: Annotated[
        str | None, typer.Option(help="Events part file name (default: newest).")
    ] = None,
    now: NowOption = None,
    all_checks: ShowAll = False,
    as_json: AsJson = False,
) -> None:
    """The newest accepted events part: schema, nulls, unique ids, weights, freshness, rows."""
    from validation.pipeline import validate_events

    _run(lambda: validate_events(state.settings, part, _now(now)), all_checks, as_json)


@validate_app.command("item-vectors")
def validate_item_vectors_cmd(
    version: Annotated[str | None, typer.Option(help="Encoder version (default: CURRENT).")] = None,
    now: NowOption = None,
    all_checks: ShowAll = False,
    as_json: AsJson = False,
) -> None:
    """Item vectors of an encoder version: dims, finite, L2 norms, unique items, freshness."""
    from validation.pipeline import validate_item_vectors

    _run(lambda: validate_item_vectors(state.settings, version, _now(now)), all_checks, as_json)


@validate_app.command("features")
def validate_features_cmd(
    as_of: Annotated[str | None, typer.Option(help="Snapshot (default: newest).")] = None,
    reference: Annotated[
        str | None,
        typer.Option(help="Snapshot to compare with, or 'none' (default: the previous one)."),
    ] = None,
    now: NowOption = None,
    all_checks: ShowAll = False,
    as_json: AsJson = False,
) -> None:
    """An encoder_input_v2 snapshot: quality, and per-feature drift vs an earlier snapshot."""
    from validation.pipeline import NO_REFERENCE, validate_features

    ref = reference if reference in (None, NO_REFERENCE) else parse_time(reference)
    _run(
        lambda: validate_features(state.settings, parse_time(as_of), ref, _now(now)),
        all_checks,
        as_json,
    )


@validate_app.command("batch")
def validate_batch_cmd(
    batch: Annotated[str | None, typer.Option(help="Batch id (default: newest with z_u).")] = None,
    as_of: Annotated[
        str | None, typer.Option(help="Snapshot of the batch (default: newest).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="'B', 'B@TIME' or 'none' (default: previous snapshot, else parent / active batch)."
        ),
    ] = None,
    now: NowOption = None,
    all_checks: ShowAll = False,
    as_json: AsJson = False,
) -> None:
    """A batch's z_u: quality and drift; the recorded run gates `userrep batches promote`."""
    from validation.pipeline import newest_batch, validate_batch

    batch_id = batch or newest_batch(state.settings)
    if batch_id is None:
        fail("no batch has published z_u: run `userrep embed` first")
        return
    _run(
        lambda: validate_batch(state.settings, batch_id, parse_time(as_of), reference, _now(now)),
        all_checks,
        as_json,
    )


@validate_app.command("all")
def validate_all_cmd(
    now: NowOption = None, all_checks: ShowAll = False, as_json: AsJson = False
) -> None:
    """CI: the newest events part, item vectors, feature snapshot and batch of the workspace."""
    from validation.pipeline import validate_all

    _run(lambda: validate_all(state.settings, _now(now)), all_checks, as_json)
