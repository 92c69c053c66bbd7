"""Fault injection: real `userrep` processes SIGKILLed at chosen points of ingest, features
build, train and embed (USERREP_FAULT_AT, userrep/faults.py), concurrent writers, and poison
events among valid ones over HTTP and Redis Streams. After each fault the invariants: readers
never fail on what was left, nothing partial is visible (no `ready` batch that is incomplete),
and the rerun converges to the uninterrupted result; no valid event is lost, no bad one is
dead-lettered twice. The module prints what it tried: faults injected, survived, events lost.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from representation import batches
from representation.features import events_source
from userrep import columns as C
from userrep.data import synthetic
from userrep.db import BatchStatus, session_scope
from userrep.faults import FAULT_ENV
from userrep.ingest import read_events
from userrep.ingest.tables import ITEM_SCHEMA, USER_SCHEMA, read_table
from userrep.settings import Settings

pytestmark = pytest.mark.slow  # real processes, killed and run again: minutes, not seconds
USERREP = os.path.join(os.path.dirname(sys.executable), "userrep")
SMALL = synthetic.SyntheticConfig(
    n_users=300, n_items=200, n_artists=40, n_clusters=4, events_per_user=15, seed=11
)
MAPPING = "user_id=uid,item_id=track,ts=played_at,weight=ms"
N_BAD_ROWS = 12
BATCH_ID = r"\bb\d{8}-[0-9a-f]{12}\b"


@dataclass
class Tally:
    injected: int = 0
    survived: int = 0
    lost: int = 0
    tried: list[str] = field(default_factory=list)


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    line = (
        f"fault suite: {TALLY.injected} faults injected, {TALLY.survived} survived, "
        f"{TALLY.lost} events lost ({'; '.join(TALLY.tried)})"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():  # shown without -s too
        print(f"\n{line}")


class Fault:
    """One injected fault: counted when entered, survived when its checks all passed."""

    def __init__(self, name: str, n: int = 1):
        self.name, self.n = name, n

    def __enter__(self) -> Fault:
        TALLY.injected += self.n
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            TALLY.survived += self.n
            TALLY.tried.append(self.name if self.n == 1 else f"{self.n} x {self.name}")


def cli(ws: Path, *args: str, fault: str | None = None, **popen: object) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update({"USERREP_LOCK_TIMEOUT": "300", "USERREP_NRT_REFRESH_SECONDS": "3600"})
    if fault:
        env[FAULT_ENV] = fault
    cmd = [USERREP, "-w", str(ws), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(ws: Path, *args: str, fault: str | None = None, timeout: float = 300) -> tuple[int, str]:
    """(exit code, stdout + stderr); -9 when the fault point killed it."""
    proc = cli(ws, *args, fault=fault)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def cli_here(ws: Path, *args: str) -> tuple[int, str]:
    """A command run in this process (typer's CliRunner): the checks that inject no fault
    skip a process start (torch alone takes seconds to import)."""
    from typer.testing import CliRunner

    from userrep.cli import app

    saved = {k: os.environ.get(k) for k in ("USERREP_WORKSPACE", "USERREP_HORIZONS")}
    try:
        result = CliRunner().invoke(app, ["-w", str(ws), *args])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result.exit_code, result.output


# ---------------------------------------------------------------- ingest


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An events CSV with planted bad rows, a users and an items table."""
    d = tmp_path_factory.mktemp("ingest-files")
    data = synthetic.generate(SMALL)
    ev = data.events.head(1500)
    frame = pd.DataFrame(
        {
            "uid": ev[C.USER_ID].astype(str),
            "track": ev[C.ITEM_ID].astype(str),
            "played_at": ev[C.TS].map(lambda t: t.isoformat()),
            "ms": ev[C.WEIGHT].astype(str),
        }
    )
    bad = pd.DataFrame(
        {
            "uid": ["x"] * 4 + ["1"] * 8,
            "track": ["1"] * 4 + [""] * 4 + ["2"] * 4,
            "played_at": [frame.played_at[0]] * 8 + ["not a time"] * 4,
            "ms": ["1"] * 12,
        }
    )
    pd.concat([frame, bad]).to_csv(d / "events.csv", index=False)
    users = data.users.drop(columns=[C.ONBOARDING_ITEMS, C.ONBOARDING_GENRES])
    users.to_csv(d / "users.csv", index=False)
    data.items.to_csv(d / "items.csv", index=False)
    return {"events": d / "events.csv", "users": d / "users.csv", "items": d / "items.csv"}


def ingest_args(files: dict[str, Path]) -> list[str]:
    return [
        "ingest",
        str(files["events"]),
        "--mapping",
        MAPPING,
        "--users",
        str(files["users"]),
        "--items",
        str(files["items"]),
    ]


def ws_state(ws: Path) -> dict[str, object]:
    """What readers see; reading it must never fail (leftovers included)."""
    paths = Settings(workspace=ws).paths
    n_glob = 0
    if paths.events.exists() and any(paths.events.iterdir()):
        n_glob = duckdb.connect().sql(f"SELECT count(*) FROM {events_source(paths)}").fetchone()[0]
    events = read_events(paths, [C.EVENT_ID])[C.EVENT_ID]
    assert n_glob == len(events)  # the readers' glob sees exactly the published parts
    bad: set[tuple[int, str]] = set()
    for q in paths.quarantine.glob("*.parquet") if paths.quarantine.exists() else []:
        t = pd.read_parquet(q, columns=[C.SOURCE_ROW, C.REASON])
        t = t[t[C.REASON] != "duplicate: already ingested"]
        bad |= set(zip(t[C.SOURCE_ROW], t[C.REASON], strict=True))
    return {
        "events": sorted(events),
        "users": read_table(paths.users, USER_SCHEMA)[C.USER_ID].tolist(),
        "items": read_table(paths.items, ITEM_SCHEMA)[C.ITEM_ID].tolist(),
        "bad": bad,
        "staging": sorted(p.name for p in (paths.data / ".staging").glob("*")),
    }


@pytest.fixture(scope="module")
def reference(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted ingest."""
    ws = tmp_path_factory.mktemp("ingest-ref") / "ws"
    code, out = cli_here(ws, *ingest_args(files))
    assert code == 0, out
    state = ws_state(ws)
    assert len(state["events"]) == 1500 and len(state["bad"]) == N_BAD_ROWS  # type: ignore[arg-type]
    return state


@pytest.mark.parametrize(
    "point", ["ingest:staged", "ingest:before-journal", "ingest:journaled", "ingest:half-moved"]
)
def test_killed_ingest_then_rerun(
    point: str, files: dict[str, Path], reference: dict, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    with Fault(f"SIGKILL at {point}"):
        code, out = run(ws, *ingest_args(files), fault=point)
        assert code == -signal.SIGKILL, out
        left = ws_state(ws)  # readers do not fail on what the kill left
        if point in ("ingest:staged", "ingest:before-journal"):  # before the commit point
            assert (left["events"], left["users"], left["items"]) == ([], [], [])
        code, out = cli_here(ws, *ingest_args(files))  # finishes or drops the killed one
        assert code == 0, out
        final = ws_state(ws)
        TALLY.lost += len(set(reference["events"]) - set(final["events"]))  # type: ignore[arg-type]
        assert final == reference


def test_concurrent_ingests_of_one_file(
    files: dict[str, Path], reference: dict, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    with Fault("2 concurrent ingests of one file"):
        procs = [cli(ws, *ingest_args(files)) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        final = ws_state(ws)
        assert final == reference  # every event once: the second found them all ingested
        accepted = sorted(
            json.loads(line)["accepted"]
            for line in (ws / "data" / "ingest_log.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "events"
        )
        assert accepted == [0, 1500]


def test_an_ingest_that_accepts_nothing_exits_1_and_keeps_the_quarantine(
    files: dict[str, Path], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    wrong = MAPPING.replace("user_id=uid", "user_id=played_at")  # text where ids belong
    code, out = cli_here(ws, "ingest", str(files["events"]), "--mapping", wrong)
    assert code == 1 and "error:" in out and "quarantined" in out, out
    state = ws_state(ws)
    assert state["events"] == [] and len(state["bad"]) > 1500  # type: ignore[arg-type]


# ---------------------------------------------------------------- features, train, embed


@dataclass
class World:
    settings: Settings
    times: list[pd.Timestamp]  # two snapshot times
    batch_id: str = ""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, text_cache: Path) -> World:
    """A workspace with events, users, items and encoders (in-process: the faults below are
    injected into the CLI jobs that follow)."""
    from representation import build
    from userrep import ingest
    from userrep.db import upgrade
    from userrep.feast_store import apply_repo

    settings = Settings(workspace=tmp_path_factory.mktemp("faults") / "ws", text_cache=text_cache)
    settings.paths.ensure()
    upgrade(settings.metadata_db_url)
    apply_repo(settings)
    data = synthetic.generate(SMALL)
    ingest.ingest_event_frame(settings.paths, data.events, "synthetic")
    ingest.ingest_users(settings.paths, data.users)
    ingest.ingest_items(settings.paths, data.items)
    build.build_encoders(settings)
    end = build.last_event_time(settings.paths).ceil("D")
    return World(settings, [end - pd.Timedelta(days=7), end])


def snapshot_files(settings: Settings) -> dict[str, pd.DataFrame]:
    """Every published snapshot file, read whole (a half-written one would fail here)."""
    paths = settings.paths
    out = {}
    for d in (paths.user_history, paths.user_onboarding):
        for f in sorted(d.glob("*.parquet")):
            out[f"{d.name}/{f.name}"] = pq.read_table(f).to_pandas()
    return out


def same_frames(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        cols = [c for c in a[k].columns if c != C.CREATED]  # write times differ by design
        pd.testing.assert_frame_equal(a[k][cols], b[k][cols])
    return True


def test_killed_features_build_then_rerun(world: World) -> None:
    ws, (t1, t2) = world.settings.workspace, world.times
    args = ["features", "build", "--as-of", str(t1), "--as-of", str(t2), "--no-materialize"]
    with Fault("SIGKILL at features:between-snapshots"):
        code, out = run(ws, *args, fault="features:between-snapshots")
        assert code == -signal.SIGKILL, out
        first = snapshot_files(world.settings)  # every file readable: none half-written
        assert {k.split("/")[1] for k in first} == {f"asof={t1:%Y%m%dT%H%M%S}.parquet"}
    with Fault("SIGKILL at features:before-materialize"):
        code, out = run(ws, *args, fault="features:before-materialize")
        assert code == -signal.SIGKILL, out
        killed = snapshot_files(world.settings)
        assert len(killed) == 4
        code, out = cli_here(ws, *args)  # the rerun (in this process: no fault to inject)
        assert code == 0, out
        assert same_frames(snapshot_files(world.settings), killed)  # the rerun converges


def test_killed_train_registers_no_batch(world: World) -> None:
    ws, t2 = world.settings.workspace, world.times[1]
    args = ["train", "--as-of", str(t2), "--epochs", "3", "--no-align"]
    with Fault("SIGKILL at train:artifact-saved"):
        code, out = run(ws, *args, fault="train:artifact-saved")
        assert code == -signal.SIGKILL, out
        with session_scope(world.settings.metadata_db_url) as session:
            assert batches.list_batches(session) == []  # the orphan artifact is never served
        orphans = list(world.settings.paths.batches.glob("*/encoder/SHA256"))
        assert len(orphans) == 1
        code, out = cli_here(ws, *args)
        assert code == 0, out
        world.batch_id = re.findall(BATCH_ID, out)[-1]
        with session_scope(world.settings.metadata_db_url) as session:
            assert [(b.batch_id, b.status) for b in batches.list_batches(session)] == [
                (world.batch_id, BatchStatus.BUILDING)
            ]


def batch_row(world: World) -> tuple[str, int | None]:
    with session_scope(world.settings.metadata_db_url) as session:
        b = batches.get_batch(session, world.batch_id)
        return b.status, b.n_users


def z_file(world: World, t: pd.Timestamp) -> pd.DataFrame:
    name = f"{world.batch_id}__{t:%Y%m%dT%H%M%S}.parquet"
    return pd.read_parquet(world.settings.paths.user_embedding / name)


def test_killed_backfill_stays_building_then_the_rerun_makes_it_ready(world: World) -> None:
    from representation.serving import forget_lifecycle, resolve_batch
    from userrep.feast_store import store as feast_store

    ws, (t1, t2) = world.settings.workspace, world.times
    args = ["embed", "--batch", world.batch_id, "--as-of", str(t1), "--as-of", str(t2)]
    for point in ("embed:between-as-ofs", "embed:published"):
        with Fault(f"SIGKILL at {point}"):
            code, out = run(ws, *args, fault=point)
            assert code == -signal.SIGKILL, out
            assert batch_row(world)[0] == BatchStatus.BUILDING  # incomplete: never ready
            forget_lifecycle()
            with pytest.raises(batches.BatchError, match="building: not served"):
                resolve_batch(world.settings, world.batch_id)
            code, out = cli_here(ws, "export-embeddings", "--batch", world.batch_id, "--out", "x")
            assert code == 2 and "is building" in out, out
    first = z_file(world, t1)
    code, out = cli_here(ws, *args)
    assert code == 0, out
    snapshot = world.settings.paths.user_onboarding / f"asof={t2:%Y%m%dT%H%M%S}.parquet"
    assert batch_row(world) == (BatchStatus.READY, len(pd.read_parquet(snapshot)))
    again = z_file(world, t1)
    np.testing.assert_array_equal(np.stack(first[C.Z_U]), np.stack(again[C.Z_U]))  # converged
    newest = z_file(world, t2).head(20)
    got = (
        feast_store(world.settings)
        .get_online_features(
            features=[f"{C.USER_EMBEDDING_VIEW}:{C.Z_U}"],
            entity_rows=[{C.USER_ID: u, C.BATCH_ID: world.batch_id} for u in newest[C.USER_ID]],
        )
        .to_dict()
    )
    np.testing.assert_allclose(np.array(got[C.Z_U], np.float32), np.stack(newest[C.Z_U]))


def test_two_embeds_of_one_batch_at_once(world: World) -> None:
    ws, t2 = world.settings.workspace, world.times[1]
    args = ["embed", "--batch", world.batch_id, "--as-of", str(t2)]
    with Fault("2 concurrent embeds of one batch"):
        other = cli(ws, *args)  # another process, and this one, at once
        code, out = cli_here(ws, *args)
        assert (code, other.wait(timeout=300)) == (0, 0), (out, other.communicate())
        names = [f.name for f in world.settings.paths.user_embedding.iterdir()]
        ours = sorted(n for n in names if world.batch_id in n)  # no temp file left behind
        assert ours == sorted(f"{world.batch_id}__{t:%Y%m%dT%H%M%S}.parquet" for t in world.times)


def test_batch_ids_are_looked_up_and_artifacts_verified(world: World, tmp_path: Path) -> None:
    ws = world.settings.workspace
    for bad in ("*", "../../x"):
        code, out = cli_here(ws, "export-embeddings", "--batch", bad, "--out", str(tmp_path / "z"))
        assert code == 2 and "error:" in out and "not a batch id" in out, out
        assert not (tmp_path / "z").exists()
    model = next(world.settings.paths.batches.glob(f"{world.batch_id}/encoder/model.pt"))
    weights = model.read_bytes()
    model.write_bytes(weights[:-64] + bytes(64))  # bit rot in the last bytes
    try:
        code, out = cli_here(ws, "embed", "--batch", world.batch_id, "--as-of", str(world.times[1]))
        assert code == 2 and "does not match its recorded sha256" in out, out
    finally:
        model.write_bytes(weights)


def test_retired_batches_are_not_embedded_or_exported(world: World, tmp_path: Path) -> None:
    ws, out_file = world.settings.workspace, tmp_path / "z.parquet"
    code, out = cli_here(ws, "batches", "retire", world.batch_id)
    assert code == 0, out
    code, out = cli_here(ws, "embed", "--batch", world.batch_id, "--as-of", str(world.times[1]))
    assert code == 2 and "is retired" in out, out
    export = ["export-embeddings", "--batch", world.batch_id, "--out", str(out_file)]
    code, out = cli_here(ws, *export)
    assert code == 2 and "--include-retired" in out and not out_file.exists(), out
    code, out = cli_here(ws, *export, "--include-retired", "--all-as-of")
    n_rows = sum(len(z_file(world, t)) for t in world.times)
    assert code == 0 and len(pd.read_parquet(out_file)) == n_rows, out


# ---------------------------------------------------------------- NRT: poison events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    """(status, JSON answer) of a POST; any status, never an exception for 4xx / 5xx."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError:  # not listening yet
        return 0


def poison(t: pd.Timestamp, tag: str) -> list[dict]:
    """Events that pass JSON but not what the stores hold."""
    return [
        {"event_id": f"{tag}-big", "user_id": 2**63, "item_id": 1, "ts": t.isoformat()},
        {
            "event_id": f"{tag}-long" + "x" * 100_000,
            "user_id": 5,
            "item_id": 1,
            "ts": t.isoformat(),
        },
        {"user_id": 5, "signup_ts": t.isoformat(), "onboarding_items": list(range(100_000))},
        {
            "event_id": f"{tag}-deep",
            "user_id": 5,
            "item_id": 1,
            "ts": t.isoformat(),
            "x": [[[[[[[[[[1]]]]]]]]]],
        },
        {"event_id": f"{tag}-item", "user_id": 5, "item_id": -(2**63) - 1, "ts": t.isoformat()},
    ]


@pytest.fixture(scope="module")
def served(world: World) -> World:
    """The world with a fresh batch trained, embedded and promoted (the one above is retired),
    in this process: these tests inject their faults into the NRT path."""
    from representation import pipeline
    from representation.train import TrainConfig

    t = world.times[1]
    batch_id = pipeline.train_batch(world.settings, t, None, TrainConfig(epochs=3, seed=0))
    pipeline.embed_batch(world.settings, batch_id, t)
    with session_scope(world.settings.metadata_db_url) as session:
        batches.promote(session, batch_id, force_reason="fault suite")
    return World(world.settings, world.times, batch_id)


def applied_ids(state_db: Path, ids: list[str]) -> set[str]:
    import sqlite3

    con = sqlite3.connect(state_db)
    try:
        q = f"SELECT event_id FROM applied WHERE event_id IN ({','.join('?' * len(ids))})"
        return {r[0] for r in con.execute(q, ids)}
    finally:
        con.close()


def test_poison_events_over_http_among_concurrent_valid_ones(served: World, tmp_path: Path) -> None:
    """The NRT service on a real socket (uvicorn, in a thread of this process): 200 valid
    requests and the poison ones at once, from 16 client threads."""
    import threading

    import uvicorn

    from nrt.config import NrtConfig
    from nrt.engine import NrtEngine
    from nrt.http import create_app
    from nrt.metrics import FileDeadLetters, read_dead_letters

    t = served.times[1] + pd.Timedelta(hours=1)
    state, dead = tmp_path / "state.db", tmp_path / "dead.jsonl"
    cfg = NrtConfig(state_path=state, refresh_seconds=3600.0)
    engine = NrtEngine(served.settings, cfg, FileDeadLetters(dead))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    valid = [
        {"event_id": f"h-{i}", "user_id": i % 150, "item_id": i % 50, "ts": t.isoformat()}
        for i in range(200)
    ]
    bad: list[object] = [*poison(t, "h"), b"[" * 100_000, b"{not json"]
    bodies = [json.dumps(e).encode() for e in valid] + [
        b if isinstance(b, bytes) else json.dumps(b).encode() for b in bad
    ]
    order = np.random.default_rng(0).permutation(len(bodies)).tolist()
    try:
        deadline = time.time() + 60
        while not server.started:
            assert thread.is_alive() and time.time() < deadline
            time.sleep(0.05)
        with Fault("poison events over HTTP among 200 concurrent valid ones", len(bad)):
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda i: _post(f"{url}/events", bodies[i]), order))
            by_body = dict(zip(order, answers, strict=True))
            codes = [by_body[i][0] for i in range(len(bodies))]
            assert codes[: len(valid)] == [200] * len(valid)  # no valid request failed
            assert all(c in (400, 422) for c in codes[len(valid) :]), codes[len(valid) :]
            assert all(by_body[i][1]["applied"] == 1 for i in range(len(valid)))
            assert _get(f"{url}/users/99999999999999999999999/embedding") == 400
            assert _get(f"{url}/users/1/embedding") == 200
            lost = len(valid) - len(applied_ids(state, [e["event_id"] for e in valid]))
            TALLY.lost += lost
            assert lost == 0
            assert len(read_dead_letters(dead)) == len(bad)  # each bad one exactly once
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.close()


