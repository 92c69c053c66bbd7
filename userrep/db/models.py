"""Metadata DB models: z_u batches, the downstream models pinned to them, validation runs.

Written by training / validation / promotion; read by serving to know which batch to use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Alembic's recommended conventions: every constraint gets a stable, predictable name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class BatchStatus(StrEnum):
    BUILDING = "building"  # artifacts being written; never served
    READY = "ready"  # complete; served to the models pinned to it
    ACTIVE = "active"  # the batch new downstream models train on (exactly one)
    RETIRED = "retired"  # nothing pinned; no longer served


class ModelStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class ModelFamily(StrEnum):
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"


class TargetKind(StrEnum):
    """What a validation run looked at."""

    EVENTS = "events"
    ITEM_VECTORS = "item_vectors"
    FEATURES = "features"
    BATCH = "batch"
    TRAINING_SET = "training_set"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _in_check(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class RepresentationBatch(Base):
    """One trained autoencoder and the z_u it produced: an incompatible vector space."""

    __tablename__ = "representation_batch"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "b20240615-3f2a"
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.BUILDING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    as_of: Mapped[datetime]  # snapshot time of the features the batch embeds
    train_start: Mapped[datetime | None]
    train_end: Mapped[datetime | None]
    feature_service: Mapped[str] = mapped_column(String(128))  # e.g. "encoder_input_v2"
    latent_dim: Mapped[int] = mapped_column(Integer)
    n_users: Mapped[int | None] = mapped_column(Integer)  # set when the batch is published
    artifact_path: Mapped[str] = mapped_column(String(1024))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_batch_id: Mapped[str | None] = mapped_column(ForeignKey("representation_batch.batch_id"))
    # How this space maps onto its parent's (method, residual, explained variance).
    alignment: Mapped[dict[str, Any] | None]
    # Audit trail of the promotion: gates run, or why they were skipped.
    promotion: Mapped[dict[str, Any] | None]
    promoted_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]

    parent: Mapped[RepresentationBatch | None] = relationship(remote_side=[batch_id])
    pinned_models: Mapped[list[DownstreamModel]] = relationship(back_populates="pinned_batch")

    __table_args__ = (
        CheckConstraint(_in_check("status", BatchStatus), name="status"),
        Index("ix_representation_batch_status", "status"),
        # At most one active batch, enforced by the database as well as by promote().
        Index(
            "ix_representation_batch_single_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    def __repr__(self) -> str:
        return f"RepresentationBatch({self.batch_id!r}, status={self.status!r})"


class DownstreamModel(Base):
    """A task model (GBDT) trained on, and served with, exactly one batch."""

    __tablename__ = "downstream_model"

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(16))
    pinned_batch_id: Mapped[str] = mapped_column(
        ForeignKey("representation_batch.batch_id"), index=True
    )
    artifact_path: Mapped[str] = mapped_column(String(1024))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    pinned_batch: Mapped[RepresentationBatch] = relationship(back_populates="pinned_models")

    __table_args__ = (
        CheckConstraint(_in_check("family", ModelFamily), name="family"),
        CheckConstraint(_in_check("status", ModelStatus), name="status"),
    )

    def __repr__(self) -> str:
        return f"DownstreamModel({self.model_id!r}, batch={self.pinned_batch_id!r})"


class ValidationRun(Base):
    """One Great Expectations suite run over one target (a batch, a snapshot, ...)."""

    __tablename__ = "validation_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target_kind: Mapped[str] = mapped_column(String(32))
    target_ref: Mapped[str] = mapped_column(String(256))  # a batch id, a snapshot time, ...
    suite: Mapped[str] = mapped_column(String(128))
    success: Mapped[bool]
    statistics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    failed_expectations: Mapped[list[str]] = mapped_column(default=list)
    report_path: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint(_in_check("target_kind", TargetKind), name="target_kind"),
        Index("ix_validation_run_target", "target_kind", "target_ref", "created_at"),
    )

    def __repr__(self) -> str:
        return f"ValidationRun({self.id}, {self.target_kind}:{self.target_ref}, ok={self.success})"
