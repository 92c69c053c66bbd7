"""The three-retrain alignment study on real data, through the platform as a user runs it.

    .venv/bin/python -m bench.bench_align_real [--dataset tafeng|ciao] [--t0 2001-01-03]
        [--window-days 14] [--split-seeds 0,1,2] [--user-frac 1.0] [--workspace DIR]
        [--markdown]

One workspace: ingest the data set (IngestTransaction; --user-frac keeps each user with that
probability, seeded), build the item encoders as of T0, a feature snapshot at each of
T0 < T1 < T2 < T3 (one label window apart), train batch A at T0 (`train_batch` as `userrep
train` runs it, settings selection included) and publish it at every T_k (a served batch is
re-embedded with fresh features), and pin one future-purchase LightGBM per split seed on A
(`train_task`, labels (T0, T0 + w]). Then three retrains, each at T_k twice: aligned
(`align_to` the previous aligned batch, the default method) and its unaligned twin (the same
z_u width, no selection, no alignment record: `--no-align`). Each pinned model is checked
against both by `evaluate_compat` (what `userrep batches compat B --model M` runs; records
saved): on the labels (T_k, T_k + w] and M's held-out users, M on A, M on the new batch, the
point-in-time retrain (labels (T_{k-1}, T_k], the new batch's vectors as of T_{k-1}), AUC and
Recall@10 with paired-bootstrap intervals, and the verdict. Beside it, from the same
bootstrap: the gap (retrain - M on the new batch) and what z_u is worth to M (M on A - M on
A's z_u shuffled across the test users).

The three split seeds' checks share each label set and Feast training set (SharedInputs), the
only change to what evaluate_compat does. The workspace keeps a state file: a rerun skips every
step done (an interrupted run resumes; `--fresh` starts over) and prints the tables. Ta-Feng at
--user-frac 0.5 took 90 min of steps on 2 shared cores (docs/alignment.md); the Ciao defaults
are a starting point, not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.bench_align_study import _machine
from userrep import columns as C
from userrep.settings import Settings

log = logging.getLogger(__name__)
STATE = "align_real_state.json"
# Ta-Feng: 2000-11-01 .. 2001-02-28, day-level. T0 = 2001-01-03 with 14-day windows puts
# T0..T3 at Jan 3, 17, 31, Feb 14 and the last window ends on the last day of data; every
# window lies after the Dec 19-25 hole (~100 customers a day instead of ~1,000).
DEFAULTS = {"tafeng": ("2001-01-03", 14), "ciao": ("2010-01-01", 90)}
N_RETRAINS = 3


class State:
    """The workspace's progress: ids of what was built, and the results so far."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)  # a kill mid-write leaves the previous state


def step(state: State, key: str, fn, *args, **kwargs) -> Any:
    """fn(*args) once per workspace: its result is kept in the state under key, with its time."""
    if key in state.data:
        return state.get(key)
    t = time.perf_counter()
    value = fn(*args, **kwargs)
    state.put(key, value)
    state.put(f"{key}:seconds", round(time.perf_counter() - t, 1))
    log.info("%s: %s (%.0f s)", key, value, time.perf_counter() - t)
    return value


def sample_users(frame: pd.DataFrame, frac: float, seed: int = 0) -> np.ndarray:
    """Sorted user ids kept: each user independently with probability frac (seeded)."""
    users = np.sort(frame[C.USER_ID].unique())
    if frac >= 1:
        return users
    return users[np.random.default_rng(seed).random(len(users)) < frac]


def ingest(settings: Settings, name: str, frac: float) -> dict[str, int]:
    from userrep import ingest as ing
    from userrep.data.loaders import load_dataset

    d = load_dataset(name)
    keep = sample_users(d.users, frac)
    events = d.events[d.events[C.USER_ID].isin(keep)]
    users = d.users[d.users[C.USER_ID].isin(keep)]
    with ing.IngestTransaction(settings.paths) as tx:
        tx.event_frame(events, name)
        tx.users(users)
        tx.items(d.items)
        problems = tx.commit(0.5)
    if problems:
        raise RuntimeError(f"ingest refused: {problems}")
    return {"events": len(events), "users": len(users), "items": len(d.items)}


