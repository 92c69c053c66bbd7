"""Frame-level validation of each target: runs the quality suite and, given a reference, the drift
suites, and returns a ValidationOutcome. No files, no database: validation/pipeline.py does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from userrep import columns as C
from userrep.arrow import list_array
from userrep.db import TargetKind
from validation import drift, stats, suites
from validation.config import ValidationConfig
from validation.outcome import ValidationOutcome
from validation.runner import CheckResult, run_suite

EVENTS_SUITE = "events_v1"
ITEM_VECTORS_SUITE = "item_vectors_v1"
FEATURES_SUITE = "encoder_input_v2_snapshot"
ZU_SUITE = "z_u_batch_v1"
TRAINING_SET_SUITE = "training_set_v1"
MAX_HISTOGRAMS = 12  # drifted columns drawn in a report
HISTOGRAM_SAMPLE = 20_000  # values per side kept for a histogram

# Count-like and duration features are heavy-tailed: drift is measured on log1p, as the
# encoder's input assembly (representation/inputs.py) transforms them.
_LOG_PREFIXES = (
    "n_events_",
    "weight_",
    C.RECENCY_DAYS,
    C.N_DISTINCT_ITEMS,
    C.N_ONBOARDING,
    C.DAYS_SINCE_SIGNUP,
)


def check_events(
    frame: pd.DataFrame,
    ref: str,
    now: pd.Timestamp,
    cfg: ValidationConfig,
    previous_rows: int | None = None,
) -> ValidationOutcome:
    checks = run_suite(EVENTS_SUITE, frame, suites.events_suite(now, cfg.quality, previous_rows))
    return ValidationOutcome(
        TargetKind.EVENTS.value,
        ref,
        EVENTS_SUITE,
        checks,
        {"row_count": len(frame), "now": now.isoformat()},
    )


def check_item_vectors(
    frame: pd.DataFrame,
    ref: str,
    dims: tuple[int, int],
    now: pd.Timestamp,
    cfg: ValidationConfig,
    previous_rows: int | None = None,
) -> ValidationOutcome:
    specs = suites.item_vectors_suite(*dims, now, cfg.quality, previous_rows)
    checks = run_suite(ITEM_VECTORS_SUITE, frame, specs)
    return ValidationOutcome(
        TargetKind.ITEM_VECTORS.value,
        ref,
        ITEM_VECTORS_SUITE,
        checks,
        {"row_count": len(frame), "now": now.isoformat()},
    )


def feature_drift_frame(
    frame: pd.DataFrame, vector_columns: Sequence[str], exclude: Sequence[str] = ()
) -> pd.DataFrame:
    """Numeric columns whose drift is checked: scalar features (log1p where heavy-tailed) and
    the L2 norm of each vector feature (`norm_<feature>`); NaN where a feature is null."""
    out = {}
    for col in frame.columns:
        if col in (C.USER_ID, C.EVENT_TIMESTAMP, C.CREATED) or col in exclude:
            continue
        if col in vector_columns:
            out[f"norm_{col}"] = stats.vector_norms(frame[col])
        else:
            x = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
            out[col] = np.log1p(np.maximum(x, 0.0)) if col.startswith(_LOG_PREFIXES) else x
    return pd.DataFrame(out)


def check_features(
    frame: pd.DataFrame,
    ref: str,
    vector_widths: dict[str, int],
    horizons: Sequence[C.Horizon],
    now: pd.Timestamp,
    cfg: ValidationConfig,
    previous_rows: int | None = None,
    reference: pd.DataFrame | None = None,
    reference_ref: str | None = None,
) -> ValidationOutcome:
    """An encoder_input_v2 snapshot; with `reference` (an earlier snapshot) also feature drift."""
    specs = suites.features_suite(vector_widths, horizons, now, cfg.quality, previous_rows)
    checks = run_suite(FEATURES_SUITE, frame, specs)
    statistics = {"row_count": len(frame), "now": now.isoformat(), "reference": reference_ref}
    outcome = ValidationOutcome(TargetKind.FEATURES.value, ref, FEATURES_SUITE, checks, statistics)
    if reference is not None:
        # the liked / disliked means average a few items a user and move with each new rating:
        # their drift threshold is not calibrated, so they are checked for shape, not drift
        gated = [c for c in vector_widths if not c.endswith(("_liked", "_disliked"))]
        outcome.checks += _feature_drift(frame, reference, gated, cfg, outcome)
    return outcome


def _feature_drift(
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    vector_columns: list[str],
    cfg: ValidationConfig,
    outcome: ValidationOutcome,
) -> list[CheckResult]:
    """Per-feature drift vs an earlier snapshot: vector-feature norms gate; scalar (activity)
    features and null shares warn unless cfg.gate_scalar_feature_drift."""
    th = cfg.feature_columns
    exclude = [*cfg.cumulative_features, *(v for v in vector_columns if v.endswith("_all"))]
    cand = feature_drift_frame(frame, vector_columns, exclude)
    base = feature_drift_frame(reference, vector_columns, exclude)
    cand = cand.iloc[stats.sample_rows(len(cand), th.sample_size, 0)].reset_index(drop=True)
    base = base.iloc[stats.sample_rows(len(base), th.sample_size, 1)]
    ref_stats = {c: drift.ColumnStats.of(base[c].to_numpy(), th.quantiles) for c in cand}
    norms = {c: s for c, s in ref_stats.items() if c.startswith("norm_")}
    scalars = {c: s for c, s in ref_stats.items() if c not in norms}
    scalar_severity = "critical" if cfg.gate_scalar_feature_drift else "warning"
    specs = drift.column_specs(norms, th) + drift.column_specs(scalars, th, 0.0, scalar_severity)
    specs += drift.null_share_specs(ref_stats, th.max_null_share_change, scalar_severity)
    checks = run_suite("feature_drift", cand, specs)
    outcome.samples = _samples(checks, base, cand)
    return checks


def vector_column(z: np.ndarray, valid: np.ndarray | None = None) -> pd.Series:
    """(n, d) -> a column of vectors as GX frames hold them (Arrow list<float32>; null where
    valid is False)."""
    return pd.Series(pd.arrays.ArrowExtensionArray(list_array(z, valid)))


def zu_quality_frame(
    user_ids: np.ndarray,
    z: np.ndarray,
    batch_ids: Sequence[str],
    as_of: pd.Series,
    created: pd.Series,
) -> pd.DataFrame:
    """The z_u rows as GX sees them: one vector per row (null where a row is all NaN)."""
    valid = ~np.isnan(z).all(axis=1) if z.shape[1] else np.ones(len(z), bool)
    return pd.DataFrame(
        {
            C.USER_ID: user_ids,
            C.BATCH_ID: batch_ids,
            C.Z_U: vector_column(z, valid),
            C.EVENT_TIMESTAMP: as_of,
            C.CREATED: created,
        }
    )


def check_zu(
    frame: pd.DataFrame,
    z: np.ndarray,
    batch_id: str,
    latent_dim: int,
    now: pd.Timestamp,
    cfg: ValidationConfig,
    previous_rows: int | None = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    same_space: bool = True,
    reference_ref: str | None = None,
) -> ValidationOutcome:
    """A z_u snapshot (quality frame + its (n, d) matrix) and, optionally, its drift vs a
    reference (user ids, vectors) in the same space or another batch's (same_space=False)."""
    specs = suites.zu_suite(batch_id, latent_dim, now, cfg.quality, previous_rows)
    checks = run_suite("z_u_quality", frame, specs)
    mode = "none" if reference is None else ("same_space" if same_space else "cross_space")
    statistics = {
        "row_count": len(frame),
        "now": now.isoformat(),
        "batch_id": batch_id,
        "latent_dim": latent_dim,
        "drift_mode": mode,
        "reference": reference_ref,
    }
    outcome = ValidationOutcome(TargetKind.BATCH.value, batch_id, ZU_SUITE, checks, statistics)
    outcome.checks += _zu_drift(frame[C.USER_ID].to_numpy(), z, reference, same_space, cfg, outcome)
    return outcome


