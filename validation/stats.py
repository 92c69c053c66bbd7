"""Drift statistics in plain numpy: what the GX suites compute and the custom metrics call.

Sits under validation/drift.py (which turns them into expectations); nothing here imports GX.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

STD_EPS = 1e-12  # a column whose std is below this is treated as constant
SIDE_REFERENCE = "reference"  # the two sides of a two-sample frame
SIDE_CANDIDATE = "candidate"


def vector_array(column: pd.Series) -> pa.ListArray:
    """A column of vectors (Arrow list dtype, or objects holding arrays / lists) as one Arrow
    list array, so that vector statistics stay vectorised at a million rows."""
    if isinstance(column.dtype, pd.ArrowDtype):
        return pa.chunked_array(column.array.__arrow_array__()).combine_chunks()
    values = [None if v is None else np.asarray(v, np.float64) for v in column.to_numpy()]
    return pa.array(values, type=pa.list_(pa.float64()))


def flat_vectors(arr: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(values of every vector, offsets: row i is values[offsets[i]:offsets[i + 1]])."""
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return values, offsets - offsets[0]


def vector_norms(column: pd.Series) -> np.ndarray:
    """L2 norm of each row's vector; NaN where the row is null."""
    arr = vector_array(column)
    values, offsets = flat_vectors(arr)
    squares = np.concatenate([[0.0], np.cumsum(values.astype(np.float64) ** 2)])
    norms = np.sqrt(np.maximum(squares[offsets[1:]] - squares[offsets[:-1]], 0.0))  # (n,)
    nulls = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    return np.where(nulls, np.nan, norms)


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted row positions of a fixed-size random sample (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def finite_rows(x: np.ndarray) -> np.ndarray:
    """Mask of rows (n, d) whose values are all finite."""
    return np.isfinite(x).all(axis=1)


def standardized_quantiles(values: np.ndarray, quantiles: tuple[float, ...]) -> list[float] | None:
    """Quantiles of (v - mean) / std over the finite values; None for a constant column."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None
    std = v.std()
    if std < STD_EPS:
        return None
    return [float(q) for q in np.quantile((v - v.mean()) / std, quantiles)]


def normalise(z: np.ndarray) -> np.ndarray:
    """Centre on the own mean and divide by the RMS distance to it (unit total spread).

    Invariant to translation, rotation and global scale: the space-free form of a vector set.
    """
    c = z - z.mean(axis=0)  # (n, d)
    rms = np.sqrt((c * c).sum(axis=1).mean())
    return c / max(rms, STD_EPS)


def relative_norms(z: np.ndarray) -> np.ndarray:
    """||z - mean|| / RMS: norm distribution after standardisation, comparable across batches."""
    return np.linalg.norm(normalise(z.astype(np.float64)), axis=1)


@dataclass(frozen=True)
class PcBasis:
    """Top principal axes of a normalised vector set; signs fixed so scores skew positive."""

    components: np.ndarray  # (k, d)

    @classmethod
    def fit(cls, z: np.ndarray, k: int) -> PcBasis:
        zn = normalise(z.astype(np.float64))
        _, _, vt = np.linalg.svd(zn, full_matrices=False)
        comps = vt[: min(k, vt.shape[0])]  # (k, d)
        skew = ((zn @ comps.T) ** 3).mean(axis=0)  # (k,)
        return cls(comps * np.where(skew < 0, -1.0, 1.0)[:, None])

    def scores(self, z: np.ndarray) -> np.ndarray:
        """(n, k) coordinates of the normalised vectors on these axes."""
        return normalise(z.astype(np.float64)) @ self.components.T


def equal_mass_partition(values: np.ndarray, n_bins: int) -> dict[str, list[float]]:
    """A GX continuous partition object: reference quantile edges, open-ended, ~1/n_bins each."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    inner = np.unique(np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1]))
    bins = np.concatenate([[-np.inf], inner, [np.inf]])
    counts = np.histogram(v, bins=bins)[0].astype(np.float64)
    counts = np.maximum(counts, 0.5)  # no empty reference bin: KL stays finite
    return {"bins": bins.tolist(), "weights": (counts / counts.sum()).tolist()}


def kl_divergence(reference: np.ndarray, candidate: np.ndarray, n_bins: int) -> float:
    """KL(candidate || reference) on the reference's equal-mass bins, as GX computes it."""
    part = equal_mass_partition(reference, n_bins)
    c = np.asarray(candidate, np.float64)
    p = np.histogram(c[np.isfinite(c)], bins=np.asarray(part["bins"]))[0] / max(len(c), 1)
    q = np.asarray(part["weights"])
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / q[nz])).sum())


def domain_classifier_auc(
    reference: np.ndarray, candidate: np.ndarray, n: int, folds: int, seed: int
) -> float:
    """Cross-validated ROC-AUC of a logistic regression telling candidate from reference.

    0.5 = indistinguishable. Linear, so it measures multivariate location shift: many small
    per-dimension shifts that each pass their own check add up here.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    a = reference[sample_rows(len(reference), n, seed)]
    b = candidate[sample_rows(len(candidate), n, seed + 1)]
    x = np.vstack([a, b]).astype(np.float64)  # (na + nb, d)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), STD_EPS)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(max_iter=500), x, y, cv=cv, method="predict_proba")
    return float(roc_auc_score(y, proba[:, 1]))


def knn_sets(z: np.ndarray, k: int) -> np.ndarray:
    """(m, m) boolean matrix: row i marks the k nearest other rows of i (Euclidean)."""
    z = z.astype(np.float64)
    sq = (z * z).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * z @ z.T  # (m, m) squared distances
    np.fill_diagonal(d, np.inf)
    idx = np.argpartition(d, k, axis=1)[:, :k]  # (m, k)
    out = np.zeros(d.shape, bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out


def knn_overlap(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Mean share of each user's k nearest neighbours kept between two row-aligned vector sets.

    Rows are the same users in both; each side's neighbours come from its own space, so the
    statistic compares neighbourhoods, never coordinates (valid across batches). Chance level
    is k / (m - 1).
    """
    m = len(reference)
    if m <= k:
        raise ValueError(f"need more than k={k} shared users, got {m}")
    both = knn_sets(reference, k) & knn_sets(candidate, k)
    return float(both.sum(axis=1).mean() / k)
