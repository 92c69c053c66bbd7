"""Seeding the NRT state from a workspace's ingested events and user table, once, when
`userrep nrt serve|consume|bootstrap` first opens a state; afterwards the NRT path owns it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd

from nrt.state import PLAY_DTYPE, UPSERT_PROFILE, UPSERT_WATERMARK, SqliteState
from userrep import columns as C
from userrep.ingest import read_events
from userrep.settings import WorkspacePaths

log = logging.getLogger(__name__)
_TABLES = ("applied", "plays", "profiles", "watermarks", "outbox", "meta")


def bootstrap(
    state: SqliteState,
    paths: WorkspacePaths,
    rebuild: bool = False,
    partition: int = 0,
    partitions: int = 1,
) -> dict[str, int]:
    """Load the workspace's ingested events (with their ids: re-sent ones are duplicates) and
    user table into the state, once; only this partition's users; `rebuild` empties it first."""
    done = state.get_meta("bootstrapped")
    if done and not rebuild:
        return json.loads(done)

    ev = read_events(paths, [C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.TS, C.WEIGHT])
    ev = ev[ev[C.USER_ID] % partitions == partition]
    users = pd.read_parquet(paths.users) if paths.users.exists() else pd.DataFrame()
    if len(users):
        users = users[users[C.USER_ID] % partitions == partition]
    with state.transaction():
        for table in _TABLES if rebuild else ():
            state.conn.execute(f"DELETE FROM {table}")
        n_marks = _insert(state, ev, users)
        report = {"events": len(ev), "users": len(users), "watermarks": n_marks}
        state.set_meta("bootstrapped", json.dumps(report))
    log.info("NRT state bootstrapped from %s: %s", paths.root, report)
    return report


def _insert(state: SqliteState, ev: pd.DataFrame, users: pd.DataFrame) -> int:
    """Applied ids, packed plays, profiles and newest times; returns the users with a time."""
    ts = ev[C.TS].to_numpy("datetime64[us]").astype(np.int64)
    user = ev[C.USER_ID].to_numpy(np.int64)
    state.conn.executemany(
        "INSERT OR IGNORE INTO applied VALUES (?, ?, 'play', ?)",
        zip(ev[C.EVENT_ID].tolist(), user.tolist(), ts.tolist(), strict=True),
    )
    blobs = _play_blobs(user, ev[C.ITEM_ID].to_numpy(np.int64), ts, ev[C.WEIGHT].to_numpy())
    state.conn.executemany("INSERT OR REPLACE INTO plays VALUES (?, ?)", blobs)
    marks = pd.Series(ts).groupby(user).max()
    if len(users):
        signup = pd.to_datetime(users[C.SIGNUP_TS], utc=True)
        signup_us = pd.Series(
            signup.to_numpy("datetime64[us]").astype(np.int64), index=users[C.USER_ID].to_numpy()
        )[signup.notna().to_numpy()]
        marks = pd.concat([marks, signup_us]).groupby(level=0).max()
        state.conn.executemany(UPSERT_PROFILE, _profile_rows(users, signup))
    state.conn.executemany(UPSERT_WATERMARK, [(int(u), int(t), 0) for u, t in marks.items()])
    return len(marks)


def _play_blobs(
    user: np.ndarray, item: np.ndarray, ts_us: np.ndarray, weight: np.ndarray
) -> Iterator[tuple[int, bytes]]:
    """(user_id, packed plays) per user, as the state stores them."""
    order = np.argsort(user, kind="stable")
    packed = np.empty(len(user), PLAY_DTYPE)
    packed["item"], packed["ts_us"], packed["weight"] = item[order], ts_us[order], weight[order]
    users, starts = np.unique(user[order], return_index=True)
    for u, part in zip(users.tolist(), np.split(packed, starts[1:]), strict=True):
        yield u, part.tobytes()


def _profile_rows(users: pd.DataFrame, signup: pd.Series) -> Iterator[tuple]:
    for row, t in zip(users.itertuples(index=False), signup, strict=True):
        age = getattr(row, C.AGE)
        items = getattr(row, C.ONBOARDING_ITEMS)
        genres = getattr(row, C.ONBOARDING_GENRES)
        yield (
            int(getattr(row, C.USER_ID)),
            None if pd.isna(t) else t.value // 1000,
            None if age is None or pd.isna(age) else float(age),
            str(getattr(row, C.GENDER) or ""),
            str(getattr(row, C.COUNTRY) or ""),
            json.dumps([int(i) for i in (items if items is not None else [])]),
            json.dumps([str(g) for g in (genres if genres is not None else [])]),
            "bootstrap",
        )
