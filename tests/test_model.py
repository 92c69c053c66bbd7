"""Model tests for the user autoencoder: behaviour on synthetic inputs with a planted answer.

K gaussian user clusters, each with its own center in every block, expressed consistently across
horizons, modalities and onboarding; some users lack their short horizons or onboarding.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from representation.artifact import (
    UserEncoder,
    artifact_sha256,
    input_schema_hash,
    save_artifact,
)
from representation.model import AutoencoderConfig, InputBlock, UserAutoencoder, validate_blocks
from representation.train import Normaliser, TrainConfig, train_autoencoder

K = 6  # planted clusters; chance kNN purity is 1/K
HORIZONS = ("7d", "30d", "180d", "all")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def layout(vec_dim: int = 8, onboard_dim: int = 16) -> list[InputBlock]:
    """Two modalities x four horizons, 3 stats columns, one onboarding block (83 columns)."""
    spec = [(f"{m}_{h}", h, vec_dim) for h in HORIZONS for m in ("collab", "content")]
    spec += [("stats", "stats", 3), ("onboarding", "onboarding", onboard_dim)]
    blocks, start = [], 0
    for name, group, width in spec:
        blocks.append(InputBlock(name, start, start + width, group))
        start += width
    return blocks


BLOCKS = layout()
D = BLOCKS[-1].stop


def planted(n: int, rng: np.random.Generator, centers: np.ndarray, p_skip_onboarding: float = 0.1):
    """(x, labels): cluster center + noise; stats unrelated; some groups missing (NaN)."""
    noise = 0.8
    labels = rng.integers(K, size=n)
    x = centers[labels] + noise * rng.standard_normal((n, D), dtype=np.float32)
    stats = next(b for b in BLOCKS if b.group == "stats")
    x[:, stats.start : stats.stop] = rng.gamma(2.0, 3.0, size=(n, stats.width))
    dormant = rng.random(n) < 0.3  # no events in the last 7 days
    lapsed = dormant & (rng.random(n) < 0.5)  # nor in the last 30
    for block in BLOCKS:
        empty = {"7d": dormant, "30d": lapsed}.get(block.group)
        if empty is not None:
            x[empty, block.start : block.stop] = np.nan
    onb = BLOCKS[-1]
    x[rng.random(n) < p_skip_onboarding, onb.start : onb.stop] = np.nan
    return x, labels


def onboarding_only(x: np.ndarray) -> np.ndarray:
    """Brand-new users: everything NaN except the onboarding block."""
    onb = BLOCKS[-1]
    cold = np.full_like(x, np.nan)
    cold[:, onb.start : onb.stop] = x[:, onb.start : onb.stop]
    return cold


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    centers = rng.standard_normal((K, D), dtype=np.float32)
    x, y = planted(3000, rng, centers)
    x_new, y_new = planted(600, rng, centers, p_skip_onboarding=0.0)
    return x, y, onboarding_only(x_new), y_new


@pytest.fixture(scope="module")
def trained(data):
    x, *_ = data
    return train_autoencoder(x, BLOCKS, AutoencoderConfig.tiny(D), TrainConfig.tiny())


def knn_purity(z: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean share of each user's k nearest neighbours (euclidean) that share its label."""
    sq = (z**2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * z @ z.T  # (n, n)
    np.fill_diagonal(dist, np.inf)
    nn = np.argsort(dist, axis=1)[:, :k]  # (n, k)
    return float((labels[nn] == labels[:, None]).mean())


def cold_start_accuracy(encoder: UserEncoder, data) -> float:
    """Share of onboarding-only users nearest to their own cluster's centroid of full users' z."""
    x, y, x_new, y_new = data
    z, z_new = encoder.embed(x), encoder.embed(x_new)
    centroids = np.stack([z[y == c].mean(0) for c in range(K)])  # (K, latent)
    nearest = ((z_new[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((nearest == y_new).mean())


def test_forward_shapes():
    model = UserAutoencoder(AutoencoderConfig.tiny(D), BLOCKS)
    recon, z = model(torch.randn(5, D))
    assert recon.shape == (5, D) and z.shape == (5, model.config.latent_dim)


def test_blocks_must_tile_the_input():
    validate_blocks(BLOCKS, D)
    with pytest.raises(ValueError):
        validate_blocks(BLOCKS[:-1], D)  # a gap at the end
    with pytest.raises(ValueError):
        validate_blocks([BLOCKS[1], BLOCKS[0], *BLOCKS[2:]], D)  # out of order
    with pytest.raises(ValueError):
        train_autoencoder(
            np.zeros((10, D + 1), np.float32), BLOCKS, AutoencoderConfig.tiny(D), TrainConfig.tiny()
        )


def test_normaliser_standardises_keeps_nan_and_round_trips_json():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(500, 4)).astype(np.float32)
    x[::3, 0] = np.nan
    x[:, 2] = 7.0  # constant: std falls back to 1
    x[:, 3] = np.nan  # never observed: mean 0, std 1
    x[0, 1] = np.inf
    norm = Normaliser.fit(x)
    out = norm.transform(x)
    assert np.array_equal(np.isnan(out), ~np.isfinite(x))
    assert abs(np.nanmean(out[:, 0])) < 1e-5 and abs(np.nanstd(out[:, 0]) - 1) < 1e-4
    assert norm.std[2] == 1.0 and norm.mean[3] == 0.0 and norm.std[3] == 1.0
    back = Normaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert np.array_equal(back.mean, norm.mean) and np.array_equal(back.std, norm.std)
    assert np.array_equal(back.transform(x), out, equal_nan=True)


def test_loss_decreases(trained):
    m = trained.metrics
    assert m["val_loss"][-1] < m["val_loss_initial"]
    assert m["best_val_loss"] < 0.8 * m["val_loss_initial"]
    assert m["train_loss"][-1] < m["train_loss"][0]
    assert 1 <= m["best_epoch"] <= m["epochs_run"]


def test_save_load_gives_bit_identical_z(trained, data, tmp_path):
    x, *_ = data
    names = [b.name for b in BLOCKS]
    sha = save_artifact(tmp_path, trained, extra={"feature_names": names})
    assert sha == artifact_sha256(tmp_path)
    loaded = UserEncoder.load(tmp_path, expected_sha256=sha)
    assert loaded.extra["input_schema_hash"] == input_schema_hash(names)
    assert loaded.blocks == tuple(BLOCKS) and loaded.config == trained.config
    z_saved = UserEncoder.from_result(trained).embed(x)
    assert np.array_equal(loaded.embed(x), z_saved)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ValueError):
        UserEncoder.load(tmp_path, expected_sha256=sha)


def test_same_seed_same_z_different_seed_different_z(data):
    x, *_ = data
    cfg, short = AutoencoderConfig.tiny(D), dataclasses.replace(TrainConfig.tiny(), epochs=2)
    rng_state = torch.get_rng_state()

    def z_of(seed: int) -> np.ndarray:
        result = train_autoencoder(x[:1000], BLOCKS, cfg, dataclasses.replace(short, seed=seed))
        return UserEncoder.from_result(result).embed(x[:1000])

    z0 = z_of(0)
    assert np.array_equal(z0, z_of(0))
    assert not np.allclose(z0, z_of(1))
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG is left alone


def test_planted_clusters_are_neighbours_in_z(trained, data):
    x, y, *_ = data
    z = UserEncoder.from_result(trained).embed(x[:1000])
    assert knn_purity(z, y[:1000]) > 0.8  # chance: 1/K


def test_cold_start_users_land_in_their_cluster(trained, data):
    assert cold_start_accuracy(UserEncoder.from_result(trained), data) > 0.7


def test_block_masking_is_what_makes_cold_start_work(trained, data):
    x, *_ = data
    no_mask = dataclasses.replace(TrainConfig.tiny(), block_mask_prob=0.0, cold_start_prob=0.0)
    plain = train_autoencoder(x, BLOCKS, AutoencoderConfig.tiny(D), no_mask)
    masked_acc = cold_start_accuracy(UserEncoder.from_result(trained), data)
    assert cold_start_accuracy(UserEncoder.from_result(plain), data) < masked_acc - 0.1


def test_missing_input_never_gives_nan_z(trained):
    x = np.full((4, D), np.nan, dtype=np.float32)
    x[1, :8] = 1.0  # one block only
    x[2] = np.inf  # garbage in: treated as missing
    x[3, 5] = -np.inf
    z = UserEncoder.from_result(trained).embed(x)
    assert (
        z.shape == (4, trained.config.latent_dim) and z.dtype == np.float32 and np.isfinite(z).all()
    )


def test_input_schema_hash_is_order_sensitive():
    assert input_schema_hash(["a", "b"]) == input_schema_hash(["a", "b"])
    assert input_schema_hash(["a", "b"]) != input_schema_hash(["b", "a"])


def test_to_matrix_reads_a_vector_column_of_type_null_as_missing() -> None:
    """A frame whose users all lack a vector (e.g. no onboarding picks anywhere) arrives from
    pandas as an arrow column of type null: that block is missing (NaN), the others intact."""
    import pandas as pd
    import pyarrow as pa

    from representation.inputs import InputLayout, to_matrix

    layout = InputLayout(("7d",), 2, 2)
    values = {b.name: [[1.0] * b.width] * 3 if b.width > 1 else [1.0] * 3 for b in layout.blocks()}
    missing = next(b for b in layout.blocks() if b.width > 1)
    values[missing.name] = [None] * 3
    table = pa.Table.from_pandas(pd.DataFrame(values), preserve_index=False)
    assert pa.types.is_null(table[missing.name].type)
    x = to_matrix(table, layout)
    assert np.isnan(x[:, missing.start : missing.stop]).all()
    assert np.isfinite(np.delete(x, np.s_[missing.start : missing.stop], axis=1)).all()


def test_item_targets_keep_the_most_shared_items_in_row_order() -> None:
    from representation.targets import item_targets_from_pairs

    users = np.array([30, 10, 20])  # training-matrix order, not sorted
    pair_users = np.array([10, 20, 30, 10, 20, 10, 99, 30])
    pair_items = np.array([7, 7, 7, 5, 5, 9, 5, 8])  # 7: 3 users, 5: 2 (+ unknown user 99)
    t = item_targets_from_pairs(users, pair_users, pair_items, max_items=2)
    assert t.item_ids.tolist() == [5, 7]  # 9 and 8 had one user each; 99 is not a user
    assert t.matrix.toarray().tolist() == [[0, 1], [1, 1], [1, 1]]  # rows: 30, 10, 20
    assert item_targets_from_pairs(users, pair_users, pair_items, 1).item_ids.tolist() == [7]


def test_item_loss_is_the_multinomial_nll_of_the_users_items() -> None:
    import scipy.sparse as sp

    from representation.train import ItemLoss

    torch.manual_seed(0)
    targets = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], np.float32))
    loss = ItemLoss(targets, latent_dim=3, weight=0.5)
    z, rows = torch.randn(2, 3), torch.tensor([2, 0])
    dense = torch.from_numpy(targets.toarray()[[2, 0]])
    expected = -0.5 * (torch.log_softmax(loss.head(z), 1) * dense).sum(1).mean()
    torch.testing.assert_close(loss(z, rows), expected)
    grads = [torch.autograd.grad(f, [*loss.head.parameters()]) for f in (loss(z, rows), expected)]
    for ours, reference in zip(*grads, strict=True):  # the sparse item sum's backward too
        torch.testing.assert_close(ours, reference)
    sampled = ItemLoss(targets, latent_dim=3, weight=0.5, sample=2)
    sampled.head.load_state_dict(loss.head.state_dict())
    torch.testing.assert_close(sampled(z, rows, exact=True), expected)  # validation: exact
    assert ItemLoss(targets, 3, 0.5, sample=4).sample == 0  # no smaller than the vocabulary


