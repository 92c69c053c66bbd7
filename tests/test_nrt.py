"""Near-real-time path: events -> state -> the batch feature definitions -> z_u under every
servable batch, online and offline. Built on the session pipeline (`built`), each module on its
own copy of the workspace so the shared one is never written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nrt.aggregates import pair_aggregates
from nrt.config import NrtConfig
from nrt.engine import APPLIED, DEAD_LETTER, DUPLICATE, NrtEngine
from nrt.metrics import FileDeadLetters, read_dead_letters
from representation import batches, build, pipeline
from representation.encoders import load_item_vectors
from representation.inputs import read_snapshot, to_matrix
from tests.conftest import Pipeline
from userrep import columns as C
from userrep.db import DownstreamModel, session_scope
from userrep.settings import Settings


@dataclass
class World:
    settings: Settings
    batch_id: str  # promoted: the active batch
    end: pd.Timestamp  # newest snapshot of the built pipeline


def copy_workspace(built: Pipeline, target: Path) -> Settings:
    """A private copy of the built workspace (Feast registry re-applied for its paths)."""
    from userrep.feast_store import apply_repo

    shutil.copytree(built.settings.workspace, target)
    settings = Settings(workspace=target, text_cache=built.settings.text_cache)
    apply_repo(settings)
    return settings


def promoted_world(built: Pipeline, target: Path) -> World:
    settings = copy_workspace(built, target)
    with session_scope(settings.metadata_db_url) as session:
        batches.promote(session, built.batch_id, force_reason="NRT tests")
    return World(settings, built.batch_id, built.end)


@pytest.fixture(scope="module")
def world(built: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> World:
    return promoted_world(built, tmp_path_factory.mktemp("nrt") / "ws")


def make_engine(world: World, tmp_path: Path, **cfg: object) -> NrtEngine:
    cfg = {"state_path": tmp_path / "state.db", "refresh_seconds": 3600.0, **cfg}
    nrt = NrtConfig(**cfg)
    return NrtEngine(world.settings, nrt, FileDeadLetters(tmp_path / "dead_letter.jsonl"))


def play(eid: str, user: int, item: int, ts: pd.Timestamp, weight: float = 1.0) -> dict:
    return {
        "event_id": eid,
        "user_id": user,
        "item_id": item,
        "ts": ts.isoformat(),
        "weight": weight,
    }


def signup(eid: str, user: int, ts: pd.Timestamp, items: list[int], genres: list[str]) -> dict:
    return {
        "event_id": eid,
        "user_id": user,
        "signup_ts": ts.isoformat(),
        "age": 41,
        "gender": "m",
        "country": "DE",
        "onboarding_items": items,
        "onboarding_genres": genres,
    }


def online(engine: NrtEngine, users: list[int], batch_id: str) -> tuple[np.ndarray, list]:
    """(z (n, d) with NaN rows for missing, event timestamps) through get_online_features."""
    rows = [{C.USER_ID: u, C.BATCH_ID: batch_id} for u in users]
    got = engine.store.get_online_features(
        features=[f"{C.USER_EMBEDDING_VIEW}:{C.Z_U}"], entity_rows=rows
    ).to_dict(include_event_timestamps=True)
    z = np.array([np.full(64, np.nan) if v is None else v for v in got[C.Z_U]], np.float32)
    stamps = [pd.Timestamp(t, unit="s", tz="UTC") for t in got[f"{C.Z_U}__ts"]]  # whole seconds
    return z, stamps


def batch_recomputation(
    built: Pipeline,
    target: Path,
    plays: list[dict],
    signups: list[dict],
    as_of: pd.Timestamp,
    users: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    """The batch path over the same events: ingest them into a fresh copy of the workspace,
    write the snapshot at as_of (features.write_history_snapshot / onboarding) and run
    pipeline.embed_batch with the same encoder; (features (n, input_dim), z (n, d))."""
    from userrep import ingest

    settings = copy_workspace(built, target)
    frame = pd.DataFrame(plays).drop(columns=["type"], errors="ignore")
    frame[C.TS] = pd.to_datetime(frame[C.TS], utc=True, format="ISO8601")
    assert ingest.ingest_event_frame(settings.paths, frame, "nrt").quarantined == 0
    if signups:
        users_frame = pd.DataFrame(signups).drop(columns=["event_id"])
        users_frame[C.SIGNUP_TS] = pd.to_datetime(users_frame[C.SIGNUP_TS], format="ISO8601")
        assert ingest.ingest_users(settings.paths, users_frame).quarantined == 0
    build.build_snapshot(settings, as_of)
    encoder, layout = pipeline.load_encoder(settings, built.batch_id)
    x = to_matrix(read_snapshot(settings.paths, as_of, np.array(users)), layout)
    with session_scope(settings.metadata_db_url) as session:
        src = batches.get_batch(session, built.batch_id)
        batches.create_batch(
            session,
            batch_id="b-recompute",
            as_of=as_of.to_pydatetime(),
            feature_service=src.feature_service,
            latent_dim=src.latent_dim,
            artifact_path=src.artifact_path,
            artifact_sha256=src.artifact_sha256,
            metrics={},
        )
    report = pipeline.embed_batch(settings, "b-recompute", as_of, online=False)
    z = pd.read_parquet(report.offline_file).set_index(C.USER_ID).loc[users, C.Z_U]
    return x, np.stack(z.to_numpy()).astype(np.float32)


# ---------------------------------------------------------------- definitions


def test_numpy_pair_aggregates_equal_the_duckdb_sql() -> None:
    import duckdb

    from representation import features as feat

    rng = np.random.default_rng(3)
    n, as_of = 2000, pd.Timestamp("2024-06-01 12:00", tz="UTC")
    ts = as_of - pd.to_timedelta(rng.uniform(-5, 400, n), unit="D")  # some after as_of
    events = pd.DataFrame(
        {
            C.USER_ID: rng.integers(0, 30, n),
            C.ITEM_ID: rng.integers(0, 50, n),
            C.TS: ts.floor("us"),
            C.WEIGHT: rng.exponential(2.0, n),
        }
    )
    horizons = C.DEFAULT_HORIZONS
    con = duckdb.connect()
    con.register("ev", events)
    sql = feat.pair_aggregates(con, "ev", as_of, horizons)
    ts_us = events[C.TS].to_numpy("datetime64[us]").astype(np.int64)
    as_of_us = np.full(n, as_of.value // 1000)
    ours = pair_aggregates(
        events[C.USER_ID].to_numpy(),
        events[C.ITEM_ID].to_numpy(),
        ts_us,
        events[C.WEIGHT].to_numpy(),
        as_of_us,
        horizons,
    )
    order = np.lexsort((np.asarray(sql[C.ITEM_ID]), np.asarray(sql[C.USER_ID])))
    for key in [C.USER_ID, C.ITEM_ID] + [f"{p}_{h.name}" for h in horizons for p in "wn"]:
        np.testing.assert_allclose(ours[key], np.asarray(sql[key])[order], rtol=1e-12)
    last_abs = ours["last_s"] + as_of.timestamp()
    np.testing.assert_allclose(last_abs, np.asarray(sql["last_s"])[order], rtol=0, atol=1e-5)


def test_offline_schema_is_the_user_embedding_schema() -> None:
    from nrt.publish import EMBEDDING_SCHEMA

    table = pipeline.embedding_table(
        np.array([1]), np.zeros((1, 4), np.float32), "b", pd.Timestamp("2024-01-01", tz="UTC")
    )
    assert table.schema.equals(EMBEDDING_SCHEMA)


# ---------------------------------------------------------------- parity with the batch


@pytest.mark.slow
def test_nrt_features_and_z_u_equal_a_batch_recomputation(
    built: Pipeline, world: World, tmp_path: Path
) -> None:
    """Late, duplicate and unknown-item events, sign-ups (one without plays) and an event-only
    new user; every touched user's newest event is at T: one batch snapshot at T covers all."""
    engine = make_engine(world, tmp_path)
    rng = np.random.default_rng(0)
    when = world.end + pd.Timedelta(hours=5)
    users = [3, 5, 17, 42, 100_000, 100_001]
    plays = []
    for u in users:
        days_back = [*np.sort(rng.uniform(0.1, 200, 5))[::-1], 0.0]  # 7d, 30d, 180d, all
        for j, d in enumerate(days_back):
            item = 999_999 if j == 2 else int(rng.integers(0, 400))  # not in the catalog
            plays.append(
                play(
                    f"par-{u}-{j}",
                    u,
                    item,
                    when - pd.Timedelta(days=float(d)),
                    float(rng.uniform(0, 3)),
                )
            )
    signups = [
        signup("par-su", 100_000, when - pd.Timedelta(days=210), [4, 8], ["rock"]),
        signup("par-su2", 100_002, when, [], ["jazz"]),
    ]  # no plays: no history row
    users.append(100_002)
    engine.apply(signups)
    for i in rng.permutation(len(plays)):  # out of order: late events arrive after newer ones
        engine.apply([plays[i]])
    assert engine.apply(plays[:4]).count(DUPLICATE) == 4
    states = engine.state.load(users)
    assert (states.as_of_us == when.value // 1000).all()
    group = engine.serving.groups()[0]
    from nrt.aggregates import feature_matrix

    x_nrt = feature_matrix(states, group.vecs, group.layout, engine.features)
    z_nrt, _ = online(engine, users, world.batch_id)
    engine.close()

    x_batch, z_batch = batch_recomputation(built, tmp_path / "batch", plays, signups, when, users)
    np.testing.assert_array_equal(np.isnan(x_nrt), np.isnan(x_batch))
    np.testing.assert_allclose(x_nrt, x_batch, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z_nrt, z_batch, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- cold start, ordering, dedup


@pytest.mark.slow
def test_signup_gets_z_u_immediately_and_first_plays_refine_it(
    world: World, tmp_path: Path
) -> None:
    from nrt.signals import UserSignals, embed_signals

    engine = make_engine(world, tmp_path)
    encoder, layout = pipeline.load_encoder(world.settings, world.batch_id)
    vecs = load_item_vectors(world.settings.paths)
    t0 = world.end + pd.Timedelta(days=1)
    result = engine.apply([signup("cold-su", 200_000, t0, [4, 8, 15], ["rock"])])
    assert result.users == [200_000] and result.batches == [world.batch_id]
    z0, ts0 = online(engine, [200_000], world.batch_id)  # readable right after apply
    signals = UserSignals(200_000, t0, 41, "m", "DE", [4, 8, 15], ["rock"])
    np.testing.assert_allclose(
        z0[0], embed_signals(encoder, layout, vecs, signals, t0), rtol=1e-5, atol=1e-5
    )
    assert pd.Timestamp(ts0[0]) == t0

    t1 = t0 + pd.Timedelta(minutes=3)
    engine.apply([play("cold-p1", 200_000, 42, t1, 2.0)])
    z1, _ = online(engine, [200_000], world.batch_id)
    signals.events = pd.DataFrame({C.ITEM_ID: [42], C.TS: [t1], C.WEIGHT: [2.0]})
    np.testing.assert_allclose(
        z1[0], embed_signals(encoder, layout, vecs, signals, t1), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(z0, z1)
    engine.close()


@pytest.mark.slow
def test_resending_an_event_applies_it_once_even_after_a_restart(
    world: World, tmp_path: Path
) -> None:
    engine = make_engine(world, tmp_path)
    t = world.end + pd.Timedelta(hours=2)
    event = play("idem-1", 301, 7, t)
    first = engine.apply([event, event])  # a repeat inside one micro-batch
    assert [o.status for o in first.outcomes] == [APPLIED, DUPLICATE]
    plays_before = engine.state.n_plays()
    z_before, _ = online(engine, [301], world.batch_id)
    assert [o.status for o in engine.apply([event]).outcomes] == [DUPLICATE]
    engine.close()
    restarted = make_engine(world, tmp_path)  # same state file: dedup is persisted
    again = restarted.apply([event])
    assert [o.status for o in again.outcomes] == [DUPLICATE] and again.users == []
    assert restarted.state.n_plays() == plays_before
    np.testing.assert_array_equal(online(restarted, [301], world.batch_id)[0], z_before)
    assert restarted.metrics.get("events_duplicate") == 1
    restarted.close()


@pytest.mark.slow
def test_a_late_older_event_never_overwrites_the_newer_vector(world: World, tmp_path: Path) -> None:
    user, t_new = 402, world.end + pd.Timedelta(days=2)
    late = play("late-old", user, 11, t_new - pd.Timedelta(days=1), 3.0)
    newer = play("late-new", user, 12, t_new)
    engine = make_engine(world, tmp_path / "a")
    engine.apply([newer])
    z_newer_only, ts = online(engine, [user], world.batch_id)
    engine.apply([late])  # arrives last, happened first
    z_after, ts_after = online(engine, [user], world.batch_id)
    engine.close()
    # the stored vector is still as of the newest event, and now includes the late one
    assert pd.Timestamp(ts[0]) == pd.Timestamp(ts_after[0]) == t_new
    assert not np.allclose(z_after, z_newer_only)
    in_order = make_engine(world, tmp_path / "b")  # the same events in time order
    in_order.apply([late])
    z_late_only, ts_late = online(in_order, [user], world.batch_id)
    assert pd.Timestamp(ts_late[0]) == t_new - pd.Timedelta(days=1)
    in_order.apply([newer])
    np.testing.assert_allclose(online(in_order, [user], world.batch_id)[0], z_after, atol=1e-6)
    assert not np.allclose(z_after, z_late_only)
    in_order.close()


@pytest.mark.slow
def test_malformed_events_go_to_the_dead_letter_file_with_reason_and_are_counted(
    world: World, tmp_path: Path
) -> None:
    engine = make_engine(world, tmp_path)
    applied_before = engine.state.counts()["applied"]
    t = world.end + pd.Timedelta(hours=1)
    bad = [
        {"event_id": "bad-1", "user_id": "abc", "item_id": 1, "ts": t.isoformat()},
        {"event_id": "bad-2", "user_id": 5, "item_id": 1},
        {"event_id": "bad-3", "user_id": 5, "item_id": 1, "ts": "2100-01-01T00:00:00Z"},
        {"event_id": "bad-4", "user_id": 5, "item_id": 1, "ts": t.isoformat(), "weight": -1},
        {"event_id": "bad-5", "user_id": 5, "signup_ts": "yesterday-ish"},
        {"event_id": "bad-6", "user_id": 5},
        ["not", "an", "object"],
    ]
    good = play("ok-1", 503, 3, t)
    result = engine.apply([*bad, good])
    reasons = [o.reason for o in result.outcomes[:-1]]
    assert reasons == [
        "non-integer user_id",
        "missing ts",
        "future ts",
        "negative weight",
        "unparseable signup_ts",
        "unknown event type: no item_id (play) or signup_ts (sign-up)",
        "event is not a JSON object",
    ]
    assert [o.status for o in result.outcomes] == [DEAD_LETTER] * len(bad) + [APPLIED]
    letters = read_dead_letters(tmp_path / "dead_letter.jsonl")
    assert [d["reason"] for d in letters] == reasons
    assert letters[0]["event"] == bad[0]
    assert engine.metrics.get("events_dead_letter") == len(bad)
    assert engine.metrics.get("events_dead_letter", "future ts") == 1
    assert engine.state.counts()["applied"] == applied_before + 1  # only the good one
    engine.close()


def test_events_are_checked_against_what_the_stores_hold() -> None:
    """Values the state (SQLite INTEGER) or Feast (int64) cannot hold, oversized strings and
    lists, deep nesting: each rejected alone with its reason; the limits themselves pass."""
    from nrt.events import MAX_DEPTH, MAX_EVENT_ID_CHARS, MAX_LIST, parse_events

    t = "2024-01-01T00:00:00Z"
    nested: object = 1
    for _ in range(MAX_DEPTH - 1):  # in an event object: MAX_DEPTH levels
        nested = [nested]
    planted = [
        ({"user_id": 2**63, "item_id": 1, "ts": t}, "user_id out of int64 range"),
        ({"user_id": 1, "item_id": -(2**63) - 1, "ts": t}, "item_id out of int64 range"),
        ({"user_id": 9.3e18, "item_id": 1, "ts": t}, "user_id out of int64 range"),
        ({"user_id": 1, "item_id": 1, "ts": t, "weight": 10**400}, "NaN weight"),
        (
            {"event_id": "x" * (MAX_EVENT_ID_CHARS + 1), "user_id": 1, "item_id": 1, "ts": t},
            f"event_id longer than {MAX_EVENT_ID_CHARS} characters",
        ),
        (
            {"user_id": 1, "signup_ts": t, "onboarding_items": list(range(MAX_LIST + 1))},
            f"onboarding_items has more than {MAX_LIST} entries",
        ),
        (
            {"user_id": 1, "signup_ts": t, "onboarding_items": [1, 2**64]},
            "onboarding_items is not a list of int64 integers",
        ),
        ({"user_id": 1, "signup_ts": t, "age": 10**400}, "non-numeric age"),
        ({"user_id": 1, "signup_ts": t, "gender": {"a": 1}}, "gender is not a string"),
        ({"user_id": 1, "item_id": 1, "ts": t, "x": [nested]}, "event nested deeper than 8 levels"),
        ({"type": "z" * 10_000}, "unknown event type '" + "z" * 56 + "..."),
    ]
    at_limits = [
        {"user_id": 2**63 - 1, "item_id": -(2**63), "ts": t, "x": nested},
        {
            "event_id": "y" * MAX_EVENT_ID_CHARS,
            "user_id": 1,
            "signup_ts": t,
            "onboarding_items": list(range(MAX_LIST)),
            "onboarding_genres": ["rock", 7],
        },
    ]
    good, bad = parse_events([raw for raw, _ in planted] + at_limits)
    assert bad == [(i, reason) for i, (_, reason) in enumerate(planted)]
    assert [pos for pos, _ in good] == [len(planted), len(planted) + 1]
    assert good[0][1].user_id == 2**63 - 1 and good[1][1].onboarding_genres == ("rock", "7")


def _refuse_user(engine: NrtEngine, user: int) -> None:
    """Make the state refuse every micro-batch holding this user's events (as SQLite refused
    ids past int64 before events.py checked them)."""
    apply = engine.state.apply

    def refusing(events, nrt=True):  # noqa: ANN001, ANN202
        if any(e.user_id == user for e in events):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return apply(events, nrt)

    engine.state.apply = refusing  # type: ignore[method-assign]


@pytest.mark.slow
def test_an_event_the_store_refuses_fails_alone(world: World, tmp_path: Path) -> None:
    engine = make_engine(world, tmp_path)
    _refuse_user(engine, 666)
    t = world.end + pd.Timedelta(hours=3)
    events = [play("iso-1", 611, 3, t), play("iso-bad", 666, 3, t), play("iso-2", 612, 4, t)]
    result = engine.apply(events)
    assert [o.status for o in result.outcomes] == [APPLIED, DEAD_LETTER, APPLIED]
    reason = "apply failed: OverflowError: Python int too large to convert to SQLite INTEGER"
    assert result.outcomes[1].reason == reason
    assert result.users == [611, 612]
    letters = read_dead_letters(tmp_path / "dead_letter.jsonl")
    assert [(d["reason"], d["event"]) for d in letters] == [(reason, events[1])]
    assert engine.metrics.get("events_dead_letter", "apply failed: OverflowError") == 1
    assert not np.isnan(online(engine, [611, 612], world.batch_id)[0]).any()
    # every event failing alone is an outage, not poison: raised, nothing rejected
    applied = engine.state.counts()["applied"]
    with pytest.raises(OverflowError):
        engine.apply([play("iso-bad-2", 666, 5, t), play("iso-bad-3", 666, 6, t)])
    assert len(read_dead_letters(tmp_path / "dead_letter.jsonl")) == 1
    assert engine.state.counts()["applied"] == applied
    engine.close()


# ---------------------------------------------------------------- batches, offline, HTTP


@pytest.mark.slow
def test_every_servable_batch_gets_its_own_vectors(built: Pipeline, tmp_path: Path) -> None:
    """Active batch A + ready batch B with a pinned downstream model: both stay fresh, each in
    its own space; users updated before B became servable are caught up in B at refresh."""
    from nrt.aggregates import feature_matrix
    from representation.train import TrainConfig

    w = promoted_world(built, tmp_path / "ws")
    second = pipeline.train_batch(w.settings, w.end, None, TrainConfig(epochs=2, seed=1))
    pipeline.embed_batch(w.settings, second, w.end)
    engine = make_engine(w, tmp_path)
    t = w.end + pd.Timedelta(hours=3)
    engine.apply([play("sb-1", 601, 5, t)])  # only A is servable yet
    assert sorted(engine.serving.batches) == [w.batch_id]
    with session_scope(w.settings.metadata_db_url) as session:
        session.add(
            DownstreamModel(
                model_id="m-b",
                name="ranker",
                task="next_item",
                family="lightgbm",
                pinned_batch_id=second,
                artifact_path="/models/m-b",
                metrics={},
            )
        )
    assert engine.refresh_batches() == [second]
    engine.apply([play("sb-2", 602, 6, t)])
    for user in (601, 602):
        states = engine.state.load([user])
        for batch_id in (w.batch_id, second):
            sb = engine.serving.batches[batch_id]
            group = next(g for g in engine.serving.groups() if sb in g.batches)
            expected = sb.encoder.embed(
                feature_matrix(states, group.vecs, group.layout, engine.features)
            )
            got, ts = online(engine, [user], batch_id)
            np.testing.assert_allclose(got, expected, atol=1e-6)
            assert pd.Timestamp(ts[0]) == t
    z_a, z_b = online(engine, [602], w.batch_id)[0], online(engine, [602], second)[0]
    assert z_a.shape != z_b.shape or not np.allclose(z_a, z_b)  # each batch in its own space
    engine.close()
    restarted = make_engine(w, tmp_path)  # both batches remembered as caught up: no rewrite
    assert sorted(restarted.serving.batches) == sorted([w.batch_id, second])
    assert restarted.metrics.get("online_rows_written") == 0
    with session_scope(w.settings.metadata_db_url) as session:
        session.get(DownstreamModel, "m-b").status = "retired"  # nothing pinned to B any more
    restarted.refresh_batches()
    assert restarted.apply([play("sb-3", 603, 7, t)]).batches == [w.batch_id]
    assert online(restarted, [603], second)[1] == [w.end]  # B keeps its published vector
    assert online(restarted, [603], w.batch_id)[1] == [t]
    restarted.close()


@pytest.mark.slow
def test_offline_files_are_point_in_time_correct(world: World, tmp_path: Path) -> None:
    from userrep.feast_store import feature_store

    engine = make_engine(world, tmp_path)
    t = world.end + pd.Timedelta(hours=7)
    engine.apply([play("off-1", 701, 9, t)])
    z_online, _ = online(engine, [701], world.batch_id)
    engine.close()  # flushes the outbox
    files = sorted(world.settings.paths.user_embedding.glob(f"{world.batch_id}__nrt-*.parquet"))
    frame = pd.concat(pd.read_parquet(f) for f in files)
    row = frame[frame[C.USER_ID] == 701].iloc[-1]
    assert row[C.EVENT_TIMESTAMP] == t
    np.testing.assert_array_equal(np.asarray(row[C.Z_U], np.float32), z_online[0])
    entity = pd.DataFrame(
        {
            C.USER_ID: [701, 701],
            C.BATCH_ID: [world.batch_id] * 2,
            C.EVENT_TIMESTAMP: [t - pd.Timedelta(seconds=1), t],
        }
    )
    got = (
        feature_store(world.settings)
        .get_historical_features(entity_df=entity, features=[f"{C.USER_EMBEDDING_VIEW}:{C.Z_U}"])
        .to_df()
    )
    got = got.sort_values(C.EVENT_TIMESTAMP)
    published = pd.read_parquet(
        world.settings.paths.user_embedding / f"{world.batch_id}__{world.end:%Y%m%dT%H%M%S}.parquet"
    )
    before = published.set_index(C.USER_ID).loc[701, C.Z_U]
    np.testing.assert_array_equal(np.asarray(got[C.Z_U].iloc[0], np.float32), before)
    np.testing.assert_array_equal(np.asarray(got[C.Z_U].iloc[1], np.float32), z_online[0])


@pytest.mark.slow
def test_http_service(world: World, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from nrt.http import create_app

    engine = make_engine(world, tmp_path)
    t = world.end + pd.Timedelta(hours=4)
    with TestClient(create_app(engine)) as client:
        answer = client.post("/events", json=play("http-1", 801, 3, t)).json()
        assert answer["applied"] == 1 and answer["events"][0]["status"] == APPLIED
        batch = client.post(
            "/events", json=[play("http-1", 801, 3, t), {"user_id": 1}, play("http-2", 802, 4, t)]
        ).json()
        assert (batch["applied"], batch["duplicates"], batch["dead_lettered"]) == (1, 1, 1)
        bad = client.post("/events", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["detail"] == "invalid JSON"

        got = client.get(f"/users/801/embedding?batch={world.batch_id}").json()
        assert pd.Timestamp(got["as_of"]) == t
        np.testing.assert_array_equal(
            np.float32(got["z_u"]), online(engine, [801], world.batch_id)[0][0]
        )
        assert client.get("/users/801/embedding").json()["batch_id"] == world.batch_id  # active
        assert client.get("/users/987654/embedding").status_code == 404
        assert client.get("/users/801/embedding?batch=nope").status_code == 404
        app = client.app
        app.max_body, limit = 64, app.max_body  # an oversized POST: refused, unread, counted
        big = client.post("/events", json=[play(f"big-{i}", 801, 3, t) for i in range(5)])
        app.max_body = limit
        assert big.status_code == 413 and "send fewer events" in big.json()["detail"]
        assert engine.metrics.get("requests_refused") == 1
        # the fast path passes what it does not handle on to FastAPI: same routes, same checks
        assert client.get("/users/abc/embedding").status_code == 422
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/events", "/users/{user_id}/embedding"} <= set(paths)
        assert client.get("/healthz").json()["batches"] == [world.batch_id]
        text = client.get("/metrics").text
        assert "userrep_nrt_events_applied_total 2" in text
        assert 'userrep_nrt_events_dead_letter_total{reason="invalid JSON"} 1' in text
        counters = client.get("/metrics?format=json").json()["counters"]
        assert counters["events_duplicate"] == 1 and counters["events_received"] == 4
    letters = read_dead_letters(tmp_path / "dead_letter.jsonl")
    assert [d["reason"] for d in letters] == [
        "unknown event type: no item_id (play) or signup_ts (sign-up)",
        "invalid JSON",
    ]


@pytest.mark.slow
def test_http_answers_bad_input_with_a_4xx_and_applies_the_rest(
    world: World, tmp_path: Path
) -> None:
    """Poison among valid events: each rejected alone with its reason; a request of poison
    only is a 422; unparseable bodies and out-of-range ids are 400; never a 500."""
    from fastapi.testclient import TestClient

    from nrt.http import create_app

    engine = make_engine(world, tmp_path)
    _refuse_user(engine, 666)
    t = world.end + pd.Timedelta(hours=7)
    poison = [
        {"event_id": "p-1", "user_id": 2**63, "item_id": 1, "ts": t.isoformat()},
        {"event_id": "p-2" + "x" * 1000, "user_id": 5, "item_id": 1, "ts": t.isoformat()},
        play("p-3", 666, 1, t),  # valid, but the store refuses it
    ]
    valid = [play(f"v-{u}", u, 2, t) for u in (701, 702, 703)]
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        mixed = client.post("/events", json=[valid[0], *poison, *valid[1:]])
        assert mixed.status_code == 200
        body = mixed.json()
        assert (body["applied"], body["dead_lettered"]) == (3, 3)
        assert [e.get("reason") for e in body["events"][1:4]] == [
            "user_id out of int64 range",
            "event_id longer than 256 characters",
            "apply failed: OverflowError: Python int too large to convert to SQLite INTEGER",
        ]
        alone = client.post("/events", json=poison[0])
        assert alone.status_code == 422 and alone.json()["detail"] == "user_id out of int64 range"
        deep = client.post("/events", content=b"[" * 100_000 + b"]" * 100_000)
        assert deep.status_code == 400 and deep.json()["detail"] == "JSON nested too deep"
        for user in ("99999999999999999999999", str(2**63)):
            got = client.get(f"/users/{user}/embedding")
            assert got.status_code == 400 and "outside int64" in got.json()["detail"], user
        assert client.get("/users/703/embedding").status_code == 200
        # a store that refuses everything: 503, nothing applied and nothing rejected
        engine.state.apply = lambda events, nrt=True: 1 / 0  # type: ignore[method-assign]
        down = client.post("/events", json=[play("d-1", 704, 1, t), play("d-2", 705, 1, t)])
        assert down.status_code == 503 and "retry" in down.json()["detail"]
    letters = read_dead_letters(tmp_path / "dead_letter.jsonl")
    assert [d["reason"] for d in letters] == [
        "user_id out of int64 range",
        "event_id longer than 256 characters",
        "apply failed: OverflowError: Python int too large to convert to SQLite INTEGER",
        "user_id out of int64 range",
        "JSON nested too deep",
    ]
    engine.close()


def test_small_dense_weighted_means_equal_the_sparse_path() -> None:
    from representation import features as feat

    rng = np.random.default_rng(5)
    rows = np.sort(rng.integers(0, 7, 300))
    cols = rng.integers(0, 50, 300)
    w = np.where(rng.random(300) < 0.3, 0.0, rng.exponential(1.0, 300))
    w[rows == 3] = 0.0  # a user without weight: NaN row
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    dense, _ = feat.weighted_means(rows, cols, w, vectors, 8)  # 300 pairs: the dense path
    indptr = np.searchsorted(rows, np.arange(9))
    sparse, valid = feat._grouped_weighted_means(indptr, cols, w, vectors)
    np.testing.assert_array_equal(np.isnan(dense[:, 0]), ~valid)
    np.testing.assert_allclose(dense, sparse, rtol=1e-5, atol=1e-6)