@pytest.fixture
def redis_client() -> Iterator:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.ConnectionError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable: {err}")
    prefix = f"userrep-faults-{uuid.uuid4().hex[:8]}"
    client.prefix = prefix  # type: ignore[attr-defined]
    yield client
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.integration
def test_poison_entries_over_redis_streams_and_a_killed_consumer(
    served: World, redis_client, tmp_path: Path
) -> None:
    from nrt.client import send_stream

    ws, t = served.settings.workspace, served.times[1] + pd.Timedelta(hours=2)
    p = redis_client.prefix
    stream, dead = f"{p}:events", f"{p}:dead"
    valid = [
        {"event_id": f"s-{i}", "user_id": i % 120, "item_id": i % 60, "ts": t.isoformat()}
        for i in range(400)
    ]
    bad = poison(t, "s")
    events = list(valid)
    for k, b in enumerate(bad):  # spread among the valid ones
        events.insert(60 * (k + 1), b)
    ids = send_stream(redis_client, stream, events)
    bad_ids = {ids[events.index(b)] for b in bad}
    bad_ids.add(redis_client.xadd(stream, {"event": "{not json"}).decode())
    state = tmp_path / "state.db"
    args = [
        "nrt",
        "consume",
        "--stream",
        stream,
        "--group",
        f"{p}-g",
        "--consumer",
        "c1",
        "--dead-letter-stream",
        dead,
        "--state-path",
        str(state),
        "--count",
        "20",
    ]
    with Fault("poison entries over Redis Streams", len(bad_ids)), Fault("SIGKILL of the consumer"):
        consumer = cli(ws, *args)
        deadline = time.time() + 120
        while time.time() < deadline and consumer.poll() is None:
            groups = redis_client.xinfo_groups(stream) if redis_client.exists(stream) else []
            if groups and (groups[0]["entries-read"] or 0) >= len(events) // 3:
                break
            time.sleep(0.05)
        consumer.send_signal(signal.SIGKILL)
        consumer.communicate(timeout=60)
        code, out = cli_here(ws, *args, "--idle-exit", "1")  # the restart
        assert code == 0, out
        assert redis_client.xpending(stream, f"{p}-g")["pending"] == 0
        entries = [f[b"entry"].decode() for _, f in redis_client.xrange(dead)]
        assert sorted(entries) == sorted(bad_ids)  # each bad entry dead-lettered exactly once
        lost = len(valid) - len(applied_ids(state, [e["event_id"] for e in valid]))
        TALLY.lost += lost
        assert lost == 0
