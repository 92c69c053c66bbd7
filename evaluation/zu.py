"""z_u under the protocol: the platform's encoders, input features and autoencoder fitted on
history events only, then used to embed warm and cold-start users; recipes and ablations.

A recipe names autoencoder / training overrides of the shipped model, or ablated input blocks;
"platform" is exactly what `userrep train` does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.inputs import input_matrix
from evaluation.methods import Context, UserVectors
from representation.artifact import UserEncoder
from representation.encoders import EncoderConfig, ItemVectors, TextEmbedder, build_item_vectors
from representation.inputs import InputLayout
from representation.model import AutoencoderConfig, ablate
from representation.targets import (
    ItemTargets,
    item_targets_from_pairs,
    tag_counts_from_pairs,
    tag_targets_from_counts,
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
    drop: tuple[str, ...] = ()  # ablated input blocks (see model.ABLATION_SWITCHES)

    def without(self, switches: tuple[str, ...]) -> Recipe:
        return replace(self, name=f"{self.name} - {'+'.join(switches)}", drop=self.drop + switches)


# each recipe but "platform" turns one part of the shipped model off or resizes it, to measure
# what that part buys (docs/quality.md)
RECIPES = {
    "platform": Recipe("platform"),
    "no-items": Recipe("no-items", train={"item_weight": 0.0}),
    "no-tags": Recipe("no-tags", train={"tag_weight": 0.0}),
    "exact-items": Recipe("exact-items", train={"item_sample": 0}),
    "latent-128": Recipe("latent-128", model={"latent_dim": 128}),
    "no-select": Recipe("no-select", train={"select": False}),  # the defaults, not chosen
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
        x = self.inputs(ctx, split.user_ids, split.history)  # (users, input_dim)
        t1 = time.perf_counter()
        cfg = AutoencoderConfig(input_dim=x.shape[1], **self.recipe.model)
        # a recipe that fixes the model's size measures that size: no selection over sizes
        defaults = {"seed": ctx.seed, "select": not self.recipe.model}
        tcfg = TrainConfig(**(defaults | self.recipe.train))
        items = self.item_targets(split, tcfg)
        tags = _tag_shares(split, tcfg)
        result = train_autoencoder(x, blocks, cfg, tcfg, items=items, tags=tags)
        self.encoder = UserEncoder.from_result(result)
        self.timings["train_s"] = time.perf_counter() - t1
        log.info(
            "%s: input %d columns, trained in %.1fs", self.name, x.shape[1], self.timings["train_s"]
        )

    def item_targets(self, split, tcfg: TrainConfig):
        """The item decoder's targets, as `userrep train` builds them from history events."""
        if tcfg.item_weight <= 0:
            return None
        return _history_items(split.user_ids, split.history, tcfg.item_vocab).matrix

    def inputs(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> np.ndarray:
        """The (ablated) input rows of user_ids from their events, as of each last event."""
        x = input_matrix(events, ctx.split.data.users, self.vecs, self.layout, user_ids)
        return x[:, self.cols]

    def embed(self, ctx: Context, user_ids: np.ndarray, events: pd.DataFrame) -> UserVectors:
        if self.encoder is None:
            raise RuntimeError("fit() before embed()")
        return self.encoder.embed(self.inputs(ctx, user_ids, events))


def _tag_shares(split, tcfg: TrainConfig):
    """The tag decoder's targets from history events, as `userrep train` builds them (None when
    the tag term is off or the catalog has no genres / tags)."""
    if tcfg.tag_weight <= 0 or tcfg.tag_vocab <= 0 or C.GENRES not in split.data.items:
        return None
    counts = tag_counts_from_pairs(*_distinct_pairs(split.history), split.data.items)
    tags = tag_targets_from_counts(split.user_ids, counts, tcfg.tag_vocab)
    return tags.matrix if tags.vocab else None


def _history_items(user_ids: np.ndarray, events: pd.DataFrame, vocab: int) -> ItemTargets:
    """Which items each of user_ids had in events, over the `vocab` items most users had."""
    return item_targets_from_pairs(user_ids, *_distinct_pairs(events), vocab)


def _distinct_pairs(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the distinct (user, item) pairs in events."""
    pairs = events[[C.USER_ID, C.ITEM_ID]].drop_duplicates()
    return pairs[C.USER_ID].to_numpy(np.int64), pairs[C.ITEM_ID].to_numpy(np.int64)
