"""Cold start: the downstream tasks restricted to users in their first day as of T (or known
only by their onboarding signals), z_u against popularity and the mean item vectors of the
user's onboarding picks. GBDTs fit on warm users and score every cold-start user.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from downstream import labels as L
from downstream.metrics import binary_metrics, multiclass_metrics
from downstream.results import COLD, MethodResult, results_rows
from downstream.tasks import Design, batch_as_of, fit_evaluate, make_design
from downstream.training_set import build_training_set, trainable_batch
from representation.build import events_until, users_frame
from userrep import columns as C
from userrep.settings import Settings

log = logging.getLogger(__name__)

COLD_METHODS = ("z_u", "onboarding", "popularity")  # "onboarding": mean of the picks' vectors
SKIP = "-"  # split value of rows that neither fit nor score (warm users of the test split)


def cold_start_users(
    settings: Settings, as_of: pd.Timestamp, first_days: float = 1.0
) -> np.ndarray:
    """Users signed up at or before T who signed up in (T - first_days, T] or have no event <= T."""
    users = users_frame(settings.paths)
    known = users[users[C.SIGNUP_TS] <= as_of]
    played = events_until(settings.paths, as_of, (C.USER_ID,))[C.USER_ID].unique()
    recent = known[C.SIGNUP_TS] > as_of - pd.Timedelta(days=first_days)
    cold = recent | ~known[C.USER_ID].isin(played)
    return np.sort(known.loc[cold, C.USER_ID].to_numpy(np.int64))


def cold_task_labels(
    settings: Settings,
    task: str,
    as_of: pd.Timestamp,
    cold: np.ndarray,
    window_days: int = 7,
    seed: int = 0,
) -> pd.DataFrame:
    """One label set over warm users (events <= T) and the cold-start users together."""
    warm = events_until(settings.paths, as_of, (C.USER_ID,))[C.USER_ID].unique()
    everyone = np.union1d(warm.astype(np.int64), cold)
    if task == L.FUTURE_LISTENING:
        return L.future_listening(settings, as_of, window_days, seed=seed, users=everyone)
    if task == L.GENRE_PREFERENCE:
        return L.genre_preference(settings, as_of, window_days, users=everyone)
    raise ValueError(f"unknown task {task!r}: one of {', '.join(L.LABEL_BUILDERS)}")


def cold_split(design: Design, cold: np.ndarray) -> np.ndarray:
    """Warm users keep their train / val split; every cold-start user is test; warm test users
    sit out (so no cold-start user is ever fitted on)."""
    is_cold = np.isin(design.users, cold)
    return np.where(is_cold, "test", np.where(design.split == "test", SKIP, design.split))


def popularity_scores(
    settings: Settings, labels: pd.DataFrame, as_of: pd.Timestamp, classes: list[str]
) -> np.ndarray:
    """Plays as of T: of each label row's item, or (multiclass) of each genre, shared by all."""
    past = events_until(settings.paths, as_of, (C.ITEM_ID, C.WEIGHT))
    if not classes:
        pop = past.groupby(C.ITEM_ID).size()
        return labels[C.ITEM_ID].map(pop).fillna(0).to_numpy(np.float64)
    genre = past[C.ITEM_ID].map(L.primary_genre(settings))
    share = past.groupby(genre)[C.WEIGHT].sum().reindex(classes, fill_value=0.0).to_numpy()
    share = (share + 1e-9) / (share + 1e-9).sum()  # (classes,)
    return np.tile(share, (len(labels), 1))  # (rows, classes)


def _popularity(
    settings: Settings, labels: pd.DataFrame, as_of: pd.Timestamp, cold: np.ndarray
) -> MethodResult:
    users = labels[C.USER_ID].to_numpy(np.int64)
    test = np.isin(users, cold)
    y = labels[L.LABEL]
    classes = sorted(y.unique()) if y.dtype == object else []
    scores = popularity_scores(settings, labels, as_of, classes)
    if classes:
        codes = y.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
        metrics = multiclass_metrics(codes[test], scores[test])
    else:
        metrics = binary_metrics(users[test], y.to_numpy()[test], scores[test])
    metrics["test_users"] = int(len(np.unique(users[test])))
    return MethodResult("popularity", 0, metrics, COLD)


def compare_cold_start(
    settings: Settings,
    as_of: pd.Timestamp | None = None,
    batch_id: str | None = None,
    family: str = "lightgbm",
    window_days: int = 7,
    task: str = L.FUTURE_LISTENING,
    methods: tuple[str, ...] = COLD_METHODS,
    params: dict[str, Any] | None = None,
    first_days: float = 1.0,
) -> tuple[list[MethodResult], int]:
    """(results on the cold-start users, how many of them have labels). GBDT methods fit on warm
    users' rows and score every labelled cold-start user; no results when there is none."""
    batch = trainable_batch(settings, batch_id)
    as_of = as_of if as_of is not None else batch_as_of(settings, batch)
    cold = cold_start_users(settings, as_of, first_days)
    labels = cold_task_labels(settings, task, as_of, cold, window_days, settings.seed)
    n_cold = int(labels.loc[labels[C.USER_ID].isin(cold), C.USER_ID].nunique())
    log.info("cold start as of %s: %d users, %d with labels", as_of, len(cold), n_cold)
    if not n_cold:
        return [], 0
    results = []
    for method in methods:
        if method == "popularity":
            results.append(_popularity(settings, labels, as_of, cold))
            continue
        frame = build_training_set(
            settings, labels, batch if method == "z_u" else None, method, validate=False
        )
        design = make_design(settings, frame, method, seed=settings.seed)
        design.split = cold_split(design, cold)
        try:
            _, metrics = fit_evaluate(design, family, params)
        except ValueError as err:  # e.g. no onboarding picks in this data set: say so, go on
            log.warning("cold start %s skipped: %s", method, err)
            results.append(MethodResult(f"{method} (skipped: no feature values)", 0, {}, COLD))
            continue
        results.append(MethodResult(method, design.n_user_features, metrics, COLD))
        log.info("cold start %s: %s", method, metrics)
    return results, n_cold


def cold_start_table(results: list[MethodResult], n_users: int, as_of: pd.Timestamp) -> str:
    """Markdown section: one row per method, or why there is none."""
    title = (
        f"Cold start as of {as_of:%Y-%m-%d %H:%M} UTC (users in their first day or with "
        f"onboarding signals only; GBDTs fitted on warm users): {n_users} users"
    )
    if not results:
        return f"{title}: no cold-start user has labels at this time"
    return "\n".join([title, "", *results_rows(results)])
