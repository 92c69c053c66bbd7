"""Synthetic music-streaming simulator with planted taste clusters: the raw-data end of the flow.

Writes events / users / items (what `userrep ingest` reads) plus ground truth for tests and demos.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from userrep.columns import (
    AGE,
    ARTIST,
    ARTIST_ID,
    CLUSTER,
    COUNTRY,
    EVENT_COLUMNS,
    EVENT_ID,
    EVENT_TYPE,
    GENDER,
    GENRES,
    ITEM_ID,
    ONBOARDING_GENRES,
    ONBOARDING_ITEMS,
    SIGNUP_TS,
    TITLE,
    TS,
    USER_ID,
    WEIGHT,
)

log = logging.getLogger(__name__)

DRIFT_CLUSTER = "drift_cluster"  # truth: the cluster a user's taste drifts toward
IS_NEW = "is_new"  # truth: signed up in the last NEW_USER_DAYS of the window
NEW_USER_DAYS = 7
PLAY = "play"

# Users are simulated in fixed blocks, each with its own seeded generator, so the data does not
# depend on how callers chunk it (chunks are whole blocks).
USER_BLOCK = 1024
PRIMARY_PROB = 0.8  # P(event from the primary cluster) at the window start, before drift
ONBOARD_NOISE = 0.15  # P(an onboarding pick comes from a random cluster)
ZIPF_EXPONENT = 1.0  # item popularity ~ 1 / rank**a within a cluster
SESSION_GAP_S = 210.0  # mean seconds between plays inside a session (about one track)
MAX_EVENTS_FACTOR = 25  # cap per-user counts at this x the mean (bounds memory)

_BASE_GENRES = ("rock", "pop", "hiphop", "jazz", "classical", "electronic", "metal", "folk")
_EXTRA_GENRES = ("blues", "reggae", "soul", "country", "latin", "punk", "ambient", "funk")
_DISPLAY = {"hiphop": "Hip-Hop"}
_FLAVOUR = {  # genre-typical words, so content carries signal beyond the genre word itself
    "rock": ("Electric", "Highway", "Riff", "Thunder"),
    "pop": ("Sugar", "Summer", "Heartbeat", "Neon"),
    "hiphop": ("Street", "Cypher", "Hustle", "Block"),
    "jazz": ("Blue", "Smoky", "Swing", "Bebop"),
    "classical": ("Sonata", "Adagio", "Nocturne", "Symphony"),
    "electronic": ("Synth", "Pulse", "Circuit", "Techno"),
    "metal": ("Iron", "Doom", "Inferno", "Steel"),
    "folk": ("Meadow", "Fiddle", "Willow", "Ballad"),
}
_ADJ = ("Midnight", "Golden", "Silent", "Wild", "Broken", "Lonely", "Crimson", "Endless", "Velvet")
_NOUN = ("Dream", "River", "Fire", "Road", "Heart", "Sky", "Garden", "Echo", "Shadow", "Light")
_SUFFIX = ("", "", "", " (Live)", " (Remix)", " Suite No. {n}", " Pt. {n}", " Op. {n}")
_GROUP = ("Collective", "Ensemble", "Band", "Trio", "Orchestra", "Project")
_COUNTRIES = ("US", "GB", "SE", "DE", "BR", "MX", "FR", "JP", "IN", "ES", "NL", "AU")
_GENDERS = ("f", "m", "x")
_Users = dict[str, np.ndarray]  # per-user arrays of one block, see _draw_users


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the simulator; the defaults give a small world that trains in seconds."""

    n_users: int = 2000  # users simulated (ids 0..n_users-1)
    n_items: int = 1500  # catalog size (ids 0..n_items-1)
    n_artists: int = 300  # each artist belongs to one cluster; items belong to an artist
    n_clusters: int = 8  # latent taste clusters == genres
    events_per_user: float = 40.0  # mean; per-user counts are log-normal (heavy tail), min 1
    start: str = "2024-01-01"  # window start, UTC
    days: int = 365  # window length; all events fall in [start, start + days]
    new_user_fraction: float = 0.1  # users who sign up in the last 7 days (few events): cold start
    drift: float = 0.15  # slow taste drift: prob. mass that moves to a second cluster over the year
    onboarding_picks: int = 4  # items picked at sign-up (from the user's cluster, with some noise)
    seed: int = 0  # everything is a pure function of (config, seed)

    def __post_init__(self) -> None:
        if not 2 <= self.n_clusters <= self.n_artists <= self.n_items:
            raise ValueError("need 2 <= n_clusters <= n_artists <= n_items")
        if self.days <= NEW_USER_DAYS or self.events_per_user < 1 or self.n_users < 1:
            raise ValueError(f"need days > {NEW_USER_DAYS}, events_per_user >= 1, n_users >= 1")
        if not (0 <= self.new_user_fraction <= 1 and 0 <= self.drift <= PRIMARY_PROB):
            raise ValueError(f"need new_user_fraction in [0, 1], drift in [0, {PRIMARY_PROB}]")
        if self.onboarding_picks < 0 or self.seed < 0:
            raise ValueError("need onboarding_picks >= 0 and seed >= 0")


