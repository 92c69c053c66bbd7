"""Choosing settings on the validation users: the neighbour-recall criterion on planted users,
and the choice recorded with the trained model."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from representation import selection


def _planted(n_users: int = 400, groups: int = 4, seed: int = 0):
    """Each user belongs to a group and has 5 of its group's 10 items."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n_users)
    rows, cols = [], []
    for u, k in enumerate(g):
        for i in rng.choice(10, 5, replace=False):
            rows.append(u)
            cols.append(10 * k + i)
    items = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, 10 * groups))
    return g, items


def test_neighbour_recall_rewards_vectors_that_carry_the_group() -> None:
    g, items = _planted()
    rng = np.random.default_rng(1)
    informative = np.eye(4)[g] + 0.1 * rng.normal(size=(len(g), 4))  # (users, 4)
    noise = rng.normal(size=(len(g), 4))
    val, ref = np.arange(300, 400), np.arange(300)
    good = selection.neighbour_recall(informative[val], informative[ref], items[val], items[ref])
    bad = selection.neighbour_recall(noise[val], noise[ref], items[val], items[ref], top=10)
    good10 = selection.neighbour_recall(
        informative[val], informative[ref], items[val], items[ref], top=10
    )
    assert good == 1.0  # the group's 10 items hold all 5 of the user's
    assert good10 > 0.95 and bad < 0.5  # chance: 10 of 40 items


def test_best_of_prefers_the_first_candidate_on_ties() -> None:
    a, b = selection.Candidate("a"), selection.Candidate("b")
    assert selection.best_of([a, b], lambda c: 0.5)[0] is a
    best, scores = selection.best_of([a, b], lambda c: {"a": 0.4, "b": 0.6}[c.name])
    assert best is b and scores == {"a": 0.4, "b": 0.6}


def test_the_choice_and_its_scores_are_recorded_with_the_model() -> None:
    import dataclasses

    from representation.model import AutoencoderConfig, InputBlock
    from representation.train import TrainConfig, train_autoencoder

    g, items = _planted(n_users=300)
    rng = np.random.default_rng(2)
    x = (np.eye(4)[g] @ rng.normal(size=(4, 12)) + 0.3 * rng.normal(size=(300, 12))).astype(
        np.float32
    )  # (users, 12): the group, seen through noise
    blocks = [InputBlock("a", 0, 6, "7d"), InputBlock("b", 6, 12, "all")]
    cfg = dataclasses.replace(TrainConfig.tiny(), epochs=5, select=True)
    result = train_autoencoder(x, blocks, AutoencoderConfig(input_dim=12), cfg, items=items)
    chosen = result.metrics["selection"]
    assert set(chosen["scores"]) == {c.name for c in selection.CANDIDATES}
    assert chosen["chosen"] == max(chosen["scores"], key=chosen["scores"].get)
    assert result.train_config.select is True
    expected = next(c for c in selection.CANDIDATES if c.name == chosen["chosen"])
    assert result.config.latent_dim == expected.model.get("latent_dim", 64)


def test_settings_the_caller_chose_are_not_chosen_over() -> None:
    from representation.model import AutoencoderConfig
    from representation.train import TrainConfig

    names = lambda cs: [c.name for c in cs]  # noqa: E731
    everything = selection.open_to(selection.CANDIDATES, AutoencoderConfig(12), TrainConfig())
    assert names(everything) == names(selection.CANDIDATES)
    sized = selection.open_to(
        selection.CANDIDATES, AutoencoderConfig(12, latent_dim=8), TrainConfig()
    )
    assert "latent 128" not in names(sized) and "default" in names(sized)
    weighted = selection.open_to(
        selection.CANDIDATES, AutoencoderConfig(12), TrainConfig(item_weight=0.5)
    )
    assert "item decoder x4" not in names(weighted)
