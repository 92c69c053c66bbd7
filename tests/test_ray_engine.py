"""The Ray engine gives the local engine's results: the same feature snapshot, the same z_u, the
same online rows, on a small synthetic world and a local Ray (2 CPUs); the local engine never
imports ray."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from representation.scale import engine_for, shards
from tests.conftest import ingest_synthetic
from userrep import columns as C
from userrep.data import synthetic
from userrep.settings import Settings

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed: `.venv/bin/pip install -e '.[ray]'` to run the Ray engine tests",
)
SMALL = synthetic.SyntheticConfig(
    n_users=600, n_items=300, n_artists=60, n_clusters=6, events_per_user=30, seed=11
)


@dataclass
class World:
    settings: Settings  # engine "local"
    as_of: pd.Timestamp

    def on(self, engine: str, shards: int | None = None) -> Settings:
        return self.settings.model_copy(update={"engine": engine, "ray_shards": shards})


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Ingested synthetic events + random item vectors (the encoders are not under test)."""
    from representation import build
    from representation.encoders import EncoderConfig, ItemVectors, save_item_vectors
    from userrep.db import upgrade

    settings = Settings(workspace=tmp_path_factory.mktemp("ray") / "ws")
    settings.paths.ensure()
    settings.export_env()
    upgrade(settings.metadata_db_url)
    data = synthetic.generate(SMALL)
    ingest_synthetic(settings, data)
    rng = np.random.default_rng(0)
    items = np.sort(data.items[C.ITEM_ID].to_numpy(np.int64))
    vecs = ItemVectors(
        "enc-test",
        items,
        rng.normal(size=(len(items), 16)).astype(np.float32),
        rng.normal(size=(len(items), 16)).astype(np.float32),
        {},
    )
    as_of = build.last_event_time(settings.paths).ceil("D")
    save_item_vectors(settings.paths, vecs, EncoderConfig(), as_of, {})
    return World(settings, as_of)


def _history(settings: Settings, as_of: pd.Timestamp) -> pa.Table:
    """The published history snapshot without `created` (the wall-clock time of writing)."""
    from representation.features import snapshot_name

    table = pq.read_table(settings.paths.user_history / snapshot_name(as_of))
    return table.drop_columns([C.CREATED])


def test_user_ranges_cover_the_file_without_gaps(tmp_path: Path) -> None:
    p = tmp_path / "u.parquet"
    pq.write_table(pa.table({C.USER_ID: np.arange(5, 105)}), p, row_group_size=30)
    ranges = shards.user_ranges(p, 4)
    assert ranges[0][0] == 5 and ranges[-1][1] == 105
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))


def test_read_user_range_reads_only_that_range(tmp_path: Path) -> None:
    p = tmp_path / "u.parquet"
    ids = np.arange(0, 1000, 3)
    pq.write_table(pa.table({C.USER_ID: ids, "x": ids * 1.5}), p, row_group_size=40)
    got = shards.read_user_range(p, 100, 400, batch_rows=7)
    want = ids[(ids >= 100) & (ids < 400)]
    assert got[C.USER_ID].to_pylist() == want.tolist()
    assert got["x"].to_pylist() == (want * 1.5).tolist()
    assert got.schema == pq.read_schema(p)