def train(
    settings: Settings, t: pd.Timestamp, seed: int, align_to: str | None, width: int | None = None
) -> str:
    """`userrep train --as-of t`: batch A as a user trains it (settings selection included);
    with width, a retrain of that z_u width and no selection: `--align-to P` (the default
    method), or its unaligned twin (align_to None), which differs from it by the alignment
    alone (and a pinned model can read it: same width)."""
    from representation import pipeline
    from representation.train import TrainConfig

    cfg, model = TrainConfig(seed=seed), None
    if width is not None:
        # explicit: the metadata DB records the pre-selection width of a selected batch
        cfg, model = replace(cfg, select=False), {"latent_dim": width}
    return pipeline.train_batch(settings, t, model, cfg, align_to=align_to)


def z_width(settings: Settings, batch_id: str) -> int:
    """z_u's width as the batch's encoder artifact has it."""
    from representation import pipeline

    return pipeline.load_encoder(settings, batch_id)[0].latent_dim


def batch_info(settings: Settings, batch_id: str) -> dict[str, Any]:
    """What the metadata DB holds about a trained batch: width, training, selection, alignment."""
    from representation import batches
    from userrep.db import session_scope

    with session_scope(settings.metadata_db_url) as session:
        row = batches.get_batch(session, batch_id)
        m, alignment = row.metrics or {}, row.alignment or {}
        keys = ("epochs_run", "best_epoch", "best_val_loss", "seconds", "n_train")
        info = {"latent_dim_db": row.latent_dim, **{k: m.get(k) for k in keys}}
        info["selection"] = (m.get("selection") or {}).get("chosen")
        fit = ("method", "residual", "residual_raw", "variance_explained", "n_users")
        info["alignment"] = {k: alignment.get(k) for k in fit} if alignment else None
    return info | {"latent_dim": z_width(settings, batch_id)}


def embed(settings: Settings, batch_id: str, times: list[pd.Timestamp]) -> int:
    """`userrep embed --batch B --as-of ...` offline (the study reads z_u through Feast's
    offline join only)."""
    from representation import pipeline

    return sum(pipeline.embed_batch(settings, batch_id, t, online=False).n_users for t in times)


def pin_model(settings: Settings, batch_id: str, t0: pd.Timestamp, window: int, seed: int):
    from downstream.tasks import train_task

    r = train_task(
        settings,
        "future-listening",
        "lightgbm",
        batch_id,
        t0,
        window_days=window,
        name=f"align-real-split{seed}",
        split_seed=seed,
    )
    keys = ("auc", "auc_ci", "recall@10", "test_users", "train_users", "val_users", "learned")
    return {"model_id": r.model_id, **{k: r.metrics.get(k) for k in keys}}


class SharedInputs:
    """Within the block, evaluate_compat runs unchanged but builds each label set and each
    Feast training set once: the three split seeds' checks of one batch read the same labels
    and vectors (only the user split differs), so rebuilding them is pure repetition. Also
    keeps judge's inputs, for the paired gap between the reference and the pinned model."""

    def __init__(self) -> None:
        self.labels: dict[tuple, pd.DataFrame] = {}
        self.frames: dict[tuple, pd.DataFrame] = {}
        self.judged: tuple = ()

    def __enter__(self) -> SharedInputs:
        import downstream.compat as dc

        self._orig = (dc.task_labels, dc.build_training_set, dc.judge)
        dc.task_labels, dc.build_training_set, dc.judge = self._labels, self._frame, self._judge
        return self

    def __exit__(self, *exc: object) -> None:
        import downstream.compat as dc

        dc.task_labels, dc.build_training_set, dc.judge = self._orig

    def _labels(self, settings, task, as_of, window_days=7, seed=0, exclude_seen=False):
        key = (task, str(as_of), window_days, seed, exclude_seen)
        if key not in self.labels:
            self.labels[key] = self._orig[0](settings, task, as_of, window_days, seed, exclude_seen)
        return self.labels[key]

    def _frame(self, settings, labels, batch_id=None, feature_set="z_u", store=None, validate=True):
        key = (id(labels), batch_id, feature_set, validate)  # labels are the cached objects
        if key not in self.frames:
            self.frames[key] = self._orig[1](
                settings, labels, batch_id, feature_set, store, validate
            )
        return self.frames[key].copy()  # the reference fills z_u into its frame

    def _judge(self, *args: Any, **kwargs: Any) -> Any:
        self.judged = args  # evaluate_compat passes them positionally
        return self._orig[2](*args, **kwargs)


