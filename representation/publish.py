"""Publishing z_u: embed every user of a feature snapshot with a batch's encoder, write the
offline file and the online rows, and read a batch's published vectors back.

Publishing is write-then-register: the offline file appears by rename, online rows are written,
and only then is the batch marked ready in the metadata DB (by the embed command, after every
as-of of a backfill). Readers (serving.py) refuse batches that are not ready, so a crash
mid-publish leaves nothing visible. The engines in scale/ run these per shard.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from representation import align, batches
from representation.artifact import UserEncoder
from representation.features import snapshot_name
from representation.inputs import InputLayout, Snapshot, snapshot_times
from userrep import columns as C
from userrep.arrow import list_array
from userrep.db import BatchStatus, session_scope
from userrep.feast_store import store
from userrep.settings import Settings

log = logging.getLogger(__name__)


def require_snapshot(settings: Settings, as_of: pd.Timestamp) -> None:
    if not (settings.paths.user_onboarding / snapshot_name(as_of)).exists():
        known = ", ".join(str(t) for t in snapshot_times(settings.paths)[-5:]) or "none"
        raise FileNotFoundError(
            f"no feature snapshot as of {as_of} (latest: {known}): "
            "run `userrep features build --as-of ...`"
        )


def load_encoder(settings: Settings, batch_id: str) -> tuple[UserEncoder, InputLayout]:
    """The batch's encoder and the input layout it was trained on."""
    with session_scope(settings.metadata_db_url) as session:
        row = batches.get_batch(session, batch_id)
        art, sha = Path(row.artifact_path), row.artifact_sha256
    UserEncoder.verify(art, sha)  # the files the metadata DB recorded, else an error
    encoder = align.load_encoder_dir(art)  # applies the batch's alignment map, if any
    lay = encoder.extra["layout"]
    return encoder, InputLayout(tuple(lay["horizons"]), lay["collab_dim"], lay["content_dim"])


@dataclass
class EmbedReport:
    batch_id: str
    as_of: pd.Timestamp
    n_users: int
    seconds: float
    offline_file: Path


