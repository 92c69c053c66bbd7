"""Evaluation of downstream scores on held-out users: pooled ROC-AUC and per-user ranking
of candidate items (Recall@k, NDCG@k), plus the user split every method shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

SPLITS = ("train", "val", "test")


_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / phi: splitmix64's increment


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic): every input bit moves every
    output bit, so ids one apart and seeds one apart give unrelated values."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _user_hash(user_ids: np.ndarray, seed: int) -> np.ndarray:
    """(n,) uniform in [0, 1) from (user id, seed): splitmix64 of the id offset by a mixed seed,
    so another seed reshuffles every user (a seed added after the multiply only shifted bits
    that the top-bits cut then dropped)."""
    ids = np.asarray(user_ids).astype(np.int64).view(np.uint64)  # negative ids wrap, no error
    key = _splitmix64(np.array([seed], np.int64).view(np.uint64) + np.uint64(_GOLDEN))
    h = _splitmix64(ids + key)  # (n,) uint64
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_users(
    user_ids: np.ndarray, test_frac: float = 0.3, val_frac: float = 0.1, seed: int = 0
) -> np.ndarray:
    """ "train" / "val" / "test" per row from a hash of (user id, seed): a user is in one split
    only, a seed gives the same split every time, and another seed an independent one."""
    u = _user_hash(user_ids, seed)  # (n,)
    return np.where(u < test_frac, "test", np.where(u < test_frac + val_frac, "val", "train"))


def user_folds(user_ids: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(n,) fold 0..folds-1 per row from the same hash as split_users: a user is in one fold."""
    return np.minimum((_user_hash(user_ids, seed) * folds).astype(np.int64), folds - 1)


def auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC; NaN when only one class is present."""
    y = np.asarray(y)
    return float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan")


def column_aucs(y: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(columns,) ROC-AUC of each column of scores against the 0/1 column of y, over the rows
    where mask is True; NaN where a column has one class only. The same values as `auc` per
    column (ties count one half), from average ranks (Mann-Whitney U) in one vectorised pass
    when nothing is masked: ~100x faster than a roc_auc_score call per column."""
    from scipy.stats import rankdata

    y = np.asarray(y) > 0
    if mask is not None and not mask.all():
        return np.array([auc(y[mask[:, j], j], scores[mask[:, j], j]) for j in range(y.shape[1])])
    ranks = rankdata(scores, axis=0)  # (rows, columns) average ranks, 1-based
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = len(y) - n_pos
    u = (ranks * y).sum(axis=0) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def ranking_metrics(
    user_ids: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int = 10
) -> dict[str, float]:
    """Mean Recall@k and NDCG@k over users with at least one positive among their candidates.

    Recall@k = hits in the top k / min(k, positives) (Liang et al. 2018); NDCG@k with binary
    gains, ideal DCG over min(k, positives). Ties in score are broken by candidate order.
    """
    df = pd.DataFrame({"u": user_ids, "y": np.asarray(y, np.float64), "s": scores})
    df["rank"] = df.groupby("u")["s"].rank(method="first", ascending=False)
    df["hit"] = np.where(df["rank"] <= k, df["y"], 0.0)
    df["gain"] = df["hit"] / np.log2(df["rank"] + 1)
    per_user = df.groupby("u").agg(pos=("y", "sum"), hits=("hit", "sum"), dcg=("gain", "sum"))
    per_user = per_user[per_user["pos"] > 0]
    if per_user.empty:
        return {f"recall@{k}": float("nan"), f"ndcg@{k}": float("nan"), "users": 0}
    ideal_n = np.minimum(per_user["pos"].to_numpy(), k).astype(int)
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))  # (k,) ideal DCG for 1..k hits
    idcg = discounts[ideal_n - 1]
    return {
        f"recall@{k}": float((per_user["hits"] / np.minimum(per_user["pos"], k)).mean()),
        f"ndcg@{k}": float((per_user["dcg"].to_numpy() / idcg).mean()),
        "users": int(len(per_user)),
    }


def binary_metrics(
    user_ids: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int = 10
) -> dict[str, float]:
    """AUC plus ranking metrics for an item task."""
    return {"auc": auc(y, scores), **ranking_metrics(user_ids, y, scores, k), "rows": len(y)}


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, top-3 accuracy and one-vs-rest macro AUC over the classes present in y."""
    y = np.asarray(y, np.int64)
    top3 = np.argsort(-proba, axis=1)[:, :3]
    present = [c for c in np.unique(y) if 0 < (y == c).sum() < len(y)]
    aucs = [roc_auc_score(y == c, proba[:, c]) for c in present]
    return {
        "accuracy": float((proba.argmax(axis=1) == y).mean()),
        "top3_accuracy": float((top3 == y[:, None]).any(axis=1).mean()),
        "macro_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "rows": len(y),
    }
