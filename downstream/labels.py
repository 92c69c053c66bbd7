"""Downstream labels from the workspace's events: what happens in (T, T + window] for users
active at or before T. Features come later from Feast as of T, so labels never leak into them.
Several label times T1..Tk give one label set each, stacked (rows carry their own T).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from representation.build import events_until
from userrep import columns as C
from userrep.settings import Settings

log = logging.getLogger(__name__)

LABEL = "label"  # 0/1 for future listening, a genre name for genre preference
FUTURE_LISTENING = "future-listening"
GENRE_PREFERENCE = "genre-preference"


def _window(settings: Settings, as_of: pd.Timestamp, window_days: int) -> tuple[pd.DataFrame, ...]:
    """(events <= T, events in (T, T + window]) with user, item, ts, weight."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of={as_of!r} is naive: pass a timezone-aware UTC time")
    events = events_until(settings.paths, as_of + pd.Timedelta(days=window_days))
    past = events[events[C.TS] <= as_of]
    future = events[events[C.TS] > as_of]
    return past, future


def item_popularity(past: pd.DataFrame, catalog: np.ndarray) -> pd.Series:
    """Plays per catalog item among events <= T (0 for items never played), indexed by item_id."""
    counts = past.groupby(C.ITEM_ID).size()
    return counts.reindex(catalog, fill_value=0).rename("popularity")


def _catalog(settings: Settings, past: pd.DataFrame) -> np.ndarray:
    """Item ids of the catalog table, or of the events when no catalog was ingested."""
    if settings.paths.items.exists():
        return np.sort(
            pd.read_parquet(settings.paths.items, columns=[C.ITEM_ID])[C.ITEM_ID].unique()
        )
    return np.sort(past[C.ITEM_ID].unique())


def label_time_list(as_of: pd.Timestamp | Sequence[pd.Timestamp]) -> list[pd.Timestamp]:
    """One label time or several -> sorted distinct times."""
    times = [as_of] if isinstance(as_of, pd.Timestamp) else list(as_of)
    if not times:
        raise ValueError("no label time given")
    return sorted(set(times))


def _pairs(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[[C.USER_ID, C.ITEM_ID]])