@dataclass
class SyntheticData:
    """The simulated tables (column constants from userrep.columns) plus the planted truth."""

    events: pd.DataFrame  # EVENT_COLUMNS
    users: pd.DataFrame  # USER_COLUMNS
    items: pd.DataFrame  # ITEM_COLUMNS
    user_truth: pd.DataFrame  # user_id, cluster, drift_cluster, is_new
    item_truth: pd.DataFrame  # item_id, cluster, artist_id


@dataclass
class _Catalog:
    """Items, artists and the per-cluster tables the user simulation samples from."""

    genres: list[str]
    item_cluster: np.ndarray  # (n_items,) int64
    item_artist: np.ndarray  # (n_items,) int64
    by_cluster: np.ndarray  # (n_items,) item ids grouped by cluster, most popular first
    cluster_start: np.ndarray  # (n_clusters + 1,) offsets of each cluster in by_cluster
    cdf: np.ndarray  # (n_items,) c + within-cluster popularity cdf, aligned with by_cluster
    cluster_prior: np.ndarray  # (n_clusters,) share of users whose primary cluster is c
    age_mean: np.ndarray  # (n_clusters,) mean age per cluster
    gender_cdf: np.ndarray  # (n_clusters, 3) cumulative P(gender | cluster)
    country_cdf: np.ndarray  # (n_clusters, n_countries) cumulative P(country | cluster)
    items: pd.DataFrame  # ITEM_COLUMNS


def _genre_names(n: int) -> list[str]:
    """Readable genre names; beyond the built-in ones, numbered variants."""
    names = list(_BASE_GENRES + _EXTRA_GENRES)
    names += [f"{names[i % len(names)]}{i // len(names) + 1}" for i in range(len(names), n)]
    return names[:n]


def _display(genre: str) -> str:
    return _DISPLAY.get(genre, genre.capitalize())


def _titles(rng: np.random.Generator, genres: list[str], item_cluster: np.ndarray) -> list[str]:
    """Track titles; about a third name the genre, about a third use a genre-typical word."""
    n = len(item_cluster)
    roll, adj = rng.random(n), rng.integers(len(_ADJ), size=n)
    noun, suf = rng.integers(len(_NOUN), size=n), rng.integers(len(_SUFFIX), size=n)
    num = rng.integers(1, 40, size=n)
    out = []
    for i, c in enumerate(item_cluster.tolist()):
        g = genres[c]
        first = _ADJ[adj[i]]
        if roll[i] < 0.35 and g in _FLAVOUR:
            first = _FLAVOUR[g][adj[i] % 4]
        mid = f" {_display(g)}" if 0.35 <= roll[i] < 0.65 else ""
        out.append(f"{first}{mid} {_NOUN[noun[i]]}{_SUFFIX[suf[i]].format(n=num[i])}")
    return out


def _artist_names(
    rng: np.random.Generator, genres: list[str], artist_cluster: np.ndarray
) -> list[str]:
    """Artist names; about 30% carry the genre word ("Velvet Jazz Trio")."""
    n = len(artist_cluster)
    roll, adj = rng.random(n), rng.integers(len(_ADJ), size=n)
    noun, grp = rng.integers(len(_NOUN), size=n), rng.integers(len(_GROUP), size=n)
    out = []
    for i, c in enumerate(artist_cluster.tolist()):
        if roll[i] < 0.3:
            out.append(f"{_ADJ[adj[i]]} {_display(genres[c])} {_GROUP[grp[i]]}")
        else:
            the, s = ("The ", "s") if roll[i] < 0.65 else ("", "")
            out.append(f"{the}{_ADJ[adj[i]]} {_NOUN[noun[i]]}{s}")
    return out


