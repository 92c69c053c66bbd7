"""Study: which collaborative item vectors make the better user mean, per data set.

z_u's collaborative modality averages PPMI-SVD item vectors (item co-occurrence, the
platform's encoder). The truncated-SVD baseline instead projects the user's tf-idf multi-hot on
the right singular vectors of the user-item matrix. This study puts the two item-vector
families through the same user mean (the `ppmi-mean` baseline's log(1 + weight) weighting) on
one protocol split, so only the item vectors differ, and prints the cheap probes for each.

    .venv/bin/python bench/study_collab_vectors.py ciao movielens-100k [--seed 0]

The GBDT's item side keeps the platform's PPMI-SVD vectors in both rows (the probe's own
features); docs/quality.md quotes the figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer

from evaluation import probes
from evaluation.methods import PpmiMean, make_context
from evaluation.protocol import ProtocolConfig, load_eval_data, make_split
from evaluation.runner import cold_history


def svd_item_vectors(ctx) -> np.ndarray:
    """(n_items, 64) L2-normalised right singular vectors of the history's tf-idf multi-hot."""
    split = ctx.split
    tfidf = TfidfTransformer().fit(split.hist > 0)
    x = tfidf.transform(ctx.matrix(split.user_ids, split.history, binary=True))
    v = TruncatedSVD(64, random_state=split.seed).fit(x).components_.T
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


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
        for name, vectors in (("PPMI-SVD (platform)", ppmi), ("user-item SVD", None)):
            t0 = time.perf_counter()
            got = probe(split, ctx, svd_item_vectors(ctx) if vectors is None else vectors, ppmi)
            shown = ", ".join(f"{k} {v:.3f}" for k, v in got.items() if k != "linear_c")
            print(f"{dataset} seed {args.seed} {name}: {shown} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
