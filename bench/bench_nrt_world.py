"""Shared setup of the NRT benchmarks: a synthetic workspace run through the whole pipeline
(ingest -> encoders -> snapshot -> train -> embed -> promote), built once and reused.

Run directly to build it: .venv/bin/python bench/bench_nrt_world.py [--workspace DIR] [--users N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from userrep.settings import Settings

DEFAULT_WORKSPACE = Path(os.environ.get("TMPDIR", "/tmp")) / "userrep-bench-nrt"
MARKER = "bench_world.json"


def build_world(workspace: Path, n_users: int = 20_000, epochs: int = 5) -> tuple[Settings, dict]:
    """The bench workspace (built when missing or of another size); returns (settings, info)."""
    settings = Settings(workspace=workspace)
    marker = workspace / MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["users"] == n_users:
            settings.export_env()
            return settings, info
    return settings, _build(settings, n_users, epochs)


def _build(settings: Settings, n_users: int, epochs: int) -> dict:
    from representation import batches, build, pipeline
    from representation.train import TrainConfig
    from userrep import ingest
    from userrep.data import synthetic
    from userrep.db import session_scope, upgrade
    from userrep.feast_store import apply_repo

    t0 = time.perf_counter()
    settings.paths.ensure()
    settings.export_env()
    upgrade(settings.metadata_db_url)
    apply_repo(settings)
    data = synthetic.generate(synthetic.SyntheticConfig(n_users=n_users, n_items=1500, seed=3))
    ingest.ingest_event_frame(settings.paths, data.events, "synthetic")
    ingest.ingest_users(settings.paths, data.users)
    ingest.ingest_items(settings.paths, data.items)
    build.build_encoders(settings)
    end = build.last_event_time(settings.paths).ceil("D")
    build.build_snapshot(settings, end)
    batch_id = pipeline.train_batch(settings, end, None, TrainConfig(epochs=epochs, seed=0))
    pipeline.embed_batch(settings, batch_id, end)
    with session_scope(settings.metadata_db_url) as session:
        batches.promote(session, batch_id, force_reason="NRT benchmark world")
    info = {
        "users": n_users,
        "items": 1500,
        "events": len(data.events),
        "batch_id": batch_id,
        "end": end.isoformat(),
        "build_s": round(time.perf_counter() - t0, 1),
    }
    (settings.workspace / MARKER).write_text(json.dumps(info))
    return info


def drop_project(settings: Settings) -> None:
    """Remove one Feast project's online rows and registry entries, nothing else.
    (FeatureStore.teardown() would delete the whole SQLite online store and every project.)"""
    import sqlite3

    import redis

    from userrep.feast_store import feature_store

    store = feature_store(settings)
    views = [v.name for v in store.list_feature_views()]
    if settings.online_store == "redis":
        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(f"*{settings.project}*", count=1000))
        for lo in range(0, len(keys), 1000):
            client.delete(*keys[lo : lo + 1000])
    else:
        with sqlite3.connect(settings.paths.feast / "online.db") as conn:
            for view in views:
                conn.execute(f'DROP TABLE IF EXISTS "{settings.project}_{view}"')
    store.registry.delete_project(settings.project)


def play_events(
    n: int, n_users: int, n_items: int, start: pd.Timestamp, step_s: float, seed: int, tag: str
) -> list[dict]:
    """n plays of random users / items, event i at start + i * step_s (strictly increasing)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = rng.integers(0, n_items, n)
    return [
        {
            "event_id": f"{tag}-{i}",
            "user_id": int(users[i]),
            "item_id": int(items[i]),
            "ts": (start + pd.Timedelta(seconds=i * step_s)).isoformat(),
            "weight": 1.0,
        }
        for i in range(n)
    ]


def percentiles(x: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(x, np.float64)
    if not len(a):
        return {}
    p = np.percentile(a, [50, 90, 99])
    return {
        "p50": round(p[0], 2),
        "p90": round(p[1], 2),
        "p99": round(p[2], 2),
        "max": round(float(a.max()), 2),
        "n": len(a),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE)
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    _, info = build_world(args.workspace, args.users)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
