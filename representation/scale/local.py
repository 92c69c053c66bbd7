"""The local engine: the batch jobs in this process, as they always ran (the default)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq

from representation import features as feat
from representation.publish import EmbedReport, embed_batch
from representation.scale.shards import online_rows
from representation.train import Anchors, TrainConfig, TrainResult, train_autoencoder
from representation.trainset import TrainingSet, training_item_targets, training_matrix
from userrep import columns as C
from userrep.feast_store import store
from userrep.settings import Settings

if TYPE_CHECKING:
    from representation.encoders import ItemVectors
    from representation.model import AutoencoderConfig


class LocalEngine:
    name = "local"

    def __init__(self, settings: Settings):
        self.settings = settings

    def write_history_snapshot(
        self, vecs: ItemVectors, as_of: pd.Timestamp, horizons: Sequence[C.Horizon]
    ) -> int:
        return feat.write_history_snapshot(self.settings.paths, vecs, as_of, horizons)

    def embed_batch(
        self,
        batch_id: str,
        as_of: pd.Timestamp,
        online: bool = True,
        on_chunk: Callable[[int], None] | None = None,
    ) -> EmbedReport:
        return embed_batch(self.settings, batch_id, as_of, online=online, on_chunk=on_chunk)

    def load_online(self, path: Path) -> int:
        store(self.settings)
        groups = range(pq.ParquetFile(path).metadata.num_row_groups)
        return online_rows(self.settings, path, groups, 0).n_users

    def train_snapshot(
        self,
        data: TrainingSet,
        config: AutoencoderConfig,
        train_config: TrainConfig,
        on_epoch: Callable[[int, float, float], None] | None = None,
        anchors: Anchors | None = None,
    ) -> TrainResult:
        """The whole matrix in this process, through Feast's point-in-time join, as always."""
        users, x = training_matrix(self.settings, data.as_of, data.layout)
        items = training_item_targets(self.settings, data.as_of, users, train_config)
        tags = data.training_tags(users, train_config)
        blocks = data.layout.blocks()
        return train_autoencoder(
            x, blocks, config, train_config, on_epoch, anchors, items, tags=tags
        )
