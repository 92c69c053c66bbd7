"""The Ray engine's training job: the autoencoder fitted data-parallel by Ray Train's
TorchTrainer (torch DDP, gloo, CPU workers), one shard of users per worker (scale/ddp.py runs the
per-worker loop). `train_snapshot` (`userrep train`) has each worker read its own user-id range
of the snapshot; `train_autoencoder` shards a matrix already in memory. Imported only by the Ray
engine; returns the TrainResult that `train.train_autoencoder` returns, so the artifact is saved
by the same path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import scipy.sparse as sp
import torch

from representation.model import AutoencoderConfig, InputBlock, UserAutoencoder, validate_blocks
from representation.scale import ddp, shards
from representation.train import (
    Anchors,
    CompatTerm,
    Normaliser,
    TrainConfig,
    TrainResult,
    split_users,
)
from representation.trainset import TrainingSet
from userrep.settings import Settings

log = logging.getLogger(__name__)
MODEL_FILE, NORMALISER_FILE, METRICS_FILE = "model.pt", "normaliser.json", "metrics.json"


def train_workers(settings: Settings) -> int:
    """Workers of a training job: settings.ray_train_workers, else one per user shard
    (settings.ray_shards) but at most one per cluster CPU (a DDP job starts all its workers at
    once), else one per cluster CPU."""
    if settings.ray_train_workers:
        return settings.ray_train_workers
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return min(settings.ray_shards or cpus, cpus)


def train_autoencoder(
    settings: Settings,
    x: np.ndarray,
    blocks: Sequence[InputBlock],
    config: AutoencoderConfig,
    train_config: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
    anchors: Anchors | None = None,
    items: sp.csr_matrix | None = None,
    workers: int | None = None,
    tags: sp.csr_matrix | None = None,
) -> TrainResult:
    """train.train_autoencoder on a Ray cluster, for a matrix in memory: the driver splits the
    users (same seed, same held-out users), puts one contiguous shard per worker into the
    object store and runs a TorchTrainer; each worker fetches only its shard. on_epoch is
    replayed after the job."""
    if x.ndim != 2 or x.shape[1] != config.input_dim:
        raise ValueError(f"expected (n, {config.input_dim}) input, got {x.shape}")
    validate_blocks(blocks, config.input_dim)
    for t in (items, tags):
        if t is not None and t.shape[0] != len(x):
            raise ValueError(f"decoder targets have {t.shape[0]} rows, x has {len(x)}")
    plan = _plan(len(x), train_config, anchors, workers or train_workers(settings))
    shards = [
        ddp.make_shard(x, lo, hi, plan.train_rows, plan.val_rows, items, plan.anchors, tags)
        for lo, hi in plan.bounds
    ]
    return _train(settings, shards, blocks, config, train_config, plan, on_epoch)


def train_snapshot(
    settings: Settings,
    data: TrainingSet,
    config: AutoencoderConfig,
    train_config: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
    anchors: Anchors | None = None,
    workers: int | None = None,
) -> TrainResult:
    """train_autoencoder on every user of a snapshot without the matrix on the driver: it
    reads the user ids (one column), makes the same seeded split and shard bounds, decides the
    item vocabulary (one DuckDB aggregate), and each worker reads its own user-id range's
    inputs and item targets (SnapshotShard.load)."""
    blocks = data.layout.blocks()
    if data.layout.dim != config.input_dim:
        raise ValueError(f"layout has {data.layout.dim} columns, config {config.input_dim}")
    users = data.user_ids()  # (n,) sorted: row i of the (never built) training matrix
    plan = _plan(len(users), train_config, anchors, workers or train_workers(settings))
    vocab = data.item_vocabulary() if train_config.item_weight > 0 else None
    tag_vocab = data.tag_vocabulary(train_config)
    specs = [
        SnapshotShard(
            data,
            lo,
            hi,
            (int(users[lo]), int(users[hi]) if hi < len(users) else int(users[-1]) + 1),
            ddp.local_rows(plan.train_rows, lo, hi),
            ddp.local_rows(plan.val_rows, lo, hi),
            vocab,
            ddp.shard_anchors(plan.anchors, lo, hi),
            tag_vocab,
        )
        for lo, hi in plan.bounds
    ]
    del users
    return _train(settings, specs, blocks, config, train_config, plan, on_epoch)


@dataclass(frozen=True)
class SnapshotShard:
    """One worker's rows [lo, hi) of a TrainingSet, i.e. its users with user_id in user_range,
    by reference: the worker reads them itself (load)."""

    data: TrainingSet
    lo: int
    hi: int
    user_range: tuple[int, int]  # [first user id, past the last) of rows [lo, hi)
    train_rows: np.ndarray  # (n_train_k,) positions in [0, hi - lo) of its training users
    val_rows: np.ndarray  # (n_val_k,) positions of its held-out users
    vocab: np.ndarray | None  # the item decoder's columns over all users, None = no item term
    anchors: Anchors | None  # BCT anchors among these rows (local positions), or None
    tag_vocab: np.ndarray | None = None  # the tag decoder's columns over all users, or None

    def load(self) -> ddp.TrainShard:
        """The rows' inputs and decoder targets, read from the snapshot: make_shard's shard."""
        ids, x = self.data.read_range(*self.user_range)  # (k,), (k, input_dim)
        if len(ids) != self.hi - self.lo:
            raise RuntimeError(
                f"snapshot {self.data.as_of} changed during training: user ids "
                f"{self.user_range} hold {len(ids)} users, the driver counted {self.hi - self.lo}"
            )
        items = (
            None if self.vocab is None else self.data.item_targets(ids, self.user_range, self.vocab)
        )
        tags = None
        if self.tag_vocab is not None:
            tags = self.data.tag_targets(ids, self.tag_vocab, self.user_range)
        return ddp.TrainShard(
            self.lo,
            x,
            np.array(self.train_rows),
            np.array(self.val_rows),
            items,
            self.anchors,
            tags,
        )


@dataclass(frozen=True)
class _Plan:
    """The driver's part of a training job, all from the user count: split, shards, anchors."""

    train_rows: np.ndarray  # (n_train,) sorted row positions
    val_rows: np.ndarray  # (n_val,) sorted row positions
    bounds: list[tuple[int, int]]  # one [lo, hi) row range per worker
    rng_state: Any  # numpy's generator state after the split: the workers' batch order
    anchors: Anchors | None  # the BCT anchors when the term is on
    compat_scale: float | None  # the BCT scale over all anchors


