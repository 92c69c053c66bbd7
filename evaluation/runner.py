"""Run the protocol: for each seed, split once, fit and embed every method (timed), score every
probe, and run the requested ablations of z_u; `evaluate()` is what `userrep evaluate` calls.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from evaluation import probes
from evaluation.methods import BASELINES, Method, make_context, make_method
from evaluation.protocol import (
    EvalData,
    ProtocolConfig,
    Split,
    cold_history,
    load_eval_data,
    make_split,
)
from evaluation.zu import RECIPES, TEXT_CACHE, ZuMethod
from userrep import columns as C

log = logging.getLogger(__name__)
DEFAULT_METHODS = ("z_u", *BASELINES)
# item-title embeddings are shared between runs; never written into the working directory
DEFAULT_TEXT_CACHE = Path(tempfile.gettempdir()) / "userrep-text-cache.parquet"


@dataclass
class MethodRun:
    """One method on one seed: its scores and what it cost."""

    key: str
    name: str
    seed: int
    dim: int
    fit_s: float  # fitting, including any item encoder it needs
    embed_s: float  # embedding every eligible user from history
    metrics: dict[str, float]


@dataclass
class EvalRun:
    """Everything one `userrep evaluate` produced (what the report renders)."""

    dataset: str
    command: str
    seeds: list[int]
    protocol: ProtocolConfig
    split: str = "time"  # how histories were cut: "time" or "random" (EvalData.split_by_time)
    similar: str = "similar users"  # what the similar-users probe measured (its column header)
    feedback: str = "implicit"  # how the labels were read: "implicit" or "explicit"
    notes: list[str] = field(default_factory=list)  # which probes apply here, and why not
    split_info: dict[int, dict[str, int]] = field(default_factory=dict)
    runs: list[MethodRun] = field(default_factory=list)
    ablations: list[MethodRun] = field(default_factory=list)
    wall_s: float = 0.0


def score(split: Split, warm, cold, collab: np.ndarray) -> dict[str, float]:
    """Every probe on one method's vectors; the linear probe again on cold-start vectors."""
    out = {"linear_auc": probes.linear_probe(split, warm)}
    out |= probes.linear_probe_cv(split, warm)
    out |= probes.gbdt_probe(split, warm, collab)
    out |= probes.rating_level_probe(split, warm)
    out |= probes.genre_probe(split, warm)
    out |= probes.similar_probe(split, warm)
    return out | {"cold_linear_auc": probes.linear_probe(split, cold)}


def run_method(split: Split, ctx, key: str, method: Method | None = None) -> MethodRun:
    """Fit, embed (timed) and score one method; cold-start vectors from cold_history()."""
    method = method or make_method(key)
    t0 = time.perf_counter()
    method.fit(ctx)
    fit_s = time.perf_counter() - t0 + method.shared_s
    t1 = time.perf_counter()
    warm = method.embed(ctx, split.user_ids, split.history)
    embed_s = time.perf_counter() - t1
    cold = method.embed(ctx, split.user_ids, cold_history(split))
    metrics = score(split, warm, cold, ctx.collab)
    log.info(
        "%s seed %d: %s (fit %.1fs, embed %.1fs)",
        method.name,
        split.seed,
        {k: round(v, 3) for k, v in metrics.items()},
        fit_s,
        embed_s,
    )
    return MethodRun(key, method.name, split.seed, warm.shape[1], fit_s, embed_s, metrics)


def evaluate(
    dataset: str | EvalData,
    seeds: Sequence[int] = (0,),
    methods: Sequence[str] = DEFAULT_METHODS,
    ablate: Sequence[str] = (),
    text_cache: Path | None = None,
    protocol: ProtocolConfig | None = None,
    command: str = "",
    threads: int = 1,
    on_step: Callable[[str], None] | None = None,
) -> EvalRun:
    """The whole protocol on one data set; ablations drop one switch each from z_u's input."""
    t0 = time.perf_counter()
    protocol = protocol or ProtocolConfig()
    torch.set_num_threads(threads)
    warm_up_torch()
    data = load_eval_data(dataset) if isinstance(dataset, str) else dataset
    split_by = "time" if data.split_by_time else "random"
    feedback = "explicit" if data.explicit(protocol.feedback) else "implicit"
    run = EvalRun(
        data.name, command, list(seeds), protocol, split_by, probes.similar_label(data), feedback
    )
    for seed in seeds:
        split = make_split(data, seed, protocol)
        run.split_info[seed] = _split_info(split)
        if not run.notes:
            run.notes = probe_notes(split)
        ctx = make_context(split)
        ctx.extras |= {TEXT_CACHE: text_cache or DEFAULT_TEXT_CACHE}
        for key in methods:
            run.runs.append(run_method(split, ctx, key))
            if on_step:
                on_step(key)
        for switch in ablate:
            recipe = RECIPES["platform"].without((switch,))
            run.ablations.append(run_method(split, ctx, f"z_u - {switch}", ZuMethod(recipe)))
            if on_step:
                on_step(f"ablate {switch}")
    run.wall_s = time.perf_counter() - t0
    return run


