"""Benchmark: reading z_u in-process, the project's API against plain Feast and the raw store.

Builds a small synthetic workspace once (events as parquet, random item vectors, a 2-epoch
autoencoder, every user embedded online, the batch promoted), then measures in one run, per
online store and for 1 and 100 users:

- `readme`:    get_user_embeddings(settings, ids, batch_id), as the README shows it (no store)
- `store`:     the same with the FeatureStore passed
- `feast`:     store.get_online_features(...).to_dict() on that store, same rows (the anchor:
               to_dict is the least a caller does to get the values out)
- `feast-raw`: store.get_online_features(...) alone (the proto, not converted)
- `floor`:     the online store's own read of the same rows with the keys precomputed
               (SQLite: Feast's SELECT; Redis: the HMGETs of Feast's pipeline)

Calls alternate between the methods in blocks of 100 so every method sees the same load; p50
and p99 per repetition, medians over --reps. Ratios are to `feast` and to `floor`.

Run: .venv/bin/python bench/bench_serving.py [--online-store sqlite redis] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from userrep import columns as C  # noqa: E402
from userrep.settings import Settings  # noqa: E402

FEATURE = f"{C.USER_EMBEDDING_VIEW}:{C.Z_U}"


def machine() -> dict:
    """CPU model, cores and the 1-minute load average, printed beside every figure."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load": round(os.getloadavg()[0], 2)}


def machine_line() -> str:
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores, load average {m['load']:.2f}"


def build_world(workspace: Path, online_store: str = "sqlite", n_users: int = 2_000) -> tuple:
    """A promoted batch with every user online; returns (settings, batch_id, user ids)."""
    import pyarrow.parquet as pq
    from bench_pipeline import make_world

    from representation import batches, build, pipeline
    from representation.train import TrainConfig
    from userrep.db import session_scope, upgrade
    from userrep.feast_store import apply_repo

    project = "userrep" if online_store == "sqlite" else f"bench_{uuid.uuid4().hex[:10]}"
    settings = Settings(workspace=workspace, online_store=online_store, project=project)
    settings.paths.ensure()
    settings.export_env()
    upgrade(settings.metadata_db_url)
    apply_repo(settings)
    _, vecs, as_of, users = make_world(settings, n_users, 20.0)
    build.build_snapshot(settings, as_of, vecs, users)
    batch_id = pipeline.train_batch(
        settings, as_of, None, TrainConfig(epochs=2, patience=2, seed=0)
    )
    report = pipeline.embed_batch(settings, batch_id, as_of)
    with session_scope(settings.metadata_db_url) as session:
        batches.promote(session, batch_id, force_reason="serving benchmark world")
    ids = pq.read_table(report.offline_file, columns=[C.USER_ID])[C.USER_ID].to_numpy()
    return settings, batch_id, ids


def drop_world(settings: Settings) -> None:
    """Remove a Redis world's keys (a SQLite world goes with its directory)."""
    if settings.online_store == "redis":
        from bench_nrt_world import drop_project

        drop_project(settings)


def _entity_blobs(raw_keys, strip: int = 0) -> dict[tuple[int, str], bytes]:
    """(user_id, batch_id) -> the stored key, read back from the store's own keys."""
    from feast.infra.key_encoding_utils import deserialize_entity_key

    out = {}
    for blob in raw_keys:
        key = deserialize_entity_key(blob[: len(blob) - strip], entity_key_serialization_version=3)
        vals = dict(zip(key.join_keys, key.entity_values, strict=True))
        if C.USER_ID in vals and C.BATCH_ID in vals:
            out[(vals[C.USER_ID].int64_val, vals[C.BATCH_ID].string_val)] = blob
    return out


def sqlite_floor(settings: Settings, batch_id: str, users: list[int]) -> Callable[[], object]:
    """Feast's own SELECT on the online store file, keys precomputed."""
    import sqlite3

    conn = sqlite3.connect(settings.paths.feast / "online.db", check_same_thread=False)
    table = f'"{settings.project}_{C.USER_EMBEDDING_VIEW}"'
    blobs = _entity_blobs(r[0] for r in conn.execute(f"SELECT DISTINCT entity_key FROM {table}"))
    keys = [blobs[(u, batch_id)] for u in users]
    sql = (
        f"SELECT entity_key, feature_name, value, event_ts FROM {table} "
        f"WHERE entity_key IN ({','.join('?' * len(keys))}) ORDER BY entity_key"
    )

    def read():
        rows = conn.execute(sql, keys).fetchall()
        assert len(rows) == len(keys)
        return rows

    return read


