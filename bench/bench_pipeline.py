"""Benchmark: multi-horizon feature build, autoencoder training and batch embedding at scale.

Writes a synthetic world (default 200k users x 50 events = 10M events) into a temp workspace,
builds a feature snapshot with random item vectors (the encoders are benchmarked apart), trains
the autoencoder a few epochs, then embeds and publishes every user (offline parquet; the online
write is timed separately). Prints throughput, peak RSS and the machine size.

Run: .venv/bin/python bench/bench_pipeline.py [--users 200000] [--events 50] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from userrep import columns as C
from userrep.data.synthetic import SyntheticConfig, generate, iter_event_chunks
from userrep.db import session_scope, upgrade
from userrep.settings import Settings


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_world(settings: Settings, cfg: SyntheticConfig) -> int:
    """Synthetic events straight to parquet parts (ingest has its own benchmark)."""
    n = 0
    for k, chunk in enumerate(iter_event_chunks(cfg, users_per_chunk=50_000)):
        pq.write_table(
            pa.Table.from_pandas(chunk, preserve_index=False),
            settings.paths.events / f"part-{k}.parquet",
        )
        n += len(chunk)
    small = generate(
        SyntheticConfig(
            n_users=2,
            n_items=cfg.n_items,
            n_artists=cfg.n_artists,
            n_clusters=cfg.n_clusters,
            seed=cfg.seed,
        )
    )
    small.items.to_parquet(settings.paths.items)
    return n


def random_item_vectors(settings: Settings, n_items: int, dim: int = 64):
    from representation.encoders import EncoderConfig, ItemVectors, save_item_vectors

    rng = np.random.default_rng(0)
    vecs = ItemVectors(
        "enc-bench",
        np.arange(n_items, dtype=np.int64),
        rng.normal(size=(n_items, dim)).astype(np.float32),
        rng.normal(size=(n_items, dim)).astype(np.float32),
        {},
    )
    import pandas as pd

    save_item_vectors(
        settings.paths, vecs, EncoderConfig(), pd.Timestamp("2025-01-01", tz="UTC"), {}
    )
    return vecs


def make_world(settings: Settings, n_users: int, events_per_user: float):
    """The benchmark world: synthetic events as parquet, random item vectors, a users frame.

    Returns (n_events, item vectors, as_of = the day after the last event, users frame)."""
    import pandas as pd

    from representation import build

    cfg = SyntheticConfig(
        n_users=n_users,
        n_items=50_000,
        n_artists=5_000,
        n_clusters=16,
        events_per_user=events_per_user,
    )
    n_events = write_world(settings, cfg)
    vecs = random_item_vectors(settings, cfg.n_items)
    as_of = build.last_event_time(settings.paths).ceil("D")
    users = pd.DataFrame(
        {
            C.USER_ID: np.arange(n_users),
            C.SIGNUP_TS: pd.Timestamp("2024-01-01", tz="UTC"),
            C.AGE: 30.0,
            C.GENDER: "f",
            C.COUNTRY: "SE",
            C.ONBOARDING_ITEMS: [[1, 2]] * n_users,
            C.ONBOARDING_GENRES: [[]] * n_users,
        }
    )
    return n_events, vecs, as_of, users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--events", type=float, default=50.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--online", action="store_true", help="also time the SQLite online write")
    args = parser.parse_args()
    # before torch loads, as the CLI does (userrep/cli/app.py): spin-waiting OpenMP threads are
    # ~10x slower on shared cores
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"python {sys.version.split()[0]}, cpu_count={os.cpu_count()}")
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        run(Settings(workspace=Path(tmp) / "ws"), args)


def run(settings: Settings, args: argparse.Namespace) -> None:
    from representation import build, pipeline
    from representation.train import TrainConfig

    settings.paths.ensure()
    settings.export_env()
    upgrade(settings.metadata_db_url)
    n_events, vecs, as_of, users = make_world(settings, args.users, args.events)
    t0 = time.perf_counter()
    report = build.build_snapshot(settings, as_of, vecs, users)
    dt = time.perf_counter() - t0
    print(
        f"feature build: {n_events:,} events, {report.n_history_users:,} users in {dt:.1f}s "
        f"= {n_events / dt:,.0f} events/s (4 horizons x 2 modalities + onboarding); peak RSS {rss_mib():,.0f} MiB"
    )
    t0 = time.perf_counter()
    batch_id = pipeline.train_batch(
        settings, as_of, None, TrainConfig(epochs=args.epochs, patience=args.epochs)
    )
    dt = time.perf_counter() - t0
    with session_scope(settings.metadata_db_url) as session:
        from representation.batches import get_batch

        metrics = get_batch(session, batch_id).metrics
    print(
        f"train: {args.users:,} users, {args.epochs} epochs in {dt:.1f}s incl. Feast feature read; "
        f"per-epoch throughput {metrics.get('users_per_s', 'n/a')} users/s; peak RSS {rss_mib():,.0f} MiB"
    )
    t0 = time.perf_counter()
    rep = pipeline.embed_batch(settings, batch_id, as_of, online=False)
    dt = time.perf_counter() - t0
    print(
        f"embed + publish offline: {rep.n_users:,} users in {dt:.1f}s = {rep.n_users / dt:,.0f} users/s "
        f"(feature read + encoder + parquet write); peak RSS {rss_mib():,.0f} MiB"
    )
    if args.online:
        from userrep.feast_store import apply_repo

        store = apply_repo(settings)
        table = pq.read_table(rep.offline_file).to_pandas()
        t0 = time.perf_counter()
        store.write_to_online_store(C.USER_EMBEDDING_VIEW, table)
        dt = time.perf_counter() - t0
        print(
            f"online write (sqlite): {len(table):,} users in {dt:.1f}s = {len(table) / dt:,.0f} users/s"
        )


if __name__ == "__main__":
    main()
