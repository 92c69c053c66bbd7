"""Which batches the NRT path keeps fresh (batches.servable_batches: the active one + ready ones
with pinned models), each with its encoder and item vectors, re-read every refresh_seconds."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd

from representation import batches
from representation.artifact import UserEncoder
from representation.encoders import ItemVectors, current_version, load_item_vectors
from representation.inputs import InputLayout
from representation.publish import load_encoder
from userrep.db import session_scope
from userrep.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServedBatch:
    batch_id: str
    as_of: pd.Timestamp  # the snapshot its published vectors are as of
    encoder: UserEncoder
    layout: InputLayout
    encoder_version: str  # item vectors the batch was trained with


@dataclass
class FeatureGroup:
    """Batches that read the same input matrix (same item vectors and layout)."""

    vecs: ItemVectors
    layout: InputLayout
    batches: list[ServedBatch]


class ServingSet:
    """The servable batches and their encoders, refreshed from the metadata DB."""

    def __init__(self, settings: Settings, refresh_seconds: float = 30.0):
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self.batches: dict[str, ServedBatch] = {}
        self._vecs: dict[str, ItemVectors] = {}
        self._checked = 0.0

    def _servable(self) -> list[tuple[str, pd.Timestamp]]:
        with session_scope(self.settings.metadata_db_url) as session:
            rows = batches.servable_batches(session)
            active = batches.active_batch(session)
            if active is not None and all(b.batch_id != active.batch_id for b in rows):
                rows.insert(0, active)
            return [(b.batch_id, pd.Timestamp(b.as_of)) for b in rows]

    def _load(self, batch_id: str, as_of: pd.Timestamp) -> ServedBatch:
        encoder, layout = load_encoder(self.settings, batch_id)
        version = encoder.extra.get("encoder_version") or current_version(self.settings.paths)
        if version not in self._vecs:
            self._vecs[version] = load_item_vectors(self.settings.paths, version)
        return ServedBatch(batch_id, as_of, encoder, layout, version)

    def refresh(self) -> tuple[list[ServedBatch], list[str]]:
        """Re-read the servable batches; returns (just became servable, no longer servable)."""
        self._checked = time.monotonic()
        wanted = self._servable()
        added = [self._load(b, t) for b, t in wanted if b not in self.batches]
        dropped = set(self.batches) - {b for b, _ in wanted}
        for b in dropped:
            log.info("batch %s is no longer servable: NRT stops updating it", b)
            del self.batches[b]
        for sb in added:
            log.info(
                "batch %s is servable: NRT updates it (encoder %s)", sb.batch_id, sb.encoder_version
            )
            self.batches[sb.batch_id] = sb
        return added, sorted(dropped)

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.refresh_seconds

    def groups(self, only: list[ServedBatch] | None = None) -> list[FeatureGroup]:
        """Batches grouped by (item vectors, layout): one feature matrix per group."""
        out: dict[tuple, FeatureGroup] = {}
        for sb in only if only is not None else list(self.batches.values()):
            key = (sb.encoder_version, sb.layout)
            if key not in out:
                out[key] = FeatureGroup(self._vecs[sb.encoder_version], sb.layout, [])
            out[key].batches.append(sb)
        return list(out.values())
