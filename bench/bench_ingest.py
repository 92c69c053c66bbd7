"""Benchmark `userrep.ingest.ingest_events` on a synthetic event file (CSV and parquet).

Run: .venv/bin/python bench/bench_ingest.py [--rows 10000000]
Each case runs in a fresh interpreter so its peak RSS is its own. Prints rows/s per case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CASES = (
    ("csv, epoch-second ts, empty workspace", "csv", "a"),
    ("csv, ISO-8601 ts, empty workspace", "csv_iso", "c"),
    ("parquet, empty workspace", "parquet", "b"),
    ("parquet again (all duplicates vs N existing)", "parquet", "b"),
)


def make_events(rows: int, seed: int = 0) -> pa.Table:
    """Random plays: 1M users, 200k items, one year of epoch-second timestamps."""
    rng = np.random.default_rng(seed)
    start = 1_700_000_000
    return pa.table(
        {
            "user_id": rng.integers(0, 1_000_000, rows),
            "item_id": rng.integers(0, 200_000, rows),
            "ts": rng.integers(start, start + 365 * 86_400, rows),
            "ms_played": rng.integers(1_000, 300_000, rows).astype(np.float64),
            "event_type": np.where(rng.random(rows) < 0.9, "play", "skip"),
        }
    )


def run_case(path: Path, workspace: Path) -> None:
    """Child process: one ingest, then a JSON line with figures."""
    from userrep.ingest import ColumnMapping, ingest_events
    from userrep.settings import Settings

    paths = Settings(workspace=workspace).paths.ensure()
    mapping = ColumnMapping(weight="ms_played", event_type="event_type")
    t0 = time.perf_counter()
    report = ingest_events(paths, path, mapping)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "read": report.read,
        "accepted": report.accepted,
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
    }
    sys.stdout.write(json.dumps(figures) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--case-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--case-workspace", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case_file:
        return run_case(args.case_file, args.case_workspace)
    print(f"os.cpu_count() = {os.cpu_count()}, rows = {args.rows:,}")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        t0 = time.perf_counter()
        table = make_events(args.rows)
        files = {k: Path(tmp) / f"{k}.{k.split('_')[0]}" for k in ("csv", "csv_iso", "parquet")}
        pacsv.write_csv(table, files["csv"])
        pq.write_table(table, files["parquet"])
        iso = pc.strftime(pc.cast(table["ts"], pa.timestamp("s", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
        pacsv.write_csv(table.set_column(2, "ts", iso), files["csv_iso"])
        del table, iso
        size = files["csv"].stat().st_size / 2**20
        print(f"generated in {time.perf_counter() - t0:.1f} s (CSV {size:.0f} MiB)")
        for label, kind, ws in CASES:
            cmd = [
                sys.executable,
                __file__,
                "--case-file",
                str(files[kind]),
                "--case-workspace",
                str(Path(tmp) / ws),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            fig = json.loads(out.strip().splitlines()[-1])
            print(
                f"{label:48s} {fig['read'] / fig['seconds']:>10,.0f} rows/s  "
                f"{fig['seconds']:6.1f} s  accepted {fig['accepted']:>10,}  "
                f"peak RSS {fig['peak_rss_mb']:,.0f} MiB"
            )


if __name__ == "__main__":
    main()
