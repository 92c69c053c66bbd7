"""Benchmark: batch alignment cost (Procrustes fit + map apply, plus the extra encoder passes
train_batch makes on the fit users; the BCT term's extra time per epoch) against autoencoder
training time. The three-retrain study of aligned batches is bench/bench_align_study.py.

    .venv/bin/python -m bench.bench_align [--users 1000000] [--dim 64] [--train-users 100000]
        [--epochs 1] [--full-epochs 50]

Training is timed on --train-users for --epochs and scaled linearly to --users x --full-epochs
(per-epoch cost is linear in users); the target is alignment < 5% of training time.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch

from bench.bench_train import bench_layout, random_input
from representation.align import MAX_FIT_USERS, fit_procrustes
from representation.artifact import UserEncoder
from representation.model import AutoencoderConfig
from representation.train import Anchors, TrainConfig, train_autoencoder

log = logging.getLogger(__name__)


def time_procrustes(n: int, dim: int, seed: int = 0) -> tuple[float, float, float]:
    """Seconds to fit a map on (n, dim) and to apply it to (n, dim); and the fit residual."""
    rng = np.random.default_rng(seed)
    z_a = rng.standard_normal((n, dim), dtype=np.float32)  # (n, dim)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    z_b = (z_a @ q + 0.01 * rng.standard_normal((n, dim))).astype(np.float32)  # (n, dim)
    t0 = time.perf_counter()
    amap, fit = fit_procrustes(z_b, z_a)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    amap.apply(z_b)
    return t_fit, time.perf_counter() - t0, fit["residual"]


def time_training(n: int, dim: int, epochs: int) -> tuple[float, UserEncoder, np.ndarray]:
    """Seconds per epoch training on n random users; the encoder and inputs for the embed pass."""
    blocks = bench_layout()
    x = random_input(n, blocks)
    cfg = AutoencoderConfig(input_dim=x.shape[1], latent_dim=dim)
    result = train_autoencoder(x, blocks, cfg, TrainConfig(epochs=epochs, seed=0))
    per_epoch = result.metrics["seconds"] / max(result.metrics["epochs_run"], 1)
    return per_epoch, UserEncoder.from_result(result), x


def time_bct_epoch(encoder: UserEncoder, x: np.ndarray, epochs: int) -> float:
    """Seconds per epoch training on x with every user an anchor (the parent: encoder)."""
    anchors = Anchors(np.arange(len(x)), encoder.embed(x))
    cfg = AutoencoderConfig(input_dim=x.shape[1], latent_dim=encoder.latent_dim)
    tcfg = TrainConfig(epochs=epochs, seed=1)
    result = train_autoencoder(x, list(encoder.blocks), cfg, tcfg, anchors=anchors)
    return result.metrics["seconds"] / max(result.metrics["epochs_run"], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--train-users", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--full-epochs", type=int, default=50, help="`userrep train` default")
    args = ap.parse_args()
    print(f"cpu_count={os.cpu_count()} torch_threads={torch.get_num_threads()}")
    t_fit, t_apply, residual = time_procrustes(args.users, args.dim)
    print(
        f"procrustes {args.users:,} x {args.dim}: fit {t_fit:.2f} s, apply {t_apply:.2f} s "
        f"(residual {residual:.4f})"
    )
    per_epoch, encoder, x = time_training(args.train_users, args.dim, args.epochs)
    t_train = per_epoch * args.users / args.train_users * args.full_epochs
    t0 = time.perf_counter()
    encoder.embed(x)
    embed_per_user = (time.perf_counter() - t0) / len(x)
    t_passes = 2 * min(args.users, MAX_FIT_USERS) * embed_per_user  # parent + raw encoder
    print(
        f"training: {per_epoch:.1f} s/epoch on {args.train_users:,} users -> "
        f"{t_train:,.0f} s for {args.users:,} users x {args.full_epochs} epochs"
    )
    print(
        f"alignment in train_batch: 2 encoder passes over {min(args.users, MAX_FIT_USERS):,} "
        f"fit users {t_passes:.1f} s + fit {t_fit:.2f} s"
    )
    total = t_passes + t_fit
    for label, t_ref in (("full run", t_train), ("one epoch", t_train / args.full_epochs)):
        print(f"alignment / training ({label}): {100 * total / t_ref:.2f}%  (target < 5%)")
    bct_epoch = time_bct_epoch(encoder, x, args.epochs)
    extra = max(bct_epoch - per_epoch, 0.0) / per_epoch  # the term's share of an epoch
    t_bct = t_passes / 2 + extra * t_train  # one parent pass over the anchors + the term
    print(
        f"bct term: {bct_epoch:.1f} s/epoch vs {per_epoch:.1f} plain (+{100 * extra:.1f}%); "
        f"bct / training (full run): {100 * t_bct / t_train:.2f}%, "
        f"bct+procrustes: {100 * (t_bct + total) / t_train:.2f}%"
    )
    print(
        f"apply at embed time: {1e9 * t_apply / args.users:.0f} ns/user vs encoder "
        f"{1e9 * embed_per_user:.0f} ns/user ({100 * t_apply / args.users / embed_per_user:.1f}%)"
    )


if __name__ == "__main__":
    main()
