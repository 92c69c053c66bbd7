"""Downstream tasks end to end: labels -> Feast training set -> GBDT on a user split -> metrics
-> model registered pinned to its batch; and online scoring with that same batch's z_u.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from downstream import labels as L
from downstream.matrix import feature_set_matrix, item_matrix
from downstream.metrics import (
    N_RESAMPLES,
    binary_metrics,
    multiclass_metrics,
    paired_bootstrap,
    split_users,
    user_folds,
)
from downstream.models import LightGBMModel, XGBoostModel, make_model
from downstream.registry import load_registered, register_model
from downstream.training_set import build_training_set, require_valid_batch, trainable_batch
from representation import batches
from representation.serving import get_user_embeddings
from userrep import columns as C
from userrep.db import session_scope
from userrep.feast_store import feature_store
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
    times: np.ndarray | None = None  # (rows,) label time as int64 ns; None: one time for all

    def queries(self) -> np.ndarray:
        """(rows,) ranking query id: the user, or the (user, label time) pair with several times."""
        if self.times is None or len(np.unique(self.times)) < 2:
            return self.users
        return pd.MultiIndex.from_arrays([self.users, self.times]).factorize()[0]


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


def label_row_times(frame: pd.DataFrame) -> np.ndarray:
    """(rows,) int64 ns of each row's label time (event_timestamp)."""
    return frame[C.EVENT_TIMESTAMP].to_numpy("datetime64[ns]").astype(np.int64)


def task_labels(
    settings: Settings,
    task: str,
    as_of: pd.Timestamp | Sequence[pd.Timestamp],
    window_days: int = 7,
    seed: int = 0,
    exclude_seen: bool = False,
) -> pd.DataFrame:
    """The built-in label set of a task as of T (or stacked over several label times)."""
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
    dims: dict[str, dict[str, int]] | None = None,
) -> Design:
    """Matrices of a training-set frame; item tasks get the item vector block appended.
    dims (a model spec's): the vector widths to lay out, so a frame whose vectors are all null
    at its label time still gives the model's columns."""
    dims = dims or {}
    xu, names, udims = feature_set_matrix(settings, frame, feature_set, dims.get("user"))
    x, idims = xu, dict[str, int]()
    if C.ITEM_ID in frame.columns:
        xi, inames, idims = item_matrix(frame, dims.get("item"))
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
        label_row_times(frame),
    )


def _rows_with_user(design: Design) -> np.ndarray:
    has_user = ~np.isnan(design.x[:, : design.n_user_features]).all(axis=1)
    if design.n_user_features and (~has_user).any():
        log.info(
            "%d rows have no user features at their time: left out of fit and test",
            int((~has_user).sum()),
        )
    return has_user


def _scores(design: Design, test: np.ndarray, proba: np.ndarray, k: int) -> dict[str, Any]:
    if design.classes:
        return multiclass_metrics(design.y[test], proba)
    return binary_metrics(design.queries()[test], design.y[test], proba, k)


# Fewest validation users early stopping may rely on (train_task): on 3 users the validation
# loss turns after one tree and a one-tree model is registered; below this the rounds are
# chosen by ROUND_FOLDS user folds over the train + validation users instead.
MIN_VAL_USERS = 30
ROUND_FOLDS = 5
FOLD_SEED_OFFSET = 0x5F0D  # folds hashed with another seed than the split's: independent cuts


def n_rounds(model: XGBoostModel | LightGBMModel) -> int:
    """Boosting rounds the fitted model kept (after early stopping)."""
    if isinstance(model, LightGBMModel):
        return int(model.booster.current_iteration())
    return int(model.booster.num_boosted_rounds())


def _fit_by_folds(
    design: Design,
    pool: np.ndarray,
    family: str,
    params: dict[str, Any] | None,
    folds: int,
    seed: int,
) -> tuple[XGBoostModel | LightGBMModel, dict[str, Any]]:
    """Rounds chosen by user folds over the pool (train + validation rows): each fold
    early-stops on its held-out users; the median round count is refitted on the whole pool."""
    fold = user_folds(design.users, folds, seed + FOLD_SEED_OFFSET)  # (rows,)
    rounds = []
    for f in range(folds):
        val, train = pool & (fold == f), pool & (fold != f)
        if not val.any() or not train.any():
            continue
        m = make_model(family, **(params or {})).fit(
            design.x[train], design.y[train], design.x[val], design.y[val]
        )
        rounds.append(n_rounds(m))
    chosen = int(np.median(rounds)) if rounds else None
    fixed = (params or {}) | ({"n_estimators": max(chosen, 1)} if chosen else {})
    model = make_model(family, **fixed).fit(design.x[pool], design.y[pool])
    return model, {"on": f"{folds} user folds", "fold_rounds": rounds, "rounds": n_rounds(model)}


