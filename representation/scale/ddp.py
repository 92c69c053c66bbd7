"""Data-parallel autoencoder training: one rank per shard of users, gradients averaged by torch
DDP. The per-rank loop of the Ray engine's training job (ray_engine.py runs it under Ray Train's
TorchTrainer); plain torch.distributed here, no ray import.

The rank loop is train.py's `_fit` with three changes: each rank holds only its shard of users
(a contiguous user-id range, about the same number of training users per rank), steps through
its shard with `_train_epoch` at batch_size / world ranks per step (DDP averages the gradients, so
the global batch stays batch_size), and every figure that decides something (the normaliser,
the val loss for early stopping) is reduced over all ranks first, so all ranks decide alike.

With one rank this *is* the local code path (Normaliser.fit, _train_epoch, val_loss_fn on the same
rows, same seeds, no DDP wrapper): the same weights bit for bit at the same thread count. With
several ranks it is deterministic per (seed, world size) but not bit-identical to one process:
each step's minibatch is the union of the ranks' slices of their own shuffled shards (a different
partition of the users than one global permutation), the reconstruction loss is normalised per
rank's slice (a mean of ratios, not the global ratio), the noise and dropout streams are per
rank, and float sums (DDP's gradient all-reduce, the normaliser's moments) run in another order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch import Tensor, nn

from representation.model import AutoencoderConfig, InputBlock, UserAutoencoder
from representation.train import (
    Anchors,
    CompatTerm,
    Corruptor,
    Normaliser,
    TrainConfig,
    _evaluate,
    _train_epoch,
    decoder_loss,
    fit_epochs,
    step_metrics,
    val_loss_fn,
)

log = logging.getLogger(__name__)
_CHUNK = 4096  # rows per chunk of the normaliser's moment passes (float64 temporaries)


@dataclass(frozen=True)
class TrainShard:
    """One rank's users: a contiguous row range [lo, hi) of the training matrix."""

    lo: int
    x: np.ndarray  # (hi - lo, input_dim) float32 raw inputs, NaN = missing
    train_rows: np.ndarray  # (n_train_k,) positions in x of this shard's training users
    val_rows: np.ndarray  # (n_val_k,) positions in x of this shard's held-out users
    items: sp.csr_matrix | None  # (hi - lo, vocab) item targets of these rows, or None
    anchors: Anchors | None  # BCT anchors among these rows (positions in x), or None
    tags: sp.csr_matrix | None = None  # (hi - lo, tags) tag shares of these rows, or None


def shard_bounds(n: int, train_rows: np.ndarray, world: int) -> list[tuple[int, int]]:
    """`world` contiguous [lo, hi) row ranges covering [0, n) with equal training users (+-1);
    rows are sorted by user id, so a range is a user-id range."""
    parts = np.array_split(np.asarray(train_rows), world)
    starts = [0] + [int(p[0]) for p in parts[1:]]
    return list(zip(starts, starts[1:] + [n], strict=True))


def make_shard(
    x: np.ndarray,
    lo: int,
    hi: int,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    items: sp.csr_matrix | None = None,
    anchors: Anchors | None = None,
    tags: sp.csr_matrix | None = None,
) -> TrainShard:
    """The rows [lo, hi) of the training inputs, targets and anchors, positions made local."""
    return TrainShard(
        lo,
        np.ascontiguousarray(x[lo:hi]),
        local_rows(train_rows, lo, hi),
        local_rows(val_rows, lo, hi),
        None if items is None else sp.csr_matrix(items[lo:hi]),
        shard_anchors(anchors, lo, hi),
        None if tags is None else sp.csr_matrix(tags[lo:hi]),
    )


