"""Evaluation of downstream scores on held-out users: pooled ROC-AUC and per-user ranking
of candidate items (Recall@k, NDCG@k), the user split every method shares, and a paired
bootstrap over users for intervals on those metrics and on differences between scorers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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


def per_query_ranking(
    queries: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int = 10
) -> pd.DataFrame:
    """Recall@k and NDCG@k of each query (a user, or a (user, label time) pair) with at least
    one positive among its candidates, indexed by query; what ranking_metrics averages.

    Recall@k = hits in the top k / min(k, positives) (Liang et al. 2018); NDCG@k with binary
    gains, ideal DCG over min(k, positives). Ties in score are broken by candidate order.
    """
    df = pd.DataFrame({"u": queries, "y": np.asarray(y, np.float64), "s": scores})
    df["rank"] = df.groupby("u")["s"].rank(method="first", ascending=False)
    df["hit"] = np.where(df["rank"] <= k, df["y"], 0.0)
    df["gain"] = df["hit"] / np.log2(df["rank"] + 1)
    per_user = df.groupby("u").agg(pos=("y", "sum"), hits=("hit", "sum"), dcg=("gain", "sum"))
    per_user = per_user[per_user["pos"] > 0]
    ideal_n = np.minimum(per_user["pos"].to_numpy(), k).astype(int)
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))  # (k,) ideal DCG for 1..k hits
    return pd.DataFrame(
        {
            f"recall@{k}": per_user["hits"] / np.minimum(per_user["pos"], k),
            f"ndcg@{k}": per_user["dcg"].to_numpy() / discounts[ideal_n - 1],
        },
        index=per_user.index,
    )


def ranking_metrics(
    user_ids: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int = 10
) -> dict[str, float]:
    """Mean Recall@k and NDCG@k over users with at least one positive among their candidates
    (per_query_ranking, averaged)."""
    per_user = per_query_ranking(user_ids, y, scores, k)
    if per_user.empty:
        return {f"recall@{k}": float("nan"), f"ndcg@{k}": float("nan"), "users": 0}
    return {
        f"recall@{k}": float(per_user[f"recall@{k}"].mean()),
        f"ndcg@{k}": float(per_user[f"ndcg@{k}"].mean()),
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


# --- bootstrap over users -------------------------------------------------------------------

N_RESAMPLES = 1000  # percentile bounds at 95 % move by ~0.1 of their width between reruns
ROWS_PER_CHUNK = 20_000_000  # resamples x rows held at once (~160 MB of float64)


class _SortedScores:
    """One score column on fixed rows, sorted once: weighted ROC-AUC for many resamples of
    the rows' groups (users) at a time."""

    def __init__(self, y: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_groups: int):
        y, scores = np.asarray(y) > 0, np.asarray(scores, np.float64)
        neg = np.flatnonzero(~y)
        neg = neg[np.argsort(scores[neg], kind="stable")]  # negatives by score
        pos = np.flatnonzero(y)
        neg_scores = scores[neg]
        # each positive's place among the negatives: below it, and below or tied with it
        self.lo = np.searchsorted(neg_scores, scores[pos], "left")  # (n_pos,)
        self.hi = np.searchsorted(neg_scores, scores[pos], "right")
        self.g_neg, self.g_pos = groups[neg], groups[pos]
        self.n_pos = np.bincount(self.g_pos, minlength=n_groups).astype(np.float64)  # (G,)
        self.n_neg = np.bincount(self.g_neg, minlength=n_groups).astype(np.float64)

    def auc(self, counts: np.ndarray) -> np.ndarray:
        """(r,) AUC with each row weighted by its group's count in counts (r, G): the
        Mann-Whitney count over weighted pairs, ties one half (roc_auc_score with
        sample_weight). NaN where a resample lacks a class."""
        w_neg = counts[:, self.g_neg]  # (r, n_neg)
        cum = np.zeros((len(counts), w_neg.shape[1] + 1))
        np.cumsum(w_neg, axis=1, out=cum[:, 1:])  # (r, n_neg + 1) weight of the first j
        num = (counts[:, self.g_pos] * (cum[:, self.lo] + cum[:, self.hi])).sum(axis=1) / 2
        den = (counts @ self.n_pos) * (counts @ self.n_neg)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)


