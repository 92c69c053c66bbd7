"""The Ray engine gives the local engine's results: the same feature snapshot, the same z_u, the
same online rows, on a small synthetic world and a local Ray (2 CPUs); the local engine never
imports ray."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


def test_merge_sorted_parts_gives_one_sorted_file(tmp_path: Path) -> None:
    ids = np.arange(1000)
    parts = []
    for k in range(3):  # hash shards: user_id % 3, each sorted
        p = tmp_path / f"p{k}.parquet"
        mine = ids[ids % 3 == k]
        pq.write_table(pa.table({C.USER_ID: mine, "x": mine * 2.0}), p, row_group_size=37)
        parts.append(p)
    n = shards.merge_sorted_parts(parts, tmp_path / "out.parquet", rows=50)
    out = pq.read_table(tmp_path / "out.parquet")
    assert n == 1000 and out[C.USER_ID].to_pylist() == ids.tolist()
    assert out["x"].to_pylist() == (ids * 2.0).tolist()
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed away


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
        world.settings, world.as_of, {"latent_dim": 8}, TrainConfig(epochs=2, seed=0)
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
    (same split, seeds, minibatches, item head), so the saved weights, the normaliser and z_u
    are bit-identical. Both run on one torch thread: matmul sums depend on the thread count."""
    import torch

    from representation import build, pipeline
    from representation.train import TrainConfig

    build.build_snapshot(world.settings, world.as_of)
    cfg = TrainConfig(epochs=2, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local_id = pipeline.train_batch(world.settings, world.as_of, {"latent_dim": 8}, cfg)
    finally:
        torch.set_num_threads(threads)
    on_ray = world.on("ray").model_copy(update={"ray_train_workers": 1})
    epochs: list[int] = []
    ray_id = pipeline.train_batch(
        on_ray, world.as_of, {"latent_dim": 8}, cfg, on_epoch=lambda e, *_: epochs.append(e)
    )
    art = {b: world.settings.paths.batches / b / "encoder" for b in (local_id, ray_id)}
    local_w, ray_w = (torch.load(art[b] / "model.pt", weights_only=True) for b in art)
    assert local_w.keys() == ray_w.keys() and epochs == [1, 2]
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
