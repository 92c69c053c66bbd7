"""Small label sets (fast, planted): early stopping does not rest on a handful of validation
users, and a model that learned nothing says so through its AUC interval.
"""

from __future__ import annotations

import numpy as np
import pytest

from downstream.metrics import split_users
from downstream.tasks import ROUND_FOLDS, Design, fit_evaluate


def _planted(n_users: int, signal: float = 1.0, seed: int = 0) -> Design:
    """n_users x 10 candidates; a user likes the items on their side of 0 (signal 0: coins)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), 10)
    side = rng.normal(size=n_users)[users]  # (rows,) the user's taste
    item = rng.normal(size=len(users))  # (rows,) the item's position
    x = np.stack([side, item], axis=1).astype(np.float32)
    liked = (side > 0) == (item > 0)
    y = np.where(rng.random(len(users)) < signal, liked, rng.random(len(users)) < 0.5)
    return Design(x, y.astype(np.int64), users, split_users(users, seed=seed), ["u", "i"], 1, {})


def test_few_validation_users_choose_rounds_by_folds() -> None:
    design = _planted(60)
    val_users = len(np.unique(design.users[design.split == "val"]))
    assert val_users < 30  # the planted case: a handful of validation users
    _, plain = fit_evaluate(design, "lightgbm")
    assert plain["early_stopping"]["on"] == "validation users"
    _, folded = fit_evaluate(design, "lightgbm", min_val_users=30, intervals=200)
    stop = folded["early_stopping"]
    assert stop["on"] == f"{ROUND_FOLDS} user folds" and len(stop["fold_rounds"]) == ROUND_FOLDS
    assert stop["rounds"] == int(np.median(stop["fold_rounds"]))
    assert folded["val_users"] == val_users and folded["test_users"] == plain["test_users"]
    assert folded["learned"] and folded["auc"] > 0.8  # planted: the model still learns


def test_enough_validation_users_early_stop_on_them() -> None:
    design = _planted(800)
    _, metrics = fit_evaluate(design, "lightgbm", min_val_users=30)
    assert metrics["val_users"] >= 30 and metrics["early_stopping"]["on"] == "validation users"
    _, forced = fit_evaluate(design, "lightgbm", min_val_users=30, round_folds=3)
    assert forced["early_stopping"]["on"] == "3 user folds"


@pytest.mark.parametrize(("signal", "learned"), [(1.0, True), (0.0, False)])
def test_auc_interval_says_whether_the_model_learned(signal: float, learned: bool) -> None:
    _, metrics = fit_evaluate(_planted(400, signal), "lightgbm", min_val_users=30, intervals=300)
    lo, hi = metrics["auc_ci"]
    assert lo <= metrics["auc"] <= hi and metrics["learned"] is learned
    assert metrics["recall@10_ci"][0] <= metrics["recall@10"] <= metrics["recall@10_ci"][1]
    if not learned:
        assert lo <= 0.5  # coin-flip labels: the interval reaches chance
