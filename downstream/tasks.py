"""Downstream tasks end to end: labels -> Feast training set -> GBDT on a user split -> metrics
-> model registered pinned to its batch; and online scoring with that same batch's z_u.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from downstream import labels as L
from downstream.matrix import feature_set_matrix, item_matrix
from downstream.metrics import binary_metrics, multiclass_metrics, split_users
from downstream.models import LightGBMModel, XGBoostModel, make_model
from downstream.training_set import build_training_set, gate_training_set, trainable_batch
from representation import batches
from userrep import columns as C
from userrep.db import session_scope
from userrep.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

    from downstream.registry import RegisteredModel

log = logging.getLogger(__name__)

ITEM_TASKS = (L.FUTURE_LISTENING,)  # tasks whose rows are (user, item) pairs
TASKS = tuple(L.LABEL_BUILDERS)


@dataclass
class Design:
    """One feature set's matrix over one label set, with the shared user split."""

    x: np.ndarray  # (rows, features) float32, NaN = missing
    y: np.ndarray  # (rows,) int: 0/1, or a class index
    users: np.ndarray  # (rows,) user ids
    split: np.ndarray  # (rows,) "train" / "val" / "test"
    names: list[str]
    n_user_features: int
    dims: dict[str, dict[str, int]]  # vector widths: {"user": {...}, "item": {...}}
    classes: list[str] = field(default_factory=list)  # multiclass label names


@dataclass
class TaskResult:
    task: str
    family: str
    feature_set: str
    batch_id: str | None
    as_of: pd.Timestamp
    metrics: dict[str, Any]
    model_id: str | None  # None when not registered (baselines)


def batch_as_of(settings: Settings, batch_id: str) -> pd.Timestamp:
    with session_scope(settings.metadata_db_url) as session:
        return pd.Timestamp(batches.get_batch(session, batch_id).as_of).tz_convert("UTC")


def task_labels(
    settings: Settings,
    task: str,
    as_of: pd.Timestamp,
    window_days: int = 7,
    seed: int = 0,
    exclude_seen: bool = False,
) -> pd.DataFrame:
    """The built-in label set of a task as of T."""
    if task not in L.LABEL_BUILDERS:
        raise ValueError(f"unknown task {task!r}: one of {', '.join(TASKS)}")
    if task == L.FUTURE_LISTENING:
        return L.future_listening(
            settings, as_of, window_days, seed=seed, exclude_seen=exclude_seen
        )
    return L.genre_preference(settings, as_of, window_days)


