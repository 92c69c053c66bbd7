"""Downstream transfer on the tiny synthetic workspace: point-in-time training sets, GBDTs
behind one interface, models pinned to their batch, baselines, similar users.

The module works on a copy of the session's `built` workspace with an encoder, a snapshot and a
batch all as of T = one week before the last event, so labels in (T, T + 7d] are truly future.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from downstream import labels as L
from downstream.models import load_model, make_model
from downstream.training_set import build_training_set
from representation import batches, build, pipeline
from representation.build import events_until
from representation.encoders import load_item_vectors
from representation.train import TrainConfig
from tests.conftest import Pipeline
from userrep import columns as C
from userrep.data.synthetic import SyntheticData
from userrep.db import DownstreamModel, session_scope
from userrep.settings import Settings

pytestmark = pytest.mark.slow
DAY = pd.Timedelta(days=1)


@dataclass
class Workspace:
    settings: Settings
    as_of: pd.Timestamp  # T: encoder, snapshot and batch time
    batch_id: str  # trained and embedded as of T, active
    data: SyntheticData


def publish_planted(
    settings: Settings,
    batch_id: str,
    z_by_time: dict[pd.Timestamp, np.ndarray],
    user_ids: np.ndarray,
    online: bool = False,
) -> None:
    """Register a batch and publish given vectors (offline; online too if asked), then ready."""
    dim = next(iter(z_by_time.values())).shape[1]
    with session_scope(settings.metadata_db_url) as session:
        batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=min(z_by_time).to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=dim,
            artifact_path="-",
            artifact_sha256="-",
            metrics={},
        )
    for t, z in z_by_time.items():
        table = pipeline.embedding_table(user_ids, z, batch_id, t)
        pq.write_table(
            table, settings.paths.user_embedding / f"{batch_id}__{t:%Y%m%dT%H%M%S}.parquet"
        )
        if online:
            from userrep.feast_store import feature_store

            feature_store(settings).write_to_online_store(C.USER_EMBEDDING_VIEW, table.to_pandas())
    with session_scope(settings.metadata_db_url) as session:
        batches.mark_ready(session, batch_id, len(user_ids))


def _promote(settings: Settings, batch_id: str) -> None:
    with session_scope(settings.metadata_db_url) as session:
        batches.promote(session, batch_id, force_reason="test: no validation suite here")


@pytest.fixture(scope="module")
def ws(built: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    from userrep.feast_store import apply_repo

    root = tmp_path_factory.mktemp("downstream") / "ws"
    shutil.copytree(built.settings.workspace, root)
    settings = Settings(workspace=root, text_cache=built.settings.text_cache)
    apply_repo(settings)  # point the copied registry's sources at the copy
    t = built.earlier
    build.build_encoders(settings, t)  # item vectors from events <= T only
    build.build_snapshot(settings, t)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and 2x faster than 2 threads on shared cores
    try:
        # 30 epochs (early stopping on): at 12 the held-out loss was still falling at the last
        # epoch, and the cold-start check below sat at chance on an under-trained encoder
        batch_id = pipeline.train_batch(
            settings, t, None, TrainConfig(epochs=30, seed=0, select=False)
        )
    finally:
        torch.set_num_threads(threads)
    pipeline.embed_batch(settings, batch_id, t)
    _promote(settings, batch_id)
    build.materialize_latest(settings, t, views=[C.ITEM_VECTORS_VIEW])
    yield Workspace(settings, t, batch_id, built.data)
    built.settings.export_env()  # later modules read the shared workspace again


@pytest.fixture(scope="module")
def trained(ws: Workspace):  # -> TaskResult
    from downstream.tasks import train_task

    return train_task(ws.settings, family="lightgbm", batch_id=ws.batch_id, as_of=ws.as_of)


def test_future_listening_labels_look_only_at_the_window(ws: Workspace) -> None:
    labels = L.future_listening(ws.settings, ws.as_of, negatives_per_positive=4, seed=0)
    ev = events_until(ws.settings.paths, ws.as_of + 7 * DAY)
    active = set(ev.loc[ev[C.TS] <= ws.as_of, C.USER_ID])
    fut = ev[(ev[C.TS] > ws.as_of) & ev[C.USER_ID].isin(active)]
    expected = set(zip(fut[C.USER_ID], fut[C.ITEM_ID], strict=True))
    pos = labels[labels[L.LABEL] == 1]
    assert set(zip(pos[C.USER_ID], pos[C.ITEM_ID], strict=True)) == expected
    neg = labels[labels[L.LABEL] == 0]
    assert not set(zip(neg[C.USER_ID], neg[C.ITEM_ID], strict=True)) & expected
    assert 3.5 * len(pos) <= len(neg) <= 4 * len(pos)
    assert (labels[C.EVENT_TIMESTAMP] == ws.as_of).all()
    again = L.future_listening(ws.settings, ws.as_of, seed=0)
    pd.testing.assert_frame_equal(labels, again)  # fixed seed


def test_training_set_keeps_rows_in_order_and_never_reads_ahead(ws: Workspace) -> None:
    t1, t2 = ws.as_of - 3 * DAY, ws.as_of - DAY
    users = np.array([0, 1])
    planted = {t1: np.full((2, 4), 1.0) * [[1], [2]], t2: np.full((2, 4), 10.0) * [[1], [2]]}
    publish_planted(ws.settings, "b-planted-pit", planted, users)
    times = [t1 - DAY, t1, t1 + DAY, t1 + DAY, t2, ws.as_of + 30 * DAY, t1 + DAY, t1 + DAY]
    labels = pd.DataFrame(
        {
            C.USER_ID: [0, 0, 0, 0, 0, 0, 1, 999_999],
            C.EVENT_TIMESTAMP: pd.DatetimeIndex(times),
            L.LABEL: range(8),
        },
        index=np.arange(100, 108)[::-1],
    )
    frame = build_training_set(ws.settings, labels, "b-planted-pit", "z_u")
    assert len(frame) == len(labels) and (frame.index == labels.index).all()
    assert (frame[L.LABEL].to_numpy() == np.arange(8)).all()
    first = [None if v is None else float(v[0]) for v in frame[C.Z_U]]
    # before the first vector: null; between snapshots: the earlier one, never the later one
    assert first == [None, 1.0, 1.0, 1.0, 10.0, 10.0, 2.0, None]
    assert frame.attrs["nulls"] == {
        "rows": 8,
        "user_features_null": 2,
        "unknown_users": 1,
        "before_first_snapshot": 1,
    }


def test_item_vectors_are_point_in_time_too(ws: Workspace) -> None:
    labels = pd.DataFrame(
        {
            C.USER_ID: [0, 0],
            C.ITEM_ID: [3, 3],
            C.EVENT_TIMESTAMP: [ws.as_of - DAY, ws.as_of],
            L.LABEL: [0, 1],
        }
    )
    frame = build_training_set(ws.settings, labels, ws.batch_id, "curated")
    vecs = load_item_vectors(ws.settings.paths)  # CURRENT: the encoder built as of T
    assert frame["collab"].iloc[0] is None  # no encoder existed a day before T
    np.testing.assert_array_equal(
        frame["collab"].iloc[1], vecs.collab[vecs.index(np.array([3]))[0]]
    )
    assert frame.attrs["nulls"]["item_features_null"] == 1


def test_retired_or_building_batch_is_refused(ws: Workspace) -> None:
    labels = pd.DataFrame({C.USER_ID: [0], C.EVENT_TIMESTAMP: [ws.as_of]})
    publish_planted(ws.settings, "b-planted-old", {ws.as_of: np.ones((1, 4))}, np.array([0]))
    with session_scope(ws.settings.metadata_db_url) as session:
        batches.retire(session, "b-planted-old")
        batches.create_batch(
            session,
            batch_id="b-planted-wip",
            as_of=ws.as_of.to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=4,
            artifact_path="-",
            artifact_sha256="-",
            metrics={},
        )
    with pytest.raises(batches.BatchError, match="retired"):
        build_training_set(ws.settings, labels, "b-planted-old")
    with pytest.raises(batches.BatchError, match="building"):
        build_training_set(ws.settings, labels, "b-planted-wip")


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_models_round_trip_bit_for_bit(family: str, n_classes: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 8)).astype(np.float32)
    x[::9, 2] = np.nan
    y = np.digitize(x[:, 0], np.linspace(-0.6, 0.6, n_classes - 1))  # planted: feature 0 decides
    model = make_model(family, n_estimators=60).fit(x[:1000], y[:1000], x[1000:1200], y[1000:1200])
    model.save(tmp_path)
    again = load_model(tmp_path)
    assert type(again) is type(model) and not list(tmp_path.glob("*.pkl"))
    p = model.predict_proba(x[1200:])
    np.testing.assert_array_equal(p, again.predict_proba(x[1200:]))
    pred = (p > 0.5).astype(int) if p.ndim == 1 else p.argmax(axis=1)
    assert (pred == y[1200:]).mean() > 0.85


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="xgboost"):
        make_model("catboost")


def test_z_u_beats_popularity_and_the_curated_features(ws: Workspace) -> None:
    from downstream.baselines import compare_baselines
    from downstream.results import COLD, WARM

    table, results = compare_baselines(ws.settings, ws.as_of, ws.batch_id, cold_start=True)
    print(table)
    auc = {r.method: r.metrics["auc"] for r in results if r.section == WARM}
    assert set(auc) == {"z_u", "curated", "als", "mult-dae", "raw", "popularity"}
    assert auc["z_u"] > 0.6 and auc["z_u"] > auc["popularity"] + 0.03
    assert auc["z_u"] > auc["curated"]
    # planted taste clusters: the multi-hot autoencoder finds them too
    assert auc["mult-dae"] > auc["popularity"] + 0.03
    z = next(r for r in results if r.method == "z_u")
    assert z.n_user_features == 64 and z.metrics["test_users"] > 20
    dae = next(r for r in results if r.method == "mult-dae")
    assert dae.n_user_features == 200  # the Mult-VAE network's latent size, reused
    assert 0 < z.metrics["recall@10"] <= 1 and 0 < z.metrics["ndcg@10"] <= 1
    assert set(z.seconds or {}) == {"training_set", "fit"}
    warm_table, cold_table = table.split("\n\n")[:2], table.split("\n\nCold start")[1]
    assert "\n".join(warm_table).count("\n| ") == 7  # header + one row per method
    cold = {r.method for r in results if r.section == COLD}
    assert cold in ({"z_u", "onboarding", "popularity"}, set())  # set(): none with labels
    assert cold_table.count("\n| ") == (4 if cold else 0)


def test_registered_model_is_pinned_and_served_its_own_batch(ws: Workspace, trained) -> None:
    from downstream.tasks import online_features, score_online

    with session_scope(ws.settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, trained.model_id)
        assert row is not None and row.pinned_batch_id == ws.batch_id
        assert Path(row.artifact_path) == ws.settings.workspace / "models" / trained.model_id
        assert (Path(row.artifact_path) / "model.txt").exists() and row.metrics["auc"] > 0.55
        # the batch's validation state as the metadata DB had it (promoted with a forced reason)
        assert row.metrics["batch_validation"]["run_id"] is None
        assert row.metrics["split_seed"] == ws.settings.seed and row.metrics["learned"]
    ours = pd.read_parquet(next(ws.settings.paths.user_embedding.glob(f"{ws.batch_id}__*")))
    users = ours[C.USER_ID].to_numpy()[[0, 1, 2, -1]]
    publish_planted(ws.settings, "b-planted-next", {ws.as_of: np.full((4, 64), 9.0)}, users, True)
    _promote(ws.settings, "b-planted-next")  # a newer batch is now active
    with (
        session_scope(ws.settings.metadata_db_url) as session,
        pytest.raises(batches.BatchError, match="pinned"),
    ):
        batches.retire(session, ws.batch_id)  # our model still needs it
    x, batch = online_features(ws.settings, trained.model_id, users, [3, 4, 5, 6])
    expected = np.stack(ours.set_index(C.USER_ID)[C.Z_U][users].to_numpy())
    assert batch == ws.batch_id
    np.testing.assert_array_equal(x[:, :64], expected)  # the pinned batch, not the active one
    scores = score_online(ws.settings, trained.model_id, [*users, 999_999], [3, 4, 5, 6, 3])
    assert scores.shape == (5,) and ((scores[:4] > 0) & (scores[:4] < 1)).all()
    assert np.isnan(scores[4])  # unknown user: no score rather than a made-up one


def test_genre_preference_with_xgboost(ws: Workspace) -> None:
    from downstream.tasks import train_task

    result = train_task(
        ws.settings, task=L.GENRE_PREFERENCE, family="xgboost", batch_id=ws.batch_id, as_of=ws.as_of
    )
    n_genres = ws.data.item_truth[C.CLUSTER].nunique()
    assert result.metrics["accuracy"] > 2.0 / n_genres
    assert result.model_id is not None


def test_similar_users_recover_planted_clusters(ws: Workspace) -> None:
    from downstream.similar import batch_vectors, evaluate_similar, friends_auc, similar_users

    report = evaluate_similar(ws.settings, ws.batch_id, k=10, truth=ws.data.user_truth)
    purity = report["clusters"]
    assert purity["purity"] > 2 * purity["chance"]
    users, z, _ = batch_vectors(ws.settings, ws.batch_id)
    cluster = ws.data.user_truth.set_index(C.USER_ID)[C.CLUSTER][users].to_numpy()
    rng = np.random.default_rng(0)
    a = rng.integers(len(users), size=400)
    b = np.array([rng.choice(np.flatnonzero(cluster == cluster[i])) for i in a])
    friends = pd.DataFrame({C.USER_ID: users[a], "friend_id": users[b]})  # planted: same cluster
    assert friends_auc(users, z, friends)["auc"] > 0.7
    near = similar_users(ws.settings, int(users[0]), k=5, batch_id=ws.batch_id)
    assert len(near) == 5 and int(users[0]) not in set(near[C.USER_ID])
    assert near["similarity"].is_monotonic_decreasing


def test_cli_writes_a_training_set(ws: Workspace, tmp_path: Path) -> None:
    from userrep.cli import app

    out = tmp_path / "ts.parquet"
    args = [
        "-w",
        str(ws.settings.workspace),
        "downstream",
        "training-set",
        "--out",
        str(out),
        "--batch",
        ws.batch_id,
        "--task",
        L.GENRE_PREFERENCE,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) > 50 and frame[C.Z_U].notna().all()
    assert "no validation run" in " ".join(result.output.split())
    for cmd in ("training-set", "train", "score", "compare", "similar", "list"):
        assert CliRunner().invoke(app, ["downstream", cmd, "--help"]).exit_code == 0


def test_ablating_both_modalities_costs_more_than_one(ws: Workspace) -> None:
    from downstream.ablation import ablation_results, ablation_table, parse_ablations
    from downstream.baselines import run_method
    from downstream.tasks import task_labels

    assert parse_ablations("7d, collab,all+stats") == [("7d",), ("collab",), ("all", "stats")]
    with pytest.raises(ValueError, match="unknown ablation"):
        parse_ablations("7d,audio")
    labels = task_labels(ws.settings, L.FUTURE_LISTENING, ws.as_of, 7, ws.settings.seed)
    full, _ = run_method(ws.settings, "z_u", labels, ws.as_of, ws.batch_id, "lightgbm")
    # planted: taste lives in the item vectors (history and onboarding picks); without both
    # modalities z_u keeps only counts, recency and demographics
    results = ablation_results(
        ws.settings, ws.batch_id, labels, ws.as_of, ["collab", "collab+content"], "lightgbm"
    )
    by = {r.method: r.metrics for r in results}
    assert set(by) == {"z_u - collab", "z_u - collab+content"}
    blind, one = by["z_u - collab+content"], by["z_u - collab"]
    assert blind["test_users"] == full.metrics["test_users"]  # same users, same split
    assert blind["input_dim"] < one["input_dim"] < blind["full_input_dim"]
    assert full.metrics["auc"] - blind["auc"] > 0.05
    assert blind["auc"] < one["auc"]
    table = ablation_table(results, full)
    assert "decrement" in table and f"{full.metrics['auc'] - blind['auc']:+.3f}" in table
    print(table)


def test_cli_compare_refuses_an_unknown_ablation(ws: Workspace) -> None:
    from userrep.cli import app

    args = ["-w", str(ws.settings.workspace), "downstream", "compare", "--ablate", "7d,audio"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "unknown ablation" in result.output


def test_report_measures_costs_and_writes_one_page(ws: Workspace) -> None:
    from downstream import report
    from userrep.cli import app

    build.materialize_latest(ws.settings, ws.as_of)  # curated features online, as in the demo
    data = report.collect(
        ws.settings,
        ws.batch_id,
        ws.as_of,
        methods=("z_u", "curated", "popularity"),
        cost_tasks=(L.FUTURE_LISTENING,),
        n_calls=10,
        truth=ws.data.user_truth,
    )
    cost = {c.feature_set: c for c in data.costs}
    z, cur = cost["z_u"].online, cost["curated"].online
    n_curated = 2 * len(ws.settings.horizon_list) + 3 + 3  # per horizon, stats, onboarding
    assert (z.features, z.values, cur.features) == (1, 64, n_curated)
    assert z.found == 1.0 and cur.found == 1.0 and z.calls == 10
    assert z.bytes > 64 * 4 and 0 < z.p50_ms <= z.p95_ms
    assert all(c.model_bytes > 0 and c.training_set_s > 0 and c.train_s > 0 for c in data.costs)
    assert cost["z_u"].metrics["auc"] > cost["curated"].metrics["auc"]  # as in the compare run
    assert data.encoder_metrics["train_loss"] and data.projection is not None
    assert data.projection[2] == "planted cluster" and len(data.projection[1]) > 500
    before = set(ws.settings.paths.reports.glob("downstream_*"))
    html_path, md_path = report.write_report(data, ws.settings.paths.reports)
    try:
        page = html_path.read_text()
        assert {html_path, md_path} == set(ws.settings.paths.reports.glob("downstream_*")) - before
        for title in ("Task metrics", "Infrastructure cost", "z_u projection", "Autoencoder"):
            assert f"<h2>{title}" in page
        assert "Cold start" in md_path.read_text()
    finally:
        html_path.unlink()
        md_path.unlink()
    assert CliRunner().invoke(app, ["report", "--help"]).exit_code == 0


def test_cold_start_users_onboarding_beats_popularity(ws: Workspace) -> None:
    """Runs last: it embeds the batch at a later snapshot (offline only)."""
    from downstream.coldstart import cold_start_table, cold_start_users, compare_cold_start

    t = ws.as_of + 3 * DAY  # inside the synthetic sign-up window of new users
    build.build_snapshot(ws.settings, t)
    pipeline.embed_batch(ws.settings, ws.batch_id, t, online=False)
    cold = cold_start_users(ws.settings, t)
    users, ev = ws.data.users, ws.data.events
    signed = users[users[C.SIGNUP_TS] <= t]
    played = set(ev.loc[ev[C.TS] <= t, C.USER_ID])
    expected = {
        u
        for u, s in zip(signed[C.USER_ID], signed[C.SIGNUP_TS], strict=True)
        if s > t - DAY or u not in played
    }
    assert set(cold.tolist()) == expected and len(expected) >= 10
    truth = ws.data.user_truth.set_index(C.USER_ID)
    assert truth.loc[cold, "is_new"].mean() > 0.8  # planted: the new sign-ups
    results, n = compare_cold_start(ws.settings, t, ws.batch_id, window_days=4)
    auc = {r.method: r.metrics["auc"] for r in results}
    assert set(auc) == {"z_u", "onboarding", "popularity"} and n >= 8
    # planted: onboarding picks come from the user's taste cluster, as do the future plays
    assert auc["onboarding"] > auc["popularity"] + 0.05
    # z_u of an onboarding-only input carries less of it on this tiny world: it must still
    # beat popularity; the margin is what the report shows, not a test threshold
    assert auc["z_u"] > auc["popularity"]
    assert all(r.metrics["test_users"] == n for r in results)
    table = cold_start_table(results, n, t)
    assert f": {n} users" in table and table.count("\n| ") == 4
    print(table)


def test_compare_rolls_over_every_label_time_of_the_batch(ws: Workspace) -> None:
    """Runs last: with the batch embedded forward from its training time (T, T + 3d: a
    backfill), compare takes labels at both times, each row joined to z_u as of its own time,
    with a window that tiles the times (3 days)."""
    from downstream.baselines import compare_baselines
    from downstream.label_times import label_times
    from downstream.results import WARM
    from downstream.tasks import task_labels

    later = ws.as_of + 3 * DAY
    if later not in pipeline.published_times(ws.settings, ws.batch_id):  # run alone
        build.build_snapshot(ws.settings, later)
        pipeline.embed_batch(ws.settings, ws.batch_id, later, online=False)
    times, window = label_times(ws.settings, ws.batch_id)
    assert times == [ws.as_of, later] and window == 3
    labels = task_labels(ws.settings, L.FUTURE_LISTENING, times, window, 0)
    frame = build_training_set(ws.settings, labels, ws.batch_id, "z_u", validate=False)
    for t in times:  # planted: the published file of each time is what its rows get
        published = pd.read_parquet(
            ws.settings.paths.user_embedding / f"{ws.batch_id}__{t:%Y%m%dT%H%M%S}.parquet"
        ).set_index(C.USER_ID)[C.Z_U]
        rows = frame[frame[C.EVENT_TIMESTAMP] == t].drop_duplicates(C.USER_ID)
        assert len(rows) > 50
        for u, z in zip(rows[C.USER_ID], rows[C.Z_U], strict=True):
            np.testing.assert_array_equal(z, published[u])
    table, results = compare_baselines(
        ws.settings, None, ws.batch_id, methods=("z_u", "als", "popularity")
    )
    print(table)
    assert "at 2 label times" in table and "(+3d)" in table
    auc = {r.method: r.metrics["auc"] for r in results if r.section == WARM}
    assert auc["z_u"] > auc["popularity"] + 0.03 and auc["als"] > 0.5
    z = next(r for r in results if r.method == "z_u")
    assert z.metrics["rows"] > 0 and z.metrics["rows_without_user_features"] == 0
