"""Baselines for future listening on the same labels and user split as z_u: curated Feast
features, implicit-ALS and Mult-DAE user vectors (events <= T), the raw encoder input, and
popularity; optionally a cold-start section (coldstart.py) and input ablations (ablation.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
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

METHODS = ("z_u", "curated", "als", "mult-dae", "raw", "popularity")
WARM, COLD, ABLATION = "all users", "cold start", "ablation"  # MethodResult.section


@dataclass
class MethodResult:
    method: str
    n_user_features: int
    metrics: dict[str, Any]
    section: str = WARM  # which table of the comparison the row belongs to
    seconds: dict[str, float] | None = None  # training_set / fit wall times, when measured


def _event_matrix(settings: Settings, as_of: pd.Timestamp) -> tuple[np.ndarray, sp.csr_matrix]:
    """(user ids, (users, items) log(1 + weight) matrix) of the events <= T."""
    ev = events_until(settings.paths, as_of)
    users, uidx = np.unique(ev[C.USER_ID].to_numpy(np.int64), return_inverse=True)
    items, iidx = np.unique(ev[C.ITEM_ID].to_numpy(np.int64), return_inverse=True)
    w = np.log1p(ev[C.WEIGHT].fillna(1.0).clip(lower=0).to_numpy(np.float64))
    ui = sp.csr_matrix((w, (uidx, iidx)), shape=(len(users), len(items)), dtype=np.float32)
    return users, ui


def als_user_factors(
    settings: Settings, as_of: pd.Timestamp, factors: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, (n, factors) float32) from implicit ALS on log(1 + weight) of events <= T."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    users, ui = _event_matrix(settings, as_of)
    with threadpool_limits(1, "blas"):  # implicit's advice: BLAS threads fight its own
        model = AlternatingLeastSquares(
            factors=factors, regularization=0.05, iterations=15, num_threads=1, random_state=seed
        )
        model.fit(ui, show_progress=False)
    return users, np.asarray(model.user_factors, np.float32)


def mult_dae_user_vectors(
    settings: Settings, as_of: pd.Timestamp, seed: int = 0, epochs: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, (n, 200) float32) from Mult-DAE (representation/evaluate/multvae.py with
    variational=False) fitted on the multi-hot of events <= T, every user embedded."""
    from representation.evaluate.multvae import MultVae, MultVaeConfig

    users, ui = _event_matrix(settings, as_of)
    model = MultVae(MultVaeConfig(variational=False, epochs=epochs))
    model.fit_matrix(ui, seed)
    return users, model.embed_matrix(ui)


def vector_design(
    frame: pd.DataFrame, users: np.ndarray, vectors: np.ndarray, prefix: str, seed: int
) -> Design:
    """User vectors looked up by user id (NaN for users without one) + the item vectors."""
    ids = frame[C.USER_ID].to_numpy(np.int64)
    pos = np.clip(np.searchsorted(users, ids), 0, max(len(users) - 1, 0))
    known = users[pos] == ids if len(users) else np.zeros(len(ids), bool)
    xu = np.where(known[:, None], vectors[pos], np.nan).astype(np.float32)  # (rows, dim)
    xi, inames, idims = item_matrix(frame)
    return Design(
        np.hstack([xu, xi]),
        frame[L.LABEL].to_numpy(np.int64),
        ids,
        split_users(ids, seed=seed),
        [f"{prefix}_{j}" for j in range(xu.shape[1])] + inames,
        xu.shape[1],
        {"user": {}, "item": idims},
    )


def als_design(settings: Settings, frame: pd.DataFrame, as_of: pd.Timestamp, seed: int) -> Design:
    """ALS user factors + the same item vectors as every other GBDT method."""
    users, factors = als_user_factors(settings, as_of, seed=seed)
    return vector_design(frame, users, factors, "als", seed)


def mult_dae_design(
    settings: Settings, frame: pd.DataFrame, as_of: pd.Timestamp, seed: int
) -> Design:
    """Mult-DAE user vectors + the same item vectors as every other GBDT method."""
    users, z = mult_dae_user_vectors(settings, as_of, seed=seed)
    return vector_design(frame, users, z, "mult_dae", seed)


_VECTOR_DESIGNS = {"als": als_design, "mult-dae": mult_dae_design}  # user vectors from events


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