def redis_floor(settings: Settings, batch_id: str, users: list[int]) -> Callable[[], object]:
    """The HMGETs Feast sends for these rows (one pipeline), keys and fields precomputed."""
    import redis

    host, port = settings.redis_url.split(",")[0].split(":")
    client = redis.Redis(host=host, port=int(port))
    suffix = settings.project.encode()
    blobs = _entity_blobs(
        (k for k in client.scan_iter(match=b"*" + suffix, count=1000)), strip=len(suffix)
    )
    keys = [blobs[(u, batch_id)] for u in users]
    fields = sorted(client.hkeys(keys[0]))

    def read():
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, fields)
        rows = pipe.execute()
        assert len(rows) == len(keys)
        return rows

    return read


def methods(settings: Settings, batch_id: str, users: list[int]) -> dict[str, Callable]:
    from representation.serving import get_user_embeddings
    from userrep.feast_store import store as workspace_store

    store = workspace_store(settings)
    rows = [{C.USER_ID: u, C.BATCH_ID: batch_id} for u in users]
    floor = sqlite_floor if settings.online_store == "sqlite" else redis_floor
    found = get_user_embeddings(settings, users, batch_id)[1]
    assert not np.isnan(found).any(), "every benchmark user has a vector"
    return {
        "readme": lambda: get_user_embeddings(settings, users, batch_id),
        "store": lambda: get_user_embeddings(settings, users, batch_id, store=store),
        "feast": lambda: store.get_online_features(features=[FEATURE], entity_rows=rows).to_dict(),
        "feast-raw": lambda: store.get_online_features(features=[FEATURE], entity_rows=rows),
        "floor": floor(settings, batch_id, users),
    }


def sample(fns: dict[str, Callable], calls: int, block: int = 100, warmup: int = 200) -> dict:
    """Latencies (ms) per method; methods alternate in blocks, their order rotating."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    for b in range(max(1, calls // block)):
        for name in names[b % len(names) :] + names[: b % len(names)]:
            fn, dst = fns[name], out[name]
            for _ in range(block):
                t = clock()
                fn()
                dst.append((clock() - t) / 1e6)
    return {n: np.asarray(v) for n, v in out.items()}


def measure(settings: Settings, batch_id: str, ids, sizes, calls: int, reps: int) -> list[dict]:
    """One row per (store, users, method): medians over reps of p50 / p99 / max (ms)."""
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        users = [int(u) for u in rng.choice(ids, size=n, replace=False)]
        fns = methods(settings, batch_id, users)
        per_rep = []
        for _ in range(reps):
            got = sample(fns, calls)
            per_rep.append(
                {
                    name: (np.percentile(v, 50), np.percentile(v, 99), v.max())
                    for name, v in got.items()
                }
            )
        load = os.getloadavg()[0]
        for name in fns:
            p50, p99, worst = (float(np.median([r[name][i] for r in per_rep])) for i in range(3))
            rows.append(
                {
                    "store": settings.online_store,
                    "users": n,
                    "method": name,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "max_ms": worst,
                    "load": round(load, 2),
                }
            )
        anchor = {
            k: next(r for r in rows[-len(fns) :] if r["method"] == k) for k in ("feast", "floor")
        }
        for r in rows[-len(fns) :]:
            for q in ("p50", "p99"):
                r[f"{q}_vs_feast"] = r[f"{q}_ms"] / anchor["feast"][f"{q}_ms"]
                r[f"{q}_vs_floor"] = r[f"{q}_ms"] / anchor["floor"][f"{q}_ms"]
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'store':7} {'users':>5} {'method':10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'p50/feast':>9} {'p99/feast':>9} {'p50/floor':>9} {'p99/floor':>9} {'load':>5}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['store']:7} {r['users']:>5} {r['method']:10} {r['p50_ms']:8.3f} "
            f"{r['p99_ms']:8.3f} {r['max_ms']:8.2f} {r['p50_vs_feast']:9.2f} "
            f"{r['p99_vs_feast']:9.2f} {r['p50_vs_floor']:9.1f} {r['p99_vs_floor']:9.1f} "
            f"{r['load']:5.2f}"
        )
    return "\n".join(lines)


def run(stores, sizes=(1, 100), calls: int = 2000, reps: int = 3, n_users: int = 2000) -> dict:
    """Build one world per store, measure, clean up; returns the rows and the world's size."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for online_store in stores:
            t0 = time.perf_counter()
            settings, batch_id, ids = build_world(Path(tmp) / online_store, online_store, n_users)
            print(
                f"{online_store} world: {len(ids):,} users, batch {batch_id}, "
                f"built in {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
            try:
                rows += measure(settings, batch_id, ids, sizes, calls, reps)
            finally:
                drop_world(settings)
    return {"rows": rows, "users": n_users, "calls": calls, "reps": reps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--online-store", nargs="+", default=["sqlite"], choices=["sqlite", "redis"]
    )
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per method and rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--users", type=int, default=2000, help="users in the world")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"machine: {machine_line()}", flush=True)
    result = run(args.online_store, calls=args.calls, reps=args.reps, n_users=args.users)
    result["machine"] = machine()
    print(table(result["rows"]))
    print(f"machine: {machine_line()}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