def test_local_engine_does_not_import_ray(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from representation import build, pipeline\n"
        "from representation.scale import engine_for\n"
        "from userrep.settings import Settings\n"
        f"engine_for(Settings(workspace={str(tmp_path)!r}))\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@needs_ray
def test_ray_and_local_build_identical_snapshots(world: World, local_ray) -> None:
    from representation import build

    build.build_snapshot(world.settings, world.as_of)
    local = _history(world.settings, world.as_of)
    for n_shards in (3, 4):  # the shard count never changes the snapshot
        report = build.build_snapshot(world.on("ray", n_shards), world.as_of)
        ray_built = _history(world.settings, world.as_of)
        assert report.n_history_users == local.num_rows > 500
        assert ray_built.schema == local.schema
        assert ray_built.equals(local)  # same rows, same order (sorted by user), same bits
    assert not list(world.settings.paths.user_history.glob(".*"))  # parts cleaned up


@pytest.mark.slow
@needs_ray
def test_ray_and_local_embed_identical_z_u(world: World, local_ray) -> None:
    from representation import batches, build, pipeline
    from representation.serving import get_user_embeddings
    from representation.train import TrainConfig
    from userrep.db import session_scope
    from userrep.feast_store import apply_repo

    apply_repo(world.settings)
    build.build_snapshot(world.settings, world.as_of)
    batch_id = pipeline.train_batch(
        world.settings, world.as_of, {"latent_dim": 8}, TrainConfig(epochs=2, seed=0, select=False)
    )
    local = pipeline.embed_batch(world.settings, batch_id, world.as_of, online=False)
    z_local = pq.read_table(local.offline_file).drop_columns([C.CREATED])
    seen: list[int] = []
    ray_report = engine_for(world.on("ray", 3)).embed_batch(
        batch_id, world.as_of, online=True, on_chunk=seen.append
    )
    z_ray = pq.read_table(ray_report.offline_file).drop_columns([C.CREATED])
    assert ray_report.offline_file == local.offline_file and sum(seen) == ray_report.n_users
    assert z_ray.schema == z_local.schema
    assert z_ray.equals(z_local)  # same users, same order, bit-identical z_u
    with session_scope(world.settings.metadata_db_url) as session:
        assert batches.get_batch(session, batch_id).n_users == z_ray.num_rows
    ids = z_ray[C.USER_ID].to_numpy()[::97]
    _, online = get_user_embeddings(world.settings, ids, batch_id)  # loaded by the Ray tasks
    expected = np.stack(z_ray[C.Z_U].to_numpy(zero_copy_only=False)[::97])
    np.testing.assert_array_equal(online, expected)


@pytest.mark.slow
@needs_ray
def test_ray_train_with_one_worker_gives_the_local_batch(world: World, local_ray) -> None:
    """`userrep train` under USERREP_ENGINE=ray: one Ray Train worker runs the local code path
    (same split, seeds, minibatches, item head) on the rows it read from the snapshot itself,
    so the saved weights, the normaliser and z_u are bit-identical while the driver reads no
    feature row. Both run on one torch thread: matmul sums depend on the thread count."""
    import torch

    from representation import build, pipeline
    from representation.train import TrainConfig

    build.build_snapshot(world.settings, world.as_of)
    cfg = TrainConfig(
        epochs=2, seed=3, item_sample=64, select=False
    )  # below the ~300-item vocabulary: sampled
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local_id = pipeline.train_batch(world.settings, world.as_of, {"latent_dim": 8}, cfg)
    finally:
        torch.set_num_threads(threads)
    on_ray = world.on("ray").model_copy(update={"ray_train_workers": 1})
    epochs: list[int] = []
    with _driver_reads_no_feature_rows():  # the worker reads its user range itself
        ray_id = pipeline.train_batch(
            on_ray, world.as_of, {"latent_dim": 8}, cfg, on_epoch=lambda e, *_: epochs.append(e)
        )
    art = {b: world.settings.paths.batches / b / "encoder" for b in (local_id, ray_id)}
    local_w, ray_w = (torch.load(art[b] / "model.pt", weights_only=True) for b in art)
    assert local_w.keys() == ray_w.keys() and epochs == [1, 2]
    for b in art:  # the item and tag heads trained on both paths (the synthetic genres)
        metrics = json.loads((art[b] / "metrics.json").read_text())
        assert metrics["tag_vocab"] > 0 and metrics["item_vocab"] > 0
    assert all(torch.equal(local_w[k], ray_w[k]) for k in local_w)
    assert (art[local_id] / "normaliser.json").read_text() == (
        art[ray_id] / "normaliser.json"
    ).read_text()
    files = {b: pipeline.embed_batch(world.settings, b, world.as_of, online=False) for b in art}
    z = {b: pq.read_table(r.offline_file) for b, r in files.items()}
    np.testing.assert_array_equal(
        np.stack(z[local_id][C.Z_U].to_numpy(zero_copy_only=False)),
        np.stack(z[ray_id][C.Z_U].to_numpy(zero_copy_only=False)),
    )


@contextlib.contextmanager
def _driver_reads_no_feature_rows(anchor_rows: list[int] | None = None):
    """Every way of reading feature rows or item pairs fails in this (the driver's) process;
    Ray workers are other processes and keep the real functions. With anchor_rows, the driver
    may assemble inputs of chosen users (alignment's anchors): each call's size is recorded."""
    from representation import inputs, pipeline, targets, trainset

    def refuse(*_, **__):
        raise AssertionError("the driver read feature rows or item targets")

    real_matrix = inputs.Snapshot.matrix

    def anchors_only(self, user_ids, layout):
        if anchor_rows is None:
            refuse()
        anchor_rows.append(len(user_ids))
        return real_matrix(self, user_ids, layout)

    with pytest.MonkeyPatch.context() as mp:
        for owner, name in [
            (pipeline, "training_matrix"),
            (pipeline, "training_item_targets"),
            (inputs.Snapshot, "matrix_parts"),
            (shards, "read_user_range"),
            (targets, "item_targets"),
            (targets, "range_item_targets"),
            (trainset.TrainingSet, "tag_targets"),  # the tag shares: only the vocabulary
        ]:
            mp.setattr(owner, name, refuse)
        mp.setattr(inputs.Snapshot, "matrix", anchors_only)
        yield


@pytest.mark.slow
@needs_ray
def test_ray_train_on_two_workers_reads_shards_and_aligns(world: World, local_ray) -> None:
    """Two workers, each reading its own user range, with BCT anchors from a parent batch: the
    job trains on every user, and the driver assembles inputs of the anchor users only."""
    from representation import align, batches, build, pipeline
    from representation.train import TrainConfig
    from userrep.db import session_scope

    build.build_snapshot(world.settings, world.as_of)
    parent = pipeline.train_batch(
        world.settings, world.as_of, {"latent_dim": 8}, TrainConfig(epochs=2, seed=0, select=False)
    )
    on_ray = world.on("ray").model_copy(update={"ray_train_workers": 2})
    sizes: list[int] = []
    with _driver_reads_no_feature_rows(anchor_rows=sizes), pytest.MonkeyPatch.context() as mp:
        mp.setattr(align, "MAX_FIT_USERS", 200)  # a sample of the users shared with the parent
        batch_id = pipeline.train_batch(
            on_ray,
            world.as_of,
            {"latent_dim": 8},
            TrainConfig(epochs=3, seed=1, select=False),
            align_to=parent,
            align_method="bct+procrustes",
        )
    with session_scope(world.settings.metadata_db_url) as session:
        row = batches.get_batch(session, batch_id)
        metrics, alignment = row.metrics, row.alignment
    n_users = pq.read_metadata(
        world.settings.paths.user_onboarding / f"asof={world.as_of:%Y%m%dT%H%M%S}.parquet"
    ).num_rows
    assert metrics["ddp_workers"] == 2 and metrics["n_train"] + metrics["n_val"] == n_users
    assert metrics["best_val_loss"] < metrics["val_loss_initial"]
    assert alignment["method"] == "bct+procrustes" and alignment["n_users"] == 200 < n_users
    assert sizes == [200, 200]  # the anchors' parent z_u, then their new z_u: nothing else


@pytest.mark.slow
def test_training_set_reads_the_training_matrix_range_by_range(world: World) -> None:
    """What a Ray Train worker reads for its user-id range (inputs, item targets over the
    vocabulary counted once) is its rows of the local training matrix, bit for bit."""
    from representation import build, pipeline
    from representation.features import events_source
    from representation.inputs import layout_for
    from representation.targets import item_targets
    from representation.train import TrainConfig
    from representation.trainset import SnapshotInputs, TrainingSet
    from userrep.feast_store import apply_repo

    apply_repo(world.settings)
    build.build_snapshot(world.settings, world.as_of)
    layout = layout_for(world.settings, 16, 16)
    users, x = pipeline.training_matrix(world.settings, world.as_of, layout)
    cfg = TrainConfig(item_vocab=50)
    items = pipeline.training_item_targets(world.settings, world.as_of, users, cfg)
    data = TrainingSet(world.settings.paths, world.as_of, layout, cfg.item_vocab)
    np.testing.assert_array_equal(data.user_ids(), users)
    vocab = data.item_vocabulary()
    con, events = duckdb.connect(), events_source(world.settings.paths)
    local_vocab = item_targets(con, events, world.as_of, users, cfg.item_vocab).item_ids
    assert vocab is not None and len(vocab) == 50 == items.shape[1]
    np.testing.assert_array_equal(vocab, local_vocab)  # one DuckDB aggregate, same columns
    cuts = [0, 97, 350, len(users)]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        bounds = (int(users[lo]), int(users[hi]) if hi < len(users) else int(users[-1]) + 1)
        ids, x_range = data.read_range(*bounds)
        np.testing.assert_array_equal(ids, users[lo:hi])
        assert x_range.tobytes() == x[lo:hi].tobytes()  # NaN-aware bit equality
        part = data.item_targets(ids, bounds, vocab)
        assert part.shape == (hi - lo, len(vocab)) and (part != items[lo:hi]).nnz == 0
    rows = np.array([5, 3, 400, 599])
    assert SnapshotInputs(data, users)[rows].tobytes() == x[rows].tobytes()
    tags = data.training_tags(users, cfg)  # the tag decoder's targets, the same way
    tag_vocab = data.tag_vocabulary(cfg)
    assert tags is not None and tag_vocab is not None and tags.shape == (len(users), len(tag_vocab))
    np.testing.assert_allclose(np.asarray(tags.sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        bounds = (int(users[lo]), int(users[hi]) if hi < len(users) else int(users[-1]) + 1)
        part = data.tag_targets(users[lo:hi], tag_vocab, bounds)
        assert (part != tags[lo:hi]).nnz == 0
