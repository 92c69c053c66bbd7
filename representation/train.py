"""Fit the user autoencoder on one snapshot of the encoder input matrix.

Input: a float32 (users, input_dim) matrix assembled from Feast (NaN = no data) and its block
layout. Output: a TrainResult that `artifact.save_artifact` turns into an encoder batch.
"""

from __future__ import annotations

import functools
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from representation import selection
from representation.model import (
    AutoencoderConfig,
    InputBlock,
    UserAutoencoder,
    observed_mask,
    validate_blocks,
)

log = logging.getLogger(__name__)

_CHUNK = 4096  # rows per chunk when normalising or evaluating: temporaries stay small enough
# for the allocator to reuse (fresh page-faulted 100 MB+ buffers make CPU passes 3-4x slower)
_NOISE_BANK_ROWS = 8192  # pre-sampled noise rows (see Corruptor)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and corruption settings; saved with the artifact."""

    epochs: int = 50  # upper bound: early stopping usually ends sooner
    batch_size: int = 512  # users per step on small and mid-sized data (see for_users)
    max_batch_size: int = 2048  # on large data the step grows up to this (see for_users)
    min_steps: int = 64  # ... while an epoch keeps at least this many steps
    lr: float = 1e-3  # AdamW at batch_size; stable for an MLP this size (see for_users)
    weight_decay: float = 1e-5  # light: noise, masking and dropout do most of the regularising
    block_mask_prob: float = 0.3  # per sample, chance each maskable group is hidden (fill-in)
    cold_start_prob: float = 0.1  # per sample, chance ALL maskable groups are hidden: a sign-up
    # day user; independent masking alone rarely hides them all (0.3**5 for five groups)
    keep_groups: tuple[str, ...] = ("onboarding",)  # never hidden: what a brand-new user has
    noise_std: float = 0.1  # gaussian noise on standardised inputs (denoising)
    val_fraction: float = 0.1  # held-out users: early stopping and the reported val loss
    patience: int = 5  # epochs without val improvement before stopping
    min_delta: float = 1e-4  # relative val improvement that counts as one
    seed: int = 0  # seeds init, split, batch order, noise, masks and dropout: same seed, same z
    bf16: bool | None = None  # bfloat16 autocast for training matmuls; None = auto (for_users):
    # on for large data where this CPU runs a bf16 step >= BF16_MIN_SPEEDUP x faster than float32
    # (docs/quality.md). Evaluation, validation and embedding always run float32
    item_weight: float = 0.05  # item decoder (only with item targets, representation/targets.py):
    # weight of its multinomial NLL beside the per-column feature MSE (~1 a column); 0 = off
    item_vocab: int = 4096  # the decoder predicts the most popular items, at most this many
    item_sample: int = 1024  # candidate items per training step for the item softmax's
    # normaliser (ItemLoss); 0 = the exact softmax over the whole vocabulary
    tag_weight: float = 1.0  # tag decoder (only with tag targets, representation/targets.py):
    # weight of its soft-label cross-entropy over the user's genre / tag shares; 0 = off
    tag_vocab: int = 256  # the tag decoder predicts the most used genres / tags, at most this many
    select: bool = True  # choose among selection.CANDIDATES on the validation users first
    # (needs item targets; off when aligning to a parent, whose latent size is fixed)
    compat_weight: float = 0.3  # BCT term (only with parent anchors): weight of the anchor
    # users' squared distance to their parent z_u, relative to the parent's z_u variance;
    # docs/alignment.md measures the trade against the linear probe

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.min_steps < 1:
            raise ValueError("epochs, batch_size, min_steps and patience must be >= 1")
        if self.max_batch_size < self.batch_size:
            raise ValueError("max_batch_size must be >= batch_size")
        if not (0 <= self.block_mask_prob <= 1 and 0 <= self.cold_start_prob <= 1):
            raise ValueError("masking probabilities must lie in [0, 1]")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must lie in [0, 1)")
        if min(self.compat_weight, self.item_weight, self.item_sample, self.tag_weight) < 0:
            raise ValueError("compat_weight, item_weight, item_sample and tag_weight must be >= 0")

    def for_users(self, n_train: int, speedup: Callable[[], float] | None = None) -> TrainConfig:
        """The step for n_train training users: batch_size doubled while it stays within
        max_batch_size and an epoch keeps min_steps steps, lr scaled by sqrt(batch growth), and
        bf16 = None resolved (on when the step grew and speedup(), default bf16_speedup, is at
        least BF16_MIN_SPEEDUP).

        Per-step costs (optimizer, op dispatch, thread wake-ups) dominate a 512-user CPU step,
        so large data takes larger steps (docs/quality.md, "Step size at scale"); small data
        keeps the many steps per epoch it needs."""
        batch = self.batch_size
        while batch * 2 <= self.max_batch_size and n_train // (batch * 2) >= self.min_steps:
            batch *= 2
        lr = self.lr * math.sqrt(batch / self.batch_size)
        bf16 = self.bf16
        if bf16 is None:  # small data trains in seconds: float32, no probe
            bf16 = batch > self.batch_size and (speedup or bf16_speedup)() >= BF16_MIN_SPEEDUP
        return replace(self, batch_size=batch, max_batch_size=batch, lr=lr, bf16=bf16)

    @classmethod
    def tiny(cls) -> TrainConfig:
        """Trains in a few seconds on CPU: tests and local runs."""
        return cls(epochs=30, batch_size=128, max_batch_size=128, lr=3e-3, patience=5, select=False)


