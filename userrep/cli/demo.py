"""CLI `demo`: the main job end to end on the embedded default (synthetic data, no servers)."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import typer

from userrep import columns as C
from userrep.cli.app import app, console, state


@app.command("demo")
def demo_cmd(
    n_users: Annotated[int, typer.Option(help="Synthetic users.")] = 3000,
    snapshots: Annotated[
        int, typer.Option(help="Weekly feature snapshots ending at the last event.")
    ] = 4,
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
    then write the downstream report (reports/downstream_*.html)."""
    from representation.build import last_event_time
    from userrep.cli.app import fail, init_cmd
    from userrep.cli.data import BuiltinDataset, encoders_build_cmd, features_build_cmd, ingest_cmd
    from userrep.cli.representation import embed_cmd, train_cmd

    if dataset not in {d.value for d in BuiltinDataset}:
        fail(
            f"unknown dataset {dataset!r}: choose from {', '.join(d.value for d in BuiltinDataset)}"
        )
    settings = state.settings
    console.rule(f"userrep demo ({dataset}) in {settings.workspace}")
    init_cmd()
    ingest_cmd(dataset=BuiltinDataset(dataset), n_users=n_users, seed=settings.seed)
    end = last_event_time(settings.paths).ceil("D")
    # item vectors as of one week before the end: the downstream report labels (T, T + 7d]
    # there, and Feast joins only item vectors that existed at T
    encoders_build_cmd(as_of=str(end - pd.Timedelta(days=7)))
    times = [str(end - pd.Timedelta(days=7 * k)) for k in reversed(range(snapshots))]
    features_build_cmd(as_of=times)
    train_cmd(epochs=epochs)
    embed_cmd()
    _promote_and_show(settings, end)
    _downstream_report(settings, end - pd.Timedelta(days=7))


def _downstream_report(settings, earlier: pd.Timestamp) -> None:
    """Downstream tasks need labels after T: publish the batch (offline) one week earlier too,
    then write the report (metrics, costs, projection, loss curves) and print its path."""
    from representation.batches import active_batch
    from representation.pipeline import embed_batch
    from userrep.cli.report import report_cmd
    from userrep.db import session_scope

    with session_scope(settings.metadata_db_url) as session:
        active = active_batch(session)
        if active is None:  # promote refused: nothing to report on
            return
        batch_id = active.batch_id
    embed_batch(settings, batch_id, earlier, online=False)
    path = report_cmd(batch=batch_id, as_of=str(earlier))
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
