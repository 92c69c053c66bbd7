"""Data-dependent settings chosen on the workspace's own data, not on constants.

`userrep train` (and the evaluation protocol's z_u, which trains the same way) fits a few
candidate settings and keeps the one whose z_u best recovers held-out users' items from their
neighbours: for each validation user (the users train_autoencoder holds out for early
stopping), the items of their k nearest training users in z_u (cosine) are ranked by how many
of those neighbours had them, and the score is the recall of the user's own items in the top
`top`. It needs no future data and no decoder, so it compares latent sizes and decoder weights
on equal terms. The choice and every candidate's score are recorded with the batch. Settings
the caller set explicitly are not chosen over, nor is anything when aligning to a parent batch
(its size is fixed); the Ray engine's data-parallel training trains the settings it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from representation.model import AutoencoderConfig

NEIGHBOURS = 20  # training users whose items vote for a validation user's
TOP = 50  # recall is read in the neighbours' top items
MAX_SELECTION_USERS = 20_000  # candidates beyond this many users train on a seeded sample


@dataclass(frozen=True)
class Candidate:
    """Overrides of the autoencoder / training defaults (empty: the defaults themselves)."""

    name: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


# The defaults, a wider z_u and a stronger item decoder: the two choices that move with the
# catalog's size against the number of users
CANDIDATES = (
    Candidate("default"),
    Candidate("latent 128", model={"latent_dim": 128}),
    Candidate("item decoder x4", train={"item_weight": 0.2}),
)


def neighbour_recall(
    z_val: np.ndarray,
    z_ref: np.ndarray,
    items_val: sp.csr_matrix,
    items_ref: sp.csr_matrix,
    k: int = NEIGHBOURS,
    top: int = TOP,
) -> float:
    """Mean recall@top of each validation user's items among the items of their k nearest
    reference users (cosine on z); users without items are left out."""
    a = z_val / np.maximum(np.linalg.norm(z_val, axis=1, keepdims=True), 1e-12)
    b = z_ref / np.maximum(np.linalg.norm(z_ref, axis=1, keepdims=True), 1e-12)
    k = min(k, len(b))
    ref = sp.csr_matrix(items_ref, dtype=np.float32)
    truth = sp.csr_matrix(items_val, dtype=np.float32)
    recalls = []
    for lo in range(0, len(a), 1024):  # (chunk, n_ref) similarities stay small
        sim = a[lo : lo + 1024] @ b.T  # (chunk, n_ref)
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (chunk, k)
        rows = np.repeat(np.arange(len(nn)), k)
        votes = sp.csr_matrix((np.ones(rows.size), (rows, nn.ravel())), (len(nn), len(b))) @ ref
        votes = votes.toarray()  # (chunk, vocab) neighbour counts per item
        t = min(top, votes.shape[1])
        best = np.argpartition(-votes, t - 1, axis=1)[:, :t]  # (chunk, top)
        own = truth[lo : lo + 1024].toarray() > 0  # (chunk, vocab)
        hits = np.take_along_axis(own, best, axis=1).sum(axis=1)
        n_own = own.sum(axis=1)
        keep = n_own > 0
        recalls.append(hits[keep] / np.minimum(n_own[keep], t))
    values = np.concatenate(recalls) if recalls else np.zeros(0)
    return float(values.mean()) if len(values) else float("nan")


@dataclass(frozen=True)
class Selection:
    """What was chosen and why: recorded in the batch's metrics."""

    chosen: Candidate
    scores: dict[str, float]  # candidate name -> neighbour recall on the validation users
    n_users: int  # users the candidates trained on
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.name,
            "criterion": f"validation users' items among their {NEIGHBOURS} nearest training "
            f"users' top {TOP} (recall)",
            "scores": self.scores,
            "n_users": self.n_users,
            "seconds": round(self.seconds, 2),
        }


def apply(
    candidate: Candidate, config: AutoencoderConfig, train_config: Any
) -> tuple[AutoencoderConfig, Any]:
    """The configs a candidate trains with."""
    return replace(config, **candidate.model), replace(train_config, **candidate.train)


def open_to(
    candidates: Sequence[Candidate], config: AutoencoderConfig, train_config: Any
) -> list[Candidate]:
    """The candidates that change only settings the caller left at their defaults: an explicit
    `--latent-dim 32` is kept, not chosen over."""
    defaults = (AutoencoderConfig(input_dim=config.input_dim), type(train_config)())
    given = (config, train_config)

    def untouched(overrides: dict[str, Any], which: int) -> bool:
        return all(getattr(given[which], k) == getattr(defaults[which], k) for k in overrides)

    return [c for c in candidates if untouched(c.model, 0) and untouched(c.train, 1)]


def sample_rows(n: int, seed: int, limit: int = MAX_SELECTION_USERS) -> np.ndarray:
    """All rows, or a seeded sorted sample of `limit` of them."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 17]).choice(n, limit, replace=False))


def best_of(
    candidates: Sequence[Candidate], score: Callable[[Candidate], float]
) -> tuple[Candidate, dict[str, float]]:
    """The candidate with the highest score (the first on ties: the defaults come first)."""
    scores = {c.name: round(score(c), 5) for c in candidates}
    best = max(candidates, key=lambda c: (scores[c.name], -candidates.index(c)))
    return best, scores
