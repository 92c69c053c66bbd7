"""Tests of the synthetic simulator: determinism, schema, time window and the planted structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from userrep.columns import (
    ARTIST_ID,
    CLUSTER,
    EVENT_COLUMNS,
    EVENT_ID,
    EVENT_TYPE,
    GENRES,
    ITEM_COLUMNS,
    ITEM_ID,
    ONBOARDING_GENRES,
    ONBOARDING_ITEMS,
    SIGNUP_TS,
    TITLE,
    TS,
    USER_COLUMNS,
    USER_ID,
    WEIGHT,
)
from userrep.data.synthetic import (
    DRIFT_CLUSTER,
    IS_NEW,
    NEW_USER_DAYS,
    USER_BLOCK,
    SyntheticConfig,
    SyntheticData,
    generate,
    iter_event_chunks,
    write,
)

TINY = SyntheticConfig(n_users=300, n_items=200, n_artists=40, events_per_user=20.0, seed=3)


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(TINY)


def _frames(d: SyntheticData) -> list[pd.DataFrame]:
    return [d.events, d.users, d.items, d.user_truth, d.item_truth]


def test_same_seed_same_data(data: SyntheticData) -> None:
    for a, b in zip(_frames(data), _frames(generate(TINY)), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_different_seed_different_data(data: SyntheticData) -> None:
    other = generate(SyntheticConfig(**{**TINY.__dict__, "seed": 4}))
    assert not data.events[ITEM_ID].equals(other.events[ITEM_ID])
    assert not data.items[TITLE].equals(other.items[TITLE])
    assert not data.user_truth[CLUSTER].equals(other.user_truth[CLUSTER])


def test_schema_and_dtypes(data: SyntheticData) -> None:
    ev, users, items = data.events, data.users, data.items
    assert tuple(ev.columns) == EVENT_COLUMNS
    assert tuple(users.columns) == USER_COLUMNS
    assert tuple(items.columns) == ITEM_COLUMNS
    for df, col in [(ev, USER_ID), (ev, ITEM_ID), (users, USER_ID), (items, ITEM_ID)]:
        assert df[col].dtype == np.int64
    assert str(ev[TS].dtype) == "datetime64[ns, UTC]"
    assert str(users[SIGNUP_TS].dtype) == "datetime64[ns, UTC]"
    assert ev[WEIGHT].dtype == np.float64
    assert set(ev[EVENT_TYPE]) == {"play"}
    assert set(users["gender"]) <= {"f", "m", "x"}
    assert users["age"].between(15, 70).all()
    assert all(isinstance(x, list) for x in users[ONBOARDING_ITEMS])
    assert set(users[USER_ID]) == set(range(TINY.n_users))
    assert set(ev[ITEM_ID]) <= set(items[ITEM_ID])
    assert list(data.user_truth.columns) == [USER_ID, CLUSTER, DRIFT_CLUSTER, IS_NEW]
    assert list(data.item_truth.columns) == [ITEM_ID, CLUSTER, ARTIST_ID]


def test_event_ids_unique_and_weights_positive(data: SyntheticData) -> None:
    assert data.events[EVENT_ID].is_unique
    assert data.events[EVENT_ID].str.startswith(f"s{TINY.seed}-").all()
    assert (data.events[WEIGHT] > 0).all()
    assert data.events.groupby(USER_ID).size().min() >= 1


def test_events_after_signup_and_inside_window(data: SyntheticData) -> None:
    start = pd.Timestamp(TINY.start, tz="UTC")
    end = start + pd.Timedelta(days=TINY.days)
    ev = data.events.merge(data.users[[USER_ID, SIGNUP_TS]], on=USER_ID)
    assert (ev[TS] >= ev[SIGNUP_TS]).all()
    assert ev[TS].between(start, end).all()
    assert data.users[SIGNUP_TS].between(start, end).all()


def test_new_users_sign_up_in_last_week_with_few_events(data: SyntheticData) -> None:
    end = pd.Timestamp(TINY.start, tz="UTC") + pd.Timedelta(days=TINY.days)
    users = data.users.merge(data.user_truth, on=USER_ID)
    new = users[users[IS_NEW]]
    assert 0 < len(new) < len(users)
    assert (new[SIGNUP_TS] >= end - pd.Timedelta(days=NEW_USER_DAYS)).all()
    assert (users.loc[~users[IS_NEW], SIGNUP_TS] < end - pd.Timedelta(days=NEW_USER_DAYS)).all()
    counts = data.events.groupby(USER_ID).size()
    assert counts[new[USER_ID]].mean() < counts.drop(new[USER_ID]).mean() / 2


def test_events_mostly_in_primary_cluster(data: SyntheticData) -> None:
    ev = data.events.merge(data.item_truth[[ITEM_ID, CLUSTER]], on=ITEM_ID)
    primary = data.user_truth.set_index(USER_ID)[CLUSTER]
    in_primary = ev[CLUSTER].to_numpy() == primary[ev[USER_ID]].to_numpy()
    per_user = pd.Series(in_primary).groupby(ev[USER_ID].to_numpy()).mean()
    assert per_user.mean() > 0.6 > 1 / TINY.n_clusters


def test_taste_drifts_toward_drift_cluster() -> None:
    cfg = SyntheticConfig(n_users=400, events_per_user=40.0, drift=0.5, seed=1)
    d = generate(cfg)
    ev = d.events.merge(d.item_truth[[ITEM_ID, CLUSTER]], on=ITEM_ID)
    drift = d.user_truth.set_index(USER_ID)[DRIFT_CLUSTER][ev[USER_ID]].to_numpy()
    to_drift = pd.Series(ev[CLUSTER].to_numpy() == drift)
    start = pd.Timestamp(cfg.start, tz="UTC")
    early = (ev[TS] < start + pd.Timedelta(days=60)).to_numpy()
    late = (ev[TS] > start + pd.Timedelta(days=cfg.days - 60)).to_numpy()
    assert to_drift[late].mean() > 3 * to_drift[early].mean()


def test_onboarding_items_mostly_from_user_cluster(data: SyntheticData) -> None:
    item_cluster = data.item_truth.set_index(ITEM_ID)[CLUSTER]
    users = data.users.merge(data.user_truth, on=USER_ID).explode(ONBOARDING_ITEMS)
    users = users.dropna(subset=[ONBOARDING_ITEMS])
    same = item_cluster[users[ONBOARDING_ITEMS].astype(np.int64)].to_numpy() == users[CLUSTER]
    assert same.mean() > 0.75
    genre_of = {c: g.split("|")[0] for c, g in zip(item_cluster, data.items[GENRES], strict=True)}
    first_genre = data.users[ONBOARDING_GENRES].str[0]
    assert (first_genre == data.user_truth[CLUSTER].map(genre_of)).all()


def test_content_text_carries_genre_sometimes(data: SyntheticData) -> None:
    genre = data.items[GENRES].str.split("|").str[0]
    text = (data.items[TITLE] + " " + data.items["artist"]).str.lower()
    named = [g.replace("hiphop", "hip-hop") in t for g, t in zip(genre, text, strict=True)]
    assert 0.2 < np.mean(named) < 0.9


@pytest.mark.parametrize("users_per_chunk", [USER_BLOCK, 100_000])
def test_chunks_concatenate_to_generate(users_per_chunk: int) -> None:
    cfg = SyntheticConfig(n_users=USER_BLOCK + 300, events_per_user=5.0, seed=7)
    chunks = list(iter_event_chunks(cfg, users_per_chunk=users_per_chunk))
    assert len(chunks) == (2 if users_per_chunk == USER_BLOCK else 1)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), generate(cfg).events)


def test_write_round_trips(data: SyntheticData, tmp_path: Path) -> None:
    write(data, tmp_path)
    for name, df in [("events", data.events), ("users", data.users), ("items", data.items)]:
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert list(back.columns) == list(df.columns) and len(back) == len(df)
    back = pd.read_parquet(tmp_path / "users.parquet")
    assert list(back[ONBOARDING_ITEMS].iloc[0]) == data.users[ONBOARDING_ITEMS].iloc[0]
    assert len(pd.read_parquet(tmp_path / "truth" / "users.parquet")) == TINY.n_users
    assert len(pd.read_parquet(tmp_path / "truth" / "items.parquet")) == TINY.n_items


def test_invalid_config_rejected() -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(n_clusters=1)
    with pytest.raises(ValueError):
        SyntheticConfig(days=5)
