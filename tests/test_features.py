"""Point-in-time user features on planted events: horizon arithmetic, no future leakage,
and Feast's point-in-time join keeping every label row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from representation import features as feat
from representation.encoders import ItemVectors
from userrep import columns as C
from userrep.settings import Settings

T = pd.Timestamp("2024-06-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def planted_vectors() -> ItemVectors:
    eye = np.eye(4, dtype=np.float32)
    return ItemVectors(
        "enc-test", np.arange(4, dtype=np.int64), eye, eye[::-1].copy(), {"rock": eye[0]}
    )


def planted_events(with_future: bool = True) -> pd.DataFrame:
    rows = [  # user, item, ts, weight
        (1, 0, T - 2 * DAY, 1.0),
        (1, 1, T - 20 * DAY, 3.0),
        (1, 2, T - 100 * DAY, 1.0),
        (1, 2, T - 300 * DAY, 1.0),
    ]
    if with_future:
        rows += [(1, 3, T + DAY, 5.0), (2, 1, T + 3 * DAY, 1.0)]
    df = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.TS, C.WEIGHT])
    return df.assign(**{C.EVENT_ID: [f"e{i}" for i in range(len(df))], C.EVENT_TYPE: "play"})


def planted_users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            C.USER_ID: [1, 2],
            C.SIGNUP_TS: [T - 400 * DAY, T + 2 * DAY],
            C.AGE: [30.0, np.nan],
            C.GENDER: ["f", ""],
            C.COUNTRY: ["SE", ""],
            C.ONBOARDING_ITEMS: [[0, 1], []],
            C.ONBOARDING_GENRES: [["rock"], []],
        }
    )


def write_workspace(settings: Settings, events: pd.DataFrame) -> None:
    events.to_parquet(settings.paths.events / "part-0.parquet")


def history_at(settings: Settings, as_of: pd.Timestamp) -> pd.DataFrame:
    feat.write_history_snapshot(settings.paths, planted_vectors(), as_of, settings.horizon_list)
    return pd.read_parquet(settings.paths.user_history / feat.snapshot_name(as_of)).set_index(
        C.USER_ID
    )


def test_horizon_aggregates_match_hand_computation(fresh_settings: Settings) -> None:
    write_workspace(fresh_settings, planted_events())
    row = history_at(fresh_settings, T).loc[1]
    assert row["n_events_7d"] == 1 and row["n_events_30d"] == 2
    assert row["n_events_180d"] == 3 and row["n_events_all"] == 4
    np.testing.assert_allclose(row["collab_7d"], [1, 0, 0, 0], atol=1e-6)
    w0, w1 = np.log(2.0), np.log(4.0)  # ln(1 + weight)
    expected_30d = np.array([w0, w1, 0, 0]) / (w0 + w1)
    np.testing.assert_allclose(row["collab_30d"], expected_30d, atol=1e-6)
    np.testing.assert_allclose(row["content_30d"], expected_30d[::-1], atol=1e-6)
    assert row["recency_days"] == pytest.approx(2.0)
    assert row[C.N_DISTINCT_ITEMS] == 3


def test_no_event_after_t_influences_the_snapshot(fresh_settings: Settings, tmp_path) -> None:
    write_workspace(fresh_settings, planted_events(with_future=True))
    with_future = history_at(fresh_settings, T).drop(columns=[C.CREATED])
    other = Settings(workspace=tmp_path / "other")
    other.paths.ensure()
    write_workspace(other, planted_events(with_future=False))
    without = history_at(other, T).drop(columns=[C.CREATED])
    pd.testing.assert_frame_equal(with_future, without)
    assert 2 not in with_future.index  # user 2's first play is after T


def test_empty_horizon_is_null_not_zero(fresh_settings: Settings) -> None:
    write_workspace(fresh_settings, planted_events())
    row = history_at(fresh_settings, T + 40 * DAY).loc[2]  # one play 37 days earlier
    assert row["collab_7d"] is None and row["n_events_7d"] == 0
    assert row["collab_180d"] is not None


def test_onboarding_features_from_picks_and_demographics() -> None:
    table = (
        feat.onboarding_table(planted_users(), planted_vectors(), T)
        .to_pandas()
        .set_index(C.USER_ID)
    )
    assert list(table.index) == [1]  # user 2 signs up after T
    row = table.loc[1]
    np.testing.assert_allclose(row[C.ONBOARD_COLLAB], [0.5, 0.5, 0, 0], atol=1e-6)
    # content mean over picked items (reversed identity) and the "rock" genre vector
    np.testing.assert_allclose(row[C.ONBOARD_CONTENT], np.array([1, 0, 1, 1]) / 3, atol=1e-6)
    assert row[C.N_ONBOARDING] == 3 and row[C.DAYS_SINCE_SIGNUP] == pytest.approx(400.0)
    assert row[C.DEMO_VEC][0] == 1.0  # gender f


@pytest.mark.slow
def test_feast_point_in_time_join_keeps_rows_and_never_leaks(fresh_settings: Settings) -> None:
    from userrep.feast_store import apply_repo

    write_workspace(fresh_settings, planted_events())
    for t in (T, T + 5 * DAY):
        feat.write_history_snapshot(
            fresh_settings.paths, planted_vectors(), t, fresh_settings.horizon_list
        )
    store = apply_repo(fresh_settings)
    entity_df = pd.DataFrame(
        {
            C.USER_ID: [1, 1, 2, 2, 99],
            C.EVENT_TIMESTAMP: [T - DAY, T + DAY, T + DAY, T + 6 * DAY, T + DAY],
        }
    )
    out = store.get_historical_features(
        entity_df=entity_df, features=[f"{C.USER_HISTORY_VIEW}:n_events_all"]
    ).to_df()
    assert len(out) == len(entity_df)  # no label row dropped
    got = out.set_index([C.USER_ID, C.EVENT_TIMESTAMP])["n_events_all"]
    assert pd.isna(got[(1, T - DAY)])  # before the first snapshot: null
    assert got[(1, T + DAY)] == 4  # the snapshot at T, not the later one (5 plays)
    assert pd.isna(got[(2, T + DAY)])  # before user 2's first play: null, never a later value
    assert got[(2, T + 6 * DAY)] == 1
    assert pd.isna(got[(99, T + DAY)])  # unknown user kept with nulls


def test_streamed_chunks_end_on_user_boundaries_and_lose_no_pair() -> None:
    import duckdb

    rng = np.random.default_rng(3)
    n = 400
    events = pd.DataFrame(
        {
            C.USER_ID: rng.integers(0, 25, n),  # ~16 events per user: most users span chunks
            C.ITEM_ID: rng.integers(0, 4, n),
            C.TS: T - pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
            C.WEIGHT: rng.random(n) * 5,
        }
    )
    con = duckdb.connect()
    con.register("ev", events)
    horizons = Settings(workspace="unused").horizon_list
    whole = feat.pair_aggregates(con, "ev", T, horizons)
    chunks = list(feat.iter_pair_chunks(con, "ev", T, horizons, chunk_pairs=7))
    assert len(chunks) > 3
    users = [set(c[C.USER_ID].tolist()) for c in chunks]
    assert all(a.isdisjoint(b) for i, a in enumerate(users) for b in users[i + 1 :])
    streamed = {k: np.concatenate([c[k] for c in chunks]) for k in whole}
    a = np.lexsort((whole[C.ITEM_ID], whole[C.USER_ID]))  # item order within a user is free
    b = np.lexsort((streamed[C.ITEM_ID], streamed[C.USER_ID]))
    for key, col in whole.items():
        np.testing.assert_array_equal(streamed[key][b], col[a])


def test_played_items_outside_the_catalog_get_collaborative_vectors(text_cache) -> None:
    """Two planted taste groups (items 0-19 and 20-39, each user plays one group); the catalog
    holds only 0-9 and 20-29. Uncatalogued items still get a collaborative vector, close to
    their own group's, and a zero content vector (no metadata); an events-only workspace
    (no catalog at all) embeds every played item the same way."""
    from representation.encoders import EncoderConfig, TextEmbedder, build_item_vectors
    from userrep.ingest.tables import ITEM_SCHEMA

    rng = np.random.default_rng(0)
    rows = []
    for user in range(80):
        group = user % 2
        for item in rng.choice(20, size=8, replace=False) + 20 * group:
            rows.append((user, int(item)))
    events = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID])
    listed = [*range(10), *range(20, 30)]
    catalog = pd.DataFrame(
        {
            C.ITEM_ID: listed,
            C.TITLE: [f"song {i}" for i in listed],
            C.ARTIST: ["band a" if i < 20 else "band b" for i in listed],
            C.GENRES: ["rock" if i < 20 else "jazz" for i in listed],
        }
    )
    cfg = EncoderConfig(collab_dim=8, content_dim=4, seed=0, min_item_count=1)
    vecs = build_item_vectors(events, catalog, None, cfg, TextEmbedder(text_cache), "v")
    np.testing.assert_array_equal(vecs.item_ids, np.arange(40))
    bare = np.array([i not in listed for i in range(40)])
    assert not vecs.content[bare].any() and (np.abs(vecs.content[~bare]).sum(1) > 0).all()
    assert set(vecs.genre_content) == {"rock", "jazz"}
    group = np.arange(40) // 20
    centroid = np.stack([vecs.collab[~bare & (group == g)].mean(0) for g in (0, 1)])  # (2, 8)
    nearest = np.argmax(vecs.collab[bare] @ centroid.T, axis=1)
    np.testing.assert_array_equal(nearest, group[bare])
    only_events = build_item_vectors(
        events, ITEM_SCHEMA.empty_table().to_pandas(), None, cfg, TextEmbedder(text_cache), "v"
    )
    assert len(only_events.item_ids) == 40 and not only_events.content.any()
    np.testing.assert_allclose(only_events.collab, vecs.collab)  # the events decide it alone


def _ratings(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            C.USER_ID: [u for u, _, _ in rows],
            C.ITEM_ID: [i for _, i, _ in rows],
            C.TS: [T - (k + 1) * DAY for k in range(len(rows))],
            C.WEIGHT: [w for _, _, w in rows],
        }
    )


@pytest.mark.parametrize("executor", ["sql", "numpy"])
def test_a_low_rating_is_evidence_against_its_item(executor: str) -> None:
    """User 1 rates items 0 and 2 with a 5 and item 1 with a 1: items 0 and 2 are liked, item 1
    disliked. User 2 plays three items once each: equal weights, everything liked."""
    import duckdb

    from nrt.aggregates import pair_aggregates as numpy_pairs

    events = _ratings(
        [(1, 0, 5.0), (1, 1, 1.0), (1, 2, 5.0), (2, 1, 1.0), (2, 2, 1.0), (2, 3, 1.0)]
    )
    horizons = C.DEFAULT_HORIZONS
    if executor == "sql":
        con = duckdb.connect()
        con.register("ev", events)
        pairs = feat.pair_aggregates(con, "ev", T, horizons)
    else:
        ts_us = events[C.TS].astype("int64").to_numpy() // 1000
        as_of = np.full(len(events), T.value // 1000)
        pairs = numpy_pairs(
            events[C.USER_ID].to_numpy(), events[C.ITEM_ID].to_numpy(), ts_us,
            events[C.WEIGHT].to_numpy(), as_of, horizons,
        )  # fmt: skip
    users, uidx = np.unique(pairs[C.USER_ID], return_inverse=True)
    vecs = planted_vectors()
    both = np.hstack([vecs.collab, vecs.content])  # (4, 8): one-hot collab, reversed content
    out = feat.preference_columns(
        pairs, uidx, len(users), vecs.index(pairs[C.ITEM_ID]), both, np.array([4]), horizons
    )
    np.testing.assert_allclose(out[C.liked_feature("collab")][0], [0.5, 0, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(out[C.disliked_feature("collab")][0], [0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[C.disliked_feature("content")][0], [0, 0, 1, 0], atol=1e-6)
    lw = np.log1p([5.0, 1.0, 5.0])
    assert out[C.LEVEL_MEAN][0] == pytest.approx(lw.mean(), rel=1e-6)
    assert out[C.LEVEL_STD][0] == pytest.approx(lw.std(), rel=1e-5)
    assert out[C.DISLIKED_SHARE][0] == pytest.approx(1 / 3)
    np.testing.assert_allclose(
        out[C.liked_feature("collab")][1], [0, 1 / 3, 1 / 3, 1 / 3], atol=1e-6
    )
    assert np.isnan(out[C.disliked_feature("collab")][1]).all()  # no dislike without a spread
    assert out[C.LEVEL_STD][1] == pytest.approx(0.0, abs=1e-6)
    assert out[C.DISLIKED_SHARE][1] == 0.0
