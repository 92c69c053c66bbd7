"""CLI, downstream stage: training-set, train, score, compare, similar, list (`userrep downstream`).

Thin wrappers over downstream/*; every command names or defaults to one batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from userrep.cli.app import (
    console,
    emit_json,
    emit_table,
    fail,
    parse_time,
    require_workspace,
    state,
)

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py

downstream_app = typer.Typer(
    help="Downstream models on z_u: training sets, GBDTs pinned to a batch, baselines.",
    no_args_is_help=True,
)
commands.add_typer(downstream_app, name="downstream")

TaskOpt = Annotated[str, typer.Option(help="future-listening | genre-preference.")]
AsOfOpt = Annotated[str | None, typer.Option(help="Label time T (default: the batch's as-of).")]
BatchOpt = Annotated[str | None, typer.Option(help="z_u batch (default: the active one).")]
WindowOpt = Annotated[int, typer.Option(help="Label window (T, T + days].")]
SeenOpt = Annotated[
    bool, typer.Option(help="Future listening: leave out items the user had before T.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
SplitSeedOpt = Annotated[
    int | None,
    typer.Option(
        "--split-seed",
        envvar="USERREP_SPLIT_SEED",
        help="Seed of the user split: which users train, validate and test (a hash of user id "
        "and seed; another seed gives an independent split). Default: USERREP_SEED.",
    ),
]


def _as_of(value: str | None, batch: str | None) -> object:
    from downstream.tasks import batch_as_of
    from downstream.training_set import trainable_batch

    return parse_time(value) or batch_as_of(state.settings, trainable_batch(state.settings, batch))


@downstream_app.command("training-set")
def training_set_cmd(
    out: Annotated[Path, typer.Option(help="Output parquet file.")],
    task: TaskOpt = "future-listening",
    as_of: AsOfOpt = None,
    batch: BatchOpt = None,
    feature_set: Annotated[str, typer.Option(help="z_u | curated | raw | onboarding.")] = "z_u",
    window_days: WindowOpt = 7,
    exclude_seen: SeenOpt = False,
    validate: Annotated[
        bool, typer.Option(help="Report the batch's newest validation run (metadata DB).")
    ] = True,
) -> None:
    """Build a task's labels and join point-in-time features through Feast; write parquet."""
    from downstream.tasks import task_labels
    from downstream.training_set import build_training_set
    from representation.batches import BatchError

    try:
        t = _as_of(as_of, batch)
        labels = task_labels(
            state.settings, task, t, window_days, state.settings.seed, exclude_seen
        )
        frame = build_training_set(state.settings, labels, batch, feature_set, validate=validate)
    except (BatchError, ValueError) as err:
        fail(str(err))
    frame.to_parquet(out, index=False)
    console.print(f"{len(frame):,} rows -> {out}; nulls: {frame.attrs['nulls']}")
    if "batch_validation" in frame.attrs:
        from downstream.training_set import BatchValidation

        console.print(BatchValidation(**frame.attrs["batch_validation"]).headline())


@downstream_app.command("train")
def train_cmd(
    task: TaskOpt = "future-listening",
    family: Annotated[str, typer.Option(help="xgboost | lightgbm.")] = "lightgbm",
    as_of: AsOfOpt = None,
    batch: BatchOpt = None,
    window_days: WindowOpt = 7,
    name: Annotated[str | None, typer.Option(help="Model name (default: task-family).")] = None,
    exclude_seen: SeenOpt = False,
    split_seed: SplitSeedOpt = None,
    min_val_users: Annotated[
        int,
        typer.Option(
            help="Fewest validation users early stopping may rely on; with fewer, the boosting "
            "rounds are chosen by user folds over the train + validation users (--folds)."
        ),
    ] = 30,
    folds: Annotated[
        int,
        typer.Option(
            help="User folds that choose the boosting rounds (each fold early-stops on its "
            "held-out users; the median is refitted on all train + validation users). 0: only "
            "when the validation split is under --min-val-users, then 5. Test users stay out."
        ),
    ] = 0,
) -> None:
    """Train a GBDT on z_u of one batch, evaluate on held-out users, register it pinned.

    Prints the test metrics with 95 % bootstrap intervals over test users, and a warning when
    the AUC interval reaches 0.5 (the model learned nothing usable)."""
    from downstream.tasks import train_task
    from representation.batches import BatchError

    try:
        result = train_task(
            state.settings,
            task,
            family,
            batch,
            parse_time(as_of),
            "z_u",
            window_days,
            name=name,
            exclude_seen=exclude_seen,
            split_seed=split_seed,
            min_val_users=min_val_users,
            round_folds=folds,
        )
    except (BatchError, ValueError) as err:
        fail(str(err))
    console.print(json.dumps(result.metrics, indent=2, default=str))
    console.print(f"model {result.model_id} pinned to batch {result.batch_id}")
    if not result.metrics.get("learned", True):
        ci = result.metrics.get("auc_ci", result.metrics.get("macro_auc_ci"))
        console.print(
            f"[yellow]warning:[/yellow] the test AUC's 95 % interval {ci} reaches 0.5 on "
            f"{result.metrics['test_users']} test users: this model learned nothing usable "
            "(more labels, a longer --window-days, or another task)"
        )
    print(result.model_id)


