"""Benchmark: validate one z_u batch snapshot end to end (load parquet, quality suite on every row,
drift suites vs the batch's previous snapshot) at 1M users x 64 dims by default.

    .venv/bin/python bench/bench_validation.py [--users 1000000] [--dim 64]

Prints wall time per stage and in total, peak RSS and os.cpu_count(). Drift statistics use
samples (per-dimension checks: 200k rows per side; domain classifier: 5k per side; kNN: 2k
shared users), the quality suite reads every row.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from representation import batches
from representation.pipeline import embedding_table
from userrep.db import session_scope, upgrade
from userrep.settings import Settings
from validation.pipeline import validate_batch

log = logging.getLogger("bench")
AS_OF = pd.Timestamp("2024-06-01", tz="UTC")


def planted_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float32 with a few correlated blocks, like an autoencoder's latent space."""
    rng = np.random.default_rng(seed)
    blocks = np.arange(dim) % 4  # (dim,) block of each dimension
    z = 0.7 * rng.standard_normal((n, 4), dtype=np.float32)[:, blocks]
    z += 0.7 * rng.standard_normal((n, dim), dtype=np.float32)
    return z


BATCH_ID = "b20240601-bench"


def setup(root: Path, n: int, dim: int) -> None:
    """A workspace with one ready batch and two snapshots of its z_u, a week apart."""
    settings = Settings(workspace=root)
    settings.paths.ensure()
    upgrade(settings.metadata_db_url)
    batch_id = BATCH_ID
    with session_scope(settings.metadata_db_url) as session:
        batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=AS_OF.to_pydatetime(),
            feature_service="encoder_input_v2",
            latent_dim=dim,
            artifact_path=str(root),
            artifact_sha256="0" * 64,
            metrics={},
        )
        batches.mark_ready(session, batch_id, n)
    ids = np.arange(n, dtype=np.int64)
    earlier = planted_vectors(n, dim, 0)
    later = earlier + 0.2 * planted_vectors(n, dim, 1)  # each user moved a little
    for t, z in ((AS_OF - pd.Timedelta(days=7), earlier), (AS_OF, later)):
        table = embedding_table(ids, z, batch_id, t)
        pq.write_table(
            table, settings.paths.user_embedding / f"{batch_id}__{t:%Y%m%dT%H%M%S}.parquet"
        )
    return settings, batch_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("validation.runner").setLevel(logging.DEBUG)  # per-suite timings
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = Path(tmp) / "ws"
        # Data generation in a child process, so peak RSS below is the validation's own.
        child = multiprocessing.get_context("spawn").Process(
            target=setup, args=(root, args.users, args.dim)
        )
        child.start()
        child.join()
        settings, batch_id = Settings(workspace=root), BATCH_ID
        log.info("setup (data generation, not timed below): %.1f s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        import validation.runner

        validation.runner.gx_module()  # the ~3 s GX import, reported apart
        t_import = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = validate_batch(settings, batch_id, AS_OF, now=AS_OF)
        t_validate = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.info("%s", out.headline())
    print(f"users={args.users:,} dim={args.dim} checks={len(out.checks)} success={out.success}")
    print(f"import great_expectations: {t_import:.1f} s")
    print(
        f"validate_batch (load, quality on all rows, drift vs previous snapshot, report, "
        f"record): {t_validate:.1f} s"
    )
    print(f"peak RSS: {peak_mb:,.0f} MB   os.cpu_count(): {os.cpu_count()}")


if __name__ == "__main__":
    main()
