"""The fixed evaluation protocol: data set -> eligible users, per-user history / future split,
probe train / test users, candidate items and the (user, item) label matrices every probe reads.

Nothing here looks at user vectors; every method is scored on the same `Split`.

Implicit feedback (plays, purchases, and MovieLens' ratings as DESIGN's bar reads them): the
label of a (user, item) pair is "consumed in the future" and every pair is scored. Explicit
feedback (EXPLICIT_FEEDBACK, or `ProtocolConfig.feedback = "explicit"`): the label is "liked",
a future rating at or above the user's own mean history rating, and only the pairs the user
rated in the future are fitted and scored, so a probe measures taste rather than exposure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from userrep import columns as C
from userrep.data import synthetic
from userrep.data.loaders import LOADERS, load_dataset
from userrep.settings import WorkspacePaths

log = logging.getLogger(__name__)

DATASETS = ("synthetic", *LOADERS)
WORKSPACE = "workspace"  # the --dataset that reads a workspace's ingested tables instead
SPLITS = ("time", "random")
FEEDBACK = ("auto", "implicit", "explicit")
# built-in data sets whose ratings are the feedback to score rather than the sign of
# consumption: "auto" reads them as explicit. MovieLens stays implicit, the bar DESIGN measured.
EXPLICIT_FEEDBACK = frozenset({"ciao", "movietweetings-100k"})
# small enough for tests and CI, big enough for a 200-item linear probe
SYNTHETIC = synthetic.SyntheticConfig(
    n_users=1500, n_items=800, n_artists=160, n_clusters=8, events_per_user=40, seed=11
)


@dataclass(frozen=True)
class ProtocolConfig:
    """The protocol's knobs (DESIGN.md, "Representation quality: the bar")."""

    min_events: int = 10  # users with fewer events are left out
    # too few users left to fit probes on: the minimum drops to fallback_min_events instead
    min_eligible_users: int = 500  # probe-test users (30 %) then number at least 150
    fallback_min_events: int = 5
    # more eligible users (Ta-Feng: 20k): a seeded random subset of this size; the cost grows
    # with users (tf-idf probes over 15k+ item columns, the GBDT over users x 200 pairs)
    max_users: int | None = 5000
    history_fraction: float = 0.8  # first 80% of a user's events (by time, or random) = history
    probe_train_fraction: float = 0.7  # users the probes are fitted on; the rest score them
    n_items: int = 200  # most popular history items: the linear probe's targets, GBDT candidates
    cold_events: int = 3  # cold start: a test user reduced to onboarding + first N history events
    # False (DESIGN's protocol): the probes fit and score every (user, candidate) pair, items
    # already in the history included (label 0 unless consumed again); rankings always skip them
    exclude_seen: bool = False
    # "explicit": label = liked (rating >= the user's mean history rating), scored on rated
    # pairs only; "implicit": label = any future event; "auto": explicit for EXPLICIT_FEEDBACK
    feedback: str = "auto"

    def __post_init__(self) -> None:
        if self.feedback not in FEEDBACK:
            raise ValueError(f"unknown feedback {self.feedback!r}: choose from {FEEDBACK}")


@dataclass
class EvalData:
    """A data set in canonical frames (userrep.columns), plus planted truth where there is one."""

    name: str
    events: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    friends: pd.DataFrame | None = None
    clusters: pd.Series | None = None  # user_id -> planted cluster (synthetic only)
    by_time: bool | None = None  # history = earliest events (True) or a random 80 % (False);
    # None: by time (the synthetic world's times are real)
    rating_scale: tuple[float, float] | None = None  # (min, max) where events are ratings

    @property
    def split_by_time(self) -> bool:
        return True if self.by_time is None else self.by_time

    def explicit(self, feedback: str) -> bool:
        """Whether the protocol reads this data set's weights as explicit ratings."""
        if feedback == "auto":
            return self.name in EXPLICIT_FEEDBACK
        if feedback == "explicit" and self.rating_scale is None and self.name != WORKSPACE:
            raise ValueError(f"{self.name} has no ratings: --feedback explicit does not apply")
        return feedback == "explicit"


