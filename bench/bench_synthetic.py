"""Benchmark: stream a large synthetic world through iter_event_chunks; prints events/s and RSS.

Run: .venv/bin/python bench/bench_synthetic.py [--users 200000] [--events 50] [--chunk 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

from userrep.data.synthetic import SyntheticConfig, iter_event_chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--events", type=float, default=50.0, help="mean events per user")
    parser.add_argument("--chunk", type=int, default=100_000, help="users per chunk")
    args = parser.parse_args()
    cfg = SyntheticConfig(
        n_users=args.users,
        n_items=50_000,
        n_artists=5_000,
        n_clusters=16,
        events_per_user=args.events,
    )
    t0 = time.perf_counter()
    n_events = n_chunks = 0
    for chunk in iter_event_chunks(cfg, users_per_chunk=args.chunk):
        n_events += len(chunk)
        n_chunks += 1
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"python {sys.version.split()[0]}, cpu_count={os.cpu_count()}")
    print(
        f"{cfg.n_users:,} users, {n_events:,} events in {n_chunks} chunks of {args.chunk:,} users"
    )
    print(f"{seconds:.1f} s, {n_events / seconds:,.0f} events/s, peak RSS {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
