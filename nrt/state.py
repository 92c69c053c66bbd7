"""Per-user event state of the NRT path (SQLite, <workspace>/nrt/state.db): events -> here
(deduplicated by id, one transaction per micro-batch) -> aggregates.py recomputes features."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nrt.events import Event, Play, Signup

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY, user_id INTEGER NOT NULL,
    kind TEXT NOT NULL, ts_us INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plays (user_id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (user_id INTEGER PRIMARY KEY, signup_us INTEGER,
    age REAL, gender TEXT NOT NULL, country TEXT NOT NULL, items TEXT NOT NULL,
    genres TEXT NOT NULL, event_id TEXT);
CREATE TABLE IF NOT EXISTS watermarks (user_id INTEGER PRIMARY KEY, as_of_us INTEGER NOT NULL,
    nrt_events INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT NOT NULL,
    user_id INTEGER NOT NULL, z BLOB NOT NULL, as_of_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_CHUNK = 500  # host parameters per IN (...) query
# A user's plays, packed: one row per user, so loading a user's full history is one read.
PLAY_DTYPE = np.dtype([("item", "<i8"), ("ts_us", "<i8"), ("weight", "<f8")])
UPSERT_WATERMARK = (
    "INSERT INTO watermarks (user_id, as_of_us, nrt_events) VALUES (?, ?, ?) "
    "ON CONFLICT (user_id) DO UPDATE SET as_of_us = max(as_of_us, excluded.as_of_us), "
    "nrt_events = nrt_events + excluded.nrt_events"
)
# The sign-up with the newest signup time wins (a late, older sign-up never replaces it).
UPSERT_PROFILE = (
    "INSERT INTO profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
    "signup_us = excluded.signup_us, age = excluded.age, gender = excluded.gender, "
    "country = excluded.country, items = excluded.items, genres = excluded.genres, "
    "event_id = excluded.event_id WHERE excluded.signup_us >= profiles.signup_us"
)


@dataclass(frozen=True)
class Profile:
    """Sign-up information of one user (onboarding signals)."""

    signup_us: int | None  # None: the user table has no sign-up time (no onboarding row)
    age: float | None
    gender: str
    country: str
    items_json: str = "[]"  # onboarding picks as stored (JSON lists): parsed only when needed
    genres_json: str = "[]"

    @property
    def items(self) -> list[int]:
        return [int(i) for i in json.loads(self.items_json)]

    @property
    def genres(self) -> list[str]:
        return [str(g) for g in json.loads(self.genres_json)]


@dataclass
class UserStates:
    """The full state of a set of users (sorted ids), as of each one's newest event."""

    user_ids: np.ndarray  # (n,) int64, sorted
    as_of_us: np.ndarray  # (n,) int64: newest event time per user
    play_user: np.ndarray  # (m,) int64 user id of each play
    play_item: np.ndarray  # (m,) int64
    play_ts_us: np.ndarray  # (m,) int64
    play_weight: np.ndarray  # (m,) float64
    profiles: dict[int, Profile] = field(default_factory=dict)


@dataclass
class Applied:
    """What one micro-batch changed: new events (in order), duplicate ids, touched users."""

    new: list[Event]
    duplicates: set[str]
    users: set[int]


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for lo in range(0, len(values), size):
        yield values[lo : lo + size]