@dataclass
class Split:
    """One seed of the protocol. Rows of every matrix follow `user_ids`, columns `item_ids`."""

    data: EvalData
    seed: int
    user_ids: np.ndarray  # (n_users,) eligible users, sorted
    item_ids: np.ndarray  # (n_items,) catalog, sorted
    history: pd.DataFrame  # events of the history part
    future: pd.DataFrame  # events of the future part
    train: np.ndarray  # (n_users,) bool: probe-train users; the others are probe-test
    hist: sp.csr_matrix  # (n_users, n_items) summed history weights
    # (n_users, n_items) 1 where the item is consumed (implicit) or liked (explicit) in the future
    fut: sp.csr_matrix
    candidates: np.ndarray  # (n_candidates,) column positions of the most popular history items
    protocol: ProtocolConfig
    explicit: bool = False  # fut = liked, scored on rated pairs only
    rated: sp.csr_matrix | None = None  # (n_users, n_items) 1 where rated in the future
    future_rating: np.ndarray | None = None  # (n_users,) mean future rating (explicit only)
    # how the users were chosen: min_events used, eligible before any subsample, kept
    eligibility: dict[str, int] = field(default_factory=dict)

    @property
    def test(self) -> np.ndarray:
        return ~self.train

    def unseen(self) -> np.ndarray:
        """(n_users, n_candidates) True where the candidate is not in the user's history."""
        return np.asarray(self.hist[:, self.candidates].todense() == 0)

    def pair_mask(self) -> np.ndarray:
        """(n_users, n_candidates) True where the probes fit and score a pair: every pair
        (implicit) or the pairs rated in the future (explicit); only unseen items with
        exclude_seen."""
        mask = np.ones((len(self.user_ids), len(self.candidates)), bool)
        if self.explicit:
            assert self.rated is not None
            mask = np.asarray(self.rated[:, self.candidates].todense() > 0)
        if self.protocol.exclude_seen:
            mask &= self.unseen()
        return mask

    def labels(self) -> np.ndarray:
        """(n_users, n_candidates) 0/1 future consumption (implicit) or liking (explicit) of
        the candidate items."""
        return np.asarray(self.fut[:, self.candidates].todense() > 0, np.int8)


def load_eval_data(name: str) -> EvalData:
    """One of DATASETS; the real ones come from dataset_dir() and raise if absent."""
    if name == "synthetic":
        world = synthetic.generate(SYNTHETIC)
        clusters = world.user_truth.set_index(C.USER_ID)[C.CLUSTER]
        return EvalData(name, world.events, world.users, world.items, None, clusters)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    d = load_dataset(name)
    # history cut by time where the times are real, at random where the loader made them up
    return EvalData(
        name,
        d.events,
        d.users,
        d.items,
        d.friends,
        by_time=d.real_timestamps,
        rating_scale=d.rating_scale,
    )


def load_workspace_data(paths: WorkspacePaths, split: str = "time") -> EvalData:
    """A workspace's ingested tables as an evaluation data set: its accepted events, its users
    (users seen only in events get their first event as sign-up, as `userrep train` reads them),
    its catalog and friends graph where ingested, and the synthetic generator's planted clusters
    where `userrep ingest --dataset synthetic` stored them (played items missing from the catalog
    are embedded without metadata, as `userrep encoders build` does). split: "time" cuts each
    user's history at their 80 % point in time, "random" at random (for made-up timestamps)."""
    from representation.build import users_frame
    from userrep.ingest import read_events
    from userrep.ingest.tables import FRIEND_SCHEMA, ITEM_SCHEMA, read_table

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
    events = read_events(paths)
    if events.empty:
        raise FileNotFoundError(f"no events in {paths.events}: run `userrep ingest` first")
    events[C.WEIGHT] = events[C.WEIGHT].fillna(1.0)
    friends = read_table(paths.friends, FRIEND_SCHEMA)
    truth = paths.truth / "users.parquet"
    clusters = None
    if truth.exists() and C.CLUSTER in pq.read_schema(truth).names:
        clusters = pd.read_parquet(truth, columns=[C.USER_ID, C.CLUSTER])
        clusters = clusters.set_index(C.USER_ID)[C.CLUSTER]
    return EvalData(
        WORKSPACE,
        events,
        users_frame(paths),
        read_table(paths.items, ITEM_SCHEMA),
        friends if len(friends) else None,
        clusters,
        by_time=split == "time",
    )


def _history_rank(events: pd.DataFrame, by_time: bool, seed: int) -> np.ndarray:
    """Each event's position in its user's history order: by time, or a seeded shuffle."""
    key = events[C.TS].to_numpy() if by_time else np.random.default_rng(seed).random(len(events))
    order = np.lexsort((events[C.EVENT_ID].to_numpy(), key, events[C.USER_ID].to_numpy()))
    ranked = events[C.USER_ID].to_numpy()[order]
    pos = np.empty(len(events), np.int64)
    pos[order] = pd.Series(ranked).groupby(ranked).cumcount().to_numpy()
    return pos


def eligible_users(
    events: pd.DataFrame, cfg: ProtocolConfig, seed: int
) -> tuple[np.ndarray, dict[str, int]]:
    """The protocol's users, sorted, and how they were chosen. Users need >= min_events events;
    where fewer than min_eligible_users qualify, >= fallback_min_events instead (one rule for
    every method and data set). More than max_users eligible: a random subset of max_users,
    drawn from the protocol seed."""
    n = events.groupby(C.USER_ID).size()
    min_events = cfg.min_events
    if (n >= min_events).sum() < cfg.min_eligible_users:
        min_events = min(min_events, cfg.fallback_min_events)
    users = np.sort(n.index[n >= min_events].to_numpy(np.int64))
    eligible = len(users)
    if cfg.max_users is not None and eligible > cfg.max_users:
        pick = np.random.default_rng([seed, 80]).permutation(eligible)[: cfg.max_users]
        users = np.sort(users[pick])
    info = {"min_events": min_events, "eligible_users": eligible, "users": len(users)}
    return users, info


