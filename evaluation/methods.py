"""User-vector methods scored by the protocol: the baselines beside z_u, behind one interface.

Each method is fitted on the history part of a Split and then embeds any set of users from
their (possibly reduced, for cold start) history events. `make_method(name)` picks one by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeAlias

import numpy as np
import pandas as pd
import scipy.sparse as sp

from baselines.als import Als, log_confidence
from baselines.multvae import MultVae, MultVaeConfig
from baselines.sasrec import SasRec
from evaluation.protocol import Split, user_item_matrix
from representation.encoders import EncoderConfig, collaborative_vectors
from userrep import columns as C

log = logging.getLogger(__name__)

UserVectors: TypeAlias = np.ndarray | sp.csr_matrix  # (n_users, dim); tf-idf stays sparse


@dataclass
class Context:
    """What every method may read: the split, its seed and the shared item encoders."""

    split: Split
    collab: np.ndarray  # (n_items, 64) PPMI-SVD item vectors fitted on history (split.item_ids)
    collab_seconds: float  # time to fit them: charged to every method that uses them
    extras: dict[str, object] = field(default_factory=dict)  # e.g. content vectors for z_u

    @property
    def seed(self) -> int:
        return self.split.seed

    def matrix(
        self, user_ids: np.ndarray, events: pd.DataFrame, binary: bool = False
    ) -> sp.csr_matrix:
        return user_item_matrix(events, user_ids, self.split.item_ids, binary)


def make_context(split: Split) -> Context:
    """Fit the collaborative item encoder (the platform's PPMI-SVD) on history events only."""
    t0 = time.perf_counter()
    collab = collaborative_vectors(split.history, split.item_ids, EncoderConfig(seed=split.seed))
    return Context(split, collab, time.perf_counter() - t0)


class Method(Protocol):
    """fit on the history of all eligible users; embed users from the events given."""

    name: str
    shared_s: float  # fit time of shared work done before fit (charged to this method too)

    def fit(self, ctx: Context) -> None: ...

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors: ...


class TfIdf:
    """Raw multi-hot of history items, idf-weighted and L2-normalised (sparse)."""

    name, shared_s = "raw multi-hot (tf-idf)", 0.0

    def fit(self, ctx: Context) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer

        self.tfidf = TfidfTransformer().fit(ctx.split.hist > 0)

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        return sp.csr_matrix(self.tfidf.transform(ctx.matrix(user_ids, events, binary=True)))


class TruncatedSvd(TfIdf):
    """64 components of truncated SVD of the tf-idf multi-hot."""

    name = "truncated SVD (64)"

    def fit(self, ctx: Context) -> None:
        from sklearn.decomposition import TruncatedSVD

        super().fit(ctx)
        self.svd = TruncatedSVD(64, random_state=ctx.seed).fit(
            super().embed(ctx, ctx.split.user_ids, ctx.split.history)
        )

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        return self.svd.transform(super().embed(ctx, user_ids, events)).astype(np.float32)


class AlsMethod:
    """implicit ALS (64 factors) on log(1 + weight); users folded in by one least-squares step."""

    name, shared_s = "implicit ALS (64)", 0.0

    def fit(self, ctx: Context) -> None:
        self.model = Als()
        self.model.fit(log_confidence(ctx.matrix(ctx.split.user_ids, ctx.split.history)), ctx.seed)

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        return self.model.embed(log_confidence(ctx.matrix(user_ids, events)))


class PpmiMean:
    """The log(1 + weight)-weighted mean of the users' PPMI-SVD item vectors."""

    name, shared_s = "mean of PPMI-SVD item vectors", 0.0

    def fit(self, ctx: Context) -> None:
        self.shared_s = ctx.collab_seconds  # the platform's PPMI-SVD encoder, fitted once

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        m = ctx.matrix(user_ids, events)
        m.data = np.log1p(np.maximum(m.data, 0.0))
        total = np.asarray(m.sum(axis=1)).ravel()
        return ((m @ ctx.collab) / np.maximum(total, 1e-12)[:, None]).astype(np.float32)


class Popularity:
    """No user vector: the GBDT probe ranks by history popularity, the linear probe is 0.5."""

    name, shared_s = "popularity", 0.0

    def fit(self, ctx: Context) -> None:
        pass

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        return np.zeros((len(user_ids), 0), np.float32)


class RandomVectors:
    """64 gaussian coordinates per user: the floor every method has to clear."""

    name, shared_s = "random", 0.0

    def fit(self, ctx: Context) -> None:
        pass

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        seeds = np.asarray(user_ids, np.int64) * 1_000 + ctx.seed
        return np.stack([np.random.default_rng(s).standard_normal(64) for s in seeds]).astype(
            np.float32
        )


# Mult-VAE's cost grows with users x vocabulary: bounds that leave MovieLens 100K and Last.fm
# 2K as they were (1,541 and < 7,000 items, 800 and 1,500 updates) and keep larger data sets
# (Ta-Feng, Ciao) near Last.fm's cost
MULT_VAE_MAX_VOCAB = 8000  # the most popular history items (of those in >= 2 users' histories)
MULT_VAE_MAX_UPDATES = 1500  # epochs = min(100, what fits in this many batches)


class MultVaeMethod:
    """Mult-VAE (Liang et al. 2018) on the binary multi-hot of history items; at most
    MULT_VAE_MAX_VOCAB items and MULT_VAE_MAX_UPDATES updates."""

    name, shared_s = "Mult-VAE (Liang et al. 2018)", 0.0

    def fit(self, ctx: Context) -> None:
        hist = ctx.split.hist
        cfg = MultVaeConfig()
        steps = -(-hist.shape[0] // cfg.batch_size)
        self.model = MultVae(
            replace(cfg, epochs=max(1, min(cfg.epochs, MULT_VAE_MAX_UPDATES // steps)))
        )
        users = np.asarray((hist > 0).sum(axis=0)).ravel()
        top = np.argsort(-users, kind="stable")[:MULT_VAE_MAX_VOCAB]
        keep = np.zeros(hist.shape[1])
        keep[top] = 1.0
        self.model.fit(hist @ sp.diags(keep), ctx.seed)  # other columns read as never consumed

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        return self.model.embed(ctx.matrix(user_ids, events, binary=True))


class SasRecMethod:
    """SASRec (Kang and McAuley 2018) on each user's history items in time order; the user
    vector is the last position's state."""

    name, shared_s = "SASRec (Kang & McAuley 2018)", 0.0

    def fit(self, ctx: Context) -> None:
        self.model = SasRec()
        split = ctx.split
        self.model.fit(
            sequences(split, split.user_ids, split.history), len(split.item_ids), ctx.seed
        )

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        return self.model.embed(sequences(ctx.split, user_ids, events))


def sequences(split: Split, user_ids: np.ndarray, events: pd.DataFrame) -> list[np.ndarray]:
    """Per user of user_ids, the column positions (split.item_ids) of their events' items in
    time order (ties by event id); events of other users or unknown items are dropped.
    user_ids must be sorted (as Split.user_ids are)."""
    if np.any(np.diff(user_ids) <= 0):
        raise ValueError("user_ids must be sorted and distinct")
    ev = events[events[C.USER_ID].isin(user_ids) & events[C.ITEM_ID].isin(split.item_ids)]
    ev = ev.sort_values([C.USER_ID, C.TS, C.EVENT_ID], kind="stable")
    items = np.searchsorted(split.item_ids, ev[C.ITEM_ID].to_numpy())
    users = ev[C.USER_ID].to_numpy()
    lo, hi = np.searchsorted(users, user_ids, "left"), np.searchsorted(users, user_ids, "right")
    return [items[a:b] for a, b in zip(lo, hi, strict=True)]


def _zu(recipe: str) -> Method:
    from evaluation.zu import ZuMethod

    return ZuMethod(recipe)


BASELINES = ("tfidf", "svd", "als", "ppmi-mean", "mult-vae", "sasrec", "popularity", "random")
FACTORIES: dict[str, Callable[[], Method]] = {
    "tfidf": TfIdf,
    "svd": TruncatedSvd,
    "als": AlsMethod,
    "ppmi-mean": PpmiMean,
    "mult-vae": MultVaeMethod,
    "sasrec": SasRecMethod,
    "popularity": Popularity,
    "random": RandomVectors,
}


def method_factory(key: str) -> Callable[[], Method]:
    """What builds the method `key` (nothing is built); ValueError, listing the choices, for an
    unknown baseline or z_u recipe."""
    if key == "z_u" or key.startswith("z_u:"):
        from evaluation.zu import RECIPES

        recipe = key.partition(":")[2] or "platform"
        if recipe not in RECIPES:
            raise ValueError(f"unknown z_u recipe {recipe!r}: choose from {', '.join(RECIPES)}")
        return lambda: _zu(recipe)
    if key not in FACTORIES:
        raise ValueError(f"unknown method {key!r}: z_u, z_u:<recipe> or one of {BASELINES}")
    return FACTORIES[key]


def make_method(key: str) -> Method:
    """A method by key: one of BASELINES, "z_u" (the platform recipe) or "z_u:<recipe>"."""
    return method_factory(key)()