def local_rows(rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The positions among rows that fall in [lo, hi), made relative to lo."""
    rows = np.asarray(rows)
    return rows[(rows >= lo) & (rows < hi)] - lo


def shard_anchors(anchors: Anchors | None, lo: int, hi: int) -> Anchors | None:
    """The anchors among rows [lo, hi), positions made relative to lo."""
    if anchors is None:
        return None
    keep = (anchors.rows >= lo) & (anchors.rows < hi)
    return Anchors(anchors.rows[keep] - lo, anchors.z_parent[keep])


def all_sum(a: np.ndarray) -> np.ndarray:
    """Elementwise float64 sum over all ranks (identity without a process group)."""
    return _all_reduce(a, dist.ReduceOp.SUM)


def all_max(a: np.ndarray) -> np.ndarray:
    """Elementwise float64 maximum over all ranks (identity without a process group)."""
    return _all_reduce(a, dist.ReduceOp.MAX)


def _all_reduce(a: np.ndarray, op) -> np.ndarray:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return a
    t = torch.from_numpy(np.array(a, np.float64))
    dist.all_reduce(t, op=op)
    return t.numpy()


def first_moments(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, sum) of the finite values of x[rows] per column, float64."""
    count, total = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, len(rows), _CHUNK):
        chunk = np.asarray(x[rows[start : start + _CHUNK]], np.float64)
        ok = np.isfinite(chunk)
        count += ok.sum(axis=0)
        total += np.where(ok, chunk, 0.0).sum(axis=0)
    return count, total


