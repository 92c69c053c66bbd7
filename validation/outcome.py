"""What one validation produced (checks, statistics, report) and its record in the metadata DB,
where `userrep batches promote` (representation.batches.validation_gate) reads it back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from userrep.db import ValidationRun, record_validation_run, session_scope
from userrep.settings import Settings
from validation.runner import CheckResult

log = logging.getLogger(__name__)


class ValidationFailed(Exception):
    """A suite failed; the message names the failed expectations."""

    def __init__(self, outcome: ValidationOutcome):
        self.outcome = outcome
        super().__init__(outcome.headline())


@dataclass
class ValidationOutcome:
    """Every check of one target (a z_u batch snapshot, a feature snapshot, ...)."""

    target_kind: str  # userrep.db.TargetKind value
    target_ref: str  # batch id, snapshot time, events part, encoder version, ...
    suite: str
    checks: list[CheckResult]
    statistics: dict[str, Any] = field(default_factory=dict)
    # Column -> (reference sample, candidate sample): histograms of drifted columns in reports.
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    report_path: Path | None = None
    run_id: int | None = None

    @property
    def success(self) -> bool:
        """True when no critical expectation failed (warnings never fail an outcome)."""
        return not any(c.blocking for c in self.checks)

    @property
    def failed(self) -> list[str]:
        """Names of the failed critical expectations, in suite order."""
        return [c.name for c in self.checks if c.blocking]

    @property
    def warnings(self) -> list[str]:
        """Names of the failed warning-level expectations."""
        return [c.name for c in self.checks if not c.success and not c.blocking]

    def headline(self) -> str:
        what = f"{self.target_kind} {self.target_ref} ({self.suite})"
        warned = f", {len(self.warnings)} warnings" if self.warnings else ""
        if self.success:
            return f"{what}: passed ({len(self.checks)} expectations{warned})"
        return f"{what}: {len(self.failed)} of {len(self.checks)} expectations failed{warned}: " + (
            ", ".join(self.failed)
        )

    def recorded_statistics(self) -> dict[str, Any]:
        """What goes into validation_run.statistics: context plus every observed value."""
        observed = {c.name: c.observed for c in self.checks}
        return {
            **self.statistics,
            "n_checks": len(self.checks),
            "warnings": self.warnings,
            "observed": observed,
        }


def record(settings: Settings, outcome: ValidationOutcome) -> int:
    """Store the outcome as one validation_run; returns its id (also set on the outcome)."""
    with session_scope(settings.metadata_db_url) as session:
        run = record_validation_run(
            session,
            target_kind=outcome.target_kind,
            target_ref=outcome.target_ref,
            suite=outcome.suite,
            success=outcome.success,
            statistics=outcome.recorded_statistics(),
            failed_expectations=outcome.failed,
            report_path=str(outcome.report_path) if outcome.report_path else None,
        )
        outcome.run_id = run.id
    log.info("validation run #%s recorded: %s", outcome.run_id, outcome.headline())
    return outcome.run_id


def previous_row_count(settings: Settings, target_kind: str, suite: str) -> int | None:
    """Row count of the newest successful run of this kind and suite (any target), if any."""
    stmt = (
        select(ValidationRun)
        .where(
            ValidationRun.target_kind == target_kind,
            ValidationRun.suite == suite,
            ValidationRun.success.is_(True),
        )
        .order_by(ValidationRun.created_at.desc(), ValidationRun.id.desc())
        .limit(1)
    )
    with session_scope(settings.metadata_db_url) as session:
        run = session.scalars(stmt).first()
        count = (run.statistics or {}).get("row_count") if run is not None else None
    return int(count) if count is not None else None
