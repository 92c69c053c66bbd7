"""Data-parallel autoencoder training (the Ray engine's `train`): the shards and the combined
normaliser without Ray, one rank = the local fit, and two Ray Train workers on planted clusters.
One Ray worker against the local engine, end to end, is in test_ray_engine.py."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from representation.artifact import UserEncoder
from representation.model import AutoencoderConfig
from representation.scale import ddp
from representation.train import Anchors, Normaliser, TrainConfig, split_users, train_autoencoder
from tests.test_model import BLOCKS, D, K, knn_purity, planted
from tests.test_ray_engine import needs_ray
from userrep.settings import Settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    """Planted taste clusters (tests/test_model.py), item targets and BCT anchors."""
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((K, D), dtype=np.float32)
    x, y = planted(3000, rng, centers)
    x[5, 0] = np.inf  # a non-finite value counts as missing, in every shard
    items = sp.csr_matrix((rng.random((len(x), 40)) < 0.1).astype(np.float32))
    rows = np.arange(0, len(x), 4)
    anchors = Anchors(rows, rng.standard_normal((len(rows), 32)).astype(np.float32))
    return x, y, items, anchors


def test_shards_are_contiguous_with_equal_training_users(data) -> None:
    x, _, items, anchors = data
    train, val = split_users(len(x), 0.1, np.random.default_rng(0))
    bounds = ddp.shard_bounds(len(x), train, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(x)
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    shards = [ddp.make_shard(x, lo, hi, train, val, items, anchors) for lo, hi in bounds]
    sizes = [len(s.train_rows) for s in shards]
    assert sum(sizes) == len(train) and max(sizes) - min(sizes) <= 1
    assert sum(len(s.val_rows) for s in shards) == len(val)
    back = np.concatenate([s.train_rows + s.lo for s in shards])
    np.testing.assert_array_equal(back, train)
    for s in shards:  # local positions: the same rows, targets and anchors
        np.testing.assert_array_equal(s.x, x[s.lo : s.lo + len(s.x)])
        assert (s.items != items[s.lo : s.lo + len(s.x)]).nnz == 0
        np.testing.assert_array_equal(
            s.anchors.z_parent,
            anchors.z_parent[(anchors.rows >= s.lo) & (anchors.rows < s.lo + len(s.x))],
        )


def _ranks(n: int, fn: Callable[[int, Callable], object]) -> list:
    """fn(rank, reduce) on n threads, `reduce` summing an array over the threads (an
    all-reduce without a process group)."""
    slots: list = [None] * n
    barrier = threading.Barrier(n)

    def reducer(rank: int) -> Callable[[np.ndarray], np.ndarray]:
        def reduce(a: np.ndarray) -> np.ndarray:
            slots[rank] = a
            barrier.wait()
            total = sum(slots[1:], slots[0])
            barrier.wait()
            return total

        return reduce

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda r: fn(r, reducer(r)), range(n)))


def test_normaliser_from_shard_statistics_equals_the_local_fit(data) -> None:
    x = data[0]
    train, val = split_users(len(x), 0.1, np.random.default_rng(0))
    shards = [
        ddp.make_shard(x, lo, hi, train, val) for lo, hi in ddp.shard_bounds(len(x), train, 3)
    ]
    fitted = _ranks(
        3, lambda r, red: ddp.combined_normaliser(shards[r].x, shards[r].train_rows, red)
    )
    local = Normaliser.fit(x, train)
    for norm in fitted:  # every rank holds the same one, the local one up to float rounding
        np.testing.assert_array_equal(norm.mean, fitted[0].mean)
        np.testing.assert_allclose(norm.mean, local.mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(norm.std, local.std, rtol=1e-6)


def test_one_rank_is_the_local_fit_bit_for_bit(data) -> None:
    """fit_shard with one rank runs train.py's own steps: same weights as train_autoencoder."""
    x, _, items, anchors = data
    x, items = x[:800], items[:800]
    anchors = Anchors(anchors.rows[anchors.rows < 800], anchors.z_parent[anchors.rows < 800])
    cfg, model_cfg = dataclasses.replace(TrainConfig.tiny(), epochs=2), AutoencoderConfig.tiny(D)
    local = train_autoencoder(x, BLOCKS, model_cfg, cfg, anchors=anchors, items=items)
    rng = np.random.default_rng(cfg.seed)
    train, val = split_users(len(x), cfg.val_fraction, rng)
    shard = ddp.make_shard(x, 0, len(x), train, val, items, anchors)
    fit = ddp.fit_shard(
        shard, tuple(BLOCKS), model_cfg, cfg, rng.bit_generator.state, len(train), len(val)
    )
    assert all(torch.equal(v, fit.state_dict[k]) for k, v in local.model.state_dict().items())
    np.testing.assert_array_equal(fit.normaliser.std, local.normaliser.std)
    assert fit.metrics["val_loss"] == local.metrics["val_loss"]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@needs_ray
def test_two_ray_workers_learn_the_planted_clusters(data, local_ray, tmp_path) -> None:
    """DDP over two workers (a shard of users each, batch_size / 2 per step) is not the local
    run bit for bit (ddp.py says why), but it trains and finds the same structure."""
    from representation.scale import ray_train

    x, y, items, anchors = data
    cfg, model_cfg = TrainConfig.tiny(), AutoencoderConfig.tiny(D)
    settings = Settings(workspace=tmp_path / "ws", engine="ray", ray_train_workers=2)
    settings.paths.ensure()
    two = ray_train.train_autoencoder(settings, x, BLOCKS, model_cfg, cfg, None, anchors, items)
    local = train_autoencoder(x, BLOCKS, model_cfg, cfg, anchors=anchors, items=items)
    m = two.metrics
    assert m["ddp_workers"] == 2 and m["n_train"] == local.metrics["n_train"]
    assert m["best_val_loss"] < 0.8 * m["val_loss_initial"]
    assert m["val_loss"][-1] < m["val_loss_initial"] and m["train_loss"][-1] < m["train_loss"][0]
    np.testing.assert_allclose(two.normaliser.mean, local.normaliser.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(two.normaliser.std, local.normaliser.std, rtol=1e-6)
    z_two = UserEncoder.from_result(two).embed(x[:1000])
    z_local = UserEncoder.from_result(local).embed(x[:1000])
    purity_two, purity_local = knn_purity(z_two, y[:1000]), knn_purity(z_local, y[:1000])
    assert purity_two > 0.8 and purity_two > purity_local - 0.05  # chance: 1/K
    assert not list(settings.paths.batches.glob(".ray-train-*"))  # checkpoints cleaned up
