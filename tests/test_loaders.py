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
    EVENT_COLUMNS,
    EVENT_ID,
    GENDER,
    GENRES,
    ITEM_COLUMNS,
    ITEM_ID,
    SIGNUP_TS,
    TS,
    USER_COLUMNS,
    USER_ID,
    WEIGHT,
)
from userrep.data.loaders import (
    DATASETS_ENV,
    Dataset,
    dataset_dir,
    load_dataset,
    load_lastfm_2k,
    load_movielens_100k,
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


@pytest.mark.dataset
def test_lastfm_times_are_deterministic(lastfm: Dataset) -> None:
    again = load_dataset("lastfm-2k")
    assert np.array_equal(again.events[TS].to_numpy(), lastfm.events[TS].to_numpy())


@pytest.mark.dataset
@pytest.mark.parametrize("name", ["movielens", "lastfm"])
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
