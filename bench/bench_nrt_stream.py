"""Benchmark: the NRT Redis Streams consumers with micro-batching (loopback Redis).

On the bench world (bench_nrt_world.py: 20k users, ~790k events bootstrapped into the NRT
state), `--partitions` consumer processes (`userrep nrt consume`, users split by user_id % P,
one stream each) run two phases per online store:
  drain  - a backlog of --backlog plays is put on the streams, then consumed: max throughput
           (timed from the first acknowledged entry to the last, so start-up is excluded);
  paced  - a producer process XADDs --rate plays/s for --seconds while the consumers run:
           sustained throughput and the XADD -> applied + written online latency distribution.
Unique stream / group / Feast project names per run; all of them are deleted at the end.

Run: .venv/bin/python bench/bench_nrt_stream.py [--online-store redis sqlite] [--partitions 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nrt_world import (  # noqa: E402
    DEFAULT_WORKSPACE,
    build_world,
    drop_project,
    percentiles,
    play_events,
)

USERREP = os.path.join(os.path.dirname(sys.executable), "userrep")


def produce(stream: str, events: list[dict], rate: float, partitions: int) -> None:
    """Producer process: XADD events at `rate` per second, in 10 ms ticks."""
    import redis

    from nrt.client import send_stream

    client = redis.Redis(host="127.0.0.1", port=6379)
    per_tick, t0 = max(1, int(rate / 100)), time.perf_counter()
    for k, lo in enumerate(range(0, len(events), per_tick)):
        send_stream(client, stream, events[lo : lo + per_tick], per_tick, partitions=partitions)
        delay = t0 + (k + 1) * per_tick / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class Run:
    """One online store: names, consumer processes, progress of the consumer group."""

    def __init__(self, args: argparse.Namespace, store: str, tmp: Path):
        import redis

        self.args, self.store, self.tmp = args, store, tmp
        self.tag = uuid.uuid4().hex[:8]
        self.stream, self.group = f"userrep-bench-{self.tag}:events", f"bench-{self.tag}"
        self.project = f"userrep_bench_{self.tag}"
        self.client = redis.Redis(host="127.0.0.1", port=6379)
        self.streams = (
            [self.stream]
            if args.partitions == 1
            else [f"{self.stream}:p{k}" for k in range(args.partitions)]
        )

    def start_consumers(self, idle_exit: float, phase: str) -> list[subprocess.Popen]:
        env = {
            **os.environ,
            "USERREP_ONLINE_STORE": self.store,
            "USERREP_PROJECT": self.project,
            "USERREP_NRT_REFRESH_SECONDS": "3600",
            "USERREP_NRT_BLOCK_MS": "50",
        }
        procs = []
        for k in range(self.args.partitions):
            cmd = [
                USERREP,
                "-w",
                str(self.args.workspace),
                "nrt",
                "consume",
                "--stream",
                self.stream,
                "--group",
                self.group,
                "--consumer",
                f"{phase}-{k}",
                "--dead-letter-stream",
                f"{self.stream}:dead",
                "--count",
                str(self.args.count),
                "--partition",
                str(k),
                "--partitions",
                str(self.args.partitions),
                "--state-path",
                str(self.tmp / f"state-{self.store}-{k}.db"),
                "--idle-exit",
                str(idle_exit),
                "--metrics-out",
                str(self.tmp / f"metrics-{phase}-{k}.json"),
            ]
            log = (self.tmp / f"consumer-{phase}-{k}.log").open("w")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        return procs

    def acked(self) -> int:
        """Entries acknowledged so far over all partition streams."""
        total = 0
        for s in self.streams:
            if not self.client.exists(s):
                continue
            groups = [g for g in self.client.xinfo_groups(s) if g["name"].decode() == self.group]
            if groups:
                g = groups[0]
                total += (g["entries-read"] or 0) - g["pending"]
        return total

    def cleanup(self) -> None:
        settings, _ = build_world(self.args.workspace, self.args.users)
        settings = settings.model_copy(update={"online_store": self.store, "project": self.project})
        drop_project(settings)
        keys = list(self.client.scan_iter(f"userrep-bench-{self.tag}*", count=1000))
        if keys:
            self.client.delete(*keys)


def drain(run: Run, events: list[dict]) -> dict:
    from nrt.client import send_stream

    send_stream(run.client, run.stream, events, partitions=run.args.partitions)
    procs = run.start_consumers(idle_exit=1.0, phase="drain")
    t_first = None
    while True:
        done = run.acked()
        if t_first is None and done > 0:
            t_first, first = time.perf_counter(), done
        if done >= len(events) or all(p.poll() is not None for p in procs):
            break
        time.sleep(0.02)
    t_last = time.perf_counter()
    for p in procs:
        p.wait()
    n = done - first
    return {
        "events": len(events),
        "timed_events": n,
        "seconds": round(t_last - t_first, 2),
        "events_per_s": round(n / (t_last - t_first)),
    }


def paced(run: Run, events: list[dict]) -> dict:
    procs = run.start_consumers(idle_exit=3.0, phase="paced")

    def ready() -> bool:  # every consumer has started, loaded its state and read once
        names = {
            c["name"].decode()
            for s in run.streams
            for c in run.client.xinfo_consumers(s, run.group)
        }
        return all(f"paced-{k}" in names for k in range(run.args.partitions))

    while not ready():
        time.sleep(0.2)
    time.sleep(0.5)
    args = run.args
    producer = mp.get_context("fork").Process(
        target=produce, args=(run.stream, events, args.rate, args.partitions)
    )
    t0 = time.perf_counter()
    producer.start()
    start_acked = run.acked()
    while run.acked() < start_acked + len(events):
        if all(p.poll() is not None for p in procs):
            raise RuntimeError(f"consumers exited early; logs in {run.tmp}")
        time.sleep(0.02)
    busy = time.perf_counter() - t0
    producer.join()
    for p in procs:
        p.wait()
    dumps = [
        json.loads((run.tmp / f"metrics-paced-{k}.json").read_text())
        for k in range(args.partitions)
    ]
    lat = [x for d in dumps for x in d["latency_samples_ms"].get("event_to_online", [])]
    batch_ms = [x for d in dumps for x in d["latency_samples_ms"].get("apply", [])]
    batches = sum(d["counters"].get("micro_batches", 0) for d in dumps)
    return {
        "offered_per_s": args.rate,
        "events": len(events),
        "seconds": round(busy, 2),
        "events_per_s": round(len(events) / busy),
        "latency_ms": percentiles(lat),
        "micro_batch_ms": percentiles(batch_ms),
        "events_per_micro_batch": round(len(events) / max(batches, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--online-store", nargs="+", default=["redis", "sqlite"])
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--count", type=int, default=1000, help="entries per XREADGROUP")
    args = parser.parse_args()
    _, info = build_world(args.workspace, args.users)
    print(
        f"cpus={os.cpu_count()} load={os.getloadavg()} partitions={args.partitions} "
        f"world={json.dumps(info)}"
    )
    start = pd.Timestamp(info["end"]) + pd.Timedelta(hours=1)
    n_paced = int(args.rate * args.seconds)
    for store in args.online_store:
        with tempfile.TemporaryDirectory() as tmp:
            run = Run(args, store, Path(tmp))
            events = play_events(
                args.backlog + n_paced, args.users, info["items"], start, 0.001, 7, run.tag
            )
            try:
                result = {
                    "online_store": store,
                    "drain": drain(run, events[: args.backlog]),
                    "paced": paced(run, events[args.backlog :]),
                }
            finally:
                run.cleanup()
            print(json.dumps(result, indent=1))
            print(f"load={os.getloadavg()}")


if __name__ == "__main__":
    main()
