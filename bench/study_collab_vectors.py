"""Study: which collaborative item vectors make the better user mean, per data set.

z_u's collaborative modality averages PPMI-SVD item vectors (item co-occurrence, the
platform's encoder). The truncated-SVD baseline instead projects the user's tf-idf multi-hot on
the right singular vectors of the user-item matrix. This study puts the two item-vector
families through the same user mean (the `ppmi-mean` baseline's log(1 + weight) weighting) on
one protocol split, so only the item vectors differ, and prints the cheap probes for each.

    .venv/bin/python bench/study_collab_vectors.py ciao movielens-100k [--seed 0]

The GBDT's item side keeps the platform's PPMI-SVD vectors in both rows (the probe's own
features).

Could `userrep train` choose the family per workspace? It may only read the training side, so
the study also scores both families by a next-period criterion computed on the history alone:
the history is cut at its 80 % time quantile, both families are fitted on the earlier part, and
for users active on both sides the earlier part's user mean predicts the later part. Two reads:
a ridge regression to the later 300 most popular items (AUC over pairs not already seen, fitted
on half the users, scored on the other half), and the later new items' recall among the top 50
items of the 20 nearest users (selection.neighbour_recall, the AE settings' criterion). A
per-workspace choice is worth building only where these agree with the protocol's probes;
docs/quality.md quotes the figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

from evaluation import probes
from evaluation.methods import PpmiMean, make_context
from evaluation.protocol import ProtocolConfig, load_eval_data, make_split, user_item_matrix
from evaluation.runner import cold_history
from representation.encoders import EncoderConfig, collaborative_vectors
from representation.selection import neighbour_recall
from userrep import columns as C

CUT_QUANTILE = 0.8  # next-period criterion: the later 20 % of history events are its target
TOP_ITEMS = 300  # ... whose most popular items the ridge read predicts


def svd_item_vectors(events: pd.DataFrame, item_ids: np.ndarray, seed: int) -> np.ndarray:
    """(n_items, 64) L2-normalised right singular vectors of the events' tf-idf multi-hot."""
    x = user_item_matrix(events, np.unique(events[C.USER_ID].to_numpy()), item_ids, binary=True)
    v = TruncatedSVD(64, random_state=seed).fit(TfidfTransformer().fit_transform(x)).components_
    return (v.T / np.maximum(np.linalg.norm(v.T, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def log_weights(events: pd.DataFrame, users: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    """(users, items) log(1 + summed weight): the ppmi-mean baseline's weights of a user mean."""
    m = user_item_matrix(events, users, item_ids)
    m.data = np.log1p(np.maximum(m.data, 0.0))
    return m


def _mean(m: sp.csr_matrix, vectors: np.ndarray) -> np.ndarray:
    return np.asarray(m @ vectors) / np.maximum(np.asarray(m.sum(axis=1)), 1e-12)


def next_period(history: pd.DataFrame, item_ids: np.ndarray, seed: int) -> dict[str, dict]:
    """Both families scored by the training-side criterion (module docstring)."""
    cut = history[C.TS].quantile(CUT_QUANTILE)
    early, late = history[history[C.TS] <= cut], history[history[C.TS] > cut]
    users = np.intersect1d(early[C.USER_ID].unique(), late[C.USER_ID].unique())
    others = np.setdiff1d(early[C.USER_ID].unique(), users)
    m_early, m_late = (log_weights(e, users, item_ids) for e in (early, late))
    m_ref = log_weights(early, others, item_ids)
    counts = np.bincount(np.searchsorted(item_ids, early[C.ITEM_ID]), minlength=len(item_ids))
    top = np.argsort(-counts, kind="stable")[:TOP_ITEMS]
    y = m_late[:, top].toarray() > 0
    unseen = m_early[:, top].toarray() == 0
    fit = np.random.default_rng([seed, 1]).random(len(users)) < 0.5
    new_items = (m_late - m_late.multiply(m_early.astype(bool))).tocsr()  # not already had
    new_items.eliminate_zeros()
    families = {
        "PPMI-SVD (platform)": collaborative_vectors(early, item_ids, EncoderConfig(seed=seed)),
        "user-item SVD": svd_item_vectors(early, item_ids, seed),
    }
    out = {}
    for name, vectors in families.items():
        z, z_ref = _mean(m_early, vectors), _mean(m_ref, vectors)
        scores = Ridge(alpha=1.0).fit(z[fit], y[fit]).predict(z[~fit])
        pairs = unseen[~fit]
        out[name] = {
            "ridge AUC": float(roc_auc_score(y[~fit][pairs], scores[pairs])),
            "neighbour recall": neighbour_recall(
                z, np.vstack([z_ref, z]), new_items, sp.vstack([m_ref, m_early]).tocsr()
            ),
        }
    return out | {"users": {"both periods": len(users)}}


def probe(split, ctx, item_vectors: np.ndarray, gbdt_items: np.ndarray) -> dict[str, float]:
    ctx.collab = item_vectors
    mean = PpmiMean()
    warm = mean.embed(ctx, split.user_ids, split.history)
    cold = mean.embed(ctx, split.user_ids, cold_history(split))
    ctx.collab = gbdt_items
    out = probes.linear_probe_cv(split, warm)
    out |= probes.gbdt_probe(split, warm, gbdt_items)
    out |= probes.genre_probe(split, warm)
    out |= probes.similar_probe(split, warm)
    return out | {"cold_linear_auc": probes.linear_probe(split, cold)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for dataset in args.datasets:
        split = make_split(load_eval_data(dataset), args.seed, ProtocolConfig())
        ctx = make_context(split)
        ppmi = ctx.collab
        for name in ("PPMI-SVD (platform)", "user-item SVD"):
            t0 = time.perf_counter()
            vectors = ppmi if name.startswith("PPMI") else None
            if vectors is None:
                vectors = svd_item_vectors(split.history, split.item_ids, args.seed)
            got = probe(split, ctx, vectors, ppmi)
            shown = ", ".join(f"{k} {v:.3f}" for k, v in got.items() if k != "linear_c")
            print(f"{dataset} seed {args.seed} {name}: {shown} ({time.perf_counter() - t0:.0f}s)")
        for name, got in next_period(split.history, split.item_ids, args.seed).items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in got.items())
            print(f"{dataset} seed {args.seed} next period, {name}: {shown}")


if __name__ == "__main__":
    main()
