"""z_u under the protocol: the platform's encoders, input features and autoencoder fitted on
history events only, then used to embed warm and cold-start users; recipes and ablations.

A recipe names the autoencoder / training settings (and, for prototypes, an input or target
that the platform does not have yet); "platform" is exactly what `userrep train` does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.inputs import ablate, input_matrix
from evaluation.methods import Context, UserVectors
from representation.artifact import UserEncoder
from representation.encoders import EncoderConfig, ItemVectors, TextEmbedder, build_item_vectors
from representation.inputs import InputLayout
from representation.model import AutoencoderConfig, InputBlock
from representation.targets import (
    ItemTargets,
    item_targets_from_pairs,
    tag_counts_from_pairs,
    tag_targets_from_counts,
    targets_for_vocabulary,
)
from representation.train import TrainConfig, train_autoencoder
from userrep import columns as C
from userrep.columns import DEFAULT_HORIZONS

log = logging.getLogger(__name__)
TEXT_CACHE = "text_cache"  # Context.extras key: path of the MiniLM text cache
ITEM_VECTORS = "item_vectors"  # Context.extras key: (ItemVectors, seconds to build them)


@dataclass(frozen=True)
class Recipe:
    """How z_u is built: autoencoder / training overrides and ablated input blocks."""

    name: str
    model: dict = field(default_factory=dict)  # AutoencoderConfig overrides
    train: dict = field(default_factory=dict)  # TrainConfig overrides
    drop: tuple[str, ...] = ()  # ablated input blocks (see inputs.ABLATION_SWITCHES)
    identity: int = 0  # prototype input: multi-hot of the K most popular history items (0 = off)
    future: float = 0.0  # prototype target: train on each user's earliest (1 - future) share of
    # history events and decode the items of the rest (0 = off: reconstruct the whole history)
    target: str = "late"  # with future: "late" decodes the held-out items only; "both" adds a
    # second item head on the same z for the whole history
    cut: str = "time"  # with future: hold out each user's latest events, or "random" ones
    spectrum: float | None = None  # diagnostic: serve z_u in a reshaped basis (Spectrum)

    def __post_init__(self) -> None:
        if not 0 <= self.future < 1:
            raise ValueError(f"recipe {self.name}: future={self.future} must lie in [0, 1)")
        if self.target not in ("late", "both") or self.cut not in ("time", "random"):
            raise ValueError(
                f"recipe {self.name}: target must be late|both, cut time|random "
                f"(got {self.target!r}, {self.cut!r})"
            )

    def without(self, switches: tuple[str, ...]) -> Recipe:
        return replace(self, name=f"{self.name} - {'+'.join(switches)}", drop=self.drop + switches)


# "platform" is exactly what `userrep train` does; "no-items" drops the item decoder target
# (representation/targets.py), the platform before it: kept to measure what the target buys
RECIPES = {
    "platform": Recipe("platform"),
    "no-items": Recipe("no-items", train={"item_weight": 0.0}),
    # the platform before the tag decoder (representation/targets.py): kept to measure it
    "no-tags": Recipe("no-tags", train={"tag_weight": 0.0}),
    # the exact item softmax the sampled one stands in for: kept to measure what sampling costs
    "exact-items": Recipe("exact-items", train={"item_sample": 0}),
    # a wider z_u than the platform's 64: kept to measure what the 64-d bottleneck costs the
    # linear probe, where full-vocabulary tf-idf leads (docs/quality.md)
    "latent-128": Recipe("latent-128", model={"latent_dim": 128}),
    "latent-256": Recipe("latent-256", model={"latent_dim": 256}),
    # prototype: exact item identity at the input (a 0/1 column per item, the 256 most users
    # had), which the per-horizon averages of item vectors lose; kept to measure that it does
    # not close the linear-probe gap to tf-idf (docs/quality.md: 0.679 vs 0.676 on MovieLens,
    # 0.802 vs 0.806 on Last.fm; 1,024 items 0.659 / 0.786)
    "identity-256": Recipe("identity-256", identity=256),
    # prototype targets (docs/quality.md, "Predicting the next period"): train on each user's
    # earliest 80 % of history events and decode the items of the latest 20 % ("what comes
    # next") instead of the whole history. With identity-256's input it clears every MovieLens
    # column (linear 0.688 / 0.705 with C by CV, GBDT 0.726) and loses every Last.fm column
    # by 0.01 to 0.02 (its within-history order is mostly synthetic); "both" keeps the history
    # head beside it and is level with the platform on both data sets
    "future-20": Recipe("future-20", future=0.2),
    "identity-future": Recipe("identity-future", identity=256, future=0.2),
    "identity-future-both-rand": Recipe(
        "identity-future-both-rand", identity=256, future=0.2, target="both", cut="random"
    ),
    # the two-head target without the identity input (docs/quality.md, session 8: within noise
    # of the platform on MovieLens, so the platform's inputs alone do not need it)
    "future-both-time": Recipe("future-both-time", future=0.2, target="both"),
    "future-both-rand": Recipe("future-both-rand", future=0.2, target="both", cut="random"),
    # diagnostics of the fixed-C linear probe (docs/quality.md, "Reshaping z_u's spectrum"): the
    # platform's z_u served rotated (same geometry) or with a steeper spectrum; the steeper one
    # lifts linear AUC at C = 1 on Last.fm and costs genre macro-F1 and friends AUC
    "rotated": Recipe("rotated", spectrum=1.0),
    "spectrum-2": Recipe("spectrum-2", spectrum=2.0),
}


def item_vectors(ctx: Context) -> tuple[ItemVectors, float]:
    """Both modality encoders fitted on history events, built once per split (and timed)."""
    if ITEM_VECTORS not in ctx.extras:
        split, t0 = ctx.split, time.perf_counter()
        cache = Path(str(ctx.extras.get(TEXT_CACHE, "text_cache.parquet")))
        vecs = build_item_vectors(
            split.history,
            split.data.items,
            split.data.users,
            EncoderConfig(seed=ctx.seed),
            TextEmbedder(cache),
            "eval",
        )
        ctx.extras[ITEM_VECTORS] = (vecs, time.perf_counter() - t0)
    return ctx.extras[ITEM_VECTORS]  # type: ignore[return-value]


class ZuMethod:
    """z_u as a Method (see methods.py): fit = encoders + features + autoencoder on history."""

    shared_s = 0.0

    def __init__(self, recipe: str | Recipe = "platform"):
        self.recipe = recipe if isinstance(recipe, Recipe) else RECIPES[recipe]
        self.name = "z_u" if self.recipe.name == "platform" else f"z_u [{self.recipe.name}]"
        self.timings: dict[str, float] = {}
        self.encoder: UserEncoder | None = None

    def fit(self, ctx: Context) -> None:
        split = ctx.split
        cached = ITEM_VECTORS in ctx.extras
        self.vecs, self.timings["encoders_s"] = item_vectors(ctx)
        self.shared_s = self.timings["encoders_s"] if cached else 0.0  # built by an earlier run
        self.layout = InputLayout(
            tuple(h.name for h in DEFAULT_HORIZONS),
            self.vecs.collab.shape[1],
            self.vecs.content.shape[1],
        )
        self.cols, blocks = ablate(self.layout.blocks(), self.recipe.drop)
        if self.recipe.identity:  # the K items most users had, masked with the "all" horizon
            self.vocab = _history_items(
                split.user_ids, split.history, self.recipe.identity
            ).item_ids
            start = blocks[-1].stop
            blocks = [
                *blocks,
                InputBlock("identity_all", start, start + len(self.vocab), "all"),
            ]
        r, events, late = self.recipe, split.history, None
        if r.future:  # prototype: inputs from the early part, targets from the late part
            seed = ctx.seed if r.cut == "random" else None
            events, late = _early_late(split.history, r.future, seed)
        x = self.inputs(ctx, split.user_ids, events)  # (users, input_dim)
        t1 = time.perf_counter()
        cfg = AutoencoderConfig(input_dim=x.shape[1], **r.model)
        tcfg = TrainConfig(**({"seed": ctx.seed} | r.train))
        items, next_items = self.item_targets(split, tcfg, late)
        tags = _tag_shares(split, tcfg)
        result = train_autoencoder(
            x, blocks, cfg, tcfg, items=items, next_items=next_items, tags=tags
        )
        self.encoder = UserEncoder.from_result(result)
        self.basis = None
        if r.spectrum is not None:  # fitted on the users' history vectors, as training was
            z = self.encoder.embed(self.inputs(ctx, split.user_ids, split.history))
            self.basis = Spectrum.fit(z, r.spectrum, ctx.seed)
        self.timings["train_s"] = time.perf_counter() - t1
        log.info(
            "%s: input %d columns, trained in %.1fs", self.name, x.shape[1], self.timings["train_s"]
        )

    def item_targets(self, split, tcfg: TrainConfig, late: pd.DataFrame | None = None):
        """(item decoder targets, second head's targets or None), as `userrep train` builds
        them from history events; with the next-period prototype's late events, the late
        items (and with target="both" the whole history for the first head)."""
        if late is None and tcfg.item_weight <= 0:
            return None, None
        history = _history_items(split.user_ids, split.history, tcfg.item_vocab)
        if late is None:
            return history.matrix, None
        late_items = _history_items(split.user_ids, late, history.item_ids).matrix
        if self.recipe.target == "both":
            return history.matrix, late_items
        return late_items, None

    def inputs(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> np.ndarray:
        """The (ablated) input rows of user_ids from their events, as of each last event."""
        x = input_matrix(events, ctx.split.data.users, self.vecs, self.layout, user_ids)
        x = x[:, self.cols]
        if not self.recipe.identity:
            return x
        hot = _history_items(user_ids, events, self.vocab).matrix.toarray()  # (users, K) 0/1
        return np.hstack([x, hot.astype(np.float32)])

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        x = self.inputs(ctx, user_ids, events)
        if self.encoder is None:
            raise RuntimeError("fit() before embed()")
        z = self.encoder.embed(x)
        return z if self.basis is None else self.basis(z)


@dataclass(frozen=True)
class Spectrum:
    """An invertible linear map of z_u that changes how a standardised, L2-penalised probe sees
    it (docs/quality.md, "Reshaping z_u's spectrum"): centre, rotate onto the principal axes,
    raise each axis' standard deviation s to s ** power, then a seeded random rotation, which
    spreads every axis over all columns so per-column standardisation keeps the new spectrum.
    power 1 keeps z_u's geometry (a rotation); above 1 the leading axes dominate, which a fixed
    penalty then treats as a stronger prior on the trailing ones. Nothing is lost: it inverts."""

    mean: np.ndarray  # (latent,)
    matrix: np.ndarray  # (latent, latent)

    @classmethod
    def fit(cls, z: np.ndarray, power: float, seed: int) -> Spectrum:
        z = np.asarray(z, np.float64)
        mean = z.mean(axis=0)
        _, s, vt = np.linalg.svd(z - mean, full_matrices=False)  # s: (latent,)
        sd = np.maximum(s / np.sqrt(len(z)), 1e-12)
        rot, _ = np.linalg.qr(np.random.default_rng([seed, 31]).normal(size=(len(s), len(s))))
        return cls(mean, vt.T @ np.diag(sd ** (power - 1.0)) @ rot)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return ((np.asarray(z, np.float64) - self.mean) @ self.matrix).astype(np.float32)


def _tag_shares(split, tcfg: TrainConfig):
    """The tag decoder's targets from history events, as `userrep train` builds them (None when
    the tag term is off or the catalog has no genres / tags)."""
    if tcfg.tag_weight <= 0 or tcfg.tag_vocab <= 0 or C.GENRES not in split.data.items:
        return None
    counts = tag_counts_from_pairs(*_distinct_pairs(split.history), split.data.items)
    tags = tag_targets_from_counts(split.user_ids, counts, tcfg.tag_vocab)
    return tags.matrix if tags.vocab else None


def _history_items(
    user_ids: np.ndarray, events: pd.DataFrame, vocab: int | np.ndarray
) -> ItemTargets:
    """Which items each of user_ids had in events, over the `vocab` items most users had (an
    int, as the item decoder's targets are built) or over a given vocabulary of item ids."""
    pu, pi = _distinct_pairs(events)
    if isinstance(vocab, int):
        return item_targets_from_pairs(user_ids, pu, pi, vocab)
    return targets_for_vocabulary(user_ids, pu, pi, vocab)


def _distinct_pairs(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the distinct (user, item) pairs in events."""
    pairs = events[[C.USER_ID, C.ITEM_ID]].drop_duplicates()
    return pairs[C.USER_ID].to_numpy(np.int64), pairs[C.ITEM_ID].to_numpy(np.int64)


def _early_late(
    events: pd.DataFrame, late: float, seed: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(early, late) events: each user's latest `late` share of events is late, at least one
    event stays early; with a seed, a random share instead of the latest."""
    if seed is None:
        ev = events.sort_values([C.USER_ID, C.TS], kind="stable")
    else:
        ev = events.assign(_r=np.random.default_rng(seed).random(len(events)))
        ev = ev.sort_values([C.USER_ID, "_r"], kind="stable").drop(columns="_r")
    n = ev.groupby(C.USER_ID)[C.TS].transform("size").to_numpy()
    rank = ev.groupby(C.USER_ID).cumcount().to_numpy()
    is_early = rank < np.maximum(np.ceil(n * (1 - late)), 1)
    return ev[is_early], ev[~is_early]
