"""Workspace-level validation, used by `userrep validate` and the demo: find the newest output of
a stage (events part, item vectors, feature snapshot, z_u batch snapshot) and its reference,
run the suites, write the HTML report and record the run in the metadata DB.
"""

from __future__ import annotations

import logging

import pandas as pd

from representation.batches import active_batch, list_batches
from representation.encoders import current_version
from representation.inputs import snapshot_times
from userrep import columns as C
from userrep.db import TargetKind, session_scope
from userrep.settings import Settings
from validation import targets
from validation.config import ValidationConfig
from validation.frames import (
    batch_record,
    encoder_dims,
    features_frame,
    load_zu,
    vector_widths,
    zu_files,
)
from validation.outcome import ValidationOutcome, previous_row_count, record
from validation.report import write_report

log = logging.getLogger(__name__)
NO_REFERENCE = "none"  # pass as `reference` to skip drift checks


def default_now(settings: Settings) -> pd.Timestamp:
    """The workspace's own clock: its newest accepted event (wall-clock time if none).

    Freshness is judged against the data, so a workspace of historical data validates the
    same today as on the day it was built; pass `now` for production wall-clock checks.
    """
    import duckdb

    parts = settings.paths.events / "*.parquet"
    if not any(settings.paths.events.glob("*.parquet")):
        return pd.Timestamp.now(tz="UTC")
    newest = duckdb.connect().execute(f"SELECT MAX(ts) FROM read_parquet('{parts}')").fetchone()
    return pd.Timestamp(newest[0]).tz_convert("UTC")  # type: ignore[index]


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _finish(settings: Settings, outcome: ValidationOutcome, save: bool) -> ValidationOutcome:
    """Write the report and record the run (unless save is False)."""
    if save:
        write_report(outcome, settings.paths.reports)
        record(settings, outcome)
    log.info("%s", outcome.headline())
    return outcome


