"""CLI, foundation stages: ingest, encoders build, features build / materialize."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import track

from userrep.cli.app import console, fail, parse_time, state

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py
encoders_app = typer.Typer(help="Modality encoders (item vectors).", no_args_is_help=True)
features_app = typer.Typer(help="Point-in-time user input features in Feast.", no_args_is_help=True)
commands.add_typer(encoders_app, name="encoders")
commands.add_typer(features_app, name="features")


@contextmanager
def locked(job: str) -> Iterator[None]:
    """The workspace's writer lock for a command (userrep.lock): a second writer waits, then
    fails with an error naming the job that holds it."""
    from userrep.lock import WorkspaceBusy, workspace_lock

    try:
        with workspace_lock(state.settings, job):
            yield
    except WorkspaceBusy as err:
        fail(str(err))


class BuiltinDataset(StrEnum):
    synthetic = "synthetic"
    movielens_100k = "movielens-100k"
    lastfm_2k = "lastfm-2k"
    tafeng = "tafeng"
    ciao = "ciao"
    movietweetings_100k = "movietweetings-100k"


FORMATS_HELP = (
    "Map your column names onto the canonical ones, e.g. "
    "--mapping user_id=uid,item_id=track,ts=played_at,weight=ms. "
    "Files: parquet or delimited text, .csv / .tsv / .txt / .dat (also .gz, .bz2, .zst, .lz4). "
    "A file without a header (--no-header, or any .dat) names its columns by position, so map "
    "them by number, MovieLens 1M for example: ingest ratings.dat "
    "--mapping user_id=1,item_id=2,weight=3,ts=4 --users users.dat "
    "--users-mapping user_id=1,gender=2,age=3 --items movies.dat "
    "--items-mapping item_id=1,title=2,genres=3."
)


@commands.command("ingest", epilog=FORMATS_HELP)
def ingest_cmd(
    source: Annotated[
        Path | None,
        typer.Argument(help="Events file: parquet or delimited text (omit with --dataset)."),
    ] = None,
    mapping: Annotated[
        str,
        typer.Option(
            help="Events columns, canonical=source, e.g. 'user_id=uid,ts=played_at'; "
            "canonical: user_id, item_id, ts, weight, event_id, event_type; source: a name, "
            "or a 1-based position in a file without a header."
        ),
    ] = "",
    users: Annotated[
        Path | None, typer.Option(help="User table (sign-up, demographics, onboarding picks).")
    ] = None,
    users_mapping: Annotated[
        str,
        typer.Option(
            help="Users: canonical=source, canonical: user_id, signup_ts, age, gender, "
            "country, onboarding_items, onboarding_genres."
        ),
    ] = "",
    items: Annotated[Path | None, typer.Option(help="Item table (title, artist, genres).")] = None,
    items_mapping: Annotated[
        str,
        typer.Option(
            help="Items: canonical=source, canonical: item_id, title, artist_id, artist, genres."
        ),
    ] = "",
    sep: Annotated[
        str | None,
        typer.Option(
            help="Separator of every text file, several characters allowed ('::'); 'tab' or "
            "'\\t' for a tab. Default by suffix: .csv ',', .tsv / .txt tab, .dat '::'."
        ),
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header",
            help="Whether text files start with a header line (default: yes, except .dat).",
        ),
    ] = None,
    encoding: Annotated[
        str,
        typer.Option(help="Text encoding of every text file (MovieLens 1M's .dat: latin-1)."),
    ] = "utf-8",
    ts_unit: Annotated[
        str,
        typer.Option(
            help="Unit of epoch-number timestamps (events' ts, users' signup_ts): s, ms, us "
            "or ns. A number implausible in it (before 1990, or in the future) is "
            "quarantined with a reason naming the unit that fits."
        ),
    ] = "s",
    dataset: Annotated[
        BuiltinDataset | None,
        typer.Option(
            help="Built-in dataset loader: " + ", ".join(d.value for d in BuiltinDataset) + ".",
            metavar="NAME",
        ),
    ] = None,
    path: Annotated[
        Path | None, typer.Option(help="Dataset directory (default: shared/datasets/...).")
    ] = None,
    n_users: Annotated[int, typer.Option(help="Synthetic: number of users.")] = 2000,
    seed: Annotated[int, typer.Option(help="Synthetic: seed.")] = 0,
    max_quarantined: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Publish nothing (exit 1) when a table quarantines more than this share of "
            "its new rows, or accepts none; the quarantine is written either way.",
        ),
    ] = 0.5,
) -> None:
    """Validate and append events (bad rows are quarantined with a reason, never dropped).

    One ingest is one transaction: the events, --users and --items tables are all validated
    before anything is published, and all of it lands or none of it does."""
    from userrep import ingest

    paths = state.settings.paths.ensure()
    if dataset is None and source is None and not users and not items:
        fail("nothing to ingest: give an events file or --dataset")
    try:
        fmt = ingest.TextFormat(sep, header, encoding)
        with locked("ingest"), ingest.IngestTransaction(paths) as tx:
            if dataset is not None:
                _ingest_builtin(tx, paths, dataset, path, n_users, seed)
            elif source is not None:
                m = ingest.ColumnMapping.parse(mapping)
                tx.events(source, m, ts_unit=ts_unit, fmt=fmt)
            if users:
                tx.users(users, users_mapping, fmt=fmt, ts_unit=ts_unit)
            if items:
                tx.items(items, items_mapping, fmt=fmt)
            problems = tx.commit(max_quarantined)
    except ingest.IngestError as err:
        fail(f"{err} (nothing was ingested)")
    for _, r in tx.reports:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r.reasons.items())) or "none"
        console.print(
            f"{r.source}: read {r.read:,}  accepted {r.accepted:,}  quarantined {r.quarantined:,} ({reasons})"
        )
        if r.quarantine_file:
            console.print(f"  quarantine: {r.quarantine_file}")
    if problems:
        fail(
            "nothing was ingested (the quarantine is written): "
            + "; ".join(problems)
            + ". Fix the mapping or the data, or raise --max-quarantined",
            code=1,  # the data was refused, not the command line: exit 1, as --help says
        )


def _ingest_builtin(
    tx, paths, dataset: BuiltinDataset, path: Path | None, n_users: int, seed: int
) -> None:
    from userrep.data import loaders, synthetic

    if dataset is BuiltinDataset.synthetic:
        data = synthetic.generate(synthetic.SyntheticConfig(n_users=n_users, seed=seed))
        tx.table(paths.truth / "users.parquet", data.user_truth)
        tx.table(paths.truth / "items.parquet", data.item_truth)
        frames = loaders.Dataset(data.events, data.users, data.items)
    else:
        name = dataset.value
        directory = path or loaders.dataset_dir(name)
        if directory is None or not directory.exists():
            fail(f"dataset {name} not found: pass --path or set USERREP_DATASETS")
        frames = loaders.load_dataset(name, directory)
    tx.event_frame(frames.events, dataset.value)
    tx.users(frames.users)
    tx.items(frames.items)
    if frames.friends is not None:
        tx.friends(frames.friends)


@encoders_app.command("build")
def encoders_build_cmd(
    as_of: Annotated[
        str | None, typer.Option(help="Fit on events up to this time (default: last event).")
    ] = None,
    collab_dim: Annotated[int, typer.Option(help="Collaborative vector size.")] = 64,
    content_dim: Annotated[
        int, typer.Option(help="Content vector size (PCA of MiniLM's 384).")
    ] = 64,
) -> None:
    """Fit the collaborative encoder and embed item text; publish a new encoder version."""
    from representation.build import build_encoders
    from representation.encoders import EncoderConfig

    cfg = EncoderConfig(collab_dim=collab_dim, content_dim=content_dim, seed=state.settings.seed)
    with locked("encoders build"), console.status("building modality encoders"):
        vecs = build_encoders(state.settings, parse_time(as_of), cfg)
    console.print(f"encoder version {vecs.version}: {len(vecs.item_ids):,} items")


@features_app.command("build")
def features_build_cmd(
    as_of: Annotated[
        list[str] | None, typer.Option(help="Snapshot time; repeat for several.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="Range start (with --end, --every).")] = None,
    end: Annotated[str | None, typer.Option(help="Range end.")] = None,
    every: Annotated[str, typer.Option(help="Range step, e.g. 7D, 1D.")] = "7D",
    materialize: Annotated[
        bool, typer.Option(help="Load the newest snapshot into the online store.")
    ] = True,
) -> None:
    """Build encoder_input_v2 snapshots (history per horizon + onboarding) as of each time."""
    from representation.build import build_snapshot, last_event_time, materialize_latest
    from userrep.faults import fault_point

    settings = state.settings
    times = [parse_time(t) for t in (as_of or [])]
    if start and end:
        times += list(pd.date_range(parse_time(start), parse_time(end), freq=every))
    with locked("features build"):
        times = sorted(set(t for t in times if t is not None)) or [last_event_time(settings.paths)]
        for i, t in enumerate(track(times, description="feature snapshots", console=console)):
            if i == 1:
                fault_point("features:between-snapshots")
            r = build_snapshot(settings, t)
            console.print(
                f"{t}: {r.n_history_users:,} users with history, {r.n_onboarding_users:,} onboarding rows, "
                f"{r.n_events:,} events in {r.seconds:.2f}s"
            )
        fault_point("features:before-materialize")
        if materialize:
            with console.status("materializing to the online store"):
                materialize_latest(settings, times[-1])
            console.print(f"online store holds features as of {times[-1]}")