def gaps(judged: tuple) -> dict[str, list[float]]:
    """Paired bootstrap (the gate's users, resamples and seed) of the point-in-time retrain
    minus the pinned model on the new batch, and minus the pinned model on A: [point,
    one-sided 95 % lower, upper]; empty without a reference."""
    from downstream.compat import RETRAINED, paired_scores
    from downstream.metrics import paired_bootstrap

    _, _, _, model, design_a, design_b, rule, references = judged[:8]
    if RETRAINED not in references:
        return {}
    rows, scores = paired_scores(model, design_a, design_b, None, references)
    scores.pop("unaligned")  # without the map: not needed here
    y, users, q = design_a.y[rows], design_a.users[rows], design_a.queries()[rows]
    boot = paired_bootstrap(y, scores, users, q, 10, rule.n_resamples, rule.seed)
    out = {}
    for name in ("aligned", "pinned"):
        for metric in ("auc", "recall@10"):
            diff = boot.difference(RETRAINED, name, metric, rule.level)
            out[f"retrained-{name} {metric}"] = list(diff)
    return out


def zu_worth(
    settings: Settings, shared: SharedInputs, model_id: str, t: pd.Timestamp, seeds: int = 0
) -> dict[str, Any]:
    """What z_u is worth to the pinned model on the gate's test rows at t: its AUC and
    Recall@10 on A's z_u minus on A's z_u handed to other users (a seeded permutation of the
    test users), paired bootstrap as the gate's: [point, one-sided 95 % lower, upper]. An
    unaligned batch can cost at most about this much, whatever its space."""
    from downstream.compat import GateRule, held_out_rows
    from downstream.metrics import paired_bootstrap
    from downstream.registry import load_registered
    from downstream.tasks import make_design

    reg = load_registered(settings, model_id)
    spec, rule = reg.spec, GateRule(seed=settings.seed)
    labels = shared._labels(settings, reg.record.task, t, spec["window_days"], settings.seed)
    frame = shared._frame(settings, labels, reg.record.pinned_batch_id, "z_u", None, False)
    split = int(spec["split_seed"])
    design = make_design(settings, frame, "z_u", spec["classes"] or None, split, spec["dims"])
    rows = held_out_rows(design)
    x, users, d = design.x[rows], design.users[rows], design.n_user_features
    uniq, first, inverse = np.unique(users, return_index=True, return_inverse=True)
    perm = np.random.default_rng(seeds).permutation(len(uniq))  # user i gets user perm[i]'s z
    shuffled = x.copy()
    shuffled[:, :d] = x[first[perm]][inverse, :d]
    scores = {"pinned": reg.model.predict_proba(x), "shuffled": reg.model.predict_proba(shuffled)}
    q = design.queries()[rows]
    boot = paired_bootstrap(design.y[rows], scores, users, q, 10, rule.n_resamples, rule.seed)
    return {
        f"pinned-shuffled {m}": list(boot.difference("pinned", "shuffled", m, rule.level))
        for m in ("auc", "recall@10")
    }