def sample_negatives(
    positives: pd.DataFrame,
    catalog: np.ndarray,
    weights: np.ndarray,
    per_positive: int,
    seed: int,
    exclude: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """(user_id, item_id) negatives drawn by weight, never a positive (nor an excluded pair)."""
    n_pos = positives.groupby(C.USER_ID).size()
    need = n_pos * per_positive
    users = np.repeat(n_pos.index.to_numpy(np.int64), (need * 2 + 5).to_numpy())  # oversample
    rng = np.random.default_rng(seed)
    items = catalog[rng.choice(len(catalog), size=len(users), p=weights / weights.sum())]
    cand = pd.DataFrame({C.USER_ID: users, C.ITEM_ID: items}).drop_duplicates()
    avoid = positives if exclude is None else pd.concat([positives, exclude])
    cand = cand[~pd.MultiIndex.from_frame(cand).isin(_pairs(avoid))]
    rank = cand.groupby(C.USER_ID).cumcount()
    out = cand[rank.to_numpy() < need.reindex(cand[C.USER_ID]).to_numpy()]
    short = int(need.sum() - len(out))
    if short:
        log.info("negative sampling: %d fewer negatives than asked (small catalog)", short)
    return out


def future_listening(
    settings: Settings,
    as_of: pd.Timestamp | Sequence[pd.Timestamp],
    window_days: int = 7,
    negatives_per_positive: int = 4,
    seed: int = 0,
    exclude_seen: bool = False,
    users: np.ndarray | None = None,
) -> pd.DataFrame:
    """(user_id, item_id, event_timestamp=T, label) for users with events <= T (or `users`).

    Positives: items a user streamed in (T, T + window]. Negatives: catalog items drawn by
    popularity as of T (plus one, so unplayed items can be drawn), a fixed seed. exclude_seen
    drops items the user had before T from both (ratings data, where nothing repeats). `users`
    replaces "events <= T" (cold start: users known only by their onboarding signals).
    Several times: one label set per T (negatives drawn with seed + k), stacked in time order.
    """
    times = label_time_list(as_of)
    parts = [
        _future_listening_at(
            settings, t, window_days, negatives_per_positive, seed + k, exclude_seen, users
        )
        for k, t in enumerate(times)
    ]
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _future_listening_at(
    settings: Settings,
    as_of: pd.Timestamp,
    window_days: int,
    negatives_per_positive: int,
    seed: int,
    exclude_seen: bool,
    users: np.ndarray | None,
) -> pd.DataFrame:
    past, future = _window(settings, as_of, window_days)
    active = past[C.USER_ID].unique() if users is None else np.asarray(users, np.int64)
    pos = future[future[C.USER_ID].isin(active)][[C.USER_ID, C.ITEM_ID]].drop_duplicates()
    seen = past[[C.USER_ID, C.ITEM_ID]].drop_duplicates() if exclude_seen else None
    if seen is not None:
        pos = pos[~_pairs(pos).isin(_pairs(seen))]
    catalog = _catalog(settings, past)
    pop = item_popularity(past, catalog).to_numpy(np.float64) + 1.0
    neg = sample_negatives(pos, catalog, pop, negatives_per_positive, seed, seen)
    labels = pd.concat([pos.assign(**{LABEL: 1}), neg.assign(**{LABEL: 0})], ignore_index=True)
    labels[LABEL] = labels[LABEL].astype(np.int8)
    labels[C.EVENT_TIMESTAMP] = as_of
    labels = labels.sort_values([C.USER_ID, C.ITEM_ID], ignore_index=True)
    log.info(
        "future listening as of %s (+%dd): %d users, %d positives, %d negatives",
        as_of,
        window_days,
        labels[C.USER_ID].nunique(),
        len(pos),
        len(neg),
    )
    return labels[[C.USER_ID, C.ITEM_ID, C.EVENT_TIMESTAMP, LABEL]]


def primary_genre(settings: Settings) -> pd.Series:
    """The first genre of each catalog item ("rock|pop" -> "rock"), indexed by item_id."""
    items = pd.read_parquet(settings.paths.items, columns=[C.ITEM_ID, C.GENRES])
    genre = items[C.GENRES].fillna("").str.split("|").str[0].str.strip()
    return pd.Series(genre.to_numpy(), index=items[C.ITEM_ID].to_numpy(), name=C.GENRES)


def genre_preference(
    settings: Settings,
    as_of: pd.Timestamp | Sequence[pd.Timestamp],
    window_days: int = 7,
    source: str = "future",
    users: np.ndarray | None = None,
) -> pd.DataFrame:
    """(user_id, event_timestamp=T, label=top genre) for users with events <= T (or `users`).

    source="future": the genre a user streamed most (by weight) in (T, T + window];
    source="history": over all events <= T. Ties go to the alphabetically first genre.
    Several times: one row per (user, T), stacked in time order.
    """
    if source not in ("future", "history"):
        raise ValueError(f"source must be 'future' or 'history', got {source!r}")
    parts = [_genre_at(settings, t, window_days, source, users) for t in label_time_list(as_of)]
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _genre_at(
    settings: Settings,
    as_of: pd.Timestamp,
    window_days: int,
    source: str,
    users: np.ndarray | None,
) -> pd.DataFrame:
    past, future = _window(settings, as_of, window_days)
    who = past[C.USER_ID].unique() if users is None else np.asarray(users, np.int64)
    frame = future[future[C.USER_ID].isin(who)] if source == "future" else past
    frame = frame.assign(genre=frame[C.ITEM_ID].map(primary_genre(settings)).fillna(""))
    frame = frame[frame["genre"] != ""]
    totals = frame.groupby([C.USER_ID, "genre"])[C.WEIGHT].sum().reset_index()
    totals = totals.sort_values([C.USER_ID, C.WEIGHT, "genre"], ascending=[True, False, True])
    top = totals.drop_duplicates(C.USER_ID).rename(columns={"genre": LABEL})
    top[C.EVENT_TIMESTAMP] = as_of
    log.info(
        "genre preference (%s) as of %s: %d users, %d genres",
        source,
        as_of,
        len(top),
        top[LABEL].nunique(),
    )
    return top[[C.USER_ID, C.EVENT_TIMESTAMP, LABEL]].reset_index(drop=True)


LABEL_BUILDERS = {FUTURE_LISTENING: future_listening, GENRE_PREFERENCE: genre_preference}
