"""Built-in dataset loaders: known counts, parseable times, and ingest accepts every row.

The data sets are licensed and never copied into the repo: these tests read them from
`dataset_dir()` ($USERREP_DATASETS or ../shared/datasets) and skip when absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from userrep.columns import (
    AGE,
    ARTIST_ID,
    COUNTRY,
    EVENT_COLUMNS,
    EVENT_ID,
    EVENT_TYPE,
    GENDER,
    GENRES,
    ITEM_COLUMNS,
    ITEM_ID,
    ONBOARDING_ITEMS,
    SIGNUP_TS,
    TITLE,
    TS,
    USER_COLUMNS,
    USER_ID,
    WEIGHT,
)
from userrep.data.loaders import (
    CIAO_MIN_ITEM_USERS,
    CIAO_MIN_USER_ITEMS,
    DATASET_DIRS,
    DATASETS_ENV,
    LOADERS,
    TAFENG_AGE,
    Dataset,
    dataset_dir,
    k_core,
    load_ciao,
    load_dataset,
    load_lastfm_2k,
    load_movielens_100k,
    load_movietweetings_100k,
    load_tafeng,
)
from userrep.ingest import FRIEND_ID, ingest_event_frame, ingest_friends, ingest_items, ingest_users
from userrep.settings import Settings


def _load(name: str, loader) -> Dataset:
    directory = dataset_dir(name)
    if directory is None:
        pytest.skip(f"{name} not found: set {DATASETS_ENV} to a folder holding it")
    return loader(directory)


@pytest.fixture(scope="module")
def movielens() -> Dataset:
    return _load("movielens-100k", load_movielens_100k)


@pytest.fixture(scope="module")
def lastfm() -> Dataset:
    return _load("lastfm-2k", load_lastfm_2k)


@pytest.fixture(scope="module")
def tafeng() -> Dataset:
    return _load("tafeng", load_tafeng)


@pytest.fixture(scope="module")
def ciao() -> Dataset:
    return _load("ciao", load_ciao)


@pytest.fixture(scope="module")
def movietweetings() -> Dataset:
    return _load("movietweetings-100k", load_movietweetings_100k)


# fixture name -> short name, for the checks every newer loader shares
NEW = {"tafeng": "tafeng", "ciao": "ciao", "movietweetings": "movietweetings-100k"}


def assert_canonical(ds: Dataset) -> None:
    assert list(ds.events.columns) == list(EVENT_COLUMNS)
    assert list(ds.users.columns) == list(USER_COLUMNS)
    assert list(ds.items.columns) == list(ITEM_COLUMNS)
    assert str(ds.events[TS].dtype) == "datetime64[ns, UTC]"
    assert ds.events[TS].notna().all()
    assert ds.events[EVENT_ID].is_unique
    assert set(ds.events[ITEM_ID]) <= set(ds.items[ITEM_ID])
    assert set(ds.events[USER_ID]) == set(ds.users[USER_ID])
    first = ds.events.groupby(USER_ID)[TS].min()
    assert (ds.users.set_index(USER_ID)[SIGNUP_TS] == first).all()
    for col in (USER_ID, ITEM_ID):
        assert ds.events[col].dtype == np.int64
    assert ds.events[WEIGHT].dtype == np.float64
    assert ds.users[USER_ID].is_unique and ds.items[ITEM_ID].is_unique
    assert ds.users[AGE].dtype == np.float64
    assert str(ds.users[SIGNUP_TS].dtype) == "datetime64[ns, UTC]"
    assert str(ds.items[ARTIST_ID].dtype) == "Int64"
    for frame, col in ((ds.users, GENDER), (ds.users, COUNTRY), (ds.items, TITLE)):
        assert frame[col].map(type).eq(str).all(), col
    assert ds.items[GENRES].map(type).eq(str).all()
    assert ds.users[ONBOARDING_ITEMS].map(len).eq(0).all()
    if ds.rating_scale is not None:
        lo, hi = ds.rating_scale
        assert ds.events[WEIGHT].between(lo, hi).all()
    else:
        assert (ds.events[WEIGHT] > 0).all()
    if ds.friends is not None:
        assert list(ds.friends.columns) == [USER_ID, FRIEND_ID]
        assert set(ds.friends[USER_ID]) | set(ds.friends[FRIEND_ID]) <= set(ds.users[USER_ID])
        assert not ds.friends.duplicated().any()


@pytest.mark.dataset
def test_movielens_counts_and_columns(movielens: Dataset) -> None:
    assert (len(movielens.events), len(movielens.users), len(movielens.items)) == (
        100_000,
        943,
        1_682,
    )
    assert_canonical(movielens)
    assert set(movielens.events[WEIGHT]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(movielens.users[GENDER]) == {"m", "f"}
    assert movielens.users[AGE].between(7, 73).all()
    assert movielens.items[ARTIST_ID].isna().all()
    toy_story = movielens.items.set_index(ITEM_ID).loc[1]
    assert toy_story[GENRES] == "Animation|Children's|Comedy"
    assert movielens.friends is None
    assert (movielens.rating_scale, movielens.real_timestamps) == ((1.0, 5.0), True)


@pytest.mark.dataset
def test_lastfm_counts_friends_and_made_up_times(lastfm: Dataset) -> None:
    assert (len(lastfm.events), len(lastfm.users)) == (92_834, 1_892)
    assert_canonical(lastfm)
    assert lastfm.friends is not None and len(lastfm.friends) > 0
    assert list(lastfm.friends.columns) == [USER_ID, FRIEND_ID]
    assert (lastfm.items[ITEM_ID] == lastfm.items[ARTIST_ID]).all()
    assert (lastfm.items[GENRES] != "").mean() > 0.5
    ts = lastfm.events[TS]
    assert ts.min() >= pd.Timestamp("2005-01-01", tz="UTC")
    assert ts.max() < pd.Timestamp("2012-01-01", tz="UTC")
    assert lastfm.users[AGE].isna().all()
    assert (lastfm.rating_scale, lastfm.real_timestamps) == (None, False)


@pytest.mark.dataset
def test_lastfm_times_are_deterministic(lastfm: Dataset) -> None:
    again = load_dataset("lastfm-2k")
    assert np.array_equal(again.events[TS].to_numpy(), lastfm.events[TS].to_numpy())


@pytest.mark.dataset
def test_tafeng_purchases_and_demographics(tafeng: Dataset) -> None:
    assert (len(tafeng.events), len(tafeng.users), len(tafeng.items)) == (817_741, 32_266, 23_812)
    assert_canonical(tafeng)
    assert (tafeng.rating_scale, tafeng.real_timestamps, tafeng.friends) == (None, True, None)
    assert set(tafeng.events[EVENT_TYPE]) == {"purchase"}
    ts = tafeng.events[TS]
    assert (ts.min(), ts.max()) == (
        pd.Timestamp("2000-11-01", tz="UTC"),
        pd.Timestamp("2001-02-28", tz="UTC"),
    )
    assert (ts == ts.dt.normalize()).all()  # day-level: midnight UTC
    assert tafeng.events.duplicated([USER_ID, ITEM_ID, TS]).sum() == 0
    age = tafeng.users[AGE]
    assert set(age.dropna()) == set(TAFENG_AGE.values())
    assert age.isna().sum() == 626
    areas = tafeng.users[COUNTRY].value_counts()
    assert set(areas.index) == {"105", "106", "110", "114", "115", "221", "Others", ""}
    assert (areas["115"], areas[""]) == (10_803, 1_453)
    assert (tafeng.users[GENDER] == "").all()
    assert tafeng.items[GENRES].str.fullmatch(r"\d+(\|\d+)*").all()  # subclass codes


@pytest.mark.dataset
def test_ciao_k_core_ratings_and_trust(ciao: Dataset) -> None:
    assert_canonical(ciao)
    assert (len(ciao.events), len(ciao.users), len(ciao.items)) == (141_893, 5_858, 10_685)
    assert (ciao.rating_scale, ciao.real_timestamps) == ((1.0, 5.0), True)
    assert set(ciao.events[WEIGHT]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(ciao.events[EVENT_TYPE]) == {"rating"}
    ev = ciao.events
    assert not ev.duplicated([USER_ID, ITEM_ID]).any()  # repeated ratings: the latest kept
    assert ev.groupby(ITEM_ID)[USER_ID].nunique().min() >= CIAO_MIN_ITEM_USERS
    assert ev.groupby(USER_ID)[ITEM_ID].nunique().min() >= CIAO_MIN_USER_ITEMS
    assert set(ev[ITEM_ID]) == set(ciao.items[ITEM_ID])  # the catalog is cut to the core
    assert ev[TS].min() >= pd.Timestamp("2000-05-01", tz="UTC")
    assert ev[TS].max() < pd.Timestamp("2011-05-01", tz="UTC")
    assert (ciao.items[GENRES] != "").all()
    assert {"DVDs", "Books"} <= set(ciao.items[GENRES])
    assert ciao.friends is not None and len(ciao.friends) > 50_000
    assert (ciao.friends[USER_ID] != ciao.friends[FRIEND_ID]).all()


@pytest.mark.dataset
def test_movietweetings_ratings_and_movies(movietweetings: Dataset) -> None:
    mt = movietweetings
    assert (len(mt.events), len(mt.users), len(mt.items)) == (100_000, 16_554, 10_506)
    assert_canonical(mt)
    assert (mt.rating_scale, mt.real_timestamps, mt.friends) == ((0.0, 10.0), True, None)
    assert set(mt.events[WEIGHT]) == {float(r) for r in range(11)}
    ts = mt.events[TS]
    assert ts.min() >= pd.Timestamp("2013-02-28", tz="UTC")
    assert ts.max() < pd.Timestamp("2013-09-02", tz="UTC")
    assert mt.events.groupby(USER_ID).size().median() == 2
    bank = mt.items.set_index(ITEM_ID).loc[4936]  # "0004936" in the files
    assert (bank[TITLE], bank[GENRES]) == ("The Bank (1915)", "Comedy|Short")
    assert (mt.items[GENRES] == "").sum() == 66


@pytest.mark.dataset
@pytest.mark.parametrize("fixture", sorted(NEW))
def test_new_loaders_are_deterministic_and_registered(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    ds: Dataset = request.getfixturevalue(fixture)
    name = NEW[fixture]
    assert name in LOADERS and dataset_dir(name) == dataset_dir(DATASET_DIRS[name])
    again = load_dataset(name)
    pd.testing.assert_frame_equal(again.events, ds.events)
    pd.testing.assert_frame_equal(again.users, ds.users)
    pd.testing.assert_frame_equal(again.items, ds.items)
    if ds.friends is not None:
        pd.testing.assert_frame_equal(again.friends, ds.friends)


def test_k_core_iterates_until_both_thresholds_hold() -> None:
    # one pass keeps item 5 (users 2 and 4) but drops user 4 (one item), leaving item 5 with a
    # single user; the second pass drops it, and then user 2 (one item left)
    frame = pd.DataFrame({USER_ID: [1, 1, 2, 2, 3, 3, 4], ITEM_ID: [1, 2, 2, 5, 1, 2, 5]})
    kept = k_core(frame, min_item_users=2, min_user_items=2)
    pairs = sorted(zip(kept[USER_ID], kept[ITEM_ID], strict=True))
    assert pairs == [(1, 1), (1, 2), (3, 1), (3, 2)]
    assert k_core(frame, 3, 3).empty


def test_movietweetings_format_edge_cases(tmp_path: Path) -> None:
    """Zero-padded ids, "::" inside a title, a movie with no genre, an unrated movie."""
    (tmp_path / "ratings.dat").write_text("1::0000012::10::1362062307\n2::0000012::0::1362062400\n")
    (tmp_path / "movies.dat").write_text(
        "0000012::Star Wars: Episode I::Rogue (1999)::Sci-Fi|Action\n0000099::Mute (2001)::\n",
        encoding="utf-8",
    )
    ds = load_movietweetings_100k(tmp_path)
    assert_canonical(ds)
    items = ds.items.set_index(ITEM_ID)
    assert items.loc[12, TITLE] == "Star Wars: Episode I::Rogue (1999)"
    assert items.loc[12, GENRES] == "Sci-Fi|Action"
    assert items.loc[99, GENRES] == ""
    assert list(ds.events[WEIGHT]) == [10.0, 0.0]
    assert ds.events[TS].iloc[0] == pd.Timestamp(1362062307, unit="s", tz="UTC")


@pytest.mark.dataset
@pytest.mark.parametrize("name", ["movielens", "lastfm", *sorted(NEW)])
def test_ingest_accepts_every_row(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ds: Dataset = request.getfixturevalue(name)
    paths = Settings(workspace=tmp_path / "ws").paths.ensure()
    reports = [
        ingest_event_frame(paths, ds.events, name),
        ingest_users(paths, ds.users),
        ingest_items(paths, ds.items),
    ]
    if ds.friends is not None:
        reports.append(ingest_friends(paths, ds.friends))
    for report in reports:
        assert (report.accepted, report.quarantined) == (report.read, 0), report
    assert ingest_event_frame(paths, ds.events, name).accepted == 0


def test_dataset_dir_prefers_env_and_returns_none_when_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ml-100k").mkdir()
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    assert dataset_dir("movielens-100k") == tmp_path / "ml-100k"
    assert dataset_dir("ml-100k") == tmp_path / "ml-100k"
    assert dataset_dir("no-such-dataset") is None
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("no-such-dataset")