def compat_row(settings: Settings, shared: SharedInputs, model_id: str, batch_id: str) -> dict:
    """`userrep batches compat B --model M` (saved in M's record), and what the table needs."""
    from downstream.compat import evaluate_compat

    res = evaluate_compat(settings, model_id, batch_id)
    e = res.evidence
    row: dict[str, Any] = {
        "verdict": res.verdict,
        "reasons": res.reasons,
        "n_test_users": e.n_test_users,
        "n_labels": e.n_labels,
        "n_positive": e.n_positive,
        "drop": e.drop,
        "drop_bounds": [e.drop_lower, e.drop_upper],
        "lineage": res.lineage.found,
        "reference": res.record["reference"],
        "gaps": gaps(shared.judged),
    }
    for name, m in res.metrics.items():
        row[name] = {k: m[k] for k in ("auc", "auc_ci", "recall@10", "recall@10_ci") if k in m}
    return row


def run(args: argparse.Namespace) -> State:
    from representation import build
    from userrep.db import upgrade
    from userrep.feast_store import apply_repo

    ws = args.workspace
    if args.fresh and ws.exists():
        shutil.rmtree(ws)
    text_cache = args.text_cache or ws.parent / "text_cache.parquet"
    settings = Settings(workspace=ws, text_cache=text_cache)
    settings.paths.ensure()
    settings.export_env()
    state = State(ws / STATE)
    w = args.window_days
    cuts = [args.t0 + pd.Timedelta(days=w * k) for k in range(N_RETRAINS + 1)]
    plan = {"dataset": args.dataset, "cuts": [str(t) for t in cuts], "window_days": w}
    plan |= {"user_frac": args.user_frac}
    if state.get("plan", plan) != plan:
        raise SystemExit(f"{ws} holds another plan ({state.get('plan')}): pass --fresh")
    state.put("plan", plan)
    upgrade(settings.metadata_db_url)
    apply_repo(settings)
    step(state, "ingest", ingest, settings, args.dataset, args.user_frac)
    last = build.last_event_time(settings.paths)
    if cuts[-1] + pd.Timedelta(days=w) > last + pd.Timedelta(days=1):
        raise SystemExit(f"the last window ends after the data ({last}): move --t0 earlier")
    step(state, "encoders", lambda: build.build_encoders(settings, cuts[0]).version)
    for t in cuts:
        step(
            state,
            f"snapshot {t:%Y-%m-%d}",
            lambda t=t: build.build_snapshot(settings, t).n_history_users,
        )
    a = step(state, "batch A", train, settings, cuts[0], 0, None)
    dim = step(state, "info A", batch_info, settings, a)["latent_dim"]
    step(state, "embed A", embed, settings, a, cuts)
    models = {
        s: step(state, f"model split{s}", pin_model, settings, a, cuts[0], w, s)
        for s in args.split_seeds
    }
    chain = {"aligned": a, "unaligned": a}
    with SharedInputs() as shared:
        for k in range(1, N_RETRAINS + 1):
            for kind in chain:
                parent = chain[kind] if kind == "aligned" else None
                b = step(state, f"batch {kind} {k}", train, settings, cuts[k], k, parent, dim)
                step(state, f"info {kind} {k}", batch_info, settings, b)
                step(state, f"embed {kind} {k}", embed, settings, b, [cuts[k]])
                chain[kind] = b
            for s, m in models.items():
                for kind, b in chain.items():
                    key = f"compat {kind} {k} split{s}"
                    step(state, key, compat_row, settings, shared, m["model_id"], b)
                key = f"worth {k} split{s}"
                step(state, key, zu_worth, settings, shared, m["model_id"], cuts[k])
    return state


def _ci(m: dict[str, Any] | None, metric: str) -> str:
    if not m:
        return "-"
    lo, hi = m[f"{metric}_ci"]
    return f"{m[metric]:.3f} [{lo:.3f}, {hi:.3f}]"


def _diff(bounds: list[float] | None) -> str:
    return "-" if not bounds else "{:+.4f} [{:+.4f}, {:+.4f}]".format(*bounds)