def _plan(n: int, cfg: TrainConfig, anchors: Anchors | None, workers: int) -> _Plan:
    """train.train_autoencoder's split (same seed: same held-out users) and the shards."""
    rng = np.random.default_rng(cfg.seed)
    train_rows, val_rows = split_users(n, cfg.val_fraction, rng)
    world = max(1, min(workers, len(train_rows)))
    use_anchors = anchors if anchors is not None and cfg.compat_weight > 0 else None
    compat_scale = None
    if use_anchors is not None:  # over all anchors, as the local term computes it
        compat_scale = CompatTerm(use_anchors, n, cfg.compat_weight).scale
    bounds = ddp.shard_bounds(n, train_rows, world)
    return _Plan(train_rows, val_rows, bounds, rng.bit_generator.state, use_anchors, compat_scale)


def _train(
    settings: Settings,
    shards: Sequence[ddp.TrainShard | SnapshotShard],
    blocks: Sequence[InputBlock],
    config: AutoencoderConfig,
    cfg: TrainConfig,
    plan: _Plan,
    on_epoch: Callable[[int, float, float], None] | None,
) -> TrainResult:
    """One shard per worker through the object store, the TorchTrainer, rank 0's result."""
    refs = [ray.put(shard) for shard in shards]
    loop_config = {
        "shards": refs,  # nested refs: each worker gets only its own
        "blocks": tuple(blocks),
        "config": config,
        "train_config": cfg,
        "rng_state": plan.rng_state,
        "n_train": len(plan.train_rows),
        "n_val": len(plan.val_rows),
        "compat_scale": plan.compat_scale,
        "threads": 1,
    }
    fit = _run_trainer(settings, loop_config, len(refs))
    del refs
    if on_epoch is not None:
        losses = zip(fit.metrics["train_loss"], fit.metrics["val_loss"], strict=True)
        for epoch, (train_loss, val_loss) in enumerate(losses, start=1):
            on_epoch(epoch, train_loss, val_loss)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left alone, as locally
        model = UserAutoencoder(config, blocks)
    model.load_state_dict(fit.state_dict)
    model.eval()
    return TrainResult(model, fit.normaliser, tuple(blocks), config, cfg, fit.metrics)


