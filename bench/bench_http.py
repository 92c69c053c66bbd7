"""Benchmark: z_u over HTTP, `feast serve` with its defaults vs `userrep serve`, side by side.

Builds the serving world of bench_serving.py (one per online store), starts both servers on it
and alternates between them: per repetition, each server answers --seq sequential one-user
requests (one keep-alive connection) and then --conc requests from --clients threads (closed
loop, a keep-alive connection each). Users rotate over the world's users. Per server and mode:
p50 / p99 / worst latency, throughput, failed requests, stalls over 50 ms; medians over --reps
(failures and stalls summed). The floor is GET /health on userrep serve: the same HTTP stack
without the feature read. The load generator's own CPU (this process) and the server's CPU
(the gunicorn master and its workers, dead workers included) are reported per request.

Run: .venv/bin/python bench/bench_http.py [--online-store sqlite redis] [--reps 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import build_world, drop_world, machine, machine_line  # noqa: E402

from userrep.settings import Settings  # noqa: E402

BIN = Path(sys.executable).parent
STALL_MS = 50.0
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants (Linux /proc)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            stats[int(entry)] = (int(fields[1]), [int(x) for x in fields[11:15]])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p not in stats:
            continue
        total += sum(stats[p][1])  # utime, stime, cutime, cstime
        todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total / CLK


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen | None = None
    log: Path | None = None
    results: dict = field(default_factory=dict)

    def start(self, logdir: Path) -> None:
        self.log = logdir / f"{self.name}.log"
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=subprocess.DEVNULL,  # feast serve's default access log goes to stdout
            stderr=self.log.open("w"),
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: gunicorn and workers
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def bodies(batch_id: str, users) -> list[bytes]:
    return [
        json.dumps(
            {
                "features": ["user_embedding:z_u"],
                "entities": {"user_id": [int(u)], "batch_id": [batch_id]},
            }
        ).encode()
        for u in users
    ]


class Client:
    """One keep-alive connection; a failed request is counted and the connection reopened."""

    def __init__(self, port: int, path: str):
        self.port, self.path = port, path
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, body: bytes | None) -> tuple[float, bool]:
        t = time.perf_counter()
        try:
            if body is None:
                self.conn.request("GET", self.path)
            else:
                self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            ok = False
        return (time.perf_counter() - t) * 1e3, ok


def check_answer(port: int, body: bytes) -> None:
    """The server returns a vector for a known user (else the figures would time an error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/get-online-features", body, {"Content-Type": "application/json"})
    got = json.loads(conn.getresponse().read())
    values = got["results"][-1]["values"][0]
    assert values and len(values) > 1, got


def run_load(port: int, reqs: list[bytes | None], clients: int, path: str) -> dict:
    """Send reqs over `clients` threads (closed loop); latencies, wall time, CPU."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    failed = [0] * clients
    conns = [Client(port, path) for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        start.wait()
        for body in reqs[k::clients]:
            ms, ok = conns[k].send(body)
            lat[k].append(ms)
            failed[k] += not ok

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for c in conns:
        c.conn.close()
    a = np.concatenate([np.asarray(x) for x in lat])
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "rps": len(a) / wall,
        "failed": int(sum(failed)),
        "stalls": int((a > STALL_MS).sum()),
        "client_cpu_ms": cpu * 1e3 / len(a),
        "client_cores": cpu / wall,
        "n": len(a),
    }


def load_on(server: Server, reqs, clients: int, path: str) -> dict:
    assert server.proc is not None
    cpu0 = tree_cpu_s(server.proc.pid)
    got = run_load(server.port, reqs, clients, path)
    got["server_cpu_ms"] = (tree_cpu_s(server.proc.pid) - cpu0) * 1e3 / got["n"]
    got["load"] = round(os.getloadavg()[0], 2)
    return got


def servers_for(settings: Settings, variants: list[str]) -> list[Server]:
    """feast serve with its defaults, and userrep serve variants, each on a free port."""
    env = dict(os.environ)
    env.update(
        USERREP_WORKSPACE=str(settings.workspace),
        USERREP_ONLINE_STORE=settings.online_store,
        USERREP_PROJECT=settings.project,
        USERREP_REDIS_URL=settings.redis_url,
    )
    out = []
    for name in variants:
        port = free_port()
        if name == "feast-defaults":
            argv = [
                str(BIN / "feast"),
                "-c",
                str(settings.feature_repo),
                "-f",
                str(settings.workspace / "feature_store.yaml"),
                "serve",
                "--port",
                str(port),
            ]
        else:  # "userrep" or "userrep:--workers 2" (extra options after the colon)
            extra = name.split(":", 1)[1].split() if ":" in name else []
            argv = [str(BIN / "userrep"), "serve", "--port", str(port), *extra]
        out.append(Server(name, argv, env, port))
    return out


def measure(settings, batch_id, ids, variants, reps, seq, conc, clients) -> list[dict]:
    rng = np.random.default_rng(1)
    posts = bodies(batch_id, ids)
    servers = servers_for(settings, variants)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as logdir:
        try:
            for s in servers:
                s.start(Path(logdir))
            for s in servers:
                s.wait_ready()
                check_answer(s.port, posts[0])
                run_load(s.port, posts[:200], 1, "/get-online-features")  # warm-up
            floor = next(s for s in servers if s.name.startswith("userrep"))
            per_rep: dict[tuple[str, str], list[dict]] = {}
            for _ in range(reps):
                for mode, n, k in (("sequential", seq, 1), (f"{clients} clients", conc, clients)):
                    for s in servers:
                        reqs = [posts[i] for i in rng.integers(0, len(posts), n)]
                        got = load_on(s, reqs, k, "/get-online-features")
                        per_rep.setdefault((s.name, mode), []).append(got)
                    got = load_on(floor, [None] * n, k, "/health")
                    per_rep.setdefault(("floor: GET /health", mode), []).append(got)
        finally:
            for s in servers:
                s.stop()
    for (name, mode), runs in per_rep.items():
        row = {"store": settings.online_store, "server": name, "mode": mode, "reps": len(runs)}
        for key in runs[0]:
            vals = [r[key] for r in runs]
            row[key] = (
                int(sum(vals)) if key in ("failed", "stalls", "n") else float(np.median(vals))
            )
        rows.append(row)
    for r in rows:
        anchor = next(x for x in rows if x["server"] == "feast-defaults" and x["mode"] == r["mode"])
        fl = next(x for x in rows if x["server"].startswith("floor") and x["mode"] == r["mode"])
        for q in ("p50", "p99"):
            r[f"{q}_vs_feast"] = r[f"{q}_ms"] / anchor[f"{q}_ms"]
            r[f"{q}_vs_floor"] = r[f"{q}_ms"] / fl[f"{q}_ms"]
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'store':6} {'server':22} {'mode':10} {'p50':>6} {'p99':>6} {'worst':>7} {'req/s':>6} "
        f"{'fail':>4} {'>50ms':>5} {'p99/feast':>9} {'p99/floor':>9} {'cli ms':>6} {'srv ms':>6} "
        f"{'load':>5}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['store']:6} {r['server']:22} {r['mode']:10} {r['p50_ms']:6.2f} {r['p99_ms']:6.2f} "
            f"{r['max_ms']:7.1f} {r['rps']:6.0f} {r['failed']:4d} {r['stalls']:5d} "
            f"{r['p99_vs_feast']:9.2f} {r['p99_vs_floor']:9.2f} {r['client_cpu_ms']:6.3f} "
            f"{r['server_cpu_ms']:6.3f} {r['load']:5.2f}"
        )
    return "\n".join(lines)


def run(stores, variants, reps=3, seq=2000, conc=4000, clients=8, n_users=2000) -> dict:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for online_store in stores:
            settings, batch_id, ids = build_world(Path(tmp) / online_store, online_store, n_users)
            print(f"{online_store} world: {len(ids):,} users, batch {batch_id}", flush=True)
            try:
                rows += measure(settings, batch_id, ids, variants, reps, seq, conc, clients)
            finally:
                drop_world(settings)
    return {"rows": rows, "reps": reps, "seq": seq, "conc": conc, "clients": clients}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--online-store", nargs="+", default=["sqlite"], choices=["sqlite", "redis"]
    )
    parser.add_argument("--variants", nargs="+", default=["feast-defaults", "userrep"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seq", type=int, default=2000, help="sequential requests per rep")
    parser.add_argument("--conc", type=int, default=4000, help="concurrent requests per rep")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"machine: {machine_line()}", flush=True)
    result = run(args.online_store, args.variants, args.reps, args.seq, args.conc, args.clients)
    result["machine"] = machine()
    print(
        "latencies in ms; cli ms / srv ms = CPU ms per request of the load generator / the "
        "server; medians over reps, fail and >50ms summed"
    )
    print(table(result["rows"]))
    print(f"machine: {machine_line()}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
