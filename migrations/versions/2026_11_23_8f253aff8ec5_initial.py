"""Initial metadata DB schema: representation batches, downstream models, validation runs.

Revision ID: 8f253aff8ec5
Revises:
Create Date: 2026-11-23 17:46:34.548645+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "8f253aff8ec5"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "representation_batch",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("train_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("train_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("feature_service", sa.String(length=128), nullable=False),
        sa.Column("latent_dim", sa.Integer(), nullable=False),
        sa.Column("n_users", sa.Integer(), nullable=True),
        sa.Column("artifact_path", sa.String(length=1024), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("parent_batch_id", sa.String(length=64), nullable=True),
        sa.Column("alignment", sa.JSON(), nullable=True),
        sa.Column("promotion", sa.JSON(), nullable=True),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('building', 'ready', 'active', 'retired')",
            name=op.f("ck_representation_batch_status"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_batch_id"],
            ["representation_batch.batch_id"],
            name=op.f("fk_representation_batch_parent_batch_id_representation_batch"),
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_representation_batch")),
    )
    with op.batch_alter_table("representation_batch", schema=None) as batch_op:
        batch_op.create_index(
            "ix_representation_batch_single_active",
            ["status"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.create_index("ix_representation_batch_status", ["status"], unique=False)

    op.create_table(
        "validation_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_kind", sa.String(length=32), nullable=False),
        sa.Column("target_ref", sa.String(length=256), nullable=False),
        sa.Column("suite", sa.String(length=128), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("statistics", sa.JSON(), nullable=False),
        sa.Column("failed_expectations", sa.JSON(), nullable=False),
        sa.Column("report_path", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "target_kind IN ('events', 'item_vectors', 'features', 'batch', 'training_set')",
            name=op.f("ck_validation_run_target_kind"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_run")),
    )
    with op.batch_alter_table("validation_run", schema=None) as batch_op:
        batch_op.create_index(
            "ix_validation_run_target", ["target_kind", "target_ref", "created_at"], unique=False
        )

    op.create_table(
        "downstream_model",
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("pinned_batch_id", sa.String(length=64), nullable=False),
        sa.Column("artifact_path", sa.String(length=1024), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "family IN ('xgboost', 'lightgbm')", name=op.f("ck_downstream_model_family")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'retired')", name=op.f("ck_downstream_model_status")
        ),
        sa.ForeignKeyConstraint(
            ["pinned_batch_id"],
            ["representation_batch.batch_id"],
            name=op.f("fk_downstream_model_pinned_batch_id_representation_batch"),
        ),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_downstream_model")),
    )
    with op.batch_alter_table("downstream_model", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_downstream_model_pinned_batch_id"), ["pinned_batch_id"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("downstream_model", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_downstream_model_pinned_batch_id"))

    op.drop_table("downstream_model")
    with op.batch_alter_table("validation_run", schema=None) as batch_op:
        batch_op.drop_index("ix_validation_run_target")

    op.drop_table("validation_run")
    with op.batch_alter_table("representation_batch", schema=None) as batch_op:
        batch_op.drop_index("ix_representation_batch_status")
        batch_op.drop_index(
            "ix_representation_batch_single_active",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.drop_table("representation_batch")
