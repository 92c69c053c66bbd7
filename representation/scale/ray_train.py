"""The Ray engine's training job: the autoencoder fitted data-parallel by Ray Train's
TorchTrainer (torch DDP, gloo, CPU workers), one shard of users per worker (scale/ddp.py runs the
per-worker loop). Imported only by the Ray engine; returns the TrainResult that
`train.train_autoencoder` returns, so the artifact is saved by the same path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
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
) -> TrainResult:
    """train.train_autoencoder on a Ray cluster: the driver splits the users (same seed, same
    held-out users), puts one contiguous shard per worker into the object store and runs a
    TorchTrainer; each worker fetches only its shard. on_epoch is replayed after the job."""
    if x.ndim != 2 or x.shape[1] != config.input_dim:
        raise ValueError(f"expected (n, {config.input_dim}) input, got {x.shape}")
    validate_blocks(blocks, config.input_dim)
    if items is not None and items.shape[0] != len(x):
        raise ValueError(f"item targets have {items.shape[0]} rows, x has {len(x)}")
    cfg = train_config
    rng = np.random.default_rng(cfg.seed)
    train_rows, val_rows = split_users(len(x), cfg.val_fraction, rng)
    world = max(1, min(workers or train_workers(settings), len(train_rows)))
    use_anchors = anchors if anchors is not None and cfg.compat_weight > 0 else None
    compat_scale = None
    if use_anchors is not None:  # over all anchors, as the local term computes it
        compat_scale = CompatTerm(use_anchors, len(x), cfg.compat_weight).scale
    refs = [
        ray.put(ddp.make_shard(x, lo, hi, train_rows, val_rows, items, use_anchors))
        for lo, hi in ddp.shard_bounds(len(x), train_rows, world)
    ]
    loop_config = {
        "shards": refs,  # nested refs: each worker gets only its own
        "blocks": tuple(blocks),
        "config": config,
        "train_config": cfg,
        "rng_state": rng.bit_generator.state,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "compat_scale": compat_scale,
        "threads": 1,
    }
    fit = _run_trainer(settings, loop_config, world)
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
    """One Ray Train worker: its shard, ddp.fit_shard under DDP; rank 0 checkpoints the result."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    shard = ray.get(config["shards"][rank])  # zero-copy, read-only arrays: copy the row lists
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