def tables(state: State, seeds: list[int]) -> dict[str, pd.DataFrame]:
    """Per metric, one row per (retrain k, split seed): the pinned model M on A, on the
    aligned batch, on the unaligned one, the point-in-time retrain (PIT) on each (95 %
    intervals); the paired differences with one-sided 95 % bounds (drop = M on A - M on the
    batch, the gate's; gap = PIT - M on the aligned batch; z_u's worth = M on A - M on A's
    z_u shuffled across users) and the gate's verdicts."""
    out = {}
    for metric in ("auc", "recall@10"):
        rows = []
        for k in range(1, N_RETRAINS + 1):
            for s in seeds:
                al = state.get(f"compat aligned {k} split{s}")
                un = state.get(f"compat unaligned {k} split{s}")
                worth = state.get(f"worth {k} split{s}") or {}
                if al is None or un is None:
                    continue
                row = {"k": k, "split": s, "test users": al["n_test_users"]}
                row |= {"M on A": _ci(al["pinned"], metric)}
                row |= {"M on aligned": _ci(al["aligned"], metric)}
                row |= {"M on unaligned": _ci(un["aligned"], metric)}
                row |= {"PIT aligned": _ci(al.get("retrained"), metric)}
                row |= {"PIT unaligned": _ci(un.get("retrained"), metric)}
                if metric == "auc":  # the gate's drop is on AUC
                    row["drop aligned"] = _diff([al["drop"], *al["drop_bounds"]])
                    row["drop unaligned"] = _diff([un["drop"], *un["drop_bounds"]])
                else:
                    row["drop aligned"] = "-"
                    row["drop unaligned"] = "-"
                row["gap PIT - aligned"] = _diff(al["gaps"].get(f"retrained-aligned {metric}"))
                row["z_u worth"] = _diff(worth.get(f"pinned-shuffled {metric}"))
                row["verdicts"] = f"{al['verdict']} / {un['verdict']}"
                rows.append(row)
        out[metric] = pd.DataFrame(rows)
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="tafeng", choices=sorted(DEFAULTS))
    ap.add_argument("--t0", help="batch A's time (default: per data set)")
    ap.add_argument("--window-days", type=int, help="label window = spacing of T0..T3")
    ap.add_argument("--split-seeds", default="0,1,2")
    ap.add_argument("--user-frac", type=float, default=1.0, help="seeded share of users kept")
    ap.add_argument("--workspace", type=Path, help="default workspaces/align-real-DATASET")
    ap.add_argument("--text-cache", type=Path)
    ap.add_argument("--fresh", action="store_true", help="delete the workspace first")
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = ap.parse_args()
    t0, w = DEFAULTS[args.dataset]
    args.t0 = pd.Timestamp(args.t0 or t0, tz="UTC")
    args.window_days = args.window_days or w
    args.split_seeds = [int(s) for s in args.split_seeds.split(",")]
    args.workspace = (args.workspace or Path(f"workspaces/align-real-{args.dataset}")).resolve()
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in (__name__, "downstream.compat", "downstream.tasks", "representation.align"):
        logging.getLogger(name).setLevel(logging.INFO)
    torch.set_num_threads(1)  # on 2 shared cores, 2 threads trained ~10x slower than 1
    started = datetime.now(UTC)
    print(f"{started:%Y-%m-%d %H:%M} UTC, {_machine()}")
    t = time.perf_counter()
    state = run(args)
    state.put("last run", {"at": str(started), "machine": _machine()})
    print(json.dumps({k: v for k, v in state.data.items() if k.endswith(":seconds")}))
    for s in args.split_seeds:
        print(f"model split{s}: {state.get(f'model split{s}')}")
    for metric, frame in tables(state, args.split_seeds).items():
        print(f"\n{metric} (verdicts: aligned / unaligned batch)")
        print(frame.to_markdown(index=False) if args.markdown else frame.to_string(index=False))
    for key in sorted(k for k in state.data if k.startswith(("info", "model"))):
        if not key.endswith(":seconds"):
            print(key, state.get(key))
    print(f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
