"""Feature ablation for downstream tasks: retrain the batch's autoencoder without some input
blocks (a horizon, a modality, onboarding, stats; evaluation/inputs.ablate), embed
the same users, and report how much the task loses against the published z_u.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downstream import labels as L
from downstream.results import ABLATION, MethodResult, results_rows
from downstream.tasks import fit_evaluate, label_row_times, make_design
from downstream.training_set import build_training_set
from representation import batches
from representation.artifact import CONFIG_FILE, UserEncoder
from representation.inputs import InputLayout
from representation.model import ABLATION_SWITCHES, AutoencoderConfig, ablate
from representation.train import TrainConfig, train_autoencoder
from representation.trainset import TrainingSet, training_item_targets, training_matrix
from userrep import columns as C
from userrep.db import session_scope
from userrep.settings import Settings

log = logging.getLogger(__name__)


def parse_ablations(spec: str | Sequence[str]) -> list[tuple[str, ...]]:
    """ "7d,collab" -> [("7d",), ("collab",)]: one run each; "7d+30d" drops both in one run."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    runs = [tuple(s.strip() for s in p.split("+") if s.strip()) for p in parts if p.strip()]
    unknown = sorted({s for run in runs for s in run} - set(ABLATION_SWITCHES))
    if unknown:
        raise ValueError(f"unknown ablation {unknown}: choose from {', '.join(ABLATION_SWITCHES)}")
    return runs


def _batch_artifact(settings: Settings, batch_id: str) -> tuple[dict[str, Any], pd.Timestamp]:
    """The batch's saved config.json and its training snapshot time."""
    with session_scope(settings.metadata_db_url) as session:
        row = batches.get_batch(session, batch_id)
        art, as_of = Path(row.artifact_path), pd.Timestamp(row.as_of).tz_convert("UTC")
    return json.loads((art / CONFIG_FILE).read_text()), as_of


def ablated_vectors(
    settings: Settings,
    batch_id: str,
    as_of: pd.Timestamp | Sequence[pd.Timestamp],
    switches: Sequence[str],
) -> tuple[dict[pd.Timestamp, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """({T: (user ids, z)}, info): the batch's autoencoder retrained on its own snapshot and
    configs without the named input blocks, then every user of the snapshot at each T embedded."""

    config, trained_at = _batch_artifact(settings, batch_id)
    lay = config["extra"]["layout"]
    layout = InputLayout(tuple(lay["horizons"]), lay["collab_dim"], lay["content_dim"])
    cols, blocks = ablate(layout.blocks(), switches)
    users, x_train = training_matrix(settings, trained_at, layout)
    model_cfg = AutoencoderConfig(**(config["autoencoder"] | {"input_dim": len(cols)}))
    # a batch trained before the tag decoder has no tag_weight: it had no tag head
    train = {"tag_weight": 0.0} | config["train"]
    train |= {"keep_groups": tuple(config["train"]["keep_groups"])}
    tcfg = TrainConfig(**train)
    items = training_item_targets(settings, trained_at, users, tcfg)
    tags = TrainingSet(settings.paths, trained_at, layout, tcfg.item_vocab).training_tags(
        users, tcfg
    )
    result = train_autoencoder(x_train[:, cols], blocks, model_cfg, tcfg, items=items, tags=tags)
    encoder = UserEncoder.from_result(result)
    out = {}
    for t in L.label_time_list(as_of):
        users_t, x = (users, x_train) if t == trained_at else training_matrix(settings, t, layout)
        out[t] = users_t, encoder.embed(x[:, cols])  # (users_t, latent)
    info = {
        "input_dim": len(cols),
        "full_input_dim": layout.dim,
        "epochs": result.metrics["epochs_run"],
    }
    log.info("ablation %s: input %d of %d columns", "+".join(switches), len(cols), layout.dim)
    return out, info


def ablation_results(
    settings: Settings,
    batch_id: str,
    labels: pd.DataFrame,
    as_of: pd.Timestamp | Sequence[pd.Timestamp],
    ablations: Sequence[str] | str,
    family: str = "lightgbm",
    params: dict[str, Any] | None = None,
    folds: int = 1,
) -> list[MethodResult]:
    """One result per ablation on the same labels, rows and user split as the published z_u."""
    frame = build_training_set(settings, labels, batch_id, "z_u", validate=False)
    has_z = frame[C.Z_U].notna().to_numpy()  # score exactly the rows z_u is scored on
    out = []
    row_t, ids = label_row_times(frame), frame[C.USER_ID].to_numpy(np.int64)
    for switches in parse_ablations(ablations):
        by_time, info = ablated_vectors(settings, batch_id, as_of, switches)
        found: list[np.ndarray | None] = [None] * len(frame)
        for t, (users, z) in by_time.items():
            lookup = dict(zip(users.tolist(), z, strict=True))
            for i in np.flatnonzero((row_t == t.value) & has_z):  # each row: z as of its own T
                found[i] = lookup.get(int(ids[i]))
        vectors = pd.Series(found, index=frame.index, dtype=object)
        design = make_design(settings, frame.assign(**{C.Z_U: vectors}), "z_u", seed=settings.seed)
        _, metrics = fit_evaluate(design, family, params, folds=folds, seed=settings.seed)
        out.append(
            MethodResult(
                f"z_u - {'+'.join(switches)}", design.n_user_features, metrics | info, ABLATION
            )
        )
    return out


def ablation_table(results: list[MethodResult], reference: MethodResult | None) -> str:
    """Markdown: each ablation's metrics and its decrement against the published z_u."""
    key = "auc" if reference is None or "auc" in reference.metrics else "accuracy"
    ref = reference.metrics.get(key) if reference is not None else None
    deltas = [
        "-" if ref is None else f"{ref - r.metrics.get(key, float('nan')):+.3f}" for r in results
    ]
    rows = results_rows(results, deltas)
    rows[0] = rows[0][:-1] + f"| {key} decrement |"
    rows[1] += "---|"
    title = "Input ablations (autoencoder retrained without the blocks; decrement = z_u - ablated)"
    return "\n".join([title, "", *rows])
