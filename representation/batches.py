"""Batch lifecycle in the metadata DB: building -> ready -> active -> (ready) -> retired.

Each autoencoder retrain is a batch (its own z_u space); downstream models pin one batch, so a
batch stays served while anything active is pinned to it. The CLI `userrep batches` wraps these.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from userrep.db.models import (
    BatchStatus,
    DownstreamModel,
    ModelStatus,
    RepresentationBatch,
    TargetKind,
    utcnow,
)
from userrep.db.runs import latest_validation_run

log = logging.getLogger(__name__)

PromotionGate = Callable[[Session, RepresentationBatch], list[str]]  # returns failure messages
# Batch ids name files (offline/user_embedding/<id>__<as-of>.parquet) and directories: letters,
# digits, ".", "_", "-" only, no "__" (the file name separator), no glob or path characters.
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]|_(?!_))*$")
MAX_BATCH_ID_CHARS = 64
_ready_deferred: ContextVar[frozenset[str]] = ContextVar("ready_deferred", default=frozenset())


class BatchError(Exception):
    """A lifecycle rule was broken; the message says what to do about it."""


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise BatchError(f"{name}={value!r} is naive: pass a timezone-aware UTC datetime")


def new_batch_id(as_of: datetime) -> str:
    """A readable, unique id: the snapshot date plus 12 random hex digits (48 bits: a
    collision among a million batches of one day has odds of about 1 in 500)."""
    _require_aware("as_of", as_of)
    return f"b{as_of.astimezone(UTC):%Y%m%d}-{secrets.token_hex(6)}"


def check_batch_id(batch_id: str) -> str:
    """The id, or BatchError when it could not be a batch id (a glob, a path, a separator)."""
    if (
        not isinstance(batch_id, str)
        or len(batch_id) > MAX_BATCH_ID_CHARS
        or not BATCH_ID_RE.match(batch_id)
    ):
        raise BatchError(
            f"{str(batch_id)[:80]!r} is not a batch id (letters, digits, '.', '_', '-'; "
            "see `userrep batches list`)"
        )
    return batch_id


def get_batch(session: Session, batch_id: str) -> RepresentationBatch:
    """The batch with this id, or BatchError naming the known ones."""
    batch = session.get(RepresentationBatch, batch_id) if BATCH_ID_RE.match(batch_id) else None
    if batch is None:
        known = session.scalars(
            select(RepresentationBatch.batch_id).order_by(RepresentationBatch.created_at.desc())
        ).all()
        hint = f"known: {', '.join(known[:10])}" if known else "no batches exist yet"
        raise BatchError(f"unknown batch {batch_id!r} ({hint})")
    return batch


def list_batches(session: Session) -> list[RepresentationBatch]:
    """All batches, oldest first."""
    stmt = select(RepresentationBatch).order_by(
        RepresentationBatch.created_at, RepresentationBatch.batch_id
    )
    return list(session.scalars(stmt))


def active_batch(session: Session) -> RepresentationBatch | None:
    """The batch new downstream models train on, if any."""
    stmt = select(RepresentationBatch).where(RepresentationBatch.status == BatchStatus.ACTIVE)
    return session.scalars(stmt).one_or_none()


def pinned_models(session: Session, batch_id: str) -> list[DownstreamModel]:
    """Active downstream models pinned to a batch."""
    stmt = (
        select(DownstreamModel)
        .where(
            DownstreamModel.pinned_batch_id == batch_id,
            DownstreamModel.status == ModelStatus.ACTIVE,
        )
        .order_by(DownstreamModel.model_id)
    )
    return list(session.scalars(stmt))


def servable_batches(session: Session) -> list[RepresentationBatch]:
    """Batches whose z_u must stay fresh online: the active one + ready ones with pinned models."""
    pinned = (
        select(DownstreamModel.pinned_batch_id)
        .where(DownstreamModel.status == ModelStatus.ACTIVE)
        .scalar_subquery()
    )
    stmt = select(RepresentationBatch).where(
        (RepresentationBatch.status == BatchStatus.ACTIVE)
        | (
            (RepresentationBatch.status == BatchStatus.READY)
            & RepresentationBatch.batch_id.in_(pinned)
        )
    )
    batches = list(session.scalars(stmt))
    return sorted(batches, key=lambda b: (b.status != BatchStatus.ACTIVE, b.created_at))


def create_batch(
    session: Session,
    *,
    batch_id: str,
    as_of: datetime,
    feature_service: str,
    latent_dim: int,
    artifact_path: str,
    artifact_sha256: str,
    metrics: dict[str, Any],
    train_start: datetime | None = None,
    train_end: datetime | None = None,
    parent_batch_id: str | None = None,
) -> RepresentationBatch:
    """Register a batch being built (status "building": never served until mark_ready)."""
    for name, value in (("as_of", as_of), ("train_start", train_start), ("train_end", train_end)):
        _require_aware(name, value)
    if train_start is not None and train_end is not None and train_start > train_end:
        raise BatchError(f"train_start {train_start} is after train_end {train_end}")
    if latent_dim <= 0:
        raise BatchError(f"latent_dim must be positive, got {latent_dim}")
    check_batch_id(batch_id)
    if session.get(RepresentationBatch, batch_id) is not None:
        raise BatchError(f"batch {batch_id!r} already exists: pick a new id (new_batch_id)")
    if parent_batch_id is not None:
        get_batch(session, parent_batch_id)
    batch = RepresentationBatch(
        batch_id=batch_id,
        status=BatchStatus.BUILDING,
        as_of=as_of,
        train_start=train_start,
        train_end=train_end,
        feature_service=feature_service,
        latent_dim=latent_dim,
        artifact_path=artifact_path,
        artifact_sha256=artifact_sha256,
        metrics=dict(metrics),
        parent_batch_id=parent_batch_id,
    )
    session.add(batch)
    session.flush()
    log.info("batch %s: building (as_of %s)", batch_id, as_of.isoformat())
    return batch


@contextmanager
def ready_deferred(batch_id: str) -> Iterator[None]:
    """Inside the block, mark_ready of this batch changes nothing: a backfill embeds several
    as-ofs (each embed_batch would mark the batch ready after the first) and marks it ready
    itself (mark_ready_if_building) once every as-of and the online load are written."""
    token = _ready_deferred.set(_ready_deferred.get() | {batch_id})
    try:
        yield
    finally:
        _ready_deferred.reset(token)


def require_embeddable(session: Session, batch_id: str) -> RepresentationBatch:
    """The batch, or BatchError when it must not be (re)embedded: a retired batch is never
    written again (its online rows stay as they were retired)."""
    batch = get_batch(session, batch_id)
    if batch.status == BatchStatus.RETIRED:
        raise BatchError(
            f"batch {batch_id!r} is retired: it is not embedded again (train a new batch)"
        )
    return batch


def mark_ready_if_building(session: Session, batch_id: str, n_users: int) -> bool:
    """mark_ready for a batch still building (True), else nothing (a batch embedded again)."""
    if get_batch(session, batch_id).status != BatchStatus.BUILDING:
        return False
    mark_ready(session, batch_id, n_users)
    return True


def mark_ready(session: Session, batch_id: str, n_users: int) -> RepresentationBatch:
    """Publish a built batch: building -> ready, once all its z_u are written (inside
    ready_deferred(batch_id): nothing yet, the backfill marks it when complete)."""
    batch = get_batch(session, batch_id)
    if batch_id in _ready_deferred.get():
        log.info("batch %s: ready once its backfill is complete", batch_id)
        return batch
    if batch.status != BatchStatus.BUILDING:
        raise BatchError(
            f"batch {batch_id!r} is {batch.status}, only a building batch can be ready"
        )
    if n_users < 0:
        raise BatchError(f"n_users must be >= 0, got {n_users}")
    batch.status = BatchStatus.READY
    batch.n_users = n_users
    session.flush()
    log.info("batch %s: ready (%d users)", batch_id, n_users)
    return batch


def validation_gate(session: Session, batch: RepresentationBatch) -> list[str]:
    """Pass only when the newest validation run over this batch (any suite) succeeded."""
    run = latest_validation_run(session, TargetKind.BATCH, batch.batch_id)
    if run is None:
        return [
            f"no validation run for batch {batch.batch_id!r}: validate its z_u "
            "(a validation_run with target_kind='batch') before promoting"
        ]
    if run.success:
        return []
    failed = ", ".join(run.failed_expectations) or "(no expectation named)"
    report = f"; report: {run.report_path}" if run.report_path else ""
    return [
        f"latest validation run #{run.id} of batch {batch.batch_id!r} (suite {run.suite!r}, "
        f"{run.created_at:%Y-%m-%d %H:%M} UTC) failed: {failed}{report}"
    ]


# Promotion is safe by default: a batch needs a passing validation run. Until validation
# exists (or in an emergency) callers pass force_reason, which is recorded on the batch.
DEFAULT_GATES: tuple[PromotionGate, ...] = (validation_gate,)


def _run_gates(
    session: Session, batch: RepresentationBatch, gates: Sequence[PromotionGate]
) -> dict[str, list[str]]:
    """Failure messages per gate name (empty lists for gates that passed)."""
    return {getattr(g, "__name__", repr(g)): list(g(session, batch)) for g in gates}


def _make_active(session: Session, batch: RepresentationBatch) -> RepresentationBatch | None:
    """Demote the current active batch to ready, then activate `batch`; returns the demoted one."""
    previous = active_batch(session)
    if previous is not None:
        previous.status = BatchStatus.READY
        session.flush()  # demote first: the single-active index is checked per statement
    batch.status = BatchStatus.ACTIVE
    batch.promoted_at = utcnow()
    try:
        session.flush()
    except IntegrityError as exc:  # the single-active index: a concurrent promotion won
        raise BatchError(
            f"batch {batch.batch_id!r}: another batch was promoted meanwhile; retry"
        ) from exc
    return previous


def promote(
    session: Session,
    batch_id: str,
    gates: Sequence[PromotionGate] = DEFAULT_GATES,
    *,
    force_reason: str | None = None,
) -> RepresentationBatch:
    """Make a ready batch the active one; the previous active batch goes back to "ready".

    Every gate runs; any failure refuses the promotion unless `force_reason` is given, in which
    case the failures and the reason are recorded in `batch.promotion` and logged as a warning.
    """
    batch = get_batch(session, batch_id)
    if batch.status == BatchStatus.ACTIVE:
        log.info("batch %s is already active", batch_id)
        return batch
    if batch.status != BatchStatus.READY:
        hint = "mark it ready first" if batch.status == BatchStatus.BUILDING else "build a new one"
        raise BatchError(
            f"batch {batch_id!r} is {batch.status}: only a ready batch can be promoted ({hint})"
        )
    results = _run_gates(session, batch, gates)
    failures = [f"{name}: {msg}" for name, msgs in results.items() for msg in msgs]
    if failures and not force_reason:
        raise BatchError(f"cannot promote batch {batch_id!r}:\n  " + "\n  ".join(failures))
    if failures:
        log.warning("promoting %s despite failed gates (%s): %s", batch_id, force_reason, failures)
    previous = _make_active(session, batch)
    batch.promotion = {
        "at": batch.promoted_at.isoformat() if batch.promoted_at else None,
        "previous_active": previous.batch_id if previous else None,
        "gates": results,
        "force_reason": force_reason,
    }
    session.flush()
    log.info("batch %s: active (was %s)", batch_id, previous.batch_id if previous else "none")
    return batch


def retire(session: Session, batch_id: str) -> RepresentationBatch:
    """Stop serving a batch; refused while it is active or an active model is pinned to it."""
    batch = get_batch(session, batch_id)
    if batch.status == BatchStatus.RETIRED:
        log.info("batch %s is already retired", batch_id)
        return batch
    if batch.status == BatchStatus.ACTIVE:
        raise BatchError(f"batch {batch_id!r} is active: promote another batch before retiring it")
    pinned = pinned_models(session, batch_id)
    if pinned:
        names = ", ".join(f"{m.model_id} ({m.name}, {m.task})" for m in pinned)
        raise BatchError(
            f"batch {batch_id!r} is still pinned by active downstream models: {names}; "
            "retire them or retrain them on another batch first"
        )
    batch.status = BatchStatus.RETIRED
    batch.retired_at = utcnow()
    session.flush()
    log.info("batch %s: retired", batch_id)
    return batch
