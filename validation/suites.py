"""Data-quality suites (schema, nulls, ranges, uniqueness, freshness, row counts) for each stage's
output: ingested events, item vectors, feature snapshots, z_u batches, downstream training sets.

Each function returns expectation Specs for validation/runner.py; nothing here imports GX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from userrep import columns as C
from validation.config import QualityThresholds
from validation.runner import Spec

ZU_COLUMNS = (C.USER_ID, C.BATCH_ID, C.Z_U, C.EVENT_TIMESTAMP, C.CREATED)
ITEM_VECTOR_COLUMNS = (
    C.ITEM_ID,
    "collab",
    "content",
    "encoder_version",
    C.EVENT_TIMESTAMP,
    C.CREATED,
)
LABEL = "label"


def columns_exactly(columns: Sequence[str]) -> Spec:
    return Spec(
        "expect_table_columns_to_match_set",
        {"column_set": list(columns), "exact_match": True},
        "exactly these columns",
    )


def not_null(column: str) -> Spec:
    return Spec("expect_column_values_to_not_be_null", {"column": column}, "no nulls")


def unique(column: str) -> Spec:
    return Spec("expect_column_values_to_be_unique", {"column": column}, "unique")


def between(column: str, lo: float | None, hi: float | None) -> Spec:
    return Spec(
        "expect_column_values_to_be_between",
        {"column": column, "min_value": lo, "max_value": hi},
        f"in [{lo}, {hi}]",
    )


def vectors(column: str, length: int) -> list[Spec]:
    """A list<float> column: every vector `length` long and finite (nulls are not counted)."""
    return [
        Spec(
            "expect_column_vectors_to_have_length",
            {"column": column, "length": length},
            f"length {length}",
        ),
        Spec("expect_column_vectors_to_be_finite", {"column": column}, "0 rows with NaN/inf"),
    ]


def fresh(
    column: str,
    now: pd.Timestamp,
    max_age: pd.Timedelta,
    max_future: pd.Timedelta,
    newest: bool = False,
) -> Spec:
    """The oldest (or newest) timestamp lies in [now - max_age, now + max_future]."""
    lo, hi = now - max_age, now + max_future
    kind = "expect_column_max_to_be_between" if newest else "expect_column_min_to_be_between"
    return Spec(
        kind,
        {"column": column, "min_value": lo.to_pydatetime(), "max_value": hi.to_pydatetime()},
        f"in [{lo:%Y-%m-%d %H:%M}, {hi:%Y-%m-%d %H:%M}]",
    )


def row_count(previous: int | None, lo_ratio: float, hi_ratio: float) -> Spec:
    """At least one row; within [lo, hi] x the previous run's count when there was one."""
    if previous is None:
        return Spec(
            "expect_table_row_count_to_be_between", {"min_value": 1}, ">= 1 (no previous run)"
        )
    lo, hi = max(1, math.floor(previous * lo_ratio)), math.ceil(previous * hi_ratio)
    return Spec(
        "expect_table_row_count_to_be_between",
        {"min_value": lo, "max_value": hi},
        f"[{lo:,}, {hi:,}] ({lo_ratio:g}-{hi_ratio:g} x previous {previous:,})",
    )


def events_suite(now: pd.Timestamp, q: QualityThresholds, previous_rows: int | None) -> list[Spec]:
    """An accepted events part (what `userrep ingest` wrote)."""
    return [
        columns_exactly(C.EVENT_COLUMNS),
        *(not_null(c) for c in C.EVENT_COLUMNS),
        unique(C.EVENT_ID),
        between(C.WEIGHT, 0.0, q.max_weight),
        fresh(C.TS, now, q.max_event_age, q.max_future, newest=True),
        row_count(previous_rows, q.min_event_row_ratio, q.max_event_row_ratio),
    ]


def item_vectors_suite(
    collab_dim: int,
    content_dim: int,
    now: pd.Timestamp,
    q: QualityThresholds,
    previous_rows: int | None,
) -> list[Spec]:
    """One encoder version's item_vectors file: L2-normalised collab / content vectors."""
    specs = [columns_exactly(ITEM_VECTOR_COLUMNS), not_null(C.ITEM_ID), unique(C.ITEM_ID)]
    for column, dim in (("collab", collab_dim), ("content", content_dim)):
        specs += [not_null(column), *vectors(column, dim)]
        specs.append(
            Spec(
                "expect_column_vector_norms_to_be_between",
                {"column": column, "min_value": 0.0, "max_value": q.max_item_norm},
                f"norm <= {q.max_item_norm}",
            )
        )
    specs.append(
        Spec(
            "expect_column_unique_value_count_to_be_between",
            {"column": "encoder_version", "min_value": 1, "max_value": 1},
            "one version",
        )
    )
    specs.append(fresh(C.EVENT_TIMESTAMP, now, q.max_item_vectors_age, q.max_future))
    specs.append(row_count(previous_rows, q.min_row_ratio, q.max_row_ratio))
    return specs


