"""Baselines for future listening on the same labels and user split as z_u: curated Feast
features, implicit-ALS and Mult-DAE user vectors (events <= T), the raw encoder input, and
popularity; optionally a cold-start section (coldstart.py) and input ablations (ablation.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from baselines.als import Als
from baselines.multvae import MultVae, MultVaeConfig
from downstream import labels as L
from downstream.ablation import ablation_results, ablation_table
from downstream.coldstart import cold_start_table, compare_cold_start
from downstream.label_times import label_times, window_for
from downstream.matrix import item_matrix
from downstream.metrics import binary_metrics, split_users
from downstream.results import WARM, MethodResult, results_rows
from downstream.tasks import Design, fit_evaluate, label_row_times, make_design, task_labels
from downstream.training_set import build_training_set, trainable_batch
from representation.build import events_until
from userrep import columns as C
from userrep.settings import Settings

log = logging.getLogger(__name__)

METHODS = ("z_u", "curated", "als", "mult-dae", "raw", "popularity")


def _event_matrix(
    settings: Settings, as_of: pd.Timestamp, items: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """(user ids, item ids, (users, items) log(1 + weight) matrix) of the events <= T; with
    `items`, columns follow that index and events of other items are left out."""
    ev = events_until(settings.paths, as_of)
    if items is not None:
        ev = ev[ev[C.ITEM_ID].isin(items)]
        iidx = np.searchsorted(items, ev[C.ITEM_ID].to_numpy(np.int64))
    else:
        items, iidx = np.unique(ev[C.ITEM_ID].to_numpy(np.int64), return_inverse=True)
    users, uidx = np.unique(ev[C.USER_ID].to_numpy(np.int64), return_inverse=True)
    w = np.log1p(ev[C.WEIGHT].fillna(1.0).clip(lower=0).to_numpy(np.float64))
    ui = sp.csr_matrix((w, (uidx, iidx)), shape=(len(users), len(items)), dtype=np.float32)
    return users, items, ui


UserVectors = dict[pd.Timestamp, tuple[np.ndarray, np.ndarray]]  # T -> (user ids, (n, dim))


def als_user_factors(
    settings: Settings, times: Sequence[pd.Timestamp], factors: int = 64, seed: int = 0
) -> UserVectors:
    """Implicit ALS on log(1 + weight) of events <= the first time; at each later time the
    users' factors are solved again from their events <= T against the fitted item factors."""
    first, *later = sorted(times)
    users, items, ui = _event_matrix(settings, first)
    model = Als(factors=factors)
    out: UserVectors = {first: (users, model.fit(ui, seed))}
    for t in later:
        users_t, _, ui_t = _event_matrix(settings, t, items)
        out[t] = users_t, model.embed(ui_t)
    return out


def mult_dae_user_vectors(
    settings: Settings, times: Sequence[pd.Timestamp], seed: int = 0, epochs: int = 50
) -> UserVectors:
    """Mult-DAE (baselines/multvae.py with variational=False) fitted on the multi-hot of
    events <= the first time; every user embedded from their events <= each T."""
    first, *later = sorted(times)
    users, items, ui = _event_matrix(settings, first)
    model = MultVae(MultVaeConfig(variational=False, epochs=epochs))
    model.fit(ui, seed)
    out: UserVectors = {first: (users, model.embed(ui))}
    for t in later:
        users_t, _, ui_t = _event_matrix(settings, t, items)
        out[t] = users_t, model.embed(ui_t)
    return out


