"""CLI, foundation stages: ingest, encoders build, features build / materialize."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import track

from userrep.cli.app import app, console, encoders_app, fail, features_app, parse_time, state


class BuiltinDataset(StrEnum):
    synthetic = "synthetic"
    movielens_100k = "movielens-100k"
    lastfm_2k = "lastfm-2k"


@app.command("ingest")
def ingest_cmd(
    source: Annotated[
        Path | None, typer.Argument(help="Events CSV / parquet (omit with --dataset).")
    ] = None,
    mapping: Annotated[
        str,
        typer.Option(
            help="Column mapping, e.g. 'user_id=uid,item_id=track,ts=played_at,weight=ms'."
        ),
    ] = "",
    users: Annotated[
        Path | None, typer.Option(help="User table (sign-up, demographics, onboarding picks).")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="Item table (title, artist, genres).")] = None,
    ts_unit: Annotated[
        str | None, typer.Option(help="Unit of numeric timestamps (s, ms, us).")
    ] = None,
    dataset: Annotated[BuiltinDataset | None, typer.Option(help="Built-in dataset loader.")] = None,
    path: Annotated[
        Path | None, typer.Option(help="Dataset directory (default: shared/datasets/...).")
    ] = None,
    n_users: Annotated[int, typer.Option(help="Synthetic: number of users.")] = 2000,
    seed: Annotated[int, typer.Option(help="Synthetic: seed.")] = 0,
) -> None:
    """Validate and append events (bad rows are quarantined with a reason, never dropped)."""
    from userrep import ingest

    paths = state.settings.paths.ensure()
    try:
        if dataset is not None:
            reports = _ingest_builtin(paths, dataset, path, n_users, seed)
        elif source is not None:
            m = ingest.ColumnMapping.parse(mapping) if mapping else ingest.ColumnMapping()
            reports = [ingest.ingest_events(paths, source, m, ts_unit=ts_unit)]
        else:
            reports = []
        reports += [ingest.ingest_users(paths, users)] if users else []
        reports += [ingest.ingest_items(paths, items)] if items else []
    except ingest.IngestError as err:
        fail(str(err))
    if not reports:
        fail("nothing to ingest: give an events file or --dataset")
    for r in reports:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r.reasons.items())) or "none"
        console.print(
            f"{r.source}: read {r.read:,}  accepted {r.accepted:,}  quarantined {r.quarantined:,} ({reasons})"
        )
        if r.quarantine_file:
            console.print(f"  quarantine: {r.quarantine_file}")


def _ingest_builtin(
    paths, dataset: BuiltinDataset, path: Path | None, n_users: int, seed: int
) -> list:
    from userrep import ingest
    from userrep.data import loaders, synthetic

    if dataset is BuiltinDataset.synthetic:
        data = synthetic.generate(synthetic.SyntheticConfig(n_users=n_users, seed=seed))
        data.user_truth.to_parquet(paths.truth / "users.parquet")
        data.item_truth.to_parquet(paths.truth / "items.parquet")
        frames = loaders.Dataset(data.events, data.users, data.items)
    else:
        name = dataset.value
        directory = path or loaders.dataset_dir(name)
        if directory is None or not directory.exists():
            fail(f"dataset {name} not found: pass --path or set USERREP_DATASETS")
        load = (
            loaders.load_movielens_100k
            if dataset is BuiltinDataset.movielens_100k
            else loaders.load_lastfm_2k
        )
        frames = load(directory)
        if frames.friends is not None:
            ingest.ingest_friends(paths, frames.friends)
    return [
        ingest.ingest_event_frame(paths, frames.events, dataset.value),
        ingest.ingest_users(paths, frames.users),
        ingest.ingest_items(paths, frames.items),
    ]


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
    with console.status("building modality encoders"):
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
    """Build encoder_input_v1 snapshots (history per horizon + onboarding) as of each time."""
    from representation.build import build_snapshot, last_event_time, materialize_latest

    settings = state.settings
    times = [parse_time(t) for t in (as_of or [])]
    if start and end:
        times += list(pd.date_range(parse_time(start), parse_time(end), freq=every))
    times = sorted(set(t for t in times if t is not None)) or [last_event_time(settings.paths)]
    for t in track(times, description="feature snapshots", console=console):
        r = build_snapshot(settings, t)
        console.print(
            f"{t}: {r.n_history_users:,} users with history, {r.n_onboarding_users:,} onboarding rows, "
            f"{r.n_events:,} events in {r.seconds:.2f}s"
        )
    if materialize:
        with console.status("materializing to the online store"):
            materialize_latest(settings, times[-1])
        console.print(f"online store holds features as of {times[-1]}")
