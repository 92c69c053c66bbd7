"""Metadata DB: which z_u batches exist, which is active, what is pinned to them, what passed.

Models, sessions and programmatic Alembic migrations; the schema lives in migrations/.
"""

from userrep.db.migrate import alembic_config, check, downgrade, upgrade
from userrep.db.models import (
    Base,
    BatchStatus,
    DownstreamModel,
    ModelFamily,
    ModelStatus,
    RepresentationBatch,
    TargetKind,
    ValidationRun,
    utcnow,
)
from userrep.db.runs import latest_validation_run, record_validation_run
from userrep.db.session import dispose_engines, make_engine, session_scope

__all__ = [
    "Base",
    "BatchStatus",
    "DownstreamModel",
    "ModelFamily",
    "ModelStatus",
    "RepresentationBatch",
    "TargetKind",
    "ValidationRun",
    "alembic_config",
    "check",
    "dispose_engines",
    "downgrade",
    "latest_validation_run",
    "make_engine",
    "record_validation_run",
    "session_scope",
    "upgrade",
    "utcnow",
]
