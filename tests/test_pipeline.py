"""The representation pipeline end to end on the tiny synthetic workspace: planted clusters,
cold start, batches side by side, atomic publishing, and reading z_u back through Feast."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from representation import batches, pipeline
from representation.serving import get_user_embeddings
from tests.conftest import TINY, Pipeline
from userrep import columns as C
from userrep.db import BatchStatus, session_scope

pytestmark = pytest.mark.slow


def published(p: Pipeline, batch_id: str) -> pd.DataFrame:
    """The batch's z_u as of the newest snapshot, with the planted truth."""
    path = p.settings.paths.user_embedding / f"{batch_id}__{p.end:%Y%m%dT%H%M%S}.parquet"
    return pd.read_parquet(path).merge(p.data.user_truth, on=C.USER_ID)


def knn_purity(z: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    return float((labels[idx[:, 1:]] == labels[:, None]).mean())


def test_users_of_a_planted_cluster_are_neighbours_in_z(built: Pipeline) -> None:
    df = published(built, built.batch_id)
    z = np.stack(df[C.Z_U].to_numpy())
    assert z.shape == (len(built.data.users), 64) and np.isfinite(z).all()
    purity = knn_purity(z, df[C.CLUSTER].to_numpy())
    assert purity > 0.6  # chance is 1/6


def test_cold_start_user_lands_in_the_cluster_of_their_picks(built: Pipeline) -> None:
    from nrt.signals import UserSignals, embed_signals
    from representation.encoders import load_item_vectors

    encoder, layout = pipeline.load_encoder(built.settings, built.batch_id)
    vecs = load_item_vectors(built.settings.paths)
    df = published(built, built.batch_id)
    z = np.stack(df[C.Z_U].to_numpy())
    clusters = np.sort(df[C.CLUSTER].unique())
    centroids = np.stack([z[df[C.CLUSTER].to_numpy() == k].mean(axis=0) for k in clusters])
    items, genres = built.data.item_truth, built.data.items.set_index(C.ITEM_ID)[C.GENRES]
    hits = 0
    for k in clusters:
        picks = items[items[C.CLUSTER] == k][C.ITEM_ID].head(4).tolist()
        genre = genres[picks[0]].split("|")[0]
        signals = UserSignals(10_000 + int(k), built.end, 30.0, "f", "SE", picks, [genre])
        zu = embed_signals(encoder, layout, vecs, signals, built.end)
        hits += int(
            np.argmin(np.linalg.norm(centroids - zu, axis=1)) == np.searchsorted(clusters, k)
        )
    assert hits >= len(clusters) - 1


def test_served_vectors_equal_the_published_batch(built: Pipeline) -> None:
    batch, z = get_user_embeddings(built.settings, [0, 1, 2, 987654], built.batch_id)
    offline = published(built, batch).set_index(C.USER_ID)[C.Z_U]
    for i, u in enumerate([0, 1, 2]):
        np.testing.assert_array_equal(z[i], np.asarray(offline[u], np.float32))
    assert np.isnan(z[3]).all()  # unknown user: no vector, not someone else's


def test_a_retired_batch_is_refused_once_the_lifecycle_cache_expires(
    built: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    from representation import serving

    serving.forget_lifecycle()
    get_user_embeddings(built.settings, [0], built.batch_id)  # cached as servable
    with session_scope(built.settings.metadata_db_url) as session:
        row = batches.get_batch(session, built.batch_id)
        status, row.status = row.status, BatchStatus.RETIRED  # retired by another process
    try:
        now = serving.time.monotonic()
        monkeypatch.setattr(serving.time, "monotonic", lambda: now + serving.LIFECYCLE_TTL_S)
        with pytest.raises(batches.BatchError, match="retired"):
            get_user_embeddings(built.settings, [0], built.batch_id)
    finally:
        with session_scope(built.settings.metadata_db_url) as session:
            batches.get_batch(session, built.batch_id).status = status
        serving.forget_lifecycle()


def test_two_batches_side_by_side_are_never_mixed(built: Pipeline) -> None:
    from representation.train import TrainConfig

    second = pipeline.train_batch(built.settings, built.end, None, TrainConfig(epochs=3, seed=1))
    pipeline.embed_batch(built.settings, second, built.end)
    _, z1 = get_user_embeddings(built.settings, [0, 1], built.batch_id)
    _, z2 = get_user_embeddings(built.settings, [0, 1], second)
    np.testing.assert_array_equal(
        z1[0], np.asarray(published(built, built.batch_id).set_index(C.USER_ID)[C.Z_U][0])
    )
    np.testing.assert_array_equal(
        z2[0], np.asarray(published(built, second).set_index(C.USER_ID)[C.Z_U][0])
    )
    assert not np.allclose(z1, z2)


def test_train_cli_turns_the_tag_decoder_off(built: Pipeline) -> None:
    """The fixture's batch trained with the tag decoder (the synthetic genres are its tags);
    `userrep train --tag-weight 0` trains a batch without it, and records that."""
    from typer.testing import CliRunner

    from userrep.cli import app

    def encoder_json(batch_id: str, name: str) -> dict:
        return json.loads((built.settings.paths.batches / batch_id / "encoder" / name).read_text())

    assert encoder_json(built.batch_id, "metrics.json")["tag_vocab"] == TINY.n_clusters
    before = {p.name for p in built.settings.paths.batches.iterdir()}
    args = ["-w", str(built.settings.workspace), "train", "--epochs", "2", "--no-align"]
    result = CliRunner().invoke(app, [*args, "--tag-weight", "0"])
    assert result.exit_code == 0, result.output
    (new,) = {p.name for p in built.settings.paths.batches.iterdir()} - before
    assert encoder_json(new, "metrics.json")["tag_vocab"] == 0
    assert encoder_json(new, "config.json")["train"]["tag_weight"] == 0.0
    refused = CliRunner().invoke(app, [*args, "--tag-weight", "-1"])
    assert refused.exit_code != 0


def test_crash_mid_publish_leaves_no_visible_batch(built: Pipeline, monkeypatch) -> None:
    from representation.artifact import UserEncoder
    from representation.train import TrainConfig

    batch_id = pipeline.train_batch(built.settings, built.end, None, TrainConfig(epochs=2))
    real_embed, calls = UserEncoder.embed, []

    def failing_embed(self, x, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt("ctrl-c mid publish")
        return real_embed(self, x, *args, **kwargs)

    monkeypatch.setattr(UserEncoder, "embed", failing_embed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.embed_batch(built.settings, batch_id, built.end, chunk_users=100)
    assert not list(built.settings.paths.user_embedding.glob(f"*{batch_id}*"))  # no file, no temp
    with session_scope(built.settings.metadata_db_url) as session:
        assert batches.get_batch(session, batch_id).status == BatchStatus.BUILDING
    with pytest.raises(batches.BatchError, match="building"):
        get_user_embeddings(built.settings, [0], batch_id)


def test_reloaded_encoder_reproduces_published_vectors(built: Pipeline) -> None:
    from representation.inputs import read_snapshot, to_matrix

    encoder, layout = pipeline.load_encoder(built.settings, built.batch_id)
    df = published(built, built.batch_id).sort_values(C.USER_ID)
    z = encoder.embed(
        to_matrix(read_snapshot(built.settings.paths, built.end, df[C.USER_ID].to_numpy()), layout)
    )
    np.testing.assert_array_equal(z, np.stack(df[C.Z_U].to_numpy()))


def test_export_embeddings(built: Pipeline, tmp_path) -> None:
    out = tmp_path / "z.parquet"
    n = pipeline.export_embeddings(built.settings, built.batch_id, out)
    df = pd.read_parquet(out)
    files = built.settings.paths.user_embedding.glob(f"{built.batch_id}__*.parquet")
    assert n == len(df) == sum(len(pd.read_parquet(f)) for f in files)
    assert set(df[C.USER_ID]) == set(built.data.users[C.USER_ID])
    assert (
        list(df.columns) == [C.USER_ID, C.Z_U, "batch", C.AS_OF]
        and (df["batch"] == built.batch_id).all()
    )


def test_feast_cli_returns_z_u_for_a_named_batch(built: Pipeline) -> None:
    env = {**os.environ, "USERREP_WORKSPACE": str(built.settings.workspace)}
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    cmd = [
        feast,
        "-c",
        str(built.settings.feature_repo),
        "get-online-features",
        "-e",
        "user_id=3",
        "-e",
        f"batch_id={built.batch_id}",
        "-f",
        "user_embedding:z_u",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    got = json.loads(out[out.index("{") :])
    expected = published(built, built.batch_id).set_index(C.USER_ID)[C.Z_U][3]
    np.testing.assert_allclose(got[C.Z_U][0], expected, rtol=1e-6)


def test_re_embedding_an_older_snapshot_never_overwrites_newer_online_vectors(
    built: Pipeline,
) -> None:
    _, before = get_user_embeddings(built.settings, [0, 1], built.batch_id)
    report = pipeline.embed_batch(built.settings, built.batch_id, built.earlier)
    try:
        assert report.offline_file.exists()  # the older snapshot is published offline
        _, after = get_user_embeddings(built.settings, [0, 1], built.batch_id)
        np.testing.assert_array_equal(before, after)
        older = pd.read_parquet(report.offline_file).set_index(C.USER_ID)[C.Z_U]
        assert not np.allclose(np.asarray(older[0]), before[0])  # it differs: the guard mattered
        with session_scope(built.settings.metadata_db_url) as session:
            status = batches.get_batch(session, built.batch_id).status
        assert status in (BatchStatus.READY, BatchStatus.ACTIVE)
    finally:  # the session fixture is shared: leave it with one snapshot per batch
        report.offline_file.unlink(missing_ok=True)


def test_training_matrix_read_in_chunks_equals_one_join(built: Pipeline) -> None:
    """The Feast read of the training matrix runs `chunk` users per point-in-time join (its
    memory stays one chunk big); the matrix must not depend on the chunk size."""
    from representation.inputs import InputLayout

    c_dim, t_dim = pipeline._encoder_dims(built.settings)
    layout = InputLayout(tuple(h.name for h in built.settings.horizon_list), c_dim, t_dim)
    users, x = pipeline.training_matrix(built.settings, built.end, layout)
    users_c, x_c = pipeline.training_matrix(built.settings, built.end, layout, chunk=97)
    assert len(users) > 97 * 3 and np.all(np.diff(users) > 0)
    np.testing.assert_array_equal(users_c, users)
    np.testing.assert_array_equal(x_c, x)  # NaN (missing) in the same places too
    assert np.isnan(x).any() and np.isfinite(x).any()