class _Scorer:
    """Bootstrap samples of AUC (macro over classes for a multiclass score matrix) and of mean
    Recall@k of one scorer on fixed test rows."""

    def __init__(
        self,
        y: np.ndarray,
        scores: np.ndarray,
        groups: np.ndarray,
        n_groups: int,
        queries: np.ndarray | None,
        k: int,
    ):
        y = np.asarray(y)
        if scores.ndim == 2:  # multiclass: one-vs-rest over the classes present in y
            present = [c for c in np.unique(y) if 0 < (y == c).sum() < len(y)]
            self.columns = [_SortedScores(y == c, scores[:, c], groups, n_groups) for c in present]
        else:
            self.columns = [_SortedScores(y, scores, groups, n_groups)]
        self.recall_key = f"recall@{k}"
        self.recall_sum = self.recall_n = None
        if queries is not None and scores.ndim == 1:
            per_q = per_query_ranking(queries, y, scores, k)[self.recall_key]  # (queries,)
            first = pd.Series(groups).groupby(pd.Series(queries)).first()  # query -> group
            g = first.loc[per_q.index].to_numpy()
            self.recall_sum = np.bincount(g, per_q.to_numpy(), minlength=n_groups)  # (groups,)
            self.recall_n = np.bincount(g, minlength=n_groups).astype(np.float64)

    def aucs(self, counts: np.ndarray) -> np.ndarray:
        per_class = np.stack([c.auc(counts) for c in self.columns])  # (classes, r)
        if len(per_class) == 1:
            return per_class[0]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample without a class
            return np.nanmean(per_class, axis=0)

    def recalls(self, counts: np.ndarray) -> np.ndarray | None:
        if self.recall_sum is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return (counts @ self.recall_sum) / (counts @ self.recall_n)


@dataclass
class Bootstrap:
    """Paired bootstrap over users: every scorer is scored on the same resampled users, so
    differences between scorers keep their correlation. samples[scorer][metric]: (resamples,);
    point[scorer][metric]: the metric on the test set itself."""

    n_resamples: int
    seed: int
    n_users: int
    point: dict[str, dict[str, float]]
    samples: dict[str, dict[str, np.ndarray]]

    def interval(self, scorer: str, metric: str, level: float = 0.95) -> tuple[float, float]:
        """Two-sided percentile interval of one scorer's metric."""
        tail = 100 * (1 - level) / 2
        return _percentiles(self.samples[scorer][metric], tail, 100 - tail)

    def difference(
        self, a: str, b: str, metric: str = "auc", level: float = 0.95
    ) -> tuple[float, float, float]:
        """(point, one-sided lower bound, one-sided upper bound) of metric(a) - metric(b) at
        `level` each: together a two-sided interval at 2 * level - 1."""
        d = self.samples[a][metric] - self.samples[b][metric]  # (resamples,) paired
        lo, hi = _percentiles(d, 100 * (1 - level), 100 * level)
        return self.point[a][metric] - self.point[b][metric], lo, hi


def _percentiles(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Two percentiles over the resamples where the metric exists (NaN, NaN if none does)."""
    ok = values[~np.isnan(values)]
    if not len(ok):
        return float("nan"), float("nan")
    a, b = np.percentile(ok, [lo, hi])
    return float(a), float(b)


def paired_bootstrap(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    users: np.ndarray,
    queries: np.ndarray | None = None,
    k: int = 10,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Bootstrap:
    """Resample test users with replacement n_resamples times (all of a user's rows go
    together) and score every scorer on each resample: AUC (`auc`, macro one-vs-rest for a
    (rows, classes) score matrix) and, with queries on binary scores, mean Recall@k.

    y (rows,), scores {name: (rows,) or (rows, classes)}, users (rows,) the resampling unit,
    queries (rows,) the ranking query of each row (a user, or a user at one label time).
    """
    y = np.asarray(y)
    groups, uniques = pd.factorize(np.asarray(users))
    n_groups = len(uniques)
    scorers = {
        n: _Scorer(y, np.asarray(s), groups, n_groups, queries, k) for n, s in scores.items()
    }
    point: dict[str, dict[str, float]] = {}
    for name, s in scores.items():
        s = np.asarray(s)
        m = {"auc": multiclass_metrics(y, s)["macro_auc"] if s.ndim == 2 else auc(y, s)}
        if scorers[name].recall_sum is not None and queries is not None:
            m[f"recall@{k}"] = ranking_metrics(queries, y, s, k)[f"recall@{k}"]
        point[name] = m
    samples: dict[str, dict[str, list[np.ndarray]]] = {n: {m: [] for m in point[n]} for n in point}
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, ROWS_PER_CHUNK // max(len(y), 1)))
    for lo in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - lo)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=r)  # (r, G)
        counts = counts.astype(np.float64)  # a row weighs as often as its user is drawn
        for name, scorer in scorers.items():
            samples[name]["auc"].append(scorer.aucs(counts))
            recalls = scorer.recalls(counts)
            if recalls is not None:
                samples[name][f"recall@{k}"].append(recalls)
    stacked = {n: {m: np.concatenate(v) for m, v in ms.items()} for n, ms in samples.items()}
    return Bootstrap(n_resamples, seed, n_groups, point, stacked)
