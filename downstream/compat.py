"""Compatibility of a pinned downstream model with a newer (aligned) batch, and repinning.

evaluate_compat scores model M (trained on its pinned batch A) on a labelled window with batch B's
z_u, aligned and unaligned, beside the same family retrained on B; the record goes into
DownstreamModel.metrics["compat"][B]. repin moves M's pin to B only with a passing record.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downstream.registry import SPEC_FILE, load_registered
from downstream.tasks import Design, batch_as_of, fit_evaluate, make_design, task_labels
from downstream.training_set import build_training_set, trainable_batch
from representation import batches
from representation.align import AlignmentMap
from userrep import columns as C
from userrep.db import DownstreamModel, session_scope, utcnow
from userrep.settings import Settings

log = logging.getLogger(__name__)

# Largest test-AUC drop (pinned model on A -> the same model on aligned B) still compatible.
# Measured in tests/test_align.py (tiny synthetic workspace, future-listening, LightGBM, ~120
# test users), two runs: pinned on A 0.683 / 0.675; a LightGBM refit on a seed-1 retrain B
# 0.680 / 0.682 (what retraining itself costs: -0.003 / +0.007); pinned on B aligned 0.668 /
# 0.666 (drop 0.014 / 0.008), unaligned 0.595 / 0.584 (drop 0.088 / 0.091), shuffled rows
# 0.568 (drop 0.115). 0.005 is about the refit difference: a repin may not cost more than
# retraining would. On a test set this small the AUC itself moves ~0.008 between runs, so the
# tiny workspace's aligned retrains do not pass; raise --max-drop there, keep it in production.
# Re-checked by bench/bench_align_study.py (synthetic, drift 0.5, three retrains, ~250 test
# users x 60 items; drop = pinned model on A's re-embedding - on B): refits of one space under
# a rotation differ by 0.001 to 0.003 AUC; bct+procrustes drops -0.001 / -0.003 / -0.007 (all
# pass), procrustes alone 0.019 / 0.028 / 0.029 (all refused), unaligned 0.13 to 0.15.
# 0.005 keeps that split; on MovieLens 100K (~20 test users per window) AUC noise is ~0.1 and
# no threshold is meaningful. At 4,000 users (~1,000 test users, 3 seeds x 3 retrains, drifts
# 0.15 to 0.5; docs/alignment.md) with the default BCT weight 0.3 the bct(+procrustes) drops
# average -0.002 to 0.001 and reach 0.006 at worst (3 of 54 retrains over 0.005, at drift
# 0.15), procrustes alone averages 0.012 to 0.015 (refused), unaligned 0.17 to 0.21.
DEFAULT_MAX_DROP = 0.005
COMPAT_KEY = "compat"


class CompatError(Exception):
    """A repin or compatibility check cannot go ahead; the message says why."""


def _metric(design: Design, proba: np.ndarray, rows: np.ndarray) -> float:
    """Test AUC: binary AUC, or one-vs-rest macro AUC for a multiclass task."""
    from downstream.metrics import auc, multiclass_metrics

    if design.classes:
        return float(multiclass_metrics(design.y[rows], proba)["macro_auc"])
    return float(auc(design.y[rows], proba))


def held_out_rows(design: Design) -> np.ndarray:
    """Held-out users' rows that have user features (what fit_evaluate tests on)."""
    has_user = ~np.isnan(design.x[:, : design.n_user_features]).all(axis=1)
    return (design.split == "test") & has_user


def _design(settings: Settings, spec: dict, labels: pd.DataFrame, batch_id: str) -> Design:
    frame = build_training_set(settings, labels, batch_id, "z_u", validate=False)
    return make_design(settings, frame, "z_u", spec["classes"] or None, seed=settings.seed)


def with_user_block(design: Design, transform: Any) -> np.ndarray:
    """design.x with its z_u block replaced by transform(z_u) (NaN rows stay NaN)."""
    x = design.x.copy()
    z = x[:, : design.n_user_features]  # (rows, latent_dim)
    ok = ~np.isnan(z).all(axis=1)
    x[ok, : design.n_user_features] = transform(z[ok])
    return x


def _alignment(settings: Settings, batch_id: str) -> AlignmentMap | None:
    with session_scope(settings.metadata_db_url) as session:
        art = Path(batches.get_batch(session, batch_id).artifact_path)
    return AlignmentMap.load(art)


