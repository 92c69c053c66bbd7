"""CLI, representation stage: train, embed, batches, embed-user, export-embeddings, demo."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from userrep.cli.app import (
    console,
    db_url,
    emit_json,
    emit_table,
    fail,
    parse_time,
    require_workspace,
    state,
)
from userrep.cli.data import locked

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py

batches_app = typer.Typer(help="z_u batches: list, show, promote, retire.", no_args_is_help=True)
commands.add_typer(batches_app, name="batches")


def _latest_snapshot() -> object:
    from representation.inputs import snapshot_times

    times = snapshot_times(state.settings.paths)
    if not times:
        fail("no feature snapshots: run `userrep features build` first")
    return times[-1]


@commands.command("train")
def train_cmd(
    as_of: Annotated[
        str | None, typer.Option(help="Snapshot to train on (default: newest).")
    ] = None,
    latent_dim: Annotated[int, typer.Option(help="Size of z_u.")] = 64,
    epochs: Annotated[
        int, typer.Option(help="Maximum epochs (early stopping on held-out users).")
    ] = 50,
    parent: Annotated[str | None, typer.Option(help="Parent batch id (recorded).")] = None,
    align_to: Annotated[
        str | None, typer.Option(help="Align z_u to this batch (default: the active one).")
    ] = None,
    no_align: Annotated[
        bool, typer.Option("--no-align", help="Keep the new batch's own z_u space.")
    ] = False,
    align_method: Annotated[
        str | None,
        typer.Option(
            help="procrustes (map after training), bct (compatibility term in training) or "
            "bct+procrustes (default: representation.align.DEFAULT_METHOD)."
        ),
    ] = None,
    compat_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of the BCT term, relative to the parent's variance "
            "(default: TrainConfig.compat_weight)."
        ),
    ] = None,
    tag_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Weight of the training-time tag decoder (the user's genre / tag shares); "
            "0 turns it off (default: TrainConfig.tag_weight).",
        ),
    ] = None,
) -> None:
    """Train the denoising autoencoder on encoder_input_v2: a new batch (status building)."""
    from representation.align import DEFAULT_METHOD, METHODS, default_parent
    from representation.pipeline import train_batch
    from representation.train import TrainConfig

    require_workspace()
    align_method = align_method or DEFAULT_METHOD
    if align_method not in METHODS:
        fail(f"--align-method: choose from {', '.join(METHODS)}")
    t = parse_time(as_of) or _latest_snapshot()
    cfg = TrainConfig(epochs=epochs, seed=state.settings.seed)
    if compat_weight is not None:
        cfg = replace(cfg, compat_weight=compat_weight)
    if tag_weight is not None:
        cfg = replace(cfg, tag_weight=tag_weight)
    target = None if no_align else (align_to or default_parent(state.settings))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with locked("train"), Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=epochs, loss="")

        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            progress.update(
                task, completed=epoch + 1, loss=f"train {train_loss:.4f}  val {val_loss:.4f}"
            )

        batch_id = train_batch(
            state.settings,
            t,
            {"latent_dim": latent_dim},
            cfg,
            parent,
            on_epoch,
            target,
            align_method,
        )
    console.print(
        f"batch {batch_id} trained (status building): next `userrep embed --batch {batch_id}`"
    )
    print(batch_id)


@commands.command("embed")
def embed_cmd(
    batch: Annotated[
        str | None, typer.Option(help="Batch to embed with (default: newest).")
    ] = None,
    as_of: Annotated[
        list[str] | None, typer.Option(help="Snapshot to embed (default: newest); repeatable.")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Backfill range start (with --end, --every).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Backfill range end.")] = None,
    every: Annotated[str, typer.Option(help="Backfill step, e.g. 7D, 1D.")] = "7D",
    online: Annotated[
        bool, typer.Option(help="Also write z_u to the online store (newest time only).")
    ] = True,
) -> None:
    """Embed every user as of a snapshot and publish z_u offline + online (atomically).

    Several times (--as-of repeated, or --start/--end/--every) add one as-of each to the batch
    (a backfill: downstream training sets join each label row to z_u as of its own time);
    missing feature snapshots are built first. A new batch becomes ready only after every
    as-of and the online load are written: a run killed midway leaves it building, and
    running the same command again finishes it. A retired batch is refused."""
    import pandas as pd

    from representation import batches
    from representation.artifact import ArtifactIntegrityError
    from userrep.db import session_scope
    from userrep.faults import fault_point

    times: list[pd.Timestamp] = sorted({t for t in map(parse_time, as_of or []) if t is not None})
    if start and end:
        span = pd.date_range(parse_time(start), parse_time(end), freq=every)
        times = sorted(set(times) | set(span))
    with locked("embed"):
        batch_id = batch or _newest_batch()
        try:
            with session_scope(db_url()) as session:
                batches.require_embeddable(session, batch_id)
            with batches.ready_deferred(batch_id):
                todo = times or [_latest_snapshot()]
                for i, t in enumerate(todo):
                    if i == 1:
                        fault_point("embed:between-as-ofs")
                    newest = not times or t == times[-1]
                    n = _embed_one(batch_id, t, online and newest, build=bool(times))
            fault_point("embed:published")
            with session_scope(db_url()) as session:
                if batches.mark_ready_if_building(session, batch_id, n):
                    console.print(f"batch {batch_id}: ready ({n:,} users)")
        except (batches.BatchError, ArtifactIntegrityError, FileNotFoundError) as err:
            fail(str(err))


def _embed_one(batch_id: str, t: object, online: bool, build: bool) -> int:
    from representation.build import build_snapshot
    from representation.features import snapshot_name
    from representation.scale import engine_for

    if build and not (state.settings.paths.user_onboarding / snapshot_name(t)).exists():
        build_snapshot(state.settings, t)  # type: ignore[arg-type]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} users"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"embedding {batch_id}", total=None)
        report = engine_for(state.settings).embed_batch(
            batch_id, t, online=online, on_chunk=lambda n: progress.advance(task, n)
        )
    console.print(
        f"batch {batch_id}: {report.n_users:,} users as of {t} in {report.seconds:.1f}s "
        f"({report.n_users / max(report.seconds, 1e-9):,.0f} users/s) -> {report.offline_file.name}"
    )
    return report.n_users


def _newest_batch() -> str:
    from representation import batches
    from userrep.db import session_scope

    with session_scope(db_url()) as session:
        rows = batches.list_batches(session)
    if not rows:
        fail("no batches: run `userrep train` first")
    return rows[-1].batch_id


JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


@batches_app.command("list")
def batches_list_cmd(as_json: JsonOpt = False) -> None:
    """All batches with status, as-of time, users and pinned models."""
    from representation import batches
    from userrep.db import session_scope

    records = []
    with session_scope(db_url()) as session:
        for b in batches.list_batches(session):
            records.append(
                {
                    "batch_id": b.batch_id,
                    "status": b.status,
                    "as_of": b.as_of,
                    "latent_dim": b.latent_dim,
                    "n_users": b.n_users,
                    "pinned_models": [m.name for m in batches.pinned_models(session, b.batch_id)],
                    "parent_batch_id": b.parent_batch_id,
                }
            )
    if as_json:
        emit_json(records)
        return
    emit_table(
        ("batch", "status", "as_of", "latent", "users", "pinned models", "parent"),
        (
            (
                r["batch_id"],
                r["status"],
                f"{r['as_of']:%Y-%m-%d %H:%M}",
                r["latent_dim"],
                f"{r['n_users'] or 0:,}",
                ", ".join(map(str, r["pinned_models"])) or "-",  # type: ignore[call-overload]
                r["parent_batch_id"] or "-",
            )
            for r in records
        ),
    )


@batches_app.command("show")
def batches_show_cmd(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")], as_json: JsonOpt = False
) -> None:
    """Everything recorded about one batch (JSON, with or without --json)."""
    from representation import batches
    from userrep.db import session_scope

    with session_scope(db_url()) as session:
        b = batches.get_batch(session, batch_id)  # BatchError: `error:` line, exit 2
        cols = [c.name for c in b.__table__.columns]
        record = {c: getattr(b, c) for c in cols}
        record["pinned_models"] = [m.model_id for m in batches.pinned_models(session, batch_id)]
    emit_json(record)


@batches_app.command("promote")
def batches_promote_cmd(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")],
    force: Annotated[
        str | None, typer.Option(help="Promote despite failed gates; the reason is recorded.")
    ] = None,
) -> None:
    """Make a ready batch the active one (requires a passing validation run)."""
    _lifecycle("promote", batch_id, force_reason=force)


@batches_app.command("retire")
def batches_retire_cmd(batch_id: Annotated[str, typer.Argument(help="Batch id.")]) -> None:
    """Stop serving a batch (refused while a downstream model is pinned to it)."""
    _lifecycle("retire", batch_id)


def _lifecycle(action: str, batch_id: str, **kwargs: object) -> None:
    from representation import batches
    from userrep.db import session_scope

    try:
        with locked(f"batches {action}"), session_scope(db_url()) as session:
            b = getattr(batches, action)(session, batch_id, **kwargs)
            status = b.status
    except batches.BatchError as err:
        fail(str(err))
    console.print(f"batch {batch_id}: {status}")


@commands.command("export-embeddings")
def export_cmd(
    out: Annotated[Path, typer.Option(help="Output file: parquet, or CSV when it ends in .csv.")],
    batch: Annotated[str | None, typer.Option(help="Batch id (default: the active batch).")] = None,
    as_of: Annotated[
        str | None, typer.Option(help="The as-of to export (default: the batch's newest).")
    ] = None,
    all_as_of: Annotated[
        bool, typer.Option("--all-as-of", help="Export every as-of of the batch (its history).")
    ] = False,
    include_retired: Annotated[
        bool, typer.Option("--include-retired", help="Also export a retired batch.")
    ] = False,
) -> None:
    """Write (user_id, z_u, batch, as_of) of a batch to parquet or CSV (by --out's suffix)."""
    from representation import batches
    from userrep.db import BatchStatus, session_scope

    if as_of is not None and all_as_of:
        fail("--as-of and --all-as-of: give one of them")
    t = parse_time(as_of)
    try:  # looked up in the metadata DB: never a glob or a path
        with session_scope(db_url()) as session:
            if batch is None:
                active = batches.active_batch(session)
                if active is None:
                    fail("no active batch: pass --batch or run `userrep batches promote` first")
                batch = active.batch_id
            batches.check_batch_id(batch)
            status = batches.get_batch(session, batch).status
        if status == BatchStatus.RETIRED and not include_retired:
            fail(f"batch {batch!r} is retired: pass --include-retired to export it anyway")
        if status == BatchStatus.BUILDING:
            fail(f"batch {batch!r} is building: it is exported once `userrep embed` made it ready")
        from representation.pipeline import export_embeddings  # torch: only when it will run

        n = export_embeddings(
            state.settings, batch, out, as_of=None if all_as_of else (t or "newest")
        )
    except (batches.BatchError, FileNotFoundError) as err:
        fail(str(err))
    console.print(f"batch {batch}: {n:,} rows -> {out}")
    print(out)


@commands.command("embed-user")
def embed_user_cmd(
    user_id: Annotated[int, typer.Option(help="User id.")],
    batch: Annotated[str | None, typer.Option(help="Batch (default: active).")] = None,
    signup: Annotated[str | None, typer.Option(help="Sign-up time (default: now).")] = None,
    items: Annotated[str, typer.Option(help="Onboarding item picks, comma-separated ids.")] = "",
    genres: Annotated[str, typer.Option(help="Onboarding genre picks, comma-separated.")] = "",
    age: Annotated[float | None, typer.Option(help="Age.")] = None,
    gender: Annotated[str, typer.Option(help="f / m / x.")] = "",
    country: Annotated[str, typer.Option(help="Country code.")] = "",
    events: Annotated[
        Path | None,
        typer.Option(
            help="The user's plays: item_id, ts, optional weight; parquet or delimited text, "
            "read with ingest's readers and rules."
        ),
    ] = None,
    ts_unit: Annotated[
        str,
        typer.Option(
            help="Unit of epoch-number ts in --events: s, ms, us or ns (as `ingest "
            "--ts-unit`); a number implausible in it is an error naming the unit that fits."
        ),
    ] = "s",
    as_of: Annotated[str | None, typer.Option(help="Embed as of this time (default: now).")] = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="Also write the vector online (and offline) for the user, as the NRT path "
            "does; refused when a newer vector of the user may be online.",
        ),
    ] = False,
) -> None:
    """Embed one user from onboarding signals (and optional plays) with a batch's encoder.

    Prints one JSON object: user_id, batch_id, z_u, published, and the onboarding picks the
    encoder does not know (unknown_items, unknown_genres), which are left out (and named on
    stderr); when every pick given is unknown, nothing is embedded (error, exit 2)."""
    import pandas as pd

    from nrt.signals import NotNewer, UnknownPicks, UserSignals, embed_user
    from representation.serving import resolve_batch
    from userrep.ingest import IngestError, read_user_events

    batch_id, _ = resolve_batch(require_workspace(), batch)
    now = parse_time(as_of) or pd.Timestamp.now(tz="UTC")
    try:
        plays = None if events is None else read_user_events(events, ts_unit=ts_unit)
    except IngestError as err:
        fail(str(err))
    try:
        picked = [int(i) for i in items.split(",") if i.strip()]
    except ValueError:
        fail(f"--items {items!r}: give comma-separated integer item ids")
    signals = UserSignals(
        user_id,
        parse_time(signup) or now,
        age,
        gender,
        country,
        picked,
        [g.strip() for g in genres.split(",") if g.strip()],
        plays,
    )
    try:
        got = embed_user(state.settings, batch_id, signals, now, publish)
    except UnknownPicks as err:
        fail(str(err))
    except NotNewer as err:
        fail(f"not published: {err}")
    if got.unknown_items or got.unknown_genres:
        console.print(
            f"ignored onboarding picks the encoder does not know: items {got.unknown_items}, "
            f"genres {got.unknown_genres}"
        )
    if got.published:
        console.print(f"user {user_id}: z_u published online under batch {batch_id} as of {now}")
    result = {
        "user_id": user_id,
        "batch_id": batch_id,
        "z_u": [round(float(v), 6) for v in got.z],
        "published": got.published,
        "unknown_items": got.unknown_items,
        "unknown_genres": got.unknown_genres,
    }
    print(json.dumps(result))
