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
from user_friends.dat.

Ta-Feng (grocery, Nov 2000 - Feb 2001, `ta_feng.csv.zip` read as is): events are purchases
(event_type "purchase", weight = quantity bought, AMOUNT); rows of one customer, day and product
are summed into one event. Times are day-level (midnight UTC of the transaction date; the
release's time of day is invalid). items: product ids, genres = product subclass code(s), no
title. users: AGE holds a representative number for the age group (TAFENG_AGE: the middle of the
5-year band, 22 for "<25", 67 for ">65", NaN where missing), because the users frame's AGE is a
float; COUNTRY holds the residence area ("105", ..., "221", "Others"; "" for "Unknown"), the
nearest location column; gender "" (not in the data).

Ciao (Tang et al., product ratings 2000-2011): events are explicit 1-5 ratings (event_type
"rating", weight = rating), day-level times. Cleaning, in this order: the 34 ratings of 0 (off
the 1-5 scale) are dropped; of repeated (user, product) pairs only the latest rating is kept
(the last row in the file among equal times); then the iterated k-core keeps items rated by at
least CIAO_MIN_ITEM_USERS users and users with at least CIAO_MIN_USER_ITEMS ratings, repeated
until both hold, because the full catalog (105k products, most rated once) is too large and
sparse for dense baselines; with 5 and 5 it keeps 5,858 of 7,375 users, 10,685 of 105,114
products and 141,893 of 284,086 ratings (logged on every load). items: kept products, genres = category name(s) from
catalog_ciao.txt, no title. Friends: trust.csv's directed edges (user_id trusts friend_id)
between kept users. No demographics.

MovieTweetings 100K (IMDb ratings tweeted Feb - Sep 2013): events are explicit 0-10 ratings
(event_type "rating", weight = rating), times to the second. items: every movie in movies.dat
(item_id = numeric IMDb id, title with year, genres as given). No demographics, no friends.
Very sparse (median 2 ratings per user), so most users fall below an evaluation's minimum
history; the loader keeps them all, like every event a real platform would ingest.

The files are licensed: read them from `dataset_dir()`, never copy them.
"""

from __future__ import annotations

import csv
import logging
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
DATASET_DIRS = {
    "movielens-100k": "ml-100k",
    "lastfm-2k": "hetrec2011-lastfm-2k",
    "tafeng": "tafeng",
    "ciao": "ciao",
    "movietweetings-100k": "movietweetings-100k",
}
LASTFM_TOP_TAGS = 5  # tags per artist kept as its "genres"
LASTFM_FIRST_TAG_DAY = pd.Timestamp("2005-01-01", tz="UTC")  # earlier tag dates are noise
LASTFM_TS_SEED = 2011
DAY_NS = 86_400 * 10**9
# Ta-Feng age group -> a representative age (middle of the band; open-ended bands one band out)
TAFENG_AGE = {
    "<25": 22.0,
    "25-29": 27.0,
    "30-34": 32.0,
    "35-39": 37.0,
    "40-44": 42.0,
    "45-49": 47.0,
    "50-54": 52.0,
    "55-59": 57.0,
    "60-64": 62.0,
    ">65": 67.0,
}
TAFENG_UNKNOWN_AREA = "Unknown"  # stored as "" like every other missing country
# Ciao k-core: kept items have >= this many raters, kept users >= this many ratings (iterated)
CIAO_MIN_ITEM_USERS = 5
CIAO_MIN_USER_ITEMS = 5

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """One data set in canonical columns (see userrep.columns)."""

    events: pd.DataFrame  # EVENT_COLUMNS
    users: pd.DataFrame  # USER_COLUMNS
    items: pd.DataFrame  # ITEM_COLUMNS
    friends: pd.DataFrame | None = None  # user_id, friend_id (int64)
    # (min, max) of explicit ratings; None where events are implicit (plays, purchases)
    rating_scale: tuple[float, float] | None = None
    real_timestamps: bool = True  # False where event times are made up (Last.fm 2K)


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
            TS: pd.DatetimeIndex(ts),  # keeps the tz; .to_numpy() would box every Timestamp
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
    return Dataset(events, users, items[list(ITEM_COLUMNS)], rating_scale=(1.0, 5.0))


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
    return Dataset(events, users, items, friends, real_timestamps=False)


def _joined(keys: pd.Series, values: pd.Series) -> pd.Series:
    """key -> its distinct values, stripped, sorted and "|"-joined (items under several)."""
    pairs = pd.DataFrame({"k": keys.to_numpy(), "v": values.astype(str).to_numpy()})
    pairs = pairs.drop_duplicates()
    pairs = pairs.assign(v=pairs.v.str.strip().str.replace("|", "/")).drop_duplicates()
    pairs = pairs.sort_values(["k", "v"])
    several = pairs.k.duplicated(keep=False).to_numpy()
    # joining group by group is slow: only the few keys with several values take that path
    single = pairs[~several].set_index("k").v
    joined = pairs[several].groupby("k").v.agg("|".join)
    return pd.concat([single, joined]).sort_index()


def _items(ids: np.ndarray, titles: pd.Series | None, genres: pd.Series) -> pd.DataFrame:
    """Canonical items without artists; titles / genres indexed by item_id ("" where absent)."""
    none = pd.Series(dtype=object)
    return pd.DataFrame(
        {
            ITEM_ID: ids.astype(np.int64),
            TITLE: (none if titles is None else titles).reindex(ids).fillna("").to_numpy(object),
            ARTIST_ID: pd.array([pd.NA] * len(ids), dtype="Int64"),
            ARTIST: "",
            GENRES: genres.reindex(ids).fillna("").to_numpy(object),
        }
    )[list(ITEM_COLUMNS)]


def load_tafeng(directory: Path) -> Dataset:
    """Ta-Feng grocery purchases (ta_feng.csv.zip) as canonical frames; see the module docstring."""
    raw = pd.read_csv(
        Path(directory) / "ta_feng.csv.zip",
        encoding="utf-8-sig",  # the CSV starts with a byte-order mark
        keep_default_na=False,  # a missing age group stays "" rather than NaN
        # zero-padded customer ids and barcodes parse straight to int64 (no two collide)
        dtype={"CUSTOMER_ID": np.int64, "PRODUCT_ID": np.int64, "AMOUNT": np.float64}
        | {c: str for c in ("TRANSACTION_DT", "AGE_GROUP", "PIN_CODE", "PRODUCT_SUBCLASS")},
        usecols=["TRANSACTION_DT", "CUSTOMER_ID", "AGE_GROUP", "PIN_CODE"]
        + ["PRODUCT_SUBCLASS", "PRODUCT_ID", "AMOUNT"],
    )
    raw = raw.assign(
        user=raw.CUSTOMER_ID,
        item=raw.PRODUCT_ID,
        day=pd.to_datetime(raw.TRANSACTION_DT.str.strip(), format="%m/%d/%Y", utc=True),
        qty=raw.AMOUNT,
    )
    lines = raw.groupby(["user", "item", "day"], sort=True, as_index=False).qty.sum()
    events = _events(lines.user, lines.item, lines.day, lines.qty, "purchase")
    # one age group and one area per customer in the release; the first row decides otherwise
    demo = raw.drop_duplicates("user").set_index("user")
    age = demo.AGE_GROUP.map(TAFENG_AGE)
    area = demo.PIN_CODE.str.strip().replace(TAFENG_UNKNOWN_AREA, "")
    users = _users(events, age, pd.Series(dtype=object), area)
    genres = _joined(raw.item, raw.PRODUCT_SUBCLASS)
    items = _items(np.sort(raw.item.unique()), None, genres)
    return Dataset(events, users, items)


def k_core(frame: pd.DataFrame, min_item_users: int, min_user_items: int) -> pd.DataFrame:
    """Rows of (user_id, item_id) pairs left once every item has >= min_item_users distinct
    users and every user >= min_user_items distinct items, dropping both until both hold."""
    while True:
        n = len(frame)
        users = frame.groupby(ITEM_ID)[USER_ID].transform("nunique")
        frame = frame[users >= min_item_users]
        items = frame.groupby(USER_ID)[ITEM_ID].transform("nunique")
        frame = frame[items >= min_user_items]
        if len(frame) == n:
            return frame


def load_ciao(
    directory: Path,
    min_item_users: int = CIAO_MIN_ITEM_USERS,
    min_user_items: int = CIAO_MIN_USER_ITEMS,
) -> Dataset:
    """Ciao ratings (ratings_with_timestamp.csv, trust.csv, catalog_ciao.txt), k-cored as the
    module docstring says; logs the kept sizes."""
    d = Path(directory)
    raw = pd.read_csv(d / "ratings_with_timestamp.csv", dtype=np.int64)
    raw = raw.rename(columns={"user_id": USER_ID, "item_id": ITEM_ID})
    rated = raw[raw.rating.between(1, 5)]
    # stable sort: among equal times the later file row is kept
    rated = rated.sort_values([USER_ID, ITEM_ID, "timestamp"], kind="stable")
    rated = rated.drop_duplicates([USER_ID, ITEM_ID], keep="last")
    kept = k_core(rated, min_item_users, min_user_items)
    log.info(
        "ciao: %d-core items / %d-core users keep %d of %d users, %d of %d items, %d of %d ratings",
        min_item_users,
        min_user_items,
        kept[USER_ID].nunique(),
        raw[USER_ID].nunique(),
        kept[ITEM_ID].nunique(),
        raw[ITEM_ID].nunique(),
        len(kept),
        len(raw),
    )
    ts = pd.Series(pd.to_datetime(kept.timestamp.to_numpy(), unit="s", utc=True))
    events = _events(kept[USER_ID], kept[ITEM_ID], ts, kept.rating, "rating")
    none = pd.Series(dtype=object)
    users = _users(events, pd.Series(dtype=np.float64), none, none)
    names = _ciao_categories(d / "catalog_ciao.txt")
    genres = _joined(raw[ITEM_ID], raw.category_id.map(names).fillna(raw.category_id.astype(str)))
    items = _items(np.sort(kept[ITEM_ID].unique()), None, genres)
    trust = pd.read_csv(d / "trust.csv", dtype=np.int64)
    known = set(users[USER_ID])
    trust = trust[trust.trustor_id.isin(known) & trust.trustee_id.isin(known)]
    trust = trust[trust.trustor_id != trust.trustee_id].drop_duplicates()
    trust = trust.sort_values(["trustor_id", "trustee_id"])
    friends = pd.DataFrame(
        {
            USER_ID: trust.trustor_id.to_numpy(np.int64),
            FRIEND_ID: trust.trustee_id.to_numpy(np.int64),
        }
    )
    return Dataset(events, users, items, friends, rating_scale=(1.0, 5.0))


def _ciao_categories(path: Path) -> pd.Series:
    """catalog_ciao.txt ("id name", CRLF, latin-1) -> category id -> name."""
    names = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        key, _, name = line.strip().partition(" ")
        if key.isdigit():
            names[int(key)] = name.strip()
    return pd.Series(names, dtype=object)


def _read_movies(path: Path) -> pd.DataFrame:
    """movies.dat ("id::title (year)::genre|genre", UTF-8) indexed by the numeric IMDb id; the
    title is everything between the first and the last "::", in case a title holds one."""
    ids, titles, genres = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        head, sep, rest = line.partition("::")
        if not sep:
            continue
        title, _, tail = rest.rpartition("::")
        ids.append(int(head))
        titles.append(title.strip())
        genres.append(tail.strip())
    movies = pd.DataFrame({TITLE: titles, GENRES: genres}, index=np.array(ids, np.int64))
    return movies[~movies.index.duplicated(keep="last")]


def load_movietweetings_100k(directory: Path) -> Dataset:
    """MovieTweetings 100K snapshot (ratings.dat, movies.dat) as canonical frames."""
    d = Path(directory)
    data = pd.read_csv(
        d / "ratings.dat",
        sep="::",
        engine="python",
        names=["u", "i", "r", "t"],
        dtype=str,  # movie ids are zero-padded IMDb ids: parse them as integers explicitly
    )
    ts = pd.to_datetime(data.t.astype(np.int64), unit="s", utc=True)
    events = _events(
        data.u.astype(np.int64), data.i.astype(np.int64), ts, data.r.astype(np.float64), "rating"
    )
    none = pd.Series(dtype=object)
    users = _users(events, pd.Series(dtype=np.float64), none, none)
    movies = _read_movies(d / "movies.dat")
    ids = np.union1d(movies.index.to_numpy(np.int64), events[ITEM_ID].unique())
    items = _items(ids, movies[TITLE], movies[GENRES])
    return Dataset(events, users, items, rating_scale=(0.0, 10.0))


LOADERS: dict[str, Callable[[Path], Dataset]] = {
    "movielens-100k": load_movielens_100k,
    "lastfm-2k": load_lastfm_2k,
    "tafeng": load_tafeng,
    "ciao": load_ciao,
    "movietweetings-100k": load_movietweetings_100k,
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
