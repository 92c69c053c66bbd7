"""CLI, quality: `userrep evaluate` runs the fixed representation-quality protocol in-process
(z_u beside every baseline, optional ablations) and writes markdown, HTML and JSON reports.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from userrep.cli.app import console, fail, state

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@commands.command("evaluate")
def evaluate_cmd(
    dataset: Annotated[
        str,
        typer.Option(
            help="synthetic, a built-in data set (movielens-100k, lastfm-2k, tafeng, ciao, "
            "movietweetings-100k; read from ../shared/datasets or $USERREP_DATASETS), or "
            "workspace: the events, users, items and friends ingested into --workspace."
        ),
    ] = "synthetic",
    split: Annotated[
        str | None,
        typer.Option(
            help="With --dataset workspace: cut each user's history by time (default) or at "
            "random (for made-up timestamps). The built-in data sets have their fixed cut."
        ),
    ] = None,
    feedback: Annotated[
        str,
        typer.Option(
            help="auto | implicit | explicit. explicit: event weights are ratings; the label is "
            "'liked' (rating >= the user's mean history rating) scored on rated pairs only. "
            "auto: explicit for ciao and movietweetings-100k, implicit otherwise (MovieLens "
            "keeps the bar's 'any future rating'; a workspace is implicit unless told).",
        ),
    ] = "auto",
    seed: Annotated[
        list[int] | None,
        typer.Option(
            help="Protocol seed (split, models); repeat for the noise: --seed 0 --seed 1."
        ),
    ] = None,
    ablate: Annotated[
        str | None,
        typer.Option(
            help="z_u input blocks to drop, one run each: 7d,30d,180d,all,collab,content,"
            "onboarding,stats,feedback (the liked / disliked means and the level scalars)."
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(help="Comma list (default: z_u, the proposed recipe and every baseline)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Report folder (default: <workspace>/reports/evaluate-<dataset>)."),
    ] = None,
    exclude_seen: Annotated[
        bool,
        typer.Option(
            "--exclude-seen",
            help="Diagnostic, off the protocol: fit and score only (user, candidate) pairs whose "
            "item is not in the user's history, so no probe gains from knowing what a user "
            "already has (docs/quality.md).",
        ),
    ] = False,
) -> None:
    """Score z_u and the baselines on the fixed protocol; report.md, report.html, results.json."""
    from evaluation import report
    from evaluation.methods import method_factory
    from evaluation.protocol import (
        DATASETS,
        WORKSPACE,
        EvalData,
        ProtocolConfig,
        load_workspace_data,
    )
    from evaluation.runner import DEFAULT_METHODS, evaluate
    from representation.model import ABLATION_SWITCHES

    seeds, switches = seed or [0], _csv(ablate)
    chosen = _csv(methods) or list(DEFAULT_METHODS)
    if dataset not in (*DATASETS, WORKSPACE):
        fail(f"unknown dataset {dataset!r}: choose from {', '.join((*DATASETS, WORKSPACE))}")
    if split is not None and dataset != WORKSPACE:
        fail(f"--split is for --dataset {WORKSPACE}: {dataset} has the protocol's fixed cut")
    try:
        protocol = ProtocolConfig(exclude_seen=exclude_seen, feedback=feedback)
    except ValueError as err:
        fail(str(err))
    for key in chosen:  # before any data is loaded: a typo fails in a second, not minutes
        try:
            method_factory(key)
        except ValueError as err:
            fail(str(err))
    if bad := sorted(set(switches) - set(ABLATION_SWITCHES)):
        fail(f"unknown ablation {bad}: choose from {', '.join(ABLATION_SWITCHES)}")
    settings = state.settings
    out = out or settings.paths.reports / f"evaluate-{dataset}"
    source: str | EvalData = dataset
    if dataset == WORKSPACE:
        try:
            source = load_workspace_data(settings.paths, split or "time")
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
    command = "userrep " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:

            def step(name: str) -> None:
                progress.advance(task)
                progress.update(task, description=f"evaluate {dataset}: {name}")

            task = progress.add_task(
                f"evaluate {dataset}", total=len(seeds) * (len(chosen) + len(switches))
            )
            run = evaluate(
                source,
                seeds,
                chosen,
                switches,
                settings.text_cache_path,
                protocol=protocol,
                command=command,
                on_step=step,
            )
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    files = report.write(run, out)
    console.print(report.to_markdown(run), markup=False, highlight=False)
    console.print(f"wall time {run.wall_s:.0f} s; reports: {', '.join(str(f) for f in files)}")
