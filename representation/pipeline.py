"""Training a batch: the autoencoder fitted on a feature snapshot by the configured engine,
saved as an artifact and registered (status building), aligned to a parent on request.

Embedding and publishing a batch's z_u is in publish.py; this module keeps their names too, as
the representation stage's one entry point for callers outside the package.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace

import pandas as pd

from representation import align, batches
from representation.artifact import UserEncoder, input_schema_hash, save_artifact
from representation.encoders import current_version, load_item_vectors
from representation.inputs import InputLayout
from representation.model import AutoencoderConfig
from representation.publish import (  # noqa: F401  the stage's entry point re-exports them
    EmbedReport,
    embed_batch,
    embedding_table,
    export_embeddings,
    load_encoder,
    published_times,
    require_snapshot,
)
from representation.scale import engine_for
from representation.train import TrainConfig
from representation.trainset import (  # noqa: F401
    SnapshotInputs,
    TrainingSet,
    training_item_targets,
    training_matrix,
)
from userrep import columns as C
from userrep.db import session_scope
from userrep.settings import Settings

log = logging.getLogger(__name__)
EpochCallback = Callable[[int, float, float], None]


def _encoder_dims(settings: Settings) -> tuple[int, int]:

    vecs = load_item_vectors(settings.paths)
    return vecs.collab.shape[1], vecs.content.shape[1]


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
    require_snapshot(settings, as_of)
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
            latent_dim=result.config.latent_dim,  # the chosen size, not the default
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

    return current_version(settings.paths)


def _jsonable(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics, default=float))