BF16_MIN_SPEEDUP = 1.3  # bf16 autocast only where it clearly pays (see TrainConfig.bf16)
_BF16_PROBE = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
x = torch.randn(2048, 680)
net = torch.nn.Sequential(torch.nn.Linear(680, 256), torch.nn.GELU(), torch.nn.Linear(256, 680))
def best(bf16):
    times = []
    for i in range(13):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = net(x)
        y.float().square().mean().backward()
        times.append(time.perf_counter() - t0)
    return min(times[3:])
print(best(False) / best(True))
"""


@functools.cache
def bf16_speedup() -> float:
    """float32 / bf16 time of a training-shaped step (2,048 x 680 -> 256 -> 680, forward and
    backward) on this CPU, with training's thread count; 0.0 when the CPU has no bf16 dot
    product instructions or the bf16 step dies. It runs in a subprocess (~3 s, once per
    process) because a CPU may advertise amx_bf16 and still die on a bf16 matmul."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: stay float32
        return 0.0
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return 0.0
    cmd = [sys.executable, "-c", _BF16_PROBE, str(torch.get_num_threads())]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        speedup = float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        log.warning("bf16 probe failed (%s): training in float32", err)
        return 0.0
    log.info("bf16 probe: a bf16 training step is %.2fx as fast as float32", speedup)
    return speedup