def split_events(
    events: pd.DataFrame, by_time: bool, cfg: ProtocolConfig, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, future) of the protocol's users (eligible_users): the first 80% of each user's
    events."""
    users, _ = eligible_users(events, cfg, seed)
    events = events[events[C.USER_ID].isin(users)].reset_index(drop=True)
    n = events.groupby(C.USER_ID)[C.USER_ID].transform("size").to_numpy()
    in_hist = _history_rank(events, by_time, seed) < np.floor(cfg.history_fraction * n)
    return events[in_hist].reset_index(drop=True), events[~in_hist].reset_index(drop=True)


def user_item_matrix(
    events: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, binary: bool = False
) -> sp.csr_matrix:
    """(users, items) summed weights (or 1s) of the events; unknown users / items dropped."""
    u = np.searchsorted(user_ids, events[C.USER_ID].to_numpy())
    i = np.searchsorted(item_ids, events[C.ITEM_ID].to_numpy())
    u, i = np.minimum(u, len(user_ids) - 1), np.minimum(i, len(item_ids) - 1)
    ok = (user_ids[u] == events[C.USER_ID].to_numpy()) & (
        item_ids[i] == events[C.ITEM_ID].to_numpy()
    )
    w = np.ones(ok.sum()) if binary else events[C.WEIGHT].fillna(1.0).to_numpy(np.float64)[ok]
    m = sp.csr_matrix((w, (u[ok], i[ok])), shape=(len(user_ids), len(item_ids)))
    m.sum_duplicates()
    if binary:
        m.data[:] = 1.0
    return m


def make_split(data: EvalData, seed: int, cfg: ProtocolConfig | None = None) -> Split:
    """The protocol's split for one seed: history / future per user, probe users, candidates."""
    cfg = cfg or ProtocolConfig()
    explicit = data.explicit(cfg.feedback)
    history, future = split_events(data.events, data.split_by_time, cfg, seed)
    user_ids = np.unique(history[C.USER_ID].to_numpy(np.int64))
    _, eligibility = eligible_users(data.events, cfg, seed)
    item_ids = np.union1d(
        data.items[C.ITEM_ID].to_numpy(np.int64), data.events[C.ITEM_ID].to_numpy(np.int64)
    )
    rng = np.random.default_rng([seed, 70])
    train = np.zeros(len(user_ids), bool)
    train[
        rng.permutation(len(user_ids))[: int(round(cfg.probe_train_fraction * len(user_ids)))]
    ] = True
    hist = user_item_matrix(history, user_ids, item_ids)
    fut = user_item_matrix(future, user_ids, item_ids, binary=True)
    rated, future_rating = None, None
    if explicit:
        rated = fut
        fut, future_rating = liked(history, future, user_ids, item_ids)
    n_users_per_item = np.asarray((hist > 0).sum(axis=0)).ravel()
    candidates = np.sort(np.argsort(-n_users_per_item, kind="stable")[: cfg.n_items])
    log.info(
        "%s seed %d: %d users (%d probe-train), %d history / %d future events",
        data.name,
        seed,
        len(user_ids),
        train.sum(),
        len(history),
        len(future),
    )
    return Split(
        data,
        seed,
        user_ids,
        item_ids,
        history,
        future,
        train,
        hist,
        fut,
        candidates,
        cfg,
        explicit,
        rated,
        future_rating,
        eligibility,
    )


def liked(
    history: pd.DataFrame, future: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Explicit feedback: (users, items) 1 where the user's future rating of the item (the mean
    of its future ratings) is at or above the user's mean history rating (ties are liked), and
    (users,) each user's mean future rating (NaN where none)."""

    def mean_by_user(events: pd.DataFrame) -> np.ndarray:
        means = events.groupby(C.USER_ID)[C.WEIGHT].mean()
        return means.reindex(user_ids).to_numpy(np.float64)

    known = future[C.USER_ID].isin(user_ids) & future[C.ITEM_ID].isin(item_ids)
    pairs = future[known].groupby([C.USER_ID, C.ITEM_ID])[C.WEIGHT].mean().reset_index()
    u = np.searchsorted(user_ids, pairs[C.USER_ID].to_numpy())
    keep = pairs[C.WEIGHT].to_numpy() >= mean_by_user(history)[u] - 1e-9
    fut = user_item_matrix(pairs[keep], user_ids, item_ids, binary=True)
    return fut, mean_by_user(future)


def cold_history(split: Split, cfg: ProtocolConfig | None = None) -> pd.DataFrame:
    """Every user's first `cold_events` history events (by time): the cold-start inputs."""
    cfg = cfg or split.protocol
    h = split.history.sort_values([C.USER_ID, C.TS, C.EVENT_ID])
    return h.groupby(C.USER_ID).head(cfg.cold_events).reset_index(drop=True)
