"""CLI `demo`: the main job end to end on the embedded default (synthetic data, no servers)."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import typer

from downstream.label_times import DEFAULT_HOLDOUT
from userrep import columns as C
from userrep.cli.app import console, fail, init_cmd, state
from userrep.cli.data import BuiltinDataset, encoders_build_cmd, features_build_cmd, ingest_cmd
from userrep.cli.report import report_cmd
from userrep.cli.representation import embed_cmd, train_cmd

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py


@commands.command("demo")
def demo_cmd(
    n_users: Annotated[int, typer.Option(help="Synthetic users.")] = 3000,
    snapshots: Annotated[
        int, typer.Option(help="Weekly feature snapshots ending at the last event (at least).")
    ] = 4,
    holdout: Annotated[
        float,
        typer.Option(
            help="Share of events after the batch's training time T0 (the 80/20 time split): "
            "z_u is embedded weekly from T0 on, and downstream labels are taken at each week."
        ),
    ] = DEFAULT_HOLDOUT,
    epochs: Annotated[int, typer.Option(help="Maximum autoencoder epochs.")] = 50,
    dataset: Annotated[
        str,
        typer.Option(
            help="synthetic (no files needed) | movielens-100k | lastfm-2k (read from "
            "../shared/datasets or $USERREP_DATASETS)."
        ),
    ] = "synthetic",
) -> None:
    """ingest -> encoders -> features -> train -> embed -> publish -> promote, read z_u back,
    then write the downstream report (reports/downstream_*.html).

    Encoders and the autoencoder are fitted as of T0, the weekly time before which 1 - holdout
    of the events lie; the batch is then embedded every week from T0 to the last event (the
    newest online), so downstream labels at each week are leak-free and cover many users."""
    from downstream.label_times import WEEK, holdout_start
    from representation.build import last_event_time

    if dataset not in {d.value for d in BuiltinDataset}:
        fail(
            f"unknown dataset {dataset!r}: choose from {', '.join(d.value for d in BuiltinDataset)}"
        )
    settings = state.settings
    console.rule(f"userrep demo ({dataset}) in {settings.workspace}")
    init_cmd()
    ingest_cmd(dataset=BuiltinDataset(dataset), n_users=n_users, seed=settings.seed)
    end = last_event_time(settings.paths).ceil("D")
    # T0 on the weekly grid ending at `end`: item vectors and z_u's encoder see events <= T0
    # only, and Feast joins each label time to the item vectors and z_u that existed then
    t0 = holdout_start(settings.paths, holdout, end, WEEK)
    encoders_build_cmd(as_of=str(t0))
    n = max(snapshots, round((end - t0) / WEEK) + 1)
    times = [str(end - WEEK * k) for k in reversed(range(n))]
    features_build_cmd(as_of=times)
    train_cmd(as_of=str(t0), epochs=epochs)
    embed_cmd(as_of=[t for t in times if pd.Timestamp(t) >= t0])  # the newest also online
    _promote_and_show(settings, end)
    _downstream_report(settings)


def _downstream_report(settings) -> None:
    """Write the report (metrics at every label time of the batch, costs, projection, loss
    curves) and print its path."""
    from representation.batches import active_batch
    from userrep.db import session_scope

    with session_scope(settings.metadata_db_url) as session:
        if active_batch(session) is None:  # promote refused: nothing to report on
            return
    path = report_cmd()
    console.print(f"downstream report: {path}")


def _promote_and_show(settings, as_of: pd.Timestamp) -> None:
    from representation import batches
    from representation.serving import get_user_embeddings
    from userrep.db import session_scope
    from validation.pipeline import validate_batch

    with session_scope(settings.metadata_db_url) as session:
        batch_id = batches.list_batches(session)[-1].batch_id
    outcome = validate_batch(settings, batch_id, as_of)
    console.print(
        f"validation of {batch_id}: {'passed' if outcome.success else 'FAILED'} "
        f"(report: {outcome.report_path})"
    )
    with session_scope(settings.metadata_db_url) as session:
        batches.promote(session, batch_id)  # the validation gate reads the run just recorded
    from representation.build import users_frame

    user = int(users_frame(settings.paths)[C.USER_ID].min())
    batch, z = get_user_embeddings(settings, [user])
    console.print(f"active batch {batch}; z_u[user {user}][:4] = {z[0][:4].round(3).tolist()}")
    console.print(
        "read it with Feast:\n"
        f"  export USERREP_WORKSPACE={settings.workspace}\n"
        f"  feast -c feature_repo get-online-features -e user_id={user} -e batch_id={batch} -f user_embedding:z_u"
    )
