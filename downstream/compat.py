"""Compatibility of a pinned downstream model with a newer batch, and repinning.

evaluate_compat scores model M (trained on its pinned batch A) on a fresh labelled window with
A's z_u and with batch B's z_u (as served, and B's raw space before its alignment map), beside
a point-in-time retrain (the same family fitted on B's vectors and the newest labels complete
at B's time), all on the same test users (M's own held-out split). A paired
bootstrap over those users gives every metric an interval and bounds the drop (AUC on A - AUC
on B). The verdict (GateRule.decide):

- incompatible: B does not descend from A through alignment records in the metadata DB, or the
  drop's one-sided 95 % lower bound is above max_drop (B costs more than allowed);
- inconclusive: too few test users or labels, M does not beat chance on A (its AUC interval
  covers 0.5), the drop's interval is wider than max_width, or it straddles max_drop;
- compatible: lineage found, enough data, and the drop's one-sided 95 % upper bound is at most
  max_drop.

The record goes into DownstreamModel.metrics["compat"][B]; repin moves M's pin to B only on a
compatible record, or with a forced reason, which is recorded with the move.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downstream.metrics import N_RESAMPLES, Bootstrap, paired_bootstrap
from downstream.registry import SPEC_FILE, load_registered
from downstream.tasks import (
    MIN_VAL_USERS,
    Design,
    batch_as_of,
    fit_evaluate,
    make_design,
    task_labels,
)
from downstream.training_set import build_training_set, trainable_batch
from representation import batches
from representation.align import AlignmentMap
from representation.inputs import Snapshot, snapshot_times
from representation.publish import load_encoder
from userrep import columns as C
from userrep.db import DownstreamModel, session_scope, utcnow
from userrep.settings import Settings

log = logging.getLogger(__name__)

# Largest test-AUC drop (pinned model on A -> the same model on aligned B) still compatible,
# now compared with the drop's one-sided 95 % upper bound, not its point estimate.
# Measured in tests/test_align.py (tiny synthetic workspace, future-listening, LightGBM, ~120
# test users), two runs: pinned on A 0.683 / 0.675; a LightGBM refit on a seed-1 retrain B
# 0.680 / 0.682 (what retraining itself costs: -0.003 / +0.007); pinned on B aligned 0.668 /
# 0.666 (drop 0.014 / 0.008), unaligned 0.595 / 0.584 (drop 0.088 / 0.091), shuffled rows
# 0.568 (drop 0.115). 0.005 is about the refit difference: a repin may not cost more than
# retraining would. Re-checked by bench/bench_align_study.py (synthetic, drift 0.5, three
# retrains, ~250 test users x 60 items): refits of one space under a rotation differ by 0.001
# to 0.003 AUC; bct+procrustes drops -0.001 / -0.003 / -0.007, procrustes alone 0.019 / 0.028
# / 0.029, unaligned 0.13 to 0.15. At 4,000 users (~1,000 test users, 3 seeds x 3 retrains,
# drifts 0.15 to 0.5; docs/alignment.md) the bct(+procrustes) drops average -0.002 to 0.001
# and reach 0.006 at worst, procrustes alone averages 0.012 to 0.015, unaligned 0.17 to 0.21.
DEFAULT_MAX_DROP = 0.005
# Widest drop interval (one-sided 95 % lower to upper bound, i.e. two-sided 90 %) that decides
# anything: a bootstrap over a few dozen users is itself unreliable (on MovieLens 100K, ~18
# test users a window, one retrained GBDT scored 0.36 to 0.73 between seeds; docs/alignment.md).
DEFAULT_MAX_WIDTH = 0.05
MIN_TEST_USERS = 50  # held-out users scored on both batches
MIN_LABELS = 50  # positives and negatives each (binary); rows of the rarest class (multiclass)
LEVEL = 0.95  # one-sided level of the drop's bounds; metric intervals are two-sided at it
COMPAT_KEY = "compat"
REPINS_KEY = "repins"
COMPATIBLE, INCONCLUSIVE, INCOMPATIBLE = "compatible", "inconclusive", "incompatible"
RETRAINED = "retrained"  # the point-in-time reference's name among the scorers
VERDICTS = (COMPATIBLE, INCONCLUSIVE, INCOMPATIBLE)


class CompatError(Exception):
    """A repin or compatibility check cannot go ahead; the message says why."""


@dataclass(frozen=True)
class Lineage:
    """How batch B descends from batch A: the chain of alignment records B -> ... -> A."""

    found: bool
    chain: list[str]  # batch ids from B back to as far as the records go
    links: list[dict[str, Any]] = field(default_factory=list)  # per link: method, residual
    why: str = ""


def alignment_lineage(settings: Settings, from_batch: str, batch_id: str) -> Lineage:
    """Follow batch_id's alignment record to its parent, and so on, until from_batch.

    Only alignment records count: parent_batch_id alone says where a batch came from, not
    that its space was mapped onto the parent's.
    """
    chain: list[str] = [batch_id]
    links: list[dict[str, Any]] = []
    with session_scope(settings.metadata_db_url) as session:
        current = batch_id
        while current != from_batch:
            record = batches.get_batch(session, current).alignment or {}
            parent = record.get("parent")
            if not parent:
                why = f"batch {current} has no alignment record naming a parent"
                return Lineage(False, chain, links, why)
            if parent in chain:
                return Lineage(False, chain, links, f"alignment records loop at {parent}")
            links.append(
                {
                    "batch": current,
                    "parent": parent,
                    "method": record.get("method"),
                    "residual": record.get("residual"),
                }
            )
            chain.append(parent)
            current = parent
    return Lineage(True, chain, links)


@dataclass(frozen=True)
class GateRule:
    """What a compatible verdict needs; every threshold is written into the record."""

    max_drop: float = DEFAULT_MAX_DROP
    max_width: float = DEFAULT_MAX_WIDTH
    min_test_users: int = MIN_TEST_USERS
    min_labels: int = MIN_LABELS
    n_resamples: int = N_RESAMPLES
    level: float = LEVEL
    seed: int = 0  # the bootstrap's

    def decide(self, lineage: Lineage, evidence: Evidence) -> tuple[str, list[str]]:
        """(verdict, reasons): the first rule that settles it, in the module docstring's order."""
        if not lineage.found:
            return INCOMPATIBLE, [f"no alignment lineage to {lineage.chain[-1]}: {lineage.why}"]
        few = evidence.shortfalls(self)
        if few:
            return INCONCLUSIVE, few
        lo_a = evidence.pinned_ci[0]
        if not lo_a > 0.5:
            return INCONCLUSIVE, [
                f"the model does not beat chance on its own batch: AUC {evidence.pinned_auc:.4f}, "
                f"{self.level:.0%} interval [{lo_a:.4f}, {evidence.pinned_ci[1]:.4f}] covers 0.5"
            ]
        d, lo, hi = evidence.drop, evidence.drop_lower, evidence.drop_upper
        bounds = f"drop {d:+.4f}, one-sided {self.level:.0%} bounds [{lo:+.4f}, {hi:+.4f}]"
        if lo > self.max_drop:
            return INCOMPATIBLE, [f"{bounds}: even the lower bound exceeds {self.max_drop:.4f}"]
        if not hi - lo <= self.max_width:
            return INCONCLUSIVE, [f"{bounds}: wider than {self.max_width:.4f}, too few users"]
        if hi <= self.max_drop:
            return COMPATIBLE, [f"{bounds}: the upper bound is within {self.max_drop:.4f}"]
        return INCONCLUSIVE, [f"{bounds}: straddles {self.max_drop:.4f}"]


