"""Where NRT vectors go: the Feast online store (user_embedding, keyed by user and batch) and,
through the state's outbox, micro-batched parquet files in offline/user_embedding/."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from nrt.state import SqliteState
from userrep import columns as C
from userrep.arrow import atomic_write_parquet, list_array
from userrep.feast_store import repo_config_dict
from userrep.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

# The user_embedding source schema (= representation.publish.embedding_table's; a test checks they agree).
EMBEDDING_SCHEMA = pa.schema(
    [
        (C.USER_ID, pa.int64()),
        (C.BATCH_ID, pa.string()),
        (C.Z_U, pa.list_(pa.float32())),
        (C.EVENT_TIMESTAMP, pa.timestamp("us", "UTC")),
        (C.CREATED, pa.timestamp("us", "UTC")),
    ]
)


def nrt_feature_store(settings: Settings) -> FeatureStore:
    """The workspace's FeatureStore; Redis with skip_dedup: ordering is guarded by the engine,
    and Redis' own check drops a write not newer than the stored one (a late event's fix)."""
    from feast import FeatureStore, RepoConfig

    cfg = repo_config_dict(settings)
    if cfg["online_store"]["type"] == "redis":
        cfg["online_store"] = {**cfg["online_store"], "skip_dedup": True}
    config = RepoConfig(**cfg)
    config.repo_path = settings.feature_repo
    return FeatureStore(config=config)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


class OnlineWriter:
    """Writes z_u rows of the user_embedding view straight to the configured online store.

    It calls the same `online_write_batch` that FeatureStore.write_to_online_store ends in, with
    the rows already as Feast protos (write_to_online_store's DataFrame -> Arrow -> proto
    conversion costs ~5 ms a call, the write itself ~0.5 ms). One call per micro-batch.
    """

    def __init__(self, store: FeatureStore):
        from feast.infra.online_stores.helpers import get_online_store_from_config
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import FloatList, Value

        self.store = store
        self.view = store.get_feature_view(C.USER_EMBEDDING_VIEW)
        self.online = get_online_store_from_config(store.config.online_store)
        self._protos = (EntityKey, Value, FloatList)
        if store.config.online_store.type == "sqlite":
            _relax_sqlite(self.online, store)

    def write(
        self,
        user_ids: Sequence[int],
        batch_ids: Sequence[str],
        z: np.ndarray,
        as_of_us: Sequence[int],
        created_us: int,
    ) -> None:
        """One row per (user, batch): z (n, latent) float32, event time = the as-of."""
        entity_key, value, float_list = self._protos
        created = _utc(created_us)
        rows: list[tuple[Any, dict[str, Any], datetime, datetime | None]] = []
        for u, b, vec, t in zip(user_ids, batch_ids, z.tolist(), as_of_us, strict=True):
            key = entity_key(
                join_keys=[C.USER_ID, C.BATCH_ID],
                entity_values=[value(int64_val=int(u)), value(string_val=b)],
            )
            rows.append((key, {C.Z_U: value(float_list_val=float_list(val=vec))}, _utc(t), created))
        if rows:
            self.online.online_write_batch(self.store.config, self.view, rows, None)


def _relax_sqlite(online: object, store: FeatureStore) -> None:
    """Feast opens its SQLite online store with synchronous=FULL and a rollback journal: every
    write fsyncs (~16 ms a write here). The online store is a cache the NRT state rebuilds, so
    this writer's connection uses WAL + synchronous=NORMAL (readers are unaffected)."""
    conn = online._get_conn(store.config)  # type: ignore[attr-defined]
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def offline_table(rows: Sequence[tuple]) -> pa.Table:
    """Outbox rows (id, batch_id, user_id, z bytes, as_of_us, created_us) -> z_u file rows."""
    z = np.frombuffer(b"".join(r[3] for r in rows), np.float32).reshape(len(rows), -1)
    return pa.Table.from_arrays(
        [
            pa.array([r[2] for r in rows], pa.int64()),
            pa.array([r[1] for r in rows], pa.string()),
            list_array(z),
            pa.array(np.array([r[4] for r in rows], "datetime64[us]"), pa.timestamp("us", "UTC")),
            pa.array(np.array([r[5] for r in rows], "datetime64[us]"), pa.timestamp("us", "UTC")),
        ],
        schema=EMBEDDING_SCHEMA,
    )


def write_offline(rows: Sequence[tuple], settings: Settings) -> int:
    """Outbox rows as one parquet file per batch (atomic rename); returns the file count."""
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    by_batch: dict[str, list[tuple]] = {}
    for r in rows:
        by_batch.setdefault(r[1], []).append(r)
    for batch_id, part in by_batch.items():
        name = f"{batch_id}__nrt-{stamp}-{secrets.token_hex(2)}.parquet"
        atomic_write_parquet(offline_table(part), settings.paths.user_embedding / name)
    return len(by_batch)


def publish_rows(
    writer: OnlineWriter,
    state: SqliteState,
    user_ids: Sequence[int],
    batch_ids: Sequence[str],
    z: np.ndarray,
    as_of_us: Sequence[int],
    created_us: int,
) -> None:
    """Put z_u rows out, inside the caller's state transaction: online now, and into the
    outbox that flush_outbox appends offline. The one way the NRT path publishes a vector."""
    writer.write(user_ids, batch_ids, z, as_of_us, created_us)
    state.outbox_add(
        [
            (b, u, row.tobytes(), t, created_us)
            for u, b, row, t in zip(user_ids, batch_ids, z, as_of_us, strict=True)
        ]
    )


def flush_outbox(
    state: SqliteState, settings: Settings, lock: AbstractContextManager = nullcontext()
) -> tuple[int, int]:
    """Publish every outbox row, then delete them; returns (rows, files). `lock` guards only
    the state reads and writes, so events keep being applied while the files are written. A
    crash between writing and deleting re-publishes identical rows, which point-in-time joins
    resolve to one (same key, time and value)."""
    with lock:
        rows, up_to = state.outbox_take()
    if not rows:
        return 0, 0
    files = write_offline(rows, settings)
    with lock, state.transaction():
        state.outbox_delete(up_to)
    log.debug("offline: %d z_u rows in %d files", len(rows), files)
    return len(rows), files
