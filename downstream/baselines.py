"""Baselines for future listening on the same labels and user split as z_u: curated Feast
features, implicit-ALS user factors (events <= T), the raw encoder input, and popularity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from downstream import labels as L
from downstream.matrix import item_matrix
from downstream.metrics import binary_metrics, split_users
from downstream.tasks import Design, batch_as_of, fit_evaluate, make_design, task_labels
from downstream.training_set import build_training_set, trainable_batch
from representation.build import events_until
from userrep import columns as C
from userrep.settings import Settings

log = logging.getLogger(__name__)

METHODS = ("z_u", "curated", "als", "raw", "popularity")


@dataclass
class MethodResult:
    method: str
    n_user_features: int
    metrics: dict[str, Any]


def als_user_factors(
    settings: Settings, as_of: pd.Timestamp, factors: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, (n, factors) float32) from implicit ALS on log(1 + weight) of events <= T."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    ev = events_until(settings.paths, as_of)
    users, uidx = np.unique(ev[C.USER_ID].to_numpy(np.int64), return_inverse=True)
    items, iidx = np.unique(ev[C.ITEM_ID].to_numpy(np.int64), return_inverse=True)
    w = np.log1p(ev[C.WEIGHT].fillna(1.0).clip(lower=0).to_numpy(np.float64))
    ui = sp.csr_matrix((w, (uidx, iidx)), shape=(len(users), len(items)), dtype=np.float32)
    with threadpool_limits(1, "blas"):  # implicit's advice: BLAS threads fight its own
        model = AlternatingLeastSquares(
            factors=factors, regularization=0.05, iterations=15, num_threads=1, random_state=seed
        )
        model.fit(ui, show_progress=False)
    return users, np.asarray(model.user_factors, np.float32)


def als_design(settings: Settings, frame: pd.DataFrame, as_of: pd.Timestamp, seed: int) -> Design:
    """ALS user factors + the same item vectors as every other GBDT method."""
    users, factors = als_user_factors(settings, as_of, seed=seed)
    pos = np.searchsorted(users, frame[C.USER_ID].to_numpy(np.int64))
    pos = np.clip(pos, 0, len(users) - 1)
    known = users[pos] == frame[C.USER_ID].to_numpy(np.int64)
    xu = np.where(known[:, None], factors[pos], np.nan).astype(np.float32)  # (rows, factors)
    xi, inames, idims = item_matrix(frame)
    ids = frame[C.USER_ID].to_numpy(np.int64)
    return Design(
        np.hstack([xu, xi]),
        frame[L.LABEL].to_numpy(np.int64),
        ids,
        split_users(ids, seed=seed),
        [f"als_{j}" for j in range(xu.shape[1])] + inames,
        xu.shape[1],
        {"user": {}, "item": idims},
    )


def popularity_result(
    settings: Settings, labels: pd.DataFrame, as_of: pd.Timestamp, seed: int, k: int = 10
) -> MethodResult:
    """Score = plays of the item among events <= T; no user features, no model."""
    past = events_until(settings.paths, as_of, (C.ITEM_ID,))
    pop = past.groupby(C.ITEM_ID).size()
    scores = labels[C.ITEM_ID].map(pop).fillna(0).to_numpy(np.float64)
    users = labels[C.USER_ID].to_numpy(np.int64)
    test = split_users(users, seed=seed) == "test"
    metrics = binary_metrics(users[test], labels[L.LABEL].to_numpy()[test], scores[test], k)
    return MethodResult("popularity", 0, metrics)


def compare_baselines(
    settings: Settings,
    as_of: pd.Timestamp | None = None,
    batch_id: str | None = None,
    family: str = "lightgbm",
    window_days: int = 7,
    methods: tuple[str, ...] = METHODS,
    params: dict[str, Any] | None = None,
    exclude_seen: bool = False,
) -> tuple[str, list[MethodResult]]:
    """Future listening with every method on one label set and one user split.

    Returns (markdown table, results). as_of defaults to the batch's snapshot time.
    """
    batch = trainable_batch(settings, batch_id) if "z_u" in methods else batch_id
    if as_of is None:
        if batch is None:
            raise ValueError("give as_of (or a batch, whose snapshot time is used)")
        as_of = batch_as_of(settings, batch)
    seed = settings.seed
    labels = task_labels(settings, L.FUTURE_LISTENING, as_of, window_days, seed, exclude_seen)
    results = []
    for method in methods:
        if method == "popularity":
            results.append(popularity_result(settings, labels, as_of, seed))
            continue
        if method == "als":
            frame = build_training_set(settings, labels, None, "curated", validate=False)
            design = als_design(settings, frame, as_of, seed)
        else:
            frame = build_training_set(settings, labels, batch, method, validate=False)
            design = make_design(settings, frame, method, seed=seed)
        _, metrics = fit_evaluate(design, family, params)
        results.append(MethodResult(method, design.n_user_features, metrics))
        log.info("compare %s: %s", method, metrics)
    return comparison_table(results, as_of, batch, family), results


def comparison_table(
    results: list[MethodResult], as_of: pd.Timestamp, batch: str | None, family: str
) -> str:
    """Markdown: one row per method."""
    test_users = next(
        (r.metrics.get("test_users") for r in results if "test_users" in r.metrics), None
    )
    lines = [
        f"Future listening as of {as_of:%Y-%m-%d %H:%M} UTC, batch {batch or '-'}, {family}; "
        f"held-out users: {test_users}",
        "",
        "| method | user features | AUC | Recall@10 | NDCG@10 |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        lines.append(
            f"| {r.method} | {r.n_user_features} | {m['auc']:.3f} | "
            f"{m['recall@10']:.3f} | {m['ndcg@10']:.3f} |"
        )
    return "\n".join(lines)
