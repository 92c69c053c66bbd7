"""Built-in datasets -> canonical event / user / item / friend frames, ready for ingest.

MovieLens 100K: events are ratings (weight = rating 1-5, event_type "rating"); each user's
signup_ts is their first rating; age and gender are the onboarding signals, country is "US"
(the data is from US users; zip codes are not used); onboarding item / genre lists are empty.

HetRec 2011 Last.fm 2K: items are ARTISTS (item_id = artist_id = artistID, title = artist =
name, genres = the artist's 5 most used tags, "|"-joined); events are (user, artist) pairs with
weight = play count and event_type "play". The data has no listening times, so ts is made up,
deterministically (fixed seed): the day the user first tagged that artist, if they did, plus a
random time of day; otherwise a random time within that user's tagging span, or within the
whole data set's tagging span for users who never tagged. Tag dates before 2005 are ignored as
implausible (Last.fm tags started then; the file holds a few from 1956-1979). signup_ts is the
user's earliest event; there are no demographics (age NaN, gender "", country ""). Friends come
from user_friends.dat. The files are licensed: read them from `dataset_dir()`, never copy them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from userrep.columns import (
    AGE,
    ARTIST,
    ARTIST_ID,
    COUNTRY,
    EVENT_COLUMNS,
    EVENT_ID,
    EVENT_TYPE,
    GENDER,
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
from userrep.ingest import FRIEND_ID, event_ids
from userrep.settings import REPO_ROOT

DATASETS_ENV = "USERREP_DATASETS"
# short name -> folder name under the datasets directory
DATASET_DIRS = {"movielens-100k": "ml-100k", "lastfm-2k": "hetrec2011-lastfm-2k"}
LASTFM_TOP_TAGS = 5  # tags per artist kept as its "genres"
LASTFM_FIRST_TAG_DAY = pd.Timestamp("2005-01-01", tz="UTC")  # earlier tag dates are noise
LASTFM_TS_SEED = 2011
DAY_NS = 86_400 * 10**9


@dataclass
class Dataset:
    """One data set in canonical columns (see userrep.columns)."""

    events: pd.DataFrame  # EVENT_COLUMNS
    users: pd.DataFrame  # USER_COLUMNS
    items: pd.DataFrame  # ITEM_COLUMNS
    friends: pd.DataFrame | None = None  # user_id, friend_id (int64)


def dataset_dir(name: str) -> Path | None:
    """Folder of a data set (short or folder name) in $USERREP_DATASETS or ../shared/datasets."""
    folder = DATASET_DIRS.get(name, name)
    roots = [Path(os.environ[DATASETS_ENV])] if os.environ.get(DATASETS_ENV) else []
    roots.append(REPO_ROOT.parent / "shared" / "datasets")
    for root in roots:
        if (root / folder).is_dir():
            return root / folder
    return None


def _events(
    user: pd.Series, item: pd.Series, ts: pd.Series, weight: pd.Series, event_type: str
) -> pd.DataFrame:
    """Canonical events, sorted by user then time, with ingest's deterministic event ids."""
    frame = pd.DataFrame(
        {
            USER_ID: user.astype(np.int64).to_numpy(),
            ITEM_ID: item.astype(np.int64).to_numpy(),
            TS: ts.to_numpy(),
            WEIGHT: weight.astype(np.float64).to_numpy(),
            EVENT_TYPE: event_type,
        }
    )
    frame = frame.sort_values([USER_ID, TS, ITEM_ID], ignore_index=True)
    frame[EVENT_ID] = event_ids(frame)
    return frame[list(EVENT_COLUMNS)]


def _users(
    events: pd.DataFrame, age: pd.Series, gender: pd.Series, country: pd.Series
) -> pd.DataFrame:
    """Canonical users: signup_ts = first event; demographics indexed by user_id."""
    first = events.groupby(USER_ID)[TS].min()
    users = pd.DataFrame({USER_ID: first.index.to_numpy(np.int64), SIGNUP_TS: first.to_numpy()})
    users[AGE] = age.reindex(first.index).astype(np.float64).to_numpy()
    users[GENDER] = gender.reindex(first.index).fillna("").to_numpy(object)
    users[COUNTRY] = country.reindex(first.index).fillna("").to_numpy(object)
    users[ONBOARDING_ITEMS] = [[] for _ in range(len(users))]
    users[ONBOARDING_GENRES] = [[] for _ in range(len(users))]
    return users[list(USER_COLUMNS)]