def test_sampled_item_softmax_estimates_the_normaliser_without_bias() -> None:
    """Planted: one user, one item, Zipf-like logits over 400 items. A training step's loss
    is weight * (log Z_hat - logit); Z_hat (the 20 most popular exactly + 20 uniform draws
    from the other 380, weighted 19) must average to the exact Z."""
    import scipy.sparse as sp

    from representation.train import ItemLoss

    vocab = 400
    popularity = np.zeros((vocab + 1, vocab), np.float32)  # users per item falls with the id
    popularity[np.tril_indices(vocab + 1, -1, vocab)] = 1.0  # item j: users j+1..vocab
    popularity[0] = 0.0
    popularity[0, 5] = 1.0  # the one user: item 5
    loss = ItemLoss(sp.csr_matrix(popularity), latent_dim=1, weight=1.0, sample=40, seed=0)
    assert loss.exact_cols[:3].tolist() == [0, 1, 2]  # the most popular items, exactly
    with torch.no_grad():
        loss.head.weight.copy_(torch.ones(vocab, 1))
        loss.head.bias.copy_(-torch.log1p(torch.arange(vocab, dtype=torch.float32)))
    z, row = torch.ones(1, 1), torch.tensor([0])
    with torch.no_grad():
        exact = loss(z, row, exact=True)
        ratios = torch.stack([torch.exp(loss(z, row) - exact) for _ in range(4000)])
    assert abs(float(ratios.mean()) - 1.0) < 0.02  # E[Z_hat] = Z
    assert float(ratios.std()) > 0.01  # and it is an estimate: the draws change it


