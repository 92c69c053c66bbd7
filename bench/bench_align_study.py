"""The three-retrain study of aligned batches: does a future-listening GBDT trained on
the first batch survive three autoencoder retrains, each on newer data, when it is fed the
aligned later batches instead of being retrained?

    .venv/bin/python -m bench.bench_align_study [--datasets synthetic,movielens-100k]
        [--drift 0.5] [--weight 1.0] [--seeds 1] [--users 4000] [--text-cache PATH]

Per data set: cut times t0 < t1 < t2 < t3 < t4 (quantiles of event time); item vectors are
fitted once on events before t0 (one encoder version, as `align.py` assumes). Batch k is the
platform's autoencoder trained (seed k) on the users known at t_k, with features as of t_k;
its label window is (t_k, t_k+1]: which of the 60 most popular items each active user plays.
GBDT_0 (LightGBM on user z_u + item popularity + item collab vector) is fitted on batch 0.
For k = 1..3 and each method (none, procrustes, bct, bct+procrustes; each its own chain of
parents) it prints GBDT_0's test AUC on batch k, a GBDT retrained on batch k, the gap, the
linear-probe AUC of batch k, the fit to the parent and the alignment cost / training time.

Seed s trains the autoencoders with seeds 100 s + k and splits users with split seed s (before
the split hash mixed in the seed, every seed shared one split; docs/alignment.md marks those
figures). bench/bench_align_real.py runs the study on Ta-Feng through the platform itself.

"Retrained on batch k" is point-in-time correct: when batch k is published at t_k, the newest
complete labels are window k-1's, so the downstream team refits on batch k's vectors of the
inputs as of t_k-1 with window k-1's labels (the same users and sizes GBDT_0 had in window 0),
and is scored on window k like GBDT_0. The "oracle" column refits on window k's own train users
instead: labels no model has at t_k, so oracle - pinned also holds the label drift of k windows.

4,000 synthetic users give ~3,300 users a window and ~1,000 test users (x 60 items): at the
earlier 1,000 users (~250 test users) two GBDTs fitted on equally good batches differed by up to
0.02 AUC, twice the 0.01 the study has to resolve (docs/alignment.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from downstream.metrics import auc, split_users
from downstream.models import make_model
from representation import align
from representation.artifact import UserEncoder
from representation.encoders import EncoderConfig, ItemVectors, TextEmbedder, build_item_vectors
from representation.features import history_table, onboarding_table, pair_aggregates
from representation.inputs import InputLayout, to_matrix
from representation.model import AutoencoderConfig
from representation.train import Anchors, TrainConfig, train_autoencoder
from userrep import columns as C
from userrep.data import synthetic
from userrep.data.loaders import dataset_dir, load_dataset

log = logging.getLogger(__name__)
CUTS = (0.5, 0.625, 0.75, 0.875, 1.0)  # event-time quantiles: t0 .. t4
N_ITEMS = 60  # candidates per window: the most popular items before t_k
N_PROBE_ITEMS = 30  # linear probe: one logistic regression per item, mean AUC
METHODS = ("none", *align.METHODS)


@dataclass
class World:
    name: str
    events: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    cuts: list[pd.Timestamp] = field(default_factory=list)


def load_world(name: str, drift: float, n_users: int = 4000) -> World | None:
    """Synthetic with planted drift, or a real data set (None, with a message, when absent)."""
    if name == "synthetic":
        cfg = synthetic.SyntheticConfig(
            n_users=n_users, n_items=600, n_artists=120, events_per_user=60, drift=drift, seed=11
        )
        d = synthetic.generate(cfg)
        world = World(name, d.events, d.users, d.items)
    elif dataset_dir(name) is None:
        print(f"{name}: not found under ../shared/datasets (USERREP_DATASETS): skipped")
        return None
    else:
        d = load_dataset(name)
        world = World(name, d.events, d.users, d.items)
    ts = world.events[C.TS].astype("int64")
    world.cuts = [pd.Timestamp(int(ts.quantile(q)), tz="UTC").floor("s") for q in CUTS]
    return world


def snapshot(world: World, vecs: ItemVectors, layout: InputLayout, t: pd.Timestamp):
    """(user ids known at t, their encoder input as of t), the platform's feature code."""
    ev = world.events[world.events[C.TS] < t]
    con = duckdb.connect()
    con.register("history_events", ev[[C.USER_ID, C.ITEM_ID, C.TS, C.WEIGHT]])
    pairs = pair_aggregates(con, "history_events", t, layout.horizon_list)
    drop = [C.EVENT_TIMESTAMP, C.CREATED]
    hist = history_table(pairs, vecs, t, layout.horizon_list).to_pandas().drop(columns=drop)
    onb = onboarding_table(world.users, vecs, t).to_pandas().drop(columns=drop)
    frame = onb.merge(hist, on=C.USER_ID, how="left").sort_values(C.USER_ID)
    users = frame[C.USER_ID].to_numpy(np.int64)
    return users, to_matrix(pa.Table.from_pandas(frame, preserve_index=False), layout)