def fit_evaluate(
    design: Design,
    family: str,
    params: dict[str, Any] | None = None,
    k: int = 10,
    folds: int = 1,
    seed: int = 0,
    min_val_users: int = 0,
    round_folds: int = 0,
    intervals: int = 0,
) -> tuple[XGBoostModel | LightGBMModel, dict[str, Any]]:
    """Fit on train users (early stopping on val users), score test users.

    With fewer than min_val_users validation users, or with round_folds > 1, the boosting
    rounds are chosen by round_folds (default ROUND_FOLDS) user folds over the train +
    validation users and the model is refitted on all of them; test users stay held out.
    intervals > 0: that many bootstrap resamples of the test users give `auc_ci` (and
    `recall@k_ci` for item tasks), two-sided 95 %, and `learned` (the AUC interval lies above
    0.5). seed is the split's (folds use another, derived one).

    folds > 1 cross-fits instead: users are cut into `folds` groups by hash; each group is
    scored by a model fitted on the others (the next group for early stopping), so every
    labelled user is a test user once; metrics are over the pooled out-of-fold scores.
    """
    if folds > 1:
        return _cross_fit(design, family, params, k, folds, seed)
    has_user = _rows_with_user(design)
    part = {s: (design.split == s) & has_user for s in ("train", "val", "test")}
    if not part["train"].any() or not part["test"].any():
        raise ValueError(
            f"no train or test rows with user features ({int(has_user.sum())} of "
            f"{len(has_user)} rows have them): is the label time before the batch's snapshot?"
        )
    counts = {f"{s}_users": int(len(np.unique(design.users[m]))) for s, m in part.items()}
    if round_folds > 1 or counts["val_users"] < min_val_users:
        pool = part["train"] | part["val"]
        n_folds = round_folds if round_folds > 1 else ROUND_FOLDS
        model, stopping = _fit_by_folds(design, pool, family, params, n_folds, seed)
    else:
        model = make_model(family, **(params or {})).fit(
            design.x[part["train"]],
            design.y[part["train"]],
            design.x[part["val"]],
            design.y[part["val"]],
        )
        stopping = {"on": "validation users", "rounds": n_rounds(model)}
    test = part["test"]
    proba = model.predict_proba(design.x[test])
    metrics = _scores(design, test, proba, k)
    if intervals > 0:
        metrics |= _intervals(design, test, proba, k, intervals, seed)
    return model, metrics | counts | {
        "early_stopping": stopping,
        "rows_without_user_features": int((~has_user).sum()),
        "n_user_features": design.n_user_features,
    }


def _intervals(
    design: Design, test: np.ndarray, proba: np.ndarray, k: int, n_resamples: int, seed: int
) -> dict[str, Any]:
    """Bootstrap intervals over test users of the test metrics, and whether AUC beats 0.5."""
    queries = None if design.classes else design.queries()[test]
    boot = paired_bootstrap(
        design.y[test], {"m": proba}, design.users[test], queries, k, n_resamples, seed
    )
    auc_key = "macro_auc" if design.classes else "auc"  # the name _scores gives the AUC
    out: dict[str, Any] = {
        f"{auc_key if m == 'auc' else m}_ci": list(boot.interval("m", m)) for m in boot.point["m"]
    }
    out["learned"] = bool(out[f"{auc_key}_ci"][0] > 0.5)  # NaN (one class in test) is not
    out["bootstrap_resamples"] = n_resamples
    return out


def _as_columns(p: np.ndarray, width: int) -> np.ndarray:
    """Scores as (rows, width): a fold that saw fewer classes (the last ones absent) gets
    zero columns for them; a binary model's P(1) becomes [P(0), P(1)] for two classes."""
    p = p.reshape(len(p), -1)  # (rows, classes seen) or (rows, 1)
    if width > 1 and p.shape[1] == 1:
        p = np.column_stack([1 - p[:, 0], p[:, 0]])
    out = np.zeros((len(p), width))
    out[:, : p.shape[1]] = p
    return out


