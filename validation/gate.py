"""Gates: checks that stop the flow. A downstream training set (labels joined with z_u of one
batch) is validated before any model trains on it; z_u batches are gated at promotion by
representation.batches.validation_gate, which reads the runs validation/pipeline.py records.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from userrep import columns as C
from userrep.db import TargetKind
from userrep.settings import Settings
from validation import suites
from validation.config import ValidationConfig
from validation.outcome import ValidationFailed, ValidationOutcome, record
from validation.runner import run_suite
from validation.targets import TRAINING_SET_SUITE, vector_column

log = logging.getLogger(__name__)


class TrainingSetInvalid(ValidationFailed):
    """A training set failed its suite; `.outcome.failed` names the failed expectations."""


def _with_vector_column(frame: pd.DataFrame) -> pd.DataFrame:
    """Accept z_u as one list column or expanded as z_u_0, z_u_1, ...: GX sees a list column."""
    if C.Z_U in frame.columns:
        return frame
    dims = sorted(
        (c for c in frame.columns if c.startswith(f"{C.Z_U}_") and c[len(C.Z_U) + 1 :].isdigit()),
        key=lambda c: int(c[len(C.Z_U) + 1 :]),
    )
    if not dims:
        return frame  # the suite reports the missing column
    z = frame[dims].to_numpy(np.float64)  # (n, d)
    out = frame.drop(columns=dims).reset_index(drop=True)
    out[C.Z_U] = vector_column(z)
    return out


def validate_training_set(
    frame: pd.DataFrame,
    *,
    name: str = "training_set",
    label: str = suites.LABEL,
    latent_dim: int | None = None,
    batch_id: str | None = None,
    label_range: tuple[float, float] | None = None,
    settings: Settings | None = None,
    config: ValidationConfig | None = None,
    raise_on_failure: bool = True,
) -> ValidationOutcome:
    """Schema, nulls, label range and z_u integrity of a training set; one batch only.

    `frame` holds user_id, event_timestamp, `label` and z_u (a list column or z_u_0..z_u_{d-1}).
    With `settings` the run is recorded (target kind training_set, target ref `name`).
    Raises TrainingSetInvalid naming the failed expectations unless raise_on_failure=False.
    """
    cfg = config or ValidationConfig()
    quality = cfg.quality
    if label_range is not None:
        quality = replace(quality, label_min=label_range[0], label_max=label_range[1])
    data = _with_vector_column(frame)
    specs = suites.training_set_suite(list(data.columns), latent_dim, batch_id, quality, label)
    if batch_id is not None and C.BATCH_ID not in data:
        log.info(
            "training set %s has no %s column: batch %s not checked", name, C.BATCH_ID, batch_id
        )
    checks = run_suite(TRAINING_SET_SUITE, data, specs)
    stats = {"row_count": len(frame), "batch_id": batch_id, "label": label}
    outcome = ValidationOutcome(
        TargetKind.TRAINING_SET.value, name, TRAINING_SET_SUITE, checks, stats
    )
    if settings is not None:
        record(settings, outcome)
    if raise_on_failure and not outcome.success:
        raise TrainingSetInvalid(outcome)
    return outcome