@dataclass
class Window:
    """Labelled (user, candidate) pairs of the window after t_k, users active in it."""

    users: np.ndarray  # (n_users,) active users known at t_k, sorted
    y: np.ndarray  # (n_users, N_ITEMS) 0/1 future plays
    items: np.ndarray  # (N_ITEMS, 1 + collab_dim) item features
    split: np.ndarray  # (n_users,) train / val / test


def window(
    world: World, vecs: ItemVectors, known: np.ndarray, k: int, split_seed: int = 0
) -> Window:
    t, t_next = world.cuts[k], world.cuts[k + 1]
    ev = world.events
    past, fut = ev[ev[C.TS] < t], ev[(ev[C.TS] >= t) & (ev[C.TS] < t_next)]
    pop = past.groupby(C.ITEM_ID)[C.USER_ID].nunique().sort_values(ascending=False)
    cand = pop.index.to_numpy(np.int64)[:N_ITEMS]
    users = np.intersect1d(known, fut[C.USER_ID].unique())
    played = fut[fut[C.ITEM_ID].isin(cand) & fut[C.USER_ID].isin(users)]
    y = np.zeros((len(users), len(cand)), np.int8)
    rows = np.searchsorted(users, played[C.USER_ID].to_numpy())
    y[rows, pd.Index(cand).get_indexer(played[C.ITEM_ID])] = 1
    collab = vecs.collab[vecs.index(cand)]
    items = np.hstack([np.log1p(pop.to_numpy()[:N_ITEMS])[:, None], collab]).astype(np.float32)
    return Window(users, y, items, split_users(users, seed=split_seed))


def _pairs(z: np.ndarray, w: Window, part: str) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(w.split == part)
    u = np.repeat(rows, len(w.items))
    j = np.tile(np.arange(len(w.items)), len(rows))
    return np.hstack([z[u], w.items[j]]), w.y[u, j]


def fit_gbdt(z: np.ndarray, w: Window):
    """LightGBM on the window's train users, early-stopped on its val users."""
    model = make_model("lightgbm", seed=0, learning_rate=0.1, n_estimators=200)
    return model.fit(*_pairs(z, w, "train"), *_pairs(z, w, "val"))


def gbdt_auc(model, z: np.ndarray, w: Window) -> float:
    x, y = _pairs(z, w, "test")
    return auc(y, model.predict_proba(x))


