"""NRT through Redis: the Streams consumer (ack after apply, dead-letter stream), crash and
restart with every event applied exactly once, and the Redis online store. Needs Redis on
127.0.0.1:6379; every run uses its own stream / group / project names and deletes them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nrt.client import send_stream
from nrt.config import NrtConfig
from nrt.engine import NrtEngine
from nrt.stream import RedisDeadLetters, StreamConsumer
from tests.conftest import Pipeline
from tests.test_nrt import (
    World,
    batch_recomputation,
    make_engine,
    online,
    play,
    promoted_world,
    signup,
)
from userrep import columns as C
from userrep.ingest import read_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(built: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> World:
    return promoted_world(built, tmp_path_factory.mktemp("nrt-stream") / "ws")


@pytest.fixture
def client() -> Iterator:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.ConnectionError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable: {err}")
    prefix = f"userrep-test-{uuid.uuid4().hex[:8]}"
    client.prefix = prefix  # type: ignore[attr-defined]
    yield client
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    assert not list(client.scan_iter(f"{prefix}*", count=1000))
    client.close()


def stream_config(client, tmp_path: Path, **extra: object) -> NrtConfig:
    p = client.prefix
    return NrtConfig(
        stream=f"{p}:events",
        group=f"{p}-group",
        consumer="c1",
        dead_letter_stream=f"{p}:dead",
        state_path=tmp_path / "state.db",
        refresh_seconds=3600.0,
        block_ms=100,
        **extra,
    )


def stream_engine(world: World, client, cfg: NrtConfig) -> NrtEngine:
    return NrtEngine(world.settings, cfg, RedisDeadLetters(client, cfg.dead_letter_stream))


def workload(
    world: World, n_users: int, per_user: int, seed: int
) -> tuple[list[dict], list[dict], pd.Timestamp]:
    """Plays (each user's newest exactly at T, the rest shuffled) and one sign-up of a new user."""
    rng = np.random.default_rng(seed)
    when = world.end + pd.Timedelta(hours=6)
    users = [int(u) for u in rng.choice(700, n_users, replace=False)] + [300_000]
    plays = []
    for u in users:
        for j in range(per_user):
            back = pd.Timedelta(days=0 if j == 0 else float(rng.uniform(0, 100)))
            plays.append(play(f"s{seed}-{u}-{j}", u, int(rng.integers(0, 400)), when - back))
    signups = [signup(f"s{seed}-su", 300_000, when - pd.Timedelta(days=1), [3, 9], ["pop"])]
    events = signups + [plays[i] for i in rng.permutation(len(plays))]
    return events, signups, when


def applied_once(engine: NrtEngine, events: list[dict]) -> None:
    """Every event id applied exactly once; each user's plays = bootstrap + sent plays."""
    ids = sorted({e["event_id"] for e in events})
    got = [
        r[0]
        for r in engine.state.conn.execute(
            f"SELECT event_id FROM applied WHERE event_id IN ({','.join('?' * len(ids))})", ids
        )
    ]
    assert sorted(got) == ids
    unique = {e["event_id"]: e for e in events}.values()
    sent = pd.Series([e["user_id"] for e in unique if "item_id" in e]).value_counts()
    states = engine.state.load(sent.index.tolist())
    held = pd.Series(states.play_user).value_counts()
    boot = read_events(engine.settings.paths, [C.USER_ID]).groupby(C.USER_ID).size()
    for user, n in sent.items():
        assert held[user] == n + boot.get(user, 0), user


def test_consumer_applies_acks_and_dead_letters(world: World, client, tmp_path: Path) -> None:
    cfg = stream_config(client, tmp_path)
    engine = stream_engine(world, client, cfg)
    t = world.end + pd.Timedelta(hours=2)
    good = [play("st-1", 901, 1, t), play("st-2", 902, 2, t)]
    send_stream(client, cfg.stream, [*good, good[0], {"user_id": "x", "item_id": 1, "ts": "z"}])
    client.xadd(cfg.stream, {"event": "{broken json"})
    consumer = StreamConsumer(engine, client, cfg)
    assert consumer.run(idle_exit_s=0.5) == 5
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 0
    dead = client.xrange(cfg.dead_letter_stream)
    assert sorted(f[b"reason"].decode() for _, f in dead) == ["invalid JSON", "non-integer user_id"]
    m = engine.metrics
    assert (m.get("events_applied"), m.get("events_duplicate"), m.get("events_dead_letter")) == (
        2,
        1,
        2,
    )
    assert m.summary("event_to_online")["count"] == 5
    assert not np.isnan(online(engine, [901, 902], world.batch_id)[0]).any()
    engine.close()


def test_injected_crash_before_ack_then_restart_applies_every_event_once(
    built: Pipeline, world: World, client, tmp_path: Path
) -> None:
    events, signups, when = workload(world, n_users=12, per_user=8, seed=1)
    events += events[:10]  # re-sent events ride along: still applied once
    cfg = stream_config(client, tmp_path, read_count=20)
    send_stream(client, cfg.stream, events)

    def crash(n_batches: int) -> None:
        if n_batches == 3:  # after the state commit and online write, before XACK
            raise RuntimeError("injected crash")

    engine = stream_engine(world, client, cfg)
    with pytest.raises(RuntimeError, match="injected"):
        StreamConsumer(engine, client, cfg, fault=crash).run(idle_exit_s=0.5)
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 20  # delivered, never acked
    engine.state.close()

    cfg2 = cfg.model_copy(update={"consumer": "c2", "claim_idle_ms": 0})  # another consumer
    engine = stream_engine(world, client, cfg2)
    StreamConsumer(engine, client, cfg2).run(idle_exit_s=0.5)
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 0
    applied_once(engine, events)
    # the first run applied 3 batches (60 events); the 20 it never acked come back as duplicates
    assert engine.metrics.get("events_applied") == len(events) - 10 - 60
    assert engine.metrics.get("events_duplicate") == 20 + 10
    users = sorted({e["user_id"] for e in events})
    z_nrt, stamps = online(engine, users, world.batch_id)
    engine.close()
    assert all(s == when for s in stamps)
    unique = list({e["event_id"]: e for e in events if "item_id" in e}.values())
    _, z_batch = batch_recomputation(built, tmp_path / "batch", unique, signups, when, users)
    np.testing.assert_allclose(z_nrt, z_batch, rtol=1e-5, atol=1e-5)


def test_poison_entries_are_dead_lettered_once_across_a_crash(
    world: World, client, tmp_path: Path
) -> None:
    """Poison among valid entries: every valid event applied, every bad entry dead-lettered
    exactly once (keyed by its entry id) although the consumer died after dead-lettering and
    before acknowledging the rest; nothing stays pending."""
    from tests.test_nrt import _refuse_user

    cfg = stream_config(client, tmp_path, read_count=50)
    t = world.end + pd.Timedelta(hours=3)
    valid = [play(f"pz-{u}", u, 2, t) for u in range(920, 930)]
    poison = [
        {"event_id": "pz-big", "user_id": 2**63, "item_id": 1, "ts": t.isoformat()},
        {"event_id": "pz-long" + "x" * 1000, "user_id": 5, "item_id": 1, "ts": t.isoformat()},
        {"user_id": 5, "signup_ts": t.isoformat(), "onboarding_items": list(range(100_000))},
        play("pz-refused", 666, 1, t),  # valid, but the store refuses it
    ]
    events = valid[:4] + poison[:2] + valid[4:7] + poison[2:] + valid[7:]
    ids = send_stream(client, cfg.stream, events)
    bad_ids = {ids[events.index(e)] for e in poison}
    bad_ids.add(client.xadd(cfg.stream, {"event": b"[" * 100_000}).decode())  # too deep
    bad_ids.add(client.xadd(cfg.stream, {"other": "field"}).decode())

    def crash(n_batches: int) -> None:
        raise RuntimeError("killed after dead-lettering, before XACK")

    engine = stream_engine(world, client, cfg)
    _refuse_user(engine, 666)
    with pytest.raises(RuntimeError, match="killed"):
        StreamConsumer(engine, client, cfg, fault=crash).run(idle_exit_s=0.5)
    assert client.xpending(cfg.stream, cfg.group)["pending"] == len(valid)  # bad ones acked
    engine.state.close()
    engine = stream_engine(world, client, cfg)  # the restart re-reads its pending entries
    _refuse_user(engine, 666)
    consumer = StreamConsumer(engine, client, cfg)
    consumer.run(idle_exit_s=0.5)
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 0
    dead = client.xrange(cfg.dead_letter_stream)
    assert sorted(f[b"entry"].decode() for _, f in dead) == sorted(bad_ids)
    assert consumer.dead_lettered == 0  # nothing left for the second run to dead-letter
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert reasons == [
        "JSON nested too deep",
        "apply failed: OverflowError: Python int too large to convert to SQLite INTEGER",
        "entry has no 'event' field",
        "event_id longer than 256 characters",
        "onboarding_items has more than 1000 entries",
        "user_id out of int64 range",
    ]
    applied_once(engine, valid)
    assert engine.metrics.get("events_duplicate") == len(valid)  # applied by the first run
    engine.close()


def test_an_entry_that_never_applies_is_dead_lettered_after_max_deliveries(
    world: World, client, tmp_path: Path
) -> None:
    """A micro-batch whose only event fails (an outage looks the same) is retried, not
    acknowledged; after max_deliveries deliveries it is dead-lettered and the partition
    moves on to the events behind it."""
    from tests.test_nrt import _refuse_user

    cfg = stream_config(client, tmp_path, read_count=1)
    t = world.end + pd.Timedelta(hours=4)
    behind = [play(f"md-{u}", u, 2, t) for u in (931, 932)]
    ids = send_stream(client, cfg.stream, [play("md-poison", 666, 1, t), *behind])
    engine = stream_engine(world, client, cfg)
    _refuse_user(engine, 666)
    consumer = StreamConsumer(engine, client, cfg, max_deliveries=3, retry_s=0.01)
    consumer.run(idle_exit_s=0.5)
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 0
    dead = client.xrange(cfg.dead_letter_stream)
    assert [(f[b"entry"].decode(), f[b"reason"].decode()) for _, f in dead] == [
        (ids[0], "not applied after 4 deliveries")
    ]
    assert engine.metrics.get("micro_batches_failed") == 3
    applied_once(engine, behind)
    engine.close()


def _consume_process(world: World, cfg: NrtConfig, log: Path, *flags: str) -> subprocess.Popen:
    userrep = os.path.join(os.path.dirname(sys.executable), "userrep")
    cmd = [
        userrep,
        "-w",
        str(world.settings.workspace),
        "nrt",
        "consume",
        "--stream",
        cfg.stream,
        "--group",
        cfg.group,
        "--consumer",
        cfg.consumer,
        "--dead-letter-stream",
        cfg.dead_letter_stream,
        "--state-path",
        str(cfg.state_path),
        "--count",
        "50",
        *flags,
    ]
    env = {**os.environ, "USERREP_NRT_REFRESH_SECONDS": "3600"}
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_sigkill_of_the_consumer_process_then_restart_applies_every_event_once(
    built: Pipeline, world: World, client, tmp_path: Path
) -> None:
    events, signups, when = workload(world, n_users=40, per_user=25, seed=2)
    cfg = stream_config(client, tmp_path)
    send_stream(client, cfg.stream, events)
    log = tmp_path / "consumer.log"
    proc = _consume_process(world, cfg, log)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        info = (
            {g["name"].decode(): g for g in client.xinfo_groups(cfg.stream)}
            if client.exists(cfg.stream)
            else {}
        )
        group = info.get(cfg.group)
        if group and group["entries-read"] and group["entries-read"] >= len(events) // 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-stream: some entries applied, some pending
    proc.wait()
    acked = (
        len(events)
        - client.xinfo_groups(cfg.stream)[0]["lag"]
        - client.xpending(cfg.stream, cfg.group)["pending"]
    )
    assert 0 < acked < len(events), "the kill should land mid-stream"

    restart = _consume_process(world, cfg, log, "--idle-exit", "1")
    assert restart.wait(timeout=300) == 0, log.read_text()
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 0
    engine = make_engine(world, tmp_path)  # the same state file, read after both runs
    applied_once(engine, events)
    users = sorted({e["user_id"] for e in events})
    z_nrt, _ = online(engine, users, world.batch_id)
    engine.close()
    plays = [e for e in events if "item_id" in e]
    _, z_batch = batch_recomputation(built, tmp_path / "batch", plays, signups, when, users)
    np.testing.assert_allclose(z_nrt, z_batch, rtol=1e-5, atol=1e-5)


@pytest.fixture
def redis_world(world: World, client) -> Iterator[World]:
    """The world served from the Redis online store under a unique Feast project; afterwards
    that project's keys and registry entries are removed (teardown() would drop them all)."""
    from userrep.feast_store import apply_repo, feature_store

    settings = world.settings.model_copy(
        update={"online_store": "redis", "project": f"userrep_nrt_{uuid.uuid4().hex[:8]}"}
    )
    apply_repo(settings)
    try:
        yield World(settings, world.batch_id, world.end)
    finally:
        keys = list(client.scan_iter(f"*{settings.project}*", count=1000))
        if keys:
            client.delete(*keys)
        feature_store(settings).registry.delete_project(settings.project)
    assert not list(client.scan_iter(f"*{settings.project}*", count=1000))


def test_redis_online_store_keeps_late_corrections(
    world: World, redis_world: World, tmp_path: Path
) -> None:
    """Redis drops a write whose event time is not newer than the stored one; the NRT writer
    turns that off and guards order itself, so a late event's correction still lands."""
    user, t_new = 950, world.end + pd.Timedelta(days=2)
    late = play("r-late", user, 11, t_new - pd.Timedelta(days=1), 3.0)
    newer = play("r-new", user, 12, t_new)
    engine = make_engine(redis_world, tmp_path / "a")
    engine.apply([newer])
    z_newer_only, _ = online(engine, [user], world.batch_id)
    engine.apply([late])
    z_after, stamps = online(engine, [user], world.batch_id)
    engine.close()
    assert stamps[0] == t_new and not np.allclose(z_after, z_newer_only)
    reference = make_engine(world, tmp_path / "b")  # sqlite store, events in time order
    reference.apply([late])
    reference.apply([newer])
    np.testing.assert_allclose(online(reference, [user], world.batch_id)[0], z_after, atol=1e-6)
    reference.close()


def test_http_service_on_redis_reads_the_fresh_vector(redis_world: World, tmp_path: Path) -> None:
    """On Redis the service's GET awaits Feast's asyncio read; it must see the vector the
    event just wrote, as the synchronous SDK read does."""
    from fastapi.testclient import TestClient

    from nrt.http import create_app

    engine = make_engine(redis_world, tmp_path)
    t = redis_world.end + pd.Timedelta(hours=5)
    with TestClient(create_app(engine)) as http:
        assert http.post("/events", json=play("rh-1", 951, 3, t)).json()["applied"] == 1
        got = http.get(f"/users/951/embedding?batch={redis_world.batch_id}").json()
        assert pd.Timestamp(got["as_of"]) == t
        z_sdk, _ = online(engine, [951], redis_world.batch_id)
        np.testing.assert_array_equal(np.float32(got["z_u"]), z_sdk[0])
        assert http.get("/users/987654/embedding").status_code == 404


def test_partitioned_consumers_each_keep_their_own_users(
    world: World, client, tmp_path: Path
) -> None:
    cfg0 = stream_config(client, tmp_path / "p0", partitions=2, partition=0)
    cfg1 = cfg0.model_copy(update={"partition": 1, "state_path": tmp_path / "p1" / "state.db"})
    t = world.end + pd.Timedelta(hours=9)
    send_stream(
        client, cfg0.stream, [play(f"pt-{u}", u, 1, t) for u in (910, 911, 912, 913)], partitions=2
    )
    assert client.xlen(f"{cfg0.stream}:p0") == client.xlen(f"{cfg0.stream}:p1") == 2
    client.xadd(f"{cfg0.stream}:p0", {"event": json.dumps(play("pt-x", 915, 1, t))})  # misrouted
    held = {}
    for cfg in (cfg0, cfg1):
        engine = stream_engine(world, client, cfg)
        StreamConsumer(engine, client, cfg).run(idle_exit_s=0.5)
        held[cfg.partition] = engine.state.nrt_users()
        assert engine.state.load([910, 911]).user_ids.tolist() == [910 + cfg.partition]
        engine.close()
    assert held == {0: [910, 912], 1: [911, 913]}
    dead = client.xrange(cfg0.dead_letter_stream)
    assert [f[b"reason"].decode() for _, f in dead] == ["user 915 is not in partition 0 of 2"]


def test_cli_send_consume_status(world: World, client, tmp_path: Path) -> None:
    import torch
    from typer.testing import CliRunner

    from userrep.cli import app

    cfg = stream_config(client, tmp_path)
    ws, t = str(world.settings.workspace), world.end + pd.Timedelta(hours=10)
    runner = CliRunner()
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(play(f"cli-{u}", u, 2, t)) for u in (920, 921)))
    sent = runner.invoke(
        app,
        [
            "-w",
            ws,
            "nrt",
            "send",
            str(events),
            "--to",
            "redis",
            "--stream",
            cfg.stream,
            "--event",
            json.dumps({"user_id": 1}),
        ],
    )
    assert sent.exit_code == 0, sent.output
    assert client.xlen(cfg.stream) == 3
    consumed = runner.invoke(
        app,
        [
            "-w",
            ws,
            "nrt",
            "consume",
            "--stream",
            cfg.stream,
            "--group",
            cfg.group,
            "--dead-letter-stream",
            cfg.dead_letter_stream,
            "--state-path",
            str(cfg.state_path),
            "--idle-exit",
            "0.5",
            "--threads",
            str(torch.get_num_threads()),
            "--metrics-out",
            str(tmp_path / "metrics.json"),
        ],
    )
    assert consumed.exit_code == 0, consumed.output
    counters = json.loads((tmp_path / "metrics.json").read_text())["counters"]
    unknown = "unknown event type: no item_id (play) or signup_ts (sign-up)"
    assert counters["events_applied"] == 2 and counters[f"events_dead_letter{{{unknown}}}"] == 1
    status = runner.invoke(app, ["-w", ws, "nrt", "status", "--state-path", str(cfg.state_path)])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["watermarks"] >= 2
