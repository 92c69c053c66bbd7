"""Benchmark: autoencoder training and embedding throughput on random data (200k x 600 default).

    .venv/bin/python bench/bench_train.py [--users 200000] [--epochs 3] [--hidden 256 128]
        [--bf16 auto|off|on|both] [--threads N] [--items 0 4096] [--item-sample 0 1024]
        [--tags 0 256] [--batch-size 512 --max-batch-size 512]

Prints users/s per training epoch and embed users/s for each setting, plus the CPU count. The
defaults are TrainConfig's: 512-user steps growing to 2,048 on this many users, bf16 autocast
where the CPU's probe says it pays (TrainConfig.for_users); the step taken is printed.
"""

from __future__ import annotations

import os

# before torch loads, as the CLI does (userrep/cli/app.py): spin-waiting OpenMP threads are ~10x
# slower on shared cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from representation.artifact import UserEncoder  # noqa: E402
from representation.model import AutoencoderConfig, InputBlock  # noqa: E402
from representation.train import TrainConfig, train_autoencoder  # noqa: E402

HORIZONS = ("7d", "30d", "180d", "all")
MISSING = {"7d": 0.4, "30d": 0.25, "180d": 0.1, "all": 0.0, "stats": 0.0, "onboarding": 0.2}


def bench_layout(vec_dim: int = 64, onboard_dim: int = 32) -> list[InputBlock]:
    """A 600-column layout shaped like encoder_input_v2: 4 horizons x 2 modalities + extras."""
    spec = []
    for h in HORIZONS:
        spec += [(f"collab_{h}", h, vec_dim), (f"content_{h}", h, vec_dim), (f"counts_{h}", h, 2)]
    spec += [("stats", "stats", 3), ("demo", "onboarding", 11)]
    spec += [("onboard_collab", "onboarding", onboard_dim)]
    spec += [("onboard_content", "onboarding", onboard_dim), ("onboard_n", "onboarding", 2)]
    blocks, start = [], 0
    for name, group, width in spec:
        blocks.append(InputBlock(name, start, start + width, group))
        start += width
    return blocks


def random_input(n: int, blocks: list[InputBlock], seed: int = 0) -> np.ndarray:
    """Gaussian features with whole groups missing (NaN) at MISSING rates."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, blocks[-1].stop), dtype=np.float32)
    for group, p in MISSING.items():
        rows = rng.random(n) < p
        for b in (b for b in blocks if b.group == group):
            x[np.ix_(rows, np.arange(b.start, b.stop))] = np.nan
    return x


def random_items(n: int, vocab: int, per_user: int = 20, seed: int = 0) -> sp.csr_matrix | None:
    """Item decoder targets: per_user distinct items each, Zipf-like popularity."""
    if vocab == 0:
        return None
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    cols = rng.choice(vocab, size=(n, per_user), p=p / p.sum())
    m = sp.csr_matrix(
        (np.ones(cols.size, np.float32), (np.repeat(np.arange(n), per_user), cols.ravel())),
        shape=(n, vocab),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def random_tags(n: int, n_tags: int, per_user: int = 5, seed: int = 1) -> sp.csr_matrix | None:
    """Tag decoder targets: shares over per_user Zipf-drawn tags each (rows sum to 1)."""
    m = random_items(n, n_tags, per_user, seed)
    if m is None:
        return None
    return sp.csr_matrix(sp.diags(1.0 / np.asarray(m.sum(axis=1)).ravel()) @ m, dtype=np.float32)


def bench_one(
    x: np.ndarray,
    blocks: list[InputBlock],
    hidden: int,
    train_cfg: TrainConfig,
    items=None,
    tags=None,
) -> None:
    """Train for train_cfg.epochs epochs and embed every user once; print the rates."""
    vocab = 0 if items is None else items.shape[1]
    cfg = AutoencoderConfig(input_dim=x.shape[1], hidden_dim=hidden)
    result = train_autoencoder(x, blocks, cfg, train_cfg, items=items, tags=tags)
    m = result.metrics
    tag = f"hidden={hidden} batch={m['batch_size']} bf16={m['bf16']} item_vocab={vocab}"
    tag += f" item_sample={train_cfg.item_sample}" if vocab else ""
    tag += f" tag_vocab={m['tag_vocab']}"
    per_epoch = ", ".join(f"{u:,.0f}" for u in result.metrics["users_per_s"])
    print(f"{tag}: train users/s per epoch: {per_epoch}  (load {os.getloadavg()[0]:.2f})")
    print(f"{tag}: {result.metrics['seconds']:.1f} s for {result.metrics['epochs_run']} epochs")
    encoder = UserEncoder.from_result(result)
    encoder.embed(x[:10_000])  # warm-up
    t0 = time.perf_counter()
    encoder.embed(x)
    print(f"{tag}: embed users/s: {len(x) / (time.perf_counter() - t0):,.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256])
    ap.add_argument("--bf16", choices=["auto", "off", "on", "both"], default="auto")
    ap.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    ap.add_argument("--max-batch-size", type=int, default=TrainConfig().max_batch_size)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--items",
        type=int,
        nargs="+",
        default=[TrainConfig().item_vocab],
        help="item decoder vocabularies (0 = no item target)",
    )
    ap.add_argument(
        "--item-sample",
        type=int,
        nargs="+",
        default=[TrainConfig().item_sample],
        help="candidate items per step for the item softmax (0 = exact)",
    )
    ap.add_argument(
        "--tags",
        type=int,
        nargs="+",
        default=[TrainConfig().tag_vocab],
        help="tag decoder vocabularies (0 = no tag target)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blocks = bench_layout()
    x = random_input(args.users, blocks)
    print(f"cpu_count={os.cpu_count()} torch_threads={torch.get_num_threads()} x={x.shape}")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other jobs slow every figure)")
    base = TrainConfig(
        epochs=args.epochs,
        patience=args.epochs,
        batch_size=args.batch_size,
        max_batch_size=args.max_batch_size,
    )
    choices = {"auto": [None], "off": [False], "on": [True], "both": [False, True]}
    for bf16 in choices[args.bf16]:
        for hidden in args.hidden:
            for vocab in args.items:
                items = random_items(len(x), vocab)
                for sample in args.item_sample if vocab else [0]:
                    for n_tags in args.tags:
                        cfg = dataclasses.replace(base, bf16=bf16, item_sample=sample)
                        bench_one(x, blocks, hidden, cfg, items, random_tags(len(x), n_tags))
    print("train config:", dataclasses.asdict(base))


if __name__ == "__main__":
    main()
