"""Benchmark: event -> fresh z_u readable through get_online_features, over HTTP (loopback).

Starts `userrep nrt serve` on the bench world (bench_nrt_world.py: 20k users, ~790k events in
the NRT state), then offers --rate plays/s for --seconds (open loop: event i is due at
t0 + i / rate, spread over --procs client processes). Each client thread POSTs its event and, as
soon as the answer comes back, reads the user's z_u through get_online_features: by default
with the service's GET /users/{id}/embedding (which calls it), or with --read-via feast in the
client process itself. Latency = read done - event due time. A read is fresh when its as-of
time is at least the event's (events are 1 s apart in event time; Feast returns whole seconds).
Per online store (sqlite, redis), with a unique Feast project, removed at the end.

Run: .venv/bin/python bench/bench_nrt_http.py [--online-store sqlite redis] [--rate 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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


class Client:
    """Per-thread HTTP connection and FeatureStore."""

    def __init__(self, settings, port: int, batch_id: str, via: str = "feast"):
        self.settings, self.port, self.batch_id, self.via = settings, port, batch_id, via
        self.local = threading.local()

    def _get(self) -> tuple[http.client.HTTPConnection, object]:
        if not hasattr(self.local, "conn"):
            from userrep.feast_store import feature_store

            self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.local.store = feature_store(self.settings) if self.via == "feast" else None
        return self.local.conn, self.local.store

    def post(self, event: dict) -> dict:
        conn, _ = self._get()
        conn.request("POST", "/events", json.dumps(event), {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())

    def read(self, user: int) -> tuple[list | None, int | None]:
        if self.via == "http":  # the service's GET, which calls get_online_features
            conn, _ = self._get()
            conn.request("GET", f"/users/{user}/embedding?batch={self.batch_id}")
            resp = conn.getresponse()
            got = json.loads(resp.read())
            if resp.status != 200:
                return None, None
            return got["z_u"], int(pd.Timestamp(got["as_of"]).timestamp())
        _, store = self._get()
        got = store.get_online_features(  # type: ignore[attr-defined]
            features=["user_embedding:z_u"],
            entity_rows=[{"user_id": user, "batch_id": self.batch_id}],
        ).to_dict(include_event_timestamps=True)
        return got["z_u"][0], got["z_u__ts"][0]


def one(client: Client, event: dict, due: float, ts_s: int) -> dict:
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    answer = client.post(event)
    posted = time.perf_counter()
    z, stamp = client.read(event["user_id"])
    done = time.perf_counter()
    return {
        "e2e_ms": (done - due) * 1000,
        "post_ms": (posted - due) * 1000,
        "read_ms": (done - posted) * 1000,
        "applied": answer.get("applied") == 1,
        "fresh": z is not None and stamp is not None and stamp >= ts_s,
        "done": done,
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(args: argparse.Namespace, store: str, project: str, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "USERREP_ONLINE_STORE": store, "USERREP_PROJECT": project}
    cmd = [
        USERREP,
        "-w",
        str(args.workspace),
        "nrt",
        "serve",
        "--port",
        str(args.port),
        "--state-path",
        str(tmp / f"state-{store}.db"),
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=(tmp / f"serve-{store}.log").open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"service did not start: {(tmp / f'serve-{store}.log').read_text()}")


def load(client: Client, events: list[dict], rate: float, workers: int) -> list[dict]:
    """One process: every event due at t0 + i / rate."""
    t0 = time.perf_counter() + 0.5
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, client, e, t0 + i / rate, _ts(e)) for i, e in enumerate(events)]
        return [f.result() for f in futures]


def _ts(event: dict) -> int:
    return int(pd.Timestamp(event["ts"]).timestamp())


def client_process(job: dict, events: list[dict], due_index: list[int], ready, start, out) -> None:
    """A load process: its share of the events, at their global due times (open loop)."""
    from userrep.settings import Settings

    client = Client(Settings(**job["settings"]), job["port"], job["batch_id"], job["via"])
    with ThreadPoolExecutor(job["workers"]) as pool:
        # warm every thread's connection and store with one read: a FeatureStore's first
        # get_online_features loads the registry and opens the online store (~100 ms), which
        # would otherwise land on the first measured events of each thread
        list(pool.map(lambda _: (client.read(0), time.sleep(0.2)), range(job["workers"])))
        ready.wait()
        while start.value == 0.0:
            time.sleep(0.001)
        t0, rate = start.value, job["rate"]
        futures = [
            pool.submit(one, client, e, t0 + i / rate, _ts(e))
            for i, e in zip(due_index, events, strict=True)
        ]
        out.put([f.result() for f in futures])


def load_processes(
    args: argparse.Namespace, settings, batch_id: str, events: list[dict]
) -> list[dict]:
    """--procs client processes share the schedule (event i of all is due at t0 + i / rate)."""
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Barrier(args.procs + 1), ctx.Value("d", 0.0), ctx.Queue()
    job = {
        "settings": settings.model_dump(),
        "port": args.port,
        "batch_id": batch_id,
        "rate": args.rate,
        "workers": args.workers,
        "via": args.read_via,
    }
    k_events = [
        (events[k :: args.procs], list(range(k, len(events), args.procs)))
        for k in range(args.procs)
    ]
    procs = [
        ctx.Process(target=client_process, args=(job, ev, idx, ready, start, out))
        for ev, idx in k_events
    ]
    for p in procs:
        p.start()
    ready.wait()
    start.value = time.perf_counter() + 0.2
    rows = [r for _ in procs for r in out.get()]
    for r in rows:
        r["done"] -= start.value
    for p in procs:
        p.join()
    return rows


def run_store(args: argparse.Namespace, store: str, info: dict, tmp: Path) -> dict:
    from userrep.feast_store import apply_repo

    tag = uuid.uuid4().hex[:8]
    project = f"userrep_bench_{tag}"
    settings, _ = build_world(args.workspace, args.users)
    settings = settings.model_copy(update={"online_store": store, "project": project})
    apply_repo(settings)
    proc = serve(args, store, project, tmp)
    client = Client(settings, args.port, info["batch_id"], args.read_via)
    start = pd.Timestamp(info["end"]) + pd.Timedelta(hours=1)
    n = int(args.rate * args.seconds)
    events = play_events(n + 500, args.users, info["items"], start, 1.0, 11, tag)
    try:
        load(client, events[:500], 100.0, args.workers)  # warm-up: connections, caches
        cpu0 = cpu_seconds(proc.pid)
        rows = load_processes(args, settings, info["batch_id"], events[500:])
        server_cpu = cpu_seconds(proc.pid) - cpu0
        wall = max(r["done"] for r in rows)  # seconds from the first due time to the last read
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
        conn.request("GET", "/metrics?format=json")
        server = json.loads(conn.getresponse().read())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        drop_project(settings)
    frame = pd.DataFrame(rows)
    return {
        "online_store": store,
        "read_via": args.read_via,
        "offered_per_s": args.rate,
        "events": n,
        "achieved_per_s": round(n / wall, 1),
        "applied": int(frame["applied"].sum()),
        "fresh_reads": int(frame["fresh"].sum()),
        "event_to_readable_ms": percentiles(frame["e2e_ms"]),
        "post_ms": percentiles(frame["post_ms"]),
        "read_ms": percentiles(frame["read_ms"]),
        "server_apply_ms": server["latency_ms"].get("apply"),
        "server_apply_cpu_ms": server["latency_ms"].get("apply_cpu"),
        "server_cpu_ms_per_event": round(server_cpu * 1000 / n, 3),
        "events_per_micro_batch": round(
            server["counters"]["events_received"] / max(server["counters"]["micro_batches"], 1), 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--online-store", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=16, help="threads per client process")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--read-via",
        choices=["http", "feast"],
        default="http",
        help="http: GET /users/{id}/embedding (the service calls "
        "get_online_features); feast: get_online_features in the client",
    )
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    _, info = build_world(args.workspace, args.users)
    print(f"cpus={os.cpu_count()} load={os.getloadavg()} world={json.dumps(info)}")
    for store in args.online_store:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_store(args, store, info, Path(tmp)), indent=1))
        print(f"load={os.getloadavg()}")


if __name__ == "__main__":
    main()