def test_item_targets_make_z_keep_what_the_features_only_hint_at(data) -> None:
    """Planted: which of two item sets a user plays shows in the features only as a shift of
    one heavy-tailed stats column (~1 sigma among 83 columns); the item decoder makes z_u keep
    it much better than feature reconstruction alone."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    x, *_ = data
    rng = np.random.default_rng(7)
    side = rng.integers(2, size=len(x))  # the planted attribute
    x = x.copy()
    x[:, next(b for b in BLOCKS if b.group == "stats").start] += 4.0 * side
    items = np.zeros((len(x), 20), np.float32)
    for u, s in enumerate(side):
        items[u, rng.choice(10, 4, replace=False) + 10 * s] = 1.0
    targets = sp.csr_matrix(items)

    def separability(with_items: bool, item_sample: int = 0) -> float:
        result = train_autoencoder(
            x,
            BLOCKS,
            AutoencoderConfig.tiny(D),
            dataclasses.replace(TrainConfig.tiny(), item_sample=item_sample),
            items=targets if with_items else None,
        )
        assert result.metrics["item_vocab"] == (20 if with_items else 0)
        z = UserEncoder.from_result(result).embed(x)
        probe = LogisticRegression(max_iter=500).fit(z[:2000], side[:2000])
        return probe.score(z[2000:], side[2000:])

    without = separability(False)
    assert separability(True) > without + 0.05
    assert separability(True, item_sample=8) > without + 0.05  # the sampled softmax as well


def test_tag_targets_are_shares_over_the_most_used_tags(tmp_path) -> None:
    """Planted catalog: the shares count each distinct item once per tag, the vocabulary keeps
    the most used tags (ties by text), rows renormalise over it, and the DuckDB path equals the
    in-memory one."""
    import duckdb
    import pandas as pd

    from representation.targets import (
        tag_counts,
        tag_counts_from_pairs,
        tag_matrix,
        tag_targets_from_counts,
        tag_vocabulary,
        top_tags,
    )

    items = pd.DataFrame({"item_id": [1, 2, 3, 4], "genres": ["rock|pop", "rock", "jazz", ""]})
    # user 10 had items 1, 2 (item 1 twice); user 20 items 3, 4; user 30 nothing tagged
    pu, pi = np.array([10, 10, 10, 20, 20, 30]), np.array([1, 1, 2, 3, 4, 4])
    counts = tag_counts_from_pairs(pu, pi, items)
    users = np.array([30, 10, 20])  # any row order
    full = tag_targets_from_counts(users, counts, 10)
    assert full.tags.tolist() == ["jazz", "pop", "rock"]
    np.testing.assert_allclose(
        full.matrix.toarray(), [[0, 0, 0], [0, 1 / 3, 2 / 3], [1, 0, 0]], rtol=1e-6
    )
    top2 = tag_targets_from_counts(users, counts, 2)  # rock (2 pairs), then jazz over pop
    assert top2.tags.tolist() == ["jazz", "rock"] == top_tags(counts, 2).tolist()
    np.testing.assert_allclose(top2.matrix.toarray(), [[0, 0], [0, 1], [1, 0]])

    events = pd.DataFrame(
        {"user_id": pu, "item_id": pi, "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(pi, "D")}
    )
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    con, src = duckdb.connect(), f"read_parquet('{tmp_path / 'events.parquet'}')"
    as_of, items_path = pd.Timestamp("2024-02-01"), str(tmp_path / "items.parquet")
    sql = tag_counts(con, src, items_path, as_of).sort_values(["user_id", "tag"])
    pd.testing.assert_frame_equal(
        sql.reset_index(drop=True),
        counts.sort_values(["user_id", "tag"]).reset_index(drop=True),
        check_dtype=False,
    )
    users_sql = "(SELECT 10 AS user_id UNION ALL SELECT 20)"
    vocab = tag_vocabulary(con, src, items_path, as_of, users_sql, 2)
    assert vocab.tolist() == ["jazz", "rock"]
    rows = tag_matrix(con, src, items_path, as_of, users, vocab)  # integers from DuckDB
    assert (rows != top2.matrix).nnz == 0
    early = tag_counts(con, src, items_path, pd.Timestamp("2024-01-02 12:00"))  # item 1 only
    assert sorted(early["tag"]) == ["pop", "rock"] and set(early["user_id"]) == {10}
    ranged = tag_counts(con, src, items_path, as_of, user_range=(15, 31))
    assert set(ranged["user_id"]) == {20}


def test_tag_targets_make_z_keep_a_taste_the_features_only_hint_at(data) -> None:
    """Planted: which of two tag families a user's items mostly carry shows in the features only
    as a ~1 sigma shift of one heavy-tailed stats column; the tag decoder makes z_u keep it much
    better than feature reconstruction alone, and the batch metrics record its vocabulary."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    x, *_ = data
    rng = np.random.default_rng(8)
    side = rng.integers(2, size=len(x))  # the planted taste
    x = x.copy()
    x[:, next(b for b in BLOCKS if b.group == "stats").start] += 4.0 * side
    shares = rng.dirichlet(np.ones(6), size=len(x)) * 0.3  # (users, 6 tags), noise
    shares[np.arange(len(x)), 3 * side + rng.integers(3, size=len(x))] += 0.7  # the family
    tags = sp.csr_matrix(shares.astype(np.float32))

    def separability(with_tags: bool) -> float:
        cfg = dataclasses.replace(TrainConfig.tiny(), item_weight=0.0)
        result = train_autoencoder(
            x, BLOCKS, AutoencoderConfig.tiny(D), cfg, tags=tags if with_tags else None
        )
        assert result.metrics["tag_vocab"] == (6 if with_tags else 0)
        z = UserEncoder.from_result(result).embed(x)
        probe = LogisticRegression(max_iter=500).fit(z[:2000], side[:2000])
        return probe.score(z[2000:], side[2000:])

    assert separability(True) > separability(False) + 0.05


