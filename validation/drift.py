"""Drift suites: a candidate (new z_u snapshot or batch, new feature snapshot) against a reference,
run by validation/targets.py after the quality suites.
"""

# Per column (z_u dimension, scalar feature, vector-feature norm) drift splits into location
# (mean), scale (stdev) and shape (standardised quantiles). Whole z_u vectors add KL on relative
# norms and principal-component scores, a domain classifier and neighbourhood stability.
#
# Vector spaces: a new snapshot of the SAME batch shares its reference's coordinates, so every
# check applies (PC scores on the reference's axes). A NEW batch is a different space (each
# retrain is incompatible): per-dimension checks, reference-axis PC scores and the domain
# classifier compare unrelated coordinates and are skipped; what remains is invariant to the
# space (translation, rotation, global scale): dead dimensions, KL of relative norms and each
# user's neighbourhood (kNN found in each side's own space). Each side's OWN PC scores were tried
# and dropped: two retrains on one snapshot differ by KL up to 0.31 on PC 3 (near-equal
# eigenvalues swap order), so that check could not tell a bad batch from a normal retrain.

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from userrep import columns as C
from validation import stats
from validation.config import ColumnDriftThresholds, VectorDriftThresholds
from validation.runner import Spec
from validation.stats import SIDE_CANDIDATE, SIDE_REFERENCE

SIDE = "side"  # which sample a row of a two-sample frame belongs to
REL_NORM = "rel_norm"


def dim_column(k: int) -> str:
    return f"{C.Z_U}_{k}"


def pc_column(i: int) -> str:
    return f"pc_{i + 1}"