def features_suite(
    vector_widths: dict[str, int],
    horizons: Sequence[C.Horizon],
    now: pd.Timestamp,
    q: QualityThresholds,
    previous_rows: int | None,
) -> list[Spec]:
    """An encoder_input_v2 snapshot (history + onboarding, one row per user)."""
    counts = [C.count_feature(h) for h in horizons]
    weights = [C.weight_feature(h) for h in horizons]
    scalars = [
        *counts,
        *weights,
        C.RECENCY_DAYS,
        C.N_DISTINCT_ITEMS,
        C.DIVERSITY,
        C.LEVEL_MEAN,
        C.LEVEL_STD,
        C.DISLIKED_SHARE,
        C.N_ONBOARDING,
        C.DAYS_SINCE_SIGNUP,
    ]
    specs = [columns_exactly([C.USER_ID, C.EVENT_TIMESTAMP, *vector_widths, *scalars])]
    specs += [not_null(C.USER_ID), unique(C.USER_ID), not_null(C.EVENT_TIMESTAMP)]
    for column, width in vector_widths.items():
        specs += vectors(column, width)
    for column in (*counts, *weights, C.RECENCY_DAYS, C.N_ONBOARDING, C.DAYS_SINCE_SIGNUP):
        specs.append(between(column, 0, None))
    specs += [between(C.N_DISTINCT_ITEMS, 1, None), between(C.DIVERSITY, 0.0, 1.0 + 1e-6)]
    # ln(1 + weight) of non-negative weights; the share of items below the user's own mean
    specs += [between(C.LEVEL_MEAN, 0, None), between(C.LEVEL_STD, 0, None)]
    specs += [between(C.DISLIKED_SHARE, 0.0, 1.0)]
    for shorter, longer in zip(counts, counts[1:], strict=False):  # horizons nest
        specs.append(
            Spec(
                "expect_column_pair_values_a_to_be_greater_than_b",
                {
                    "column_A": longer,
                    "column_B": shorter,
                    "or_equal": True,
                    "ignore_row_if": "either_value_is_missing",
                },
                f"{longer} >= {shorter}",
            )
        )
    specs.append(fresh(C.EVENT_TIMESTAMP, now, q.max_snapshot_age, q.max_future))
    specs.append(row_count(previous_rows, q.min_row_ratio, q.max_row_ratio))
    return specs


def zu_suite(
    batch_id: str,
    latent_dim: int,
    now: pd.Timestamp,
    q: QualityThresholds,
    previous_rows: int | None,
) -> list[Spec]:
    """A published z_u file of one batch: every row whole, finite, of this batch, fresh."""
    return [
        columns_exactly(ZU_COLUMNS),
        *(not_null(c) for c in (C.USER_ID, C.Z_U, C.EVENT_TIMESTAMP)),
        unique(C.USER_ID),
        Spec(
            "expect_column_values_to_be_in_set",
            {"column": C.BATCH_ID, "value_set": [batch_id]},
            f"= {batch_id}",
        ),
        *vectors(C.Z_U, latent_dim),
        fresh(C.EVENT_TIMESTAMP, now, q.max_snapshot_age, q.max_future),
        row_count(previous_rows, q.min_row_ratio, q.max_row_ratio),
    ]


def training_set_suite(
    columns: Sequence[str],
    latent_dim: int | None,
    batch_id: str | None,
    q: QualityThresholds,
    label: str = LABEL,
) -> list[Spec]:
    """A downstream training set: (user_id, event_timestamp, label, z_u) rows of ONE batch."""
    specs = [Spec("expect_table_row_count_to_be_between", {"min_value": 1}, ">= 1")]
    required = (C.USER_ID, C.EVENT_TIMESTAMP, label, C.Z_U)
    specs += [Spec("expect_column_to_exist", {"column": c}, "present") for c in required]
    specs += [not_null(c) for c in required if c in columns]
    if label in columns:
        specs.append(between(label, q.label_min, q.label_max))
    if C.Z_U in columns:
        finite = Spec(
            "expect_column_vectors_to_be_finite", {"column": C.Z_U}, "0 rows with NaN/inf"
        )
        specs += vectors(C.Z_U, latent_dim) if latent_dim is not None else [finite]
    if C.BATCH_ID in columns:
        specs.append(
            Spec(
                "expect_column_unique_value_count_to_be_between",
                {"column": C.BATCH_ID, "min_value": 1, "max_value": 1},
                "one batch (batches never mix)",
            )
        )
        if batch_id is not None:
            specs.append(
                Spec(
                    "expect_column_values_to_be_in_set",
                    {"column": C.BATCH_ID, "value_set": [batch_id]},
                    f"= {batch_id}",
                )
            )
    return specs