def make_design(
    settings: Settings,
    frame: pd.DataFrame,
    feature_set: str,
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> Design:
    """Matrices of a training-set frame; item tasks get the item vector block appended."""
    xu, names, udims = feature_set_matrix(settings, frame, feature_set)
    x, idims = xu, dict[str, int]()
    if C.ITEM_ID in frame.columns:
        xi, inames, idims = item_matrix(frame)
        x, names = np.hstack([xu, xi]), names + inames
    label = frame[L.LABEL]
    if classes is not None or label.dtype == object:
        classes = list(classes) if classes is not None else sorted(label.unique())
        y = label.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    else:
        y = label.to_numpy(np.int64)
    users = frame[C.USER_ID].to_numpy(np.int64)
    return Design(
        x,
        y,
        users,
        split_users(users, seed=seed),
        names,
        xu.shape[1],
        {"user": udims, "item": idims},
        list(classes or []),
    )


def fit_evaluate(
    design: Design, family: str, params: dict[str, Any] | None = None, k: int = 10
) -> tuple[XGBoostModel | LightGBMModel, dict[str, Any]]:
    """Fit on train users (early stopping on val users), score test users."""
    has_user = ~np.isnan(design.x[:, : design.n_user_features]).all(axis=1)
    if design.n_user_features and (~has_user).any():
        log.info(
            "%d rows have no user features at their time: left out of fit and test",
            int((~has_user).sum()),
        )
    part = {s: (design.split == s) & has_user for s in ("train", "val", "test")}
    if not part["train"].any() or not part["test"].any():
        raise ValueError(
            f"no train or test rows with user features ({int(has_user.sum())} of "
            f"{len(has_user)} rows have them): is the label time before the batch's snapshot?"
        )
    model = make_model(family, **(params or {})).fit(
        design.x[part["train"]],
        design.y[part["train"]],
        design.x[part["val"]],
        design.y[part["val"]],
    )
    test = part["test"]
    proba = model.predict_proba(design.x[test])
    if design.classes:
        metrics = multiclass_metrics(design.y[test], proba)
    else:
        metrics = binary_metrics(design.users[test], design.y[test], proba, k)
    counts = {f"{s}_users": int(len(np.unique(design.users[m]))) for s, m in part.items()}
    return model, metrics | counts | {
        "rows_without_user_features": int((~has_user).sum()),
        "n_user_features": design.n_user_features,
    }


def _spec(
    task: str, feature_set: str, as_of: pd.Timestamp, window_days: int, design: Design
) -> dict[str, Any]:
    """What scoring needs to rebuild the feature vector, saved beside the model."""
    return {
        "task": task,
        "feature_set": feature_set,
        "as_of": as_of.isoformat(),
        "window_days": window_days,
        "feature_names": design.names,
        "dims": design.dims,
        "classes": design.classes,
        "item_task": task in ITEM_TASKS,
    }


def train_task(
    settings: Settings,
    task: str = L.FUTURE_LISTENING,
    family: str = "lightgbm",
    batch_id: str | None = None,
    as_of: pd.Timestamp | None = None,
    feature_set: str = "z_u",
    window_days: int = 7,
    params: dict[str, Any] | None = None,
    name: str | None = None,
    exclude_seen: bool = False,
) -> TaskResult:
    """Train one task model; z_u models are registered pinned to their batch.

    as_of defaults to the batch's snapshot time: features as of T, labels in (T, T + window].
    Curated / raw models are evaluated but not registered (nothing to pin them to).
    """
    from downstream.registry import register_model

    pinned = trainable_batch(settings, batch_id) if feature_set == "z_u" else None
    if as_of is None:
        if pinned is None:
            raise ValueError(f"feature set {feature_set!r} needs an explicit as_of")
        as_of = batch_as_of(settings, pinned)
    labels = task_labels(settings, task, as_of, window_days, settings.seed, exclude_seen)
    frame = build_training_set(settings, labels, pinned, feature_set, validate=False)
    if pinned is not None:  # the gate sees exactly the rows the model will fit and be tested on
        used = frame[frame[C.Z_U].notna()]
        gate_training_set(settings, used, pinned, f"{task}@{pinned}@{as_of:%Y%m%dT%H%M%S}")
    design = make_design(settings, frame, feature_set, seed=settings.seed)
    model, metrics = fit_evaluate(design, family, params)
    log.info("%s / %s / %s: %s", task, family, feature_set, metrics)
    metrics["nulls"] = frame.attrs["nulls"]
    model_id = None
    if pinned is not None:
        spec = _spec(task, feature_set, as_of, window_days, design)
        row = register_model(
            settings, model, task=task, batch_id=pinned, metrics=metrics, spec=spec, name=name
        )
        model_id = row.model_id
    return TaskResult(task, family, feature_set, pinned, as_of, metrics, model_id)


def _broadcast(user_ids: Sequence[int], item_ids: Sequence[int] | None) -> tuple[list[int], ...]:
    users, items = [int(u) for u in user_ids], [int(i) for i in (item_ids or [])]
    if items and len(users) != len(items):
        if len(users) == 1:
            users = users * len(items)
        elif len(items) == 1:
            items = items * len(users)
        else:
            raise ValueError(f"{len(users)} users vs {len(items)} items: give pairs, or one side")
    return users, items


def _online_matrix(
    settings: Settings,
    reg: RegisteredModel,
    user_ids: Sequence[int],
    item_ids: Sequence[int] | None,
    store: FeatureStore | None,
) -> tuple[np.ndarray, str]:
    from representation.serving import get_user_embeddings
    from userrep.feast_store import feature_store

    model_id = reg.record.model_id
    if reg.spec["feature_set"] != "z_u":
        raise ValueError(
            f"model {model_id} uses {reg.spec['feature_set']}: online scoring serves z_u models"
        )
    users, items = _broadcast(user_ids, item_ids)
    if reg.spec["item_task"] and not items:
        raise ValueError(f"model {model_id} scores (user, item) pairs: give item ids")
    store = store or feature_store(settings)
    batch, z = get_user_embeddings(settings, users, reg.record.pinned_batch_id, store)
    if not reg.spec["item_task"]:
        return z, batch
    refs = [f"{C.ITEM_VECTORS_VIEW}:{f}" for f in reg.spec["dims"]["item"]]
    resp = store.get_online_features(features=refs, entity_rows=[{C.ITEM_ID: i} for i in items])
    xi, _, _ = item_matrix(pd.DataFrame(resp.to_dict()), reg.spec["dims"]["item"])
    return np.hstack([z, xi]), batch


def online_features(
    settings: Settings,
    model_id: str,
    user_ids: Sequence[int],
    item_ids: Sequence[int] | None = None,
    store: FeatureStore | None = None,
) -> tuple[np.ndarray, str]:
    """(feature matrix, batch id) from the online store: z_u of the model's PINNED batch."""
    from downstream.registry import load_registered

    return _online_matrix(settings, load_registered(settings, model_id), user_ids, item_ids, store)


def score_online(
    settings: Settings,
    model_id: str,
    user_ids: Sequence[int],
    item_ids: Sequence[int] | None = None,
    store: FeatureStore | None = None,
) -> np.ndarray:
    """Scores of a registered model from online features: P(listen) per (user, item) pair,
    or class probabilities per user for a multiclass task. Rows whose user has no z_u in the
    pinned batch (or whose item has no vectors) score NaN. A retired pinned batch raises."""
    from downstream.registry import load_registered

    reg = load_registered(settings, model_id)
    x, batch = _online_matrix(settings, reg, user_ids, item_ids, store)
    n_user = len(reg.spec["feature_names"]) - sum(reg.spec["dims"]["item"].values())
    missing = np.isnan(x[:, :n_user]).all(axis=1)  # (rows,) no z_u in the pinned batch
    if x.shape[1] > n_user:
        missing |= np.isnan(x[:, n_user:]).all(axis=1)  # no item vectors
    if missing.any():
        log.info(
            "%d rows without online features (unknown users / items) in batch %s: NaN",
            int(missing.sum()),
            batch,
        )
    scores = reg.model.predict_proba(x).astype(np.float64)
    scores[missing] = np.nan
    return scores
