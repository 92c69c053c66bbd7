"""SASRec on a planted world: every user walks one of a few fixed cycles over the same items,
so only the order of a user's items tells the cycles apart. A sequence model must predict each
next item from more than the last one and tell the cycles apart in its user vectors; a bag of
items could do neither.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from baselines.sasrec import SasRec, SasRecConfig

N_ITEMS, N_CYCLES, N_USERS = 20, 3, 200
# the shipped architecture on a shorter window, trained to the end (no early stop)
SMALL = SasRecConfig(max_len=20, epochs=50, patience=50, batch_size=32, lr=3e-3)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Tiny matrices: one thread keeps the runs reproducible and off the shared cores."""


def _cycles() -> np.ndarray:
    """(cycles, items) successor tables: each cycle a random order of all the items."""
    rng = np.random.default_rng(100)
    succ = np.zeros((N_CYCLES, N_ITEMS), np.int64)
    for c in range(N_CYCLES):
        order = rng.permutation(N_ITEMS)
        succ[c, order] = np.roll(order, -1)
    return succ


def _world(seed: int, lengths: tuple[int, int] = (10, 20)):
    """(sequences, each user's cycle, successor tables): users start anywhere on their cycle."""
    rng, succ = np.random.default_rng(seed), _cycles()
    cycle = rng.integers(N_CYCLES, size=N_USERS)
    seqs = []
    for c in cycle:
        s = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(*lengths)) - 1):
            s.append(int(succ[c, s[-1]]))
        seqs.append(np.array(s))
    return seqs, cycle, succ


@pytest.mark.parametrize(
    "cfg",
    [SMALL, replace(SMALL, full_softmax_max=8, n_negatives=12)],
    ids=["full-softmax", "sampled-softmax"],
)
def test_next_item_and_user_vectors_follow_the_planted_cycle(cfg: SasRecConfig) -> None:
    seqs, _, succ = _world(seed=0)
    model = SasRec(cfg)
    model.fit(seqs, N_ITEMS, seed=0)
    # fresh users, 6 items long: the true successor of their last item ranks first. The last
    # item alone fits all three cycles, so a model that reads only it is right about 1 in 3.
    test_seqs, test_cycle, _ = _world(seed=1, lengths=(6, 7))
    scores = model.next_item_scores(test_seqs)  # (users, items)
    true = np.array([succ[c, s[-1]] for s, c in zip(test_seqs, test_cycle, strict=True)])
    assert (scores.argmax(axis=1) == true).mean() > 0.8  # chance: 1 / 20
    # the last state tells the cycles apart: a user's nearest user walks the same cycle
    z = model.embed(test_seqs)
    assert z.shape == (len(test_seqs), cfg.hidden_dim) and z.dtype == np.float32
    x = z / np.linalg.norm(z, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    assert (test_cycle[sims.argmax(axis=1)] == test_cycle).mean() > 0.9  # chance: about 1 / 3


def test_one_seed_gives_one_model_and_an_empty_history_embeds_to_zero() -> None:
    seqs, _, _ = _world(seed=0)
    cfg = replace(SMALL, epochs=3)
    a, b, c = SasRec(cfg), SasRec(cfg), SasRec(cfg)
    a.fit(seqs, N_ITEMS, seed=0)
    b.fit(seqs, N_ITEMS, seed=0)
    c.fit(seqs, N_ITEMS, seed=1)
    probe = [*seqs[:5], np.array([], np.int64)]
    np.testing.assert_array_equal(a.embed(probe), b.embed(probe))
    assert not np.allclose(a.embed(probe)[:5], c.embed(probe)[:5])
    assert not a.embed(probe)[-1].any()


def test_early_stopping_keeps_the_best_epochs_weights() -> None:
    """Patience 2 stops two epochs after the best validation score and restores that epoch's
    weights: the very model that training for exactly that many epochs ends with."""
    seqs, _, _ = _world(seed=0)
    stopped = SasRec(replace(SMALL, epochs=12, patience=2))
    stopped.fit(seqs, N_ITEMS, seed=0)
    assert stopped.epochs_run in (stopped.best_epoch + 2, 12)
    exact = SasRec(replace(SMALL, epochs=stopped.best_epoch, patience=50))
    exact.fit(seqs, N_ITEMS, seed=0)
    assert exact.best_epoch == stopped.best_epoch
    np.testing.assert_array_equal(stopped.embed(seqs[:20]), exact.embed(seqs[:20]))