def embed_batch(
    settings: Settings,
    batch_id: str,
    as_of: pd.Timestamp,
    chunk_users: int = 200_000,
    online: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> EmbedReport:
    """Embed every user of the snapshot at as_of with the batch's encoder and publish."""
    with session_scope(settings.metadata_db_url) as session:
        batches.require_embeddable(session, batch_id)  # a retired batch is never rewritten
    require_snapshot(settings, as_of)
    encoder, layout = load_encoder(settings, batch_id)
    t0 = time.perf_counter()
    target = settings.paths.user_embedding / f"{batch_id}__{as_of:%Y%m%dT%H%M%S}.parquet"
    tmp = target.parent / f".{target.name}.tmp"
    snapshot = Snapshot.load(settings.paths, as_of)  # read once; chunks are taken from it
    all_users = snapshot.onboarding[C.USER_ID].to_numpy()
    newer = [t for t in published_times(settings, batch_id) if t > as_of]
    if online and newer:  # the online store is last-write-wins: never put older vectors over newer
        log.warning(
            "batch %s already published as of %s: writing %s offline only",
            batch_id,
            max(newer),
            as_of,
        )
    store = _online_store(settings) if online and not newer else None
    n = 0
    try:
        with pq.ParquetWriter(tmp, _embedding_schema()) as writer:
            for lo in range(0, len(all_users), chunk_users):
                ids = all_users[lo : lo + chunk_users]
                z = _embed_users(encoder, snapshot, ids, layout)  # (n, latent_dim)
                table = embedding_table(ids, z, batch_id, as_of)
                writer.write_table(table)
                if store is not None:
                    store.write_to_online_store(C.USER_EMBEDDING_VIEW, table.to_pandas())
                n += len(ids)
                if on_chunk:
                    on_chunk(len(ids))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    with session_scope(settings.metadata_db_url) as session:
        if batches.get_batch(session, batch_id).status == BatchStatus.BUILDING:
            batches.mark_ready(session, batch_id, n)  # first publish: the batch becomes visible
    return EmbedReport(batch_id, as_of, n, time.perf_counter() - t0, target)


def _embed_users(
    encoder: UserEncoder, snapshot: Snapshot, ids: np.ndarray, layout: InputLayout
) -> np.ndarray:
    """z_u of these users, assembled and embedded part by part in reused, cache-sized buffers."""
    z = np.empty((len(ids), encoder.latent_dim), np.float32)  # (n, latent_dim)
    lo = 0
    for x in snapshot.matrix_parts(ids, layout):  # (part, input_dim), valid until the next
        z[lo : lo + len(x)] = encoder.embed(x)
        lo += len(x)
    return z


def published_times(settings: Settings, batch_id: str) -> list[pd.Timestamp]:
    """As-of times of a batch's published snapshot files."""
    stamps = (
        p.name.split("__", 1)[1].removesuffix(".parquet")
        for p in settings.paths.user_embedding.glob(f"{batch_id}__*.parquet")
    )
    return sorted(pd.Timestamp(s, tz="UTC") for s in stamps if not s.startswith("nrt"))


def _online_store(settings: Settings):  # -> FeatureStore

    return store(settings)


def _embedding_schema() -> pa.Schema:
    return pa.schema(
        [
            (C.USER_ID, pa.int64()),
            (C.BATCH_ID, pa.string()),
            (C.Z_U, pa.list_(pa.float32())),
            (C.EVENT_TIMESTAMP, pa.timestamp("us", "UTC")),
            (C.CREATED, pa.timestamp("us", "UTC")),
        ]
    )


def embedding_table(
    user_ids: np.ndarray, z: np.ndarray, batch_id: str, as_of: pd.Timestamp
) -> pa.Table:
    """Rows of the user_embedding view: (user_id, batch_id, z_u, event_timestamp=as_of)."""
    n = len(user_ids)
    now = pd.Timestamp.now(tz="UTC")
    ts = pa.timestamp("us", "UTC")
    return pa.Table.from_arrays(
        [
            pa.array(np.asarray(user_ids, np.int64)),
            pa.repeat(pa.scalar(batch_id, pa.string()), n),  # no n-element Python lists
            list_array(z),
            pa.repeat(pa.scalar(as_of, ts), n),
            pa.repeat(pa.scalar(now, ts), n),
        ],
        schema=_embedding_schema(),
    )


def export_embeddings(
    settings: Settings,
    batch_id: str,
    out: Path,
    as_of: pd.Timestamp | str | None = None,
) -> int:
    """(user_id, z_u, batch, as_of) of a batch to parquet, or CSV when `out` ends in .csv
    (z_u as a JSON list). Every as-of by default; one with `as_of` (a time, or "newest")."""
    files = sorted(settings.paths.user_embedding.glob(f"{batch_id}__*.parquet"))
    if not files:
        raise FileNotFoundError(f"batch {batch_id} has no published embeddings")
    table = pa.concat_tables(pq.read_table(f) for f in files)
    table = table.select([C.USER_ID, C.Z_U, C.BATCH_ID, C.EVENT_TIMESTAMP]).rename_columns(
        [C.USER_ID, C.Z_U, "batch", C.AS_OF]
    )
    if as_of is not None:
        times = pd.to_datetime(table.column(C.AS_OF).to_pandas(), utc=True)
        want = times.max() if as_of == "newest" else pd.Timestamp(as_of)
        keep = (times == want).to_numpy()
        if not keep.any():
            have = ", ".join(str(t) for t in sorted(times.unique()))
            raise FileNotFoundError(f"batch {batch_id} has no z_u as of {want} (it has: {have})")
        table = table.filter(pa.array(keep))
    if out.suffix.lower() == ".csv":
        frame = table.to_pandas()
        frame[C.Z_U] = [json.dumps([round(float(v), 6) for v in z]) for z in frame[C.Z_U]]
        frame.to_csv(out, index=False)
    else:
        pq.write_table(table, out)
    return table.num_rows
