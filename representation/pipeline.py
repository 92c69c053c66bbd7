"""Batch jobs of the representation stage: train an autoencoder (a new batch), embed and
publish z_u for every user as of a time, export a batch.

Publishing is write-then-register: the offline file appears by rename, online rows are written,
and only then is the batch marked ready in the metadata DB. Readers (serving.py) refuse batches
that are not ready, so a crash mid-publish leaves nothing visible.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from representation import align, batches
from representation.artifact import UserEncoder, input_schema_hash, save_artifact
from representation.features import events_source, snapshot_name
from representation.inputs import (
    InputLayout,
    Snapshot,
    read_via_feast,
    snapshot_times,
    to_matrix,
)
from representation.model import AutoencoderConfig
from representation.scale import engine_for
from representation.targets import item_targets
from representation.train import TrainConfig
from representation.trainset import SnapshotInputs, TrainingSet
from userrep import columns as C
from userrep.arrow import list_array
from userrep.db import BatchStatus, session_scope
from userrep.settings import Settings

log = logging.getLogger(__name__)
EpochCallback = Callable[[int, float, float], None]


def _require_snapshot(settings: Settings, as_of: pd.Timestamp) -> None:
    if not (settings.paths.user_onboarding / snapshot_name(as_of)).exists():
        known = ", ".join(str(t) for t in snapshot_times(settings.paths)[-5:]) or "none"
        raise FileNotFoundError(
            f"no feature snapshot as of {as_of} (latest: {known}): "
            "run `userrep features build --as-of ...`"
        )


def _encoder_dims(settings: Settings) -> tuple[int, int]:
    from representation.encoders import load_item_vectors

    vecs = load_item_vectors(settings.paths)
    return vecs.collab.shape[1], vecs.content.shape[1]


def training_matrix(
    settings: Settings, as_of: pd.Timestamp, layout: InputLayout, chunk: int = 200_000
) -> tuple[np.ndarray, np.ndarray]:
    """encoder_input_v2 for every user known at as_of (sorted by id), through Feast's
    point-in-time join, `chunk` users per join."""
    from userrep.feast_store import store

    _require_snapshot(settings, as_of)
    store(settings)  # applied once: the views and encoder_input_v2 exist for this workspace
    users = pd.read_parquet(
        settings.paths.user_onboarding / snapshot_name(as_of), columns=[C.USER_ID]
    )
    user_ids = np.sort(users[C.USER_ID].to_numpy(np.int64))
    x = np.empty((len(user_ids), layout.dim), np.float32)
    for lo in range(0, len(user_ids), chunk):  # the join's own temporaries stay one chunk big
        part = pd.DataFrame({C.USER_ID: user_ids[lo : lo + chunk], C.EVENT_TIMESTAMP: as_of})
        table = read_via_feast(settings, part).sort_by(C.USER_ID)
        if not np.array_equal(table[C.USER_ID].to_numpy(), part[C.USER_ID].to_numpy()):
            raise RuntimeError(f"the Feast join at {as_of} did not return one row per user")
        x[lo : lo + len(part)] = to_matrix(table, layout)
    return user_ids, x


def training_item_targets(
    settings: Settings, as_of: pd.Timestamp, users: np.ndarray, train_cfg: TrainConfig
) -> sp.csr_matrix | None:
    """The item decoder's targets for the training users (events <= as_of), or None when
    the item term is off (train_cfg.item_weight == 0)."""
    if train_cfg.item_weight <= 0 or not any(settings.paths.events.glob("*.parquet")):
        return None
    con = duckdb.connect()
    source = events_source(settings.paths)
    return item_targets(con, source, as_of, users, train_cfg.item_vocab).matrix


def train_batch(
    settings: Settings,
    as_of: pd.Timestamp,
    model_cfg: dict | None = None,
    train_cfg: TrainConfig | None = None,
    parent_batch_id: str | None = None,
    on_epoch: EpochCallback | None = None,
    align_to: str | None = None,
    align_method: str = align.DEFAULT_METHOD,
) -> str:
    """Train the autoencoder on the snapshot at as_of; register a new batch (status building).

    The engine reads the training data (engine.train_snapshot: the local engine the whole
    matrix through Feast, the Ray engine one user range per worker); this function holds the
    user ids and, with align_to, the inputs of the anchor users (at most align.MAX_FIT_USERS).

    With align_to, z_u is made compatible with that batch's space by align_method (one of
    align.METHODS: a BCT term in training, a Procrustes map after it, or both).
    """
    c_dim, t_dim = _encoder_dims(settings)
    layout = InputLayout(tuple(h.name for h in settings.horizon_list), c_dim, t_dim)
    train_cfg = train_cfg or TrainConfig(seed=settings.seed)
    if align_to is not None:  # the parent fixes z_u's size: nothing to choose
        model_cfg = {"latent_dim": _latent_dim(settings, align_to)} | (model_cfg or {})
        train_cfg = replace(train_cfg, select=False)
    cfg = AutoencoderConfig(input_dim=layout.dim, **(model_cfg or {}))
    _require_snapshot(settings, as_of)
    vocab = train_cfg.item_vocab if train_cfg.item_weight > 0 else 0
    data = TrainingSet(settings.paths, as_of, layout, vocab)  # the engine reads the users' data
    users = data.user_ids()  # row order of the training matrix
    x = SnapshotInputs(data, users)  # x[rows] reads those rows: only alignment's anchors
    extra = {
        "layout": layout.__dict__ | {"horizons": list(layout.horizons)},
        "feature_names": layout.feature_names,
        "input_schema_hash": input_schema_hash(layout.feature_names),
        "feature_service": C.ENCODER_INPUT_SERVICE,
        "as_of": as_of.isoformat(),
        "encoder_version": _current_encoder(settings),
    }
    anchors = None
    if align_to is not None:
        if align_method not in align.METHODS:
            raise ValueError(f"unknown alignment method {align_method!r}")
        hash_ = extra["input_schema_hash"]
        anchors = align.parent_anchors(settings, align_to, users, x, hash_, cfg.latent_dim)
    bct = anchors if align.BCT in align_method else None
    result = engine_for(settings).train_snapshot(  # in-process, or Ray Train DDP
        data, cfg, train_cfg, on_epoch=on_epoch, anchors=bct
    )
    batch_id = batches.new_batch_id(as_of.to_pydatetime())
    art_dir = settings.paths.batches / batch_id / "encoder"
    sha = save_artifact(art_dir, result, extra)
    alignment = None
    if align_to is not None:
        raw = UserEncoder.from_result(result, extra)  # z_u in B's own space
        weight = train_cfg.compat_weight
        alignment = align.align_new_batch(
            settings, align_to, art_dir, users, x, raw, True, align_method, anchors, weight
        )
    with session_scope(settings.metadata_db_url) as session:
        row = batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=as_of.to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=cfg.latent_dim,
            artifact_path=str(art_dir),
            artifact_sha256=sha,
            metrics=_jsonable(result.metrics),
            train_start=as_of.to_pydatetime(),
            train_end=as_of.to_pydatetime(),
            parent_batch_id=parent_batch_id or align_to,
        )
        row.alignment = alignment
    log.info("trained batch %s on %d users", batch_id, len(users))
    return batch_id


def _latent_dim(settings: Settings, batch_id: str) -> int:
    with session_scope(settings.metadata_db_url) as session:
        return batches.get_batch(session, batch_id).latent_dim


def _current_encoder(settings: Settings) -> str:
    from representation.encoders import current_version

    return current_version(settings.paths)


def _jsonable(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics, default=float))


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
    _require_snapshot(settings, as_of)
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
    from userrep.feast_store import store

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


def export_embeddings(settings: Settings, batch_id: str, out: Path) -> int:
    """(user_id, z_u, batch, as_of) of every published snapshot of a batch, to one parquet."""
    files = sorted(settings.paths.user_embedding.glob(f"{batch_id}__*.parquet"))
    if not files:
        raise FileNotFoundError(f"batch {batch_id} has no published embeddings")
    table = pa.concat_tables(pq.read_table(f) for f in files)
    table = table.select([C.USER_ID, C.Z_U, C.BATCH_ID, C.EVENT_TIMESTAMP]).rename_columns(
        [C.USER_ID, C.Z_U, "batch", C.AS_OF]
    )
    pq.write_table(table, out)
    return table.num_rows