def compat_scores(
    model: Any, design_a: Design, design_b: Design, amap: AlignmentMap | None, family: str
) -> dict[str, float]:
    """Test metric of the pinned model on A, on B aligned / unaligned, and of a refit on B."""
    rows_a, rows_b = held_out_rows(design_a), held_out_rows(design_b)
    unaligned = design_b.x if amap is None else with_user_block(design_b, amap.invert)
    _, refit = fit_evaluate(design_b, family)
    return {
        "pinned": _metric(design_a, model.predict_proba(design_a.x[rows_a]), rows_a),
        "aligned": _metric(design_b, model.predict_proba(design_b.x[rows_b]), rows_b),
        "unaligned": _metric(design_b, model.predict_proba(unaligned[rows_b]), rows_b),
        "retrained": float(refit.get("macro_auc", refit.get("auc", float("nan")))),
    }


def evaluate_compat(
    settings: Settings,
    model_id: str,
    batch_id: str,
    as_of: pd.Timestamp | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
) -> dict[str, Any]:
    """Score model_id with batch_id's z_u on the window after as_of (default: the batch's
    as_of); record and return {pinned, aligned, unaligned, retrained, drop, compatible}."""
    reg = load_registered(settings, model_id)
    pinned, spec = reg.record.pinned_batch_id, reg.spec
    if spec["feature_set"] != "z_u":
        raise CompatError(f"model {model_id} does not read z_u")
    trainable_batch(settings, batch_id)
    as_of = as_of if as_of is not None else batch_as_of(settings, batch_id)
    labels = task_labels(settings, reg.record.task, as_of, spec["window_days"], settings.seed)
    design_a = _design(settings, spec, labels, pinned)
    design_b = _design(settings, spec, labels, batch_id)
    if design_b.n_user_features != design_a.n_user_features:
        raise CompatError(f"batch {batch_id} has another z_u width than {pinned}")
    scores = compat_scores(
        reg.model, design_a, design_b, _alignment(settings, batch_id), reg.record.family
    )
    drop = scores["pinned"] - scores["aligned"]
    record = {
        **scores,
        "drop": drop,
        "max_drop": max_drop,
        "compatible": bool(drop <= max_drop),
        "from_batch": pinned,
        "as_of": as_of.isoformat(),
        "evaluated_at": str(utcnow()),
    }
    save_record(settings, model_id, batch_id, record)
    log.info("model %s on batch %s: %s", model_id, batch_id, record)
    return record


def save_record(settings: Settings, model_id: str, batch_id: str, record: dict) -> None:
    """metrics["compat"][batch_id] = record (the JSON column is reassigned, not mutated)."""
    with session_scope(settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, model_id)
        if row is None:
            raise CompatError(f"unknown downstream model {model_id!r}")
        compat = dict((row.metrics or {}).get(COMPAT_KEY, {}))
        compat[batch_id] = json.loads(json.dumps(record, default=float))
        row.metrics = {**(row.metrics or {}), COMPAT_KEY: compat}


def repin(settings: Settings, model_id: str, batch_id: str) -> str:
    """Move model_id's pin to batch_id without retraining; needs a passing compat record.

    Returns the previous batch. The model's spec.json records the move.
    """
    trainable_batch(settings, batch_id)
    with session_scope(settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, model_id)
        if row is None:
            raise CompatError(f"unknown downstream model {model_id!r}")
        record = (row.metrics or {}).get(COMPAT_KEY, {}).get(batch_id)
        if not record or not record.get("compatible"):
            why = "no compatibility record" if not record else f"drop {record['drop']:.4f}"
            raise CompatError(
                f"refusing to repin {model_id} to {batch_id}: {why} "
                f"(run `userrep batches compat {batch_id} --model {model_id}`)"
            )
        if record.get("from_batch") != row.pinned_batch_id:
            raise CompatError(
                f"the record was made against {record.get('from_batch')}, "
                f"but {model_id} is pinned to {row.pinned_batch_id}: re-run compat"
            )
        previous, row.pinned_batch_id = row.pinned_batch_id, batch_id
        spec_path = Path(row.artifact_path) / SPEC_FILE
    spec = json.loads(spec_path.read_text())
    spec |= {C.BATCH_ID: batch_id, "repinned_from": [*spec.get("repinned_from", []), previous]}
    spec_path.write_text(json.dumps(spec, indent=2, default=str))
    log.info("repinned %s from %s to %s", model_id, previous, batch_id)
    return previous