class SqliteState:
    """The state store; one writer transaction at a time (BEGIN IMMEDIATE), WAL for readers."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
        self.conn.execute("PRAGMA wal_autocheckpoint=10000")  # hot pages copied back less often
        self.conn.executescript(_SCHEMA)
        self._written: dict[int, bytes] = {}  # plays rows rewritten in the open transaction

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        finally:
            self._written.clear()
        self.conn.execute("COMMIT")

    def _existing(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in _chunks(list(event_ids)):
            sql = f"SELECT event_id FROM applied WHERE event_id IN ({','.join('?' * len(part))})"
            found.update(r[0] for r in self.conn.execute(sql, part))
        return found

    def apply(self, events: Sequence[Event], nrt: bool = True) -> Applied:
        """Record new events (inside a transaction); ids already applied are duplicates."""
        existing = self._existing([e.event_id for e in events])
        new, dups, seen = [], set(), set()
        for e in events:
            if e.event_id in existing or e.event_id in seen:
                dups.add(e.event_id)
            else:
                seen.add(e.event_id)
                new.append(e)
        plays = [e for e in new if isinstance(e, Play)]
        signups = [e for e in new if isinstance(e, Signup)]
        c = self.conn
        c.executemany(
            "INSERT INTO applied VALUES (?, ?, ?, ?)",
            [(e.event_id, e.user_id, type(e).__name__.lower(), e.ts_us) for e in new],
        )
        self._append_plays(plays)
        c.executemany(
            UPSERT_PROFILE,
            [
                (
                    s.user_id,
                    s.ts_us,
                    s.age,
                    s.gender,
                    s.country,
                    json.dumps(list(s.onboarding_items)),
                    json.dumps(list(s.onboarding_genres)),
                    s.event_id,
                )
                for s in signups
            ],
        )
        c.executemany(UPSERT_WATERMARK, [(e.user_id, e.ts_us, int(nrt)) for e in new])
        return Applied(new, dups, {e.user_id for e in new})

    def _append_plays(self, plays: Sequence[Play]) -> None:
        """Append each user's new plays to their packed row; kept for load() in this txn."""
        if not plays:
            return
        packed = np.empty(len(plays), PLAY_DTYPE)
        user = np.fromiter((p.user_id for p in plays), np.int64, len(plays))
        packed["item"] = np.fromiter((p.item_id for p in plays), np.int64, len(plays))
        packed["ts_us"] = np.fromiter((p.ts_us for p in plays), np.int64, len(plays))
        packed["weight"] = np.fromiter((p.weight for p in plays), np.float64, len(plays))
        order = np.argsort(user, kind="stable")
        users, starts = np.unique(user[order], return_index=True)
        old = dict(self._select("SELECT user_id, data FROM plays", users.tolist()))
        for u, part in zip(users.tolist(), np.split(packed[order], starts[1:]), strict=True):
            self._written[u] = old.get(u, b"") + part.tobytes()
        self.conn.executemany(
            "INSERT OR REPLACE INTO plays VALUES (?, ?)",
            [(u, self._written[u]) for u in users.tolist()],
        )

    def _select(self, sql: str, user_ids: Sequence[int]) -> Iterator[tuple]:
        """Rows of `sql WHERE user_id IN (...)`, in chunks of host parameters."""
        for part in _chunks(list(user_ids)):
            yield from self.conn.execute(
                f"{sql} WHERE user_id IN ({','.join('?' * len(part))})", part
            )

    def recent_profiles(self, limit: int) -> list[Profile]:
        """Sign-ups of the `limit` users with the newest events (to warm caches at start)."""
        rows = self.conn.execute(
            "SELECT p.signup_us, p.age, p.gender, p.country, p.items, p.genres FROM profiles p "
            "JOIN watermarks w USING (user_id) ORDER BY w.as_of_us DESC LIMIT ?",
            (limit,),
        )
        return [Profile(*r) for r in rows]

    def load(self, user_ids: Sequence[int]) -> UserStates:
        """Plays, sign-up and newest event time of each user (users without state: none)."""
        ids = sorted({int(u) for u in user_ids})
        marks = dict(self._select("SELECT user_id, as_of_us FROM watermarks", ids))
        known = np.array([u for u in ids if u in marks], np.int64)
        unread = [u for u in ids if u not in self._written]
        blobs = self._written | dict(self._select("SELECT user_id, data FROM plays", unread))
        parts = [np.frombuffer(blobs.get(u, b""), PLAY_DTYPE) for u in known.tolist()]
        plays = np.concatenate(parts) if parts else np.zeros(0, PLAY_DTYPE)
        profiles = {
            r[0]: Profile(*r[1:])
            for r in self._select(
                "SELECT user_id, signup_us, age, gender, country, items, genres FROM profiles", ids
            )
        }
        return UserStates(
            known,
            np.array([marks[u] for u in known.tolist()], np.int64),
            np.repeat(known, [len(p) for p in parts]),
            plays["item"].copy(),
            plays["ts_us"].copy(),
            plays["weight"].copy(),
            profiles,
        )

    def n_plays(self) -> int:
        """Plays held in the state (all users)."""
        rows = self.conn.execute("SELECT data FROM plays")
        return sum(len(r[0]) for r in rows) // PLAY_DTYPE.itemsize

    def nrt_users(self) -> list[int]:
        """Users the NRT path has updated (applied at least one event of theirs)."""
        sql = "SELECT user_id FROM watermarks WHERE nrt_events > 0 ORDER BY user_id"
        return [r[0] for r in self.conn.execute(sql)]

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def del_meta(self, key: str) -> None:
        self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def counts(self) -> dict[str, int]:
        tables = ("applied", "plays", "profiles", "watermarks", "outbox")
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}

    # ------------------------------------------------------------------ offline outbox

    def outbox_add(self, rows: Sequence[tuple[str, int, bytes, int, int]]) -> None:
        """(batch_id, user_id, z float32 bytes, as_of_us, created_us), inside the transaction."""
        self.conn.executemany(
            "INSERT INTO outbox (batch_id, user_id, z, as_of_us, created_us) VALUES (?,?,?,?,?)",
            rows,
        )

    def outbox_stats(self) -> tuple[int, int | None]:
        """(rows waiting, created_us of the oldest)."""
        n, oldest = self.conn.execute("SELECT COUNT(*), MIN(created_us) FROM outbox").fetchone()
        return int(n), oldest

    def outbox_take(self) -> tuple[list[tuple], int]:
        """Every waiting row and the highest id (delete up to it once the file is published)."""
        rows = self.conn.execute(
            "SELECT id, batch_id, user_id, z, as_of_us, created_us FROM outbox ORDER BY id"
        ).fetchall()
        return rows, (rows[-1][0] if rows else 0)

    def outbox_delete(self, up_to_id: int) -> None:
        self.conn.execute("DELETE FROM outbox WHERE id <= ?", (up_to_id,))