def centred_squares(x: np.ndarray, rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Sum of (value - mean)^2 over the finite values of x[rows] per column, float64."""
    sq = np.zeros(x.shape[1])
    for start in range(0, len(rows), _CHUNK):
        chunk = np.asarray(x[rows[start : start + _CHUNK]], np.float64)
        sq += np.where(np.isfinite(chunk), (chunk - mean) ** 2, 0.0).sum(axis=0)
    return sq


def combined_normaliser(
    x: np.ndarray,
    rows: np.ndarray,
    reduce: Callable[[np.ndarray], np.ndarray] = all_sum,
    min_std: float = 1e-6,
) -> Normaliser:
    """Normaliser.fit over the training rows of all ranks, from per-shard sufficient statistics:
    count and sum (reduced: the global mean), then the sum of squares about that global mean
    (reduced: the global variance). Two passes as Normaliser.fit makes, so it equals the
    single-process fit up to float rounding (the order of the float64 sums), without the
    cancellation of a one-pass sum / sum-of-squares formula."""
    count, total = (reduce(a) for a in first_moments(x, rows))
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    sq = reduce(centred_squares(x, rows, mean))
    std = np.sqrt(np.divide(sq, count, out=np.ones_like(sq), where=count > 1))
    std = np.where(std < min_std, 1.0, std)
    return Normaliser(mean.astype(np.float32), std.astype(np.float32))


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps `seed` (one rank = the local run); other ranks get independent streams."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class _Trainable(nn.Module):
    """The autoencoder plus the item head in one module, so DDP averages the head's gradients
    too (the head is applied outside forward, in ItemLoss, which DDP allows)."""

    def __init__(self, model: UserAutoencoder, head: nn.Module | None):
        super().__init__()
        self.model, self.head = model, head
        self.blocks = model.blocks

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(x)  # (b, input_dim), (b, latent_dim)


def global_mean(value: float, n: int, world: int) -> float:
    """The mean over all ranks of per-rank means `value` of n rows each, as rank 0 sees it."""
    if world == 1:
        return value
    t = torch.tensor([value * n, float(n)], dtype=torch.float64)
    dist.all_reduce(t)
    dist.broadcast(t, 0)  # every rank takes rank 0's bits: the stopping decision is one
    return float(t[0] / t[1].clamp(min=1.0))


@dataclass
class ShardFit:
    """What rank 0 hands back: the pieces of a TrainResult."""

    state_dict: dict[str, Tensor]
    normaliser: Normaliser
    metrics: dict[str, Any]


def fit_shard(
    shard: TrainShard,
    blocks: tuple[InputBlock, ...],
    config: AutoencoderConfig,
    cfg: TrainConfig,
    rng_state: Any,  # numpy's PCG64 state dict (bit_generator.state)
    n_train: int,
    n_val: int,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    compat_scale: float | None = None,
) -> ShardFit:
    """train_autoencoder on one rank's shard; `rng_state` is the numpy generator state after the
    driver's split_users (n_train / n_val: the global split), `wrap` the DDP wrapper
    (ray.train.torch.prepare_model), compat_scale the BCT scale over all anchors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        bitgen = np.random.PCG64()
        bitgen.state = rng_state
        rng = np.random.Generator(bitgen.jumped(rank) if rank else bitgen)
        if world == 1:  # one shard holds every training row: the local fit itself
            normaliser = Normaliser.fit(shard.x, shard.train_rows)
        else:
            normaliser = combined_normaliser(shard.x, shard.train_rows)
        xs = torch.from_numpy(normaliser.transform(shard.x))  # (rows, input_dim), NaN = missing
        model = UserAutoencoder(config, blocks)  # same init on every rank (seeded above)
        compat = None
        if shard.anchors is not None and cfg.compat_weight > 0:
            compat = CompatTerm(shard.anchors, len(shard.x), cfg.compat_weight)
            if compat_scale is not None:
                compat.scale = compat_scale  # the variance of all anchors' z, not this shard's
        items = decoder_loss(  # the sampled softmax as locally; each rank its own draws
            cfg,
            config.latent_dim,
            len(shard.x),
            shard.items,
            tags=shard.tags,
            item_seed=rank_seed(cfg.seed + 3, rank),
        )
        if rank:
            torch.manual_seed(rank_seed(cfg.seed, rank))  # this rank's dropout stream
        trainable = wrap(_Trainable(model, items.head if items else None))
        metrics = _fit_ranks(model, trainable, xs, shard, cfg, rng, (rank, world), compat, items)
        metrics |= {"n_train": n_train, "n_val": n_val, "ddp_workers": world}
    model.eval()
    return ShardFit(model.state_dict(), normaliser, metrics)


def _fit_ranks(model, trainable, xs, shard, cfg, rng, rank_world, compat, items) -> dict:
    """train.fit_epochs with every loss averaged over all ranks before it is used, and each
    rank stepping batch_size / world users of its own shard."""
    rank, world = rank_world
    n_train = int(all_sum(np.array([len(shard.train_rows)], np.float64))[0])
    cfg = cfg.for_users(n_train)  # the global step size, as one process would take it
    if world > 1:  # bf16 only if every rank's CPU runs it (each probed its own)
        on = all_sum(np.array([float(cfg.bf16)], np.float64))[0] == world
        cfg = dataclasses.replace(cfg, bf16=bool(on))
    params = list(model.parameters()) + (list(items.head.parameters()) if items else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    corrupt = Corruptor(model.blocks, cfg, seed=rank_seed(cfg.seed + 1, rank))
    step_cfg = dataclasses.replace(cfg, batch_size=-(-cfg.batch_size // world))
    n_tr, n_va = len(shard.train_rows), len(shard.val_rows)

    val_loss = val_loss_fn(model, xs, shard.val_rows, cfg, items)

    def train_epoch() -> float:
        # uneven shards: a rank that runs out of minibatches first shadows the others' all-reduces
        join = trainable.join() if hasattr(trainable, "join") else contextlib.nullcontext()
        with join:
            loss = _train_epoch(
                model=trainable,
                opt=opt,
                corrupt=corrupt,
                x=xs,
                rows=shard.train_rows,
                cfg=step_cfg,
                rng=rng,
                compat=compat,
                items=items,
            )
        return global_mean(loss, n_tr, world)

    return step_metrics(cfg, items) | fit_epochs(
        model,
        cfg,
        train_epoch=train_epoch,
        val_loss=lambda: global_mean(val_loss(), n_va, world),
        clean_val_loss=lambda: global_mean(_evaluate(model, xs, shard.val_rows, None), n_va, world),
        n_train=n_train,
        verbose=rank == 0,
    )
