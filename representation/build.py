"""Workspace-level jobs for the foundation stages: encoders build and feature snapshots.

Each job reads the ingested tables of a workspace and publishes versioned outputs that the
Feast feature views read; the CLI wraps these one to one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from representation import encoders as enc
from representation import features as feat
from representation.scale import engine_for
from userrep import columns as C
from userrep.feast_store import store as feast_store
from userrep.ingest.tables import ITEM_SCHEMA, read_table
from userrep.settings import Settings, WorkspacePaths

log = logging.getLogger(__name__)


def events_until(
    paths: WorkspacePaths,
    as_of: pd.Timestamp | None,
    columns: Sequence[str] = (C.USER_ID, C.ITEM_ID, C.TS, C.WEIGHT),
) -> pd.DataFrame:
    """Accepted events with ts <= as_of (all when as_of is None)."""
    if not any(paths.events.glob("*.parquet")):
        raise FileNotFoundError(f"no events in {paths.events}: run `userrep ingest` first")
    where = "" if as_of is None else "WHERE ts <= $as_of"
    params = {} if as_of is None else {"as_of": as_of.to_pydatetime()}
    sql = f"SELECT {', '.join(columns)} FROM read_parquet('{paths.events}/*.parquet') {where}"
    return duckdb.connect().execute(sql, params).df()


def last_event_time(paths: WorkspacePaths) -> pd.Timestamp:
    sql = f"SELECT MAX(ts) FROM read_parquet('{paths.events}/*.parquet')"
    return pd.Timestamp(duckdb.connect().execute(sql).fetchone()[0]).tz_convert("UTC")  # type: ignore[index]


def users_frame(paths: WorkspacePaths) -> pd.DataFrame:
    """The ingested user table; users seen only in events get their first event as sign-up."""
    first = (
        duckdb.connect()
        .execute(
            f"SELECT user_id, MIN(ts) AS signup_ts FROM read_parquet('{paths.events}/*.parquet') GROUP BY 1"
        )
        .df()
    )
    users = (
        pd.read_parquet(paths.users)
        if paths.users.exists()
        else pd.DataFrame(columns=list(C.USER_COLUMNS))
    )
    missing = first[~first[C.USER_ID].isin(users[C.USER_ID])]
    extra = missing.assign(**{C.AGE: np.nan, C.GENDER: "", C.COUNTRY: ""})
    extra[C.ONBOARDING_ITEMS] = [[] for _ in range(len(extra))]
    extra[C.ONBOARDING_GENRES] = [[] for _ in range(len(extra))]
    extra = extra[list(C.USER_COLUMNS)]
    if not len(users):  # no user table: concat with an empty frame would guess the dtypes
        out = extra.reset_index(drop=True)
    else:
        out = pd.concat([users, extra], ignore_index=True) if len(extra) else users
    out[C.SIGNUP_TS] = pd.to_datetime(out[C.SIGNUP_TS], utc=True)
    return out.sort_values(C.USER_ID).reset_index(drop=True)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def build_encoders(
    settings: Settings, as_of: pd.Timestamp | None = None, cfg: enc.EncoderConfig | None = None
) -> enc.ItemVectors:
    """Fit the collaborative encoder on events <= as_of, embed item text; publish a version."""
    paths = settings.paths.ensure()
    cfg = cfg or enc.EncoderConfig(seed=settings.seed)
    as_of = as_of or last_event_time(paths)
    events = events_until(paths, as_of, (C.USER_ID, C.ITEM_ID))
    items = read_table(paths.items, ITEM_SCHEMA)  # empty without a catalog: events only
    users = users_frame(paths)
    version = enc.encoder_version(as_of, _fingerprint(len(events), len(items), cfg, as_of))
    t0 = time.perf_counter()
    embedder = enc.TextEmbedder(settings.text_cache_path)
    vecs = enc.build_item_vectors(events, items, users, cfg, embedder, version)
    enc.save_item_vectors(
        paths, vecs, cfg, as_of, {"n_events": len(events), "seconds": time.perf_counter() - t0}
    )
    log.info("encoder %s: %d items, %d events", version, len(vecs.item_ids), len(events))
    return vecs


def build_snapshot(
    settings: Settings,
    as_of: pd.Timestamp,
    vecs: enc.ItemVectors | None = None,
    users: pd.DataFrame | None = None,
) -> feat.SnapshotReport:
    """Write the history and onboarding feature snapshots as of one time (history on the
    settings' engine: local or Ray)."""
    paths = settings.paths.ensure()
    vecs = vecs or enc.load_item_vectors(paths)
    users = users if users is not None else users_frame(paths)
    t0 = time.perf_counter()
    n_hist = engine_for(settings).write_history_snapshot(vecs, as_of, settings.horizon_list)
    n_onb = feat.write_onboarding_snapshot(paths, users, vecs, as_of)
    n_events = feat.count_events(duckdb.connect(), paths, as_of)
    report = feat.SnapshotReport(as_of, n_hist, n_onb, n_events, time.perf_counter() - t0)
    log.info("snapshot %s: %d users with history, %d onboarding rows", as_of, n_hist, n_onb)
    return report


def materialize_latest(
    settings: Settings,
    as_of: pd.Timestamp,
    views: Sequence[str] = (C.USER_HISTORY_VIEW, C.USER_ONBOARDING_VIEW, C.ITEM_VECTORS_VIEW),
) -> None:
    """Load each user's newest feature values at or before as_of into the online store."""

    store = feast_store(settings)
    start = as_of - pd.Timedelta(days=3650)
    end = as_of + pd.Timedelta(seconds=1)
    store.materialize(
        start_date=start.to_pydatetime(), end_date=end.to_pydatetime(), feature_views=list(views)
    )