def warm_up_torch() -> None:
    """Pay the process's one-time optimizer set-up before any method is timed: the first torch
    optimizer a process builds imports torch._dynamo (1.3 to 2.5 s on 2 cores), which would
    otherwise be charged to whichever method fits first (z_u, in the default order)."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def _split_info(split: Split) -> dict[str, int]:
    """What the protocol kept on one seed (the report's header and per-seed notes)."""
    items = np.union1d(split.history[C.ITEM_ID].unique(), split.future[C.ITEM_ID].unique())
    info = {
        **split.eligibility,
        "users": len(split.user_ids),
        "probe_train": int(split.train.sum()),
        "probe_test": int(split.test.sum()),
        "items": len(items),
        "history_events": len(split.history),
        "future_events": len(split.future),
        "candidates": len(split.candidates),
        "linear_items": len(
            probes.probed_items(split, np.flatnonzero(split.train), np.flatnonzero(split.test))
        ),
    }
    if split.explicit:
        mask, y = split.pair_mask(), split.labels()
        test = split.test[:, None] & mask
        u = np.nonzero(test & split.unseen())[0]
        yy = y[test & split.unseen()]
        ndcg, recall = probes.ranked_users(split, u, yy)
        info |= {
            "scored_pairs_test": int(test.sum()),
            "liked_pairs_test": int((y.astype(bool) & test).sum()),
            "ranked_users_ndcg": len(np.unique(u[ndcg])),
            "ranked_users_recall": len(np.unique(u[recall])),
        }
    return info


def probe_notes(split: Split) -> list[str]:
    """Which probes apply on this data set and, for those that do not, why (report header)."""
    data, notes = split.data, []
    if probes.genre_targets(split)[1]:
        covered = (data.items[C.GENRES].fillna("") != "").sum() if C.GENRES in data.items else 0
        notes.append(f"genre probe: items' genres / categories ({covered} items have one)")
    else:
        notes.append("genre probe: absent (no item has a genre / category)")
    if reason := probes.similar_absent(data):
        notes.append(f"similar users: absent ({reason})")
    elif data.clusters is not None:
        notes.append("similar users: planted clusters (purity of the 10 nearest users)")
    else:
        notes.append("similar users: friends / trust edges (each as one undirected pair) vs random")
    users = data.users.set_index(C.USER_ID).reindex(split.user_ids)
    present = []
    if C.AGE in users:
        present.append(f"age {users[C.AGE].notna().mean():.0%}")
    for col in (C.GENDER, C.COUNTRY):
        if col in users:
            present.append(f"{col} {(users[col].fillna('') != '').mean():.0%}")
    attrs = [p for p in present if not p.endswith(" 0%")]
    notes.append(
        f"cold start: each user's first {split.protocol.cold_events} history events"
        + (
            f", plus the users' attributes ({', '.join(attrs)} of users) for methods that read"
            " them (z_u's onboarding input; the baselines read events only)"
            if attrs
            else " (no user attributes in this data set)"
        )
    )
    if not split.explicit:
        notes.append("rating level: absent (implicit feedback)")
        return notes
    info = _split_info(split)
    for key, column, why in (
        ("ranked_users_ndcg", "GBDT NDCG@10", "with both a liked and a disliked rated candidate"),
        ("ranked_users_recall", "GBDT R@10", "with both, and more than 10 rated candidates"),
    ):
        if info[key] < probes.MIN_RANKED_USERS:
            notes.append(
                f"{column}: absent ({info[key]} probe-test users {why}; it needs"
                f" {probes.MIN_RANKED_USERS})"
            )
    return notes