def load_movielens_100k(directory: Path) -> Dataset:
    """MovieLens 100K (u.data, u.user, u.item, u.genre) as canonical frames."""
    d = Path(directory)
    data = pd.read_csv(d / "u.data", sep="\t", names=["u", "i", "r", "t"], dtype=np.int64)
    events = _events(data.u, data.i, pd.to_datetime(data.t, unit="s", utc=True), data.r, "rating")
    demo = pd.read_csv(
        d / "u.user",
        sep="|",
        names=["id", "age", "gender", "occ", "zip"],
        index_col="id",
        dtype={"zip": str},
    )
    users = _users(events, demo.age, demo.gender.str.lower(), pd.Series("US", index=demo.index))
    genre_names = pd.read_csv(d / "u.genre", sep="|", names=["name", "idx"]).sort_values("idx")
    raw = pd.read_csv(
        d / "u.item", sep="|", header=None, encoding="latin-1", quoting=csv.QUOTE_NONE
    )
    flags = raw.iloc[:, 5 : 5 + len(genre_names)].to_numpy(bool)
    names = genre_names.name.to_numpy()
    items = pd.DataFrame(
        {
            ITEM_ID: raw[0].astype(np.int64),
            TITLE: raw[1].fillna("").astype(str),
            ARTIST_ID: pd.array([pd.NA] * len(raw), dtype="Int64"),
            ARTIST: "",
            GENRES: ["|".join(names[row]) for row in flags],
        }
    )
    return Dataset(events, users, items[list(ITEM_COLUMNS)])


def _read_lastfm(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    return pd.read_csv(
        path, sep="\t", encoding=encoding, encoding_errors="replace", quoting=csv.QUOTE_NONE
    )


def _lastfm_ts(plays: pd.DataFrame, tagged: pd.DataFrame, seed: int) -> pd.Series:
    """Made-up event times (UTC, whole seconds); see the module docstring for the rule."""
    dates = pd.to_datetime(tagged[["year", "month", "day"]], errors="coerce", utc=True)
    tagged = tagged.assign(date=dates)[dates >= LASTFM_FIRST_TAG_DAY]
    first = tagged.groupby(["userID", "artistID"]).date.min().rename("first")
    span = tagged.groupby("userID").date.agg(["min", "max"])
    rows = plays.join(first, on=["userID", "artistID"]).join(span, on="userID")
    lo = rows["min"].fillna(tagged.date.min()).astype("int64").to_numpy()
    hi = rows["max"].fillna(tagged.date.max()).astype("int64").to_numpy() + DAY_NS
    u = np.random.default_rng(seed).random(len(rows))  # one draw per (user, artist), in order
    tagged_day = rows["first"].notna().to_numpy()
    first_ns = rows["first"].fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy()
    ns = np.where(tagged_day, first_ns + u * DAY_NS, lo + u * (hi - lo))
    seconds = (ns // 10**9).astype(np.int64)  # whole seconds, like real play logs
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True), index=plays.index)


def _lastfm_genres(tagged: pd.DataFrame, tags: pd.DataFrame) -> pd.Series:
    """Artist -> its most used tags, "|"-joined (ties broken by tag id)."""
    counts = tagged.groupby(["artistID", "tagID"]).size().rename("n").reset_index()
    counts = counts.sort_values(["artistID", "n", "tagID"], ascending=[True, False, True])
    top = counts.groupby("artistID").head(LASTFM_TOP_TAGS)
    text = tags.set_index("tagID").tagValue.astype(str).str.replace("|", "/").str.strip()
    top = top.assign(tag=top.tagID.map(text)).dropna(subset=["tag"])
    return top.groupby("artistID", sort=False).tag.agg("|".join)


def load_lastfm_2k(directory: Path, seed: int = LASTFM_TS_SEED) -> Dataset:
    """HetRec 2011 Last.fm 2K as canonical frames; items are artists."""
    d = Path(directory)
    plays = _read_lastfm(d / "user_artists.dat").sort_values(["userID", "artistID"])
    plays = plays.reset_index(drop=True)
    tagged = _read_lastfm(d / "user_taggedartists.dat")
    events = _events(
        plays.userID, plays.artistID, _lastfm_ts(plays, tagged, seed), plays.weight, "play"
    )
    none = pd.Series(dtype=object)
    users = _users(events, pd.Series(dtype=np.float64), none, none)
    artists = _read_lastfm(d / "artists.dat").drop_duplicates("id").set_index("id")
    ids = np.union1d(artists.index.to_numpy(np.int64), plays.artistID.unique())
    names = artists.name.reindex(ids).fillna("").astype(str).to_numpy(object)
    genres = _lastfm_genres(tagged, _read_lastfm(d / "tags.dat", encoding="latin-1"))
    items = pd.DataFrame(
        {
            ITEM_ID: ids,
            TITLE: names,
            ARTIST_ID: pd.array(ids, dtype="Int64"),
            ARTIST: names,
            GENRES: genres.reindex(ids).fillna("").to_numpy(object),
        }
    )
    pairs = _read_lastfm(d / "user_friends.dat")
    friends = pd.DataFrame(
        {USER_ID: pairs.userID.astype(np.int64), FRIEND_ID: pairs.friendID.astype(np.int64)}
    )
    return Dataset(events, users, items, friends)


LOADERS: dict[str, Callable[[Path], Dataset]] = {
    "movielens-100k": load_movielens_100k,
    "lastfm-2k": load_lastfm_2k,
}


def load_dataset(name: str, directory: Path | None = None) -> Dataset:
    """Load a built-in data set by short name from `directory` or `dataset_dir(name)`."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}: choose from {sorted(LOADERS)}")
    directory = directory or dataset_dir(name)
    if directory is None:
        raise FileNotFoundError(
            f"{name} not found: set ${DATASETS_ENV} to a folder holding {DATASET_DIRS[name]}/"
        )
    return LOADERS[name](directory)
