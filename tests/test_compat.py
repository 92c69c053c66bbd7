"""Planted answers for the downstream user split and the batch-compatibility gate (fast: no
workspace pipeline, only arrays and a metadata DB).
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from downstream.metrics import split_users, user_folds


def test_split_seed_changes_the_users_and_keeps_the_proportions() -> None:
    users = np.arange(100_000)
    splits = {seed: split_users(users, test_frac=0.3, val_frac=0.1, seed=seed) for seed in range(3)}
    for seed, split in splits.items():
        np.testing.assert_array_equal(split, split_users(users, 0.3, 0.1, seed))  # deterministic
        share = {s: float((split == s).mean()) for s in ("train", "val", "test")}
        assert share == pytest.approx({"train": 0.6, "val": 0.1, "test": 0.3}, abs=0.01)
    # independent splits disagree on 1 - (0.6^2 + 0.1^2 + 0.3^2) = 54 % of users
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert float((splits[a] != splits[b]).mean()) == pytest.approx(0.54, abs=0.01)


def test_split_seed_moves_test_users_of_a_small_data_set() -> None:
    users = np.arange(1, 944)  # MovieLens 100K's ids, where seeds 0, 1, 2 once gave one split
    test = [set(users[split_users(users, seed=seed) == "test"]) for seed in (0, 1, 2)]
    assert len(test[0] ^ test[1]) > 300 and len(test[1] ^ test[2]) > 300
    assert all(230 < len(t) < 340 for t in test)


def test_user_folds_follow_the_seed() -> None:
    users = np.arange(20_000)
    a, b = user_folds(users, 5, seed=0), user_folds(users, 5, seed=1)
    np.testing.assert_array_equal(a, user_folds(users, 5, seed=0))
    assert np.bincount(a, minlength=5).min() > 3800 and float((a != b).mean()) > 0.75
    shuffled = np.random.default_rng(0).permutation(users)  # a user's fold is its own
    np.testing.assert_array_equal(user_folds(shuffled, 5, seed=1), b[shuffled])


def test_downstream_commands_document_their_split_seed() -> None:
    from userrep.cli import app

    train = CliRunner().invoke(app, ["downstream", "train", "--help"], terminal_width=200)
    assert train.exit_code == 0 and "--split-seed" in train.output
    compare = CliRunner().invoke(app, ["downstream", "compare", "--help"], terminal_width=200)
    assert compare.exit_code == 0 and "--seed" in compare.output