def _lookup(users: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(len(ids), dim) rows of `vectors` by user id; NaN for users without one."""
    pos = np.clip(np.searchsorted(users, ids), 0, max(len(users) - 1, 0))
    known = users[pos] == ids if len(users) else np.zeros(len(ids), bool)
    return np.where(known[:, None], vectors[pos], np.nan).astype(np.float32)


def vector_design(frame: pd.DataFrame, vectors: UserVectors, prefix: str, seed: int) -> Design:
    """User vectors looked up by (user id, label time) (NaN when none) + the item vectors."""
    ids = frame[C.USER_ID].to_numpy(np.int64)
    row_t = label_row_times(frame)
    dim = next(iter(vectors.values()))[1].shape[1]
    xu = np.full((len(frame), dim), np.nan, np.float32)  # (rows, dim)
    for t, (users, z) in vectors.items():
        rows = row_t == t.value
        xu[rows] = _lookup(users, z, ids[rows])
    xi, inames, idims = item_matrix(frame)
    return Design(
        np.hstack([xu, xi]),
        frame[L.LABEL].to_numpy(np.int64),
        ids,
        split_users(ids, seed=seed),
        [f"{prefix}_{j}" for j in range(xu.shape[1])] + inames,
        xu.shape[1],
        {"user": {}, "item": idims},
        times=row_t,
    )


def frame_times(frame: pd.DataFrame) -> list[pd.Timestamp]:
    """The distinct label times of a label / training-set frame, sorted."""
    return sorted(pd.Timestamp(t, tz="UTC") for t in np.unique(label_row_times(frame)))


def als_design(settings: Settings, frame: pd.DataFrame, seed: int) -> Design:
    """ALS user factors as of each row's label time + the same item vectors as every GBDT."""
    return vector_design(
        frame, als_user_factors(settings, frame_times(frame), seed=seed), "als", seed
    )


def mult_dae_design(settings: Settings, frame: pd.DataFrame, seed: int) -> Design:
    """Mult-DAE user vectors as of each row's label time + the same item vectors."""
    vectors = mult_dae_user_vectors(settings, frame_times(frame), seed=seed)
    return vector_design(frame, vectors, "mult_dae", seed)


_VECTOR_DESIGNS = {"als": als_design, "mult-dae": mult_dae_design}  # user vectors from events


def popularity_result(
    settings: Settings, labels: pd.DataFrame, seed: int, k: int = 10, folds: int = 1
) -> MethodResult:
    """Score = plays of the item among events <= the row's label time; no user features.
    Scored on the test users (every user when cross-fitting: folds > 1)."""
    scores = np.zeros(len(labels), np.float64)
    row_t = label_row_times(labels)
    for t in frame_times(labels):
        past = events_until(settings.paths, t, (C.ITEM_ID,))
        rows = row_t == t.value
        pop = past.groupby(C.ITEM_ID).size()
        scores[rows] = labels.loc[rows, C.ITEM_ID].map(pop).fillna(0).to_numpy(np.float64)
    users = labels[C.USER_ID].to_numpy(np.int64)
    test = split_users(users, seed=seed) == "test" if folds <= 1 else np.ones(len(users), bool)
    queries = pd.MultiIndex.from_arrays([users, row_t]).factorize()[0]
    metrics = binary_metrics(queries[test], labels[L.LABEL].to_numpy()[test], scores[test], k)
    metrics["test_users"] = int(len(np.unique(users[test])))
    return MethodResult("popularity", 0, metrics)


def run_method(
    settings: Settings,
    method: str,
    labels: pd.DataFrame,
    as_of: pd.Timestamp | Sequence[pd.Timestamp] | None,
    batch: str | None,
    family: str,
    params: dict[str, Any] | None = None,
    folds: int = 1,
) -> tuple[MethodResult, Design | None]:
    """One method on one label set: training set through Feast (timed), GBDT fit (timed).
    Every user representation is taken as of each row's own label time (as_of is unused:
    the times come with the labels). folds > 1: cross-fitted over users (fit_evaluate)."""
    seed = settings.seed
    if method == "popularity":
        return popularity_result(settings, labels, seed, folds=folds), None
    t0 = time.perf_counter()
    if method in _VECTOR_DESIGNS:
        frame = build_training_set(settings, labels, None, "curated", validate=False)
        design = _VECTOR_DESIGNS[method](settings, frame, seed)
    else:
        frame = build_training_set(settings, labels, batch, method, validate=False)
        design = make_design(settings, frame, method, seed=seed)
    t1 = time.perf_counter()
    _, metrics = fit_evaluate(design, family, params, folds=folds, seed=seed)
    seconds = {"training_set": t1 - t0, "fit": time.perf_counter() - t1}
    log.info("compare %s: %s", method, metrics)
    return MethodResult(method, design.n_user_features, metrics, WARM, seconds), design


def compare_baselines(
    settings: Settings,
    as_of: pd.Timestamp | Sequence[pd.Timestamp] | None = None,
    batch_id: str | None = None,
    family: str = "lightgbm",
    window_days: int | None = None,
    methods: tuple[str, ...] = METHODS,
    params: dict[str, Any] | None = None,
    exclude_seen: bool = False,
    cold_start: bool = False,
    ablate: Sequence[str] = (),
    folds: int = 1,
) -> tuple[str, list[MethodResult]]:
    """Future listening with every method on one label set and one user split.

    Returns (markdown, results). as_of defaults to every label time of the batch (label_times:
    its published times from its training time on, a rolling origin); each row's features are
    as of its own time. window_days defaults to the spacing of those times (7 for one time).
    cold_start adds the cold-start section at the newest label time (coldstart.py: z_u vs
    onboarding picks vs popularity on users in their first day); each `ablate` entry ("7d",
    "collab", "7d+30d", ...) retrains the autoencoder without those input blocks and adds its
    decrement (ablation.py). folds > 1 cross-fits every GBDT over user folds, so every
    labelled user is scored once (small data); the default is one train / val / test split.
    """
    batch = trainable_batch(settings, batch_id) if "z_u" in methods or ablate else batch_id
    if as_of is None:
        if batch is None:
            raise ValueError("give as_of (or a batch, whose published times are used)")
        times, window = label_times(settings, batch, window_days)
    else:
        times = L.label_time_list(as_of)
        window = window_for(times, window_days)
    labels = task_labels(settings, L.FUTURE_LISTENING, times, window, settings.seed, exclude_seen)
    results = [
        run_method(settings, m, labels, times, batch, family, params, folds)[0] for m in methods
    ]
    parts = [comparison_table(results, times, batch, family, window)]
    if ablate:
        assert batch is not None
        ablated = ablation_results(settings, batch, labels, times, ablate, family, params, folds)
        reference = next((r for r in results if r.method == "z_u"), None)
        parts.append(ablation_table(ablated, reference))
        results += ablated
    if cold_start:
        assert batch is not None
        cold, n_users = compare_cold_start(
            settings, times[-1], batch, family, window, params=params
        )
        parts.append(cold_start_table(cold, n_users, times[-1]))
        results += cold
    return "\n\n".join(parts), results


def comparison_table(
    results: list[MethodResult],
    as_of: pd.Timestamp | Sequence[pd.Timestamp],
    batch: str | None,
    family: str,
    window_days: int | None = None,
) -> str:
    """Markdown: one row per method."""
    warm = [r for r in results if r.section == WARM]
    test_users = next(
        (r.metrics.get("test_users") for r in warm if "test_users" in r.metrics), None
    )
    times = L.label_time_list(as_of)
    when = f"as of {times[0]:%Y-%m-%d %H:%M} UTC"
    if len(times) > 1:
        when = f"at {len(times)} label times {times[0]:%Y-%m-%d} .. {times[-1]:%Y-%m-%d}"
    window = f" (+{window_days}d)" if window_days else ""
    rows = next((r.metrics.get("rows") for r in warm if r.method == "z_u"), None)
    folds = next((r.metrics.get("folds") for r in warm if r.metrics.get("folds")), None)
    scored = f"cross-fitted over {folds} user folds, scored users" if folds else "held-out users"
    lines = [
        f"Future listening {when}{window}, batch {batch or '-'}, {family}; "
        f"{scored}: {test_users}" + (f", test rows: {rows}" if rows else ""),
        "",
        *results_rows(warm),
    ]
    return "\n".join(lines)