def linear_probe(z: np.ndarray, w: Window) -> float:
    """Mean per-item test AUC of logistic regressions on standardised z (the protocol's probe)."""
    tr, te = w.split != "test", w.split == "test"
    scaler = StandardScaler().fit(z[tr])
    x_tr, x_te = scaler.transform(z[tr]), scaler.transform(z[te])
    aucs = []
    for j in range(min(N_PROBE_ITEMS, w.y.shape[1])):
        if len(np.unique(w.y[tr, j])) < 2 or len(np.unique(w.y[te, j])) < 2:
            continue
        m = LogisticRegression(max_iter=200).fit(x_tr, w.y[tr, j])
        aucs.append(auc(w.y[te, j], m.decision_function(x_te)))
    return float(np.mean(aucs))


@dataclass
class Batch:
    """One retrain: its encoder (own space) and the map into its parent's space, if any."""

    encoder: UserEncoder
    amap: align.AlignmentMap | None = None

    def embed(self, x: np.ndarray) -> np.ndarray:
        z = self.encoder.embed(x)  # (n, latent_dim) own space
        return z if self.amap is None else self.amap.apply(z)


@dataclass
class Retrain:
    batch: Batch
    fit: dict[str, float]
    train_s: float  # autoencoder training (BCT term included)
    align_s: float  # parent pass over the anchors + map fit (+ BCT's extra epoch time)


def train(x: np.ndarray, layout: InputLayout, seed: int, weight: float, anchors=None):
    """The platform's autoencoder on x; (encoder, seconds, seconds per epoch)."""
    cfg = AutoencoderConfig(input_dim=layout.dim)
    tcfg = TrainConfig(
        batch_size=64, max_batch_size=64, epochs=60, patience=8, seed=seed, compat_weight=weight
    )
    result = train_autoencoder(x, layout.blocks(), cfg, tcfg, anchors=anchors)
    secs = result.metrics["seconds"]
    return UserEncoder.from_result(result), secs, secs / result.metrics["epochs_run"]


def retrain(method: str, parent: Batch, snap, prev_users, plain, layout, seed, weight) -> Retrain:
    """Batch k by one method, its parent being the same method's batch k-1."""
    users, x = snap
    t0 = time.perf_counter()
    rows = np.flatnonzero(np.isin(users, prev_users))
    anchors = Anchors(rows, parent.embed(x[rows]))  # parent's z_u of the new inputs
    t_anchor = time.perf_counter() - t0
    encoder, train_s, per_epoch = plain
    extra = 0.0
    if align.BCT in method:
        encoder, train_s, bct_epoch = train(x, layout, seed, weight, anchors)
        extra = max(bct_epoch - per_epoch, 0.0) * train_s / bct_epoch
    t0 = time.perf_counter()
    if method == "none":
        amap, fit = None, align.identity_fit(encoder.embed(x[rows]), anchors.z_parent)
    else:
        amap, fit = align.fit_alignment(anchors, encoder.embed(x[rows]), method)
    align_s = t_anchor + time.perf_counter() - t0 + extra
    return Retrain(Batch(encoder, amap), fit, train_s, 0.0 if method == "none" else align_s)


def _window_z(batch: Batch, snap, w: Window) -> np.ndarray:
    users, x = snap
    return batch.embed(x[np.searchsorted(users, w.users)])  # (window users, latent_dim)