@dataclass
class Normaliser:
    """Per-column standardisation fitted on observed (finite) training values; keeps NaN."""

    mean: np.ndarray  # (input_dim,) float32
    std: np.ndarray  # (input_dim,) float32, never below min_std
    clip: float = 10.0  # standardised values are clipped to +-clip: heavy-tailed counts

    @classmethod
    def fit(
        cls, x: np.ndarray, rows: np.ndarray | None = None, min_std: float = 1e-6
    ) -> Normaliser:
        """Two chunked float64 passes over x[rows]; never-observed columns get mean 0, std 1."""
        rows = np.arange(len(x)) if rows is None else rows
        d = x.shape[1]
        count, total, sq = np.zeros(d), np.zeros(d), np.zeros(d)
        for chunk in _chunks(x, rows):
            ok = np.isfinite(chunk)
            count += ok.sum(axis=0)
            total += np.where(ok, chunk, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros(d), where=count > 0)
        for chunk in _chunks(x, rows):
            sq += np.where(np.isfinite(chunk), (chunk - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(np.divide(sq, count, out=np.ones(d), where=count > 1))
        std = np.where(std < min_std, 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardised float32 copy; NaN (the missing mask) wherever x is not finite."""
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"expected (n, {len(self.mean)}) input, got {x.shape}")
        out = np.array(x, dtype=np.float32)  # a copy; the arithmetic below is in place
        out -= self.mean
        out /= self.std
        np.clip(out, -self.clip, self.clip, out=out)  # NaN stays NaN, +-inf becomes +-clip
        out[~np.isfinite(x)] = np.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; float32 -> float -> float32 round-trips exactly."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normaliser:
        mean, std = (np.asarray(d[k], dtype=np.float32) for k in ("mean", "std"))
        return cls(mean, std, float(d["clip"]))


def _chunks(x: np.ndarray, rows: np.ndarray):
    for start in range(0, len(rows), _CHUNK):
        yield np.asarray(x[rows[start : start + _CHUNK]], dtype=np.float64)


class Corruptor:
    """Denoising corruption: gaussian noise, then whole block groups hidden (made non-finite).

    The model sees a hidden group exactly like a group the user has no data for, so what it
    learns filling in hidden groups carries over to users whose long horizons are empty.
    """

    def __init__(self, blocks: Sequence[InputBlock], cfg: TrainConfig, seed: int):
        groups = sorted({b.group for b in blocks} - set(cfg.keep_groups))
        group_cols = torch.zeros(len(groups), blocks[-1].stop)  # (G, input_dim)
        for b in blocks:
            if b.group in groups:
                group_cols[groups.index(b.group), b.start : b.stop] = 1.0
        self.group_cols = group_cols
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(seed)
        # noise rows are drawn from a pre-sampled bank: a fresh randn costs ~1 ms per 512 x 600
        # batch on CPU, a tenth of the step; random (user, bank row) pairs are just as noisy
        bank = torch.randn(_NOISE_BANK_ROWS, group_cols.shape[1], generator=self.gen)
        self.noise_bank = cfg.noise_std * bank  # (rows, input_dim)
        self._after_bank = self.gen.get_state()  # where replay() restarts the draws

    def replay(self) -> Corruptor:
        """Restart the draws (noise rows, masks) where a fresh Corruptor with this seed starts
        them: the same corruption again, without re-sampling the bank (~25 ms at 8,192 x 667,
        per epoch of validation)."""
        self.gen.set_state(self._after_bank)
        return self

    def __call__(self, x: Tensor) -> Tensor:
        b, g, cfg = len(x), len(self.group_cols), self.cfg
        rows = torch.randint(_NOISE_BANK_ROWS, (b,), generator=self.gen)  # (b,)
        noisy = x + self.noise_bank.index_select(0, rows)  # (b, input_dim)
        hide = torch.rand(b, g, generator=self.gen) < cfg.block_mask_prob  # (b, G)
        hide |= torch.rand(b, 1, generator=self.gen) < cfg.cold_start_prob  # (b, G)
        hide_cols = (hide.float() @ self.group_cols).clamp(max=1.0)  # (b, input_dim) 1 = hidden
        # x / 0 is +-inf or NaN, i.e. missing; ~5x faster than a bool gather + masked_fill
        return noisy / (1.0 - hide_cols)  # (b, input_dim)


def masked_mse(recon: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the observed (finite) entries of the uncorrupted target."""
    observed = observed_mask(target)  # (b, input_dim)
    diff = (recon - target.nan_to_num(0.0)) * observed  # (b, input_dim)
    return (diff * diff).sum() / observed.sum().clamp(min=1.0)


@dataclass(frozen=True)
class Anchors:
    """Users whose z_u must stay near a parent batch's (the BCT term; representation/align.py)."""

    rows: np.ndarray  # (n_anchors,) row positions in the training matrix
    z_parent: np.ndarray  # (n_anchors, latent_dim) the parent's z_u of those rows, same inputs


class CompatTerm:
    """weight * mean ||z - z_parent||^2 / var(z_parent) over the anchor rows of a minibatch."""

    def __init__(self, anchors: Anchors, n_users: int, weight: float):
        z = torch.from_numpy(np.asarray(anchors.z_parent, np.float32))  # (n_anchors, latent)
        self.target = z
        self.position = torch.full((n_users,), -1, dtype=torch.long)  # row -> anchor index
        self.position[torch.from_numpy(np.asarray(anchors.rows, np.int64))] = torch.arange(len(z))
        self.scale = weight / max(float(z.var(dim=0).sum()), 1e-12)  # per-user, not per-dim

    def __call__(self, z: Tensor, rows_b: Tensor) -> Tensor:
        pos = self.position.index_select(0, rows_b)  # (b,) anchor index or -1
        hit = (pos >= 0).to(z.dtype).unsqueeze(1)  # (b, 1) 1 = anchor
        # dense over the minibatch (non-anchors weighted 0): boolean indexing would sync on
        # the hit count and scatter in backward, ~7 % of a 2,048-user bf16 step
        target = self.target.index_select(0, pos.clamp(min=0))  # (b, latent_dim)
        diff = (z - target) * hit  # (b, latent_dim)
        return self.scale * (diff * diff).sum() / len(rows_b)


class _SparseRowSum(torch.autograd.Function):
    """(b, vocab) scipy CSR targets x (vocab, latent) weight -> (b, latent), and its weight
    gradient targets.T x grad: scipy's sparse kernels, ~2x faster here than torch's
    embedding_bag or sparse CSR matmul with their backward passes."""

    @staticmethod
    def forward(ctx, weight: Tensor, targets: sp.csr_matrix) -> Tensor:  # type: ignore[override]
        ctx.targets = targets
        return torch.from_numpy(np.asarray(targets @ weight.detach().numpy(), np.float32))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        dense = np.asarray(grad.float().numpy())
        return torch.from_numpy(np.asarray(ctx.targets.T @ dense, np.float32)), None


class ItemLoss:
    """weight * multinomial NLL of each user's items under softmax(head(z)) (Mult-DAE's
    likelihood), from a binary (users, vocab) CSR target; the head is a training-time Linear.

    NLL_u = n_u * logsumexp(logits_u) - sum of u's item logits. The item logits' sum is
    z_u . (sum of u's head rows) + their biases: a sparse (b, vocab) x (vocab, latent) product
    (_SparseRowSum), so nothing (b, vocab)-sized is built for it. With `sample` > 0 (and a
    larger vocabulary), training steps estimate the normaliser from `sample` candidate items:
    the sample/2 most popular exactly, plus sample/2 uniform draws from the rest weighted
    (n_rest / draws), an unbiased estimate of the rest's sum of exp(logit). That cuts the
    head's (batch, vocab) work to (batch, sample); validation (early stopping) stays exact.
    """

    def __init__(
        self, targets: sp.csr_matrix, latent_dim: int, weight: float, sample: int = 0, seed=0
    ):
        self.targets = sp.csr_matrix(targets, dtype=np.float32, copy=True)  # made binary below
        self.targets.eliminate_zeros()
        self.targets.data[:] = 1.0  # which items, not how often (the NLL counts each once)
        vocab = self.targets.shape[1]
        self.head = torch.nn.Linear(latent_dim, vocab)
        self.weight = weight
        self.sample = sample if 0 < sample < vocab else 0
        if self.sample:
            users_per_item = np.asarray((self.targets > 0).sum(axis=0)).ravel()  # (vocab,)
            order = torch.from_numpy(np.argsort(-users_per_item, kind="stable"))
            n_exact = self.sample // 2
            self.exact_cols, self.rest_cols = order[:n_exact], order[n_exact:]
            self.draws = self.sample - n_exact
            log_w = float(np.log(len(self.rest_cols) / self.draws))
            self.log_w = torch.cat([torch.zeros(n_exact), torch.full((self.draws,), log_w)])
            self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, z: Tensor, rows_b: Tensor, exact: bool = False) -> Tensor:
        sub = self.targets[rows_b.numpy()]  # (b, vocab) sparse
        n_items = torch.from_numpy(np.diff(sub.indptr).astype(np.float32))  # (b,)
        users_per_item = torch.from_numpy(np.asarray(sub.sum(axis=0), np.float32).ravel())
        w, bias = self.head.weight, self.head.bias  # (vocab, latent), (vocab,)
        item_sum = _SparseRowSum.apply(w, sub)  # (b, latent): each user's sum of item rows
        positive = (z * item_sum.to(z.dtype)).sum() + (users_per_item * bias).sum()
        if self.sample and not exact:
            drawn = torch.randint(len(self.rest_cols), (self.draws,), generator=self.gen)
            cand = torch.cat([self.exact_cols, self.rest_cols.index_select(0, drawn)])  # (s,)
            bias_c = bias.index_select(0, cand) + self.log_w  # (s,)
            logits = torch.nn.functional.linear(z, w.index_select(0, cand), bias_c)  # (b, s)
        else:
            logits = self.head(z)  # (b, vocab)
        lse = torch.logsumexp(logits.float(), dim=1)  # (b,)
        return self.weight * ((n_items * lse).sum() - positive.float()) / len(rows_b)


class TagLoss:
    """weight * soft-label cross-entropy of each user's tag shares under softmax(head(z)): the
    exact softmax over a small vocabulary (256 tags by default); a user with no tagged item adds
    nothing. The head is a training-time Linear, as ItemLoss's."""

    def __init__(self, shares: sp.csr_matrix, latent_dim: int, weight: float):
        self.targets = sp.csr_matrix(shares, dtype=np.float32)  # (users, tags), rows sum to 1
        self.head = torch.nn.Linear(latent_dim, self.targets.shape[1])
        self.weight = weight

    def __call__(self, z: Tensor, rows_b: Tensor, exact: bool = False) -> Tensor:
        p = torch.from_numpy(self.targets[rows_b.numpy()].toarray())  # (b, tags)
        log_q = torch.log_softmax(self.head(z).float(), dim=1)  # (b, tags)
        return -self.weight * (p * log_q).sum() / len(rows_b)


class ItemLosses:
    """The sum of several decoder terms over one z (the item head and the tag head)."""

    def __init__(self, losses: Sequence[ItemLoss | TagLoss]):
        self.losses = list(losses)
        self.head = torch.nn.ModuleList([loss.head for loss in self.losses])

    def __call__(self, z: Tensor, rows_b: Tensor, exact: bool = False) -> Tensor:
        return sum(loss(z, rows_b, exact) for loss in self.losses)  # type: ignore[return-value]


def decoder_loss(
    cfg: TrainConfig,
    latent_dim: int,
    n_users: int,
    items: sp.csr_matrix | None = None,
    tags: sp.csr_matrix | None = None,
    item_seed: int | None = None,
) -> ItemLoss | TagLoss | ItemLosses | None:
    """The training-time decoder heads on z that cfg turns on and that have targets: the item
    head, the tag head; None when there are none, their sum when both. Every target matrix has one row per user (rows as x). item_seed: the item head's
    sampling seed (default cfg.seed + 3; a DDP rank passes its own)."""
    for t in (items, tags):
        if t is not None and t.shape[0] != n_users:
            raise ValueError(f"decoder targets have {t.shape[0]} rows, x has {n_users}")
    losses: list[ItemLoss | TagLoss] = []
    if items is not None and items.shape[1] > 0 and cfg.item_weight > 0:
        seed = cfg.seed + 3 if item_seed is None else item_seed
        losses.append(ItemLoss(items, latent_dim, cfg.item_weight, cfg.item_sample, seed))
    if tags is not None and tags.shape[1] > 0 and cfg.tag_weight > 0:
        losses.append(TagLoss(tags, latent_dim, cfg.tag_weight))
    if len(losses) > 1:
        return ItemLosses(losses)
    return losses[0] if losses else None


@dataclass
class TrainResult:
    """A trained model with everything needed to embed users and to save it as an artifact."""

    model: UserAutoencoder
    normaliser: Normaliser
    blocks: tuple[InputBlock, ...]
    config: AutoencoderConfig
    train_config: TrainConfig
    metrics: dict[str, Any] = field(default_factory=dict)


def _train_epoch(
    model, opt, corrupt: Corruptor, x: Tensor, rows: np.ndarray, cfg, rng, compat=None, items=None
) -> float:
    """One pass over the training users in a seeded random order; returns the mean loss
    (reconstruction, plus the item NLL and the BCT term when given)."""
    model.train()
    order = rows[rng.permutation(len(rows))]
    total = 0.0
    for start in range(0, len(order), cfg.batch_size):
        rows_b = torch.from_numpy(order[start : start + cfg.batch_size])  # (b,)
        target = x.index_select(0, rows_b)  # (b, input_dim); ~5x faster than x[rows_b]
        noisy = corrupt(target)  # float32: its tiny (b, groups) matmul is no bf16 work
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            recon, z = model(noisy)  # (b, input_dim), (b, latent_dim)
            item_nll = items(z, rows_b) if items is not None else None  # the head's matmul too
        loss = masked_mse(recon.float(), target)
        if item_nll is not None:
            loss = loss + item_nll.float()
        if compat is not None:
            loss = loss + compat(z.float(), rows_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(target)
    return total / len(order)


@torch.no_grad()
def _evaluate(
    model, x: Tensor, rows: np.ndarray, corrupt: Corruptor | None, items: ItemLoss | None = None
) -> float:
    """Mean masked MSE (+ item NLL) on rows, corrupted (fixed-seed) or clean; eval mode."""
    model.eval()
    total = 0.0
    for start in range(0, len(rows), _CHUNK):
        rows_b = torch.from_numpy(rows[start : start + _CHUNK])
        target = x.index_select(0, rows_b)  # (b, input_dim)
        recon, z = model(corrupt(target) if corrupt else target)  # (b, input_dim)
        loss = masked_mse(recon, target)
        if items is not None:
            loss = loss + items(z, rows_b, exact=True)
        total += loss.item() * len(target)
    return total / max(len(rows), 1)


def split_users(n: int, val_fraction: float, rng: np.random.Generator):
    """Seeded (train_rows, val_rows) split; at least one user on each side when n >= 2."""
    perm = rng.permutation(n)
    n_val = min(max(int(round(n * val_fraction)), 1), n - 1) if n >= 2 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_autoencoder(
    x: np.ndarray,
    blocks: Sequence[InputBlock],
    config: AutoencoderConfig,
    train_config: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
    anchors: Anchors | None = None,
    items: sp.csr_matrix | None = None,
    tags: sp.csr_matrix | None = None,
) -> TrainResult:
    """Fit normaliser and autoencoder on x (users, input_dim; NaN = missing), early-stopped.

    With items (binary (users, vocab), rows as x; representation/targets.py), a linear item
    decoder is trained beside the feature decoder (train_config.item_weight times its NLL,
    in the early-stopping loss too) so z_u keeps which items a user had; it is not saved.
    With tags ((users, tags) shares, rows summing to 1; representation/targets.py), a tag head
    (train_config.tag_weight) decodes the user's genre / tag shares; training-time only too.

    With anchors, the loss adds train_config.compat_weight times the BCT term (CompatTerm):
    backward-compatible training that keeps those users' z_u near a parent batch's.

    Deterministic for a given seed and thread count; the caller's torch RNG state is untouched.
    on_epoch(epoch, train_loss, val_loss) is called after every epoch (1-based).
    """
    if x.ndim != 2 or x.shape[1] != config.input_dim:
        raise ValueError(f"expected (n, {config.input_dim}) input, got {x.shape}")
    validate_blocks(blocks, config.input_dim)
    if train_config.select and items is not None and anchors is None and len(x) >= 50:
        return _select_and_train(x, blocks, config, train_config, on_epoch, items, tags)
    cfg = train_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        train_rows, val_rows = split_users(len(x), cfg.val_fraction, rng)
        normaliser = Normaliser.fit(x, train_rows)
        xs = torch.from_numpy(normaliser.transform(x))  # (users, input_dim), NaN = missing
        model = UserAutoencoder(config, blocks)
        compat = None
        if anchors is not None and cfg.compat_weight > 0:
            compat = CompatTerm(anchors, len(x), cfg.compat_weight)
        item_loss = decoder_loss(cfg, config.latent_dim, len(x), items, tags)
        step_cfg = cfg.for_users(len(train_rows))  # the step size for this many users
        metrics = _fit(model, xs, train_rows, val_rows, step_cfg, rng, on_epoch, compat, item_loss)
    model.eval()
    return TrainResult(model, normaliser, tuple(blocks), config, cfg, metrics)


def _select_and_train(
    x: np.ndarray,
    blocks: Sequence[InputBlock],
    config: AutoencoderConfig,
    train_config: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None,
    items: sp.csr_matrix,
    tags: sp.csr_matrix | None,
) -> TrainResult:
    """Train each selection.CANDIDATES on (a sample of) the users, keep the one whose z_u best
    recovers the validation users' items from their neighbours, then train it on every user
    (the candidate's own model when the sample was every user)."""
    t0 = time.perf_counter()
    rows = selection.sample_rows(len(x), train_config.seed)
    x_s, items_s = x[rows], sp.csr_matrix(items)[rows]
    tags_s = None if tags is None else sp.csr_matrix(tags)[rows]
    fit_rows, val_rows = split_users(
        len(rows), train_config.val_fraction, np.random.default_rng(train_config.seed)
    )  # the split train_autoencoder makes of the same rows
    results: dict[str, TrainResult] = {}

    def score(candidate: selection.Candidate) -> float:
        cfg, tcfg = selection.apply(candidate, config, replace(train_config, select=False))
        res = results[candidate.name] = train_autoencoder(
            x_s, blocks, cfg, tcfg, items=items_s, tags=tags_s
        )
        z = _embed(res, x_s)  # (sample, latent)
        return selection.neighbour_recall(
            z[val_rows], z[fit_rows], items_s[val_rows], items_s[fit_rows]
        )

    candidates = selection.open_to(selection.CANDIDATES, config, train_config)
    best, scores = selection.best_of(candidates, score)
    chosen = selection.Selection(best, scores, len(rows), time.perf_counter() - t0)
    log.info("settings chosen on the validation users: %s %s", best.name, scores)
    if len(rows) == len(x):
        result = results[best.name]
    else:
        cfg, tcfg = selection.apply(best, config, replace(train_config, select=False))
        result = train_autoencoder(x, blocks, cfg, tcfg, on_epoch, items=items, tags=tags)
    result.train_config = replace(result.train_config, select=True)
    result.metrics["selection"] = chosen.to_dict()
    return result


@torch.no_grad()
def _embed(result: TrainResult, x: np.ndarray) -> np.ndarray:
    """z of raw rows (NaN = missing) under a trained result, in chunks."""
    result.model.eval()
    out = []
    for start in range(0, len(x), _CHUNK):
        xs = torch.from_numpy(result.normaliser.transform(x[start : start + _CHUNK]))
        out.append(result.model.encode(xs).numpy())  # (chunk, latent)
    return np.concatenate(out) if out else np.zeros((0, result.config.latent_dim), np.float32)


def _fit(
    model, xs: Tensor, train_rows, val_rows, cfg: TrainConfig, rng, on_epoch, compat, items
) -> dict:
    """One process: AdamW over the model (and the item head), then fit_epochs.

    Early stopping reads the reconstruction loss (features + items), never the BCT term."""
    params = list(model.parameters()) + (list(items.head.parameters()) if items else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    corrupt = Corruptor(model.blocks, cfg, seed=cfg.seed + 1)
    m: dict[str, Any] = {"n_train": len(train_rows), "n_val": len(val_rows)}
    m |= step_metrics(cfg, items)
    return m | fit_epochs(
        model,
        cfg,
        train_epoch=lambda: _train_epoch(
            model, opt, corrupt, xs, train_rows, cfg, rng, compat, items
        ),
        val_loss=val_loss_fn(model, xs, val_rows, cfg, items),
        clean_val_loss=lambda: _evaluate(model, xs, val_rows, None),
        n_train=len(train_rows),
        on_epoch=on_epoch,
    )


def step_metrics(cfg: TrainConfig, heads) -> dict[str, Any]:
    """What a resolved step config (TrainConfig.for_users) trained with, for the batch metrics;
    heads: decoder_loss's result."""
    losses = heads.losses if isinstance(heads, ItemLosses) else [heads] if heads else []
    vocab = {"item_vocab": 0, "tag_vocab": 0}
    for loss in losses:
        key = "tag_vocab" if isinstance(loss, TagLoss) else "item_vocab"
        vocab[key] = vocab[key] or loss.targets.shape[1]  # the first item head: the history's
    return vocab | {"bf16": cfg.bf16, "batch_size": cfg.batch_size, "lr": cfg.lr}


def fit_epochs(
    model: torch.nn.Module,
    cfg: TrainConfig,
    train_epoch: Callable[[], float],
    val_loss: Callable[[], float],
    clean_val_loss: Callable[[], float],
    n_train: int,
    on_epoch: Callable[[int, float, float], None] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """The epoch loop, shared by one process (_fit) and data-parallel ranks (scale/ddp.py, whose
    callables return losses reduced over all ranks): train, evaluate, keep the best weights,
    stop after `patience` epochs without a `min_delta` improvement, restore the best."""
    m: dict[str, Any] = {"val_loss_initial": val_loss()}
    m |= {"train_loss": [], "val_loss": [], "val_clean_loss": [], "users_per_s": []}
    m |= {"best_epoch": 0, "best_val_loss": float("inf")}
    best_state, t_start = None, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss = train_epoch()
        m["users_per_s"].append(n_train / (time.perf_counter() - t0))
        m["train_loss"].append(train_loss)
        m["val_loss"].append(val := val_loss())
        m["val_clean_loss"].append(clean_val_loss())
        if verbose:
            log.info("epoch %d: train %.4f val %.4f", epoch, train_loss, val)
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val)
        if val < m["best_val_loss"] * (1 - cfg.min_delta):
            m["best_epoch"], m["best_val_loss"] = epoch, val
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - m["best_epoch"] >= cfg.patience:
            if verbose:
                log.info("early stop at epoch %d (best %d)", epoch, m["best_epoch"])
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return m | {"epochs_run": epoch, "seconds": time.perf_counter() - t_start}


def val_loss_fn(
    model, xs: Tensor, val_rows: np.ndarray, cfg: TrainConfig, items=None
) -> Callable[[], float]:
    """Val loss under training's corruption, the very same corruption on every call (one
    Corruptor, replayed) so epochs are comparable."""
    corrupt = Corruptor(model.blocks, cfg, seed=cfg.seed + 2)
    return lambda: _evaluate(model, xs, val_rows, corrupt.replay(), items)