@dataclass(frozen=True)
class Evidence:
    """What the test set holds and what the bootstrap says about the pinned model's drop."""

    n_test_users: int
    n_labels: int
    n_positive: int | None  # binary tasks; None for multiclass
    n_negative: int | None
    min_class_rows: int | None  # multiclass: rows of the rarest class present
    pinned_auc: float
    pinned_ci: tuple[float, float]
    drop: float
    drop_lower: float
    drop_upper: float

    def shortfalls(self, rule: GateRule) -> list[str]:
        out = []
        if self.n_test_users < rule.min_test_users:
            out.append(f"{self.n_test_users} test users (need {rule.min_test_users})")
        for what, n in (
            ("positive", self.n_positive),
            ("negative", self.n_negative),
            ("rarest-class", self.min_class_rows),
        ):
            if n is not None and n < rule.min_labels:
                out.append(f"{n} {what} labels (need {rule.min_labels})")
        return out


def held_out_rows(design: Design) -> np.ndarray:
    """Held-out users' rows that have user features (what fit_evaluate tests on)."""
    has_user = ~np.isnan(design.x[:, : design.n_user_features]).all(axis=1)
    return (design.split == "test") & has_user


def with_user_block(design: Design, transform: Any) -> np.ndarray:
    """design.x with its z_u block replaced by transform(z_u) (NaN rows stay NaN)."""
    x = design.x.copy()
    z = x[:, : design.n_user_features]  # (rows, latent_dim)
    ok = ~np.isnan(z).all(axis=1)
    x[ok, : design.n_user_features] = transform(z[ok])
    return x