def test_bank_dropout_drops_p_keeps_the_mean_and_is_identity_in_eval() -> None:
    from representation.model import BankDropout

    drop, x = BankDropout(0.25, bank_rows=512), torch.ones(4096, 64)
    torch.manual_seed(0)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.25) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.02  # inverted dropout: 1 / (1 - p) on the kept
    assert len({tuple(r) for r in (y[:64] != 0).int().tolist()}) > 50  # rows differ
    torch.manual_seed(0)
    assert torch.equal(BankDropout(0.25, bank_rows=512)(x), y)  # seeded: reproducible
    assert torch.equal(drop.eval()(x), x) and not drop.state_dict()


def test_step_size_grows_with_the_data_and_scales_lr() -> None:
    cfg = TrainConfig()  # 512 users a step, up to 2,048 while an epoch keeps 64 steps
    assert cfg.for_users(900).batch_size == 512  # MovieLens-sized: unchanged
    assert cfg.for_users(65_535).batch_size == 512
    assert cfg.for_users(65_536).batch_size == 1024
    assert cfg.for_users(131_072).batch_size == 2048
    big = cfg.for_users(10_000_000)
    assert big.batch_size == 2048 and big.lr == pytest.approx(2 * cfg.lr)  # sqrt(4)
    assert cfg.for_users(900).lr == cfg.lr
    assert big.for_users(10_000_000) == big  # a resolved config resolves to itself
    assert TrainConfig.tiny().for_users(10_000_000).batch_size == 128
    with pytest.raises(ValueError, match="max_batch_size"):
        TrainConfig(batch_size=512, max_batch_size=256)


