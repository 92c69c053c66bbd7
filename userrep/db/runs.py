"""Validation run records: GX suites write them, promotion gates read them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from userrep.db.models import TargetKind, ValidationRun


def record_validation_run(
    session: Session,
    target_kind: str,
    target_ref: str,
    suite: str,
    success: bool,
    statistics: dict[str, Any],
    failed_expectations: Sequence[str],
    report_path: str | None = None,
) -> ValidationRun:
    """Store the outcome of one suite over one target; flushed, committed by the caller."""
    run = ValidationRun(
        target_kind=TargetKind(target_kind).value,  # ValueError on an unknown kind
        target_ref=target_ref,
        suite=suite,
        success=bool(success),
        statistics=dict(statistics),
        failed_expectations=list(failed_expectations),
        report_path=report_path,
    )
    session.add(run)
    session.flush()
    return run


def latest_validation_run(
    session: Session, target_kind: str, target_ref: str, suite: str | None = None
) -> ValidationRun | None:
    """The newest run over a target (optionally of one suite), or None."""
    stmt = select(ValidationRun).where(
        ValidationRun.target_kind == target_kind, ValidationRun.target_ref == target_ref
    )
    if suite is not None:
        stmt = stmt.where(ValidationRun.suite == suite)
    stmt = stmt.order_by(ValidationRun.created_at.desc(), ValidationRun.id.desc()).limit(1)
    return session.scalars(stmt).first()