def _zu_drift(
    ids: np.ndarray,
    z: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None,
    same_space: bool,
    cfg: ValidationConfig,
    outcome: ValidationOutcome,
) -> list[CheckResult]:
    """Distribution and two-sample suites. Finite rows only: non-finite rows are the
    finiteness check's to report, not a distribution change."""
    ids, z = _finite(ids, z)
    ref = _finite(*reference) if reference is not None else None
    cand, base, specs = drift.zu_distribution(
        ref and ref[1], z, same_space, cfg.zu_columns, cfg.zu_vectors, cfg.quality.min_dim_std
    )
    checks = run_suite("z_u_distribution", cand, specs)
    if base is not None:
        outcome.samples = _samples(checks, base, cand)
    if ref is not None:
        ref_ids, ref_z = ref
        pair, specs = drift.zu_two_sample(ref_ids, ref_z, ids, z, same_space, cfg.zu_vectors)
        checks += run_suite("z_u_two_sample", pair, specs)
    return checks


def _finite(ids: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose vector is all finite (no copy when they all are)."""
    ok = stats.finite_rows(z)
    return (ids, z) if ok.all() else (ids[ok], z[ok])


def _samples(checks: list[CheckResult], base: pd.DataFrame, cand: pd.DataFrame) -> dict:
    """Reference / candidate values of the failed columns, for the report's histograms."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c in checks:
        if c.success or c.column is None or c.column in out or c.column not in base:
            continue
        a, b = base[c.column].to_numpy(np.float64), cand[c.column].to_numpy(np.float64)
        out[c.column] = (a[:HISTOGRAM_SAMPLE], b[:HISTOGRAM_SAMPLE])
        if len(out) == MAX_HISTOGRAMS:
            break
    return out