def test_training_records_the_step_size_it_took(data) -> None:
    x, *_ = data  # 3,000 users: 2,700 train, so 128-user steps grow to 256 with min_steps 8
    cfg = dataclasses.replace(TrainConfig.tiny(), epochs=2, max_batch_size=512, min_steps=8)
    result = train_autoencoder(x, BLOCKS, AutoencoderConfig.tiny(D), cfg)
    assert result.metrics["n_train"] == 2700
    assert (result.metrics["batch_size"], result.metrics["lr"]) == (256, cfg.lr * 2**0.5)
    assert result.train_config == cfg  # the artifact keeps the config as given


def test_bf16_auto_needs_large_data_and_a_cpu_where_it_pays() -> None:
    def never() -> float:
        raise AssertionError("small data must not probe the CPU")

    cfg = TrainConfig()  # bf16=None: auto
    assert cfg.for_users(50_000, speedup=never).bf16 is False
    assert cfg.for_users(1_000_000, speedup=lambda: 2.0).bf16 is True
    assert cfg.for_users(1_000_000, speedup=lambda: 1.1).bf16 is False  # under BF16_MIN_SPEEDUP
    assert cfg.for_users(1_000_000, speedup=lambda: 0.0).bf16 is False  # no bf16 / probe died
    pinned = dataclasses.replace(cfg, bf16=False)
    assert pinned.for_users(1_000_000, speedup=never).bf16 is False


