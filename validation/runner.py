"""Great Expectations 1.x runtime: one ephemeral context per process, suites run on in-memory
DataFrames, results flattened into CheckResults. The only place GX is imported (lazily).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    """One expectation to build: its GX type (built-in or ours), kwargs, threshold text."""

    type: str  # e.g. "expect_column_mean_to_be_between"
    kwargs: dict[str, Any]
    threshold: str  # what the table and the report show as the bound


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation, in our vocabulary."""

    name: str  # expectation type plus its column, e.g. "expect_column_mean_to_be_between(z_u_3)"
    success: bool
    observed: Any  # JSON-able observed value (None when GX could not compute one)
    threshold: str
    column: str | None
    suite: str
    severity: str = "critical"  # "warning": reported, never fails the outcome
    error: str | None = None

    @property
    def blocking(self) -> bool:
        """A failure that fails the outcome (critical severity)."""
        return not self.success and self.severity == "critical"


def gx_module():
    """great_expectations, imported on first use (~3 s), with our custom expectations registered."""
    import great_expectations as gx

    import validation.expectations  # noqa: F401  (registers the custom expectations)

    return gx


@lru_cache(maxsize=1)
def _batch_definition():
    """Ephemeral context -> pandas datasource -> dataframe asset -> whole-dataframe batch def."""
    gx = gx_module()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets INFO on some of its own loggers at import; let them all follow one WARNING level.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.NOTSET)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("userrep")
    asset = source.add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


def _expectation(spec: Spec):
    from great_expectations.expectations.registry import get_expectation_impl

    return get_expectation_impl(spec.type)(**spec.kwargs, meta={"threshold": spec.threshold})


def _severity(cfg: Any) -> str:
    value = getattr(cfg, "severity", None)
    return str(getattr(value, "value", value) or "critical")


def check_name(expectation_type: str, kwargs: dict[str, Any]) -> str:
    """Stable, readable name: the type plus the column(s) it looks at."""
    if "column" in kwargs:
        target = kwargs["column"]
    elif "column_A" in kwargs:
        target = f"{kwargs['column_A']},{kwargs['column_B']}"
    elif "vector_prefix" in kwargs:
        target = str(kwargs["vector_prefix"]).rstrip("_")
    else:
        return expectation_type
    return f"{expectation_type}({target})"


def jsonable(value: Any) -> Any:
    """Observed values as plain JSON types (numpy scalars, timestamps, NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return value


def _check(r: Any, suite_name: str) -> CheckResult:
    """One GX ExpectationValidationResult in our vocabulary."""
    cfg = r.expectation_config
    error = None
    if r.exception_info and r.exception_info.get("raised_exception"):
        error = str(r.exception_info.get("exception_message"))
        log.warning("%s: %s raised: %s", suite_name, cfg.type, error)
    return CheckResult(
        name=check_name(cfg.type, cfg.kwargs),
        success=bool(r.success),
        observed=jsonable((r.result or {}).get("observed_value")),
        threshold=(cfg.meta or {}).get("threshold", ""),
        column=cfg.kwargs.get("column"),
        suite=suite_name,
        severity=_severity(cfg),
        error=error,
    )


def run_suite(suite_name: str, frame: pd.DataFrame, specs: list[Spec]) -> list[CheckResult]:
    """Validate `frame` against the expectations in `specs`; one CheckResult per expectation."""
    if not specs:
        return []
    gx = gx_module()
    batch_definition = _batch_definition()  # creates the context suites attach to
    # All at once: add_expectation() compares each new expectation with every earlier one.
    suite = gx.ExpectationSuite(name=suite_name, expectations=[_expectation(s) for s in specs])
    t0 = time.perf_counter()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite)
    # The engine keeps the last batch's DataFrame: let it go (it may hold a million rows).
    batch_definition.data_asset.datasource.get_execution_engine().batch_manager.reset_batch_cache()
    log.debug(
        "%s: %d expectations on %d rows in %.1f s",
        suite_name,
        len(specs),
        len(frame),
        time.perf_counter() - t0,
    )
    out = [_check(r, suite_name) for r in result.results]
    order = {check_name(s.type, s.kwargs): i for i, s in enumerate(specs)}
    return sorted(out, key=lambda c: order.get(c.name, len(order)))