def _item_genres(
    rng: np.random.Generator, genres: list[str], item_cluster: np.ndarray
) -> list[str]:
    """Primary genre = the item's cluster; a quarter also get a random secondary genre."""
    n, k = len(item_cluster), len(genres)
    second = (item_cluster + rng.integers(1, k, size=n)) % k
    has_second = rng.random(n) < 0.25
    return [
        f"{genres[c]}|{genres[s]}" if h else genres[c]
        for c, s, h in zip(item_cluster.tolist(), second.tolist(), has_second.tolist(), strict=True)
    ]


def _popularity(
    rng: np.random.Generator, item_cluster: np.ndarray, k: int
) -> tuple[np.ndarray, ...]:
    """Zipf popularity within each cluster: (by_cluster, cluster_start, cdf) sampling tables."""
    order = np.lexsort((rng.random(len(item_cluster)), item_cluster))  # random rank in cluster
    counts = np.bincount(item_cluster, minlength=k)
    cluster_start = np.concatenate([[0], np.cumsum(counts)])
    cdf = np.empty(len(order))
    for c in range(k):  # loop over clusters, not items
        lo, hi = cluster_start[c], cluster_start[c + 1]
        p = 1.0 / np.arange(1, hi - lo + 1) ** ZIPF_EXPONENT
        cdf[lo:hi] = c + np.cumsum(p) / p.sum()
        cdf[hi - 1] = c + 1.0
    return order.astype(np.int64), cluster_start, cdf


def _demographics(rng: np.random.Generator, k: int) -> tuple[np.ndarray, ...]:
    """Per-cluster age means and gender / country cdfs, weakly tied to the cluster."""
    age_mean = rng.uniform(22, 48, size=k)
    f = np.clip(0.48 + rng.normal(0, 0.12, size=k), 0.15, 0.8)
    gender_p = np.stack([f * 0.96, (1 - f) * 0.96, np.full(k, 0.04)], axis=1)
    base = np.linspace(2.0, 0.5, len(_COUNTRIES))
    country_p = 0.7 * base / base.sum() + 0.3 * rng.dirichlet(np.full(len(_COUNTRIES), 0.5), k)
    return age_mean, np.cumsum(gender_p, axis=1), np.cumsum(country_p, axis=1)


def _catalog(cfg: SyntheticConfig) -> _Catalog:
    """Build genres, artists, items and sampling tables from the catalog generator."""
    rng = np.random.default_rng([cfg.seed, 0])
    k = cfg.n_clusters
    genres = _genre_names(k)
    artist_cluster = rng.permutation(np.arange(cfg.n_artists) % k)
    extra = rng.integers(cfg.n_artists, size=cfg.n_items - cfg.n_artists)
    item_artist = rng.permutation(np.concatenate([np.arange(cfg.n_artists), extra])).astype(
        np.int64
    )
    item_cluster = artist_cluster[item_artist].astype(np.int64)
    by_cluster, cluster_start, cdf = _popularity(rng, item_cluster, k)
    artists = np.array(_artist_names(rng, genres, artist_cluster), dtype=object)
    items = pd.DataFrame(
        {
            ITEM_ID: np.arange(cfg.n_items, dtype=np.int64),
            TITLE: _titles(rng, genres, item_cluster),
            ARTIST_ID: item_artist,
            ARTIST: artists[item_artist],
            GENRES: _item_genres(rng, genres, item_cluster),
        }
    )
    prior = rng.dirichlet(np.full(k, 5.0))
    age_mean, gender_cdf, country_cdf = _demographics(rng, k)
    return _Catalog(
        genres,
        item_cluster,
        item_artist,
        by_cluster,
        cluster_start,
        cdf,
        prior,
        age_mean,
        gender_cdf,
        country_cdf,
        items,
    )