def test_compat_term_pulls_only_the_anchor_users_of_a_minibatch() -> None:
    from representation.train import Anchors, CompatTerm

    rng = np.random.default_rng(3)
    z_parent = rng.standard_normal((3, 4)).astype(np.float32)  # anchors: users 5, 1, 8
    term = CompatTerm(Anchors(np.array([5, 1, 8]), z_parent), n_users=10, weight=2.0)
    z = torch.from_numpy(rng.standard_normal((4, 4)).astype(np.float32)).requires_grad_()
    rows = torch.tensor([1, 2, 8, 9])  # two anchors (1 -> parent row 1, 8 -> row 2), two not
    got = term(z, rows)
    scale = 2.0 / float(torch.from_numpy(z_parent).var(dim=0).sum())
    zd = z.detach().numpy()
    want = scale * (((zd[0] - z_parent[1]) ** 2).sum() + ((zd[2] - z_parent[2]) ** 2).sum()) / 4
    assert float(got) == pytest.approx(want, rel=1e-5)
    got.backward()
    assert torch.count_nonzero(z.grad[[1, 3]]) == 0  # non-anchors feel no pull
    assert float(term(z[:2], torch.tensor([0, 3]))) == 0.0  # no anchor in the minibatch


def test_replayed_corruptor_repeats_a_fresh_one_exactly() -> None:
    from representation.train import Corruptor

    cfg = TrainConfig()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((50, D)).astype(np.float32))
    reused = Corruptor(BLOCKS, cfg, seed=7)
    first = reused(x)
    reused(x)  # advances the draws
    again = reused.replay()(x)
    fresh = Corruptor(BLOCKS, cfg, seed=7)(x)
    torch.testing.assert_close(again, first, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(fresh, first, equal_nan=True, rtol=0, atol=0)
    assert torch.isinf(first).any() or torch.isnan(first).any()  # some blocks were hidden


def test_item_losses_sum_their_terms_and_train_every_head() -> None:
    import scipy.sparse as sp

    from representation.train import ItemLoss, ItemLosses

    torch.manual_seed(0)
    history = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 1]], np.float32))
    upcoming = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0]], np.float32))
    a, b = ItemLoss(history, 2, 0.5), ItemLoss(upcoming, 2, 0.5)
    both = ItemLosses([a, b])
    z, rows = torch.randn(2, 2), torch.tensor([0, 1])
    torch.testing.assert_close(both(z, rows), a(z, rows) + b(z, rows))
    params = list(both.head.parameters())  # what _fit hands the optimizer
    assert {id(p) for p in params} == {id(p) for h in (a, b) for p in h.head.parameters()}
