"""Reading z_u back: one named batch per request, only batches that are published.

Downstream models call this (or Feast directly with the batch id in the entity key) with the
batch they were trained on; a request never mixes batches. A servable batch's lifecycle state
is cached for LIFECYCLE_TTL_S, so a read costs one online-store lookup, not a metadata-DB
session too: a batch retired elsewhere is refused at most that long after.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from representation import batches
from userrep import columns as C
from userrep.db import BatchStatus, session_scope
from userrep.feast_store import store as workspace_store
from userrep.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

SERVABLE = (BatchStatus.READY, BatchStatus.ACTIVE)
LIFECYCLE_TTL_S = 1.0  # how stale a cached "servable" answer may be
# (metadata DB url, requested batch or None) -> (monotonic expiry, batch id, latent dim)
_SERVABLE: dict[tuple[str, str | None], tuple[float, str, int]] = {}


def resolve_batch(settings: Settings, batch_id: str | None) -> tuple[str, int]:
    """(batch id, latent dim) of a servable batch; the active one when batch_id is None.
    Only servable answers are cached (LIFECYCLE_TTL_S); refusals are looked up every time."""
    key = (settings.metadata_db_url, batch_id)
    hit = _SERVABLE.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1], hit[2]
    found = _lookup(settings, batch_id)
    _SERVABLE[key] = (time.monotonic() + LIFECYCLE_TTL_S, *found)
    return found


def forget_lifecycle() -> None:
    """Drop the cached lifecycle states (after promoting or retiring in this process)."""
    _SERVABLE.clear()


def _lookup(settings: Settings, batch_id: str | None) -> tuple[str, int]:
    with session_scope(settings.metadata_db_url) as session:
        batch = batches.get_batch(session, batch_id) if batch_id else batches.active_batch(session)
        if batch is None:
            raise batches.BatchError("no active batch: promote one with `userrep batches promote`")
        if batch.status not in SERVABLE:
            raise batches.BatchError(f"batch {batch.batch_id!r} is {batch.status}: not served")
        return batch.batch_id, batch.latent_dim


def get_user_embeddings(
    settings: Settings,
    user_ids: Sequence[int],
    batch_id: str | None = None,
    store: FeatureStore | None = None,
) -> tuple[str, np.ndarray]:
    """(batch id, (n, latent_dim) float32) from the online store; NaN rows for unknown users."""

    batch, dim = resolve_batch(settings, batch_id)
    store = store or workspace_store(settings)
    rows = [{C.USER_ID: int(u), C.BATCH_ID: batch} for u in user_ids]
    values = store.get_online_features(
        features=[f"{C.USER_EMBEDDING_VIEW}:{C.Z_U}"], entity_rows=rows
    ).to_dict()[C.Z_U]
    out = np.full((len(rows), dim), np.nan, np.float32)
    for i, v in enumerate(values):
        if v is not None:
            out[i] = v
    return batch, out