def validate_events(
    settings: Settings,
    part: str | None = None,
    now: pd.Timestamp | None = None,
    config: ValidationConfig | None = None,
    save: bool = True,
) -> ValidationOutcome:
    """An accepted events part (default: the newest ingest)."""
    parts = sorted(settings.paths.events.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no events in {settings.paths.events}: run `userrep ingest`")
    path = settings.paths.events / part if part else parts[-1]
    cfg, now = config or ValidationConfig(), now or default_now(settings)
    previous = previous_row_count(settings, TargetKind.EVENTS, targets.EVENTS_SUITE)
    frame = pd.read_parquet(path)
    outcome = targets.check_events(frame, path.stem, now, cfg, previous)
    return _finish(settings, outcome, save)


def validate_item_vectors(
    settings: Settings,
    version: str | None = None,
    now: pd.Timestamp | None = None,
    config: ValidationConfig | None = None,
    save: bool = True,
) -> ValidationOutcome:
    """One encoder version's Feast item_vectors file (default: the CURRENT version)."""

    version = version or current_version(settings.paths)
    cfg, now = config or ValidationConfig(), now or default_now(settings)
    frame = pd.read_parquet(settings.paths.item_vectors / f"{version}.parquet")
    previous = previous_row_count(settings, TargetKind.ITEM_VECTORS, targets.ITEM_VECTORS_SUITE)
    dims = encoder_dims(settings, version)
    outcome = targets.check_item_vectors(frame, version, dims, now, cfg, previous)
    return _finish(settings, outcome, save)


def validate_features(
    settings: Settings,
    as_of: pd.Timestamp | None = None,
    reference: pd.Timestamp | str | None = None,
    now: pd.Timestamp | None = None,
    config: ValidationConfig | None = None,
    save: bool = True,
) -> ValidationOutcome:
    """A feature snapshot (default: the newest) and its drift vs `reference` (default: the
    snapshot before it; NO_REFERENCE for none)."""

    times = snapshot_times(settings.paths)
    if not times:
        raise FileNotFoundError("no feature snapshots: run `userrep features build`")
    as_of = as_of or times[-1]
    if reference is None:
        earlier = [t for t in times if t < as_of]
        reference = earlier[-1] if earlier else NO_REFERENCE
    ref_time = None if reference == NO_REFERENCE else _utc(pd.Timestamp(reference))
    cfg, now = config or ValidationConfig(), now or default_now(settings)
    previous = previous_row_count(settings, TargetKind.FEATURES, targets.FEATURES_SUITE)
    base = features_frame(settings, ref_time) if ref_time is not None else None
    outcome = targets.check_features(
        features_frame(settings, as_of),
        as_of.isoformat(),
        vector_widths(settings),
        settings.horizon_list,
        now,
        cfg,
        previous,
        base,
        ref_time and ref_time.isoformat(),
    )
    return _finish(settings, outcome, save)


def resolve_reference(
    settings: Settings, batch_id: str, as_of: pd.Timestamp, reference: str | None
) -> tuple[str, pd.Timestamp] | None:
    """(batch, snapshot) to compare a batch snapshot with.

    reference: "none"; "B" (B's newest snapshot before as_of, else its newest) or "B@TIME";
    None = automatic: the same batch's previous snapshot (same space), else the parent batch,
    else the active batch (different spaces: space-invariant checks only), else nothing.
    """

    if reference == NO_REFERENCE:
        return None
    if reference is not None and "@" in reference:
        ref_batch, ref_time = reference.split("@", 1)
        return ref_batch, _utc(pd.Timestamp(ref_time))
    candidates: list[str | None] = [reference]
    if reference is None:
        batch = batch_record(settings, batch_id)
        with session_scope(settings.metadata_db_url) as session:
            active = active_batch(session)
        candidates = [batch_id, batch.parent_batch_id, active.batch_id if active else None]
    for ref_batch in (b for b in candidates if b):
        times = [t for t in zu_files(settings, ref_batch) if ref_batch != batch_id or t < as_of]
        if times:
            earlier = [t for t in times if t <= as_of]
            return ref_batch, (earlier or times)[-1]
    return None


def validate_batch(
    settings: Settings,
    batch_id: str,
    as_of: pd.Timestamp | None = None,
    reference: str | None = None,
    now: pd.Timestamp | None = None,
    config: ValidationConfig | None = None,
    save: bool = True,
) -> ValidationOutcome:
    """A batch's published z_u (default: its newest snapshot) and its drift vs a reference
    (see resolve_reference). The recorded run is what `batches promote` checks."""
    files = zu_files(settings, batch_id)
    if not files:
        raise FileNotFoundError(f"batch {batch_id} has no published z_u: run `userrep embed`")
    as_of = as_of or list(files)[-1]
    if as_of not in files:
        raise FileNotFoundError(f"batch {batch_id} has no z_u as of {as_of} (has {list(files)})")
    dim = batch_record(settings, batch_id).latent_dim
    frame, z = load_zu(files[as_of], dim)
    ref = resolve_reference(settings, batch_id, as_of, reference)
    ref_vectors, ref_name = None, None
    if ref is not None:
        ref_dim = batch_record(settings, ref[0]).latent_dim
        ref_frame, ref_z = load_zu(zu_files(settings, ref[0])[ref[1]], ref_dim, frame=False)
        ref_vectors, ref_name = (ref_frame[C.USER_ID].to_numpy(), ref_z), f"{ref[0]}@{ref[1]}"
    cfg, now = config or ValidationConfig(), now or default_now(settings)
    previous = previous_row_count(settings, TargetKind.BATCH, targets.ZU_SUITE)
    outcome = targets.check_zu(
        frame,
        z,
        batch_id,
        dim,
        now,
        cfg,
        previous,
        ref_vectors,
        same_space=ref is None or ref[0] == batch_id,
        reference_ref=ref_name,
    )
    outcome.statistics["as_of"] = as_of.isoformat()
    return _finish(settings, outcome, save)


def newest_batch(settings: Settings) -> str | None:
    """The most recently created batch that has published z_u."""

    with session_scope(settings.metadata_db_url) as session:
        ids = [b.batch_id for b in list_batches(session)]
    return next((b for b in reversed(ids) if zu_files(settings, b)), None)


def validate_all(
    settings: Settings, now: pd.Timestamp | None = None, config: ValidationConfig | None = None
) -> list[ValidationOutcome]:
    """CI path: the newest events part, item vectors, feature snapshot and batch that exist."""

    now = now or default_now(settings)
    outcomes = []
    if any(settings.paths.events.glob("part-*.parquet")):
        outcomes.append(validate_events(settings, now=now, config=config))
    if (settings.paths.encoders / "CURRENT").exists():
        outcomes.append(validate_item_vectors(settings, now=now, config=config))
    if snapshot_times(settings.paths):
        outcomes.append(validate_features(settings, now=now, config=config))
    batch_id = newest_batch(settings)
    if batch_id is not None:
        outcomes.append(validate_batch(settings, batch_id, now=now, config=config))
    return outcomes
