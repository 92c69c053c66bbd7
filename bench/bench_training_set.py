"""Benchmark: downstream training-set generation through Feast (duckdb offline store).

    .venv/bin/python bench/bench_training_set.py [--rows 1000000] [--users 200000] [--dim 64]
        [--items 0] [--matrix] [--validate]

A temporary workspace gets a synthetic z_u batch (two snapshots of --users x --dim, a week
apart), published and marked ready; --rows label rows (1% unknown users, times spread over
three weeks) are joined point-in-time by build_training_set. With --items N, N item vectors
(2 x 64-d) are published and every row also gets item features. Prints seconds, rows/s, peak
RSS and the CPU count.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from userrep import columns as C
from userrep.arrow import list_array
from userrep.settings import Settings

T0 = pd.Timestamp("2024-06-01", tz="UTC")
BATCH = "b-bench"


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def publish_batch(settings: Settings, n_users: int, dim: int, seed: int) -> None:
    """Register a batch and write two z_u snapshots (T0, T0 + 7d), then mark it ready."""
    from representation import batches
    from representation.pipeline import embedding_table
    from userrep.db import session_scope

    with session_scope(settings.metadata_db_url) as session:
        batches.create_batch(
            session,
            batch_id=BATCH,
            as_of=T0.to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=dim,
            artifact_path="-",
            artifact_sha256="-",
            metrics={},
        )
    rng = np.random.default_rng(seed)
    for week in range(2):
        t = T0 + pd.Timedelta(days=7 * week)
        z = rng.standard_normal((n_users, dim), dtype=np.float32)
        table = embedding_table(np.arange(n_users), z, BATCH, t)
        pq.write_table(table, settings.paths.user_embedding / f"{BATCH}__{t:%Y%m%dT%H%M%S}.parquet")
    with session_scope(settings.metadata_db_url) as session:
        batches.mark_ready(session, BATCH, n_users)


def publish_items(settings: Settings, n_items: int, seed: int) -> None:
    """One item_vectors file (collab, content: 64-d each) as of T0."""
    rng = np.random.default_rng(seed)
    now = pd.Timestamp.now(tz="UTC")
    table = pa.table(
        {
            C.ITEM_ID: np.arange(n_items, dtype=np.int64),
            "collab": list_array(rng.standard_normal((n_items, 64), dtype=np.float32)),
            "content": list_array(rng.standard_normal((n_items, 64), dtype=np.float32)),
            "encoder_version": ["enc-bench"] * n_items,
            C.EVENT_TIMESTAMP: pa.array([T0] * n_items, pa.timestamp("us", "UTC")),
            C.CREATED: pa.array([now] * n_items, pa.timestamp("us", "UTC")),
        }
    )
    pq.write_table(table, settings.paths.item_vectors / "enc-bench.parquet")


def label_rows(n: int, n_users: int, n_items: int, seed: int) -> pd.DataFrame:
    """Random label rows: 1% unknown users, times in [T0 - 1d, T0 + 20d)."""
    rng = np.random.default_rng(seed + 1)
    users = rng.integers(0, n_users, n)
    users[rng.random(n) < 0.01] += 10**9  # unknown users: must come back with null z_u
    seconds = rng.integers(-86_400, 20 * 86_400, n)
    labels = pd.DataFrame(
        {
            C.USER_ID: users.astype(np.int64),
            C.EVENT_TIMESTAMP: T0 + pd.to_timedelta(seconds, unit="s"),
            "label": rng.integers(0, 2, n).astype(np.int8),
        }
    )
    if n_items:
        labels[C.ITEM_ID] = rng.integers(0, n_items, n).astype(np.int64)
    return labels


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--items", type=int, default=0, help="also join N item vectors")
    parser.add_argument("--matrix", action="store_true", help="also time the float matrix")
    parser.add_argument("--validate", action="store_true", help="also run the GX gate")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def extras(frame: pd.DataFrame, args: argparse.Namespace) -> None:
    """The optional steps after the join: float matrix, the training-set validation suite."""
    from validation.gate import validate_training_set

    if args.matrix:
        from downstream.matrix import stack_vectors

        t = time.perf_counter()
        x = stack_vectors(frame[C.Z_U], args.dim)
        print(f"z_u matrix {x.shape}: {time.perf_counter() - t:.1f} s")
    if args.validate:
        t = time.perf_counter()
        # no settings: the run is timed, not recorded; the planted 1 % unknown users (null
        # z_u) fail the null expectation, as they should
        outcome = validate_training_set(
            frame, latent_dim=args.dim, batch_id=BATCH, raise_on_failure=False
        )
        print(
            f"validation gate: {time.perf_counter() - t:.1f} s, success {outcome.success}, "
            f"failed: {outcome.failed}, warnings: {outcome.warnings}"
        )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)

    from downstream.training_set import build_training_set
    from userrep.db import upgrade
    from userrep.feast_store import apply_repo

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(workspace=Path(tmp) / "ws")
        settings.paths.ensure()
        upgrade(settings.metadata_db_url)
        store = apply_repo(settings)
        t = time.perf_counter()
        publish_batch(settings, args.users, args.dim, args.seed)
        if args.items:
            publish_items(settings, args.items, args.seed)
        labels = label_rows(args.rows, args.users, args.items, args.seed)
        print(
            f"setup: {time.perf_counter() - t:.1f} s ({args.users:,} users x {args.dim}-d, "
            f"2 snapshots; {args.rows:,} label rows; {args.items:,} items)"
        )
        rss_before, _ = rss_mb()
        t = time.perf_counter()
        frame = build_training_set(settings, labels, BATCH, "z_u", store=store, validate=False)
        seconds = time.perf_counter() - t
        _, peak = rss_mb()
        assert len(frame) == args.rows
        print(
            f"training set: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s; "
            f"nulls {frame.attrs['nulls']}"
        )
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"RSS before {rss_before:,.0f} MB, peak {peak:,.0f} MB (maxrss {maxrss:,.0f} MB)")
        extras(frame, args)
    print(f"os.cpu_count() = {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
