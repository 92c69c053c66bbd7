"""Benchmark: the batch jobs on the Ray engine with 1 and 2 workers (a local Ray).

Writes a synthetic world (default 200k users x 20 events) into a temp workspace with random item
vectors, trains a batch locally (a few epochs), then for each worker count runs on a fresh Ray:
feature snapshot build, batch embedding (offline) and the online load of z_u (Redis when it
answers on 127.0.0.1:6379, else SQLite, which takes one writer). Prints users/s (wall clock, incl.
the driver's publish step), per-core users/s (users / summed task seconds: what one core does),
peak RSS per worker (largest task process; includes ~0.5 GB of imports: torch, duckdb, feast)
and the machine size. Workers are started and warmed before each job is timed.

The train job is `userrep train` on Ray Train (DDP, one user shard per worker, each worker reading
its own user range of the snapshot; the default TrainConfig with its item decoder): training
users/s per epoch (median over epochs, epoch wall clock on rank 0, the ranks' gradient
all-reduces included), the job's wall clock (incl. starting the worker group, about 10 to 30 s),
the largest worker's peak RSS and the driver's resident memory during the job (sampled).

Run: .venv/bin/python bench/bench_ray.py [--users 200000] [--events 20] [--shards 8] [--workers 1,2]
     memory bound: --users 1000000 --events 10 --epochs 1 --workers 1 --shards 8,32 --jobs features,embed
     training only: --jobs train --epochs 2
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import make_world, rss_mib  # noqa: E402

from userrep.db import upgrade  # noqa: E402
from userrep.settings import Settings  # noqa: E402


def redis_answers(url: str = "127.0.0.1:6379") -> bool:
    try:
        import redis

        host, port = url.split(",")[0].split(":")
        return bool(redis.Redis(host, int(port), socket_timeout=1).ping())
    except Exception:
        return False


def report(job: str, workers: int, n_users: int, wall: float, engine) -> dict:
    parts, publish = engine.last_parts, engine.last_publish_s
    busy = sum(p.seconds for p in parts)
    row = {
        "job": job,
        "workers": workers,
        "users": n_users,
        "wall_s": wall,
        "users_per_s": n_users / wall,
        "per_core_users_per_s": n_users / busy if busy else float("nan"),
        "peak_worker_mib": max(p.peak_rss_mib for p in parts),
        "shards": len(parts),
        "publish_s": publish,
    }
    print(
        f"  {job:<16} {workers} worker(s): {n_users:,} users in {wall:6.1f}s = "
        f"{row['users_per_s']:>9,.0f} users/s; per core {row['per_core_users_per_s']:>9,.0f} users/s; "
        f"peak RSS per worker {row['peak_worker_mib']:,.0f} MiB ({len(parts)} shards); "
        f"driver publish {publish:.1f}s",
        flush=True,
    )
    return row


def shard_scan_seconds(settings: Settings, as_of: pd.Timestamp, n_shards: int) -> float:
    """The part of a feature shard that grows with the shard count: reading every event."""
    import duckdb

    from representation.features import events_source
    from representation.scale.shards import event_user_ranges

    lo, hi = event_user_ranges(settings.paths, n_shards)[0]  # a shard's filter: its id range
    con = duckdb.connect(config={"threads": 1})
    sql = f"SELECT COUNT(*) FROM {events_source(settings.paths)} WHERE ts <= $t AND user_id >= {lo} AND user_id < {hi}"
    t0 = time.perf_counter()
    con.execute(sql, {"t": as_of.to_pydatetime()}).fetchone()
    return time.perf_counter() - t0


def warm_workers(workers: int) -> None:
    """Start every worker and import the job code (torch, duckdb, feast) before timing: a
    long-lived cluster pays these imports once, not per job."""
    import ray

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import feast  # noqa: F401

        import representation.pipeline  # noqa: F401
        import representation.scale.shards  # noqa: F401

        time.sleep(1.0)  # hold the CPU so each call lands on its own worker
        return os.getpid()

    ray.get([warm.remote() for _ in range(workers)])


class DriverRss:
    """The driver's resident memory while a job runs, sampled every 50 ms (its lifetime peak,
    ru_maxrss, already holds the local snapshot and training of the set-up)."""

    def __init__(self) -> None:
        import threading

        self.start = self.peak = current_rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, current_rss_mib())

    def __enter__(self) -> DriverRss:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def train_report(workers: int, wall: float, result, driver: DriverRss, x_mib: float) -> dict:
    m = result.metrics
    per_epoch = float(np.median(m["users_per_s"]))
    row = {
        "job": "train",
        "workers": workers,
        "users": m["n_train"],
        "wall_s": wall,
        "users_per_s": per_epoch,
        "peak_worker_mib": m["worker_peak_rss_mib"],
        "driver_rss_start_mib": driver.start,
        "driver_rss_peak_mib": driver.peak,
    }
    print(
        f"  {'train':<16} {workers} worker(s): {m['n_train']:,} training users x "
        f"{m['epochs_run']} epochs in {wall:6.1f}s (incl. worker group start) = "
        f"{per_epoch:>9,.0f} users/s per epoch (epochs: "
        f"{', '.join(f'{u:,.0f}' for u in m['users_per_s'])}); "
        f"peak RSS per worker {m['worker_peak_rss_mib']:,.0f} MiB; driver RSS "
        f"{driver.start:,.0f} -> peak {driver.peak:,.0f} MiB during the job "
        f"(the whole training matrix: {x_mib:,.0f} MiB)",
        flush=True,
    )
    return row


def training_inputs(settings: Settings, as_of: pd.Timestamp, vecs, epochs: int):
    """What `userrep train` hands the engine: the snapshot by reference (each worker reads
    its own user range), the model config and the TrainConfig (default, with its item decoder)."""
    from representation.inputs import layout_for
    from representation.model import AutoencoderConfig
    from representation.train import TrainConfig
    from representation.trainset import TrainingSet

    layout = layout_for(settings, vecs.collab.shape[1], vecs.content.shape[1])
    train_cfg = TrainConfig(epochs=epochs, patience=epochs, seed=settings.seed)
    data = TrainingSet(settings.paths, as_of, layout, train_cfg.item_vocab)
    return data, AutoencoderConfig(input_dim=layout.dim), train_cfg


def run_jobs(
    settings: Settings,
    workers: int,
    batch_id: str,
    as_of: pd.Timestamp,
    vecs,
    jobs: list[str],
    train_inputs: tuple | None = None,
) -> list:
    """Each job on a fresh local Ray of `workers` CPUs: worker peaks are per job."""
    import ray

    from representation.scale.ray_engine import RayEngine

    rows = []
    for job in jobs:
        ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
        try:
            if job == "train":  # Ray Train starts its own worker group: nothing to warm
                trainer = settings.model_copy(update={"ray_train_workers": workers})
                data, cfg, train_cfg = train_inputs
                t0 = time.perf_counter()
                with DriverRss() as driver:
                    result = RayEngine(trainer).train_snapshot(data, cfg, train_cfg)
                n = result.metrics["n_train"] + result.metrics["n_val"]
                x_mib = n * cfg.input_dim * 4 / 2**20
                rows.append(train_report(workers, time.perf_counter() - t0, result, driver, x_mib))
                continue
            warm_workers(workers)
            engine = RayEngine(settings)
            t0 = time.perf_counter()
            if job == "features":
                n = engine.write_history_snapshot(vecs, as_of, settings.horizon_list)
            elif job == "embed":
                n = engine.embed_batch(batch_id, as_of, online=False).n_users
            else:
                path = settings.paths.user_embedding / f"{batch_id}__{as_of:%Y%m%dT%H%M%S}.parquet"
                n = engine.load_online(path)
            rows.append(report(job, workers, n, time.perf_counter() - t0, engine))
        finally:
            ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--events", type=float, default=20.0)
    parser.add_argument("--shards", default="8", help="shards per job; a list runs each")
    parser.add_argument("--jobs", default="features,embed,online load,train")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"python {sys.version.split()[0]}, cpu_count={os.cpu_count()}, memory {mem:.0f} GiB")
    print(f"load average {os.getloadavg()[0]:.2f} (other jobs share these cores)")
    online = "redis" if redis_answers() else "sqlite"
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            workspace=Path(tmp) / "ws",
            engine="ray",
            online_store=online,
            project=f"bench_ray_{uuid.uuid4().hex[:8]}",
        )
        try:
            run(settings, args)
        finally:
            if online == "redis":
                from userrep.feast_store import feature_store

                feature_store(settings).teardown()


def run(settings: Settings, args: argparse.Namespace) -> None:
    from representation import build, pipeline
    from representation.train import TrainConfig
    from userrep.feast_store import apply_repo

    settings.paths.ensure()
    settings.export_env()
    upgrade(settings.metadata_db_url)
    apply_repo(settings)
    n_events, vecs, as_of, users = make_world(settings, args.users, args.events)
    local = settings.model_copy(update={"engine": "local"})
    t0 = time.perf_counter()
    build.build_snapshot(local, as_of, vecs, users)  # onboarding + history, local engine
    print(
        f"world: {n_events:,} events, {args.users:,} users; local snapshot {time.perf_counter() - t0:.1f}s"
    )
    rows, jobs = [], args.jobs.split(",")
    batch_id = ""
    if {"embed", "online load"} & set(jobs):
        batch_id = pipeline.train_batch(
            local, as_of, None, TrainConfig(epochs=args.epochs, patience=args.epochs)
        )
        print(
            f"trained {batch_id} locally ({args.epochs} epochs); driver peak RSS {rss_mib():,.0f} MiB"
        )
    train_inputs = training_inputs(settings, as_of, vecs, args.epochs) if "train" in jobs else None
    print(f"online store: {settings.online_store}; {args.shards} shards per job")
    scan_s = shard_scan_seconds(settings, as_of, 8)
    print(
        f"event scan of one feature shard (1 thread; every shard reads all events): {scan_s:.2f}s "
        f"= {n_events / scan_s:,.0f} events/s"
    )
    for n_shards in (int(s) for s in args.shards.split(",")):
        sharded = settings.model_copy(update={"ray_shards": n_shards})
        for workers in (int(w) for w in args.workers.split(",")):
            rows += run_jobs(sharded, workers, batch_id, as_of, vecs, jobs, train_inputs)
    print(f"driver peak RSS {rss_mib():,.0f} MiB (includes the local snapshot and training above)")
    by = {(r["job"], r["workers"]): r for r in rows}
    for job in jobs:
        if (job, 1) in by and (job, 2) in by:
            speedup = by[(job, 2)]["users_per_s"] / by[(job, 1)]["users_per_s"]
            print(f"  scaling {job}: 1 -> 2 workers x{speedup:.2f}")


if __name__ == "__main__":
    main()