def _cross_fit(
    design: Design, family: str, params: dict[str, Any] | None, k: int, folds: int, seed: int
) -> tuple[XGBoostModel | LightGBMModel, dict[str, Any]]:
    has_user = _rows_with_user(design)
    fold = user_folds(design.users, folds, seed)  # (rows,) 0..folds-1
    width = max(len(design.classes), 1)
    proba = np.full((len(design.y), width), np.nan)  # (rows, classes or 1) out-of-fold
    model = None
    for f in range(folds):
        test, val = (fold == f) & has_user, (fold == (f + 1) % folds) & has_user
        train = has_user & ~test & ~val
        if not test.any() or not train.any():
            continue
        model = make_model(family, **(params or {})).fit(
            design.x[train], design.y[train], design.x[val], design.y[val]
        )
        proba[test] = _as_columns(model.predict_proba(design.x[test]), width)
    scored = ~np.isnan(proba).any(axis=1)
    if model is None or not scored.any():
        raise ValueError(f"cross-fitting: no fold has both train and test rows ({folds} folds)")
    out = proba[scored] if design.classes else proba[scored, 0]
    metrics = _scores(design, scored, out, k)
    return model, metrics | {
        "test_users": int(len(np.unique(design.users[scored]))),
        "folds": folds,
        "rows_without_user_features": int((~has_user).sum()),
        "n_user_features": design.n_user_features,
    }


def _spec(
    task: str,
    feature_set: str,
    as_of: pd.Timestamp,
    window_days: int,
    design: Design,
    split_seed: int,
) -> dict[str, Any]:
    """What scoring needs to rebuild the feature vector, saved beside the model; split_seed
    names its test users, so a later check (compat) scores only users it never fitted."""
    return {
        "task": task,
        "feature_set": feature_set,
        "as_of": as_of.isoformat(),
        "window_days": window_days,
        "split_seed": split_seed,
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
    split_seed: int | None = None,
    min_val_users: int = MIN_VAL_USERS,
    round_folds: int = 0,
) -> TaskResult:
    """Train one task model; z_u models are registered pinned to their batch.

    as_of defaults to the batch's snapshot time: features as of T, labels in (T, T + window].
    split_seed picks the train / validation / test users (default settings.seed); it is saved
    in the model's spec. Early stopping needs min_val_users validation users; with fewer (or
    with round_folds > 1) the rounds are chosen by user folds (fit_evaluate). The test metrics
    carry bootstrap intervals; `learned` is False, and a warning logged, when the AUC interval
    reaches 0.5. Curated / raw models are evaluated but not registered.
    """

    pinned = trainable_batch(settings, batch_id) if feature_set == "z_u" else None
    if as_of is None:
        if pinned is None:
            raise ValueError(f"feature set {feature_set!r} needs an explicit as_of")
        as_of = batch_as_of(settings, pinned)
    labels = task_labels(settings, task, as_of, window_days, settings.seed, exclude_seen)
    validation = require_valid_batch(settings, pinned) if pinned is not None else None
    frame = build_training_set(settings, labels, pinned, feature_set, validate=False)
    split_seed = settings.seed if split_seed is None else split_seed
    design = make_design(settings, frame, feature_set, seed=split_seed)
    model, metrics = fit_evaluate(
        design,
        family,
        params,
        seed=split_seed,
        min_val_users=min_val_users,
        round_folds=round_folds,
        intervals=N_RESAMPLES,
    )
    metrics["split_seed"] = split_seed
    if validation is not None:
        metrics["batch_validation"] = asdict(validation)
    if not metrics["learned"]:
        log.warning(
            "%s / %s: test AUC %.3f, 95 %% interval %s reaches 0.5 on %d test users: the model "
            "learned nothing usable from these labels",
            task,
            family,
            metrics.get("auc", metrics.get("macro_auc", float("nan"))),
            [round(v, 3) for v in metrics.get("auc_ci", metrics.get("macro_auc_ci", []))],
            metrics["test_users"],
        )
    log.info("%s / %s / %s: %s", task, family, feature_set, metrics)
    metrics["nulls"] = frame.attrs["nulls"]
    model_id = None
    if pinned is not None:
        spec = _spec(task, feature_set, as_of, window_days, design, split_seed)
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
