"""Infrastructure cost of a downstream model per user feature set (z_u vs the curated features
it replaces): features and bytes fetched per online request, measured get_online_features
latency, training-set generation and training time, model size. Read by report.py.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from downstream.tasks import fit_evaluate, make_design, task_labels
from downstream.training_set import build_training_set, user_feature_refs
from userrep import columns as C
from userrep.feast_store import feature_store
from userrep.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

COST_FEATURE_SETS = ("z_u", "curated")


@dataclass
class OnlineCost:
    """One user's user features per request, measured over repeated real lookups."""

    features: int  # feature references fetched per request
    values: int  # scalars those features carry (a 64-d vector counts 64)
    bytes: float  # serialized GetOnlineFeaturesResponse per request, mean
    p50_ms: float
    p95_ms: float
    found: float  # share of requested features that came back non-null
    calls: int


@dataclass
class ModelCost:
    """What one downstream model costs with one user feature set."""

    task: str
    feature_set: str
    family: str
    online: OnlineCost
    training_set_s: float  # labels -> Feast point-in-time training set
    train_s: float  # GBDT fit with early stopping
    model_bytes: int  # saved native model files
    rows: int
    metrics: dict[str, Any] = field(default_factory=dict)


def _entity_rows(feature_set: str, users: np.ndarray, batch_id: str | None) -> list[dict]:
    if feature_set == "z_u":
        return [{C.USER_ID: int(u), C.BATCH_ID: batch_id} for u in users]
    return [{C.USER_ID: int(u)} for u in users]


def measure_online(
    store: FeatureStore,
    refs: Sequence[str],
    entity_rows: Sequence[dict],
    warmup: int = 3,
) -> OnlineCost:
    """Time one get_online_features call per entity row (one request = one user)."""
    for row in entity_rows[:warmup]:
        store.get_online_features(features=list(refs), entity_rows=[row])
    times, sizes, values, found = [], [], [], []
    for row in entity_rows:
        t0 = time.perf_counter()
        resp = store.get_online_features(features=list(refs), entity_rows=[row])
        times.append((time.perf_counter() - t0) * 1e3)
        sizes.append(resp.proto.ByteSize())
        out = resp.to_dict()
        cells = [out[r.split(":", 1)[1]][0] for r in refs]
        values.append(sum(len(v) if isinstance(v, list) else 1 for v in cells if v is not None))
        found.append(np.mean([v is not None for v in cells]))
    return OnlineCost(
        features=len(refs),
        values=int(max(values)) if values else 0,
        bytes=float(np.mean(sizes)) if sizes else 0.0,
        p50_ms=float(np.percentile(times, 50)) if times else float("nan"),
        p95_ms=float(np.percentile(times, 95)) if times else float("nan"),
        found=float(np.mean(found)) if found else 0.0,
        calls=len(times),
    )


def _model_bytes(model: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp))
        return sum(p.stat().st_size for p in Path(tmp).iterdir())


def measure_costs(
    settings: Settings,
    batch_id: str,
    as_of: pd.Timestamp,
    task: str,
    feature_sets: Sequence[str] = COST_FEATURE_SETS,
    family: str = "lightgbm",
    window_days: int = 7,
    n_calls: int = 50,
    store: FeatureStore | None = None,
) -> list[ModelCost]:
    """Train the task's model once per feature set (timed) and time real online lookups of
    the user features it needs for n_calls users (the same users for every feature set)."""

    store = store or feature_store(settings)
    labels = task_labels(settings, task, as_of, window_days, settings.seed)
    users = np.unique(labels[C.USER_ID].to_numpy(np.int64))
    sample = np.random.default_rng(settings.seed).choice(users, min(n_calls, len(users)), False)
    out = []
    for fs in feature_sets:
        t0 = time.perf_counter()
        frame = build_training_set(
            settings, labels, batch_id if fs == "z_u" else None, fs, validate=False
        )
        t1 = time.perf_counter()
        model, metrics = fit_evaluate(make_design(settings, frame, fs, seed=settings.seed), family)
        t2 = time.perf_counter()
        refs = user_feature_refs(settings, fs)
        online = measure_online(store, refs, _entity_rows(fs, sample, batch_id))
        cost = ModelCost(
            task, fs, family, online, t1 - t0, t2 - t1, _model_bytes(model), len(frame), metrics
        )
        log.info("cost %s / %s: %s", task, fs, cost)
        out.append(cost)
    return out
