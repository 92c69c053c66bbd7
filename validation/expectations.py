"""Custom GX 1.x expectations for what GX lacks: whole-vector checks on list<float> columns and
two-sample drift checks on embeddings. Importing this module registers them (imports GX: ~3 s,
so only validation/runner.py imports it, inside a function).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import (
    BatchExpectation,
    ColumnAggregateExpectation,
)
from great_expectations.expectations.metrics import (
    ColumnAggregateMetricProvider,
    column_aggregate_value,
)
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from validation import stats
from validation.stats import SIDE_CANDIDATE, SIDE_REFERENCE

# ---------------------------------------------------------------- metrics


class ColumnVectorNonfiniteRows(ColumnAggregateMetricProvider):
    metric_name = "column.vector_nonfinite_rows"

    @column_aggregate_value(engine=PandasExecutionEngine, filter_column_isnull=True)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> int:
        values, offsets = stats.flat_vectors(stats.vector_array(column))
        bad = np.flatnonzero(~np.isfinite(values))  # positions of NaN / inf values
        rows = np.searchsorted(offsets, bad, side="right") - 1
        return int(np.unique(rows).size)


class ColumnVectorLengthMismatches(ColumnAggregateMetricProvider):
    metric_name = "column.vector_length_mismatches"
    value_keys = ("length",)

    @column_aggregate_value(engine=PandasExecutionEngine, filter_column_isnull=True)
    def _pandas(cls, column: pd.Series, length: int, **kwargs: Any) -> int:
        lengths = pc.list_value_length(stats.vector_array(column)).to_numpy(zero_copy_only=False)
        return int((lengths != length).sum())


class ColumnVectorNormRange(ColumnAggregateMetricProvider):
    metric_name = "column.vector_norm_range"

    @column_aggregate_value(engine=PandasExecutionEngine, filter_column_isnull=True)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> list[float] | None:
        norms = stats.vector_norms(column)
        if not len(norms):
            return None
        return [float(np.nanmin(norms)), float(np.nanmax(norms))]


class ColumnStandardizedQuantiles(ColumnAggregateMetricProvider):
    metric_name = "column.standardized_quantiles"
    value_keys = ("quantiles",)

    @column_aggregate_value(engine=PandasExecutionEngine, filter_column_isnull=True)
    def _pandas(cls, column: pd.Series, quantiles: list[float], **kwargs: Any) -> list | None:
        return stats.standardized_quantiles(column.to_numpy(np.float64), tuple(quantiles))


def _sides(execution_engine: PandasExecutionEngine, domain: dict, prefix: str, side: str):
    """(reference rows, candidate rows) of a two-sample frame: matrices plus the frames."""
    df, _, _ = execution_engine.get_compute_domain(
        domain_kwargs=domain, domain_type=MetricDomainTypes.TABLE
    )
    cols = [c for c in df.columns if c.startswith(prefix)]
    ref, cand = df[df[side] == SIDE_REFERENCE], df[df[side] == SIDE_CANDIDATE]
    # Two batches may differ in width: each side keeps the dimensions it has.
    a = ref[cols].dropna(axis=1, how="all").to_numpy(np.float64)
    b = cand[cols].dropna(axis=1, how="all").to_numpy(np.float64)
    return ref, cand, a, b


class TableDomainClassifierAuc(TableMetricProvider):
    metric_name = "table.domain_classifier_auc"
    value_keys = ("vector_prefix", "side_column", "sample_size", "folds", "seed")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(
        cls,
        execution_engine,
        metric_domain_kwargs,
        metric_value_kwargs,
        metrics,
        runtime_configuration,
    ) -> float:
        v = metric_value_kwargs
        _, _, a, b = _sides(
            execution_engine, metric_domain_kwargs, v["vector_prefix"], v["side_column"]
        )
        return stats.domain_classifier_auc(a, b, v["sample_size"], v["folds"], v["seed"])


class TableNeighbourhoodOverlap(TableMetricProvider):
    metric_name = "table.neighbourhood_overlap"
    value_keys = ("vector_prefix", "side_column", "id_column", "k", "sample_size", "seed")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(
        cls,
        execution_engine,
        metric_domain_kwargs,
        metric_value_kwargs,
        metrics,
        runtime_configuration,
    ) -> float | None:
        v = metric_value_kwargs
        ref, cand, a, b = _sides(
            execution_engine, metric_domain_kwargs, v["vector_prefix"], v["side_column"]
        )
        ref_pos = pd.Series(np.arange(len(ref)), index=ref[v["id_column"]].to_numpy())
        cand_pos = pd.Series(np.arange(len(cand)), index=cand[v["id_column"]].to_numpy())
        ref_pos = ref_pos[~ref_pos.index.duplicated()]
        cand_pos = cand_pos[~cand_pos.index.duplicated()]
        shared = np.intersect1d(ref_pos.index, cand_pos.index)  # sorted user ids
        if len(shared) <= v["k"]:
            return None
        shared = shared[stats.sample_rows(len(shared), v["sample_size"], v["seed"])]
        ia, ib = ref_pos[shared].to_numpy(), cand_pos[shared].to_numpy()
        return stats.knn_overlap(a[ia], b[ib], v["k"])


# ---------------------------------------------------------------- expectations


class ExpectColumnVectorsToBeFinite(ColumnAggregateExpectation):
    """Every (non-null) vector in the column holds only finite numbers: no NaN, no inf."""

    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.vector_nonfinite_rows",)
    success_keys: ClassVar[tuple[str, ...]] = ()

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None) -> dict:
        bad = metrics["column.vector_nonfinite_rows"]
        return {"success": bad == 0, "result": {"observed_value": bad}}


class ExpectColumnVectorsToHaveLength(ColumnAggregateExpectation):
    """Every (non-null) vector in the column has exactly `length` elements."""

    length: int
    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.vector_length_mismatches",)
    success_keys: ClassVar[tuple[str, ...]] = ("length",)

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None) -> dict:
        bad = metrics["column.vector_length_mismatches"]
        return {"success": bad == 0, "result": {"observed_value": bad}}


class ExpectColumnVectorNormsToBeBetween(ColumnAggregateExpectation):
    """Every (non-null) vector's L2 norm lies in [min_value, max_value]."""

    min_value: float | None = None
    max_value: float | None = None
    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.vector_norm_range",)
    success_keys: ClassVar[tuple[str, ...]] = ("min_value", "max_value")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None) -> dict:
        rng = metrics["column.vector_norm_range"]
        if rng is None:
            return {"success": True, "result": {"observed_value": None}}
        ok = (self.min_value is None or rng[0] >= self.min_value) and (
            self.max_value is None or rng[1] <= self.max_value
        )
        return {"success": bool(ok), "result": {"observed_value": rng}}