def study(world: World, weight: float, text_cache: Path, seed: int = 0) -> list[dict]:
    """Rows of the table: one per (retrain k, method)."""
    ev0 = world.events[world.events[C.TS] < world.cuts[0]]
    enc_cfg = EncoderConfig(seed=0)
    vecs = build_item_vectors(ev0, world.items, world.users, enc_cfg, TextEmbedder(text_cache), "s")
    horizons = tuple(h.name for h in C.DEFAULT_HORIZONS)
    layout = InputLayout(horizons, vecs.collab.shape[1], vecs.content.shape[1])
    snaps = [snapshot(world, vecs, layout, t) for t in world.cuts[:4]]
    wins = [window(world, vecs, snaps[k][0], k, seed) for k in range(4)]  # seed: split too
    b0 = Batch(train(snaps[0][1], layout, 100 * seed, weight)[0])
    z0 = _window_z(b0, snaps[0], wins[0])
    gbdt0 = fit_gbdt(z0, wins[0])
    log.info("%s: batch 0 and GBDT_0 ready, %d users", world.name, len(snaps[0][0]))
    rows = [{"k": 0, "method": "-", "pinned": gbdt_auc(gbdt0, z0, wins[0])}]
    rows[0] |= {"retrained": rows[0]["pinned"], "oracle": rows[0]["pinned"]}
    rows[0] |= {"probe": linear_probe(z0, wins[0])}
    chains = dict.fromkeys(METHODS, b0)
    for k in range(1, 4):
        s = 100 * seed + k
        plain = train(snaps[k][1], layout, s, weight)
        stale = gbdt_auc(gbdt0, _window_z(b0, snaps[k], wins[k]), wins[k])
        for m in METHODS:
            r = retrain(m, chains[m], snaps[k], snaps[k - 1][0], plain, layout, s, weight)
            chains[m] = r.batch
            z = _window_z(r.batch, snaps[k], wins[k])
            z_prev = _window_z(r.batch, snaps[k - 1], wins[k - 1])  # the newest labels at t_k
            retrained = gbdt_auc(fit_gbdt(z_prev, wins[k - 1]), z, wins[k])
            oracle = gbdt_auc(fit_gbdt(z, wins[k]), z, wins[k])
            pinned = gbdt_auc(gbdt0, z, wins[k])
            rows.append(
                {"k": k, "method": m, "pinned": pinned, "retrained": retrained, "stale": stale}
                | {"oracle": oracle, "gap": retrained - pinned, "drop": stale - pinned}
                | {"oracle_gap": oracle - pinned}
                | {"probe": linear_probe(z, wins[k])}
                | {"residual": r.fit["residual"], "var_expl": r.fit["variance_explained"]}
                | {"cost_pct": 100 * r.align_s / r.train_s, "n_users": len(snaps[k][0])}
            )
            log.info("%s k=%d %s: %s", world.name, k, m, rows[-1])
    return rows


def _machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return f"nproc={os.cpu_count()} memory={mem:.0f} GiB load(1 min)={load:.1f}"


def print_table(name: str, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    print(
        f"\n{name}: pinned = GBDT_0 on batch k; retrained = GBDT refitted on batch k with the "
        "newest labels at t_k (window k-1); oracle = refitted on window k's own labels; stale = "
        "GBDT_0 on batch 0 re-embedding t_k; gap = retrained - pinned; drop = stale - pinned "
        "(what `batches compat` compares with --max-drop)"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    later = frame[frame.k > 0]
    cols = ["gap", "oracle_gap", "drop", "probe", "residual", "cost_pct"]
    summary = later.groupby("method")[cols].mean()
    summary["max_gap"] = later.groupby("method")["gap"].max()
    summary["max_oracle_gap"] = later.groupby("method")["oracle_gap"].max()
    print(f"{name}, means over the three retrains:")
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="synthetic,movielens-100k")
    ap.add_argument("--drift", type=float, default=0.5, help="synthetic taste drift")
    ap.add_argument("--weight", type=float, default=TrainConfig().compat_weight)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--users", type=int, default=4000, help="synthetic users (~3,300 a window)")
    ap.add_argument("--text-cache", type=Path, default=Path("workspace/text_cache.parquet"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    torch.set_num_threads(1)  # on 2 shared cores, 2 threads trained ~10x slower than 1
    print(_machine(), f"bct weight={args.weight} drift={args.drift} users={args.users}")
    for name in args.datasets.split(","):
        world = load_world(name, args.drift, args.users)
        if world is None:
            continue
        t0 = time.perf_counter()
        rows = [
            r | {"seed": s}
            for s in range(args.seeds)
            for r in study(world, args.weight, args.text_cache, s)
        ]
        print_table(name, rows)
        print(f"{name}: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