def run_method(
    settings: Settings,
    method: str,
    labels: pd.DataFrame,
    as_of: pd.Timestamp,
    batch: str | None,
    family: str,
    params: dict[str, Any] | None = None,
) -> tuple[MethodResult, Design | None]:
    """One method on one label set: training set through Feast (timed), GBDT fit (timed)."""
    seed = settings.seed
    if method == "popularity":
        return popularity_result(settings, labels, as_of, seed), None
    t0 = time.perf_counter()
    if method in _VECTOR_DESIGNS:
        frame = build_training_set(settings, labels, None, "curated", validate=False)
        design = _VECTOR_DESIGNS[method](settings, frame, as_of, seed)
    else:
        frame = build_training_set(settings, labels, batch, method, validate=False)
        design = make_design(settings, frame, method, seed=seed)
    t1 = time.perf_counter()
    _, metrics = fit_evaluate(design, family, params)
    seconds = {"training_set": t1 - t0, "fit": time.perf_counter() - t1}
    log.info("compare %s: %s", method, metrics)
    return MethodResult(method, design.n_user_features, metrics, WARM, seconds), design


def compare_baselines(
    settings: Settings,
    as_of: pd.Timestamp | None = None,
    batch_id: str | None = None,
    family: str = "lightgbm",
    window_days: int = 7,
    methods: tuple[str, ...] = METHODS,
    params: dict[str, Any] | None = None,
    exclude_seen: bool = False,
    cold_start: bool = False,
    ablate: Sequence[str] = (),
) -> tuple[str, list[MethodResult]]:
    """Future listening with every method on one label set and one user split.

    Returns (markdown, results). as_of defaults to the batch's snapshot time. cold_start adds
    the cold-start section (coldstart.py: z_u vs onboarding picks vs popularity on users in
    their first day); each `ablate` entry ("7d", "collab", "7d+30d", ...) retrains the
    autoencoder without those input blocks and adds its decrement (ablation.py).
    """
    batch = trainable_batch(settings, batch_id) if "z_u" in methods or ablate else batch_id
    if as_of is None:
        if batch is None:
            raise ValueError("give as_of (or a batch, whose snapshot time is used)")
        as_of = batch_as_of(settings, batch)
    labels = task_labels(
        settings, L.FUTURE_LISTENING, as_of, window_days, settings.seed, exclude_seen
    )
    results = [run_method(settings, m, labels, as_of, batch, family, params)[0] for m in methods]
    parts = [comparison_table(results, as_of, batch, family)]
    if ablate:
        from downstream.ablation import ablation_results, ablation_table

        assert batch is not None
        ablated = ablation_results(settings, batch, labels, as_of, ablate, family, params)
        reference = next((r for r in results if r.method == "z_u"), None)
        parts.append(ablation_table(ablated, reference))
        results += ablated
    if cold_start:
        from downstream.coldstart import cold_start_table, compare_cold_start

        assert batch is not None
        cold, n_users = compare_cold_start(
            settings, as_of, batch, family, window_days, params=params
        )
        parts.append(cold_start_table(cold, n_users, as_of))
        results += cold
    return "\n\n".join(parts), results


def metric_columns(results: Sequence[MethodResult]) -> list[tuple[str, str]]:
    """(metric key, header): binary-task or multiclass columns, whichever the rows carry."""
    if any("accuracy" in r.metrics for r in results):
        return [("accuracy", "accuracy"), ("top3_accuracy", "top-3"), ("macro_auc", "macro AUC")]
    return [("auc", "AUC"), ("recall@10", "Recall@10"), ("ndcg@10", "NDCG@10")]


def results_rows(results: Sequence[MethodResult], extra: Sequence[str] = ()) -> list[str]:
    """Markdown header + one row per result; `extra` cells are appended row by row."""
    cols = metric_columns(results)
    head = ["method", "user features", *[h for _, h in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(results):
        cells = [r.method, str(r.n_user_features)]
        cells += [f"{float(r.metrics.get(k, float('nan'))):.3f}" for k, _ in cols]
        lines.append("| " + " | ".join(cells) + (f" | {extra[i]} |" if extra else " |"))
    return lines


def comparison_table(
    results: list[MethodResult], as_of: pd.Timestamp, batch: str | None, family: str
) -> str:
    """Markdown: one row per method."""
    warm = [r for r in results if r.section == WARM]
    test_users = next(
        (r.metrics.get("test_users") for r in warm if "test_users" in r.metrics), None
    )
    lines = [
        f"Future listening as of {as_of:%Y-%m-%d %H:%M} UTC, batch {batch or '-'}, {family}; "
        f"held-out users: {test_users}",
        "",
        *results_rows(warm),
    ]
    return "\n".join(lines)