@downstream_app.command("score")
def score_cmd(
    model: Annotated[str, typer.Argument(help="Model id.")],
    users: Annotated[str, typer.Option(help="Comma-separated user ids.")],
    items: Annotated[
        str | None, typer.Option(help="Comma-separated item ids (item tasks).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score users (x items) online with z_u of the model's pinned batch (JSON, with or
    without --json)."""
    from downstream.tasks import score_online
    from representation.batches import BatchError

    try:
        user_ids = [int(u) for u in users.split(",") if u.strip()]
        item_ids = [int(i) for i in items.split(",") if i.strip()] if items else None
    except ValueError:
        fail(f"--users / --items: comma-separated integer ids, got {users!r} / {items!r}")
    try:
        scores = score_online(require_workspace(), model, user_ids, item_ids)
    except (BatchError, KeyError, ValueError) as err:
        fail(str(err))
    out = {"model_id": model, "users": user_ids, "items": item_ids}
    if scores.ndim == 2:  # multiclass: one probability per class, in the model's class order
        from downstream.registry import load_registered

        out["classes"] = load_registered(state.settings, model).spec["classes"]
    rounded = scores.round(6).astype(object)
    rounded[np.isnan(scores)] = None  # no score: JSON null
    print(json.dumps(out | {"scores": rounded.tolist()}))


@downstream_app.command("compare")
def compare_cmd(
    as_of: Annotated[
        list[str] | None,
        typer.Option(
            help="Label time T; repeatable (default: every time the batch is published at from "
            "its training time on, each row joined to z_u as of its own T)."
        ),
    ] = None,
    batch: BatchOpt = None,
    family: Annotated[str, typer.Option(help="xgboost | lightgbm.")] = "lightgbm",
    window_days: Annotated[
        int | None,
        typer.Option(
            help="Label window (T, T + days] (default: the spacing of the label times, so the "
            "windows tile the period; 7 for a single time)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the markdown table here.")] = None,
    exclude_seen: SeenOpt = False,
    cold_start: Annotated[
        bool,
        typer.Option(help="Add the cold-start section: users in their first day at T."),
    ] = True,
    ablate: Annotated[
        str | None,
        typer.Option(
            help="Retrain z_u without input blocks, one run per comma item (a+b: both at once): "
            "7d,30d,180d,all,collab,content,onboarding,stats,feedback."
        ),
    ] = None,
    folds: Annotated[
        int,
        typer.Option(
            help="Cross-fit over this many user folds so every labelled user is scored once "
            "(small data sets); 1: one train / val / test split by user."
        ),
    ] = 1,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of this comparison: the user split (or folds) every method shares, the "
            "sampled negatives and the model fits; another seed gives an independent split. "
            "Default: USERREP_SEED."
        ),
    ] = None,
) -> None:
    """Future listening: z_u vs curated, ALS, Mult-DAE, raw input, popularity; same split.
    Plus cold start (z_u vs onboarding picks vs popularity) and input ablations."""
    from downstream.ablation import parse_ablations
    from downstream.baselines import compare_baselines
    from representation.batches import BatchError

    try:
        switches = ["+".join(run) for run in parse_ablations(ablate or "")]
        times = [parse_time(t) for t in as_of or []]
        settings = state.settings
        if seed is not None:
            settings = settings.model_copy(update={"seed": seed})
        table, _ = compare_baselines(
            settings,
            times or None,
            batch,
            family,
            window_days,
            exclude_seen=exclude_seen,
            cold_start=cold_start,
            ablate=switches,
            folds=folds,
        )
    except (BatchError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    if out:
        out.write_text(table + "\n")
    print(table)


@downstream_app.command("similar")
def similar_cmd(
    user: Annotated[int | None, typer.Option(help="List this user's nearest neighbours.")] = None,
    k: Annotated[int, typer.Option(help="Neighbours.")] = 10,
    batch: BatchOpt = None,
) -> None:
    """Nearest users in z_u; without --user, evaluate (cluster purity, friends AUC)."""
    from downstream.similar import evaluate_similar, similar_users
    from representation.batches import BatchError

    try:
        if user is None:
            print(json.dumps(evaluate_similar(state.settings, batch, k), indent=2, default=str))
            return
        frame = similar_users(state.settings, user, k, batch)
    except (BatchError, KeyError, FileNotFoundError) as err:
        fail(str(err))
    print(frame.to_string(index=False))


@downstream_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """Registered downstream models and the batch each is pinned to."""
    from downstream.registry import list_models

    records = []
    for m in list_models(require_workspace()):
        records.append(
            {
                "model_id": m.model_id,
                "task": m.task,
                "family": m.family,
                "pinned_batch_id": m.pinned_batch_id,
                "status": m.status,
                "metrics": m.metrics,
                "created_at": m.created_at,
            }
        )
    if as_json:
        emit_json(records)
        return
    rows = []
    for r in records:
        metrics = dict(r["metrics"])  # type: ignore[call-overload]  # a JSON record
        score = metrics.get("auc", metrics.get("accuracy"))
        rows.append(
            (
                r["task"],
                r["family"],
                r["pinned_batch_id"],
                r["status"],
                "-" if score is None else f"{score:.3f}",
                f"{r['created_at']:%Y-%m-%d %H:%M}",
                r["model_id"],
            )
        )
    emit_table(("task", "family", "batch", "status", "AUC / acc", "created", "model"), rows)