class ExpectColumnShapeToMatchReference(ColumnAggregateExpectation):
    """Quantiles of the standardised column ((x - mean) / std) stay within `max_shift` of the
    reference's: a shape check, blind by design to location and scale (their own checks).
    A constant column has no shape; its collapse is the stdev check's to report."""

    quantiles: list[float]
    reference_values: list[float]
    max_shift: float
    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.standardized_quantiles",)
    success_keys: ClassVar[tuple[str, ...]] = ("quantiles", "reference_values", "max_shift")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None) -> dict:
        observed = metrics["column.standardized_quantiles"]
        if observed is None:
            return {"success": True, "result": {"observed_value": None}}
        shift = max(abs(o - r) for o, r in zip(observed, self.reference_values, strict=True))
        return {"success": shift <= self.max_shift, "result": {"observed_value": round(shift, 4)}}


class ExpectDomainClassifierAucToBeBelow(BatchExpectation):
    """A cross-validated logistic regression cannot tell candidate rows from reference rows:
    ROC-AUC <= max_auc. Only meaningful when both sides share one vector space."""

    vector_prefix: str
    side_column: str = "side"
    max_auc: float
    sample_size: int = 5000
    folds: int = 5
    seed: int = 0
    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.domain_classifier_auc",)
    success_keys: ClassVar[tuple[str, ...]] = (
        "vector_prefix",
        "side_column",
        "max_auc",
        "sample_size",
        "folds",
        "seed",
    )

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None) -> dict:
        auc = metrics["table.domain_classifier_auc"]
        return {"success": auc <= self.max_auc, "result": {"observed_value": round(auc, 4)}}


class ExpectNeighbourhoodOverlapToBeAbove(BatchExpectation):
    """Users present on both sides keep at least `min_overlap` of their k nearest neighbours
    (each side's neighbours found in its own space: valid across batches)."""

    vector_prefix: str
    side_column: str = "side"
    id_column: str = "user_id"
    k: int = 10
    min_overlap: float
    sample_size: int = 2000
    seed: int = 0
    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.neighbourhood_overlap",)
    success_keys: ClassVar[tuple[str, ...]] = (
        "vector_prefix",
        "side_column",
        "id_column",
        "k",
        "min_overlap",
        "sample_size",
        "seed",
    )

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None) -> dict:
        overlap = metrics["table.neighbourhood_overlap"]
        if overlap is None:  # too few shared users to say anything
            return {"success": True, "result": {"observed_value": None}}
        ok = overlap >= self.min_overlap
        return {"success": ok, "result": {"observed_value": round(overlap, 4)}}
