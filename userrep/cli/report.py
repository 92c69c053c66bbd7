"""CLI `report`: the downstream / infrastructure-cost page (downstream/report.py) for a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from userrep.cli.app import console, fail, parse_time, state

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py


@commands.command("report")
def report_cmd(
    batch: Annotated[str | None, typer.Option(help="z_u batch (default: the active one).")] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="Label time T (default: newest publish of the batch with later events)."),
    ] = None,
    family: Annotated[str, typer.Option(help="xgboost | lightgbm.")] = "lightgbm",
    window_days: Annotated[
        int | None,
        typer.Option(help="Label window (T, T + days] (default: the label times' spacing, or 7)."),
    ] = None,
    calls: Annotated[int, typer.Option(help="Online lookups timed per feature set.")] = 50,
    out: Annotated[Path | None, typer.Option(help="Folder (default: <workspace>/reports).")] = None,
    recompute: Annotated[
        bool,
        typer.Option(
            "--recompute",
            help="Measure the task metrics and costs again instead of reusing the results "
            "stored under <workspace>/reports/cache for the same batch, T, options and inputs.",
        ),
    ] = False,
) -> Path:
    """Metrics vs baselines, serving / training cost (curated vs z_u), z_u projection, loss
    curves: one self-contained HTML page plus a markdown summary. Prints the HTML path.
    Results computed before for the same batch, T, options and input files are reused."""
    from downstream import report
    from representation.batches import BatchError

    settings = state.settings
    try:
        with console.status("downstream report: the task models (or their stored results)"):
            data = report.collect(
                settings,
                batch,
                parse_time(as_of),
                family,
                window_days,
                n_calls=calls,
                recompute=recompute,
            )
    except (BatchError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    html_path, md_path = report.write_report(data, out or settings.paths.reports)
    console.print(f"report: {html_path} (summary {md_path.name})")
    print(html_path)
    return html_path
