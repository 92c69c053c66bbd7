"""Execution engines for the heavy batch jobs (feature snapshot, batch embedding, online load,
autoencoder training).

`engine_for(settings)` picks one by `settings.engine` (USERREP_ENGINE): "local" runs in this
process, the embedded default; "ray" runs one task per user shard on a Ray cluster, with the same
code per shard and the same results, and trains data-parallel (Ray Train, torch DDP; one worker
gives the local model bit for bit). Only the Ray engine imports ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from userrep import columns as C
from userrep.settings import Settings

if TYPE_CHECKING:
    from representation.encoders import ItemVectors
    from representation.model import AutoencoderConfig
    from representation.publish import EmbedReport
    from representation.train import Anchors, TrainConfig, TrainResult
    from representation.trainset import TrainingSet


class Engine(Protocol):
    """The batch jobs an engine runs; every method publishes its output atomically."""

    name: str

    def write_history_snapshot(
        self, vecs: ItemVectors, as_of: pd.Timestamp, horizons: Sequence[C.Horizon]
    ) -> int:
        """offline/user_history/asof=T.parquet; returns the number of users with history."""
        ...

    def embed_batch(
        self,
        batch_id: str,
        as_of: pd.Timestamp,
        online: bool = True,
        on_chunk: Callable[[int], None] | None = None,
    ) -> EmbedReport:
        """z_u of every user of the snapshot, offline + online; the batch becomes ready."""
        ...

    def load_online(self, path: Path) -> int:
        """Write a published z_u file into the online store; returns the rows written."""
        ...

    def train_snapshot(
        self,
        data: TrainingSet,
        config: AutoencoderConfig,
        train_config: TrainConfig,
        on_epoch: Callable[[int, float, float], None] | None = None,
        anchors: Anchors | None = None,
    ) -> TrainResult:
        """train.train_autoencoder's contract (same split, seeds, early stopping and result,
        saved by the caller with artifact.save_artifact) on every user of a snapshot
        (`userrep train`), the engine reading the inputs and item targets: the result is that
        of the matrix in row order data.user_ids(); anchors' rows are positions in that order."""
        ...


def engine_for(settings: Settings) -> Engine:
    """The engine named by settings.engine."""
    if settings.engine == "local":
        from representation.scale.local import LocalEngine

        return LocalEngine(settings)
    if settings.engine == "ray":
        from representation.scale.ray_engine import RayEngine

        return RayEngine(settings)
    raise ValueError(f"unknown engine {settings.engine!r}: use 'local' or 'ray'")