def _proba(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_proba(x), np.float64)


def paired_scores(
    model: Any,
    design_a: Design,
    design_b: Design,
    amap: AlignmentMap | None,
    references: dict[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(rows, scores): the held-out rows with user features on both batches (one label set,
    so rows match), and each scorer's scores on them: the pinned model on A ("pinned"), on B
    as served ("aligned"), on B's raw space ("unaligned"), plus each reference model on B."""
    if len(design_a.y) != len(design_b.y) or not np.array_equal(design_a.users, design_b.users):
        raise CompatError("the two designs are not built from one label set")
    rows = held_out_rows(design_a) & held_out_rows(design_b)
    raw = design_b.x if amap is None else with_user_block(design_b, amap.invert)
    scores = {
        "pinned": _proba(model, design_a.x[rows]),
        "aligned": _proba(model, design_b.x[rows]),
        "unaligned": _proba(model, raw[rows]),
    }
    for name, ref in (references or {}).items():
        scores[name] = _proba(ref, design_b.x[rows])
    return rows, scores


def compat_scores(
    model: Any, design_a: Design, design_b: Design, amap: AlignmentMap | None
) -> dict[str, float]:
    """Point AUCs of the pinned model on A and on B aligned / unaligned, on the held-out rows
    both batches cover."""
    rows, scores = paired_scores(model, design_a, design_b, amap)
    boot = paired_bootstrap(design_a.y[rows], scores, design_a.users[rows], n_resamples=1)
    return {name: m["auc"] for name, m in boot.point.items()}


def _label_counts(design: Design, rows: np.ndarray) -> dict[str, int | None]:
    y = design.y[rows]
    if design.classes:
        present = np.bincount(y, minlength=len(design.classes))
        present = present[present > 0]
        return {
            "n_positive": None,
            "n_negative": None,
            "min_class_rows": int(present.min()) if len(present) else 0,
        }
    n_pos = int((y > 0).sum())
    return {"n_positive": n_pos, "n_negative": int(len(y) - n_pos), "min_class_rows": None}


def _summary(boot: Bootstrap, level: float) -> dict[str, dict[str, Any]]:
    """Per scorer: each metric's point value and two-sided interval at `level`."""
    out: dict[str, dict[str, Any]] = {}
    for name, metrics in boot.point.items():
        out[name] = {}
        for metric, value in metrics.items():
            out[name][metric] = value
            out[name][f"{metric}_ci"] = list(boot.interval(name, metric, level))
    return out


@dataclass
class CompatResult:
    """One compatibility check: the verdict, why, and every number behind it."""

    model_id: str
    batch_id: str
    from_batch: str
    verdict: str
    reasons: list[str]
    lineage: Lineage
    evidence: Evidence | None  # None: the model cannot read B at all (another z_u width)
    metrics: dict[str, dict[str, Any]]  # scorer -> metric, metric_ci
    record: dict[str, Any]  # what is stored in the model's metrics["compat"][batch_id]

    @property
    def compatible(self) -> bool:
        return self.verdict == COMPATIBLE


def assess(
    model: Any,
    design_a: Design,
    design_b: Design,
    amap: AlignmentMap | None,
    lineage: Lineage,
    rule: GateRule,
    references: dict[str, Any] | None = None,
    k: int = 10,
) -> tuple[str, list[str], Evidence, dict[str, dict[str, Any]], Bootstrap]:
    """Score, bootstrap over test users and decide; no I/O (evaluate_compat adds it)."""
    rows, scores = paired_scores(model, design_a, design_b, amap, references)
    if not rows.any():
        raise CompatError(
            "no held-out user has z_u on both batches at the label time: is the label time "
            "before one of the batches' snapshots?"
        )
    y, users = design_a.y[rows], design_a.users[rows]
    queries = None if design_a.classes else design_a.queries()[rows]
    boot = paired_bootstrap(y, scores, users, queries, k, rule.n_resamples, rule.seed)
    drop, lower, upper = boot.difference("pinned", "aligned", "auc", rule.level)
    evidence = Evidence(
        n_test_users=int(len(np.unique(users))),
        n_labels=int(rows.sum()),
        **_label_counts(design_a, rows),
        pinned_auc=boot.point["pinned"]["auc"],
        pinned_ci=boot.interval("pinned", "auc", rule.level),
        drop=drop,
        drop_lower=lower,
        drop_upper=upper,
    )
    verdict, reasons = rule.decide(lineage, evidence)
    return verdict, reasons, evidence, _summary(boot, rule.level), boot


def _design(
    settings: Settings, spec: dict, labels: pd.DataFrame, batch_id: str, split_seed: int
) -> Design:
    frame = build_training_set(settings, labels, batch_id, "z_u", validate=False)
    return _spec_design(settings, spec, frame, split_seed)


def _spec_design(settings: Settings, spec: dict, frame: pd.DataFrame, split_seed: int) -> Design:
    """The design in the model's own feature layout (its spec's classes and vector widths)."""
    classes = spec["classes"] or None
    return make_design(settings, frame, "z_u", classes, seed=split_seed, dims=spec.get("dims"))


def _alignment(settings: Settings, batch_id: str) -> AlignmentMap | None:
    with session_scope(settings.metadata_db_url) as session:
        art = Path(batches.get_batch(session, batch_id).artifact_path)
    return AlignmentMap.load(art)


def judge(
    settings: Settings,
    model_id: str,
    batch_id: str,
    model: Any,
    design_a: Design,
    design_b: Design,
    rule: GateRule,
    references: dict[str, Any] | None = None,
    as_of: pd.Timestamp | None = None,
    split_seed: int | None = None,
    save: bool = True,
    reference_info: dict[str, Any] | None = None,
) -> CompatResult:
    """The verdict on designs already built (one label set, z_u of the model's batch A and of
    batch_id): lineage from the metadata DB, B's alignment map from its artifact, the paired
    bootstrap, the record (saved unless save=False). references: other models scored on B
    beside the pinned one (reference_info says how they were made)."""
    with session_scope(settings.metadata_db_url) as session:
        pinned = session.get(DownstreamModel, model_id)
        if pinned is None:
            raise CompatError(f"unknown downstream model {model_id!r}")
        from_batch = pinned.pinned_batch_id
    lineage = alignment_lineage(settings, from_batch, batch_id)
    when = {
        "from_batch": from_batch,
        "as_of": None if as_of is None else as_of.isoformat(),
        "split_seed": split_seed,
        "evaluated_at": str(utcnow()),
    }
    if design_b.n_user_features != design_a.n_user_features:
        reasons = [
            f"z_u of {batch_id} has {design_b.n_user_features} dimensions, {from_batch}'s "
            f"{design_a.n_user_features}: the model cannot read it (retrain it on {batch_id})"
        ]
        record = {
            "verdict": INCOMPATIBLE,
            "compatible": False,
            "reasons": reasons,
            "lineage": asdict(lineage),
            **when,
        }
        if save:
            save_record(settings, model_id, batch_id, record)
        return CompatResult(
            model_id, batch_id, from_batch, INCOMPATIBLE, reasons, lineage, None, {}, record
        )
    amap = _alignment(settings, batch_id)
    verdict, reasons, evidence, metrics, boot = assess(
        model, design_a, design_b, amap, lineage, rule, references
    )
    record = {
        "verdict": verdict,
        "compatible": verdict == COMPATIBLE,
        "reasons": reasons,
        **{name: m["auc"] for name, m in metrics.items()},  # point AUCs, as the report reads
        "drop": evidence.drop,
        "drop_bounds": [evidence.drop_lower, evidence.drop_upper],
        "metrics": metrics,
        "evidence": asdict(evidence),
        "lineage": asdict(lineage),
        "rule": asdict(rule),
        "max_drop": rule.max_drop,
        "bootstrap": (
            f"paired bootstrap over test users, {boot.n_resamples} resamples: drop bounds "
            f"one-sided {rule.level:.0%} each, metric intervals two-sided {rule.level:.0%} "
            "percentile"
        ),
        "reference": reference_info or {},
        **when,
    }
    if save:
        save_record(settings, model_id, batch_id, record)
    log.info("model %s on batch %s: %s (%s)", model_id, batch_id, verdict, "; ".join(reasons))
    return CompatResult(
        model_id, batch_id, from_batch, verdict, reasons, lineage, evidence, metrics, record
    )


@dataclass
class Reference:
    """The point-in-time retrain: what the downstream team could have fitted at B's time."""

    model: Any | None  # None when B's time offers no labels or vectors to fit on
    info: dict[str, Any]


def _vectors_at(
    settings: Settings, batch_id: str, t: pd.Timestamp, users: np.ndarray
) -> tuple[dict[int, np.ndarray], pd.Timestamp | None]:
    """B's z_u of these users from the newest feature snapshot at or before t, embedded with
    B's encoder (as served: its alignment map applied); ({}, None) without such a snapshot."""

    times = [s for s in snapshot_times(settings.paths) if s <= t]
    if not times:
        return {}, None
    snapshot = Snapshot.load(settings.paths, times[-1])
    known = np.intersect1d(users, snapshot.onboarding[C.USER_ID].to_numpy())
    if not len(known):
        return {}, times[-1]
    encoder, layout = load_encoder(settings, batch_id)
    z = encoder.embed(snapshot.matrix(known, layout))  # (known, latent_dim)
    return dict(zip(known.tolist(), z, strict=True)), times[-1]


def point_in_time_reference(
    settings: Settings, task: str, family: str, spec: dict[str, Any], batch_id: str
) -> Reference:
    """The same family fitted on the newest labels complete at batch_id's as-of time t_B: the
    window (t_B - w, t_B] with label time t_B - w, features of batch_id as of that label time
    (its published vectors, or its encoder on the newest snapshot before it). Train and
    validation users of the model's split only, so the test users the gate scores are never
    fitted. Unavailable (model None, info says why) when B's time offers nothing to fit on."""
    window = int(spec["window_days"])
    split_seed = int(spec.get("split_seed", settings.seed))
    t_b = batch_as_of(settings, batch_id)
    label_time = t_b - pd.Timedelta(days=window)
    info: dict[str, Any] = {
        "what": "point-in-time retrain on the newest labels complete at the new batch's time",
        "label_time": label_time.isoformat(),
        "labels_until": t_b.isoformat(),
        "batch": batch_id,
    }
    try:
        labels = task_labels(settings, task, label_time, window, settings.seed)
    except ValueError as err:  # e.g. no events before the label time
        return Reference(None, info | {"available": False, "why": str(err)})
    if labels.empty:
        return Reference(None, info | {"available": False, "why": "no labels in that window"})
    frame = build_training_set(settings, labels, batch_id, "z_u", validate=False)
    info["vectors"] = "published"
    if frame[C.Z_U].isna().all():  # B was first published after label_time: embed it then
        found, snap = _vectors_at(settings, batch_id, label_time, labels[C.USER_ID].unique())
        if not found or snap is None:
            why = f"no feature snapshot at or before {label_time} to embed batch {batch_id} on"
            return Reference(None, info | {"available": False, "why": why})
        frame[C.Z_U] = [found.get(int(u)) for u in frame[C.USER_ID]]
        info["vectors"] = f"embedded from the snapshot at {snap.isoformat()}"
    design = _spec_design(settings, spec, frame, split_seed)
    try:
        model, fit = fit_evaluate(design, family, seed=split_seed, min_val_users=MIN_VAL_USERS)
    except ValueError as err:
        return Reference(None, info | {"available": False, "why": str(err)})
    counts: dict[str, Any] = {k: fit[k] for k in ("train_users", "val_users") if k in fit}
    return Reference(model, info | {"available": True, **counts})


def evaluate_compat(
    settings: Settings,
    model_id: str,
    batch_id: str,
    as_of: pd.Timestamp | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    rule: GateRule | None = None,
    save: bool = True,
) -> CompatResult:
    """Check model_id against batch_id on the labels after as_of (default: the batch's as_of),
    on the model's own held-out users (its spec's split seed); record the result unless
    save=False. `rule` overrides max_drop and the other thresholds."""
    rule = rule or GateRule(max_drop=max_drop, seed=settings.seed)
    reg = load_registered(settings, model_id)
    pinned, spec = reg.record.pinned_batch_id, reg.spec
    if spec["feature_set"] != "z_u":
        raise CompatError(f"model {model_id} does not read z_u")
    trainable_batch(settings, batch_id)
    split_seed = int(spec.get("split_seed", settings.seed))
    as_of = as_of if as_of is not None else batch_as_of(settings, batch_id)
    labels = task_labels(settings, reg.record.task, as_of, spec["window_days"], settings.seed)
    design_a = _design(settings, spec, labels, pinned, split_seed)
    design_b = _design(settings, spec, labels, batch_id, split_seed)
    same_width = design_b.n_user_features == design_a.n_user_features  # else judge refuses B
    ref = (
        point_in_time_reference(settings, reg.record.task, reg.record.family, spec, batch_id)
        if same_width
        else Reference(None, {})
    )
    return judge(
        settings,
        model_id,
        batch_id,
        reg.model,
        design_a,
        design_b,
        rule,
        {} if ref.model is None else {RETRAINED: ref.model},
        as_of,
        split_seed,
        save,
        ref.info,
    )


def save_record(settings: Settings, model_id: str, batch_id: str, record: dict) -> None:
    """metrics["compat"][batch_id] = record (the JSON column is reassigned, not mutated)."""
    with session_scope(settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, model_id)
        if row is None:
            raise CompatError(f"unknown downstream model {model_id!r}")
        compat = dict((row.metrics or {}).get(COMPAT_KEY, {}))
        compat[batch_id] = json.loads(json.dumps(record, default=float))
        row.metrics = {**(row.metrics or {}), COMPAT_KEY: compat}


def _refusal(record: dict | None, pinned: str) -> str | None:
    """Why a record does not allow a repin from `pinned`, or None when it does."""
    if not record:
        return "no compatibility record"
    verdict = record.get("verdict")
    if verdict is None:  # written before verdicts existed: the point drop alone passed it
        return "the record predates the confidence-bound gate"
    if record.get("from_batch") != pinned:
        return f"the record was made against {record.get('from_batch')}, not {pinned}"
    if verdict != COMPATIBLE:
        return f"verdict {verdict}: {'; '.join(record.get('reasons', []))}"
    return None


def repin(settings: Settings, model_id: str, batch_id: str, force_reason: str | None = None) -> str:
    """Move model_id's pin to batch_id without retraining. Needs a compatible record made
    against the current pin, unless force_reason is given: then the move goes ahead and the
    reason is recorded with it (metrics["repins"]).

    Returns the previous batch. The model's spec.json records the move.
    """
    trainable_batch(settings, batch_id)
    if force_reason is not None and not force_reason.strip():
        raise CompatError("a forced repin needs a reason")
    with session_scope(settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, model_id)
        if row is None:
            raise CompatError(f"unknown downstream model {model_id!r}")
        record = (row.metrics or {}).get(COMPAT_KEY, {}).get(batch_id)
        why = _refusal(record, row.pinned_batch_id)
        if why is not None and force_reason is None:
            raise CompatError(
                f"refusing to repin {model_id} to {batch_id}: {why} "
                f"(run `userrep batches compat {batch_id} --model {model_id}`, or pass "
                "--force REASON)"
            )
        previous, row.pinned_batch_id = row.pinned_batch_id, batch_id
        move = {
            "from": previous,
            "to": batch_id,
            "at": str(utcnow()),
            "verdict": (record or {}).get("verdict"),
            "forced": force_reason,
            "refused_because": why,
        }
        row.metrics = {
            **(row.metrics or {}),
            REPINS_KEY: [*(row.metrics or {}).get(REPINS_KEY, []), move],
        }
        spec_path = Path(row.artifact_path) / SPEC_FILE
    spec = json.loads(spec_path.read_text())
    spec |= {C.BATCH_ID: batch_id, "repinned_from": [*spec.get("repinned_from", []), previous]}
    spec_path.write_text(json.dumps(spec, indent=2, default=str))
    if force_reason is not None and why is not None:
        log.warning(
            "repinned %s from %s to %s, forced: %s (%s)",
            model_id,
            previous,
            batch_id,
            force_reason,
            why,
        )
    else:
        log.info("repinned %s from %s to %s", model_id, previous, batch_id)
    return previous