def _sample_items(cat: _Catalog, cluster: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Item ids drawn by popularity inside the given clusters; u ~ U[0, 1) per draw."""
    idx = np.searchsorted(cat.cdf, cluster + u, side="right")
    idx = np.minimum(idx, cat.cluster_start[cluster + 1] - 1)  # guard float round-up
    return cat.by_cluster[idx]


def _categorical(rng: np.random.Generator, cdf: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) cumulative-probability matrix."""
    idx = (rng.random(len(cdf))[:, None] > cdf).sum(axis=1)  # (n,)
    return np.minimum(idx, cdf.shape[1] - 1)


def _event_counts(rng: np.random.Generator, cfg: SyntheticConfig, is_new: np.ndarray) -> np.ndarray:
    """Heavy-tailed plays per user (min 1); new users get a few, the overall mean is kept."""
    n, f, mean = len(is_new), cfg.new_user_fraction, cfg.events_per_user
    few = 1 + rng.poisson(0.1 * mean, size=n)
    mean_old = max(1.0, (mean - f * (1 + 0.1 * mean)) / max(1 - f, 1e-9))
    sigma = 1.0  # log-normal shape: median ~ 0.6 x mean, a long tail of heavy listeners
    base = rng.lognormal(math.log(mean_old) - sigma**2 / 2, sigma, size=n)
    counts = np.where(is_new, few, np.maximum(1, np.rint(base)))
    return np.minimum(counts, MAX_EVENTS_FACTOR * mean).astype(np.int64)


def _onboarding(
    rng: np.random.Generator, cat: _Catalog, cluster: np.ndarray, p: int
) -> tuple[np.ndarray, np.ndarray]:
    """(picks, keep): p popular items mostly from the user's cluster; keep drops repeats."""
    n, k = len(cluster), len(cat.genres)
    noisy = rng.random((n, p)) < ONBOARD_NOISE
    pick_cluster = np.where(noisy, rng.integers(k, size=(n, p)), cluster[:, None])  # (n, p)
    picks = _sample_items(cat, pick_cluster, rng.random((n, p)) ** 2)  # squared: popular items
    dup = (picks[:, :, None] == picks[:, None, :]) & np.tri(p, k=-1, dtype=bool)  # (n, p, p)
    return picks, ~dup.any(axis=2)


def _draw_users(rng: np.random.Generator, cfg: SyntheticConfig, cat: _Catalog, n: int) -> _Users:
    """Per-user latent taste, sign-up time, event count, demographics and onboarding picks."""
    k, span_s, new_s = cfg.n_clusters, cfg.days * 86400.0, NEW_USER_DAYS * 86400.0
    cluster = _categorical(rng, np.broadcast_to(np.cumsum(cat.cluster_prior), (n, k)))
    is_new = rng.random(n) < cfg.new_user_fraction
    u = rng.random(n)
    new_signup = span_s - new_s + u * new_s  # somewhere in the last NEW_USER_DAYS
    old_signup = (span_s - new_s) * u**2  # skewed early, so most users have a long history
    picks, keep = _onboarding(rng, cat, cluster, cfg.onboarding_picks)
    return {
        "cluster": cluster,
        "drift": (cluster + rng.integers(1, k, size=n)) % k,
        "is_new": is_new,
        "signup_s": np.where(is_new, new_signup, old_signup),
        "counts": _event_counts(rng, cfg, is_new),
        "age": np.clip(np.rint(rng.normal(cat.age_mean[cluster], 10.0)), 15, 70),
        "gender": _categorical(rng, cat.gender_cdf[cluster]),
        "country": _categorical(rng, cat.country_cdf[cluster]),
        "picks": picks,
        "keep": keep,
        "extra_genre": np.where(
            rng.random(n) < 0.3, (cluster + rng.integers(1, k, size=n)) % k, -1
        ),
    }


def _event_times(
    rng: np.random.Generator, cfg: SyntheticConfig, users: _Users, uidx: np.ndarray, k: np.ndarray
) -> np.ndarray:
    """Event times (ns after window start) in play sessions after sign-up, sorted per user."""
    counts, signup_s = users["counts"], users["signup_s"]
    n_ev, span_s = len(uidx), cfg.days * 86400.0
    length = 1 + rng.poisson(6.0, size=len(counts))  # plays per session
    n_sess = -(-counts // length)
    sid = (np.cumsum(n_sess) - n_sess)[uidx] + k // length[uidx]  # (n_ev,) global session id
    gaps = rng.exponential(SESSION_GAP_S, size=n_ev)
    first = np.flatnonzero(k % length[uidx] == 0)  # (n_sess_total,) first play of each session
    gaps[first] = 0.0
    offset = np.cumsum(gaps)
    offset -= offset[first][sid]  # seconds since the session's first play
    duration = offset[np.r_[first[1:] - 1, n_ev - 1]]  # (n_sess_total,)
    sess_signup = signup_s[uidx[first]]
    room = np.maximum(0.0, span_s - sess_signup - duration)
    sess_start = sess_signup + rng.random(len(first)) * room
    ts = (sess_start[sid] + offset) * 1e9
    signup_ns = (signup_s * 1e9).astype(np.int64)
    ts_ns = np.clip(ts.astype(np.int64), signup_ns[uidx], int(span_s) * 10**9)
    return ts_ns[np.lexsort((ts_ns, uidx))]  # uidx is already sorted, so only ts moves


def _draw_events(
    rng: np.random.Generator, cfg: SyntheticConfig, cat: _Catalog, users: _Users, first_user: int
) -> pd.DataFrame:
    """Events of one block: the cluster of each play drifts with time, items by popularity."""
    counts = users["counts"]
    n_ev = int(counts.sum())
    uidx = np.repeat(np.arange(len(counts)), counts)  # (n_ev,) user of each event, in the block
    k = np.arange(n_ev) - (np.cumsum(counts) - counts)[uidx]  # (n_ev,) index within the user
    ts_ns = _event_times(rng, cfg, users, uidx, k)
    primary = users["cluster"][uidx]
    frac = ts_ns / (cfg.days * 86400 * 10**9)  # (n_ev,) position in the window, 0..1
    r = rng.random(n_ev)
    noise = rng.integers(cfg.n_clusters, size=n_ev)
    drifted = np.where(r < PRIMARY_PROB, users["drift"][uidx], noise)
    ev_cluster = np.where(r < PRIMARY_PROB - cfg.drift * frac, primary, drifted)
    items = _sample_items(cat, ev_cluster, rng.random(n_ev))
    weight = rng.geometric(np.where(ev_cluster == primary, 0.4, 0.6)).astype(np.float64)
    user_id = (first_user + uidx).astype(np.int64)
    as_str = [pc.cast(pa.array(a), pa.string()) for a in (user_id, k)]
    event_id = pc.binary_join_element_wise(f"s{cfg.seed}", *as_str, "-")  # s{seed}-{user}-{k}
    return pd.DataFrame(
        {
            EVENT_ID: event_id.to_numpy(zero_copy_only=False),
            USER_ID: user_id,
            ITEM_ID: items,
            TS: pd.Series(ts_ns + _start_ns(cfg)).astype("datetime64[ns]").dt.tz_localize("UTC"),
            WEIGHT: weight,
            EVENT_TYPE: PLAY,
        },
        columns=list(EVENT_COLUMNS),
    )


def _start_ns(cfg: SyntheticConfig) -> int:
    """Window start as UTC nanoseconds since the epoch."""
    start = pd.Timestamp(cfg.start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return int(start.value)


def _users_frame(
    cfg: SyntheticConfig, cat: _Catalog, users: _Users, first_user: int
) -> pd.DataFrame:
    """USER_COLUMNS frame of one block (one Python object per user for the list columns)."""
    n = len(users["cluster"])
    signup_ns = (users["signup_s"] * 1e9).astype(np.int64) + _start_ns(cfg)
    picks = [row[keep].tolist() for row, keep in zip(users["picks"], users["keep"], strict=True)]
    genres = [
        [cat.genres[c]] + ([cat.genres[e]] if e >= 0 else [])
        for c, e in zip(users["cluster"].tolist(), users["extra_genre"].tolist(), strict=True)
    ]
    return pd.DataFrame(
        {
            USER_ID: np.arange(first_user, first_user + n, dtype=np.int64),
            SIGNUP_TS: pd.Series(signup_ns).astype("datetime64[ns]").dt.tz_localize("UTC"),
            AGE: users["age"].astype(np.float64),
            GENDER: np.array(_GENDERS, dtype=object)[users["gender"]],
            COUNTRY: np.array(_COUNTRIES, dtype=object)[users["country"]],
            ONBOARDING_ITEMS: picks,
            ONBOARDING_GENRES: genres,
        }
    )


def _user_truth(users: _Users, first_user: int) -> pd.DataFrame:
    n = len(users["cluster"])
    return pd.DataFrame(
        {
            USER_ID: np.arange(first_user, first_user + n, dtype=np.int64),
            CLUSTER: users["cluster"].astype(np.int64),
            DRIFT_CLUSTER: users["drift"].astype(np.int64),
            IS_NEW: users["is_new"].astype(bool),
        }
    )


def _blocks(
    cfg: SyntheticConfig, cat: _Catalog, with_users: bool
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]]:
    """(events, users, user_truth) per block of USER_BLOCK users; users only if asked for."""
    for b in range(-(-cfg.n_users // USER_BLOCK)):
        rng = np.random.default_rng([cfg.seed, 1, b])
        first_user = b * USER_BLOCK
        users = _draw_users(rng, cfg, cat, min(USER_BLOCK, cfg.n_users - first_user))
        events = _draw_events(rng, cfg, cat, users, first_user)
        if with_users:
            yield events, _users_frame(cfg, cat, users, first_user), _user_truth(users, first_user)
        else:
            yield events, None, None


def iter_event_chunks(
    cfg: SyntheticConfig, users_per_chunk: int = 100_000
) -> Iterator[pd.DataFrame]:
    """The events of generate(cfg), in the same order, a chunk of users at a time (bounded memory).

    users_per_chunk is rounded up to a multiple of USER_BLOCK; the data never depends on it.
    """
    blocks_per_chunk = max(1, -(-users_per_chunk // USER_BLOCK))
    cat = _catalog(cfg)
    pending: list[pd.DataFrame] = []
    for events, _, _ in _blocks(cfg, cat, with_users=False):
        pending.append(events)
        if len(pending) == blocks_per_chunk:
            yield pd.concat(pending, ignore_index=True)
            pending = []
    if pending:
        yield pd.concat(pending, ignore_index=True)


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Simulate the whole world in memory: events, users, items and the planted truth."""
    cat = _catalog(cfg)
    parts = list(_blocks(cfg, cat, with_users=True))
    events = pd.concat([p[0] for p in parts], ignore_index=True)
    users = pd.concat([p[1] for p in parts], ignore_index=True)
    user_truth = pd.concat([p[2] for p in parts], ignore_index=True)
    item_truth = pd.DataFrame(
        {ITEM_ID: cat.items[ITEM_ID], CLUSTER: cat.item_cluster, ARTIST_ID: cat.item_artist}
    )
    log.info("synthetic: %d users, %d items, %d events", len(users), len(cat.items), len(events))
    return SyntheticData(events, users, cat.items, user_truth, item_truth)


_USERS_SCHEMA = pa.schema(
    [
        (USER_ID, pa.int64()),
        (SIGNUP_TS, pa.timestamp("ns", tz="UTC")),
        (AGE, pa.float64()),
        (GENDER, pa.string()),
        (COUNTRY, pa.string()),
        (ONBOARDING_ITEMS, pa.list_(pa.int64())),
        (ONBOARDING_GENRES, pa.list_(pa.string())),
    ]
)


def write(data: SyntheticData, directory: Path) -> None:
    """Write the tables as parquet: events, users, items and truth/{users,items}."""
    directory = Path(directory)
    (directory / "truth").mkdir(parents=True, exist_ok=True)
    data.events.to_parquet(directory / "events.parquet", index=False, engine="pyarrow")
    users = pa.Table.from_pandas(data.users, schema=_USERS_SCHEMA, preserve_index=False)
    pq.write_table(users, directory / "users.parquet")
    data.items.to_parquet(directory / "items.parquet", index=False, engine="pyarrow")
    data.user_truth.to_parquet(directory / "truth" / "users.parquet", index=False)
    data.item_truth.to_parquet(directory / "truth" / "items.parquet", index=False)
    log.info("synthetic data written to %s", directory)
