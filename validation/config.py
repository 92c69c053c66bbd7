"""Thresholds of every validation suite in frozen dataclasses, the one place they are set; the
suites (validation/suites.py, drift.py) read them.
"""

# Defaults come from `bench/calibrate_validation.py`: 3000 synthetic users, snapshots a week
# and 4 months apart, with and without planted taste drift, in two worlds: mature (150 plays
# per user, no sign-up burst) and default-like (40 plays per user, 10% of users sign up in the
# last week). "Null" below = no planted change; each field's comment quotes the measurement.

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class QualityThresholds:
    """Schema / null / range / freshness / row-count checks (no reference needed)."""

    # Snapshots are built weekly: a z_u or feature snapshot older than this is stale.
    max_snapshot_age: pd.Timedelta = pd.Timedelta(days=8)
    # Snapshot times are rounded up to the day (`features build` uses ceil("D")).
    max_future: pd.Timedelta = pd.Timedelta(days=1)
    # Events: the newest accepted event must be this recent.
    max_event_age: pd.Timedelta = pd.Timedelta(days=2)
    # Encoders are rebuilt rarely; item vectors older than this are flagged.
    max_item_vectors_age: pd.Timedelta = pd.Timedelta(days=120)
    # Rows vs the previous successful run of the same kind. Users only sign up, so a snapshot
    # that shrinks by >10% lost users; growth beyond 2x in one step is a join gone wrong.
    min_row_ratio: float = 0.9
    max_row_ratio: float = 2.0
    # Event parts come from ingests of any size: only absurd jumps are flagged.
    min_event_row_ratio: float = 0.001
    max_event_row_ratio: float = 1000.0
    # A z_u dimension whose std is below this is dead (constant).
    min_dim_std: float = 1e-6
    # Event weights: play counts / ms played are >= 0; above this is a unit bug.
    max_weight: float = 1e7
    # Item vectors are L2-normalised (collaborative ones may be zero for unseen items).
    max_item_norm: float = 1.0 + 1e-3
    # Training sets: binary labels by default.
    label_min: float = 0.0
    label_max: float = 1.0


@dataclass(frozen=True)
class ColumnDriftThresholds:
    """Per-column drift (a z_u dimension, a scalar feature, a vector feature's norm), split
    into location, scale and shape so that each failure says what changed.

    z_u, same batch, weekly null: max |mean shift| 0.02-0.09 sd, std ratio 0.99-1.17 (1.22
    with a longer-trained encoder), max shape shift 0.11-0.15 sd. Planted test corruptions:
    0.3 sd shift, x1.5 spread, a skewed dimension (shape shift 0.66 sd).
    """

    max_mean_shift_sd: float = 0.2  # |mean_c - mean_r| / std_r
    max_std_ratio: float = 1.3  # std_c / std_r within [1/r, r]
    max_shape_shift_sd: float = 0.25  # max |quantile_c - quantile_r| of standardised values
    quantiles: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
    max_null_share_change: float = 0.1  # |non-null share_c - share_r| (features only)
    # Rows per side. GX's pandas mean / stdev metrics test every value for Decimal in Python
    # (~0.4 us each), so 64 dims x 2 metrics on 50k rows cost ~3 s; the standard error of a
    # mean difference is then 0.006 sd, of a standardised quantile ~0.01 sd.
    sample_size: int = 50_000


# Feature drift, gating on vector-feature norms (7d / 30d / 180d horizons). Null: weekly max
# |mean shift| 0.12 sd, std ratio 0.95-1.05, shape 0.24 sd; 4 months apart 0.19 sd, std ratio
# >= 0.83, shape 0.17 sd. Planted drift (SyntheticConfig(drift=0.5)), 4 months apart: 0.26-0.64
# sd on content_7d / content_30d / collab_180d / content_180d.
FEATURE_COLUMNS = ColumnDriftThresholds(
    max_mean_shift_sd=0.25, max_std_ratio=1.3, max_shape_shift_sd=0.3, max_null_share_change=0.1
)


@dataclass(frozen=True)
class VectorDriftThresholds:
    """Whole-vector drift of z_u: distribution shape, two-sample classifier, neighbourhoods.

    Same batch, weekly null: KL(relative norms) 0.004-0.10 (0.13-0.17 with a longer-trained
    encoder and the sign-up burst), KL(PC scores) <= 0.032, classifier AUC 0.43-0.49, kNN
    overlap 0.48-0.63. Two batches trained on one snapshot with different seeds (cross-space
    null): KL(relative norms) <= 0.01, kNN overlap 0.47-0.63 (chance: 0.005).
    """

    kl_bins: int = 20  # equal-mass reference bins for the KL checks
    max_kl_norm: float = 0.2  # KL of relative norms ||z - mean|| / rms
    max_kl_pc: float = 0.1  # KL of each top principal-component score (planted permutation: 0.66)
    n_pcs: int = 5
    # Same space only; 0.7-0.75 is the usual adversarial-validation bar. A 0.3 sd shift in 3 of
    # 32 dims scores 0.68 (the per-dimension mean checks catch it; KL moves < 0.05), a 0.15 sd
    # shift in every dim 0.80 (no per-dimension check can see it).
    max_domain_auc: float = 0.75
    classifier_sample: int = 5000  # rows per side: AUC standard error ~0.006
    classifier_folds: int = 5
    knn_k: int = 10
    knn_sample: int = 2000  # shared users; kNN among them (O(m^2) memory: 32 MB)
    # Same batch 4 months apart: 0.18-0.25 (history growth moves users): flagged, by design.
    min_knn_overlap_same_space: float = 0.3
    min_knn_overlap_cross_space: float = 0.25
    seed: int = 0


@dataclass(frozen=True)
class ValidationConfig:
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    zu_columns: ColumnDriftThresholds = field(default_factory=ColumnDriftThresholds)
    zu_vectors: VectorDriftThresholds = field(default_factory=VectorDriftThresholds)
    feature_columns: ColumnDriftThresholds = FEATURE_COLUMNS
    # Scalar activity features (counts, weights, recency) move with the user base's tenure:
    # 4 months apart without any planted change n_events_180d shifted 0.32 sd, and the shape of
    # discrete counts moves 1.3 sd week to week. Their drift (and null shares) warn by default.
    gate_scalar_feature_drift: bool = False
    # Grow with time by construction (all-history counts, entropy, account age): range-checked,
    # not drift-checked. Horizon "all" vector features (collab_all, content_all) likewise.
    cumulative_features: tuple[str, ...] = (
        "n_events_all",
        "weight_all",
        "n_distinct_items",
        "diversity",
        "days_since_signup",
    )