def _run_trainer(settings: Settings, loop_config: dict, world: int) -> ddp.ShardFit:
    """One TorchTrainer run (1 CPU per worker, gloo); its checkpoint holds rank 0's result.
    Checkpoints go under the workspace, which on a cluster every node sees."""
    from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = settings.paths.batches / f".ray-train-{uuid.uuid4().hex[:8]}"
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config=loop_config,
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(
                num_workers=world, use_gpu=False, resources_per_worker={"CPU": 1}
            ),
            run_config=RunConfig(
                name="train", storage_path=str(storage), failure_config=FailureConfig(0)
            ),
        )
        checkpoint: Checkpoint | None = trainer.fit().checkpoint
        if checkpoint is None:
            raise RuntimeError("Ray Train finished without rank 0's checkpoint")
        with checkpoint.as_directory() as d:
            return _read_fit(Path(d))
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its shard (in the object store, or read from the snapshot),
    ddp.fit_shard under DDP; rank 0 checkpoints the result."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    shard = ray.get(config["shards"][rank])
    if isinstance(shard, SnapshotShard):
        shard = shard.load()  # this worker's user range, read from the snapshot
    else:  # zero-copy, read-only arrays: copy the row lists
        shard = dataclasses.replace(
            shard, train_rows=np.array(shard.train_rows), val_rows=np.array(shard.val_rows)
        )
    fit = ddp.fit_shard(
        shard,
        config["blocks"],
        config["config"],
        config["train_config"],
        config["rng_state"],
        config["n_train"],
        config["n_val"],
        rank,
        world,
        wrap=ray.train.torch.prepare_model,
        compat_scale=config["compat_scale"],
    )
    del shard
    peak = np.array([shards.peak_rss_mib()])  # the largest worker's peak, for the benchmarks
    fit.metrics["worker_peak_rss_mib"] = float(ddp.all_max(peak)[0])
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            _write_fit(Path(d), fit)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        metrics = {"best_val_loss": fit.metrics["best_val_loss"], "rank": rank}
        ray.train.report(metrics, checkpoint=checkpoint)  # every rank: it is a barrier


def _write_fit(d: Path, fit: ddp.ShardFit) -> None:
    """state_dict (torch, weights only), normaliser and metrics as JSON (exact round trips)."""
    torch.save(fit.state_dict, d / MODEL_FILE)
    (d / NORMALISER_FILE).write_text(json.dumps(fit.normaliser.to_dict()))
    (d / METRICS_FILE).write_text(json.dumps(fit.metrics, default=float))


def _read_fit(d: Path) -> ddp.ShardFit:
    state = torch.load(d / MODEL_FILE, weights_only=True)
    normaliser = Normaliser.from_dict(json.loads((d / NORMALISER_FILE).read_text()))
    return ddp.ShardFit(state, normaliser, json.loads((d / METRICS_FILE).read_text()))
