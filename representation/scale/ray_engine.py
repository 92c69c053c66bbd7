"""The Ray engine: the batch jobs as one Ray task per user shard, each running the local code
(scale/shards.py) on its shard; the driver only publishes the parts. Training runs as one Ray
Train DDP job, a user shard per worker (scale/ray_train.py). Imported only when
settings.engine == "ray". Workers read and write the workspace, so on a cluster it must be on
storage every node sees (a shared filesystem).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import ray

from representation import batches, publish
from representation import features as feat
from representation.scale import ray_train, shards
from representation.scale.shards import PartResult
from userrep import columns as C
from userrep.db import BatchStatus, session_scope
from userrep.feast_store import store
from userrep.settings import Settings

if TYPE_CHECKING:
    from representation.encoders import ItemVectors
    from representation.model import AutoencoderConfig
    from representation.publish import EmbedReport
    from representation.train import Anchors, TrainConfig, TrainResult
    from representation.trainset import TrainingSet

log = logging.getLogger(__name__)
LOCAL_CPUS = 2  # a local Ray (no ray_address) on this many CPUs


def ensure_ray(settings: Settings) -> None:
    """Join settings.ray_address, or start a local Ray; keep one already started (tests)."""
    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, logging_level=logging.WARNING)


class RayEngine:
    name = "ray"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.last_parts: list[PartResult] = []  # per-shard figures of the last job (benchmarks)
        self.last_publish_s = 0.0  # the driver's serial step of the last job: parts -> one file
        ensure_ray(settings)

    @property
    def n_shards(self) -> int:
        return self.settings.ray_shards or 2 * int(ray.cluster_resources().get("CPU", 1))

    def _run(
        self,
        fn: Callable[..., PartResult],
        args: Sequence[tuple[Any, ...]],
        on_done: Callable[[PartResult], None] | None = None,
        max_in_flight: int | None = None,
    ) -> list[PartResult]:
        """fn(*a) for each a as one-CPU tasks; results in shard order."""
        task = ray.remote(num_cpus=1, max_retries=1)(fn)
        todo, out = list(args), []
        running: list[ray.ObjectRef] = []
        while todo or running:
            while todo and (max_in_flight is None or len(running) < max_in_flight):
                running.append(task.remote(*todo.pop(0)))
            done, running = ray.wait(running, num_returns=1)
            for result in ray.get(done):
                out.append(result)
                if on_done:
                    on_done(result)
        self.last_parts = sorted(out, key=lambda r: r.shard)
        self.last_publish_s = 0.0
        return self.last_parts

    def write_history_snapshot(
        self, vecs: ItemVectors, as_of: pd.Timestamp, horizons: Sequence[C.Horizon]
    ) -> int:
        """Each shard (a contiguous user-id range of the events) aggregated by pair_aggregates +
        history_table, as locally; the parts, sorted and disjoint, are concatenated in order
        into the one snapshot file (no merge: it is the local file's row order)."""
        paths = self.settings.paths
        if not any(paths.events.glob("*.parquet")):
            return 0
        target = paths.user_history / feat.snapshot_name(as_of)
        parts_dir = _parts_dir(target)
        try:
            vref = ray.put(vecs)
            ranges = shards.event_user_ranges(paths, self.n_shards)
            args = [
                (paths, vref, as_of, tuple(horizons), k, r, parts_dir) for k, r in enumerate(ranges)
            ]
            parts = [r.path for r in self._run(shards.history_part, args) if r.path]
            t0 = time.perf_counter()
            n_users = 0
            if parts:
                schema = pq.read_schema(parts[0])
                n_users = shards.concat_parts(parts, target, schema, use_dictionary=False)
            self.last_publish_s = time.perf_counter() - t0
            return n_users
        finally:
            shutil.rmtree(parts_dir, ignore_errors=True)

    def embed_batch(
        self,
        batch_id: str,
        as_of: pd.Timestamp,
        online: bool = True,
        on_chunk: Callable[[int], None] | None = None,
    ) -> EmbedReport:
        """embed_batch with one task per contiguous user-id range of the snapshot."""

        settings = self.settings
        onboarding = settings.paths.user_onboarding / feat.snapshot_name(as_of)
        if not onboarding.exists():
            raise FileNotFoundError(
                f"no feature snapshot as of {as_of}: run `userrep features build`"
            )
        _, layout = publish.load_encoder(settings, batch_id)  # fails early on a bad batch
        artifact = _artifact_dir(settings, batch_id)  # each worker loads the encoder from it
        t0 = time.perf_counter()
        target = settings.paths.user_embedding / f"{batch_id}__{as_of:%Y%m%dT%H%M%S}.parquet"
        parts_dir = _parts_dir(target)
        ranges = shards.user_ranges(onboarding, self.n_shards)
        try:
            args = [
                (settings.paths, artifact, layout, batch_id, as_of, k, r, parts_dir)
                for k, r in enumerate(ranges)
            ]
            done = (lambda r: on_chunk(r.n_users)) if on_chunk else None
            parts = [r.path for r in self._run(shards.embed_range, args, done) if r.path]
            empty = publish.embedding_table(
                np.zeros(0, np.int64), np.zeros((0, 1)), batch_id, as_of
            )
            t1 = time.perf_counter()
            n = shards.concat_parts(parts, target, empty.schema)
            self.last_publish_s = time.perf_counter() - t1
        finally:
            shutil.rmtree(parts_dir, ignore_errors=True)
        newer = [t for t in publish.published_times(settings, batch_id) if t > as_of]
        if online and newer:  # last-write-wins online stores: never put older vectors over newer
            log.warning(
                "batch %s already published as of %s: %s offline only", batch_id, max(newer), as_of
            )
        elif online:
            self.load_online(target)
        _mark_ready(settings, batch_id, n)
        return publish.EmbedReport(batch_id, as_of, n, time.perf_counter() - t0, target)

    def load_online(self, path: Path) -> int:
        """Row groups of a published z_u file written by parallel tasks (one at a time into
        SQLite, which takes a single writer)."""

        store(self.settings)  # applied once: the workers' stores find user_embedding
        n_groups = pq.ParquetFile(path).metadata.num_row_groups
        groups = np.array_split(np.arange(n_groups), min(self.n_shards, n_groups))
        args = [(self.settings, path, g.tolist(), k) for k, g in enumerate(groups)]
        limit = 1 if self.settings.online_store == "sqlite" else None
        return sum(r.n_users for r in self._run(shards.online_rows, args, max_in_flight=limit))

    def train_snapshot(
        self,
        data: TrainingSet,
        config: AutoencoderConfig,
        train_config: TrainConfig,
        on_epoch: Callable[[int, float, float], None] | None = None,
        anchors: Anchors | None = None,
    ) -> TrainResult:
        """Data-parallel on Ray Train (TorchTrainer, DDP over gloo; ray_train.train_workers
        workers), each worker reading its own user-id range of the snapshot: the driver holds
        only the user ids, the split and the item vocabulary."""

        return ray_train.train_snapshot(
            self.settings, data, config, train_config, on_epoch, anchors
        )


def _parts_dir(target: Path) -> Path:
    """A hidden folder beside the target: the views' `*.parquet` glob never reads a part."""
    parts = target.parent / f".{target.name}.parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    return parts


def _artifact_dir(settings: Settings, batch_id: str) -> Path:

    with session_scope(settings.metadata_db_url) as session:
        return Path(batches.get_batch(session, batch_id).artifact_path)


def _mark_ready(settings: Settings, batch_id: str, n_users: int) -> None:

    with session_scope(settings.metadata_db_url) as session:
        if batches.get_batch(session, batch_id).status == BatchStatus.BUILDING:
            batches.mark_ready(session, batch_id, n_users)
