"""Downstream model registry: artifacts under <workspace>/models/<model_id>/ and one
DownstreamModel row in the metadata DB pinning the model to the batch it was trained on.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from downstream.models import LightGBMModel, XGBoostModel, load_model
from downstream.training_set import trainable_batch
from userrep.db import DownstreamModel, ModelStatus, session_scope, utcnow
from userrep.settings import Settings

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"  # how to rebuild the feature vector at scoring time


def models_dir(settings: Settings) -> Path:
    return settings.workspace / "models"


def new_model_id(task: str) -> str:
    return f"m-{task[:24]}-{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


@dataclass
class RegisteredModel:
    """A registry row's fields, the loaded model and its feature spec."""

    record: DownstreamModel
    model: XGBoostModel | LightGBMModel
    spec: dict[str, Any]


def register_model(
    settings: Settings,
    model: XGBoostModel | LightGBMModel,
    *,
    task: str,
    batch_id: str,
    metrics: dict[str, Any],
    spec: dict[str, Any],
    name: str | None = None,
) -> DownstreamModel:
    """Save the model, then insert its row pinned to batch_id (which must be ready / active)."""
    trainable_batch(settings, batch_id)
    model_id = new_model_id(task)
    target = models_dir(settings) / model_id
    tmp = target.parent / f".{model_id}.tmp"
    model.save(tmp)
    (tmp / SPEC_FILE).write_text(json.dumps(spec | {"batch_id": batch_id}, indent=2, default=str))
    tmp.rename(target)
    try:
        with session_scope(settings.metadata_db_url) as session:
            row = DownstreamModel(
                model_id=model_id,
                name=name or f"{task}-{model.family}",
                task=task,
                family=model.family,
                pinned_batch_id=batch_id,
                artifact_path=str(target),
                metrics=json.loads(json.dumps(metrics, default=float)),
                status=ModelStatus.ACTIVE,
            )
            session.add(row)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no row, no orphan artifact
        raise
    log.info("registered %s (%s, %s) pinned to batch %s", model_id, task, model.family, batch_id)
    return row


def get_record(settings: Settings, model_id: str) -> DownstreamModel:
    with session_scope(settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, model_id)
        if row is None:
            raise KeyError(f"unknown downstream model {model_id!r} (`userrep downstream list`?)")
        return row


def load_registered(settings: Settings, model_id: str) -> RegisteredModel:
    """The registry row, the model read back from its native file, and its feature spec."""
    record = get_record(settings, model_id)
    path = Path(record.artifact_path)
    spec = json.loads((path / SPEC_FILE).read_text())
    return RegisteredModel(record, load_model(path), spec)


def list_models(settings: Settings) -> list[DownstreamModel]:
    """Every downstream model, newest first."""
    with session_scope(settings.metadata_db_url) as session:
        stmt = select(DownstreamModel).order_by(DownstreamModel.created_at.desc())
        return list(session.scalars(stmt))