@dataclass(frozen=True)
class ColumnStats:
    """The reference side of one column's drift checks."""

    mean: float
    std: float
    quantiles: list[float] | None  # standardised; None for a constant column
    null_share: float

    @classmethod
    def of(cls, values: np.ndarray, quantiles: tuple[float, ...]) -> ColumnStats:
        v = np.asarray(values, np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            return cls(float("nan"), float("nan"), None, 1.0)
        return cls(
            float(v[ok].mean()),
            float(v[ok].std()),
            stats.standardized_quantiles(v[ok], quantiles),
            float(1.0 - ok.mean()),
        )


def _one_column(
    col: str, s: ColumnStats, th: ColumnDriftThresholds, min_std: float, severity: str
) -> list[Spec]:
    half = th.max_mean_shift_sd * s.std
    lo, hi = max(min_std, s.std / th.max_std_ratio), max(s.std * th.max_std_ratio, min_std)
    specs = [
        Spec(
            "expect_column_mean_to_be_between",
            {
                "column": col,
                "min_value": s.mean - half,
                "max_value": s.mean + half,
                "severity": severity,
            },
            f"[{s.mean - half:.4g}, {s.mean + half:.4g}] = ref +- {th.max_mean_shift_sd} sd",
        ),
        Spec(
            "expect_column_stdev_to_be_between",
            {"column": col, "min_value": lo, "max_value": hi, "severity": severity},
            f"[{lo:.4g}, {hi:.4g}] = ref x/ {th.max_std_ratio}",
        ),
    ]
    if s.quantiles is not None:
        specs.append(
            Spec(
                "expect_column_shape_to_match_reference",
                {
                    "column": col,
                    "quantiles": list(th.quantiles),
                    "reference_values": s.quantiles,
                    "max_shift": th.max_shape_shift_sd,
                    "severity": severity,
                },
                f"<= {th.max_shape_shift_sd} sd",
            )
        )
    return specs


def column_specs(
    reference: dict[str, ColumnStats],
    th: ColumnDriftThresholds,
    min_std: float = 0.0,
    severity: str = "critical",
) -> list[Spec]:
    """Location (mean), scale (stdev) and shape (standardised quantiles) of each column."""
    specs = []
    for col, s in reference.items():
        if np.isfinite(s.mean):
            specs += _one_column(col, s, th, min_std, severity)
    return specs


def null_share_specs(
    reference: dict[str, ColumnStats], tolerance: float, severity: str = "warning"
) -> list[Spec]:
    """Share of non-null values of each column within `tolerance` of the reference's."""
    specs = []
    for col, s in reference.items():
        lo, hi = max(0.0, 1 - s.null_share - tolerance), min(1.0, 1 - s.null_share + tolerance)
        specs.append(
            Spec(
                "expect_column_proportion_of_non_null_values_to_be_between",
                {"column": col, "min_value": lo, "max_value": hi, "severity": severity},
                f"ref {1 - s.null_share:.3f} +- {tolerance}",
            )
        )
    return specs


def _kl_spec(column: str, reference: np.ndarray, bins: int, threshold: float) -> Spec:
    part = stats.equal_mass_partition(reference, bins)
    return Spec(
        "expect_column_kl_divergence_to_be_less_than",
        {"column": column, "partition_object": part, "threshold": threshold},
        f"<= {threshold}",
    )


def _dims_frame(z: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({dim_column(k): z[:, k] for k in range(z.shape[1])})


def zu_distribution(
    reference: np.ndarray | None,
    candidate: np.ndarray,
    same_space: bool,
    cols: ColumnDriftThresholds,
    vec: VectorDriftThresholds,
    min_std: float,
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[Spec]]:
    """One-sample suite on a candidate sample, bounds derived from a reference sample.

    Returns the candidate frame GX validates, the same columns on the reference sample (for
    the report's histograms; None without a reference) and the expectations.
    """
    cand = candidate[stats.sample_rows(len(candidate), cols.sample_size, vec.seed)]
    frame = _dims_frame(cand)
    dims = list(frame.columns)
    specs = [
        Spec(
            "expect_column_stdev_to_be_between",
            {"column": c, "min_value": min_std},
            f">= {min_std:g} (not constant)",
        )
        for c in dims
    ]
    if reference is None:
        return frame, None, specs
    ref = reference[stats.sample_rows(len(reference), cols.sample_size, vec.seed + 1)]
    base = _dims_frame(ref)
    if same_space:  # location / scale / shape per dimension (scale includes the dead-dim floor)
        ref_stats = {c: ColumnStats.of(base[c].to_numpy(), cols.quantiles) for c in dims}
        specs = column_specs(ref_stats, cols, min_std)
    frame[REL_NORM], base[REL_NORM] = stats.relative_norms(cand), stats.relative_norms(ref)
    specs.append(_kl_spec(REL_NORM, base[REL_NORM].to_numpy(), vec.kl_bins, vec.max_kl_norm))
    if same_space:  # scores on the reference's principal axes
        basis = stats.PcBasis.fit(ref, vec.n_pcs)
        ref_scores, cand_scores = basis.scores(ref), basis.scores(cand)
        for i in range(ref_scores.shape[1]):
            frame[pc_column(i)], base[pc_column(i)] = cand_scores[:, i], ref_scores[:, i]
            specs.append(_kl_spec(pc_column(i), ref_scores[:, i], vec.kl_bins, vec.max_kl_pc))
    return frame, base, specs


def zu_two_sample(
    ref_ids: np.ndarray,
    reference: np.ndarray,
    cand_ids: np.ndarray,
    candidate: np.ndarray,
    same_space: bool,
    vec: VectorDriftThresholds,
) -> tuple[pd.DataFrame, list[Spec]]:
    """Stacked reference + candidate samples (a `side` column) for the two-sample checks:
    a random sample of each side plus a sample of the users present on both (for kNN)."""
    shared = pd.Index(ref_ids).intersection(pd.Index(cand_ids)).to_numpy()  # hash join
    knn_users = shared[stats.sample_rows(len(shared), vec.knn_sample, vec.seed)]
    parts = []
    sides = ((SIDE_REFERENCE, ref_ids, reference), (SIDE_CANDIDATE, cand_ids, candidate))
    for i, (side, ids, z) in enumerate(sides):
        rows = np.union1d(
            stats.sample_rows(len(ids), vec.classifier_sample, vec.seed + 2 + i),
            np.flatnonzero(np.isin(ids, knn_users)),
        )
        part = _dims_frame(z[rows])
        part.insert(0, C.USER_ID, ids[rows])
        part.insert(1, SIDE, side)
        parts.append(part)
    return pd.concat(parts, ignore_index=True), _two_sample_specs(len(knn_users), same_space, vec)


def _two_sample_specs(n_shared: int, same_space: bool, vec: VectorDriftThresholds) -> list[Spec]:
    common = {"vector_prefix": f"{C.Z_U}_", "side_column": SIDE, "seed": vec.seed}
    specs = []
    if same_space:  # coordinates are comparable only within one space
        specs.append(
            Spec(
                "expect_domain_classifier_auc_to_be_below",
                common
                | {
                    "max_auc": vec.max_domain_auc,
                    "sample_size": vec.classifier_sample,
                    "folds": vec.classifier_folds,
                },
                f"<= {vec.max_domain_auc}",
            )
        )
    if n_shared > vec.knn_k:
        floor = vec.min_knn_overlap_same_space if same_space else vec.min_knn_overlap_cross_space
        chance = vec.knn_k / max(n_shared - 1, 1)
        specs.append(
            Spec(
                "expect_neighbourhood_overlap_to_be_above",
                common
                | {
                    "id_column": C.USER_ID,
                    "k": vec.knn_k,
                    "min_overlap": floor,
                    "sample_size": vec.knn_sample,
                },
                f">= {floor} (k={vec.knn_k}, chance {chance:.3f})",
            )
        )
    return specs
