"""Planted answers for the downstream user split and the batch-compatibility gate (fast: no
workspace pipeline, only arrays and a metadata DB).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from downstream import compat
from downstream.metrics import split_users, user_folds
from downstream.models import make_model
from downstream.tasks import Design
from representation import batches
from representation.align import AlignmentMap
from userrep import columns as C
from userrep.db import DownstreamModel, record_validation_run, session_scope, upgrade
from userrep.settings import Settings


def test_split_seed_changes_the_users_and_keeps_the_proportions() -> None:
    users = np.arange(100_000)
    splits = {seed: split_users(users, test_frac=0.3, val_frac=0.1, seed=seed) for seed in range(3)}
    for seed, split in splits.items():
        np.testing.assert_array_equal(split, split_users(users, 0.3, 0.1, seed))  # deterministic
        share = {s: float((split == s).mean()) for s in ("train", "val", "test")}
        assert share == pytest.approx({"train": 0.6, "val": 0.1, "test": 0.3}, abs=0.01)
    # independent splits disagree on 1 - (0.6^2 + 0.1^2 + 0.3^2) = 54 % of users
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert float((splits[a] != splits[b]).mean()) == pytest.approx(0.54, abs=0.01)


def test_split_seed_moves_test_users_of_a_small_data_set() -> None:
    users = np.arange(1, 944)  # MovieLens 100K's ids, where seeds 0, 1, 2 once gave one split
    test = [set(users[split_users(users, seed=seed) == "test"]) for seed in (0, 1, 2)]
    assert len(test[0] ^ test[1]) > 300 and len(test[1] ^ test[2]) > 300
    assert all(230 < len(t) < 340 for t in test)


def test_user_folds_follow_the_seed() -> None:
    users = np.arange(20_000)
    a, b = user_folds(users, 5, seed=0), user_folds(users, 5, seed=1)
    np.testing.assert_array_equal(a, user_folds(users, 5, seed=0))
    assert np.bincount(a, minlength=5).min() > 3800 and float((a != b).mean()) > 0.75
    shuffled = np.random.default_rng(0).permutation(users)  # a user's fold is its own
    np.testing.assert_array_equal(user_folds(shuffled, 5, seed=1), b[shuffled])


def test_downstream_commands_document_their_split_seed() -> None:
    from userrep.cli import app

    train = CliRunner().invoke(app, ["downstream", "train", "--help"], terminal_width=200)
    assert train.exit_code == 0 and "--split-seed" in train.output
    compare = CliRunner().invoke(app, ["downstream", "compare", "--help"], terminal_width=200)
    assert compare.exit_code == 0 and "--seed" in compare.output


# --- the gate: planted batches in a metadata DB, planted vectors -----------------------------


@dataclass
class World:
    """A metadata DB with model M pinned to batch A, and planted vectors for each batch."""

    settings: Settings
    model_id: str
    z: np.ndarray  # (users, d) batch A's z_u
    item: np.ndarray  # (rows, d) one candidate item per row
    users: np.ndarray  # (rows,) user of each row
    y: np.ndarray  # (rows,) planted: the user likes items pointing their way
    q: np.ndarray  # (d, d) the rotation between B's raw space and A's


D, N_USERS, PER_USER = 4, 1500, 10
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)


def _batch(session, batch_id: str, art: str = "-", alignment: dict | None = None) -> None:
    batches.create_batch(
        session,
        batch_id=batch_id,
        as_of=AS_OF,
        feature_service=C.ENCODER_INPUT_SERVICE,
        latent_dim=D,
        artifact_path=art,
        artifact_sha256="-",
        metrics={},
    )
    batches.mark_ready(session, batch_id, N_USERS)
    batches.get_batch(session, batch_id).alignment = alignment


def _world_design(w: World, z_user: np.ndarray, n_users: int = N_USERS) -> Design:
    keep = w.users < n_users
    x = np.hstack([z_user[w.users[keep]], w.item[keep]]).astype(np.float32)
    users = w.users[keep]
    width = z_user.shape[1]
    names = [f"z{i}" for i in range(width)] + [f"i{i}" for i in range(D)]
    return Design(x, w.y[keep], users, split_users(users, seed=0), names, width, {})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from downstream.registry import register_model

    root = tmp_path_factory.mktemp("compat") / "ws"
    settings = Settings(workspace=root)
    settings.paths.ensure()
    upgrade(settings.metadata_db_url)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N_USERS, D))
    users = np.repeat(np.arange(N_USERS), PER_USER)
    item = rng.normal(size=(len(users), D))
    y = ((z[users] * item).sum(axis=1) + 0.5 * rng.normal(size=len(users)) > 0.5).astype(int)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    aligned_art = root / "b-aligned"
    aligned_art.mkdir()
    AlignmentMap(q, 1.0, np.zeros(D), np.zeros(D)).save(aligned_art)  # raw = served @ q.T
    with session_scope(settings.metadata_db_url) as session:
        _batch(session, "b-a")
        link = {"method": "bct+procrustes", "residual": 0.2}
        _batch(session, "b-aligned", str(aligned_art), {"parent": "b-a", **link})
        _batch(session, "b-grandchild", alignment={"parent": "b-aligned", **link})
        _batch(session, "b-unaligned")  # a retrain with --no-align: no alignment record
    w = World(settings, "", z, item, users, y, q)
    design = _world_design(w, z)
    train, val = design.split == "train", design.split == "val"
    model = make_model("lightgbm").fit(
        design.x[train], design.y[train], design.x[val], design.y[val]
    )
    spec = {
        "feature_set": "z_u",
        "task": "planted",
        "window_days": 7,
        "classes": [],
        "split_seed": 0,
    }
    row = register_model(settings, model, task="planted", batch_id="b-a", metrics={}, spec=spec)
    w.model_id = row.model_id
    return w


def _judge(w: World, batch_id: str, z_b: np.ndarray, n_users: int = N_USERS, save: bool = True):
    from downstream.registry import load_registered

    model = load_registered(w.settings, w.model_id).model
    rule = compat.GateRule(n_resamples=300)
    design_a, design_b = _world_design(w, w.z, n_users), _world_design(w, z_b, n_users)
    return compat.judge(
        w.settings, w.model_id, batch_id, model, design_a, design_b, rule, save=save
    )


def _repin_cli(w: World, batch_id: str, *extra: str):
    from userrep.cli import app

    args = ["-w", str(w.settings.workspace), "downstream", "repin", w.model_id, "--batch", batch_id]
    return CliRunner().invoke(app, [*args, *extra])


def _said(result) -> str:
    """CLI output with the console's line wrapping undone."""
    return " ".join(result.output.split())


def _pinned(w: World) -> str:
    with session_scope(w.settings.metadata_db_url) as session:
        return session.get(DownstreamModel, w.model_id).pinned_batch_id


def test_lineage_follows_alignment_records_only(world: World) -> None:
    chain = compat.alignment_lineage(world.settings, "b-a", "b-grandchild")
    assert chain.found and chain.chain == ["b-grandchild", "b-aligned", "b-a"]
    assert [link["method"] for link in chain.links] == ["bct+procrustes"] * 2
    none = compat.alignment_lineage(world.settings, "b-a", "b-unaligned")
    assert not none.found and "no alignment record" in none.why
    assert compat.alignment_lineage(world.settings, "b-a", "b-a").found


def test_unaligned_batch_is_incompatible_and_repin_refused(world: World) -> None:
    # B's raw space: the planted rotation the alignment map would have undone
    result = _judge(world, "b-unaligned", world.z @ world.q.T)
    assert result.verdict == compat.INCOMPATIBLE and not result.lineage.found
    assert "no alignment lineage" in result.reasons[0]
    assert result.record["metrics"]["aligned"]["auc_ci"]  # the numbers are kept all the same
    refused = _repin_cli(world, "b-unaligned")
    assert refused.exit_code != 0 and "verdict incompatible" in _said(refused)
    assert _pinned(world) == "b-a"


def test_batch_of_another_width_is_recorded_incompatible(world: World) -> None:
    """B's z_u is wider than A's (a retrain with another latent size): nothing to score, so the
    verdict is recorded without a bootstrap, and repin names the reason."""
    wider = np.hstack([world.z, world.z[:, :2]])  # (users, D + 2)
    result = _judge(world, "b-grandchild", wider)
    assert result.verdict == compat.INCOMPATIBLE and result.evidence is None
    assert f"has {D + 2} dimensions, b-a's {D}" in result.reasons[0]
    assert result.lineage.found  # aligned lineage does not make another width readable
    refused = _repin_cli(world, "b-grandchild")
    assert refused.exit_code != 0 and f"has {D + 2} dimensions" in _said(refused)
    assert _pinned(world) == "b-a"


def test_aligned_batch_whose_model_still_works_is_compatible(world: World) -> None:
    served = world.z + 0.002 * np.random.default_rng(1).normal(size=world.z.shape)
    result = _judge(world, "b-aligned", served)
    e = result.evidence
    assert result.verdict == compat.COMPATIBLE, result.reasons
    assert e.n_test_users > 400 and e.drop_upper <= compat.DEFAULT_MAX_DROP
    assert e.pinned_ci[0] > 0.7  # planted signal: the model works on its own batch
    m = result.metrics
    assert m["unaligned"]["auc"] < m["aligned"]["auc"] - 0.1  # B's raw space breaks it
    lo, hi = m["aligned"]["recall@10_ci"]
    assert lo <= m["aligned"]["recall@10"] <= hi
    assert result.record["lineage"]["chain"] == ["b-aligned", "b-a"]
    moved = _repin_cli(world, "b-aligned")
    assert moved.exit_code == 0, moved.output
    assert _pinned(world) == "b-aligned"
    with session_scope(world.settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, world.model_id)
        assert row.metrics["repins"][-1]["verdict"] == compat.COMPATIBLE
        assert row.metrics["repins"][-1]["forced"] is None
        row.pinned_batch_id = "b-a"  # restore for the other tests


def test_aligned_batch_that_breaks_the_model_is_incompatible(world: World) -> None:
    shuffled = world.z[np.random.default_rng(2).permutation(N_USERS)]
    result = _judge(world, "b-aligned", shuffled, save=False)
    assert result.lineage.found and result.verdict == compat.INCOMPATIBLE
    assert result.evidence.drop_lower > compat.DEFAULT_MAX_DROP


def test_test_set_too_small_to_tell_is_inconclusive(world: World) -> None:
    # the old gate's failure: ~10 test users, a "drop" of about zero read as compatible
    result = _judge(world, "b-aligned", world.z, n_users=40)
    assert result.verdict == compat.INCONCLUSIVE
    assert any("test users (need 50)" in r for r in result.reasons)
    assert _repin_cli(world, "b-aligned").exit_code != 0


def test_model_at_chance_on_its_own_batch_is_inconclusive(world: World) -> None:
    noise = np.random.default_rng(3).normal(size=world.z.shape)  # z_u unrelated to the labels
    w = World(world.settings, world.model_id, noise, world.item, world.users, world.y, world.q)
    result = _judge(w, "b-aligned", noise, save=False)
    assert result.verdict == compat.INCONCLUSIVE and "chance" in result.reasons[0]


def test_forced_repin_records_its_reason(world: World) -> None:
    _judge(world, "b-unaligned", world.z @ world.q.T)  # incompatible record
    assert _repin_cli(world, "b-unaligned", "--force", "  ").exit_code != 0  # empty reason
    forced = _repin_cli(world, "b-unaligned", "--force", "hotfix: batch A's files were lost")
    assert forced.exit_code == 0, forced.output
    with session_scope(world.settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, world.model_id)
        move = row.metrics["repins"][-1]
        assert row.pinned_batch_id == "b-unaligned"
        row.pinned_batch_id = "b-a"
    assert move["forced"] == "hotfix: batch A's files were lost"
    assert move["verdict"] == compat.INCOMPATIBLE and "incompatible" in move["refused_because"]


def test_a_record_from_before_the_bounds_never_allows_a_repin(world: World) -> None:
    compat.save_record(world.settings, world.model_id, "b-grandchild", {"compatible": True})
    refused = _repin_cli(world, "b-grandchild")
    assert refused.exit_code != 0 and "predates" in _said(refused)


def test_cli_defaults_are_the_library_defaults() -> None:
    import inspect

    from userrep.cli.compat import batches_compat_cmd

    params = inspect.signature(batches_compat_cmd).parameters
    rule = compat.GateRule()
    assert params["max_drop"].default == rule.max_drop
    assert params["max_width"].default == rule.max_width
    assert params["min_test_users"].default == rule.min_test_users
    assert params["min_labels"].default == rule.min_labels
    assert params["resamples"].default == rule.n_resamples


def _evidence(**kw) -> compat.Evidence:
    base = dict(
        n_test_users=500,
        n_labels=5000,
        n_positive=1500,
        n_negative=3500,
        min_class_rows=None,
        pinned_auc=0.75,
        pinned_ci=(0.72, 0.78),
        drop=0.0,
        drop_lower=-0.002,
        drop_upper=0.002,
    )
    return compat.Evidence(**(base | kw))


@pytest.mark.parametrize(
    ("evidence", "verdict", "why"),
    [
        (_evidence(), compat.COMPATIBLE, "within"),
        (_evidence(n_positive=20), compat.INCONCLUSIVE, "20 positive labels"),
        (_evidence(drop=0.03, drop_lower=0.02, drop_upper=0.04), compat.INCOMPATIBLE, "lower"),
        (_evidence(drop=-0.05, drop_lower=-0.09, drop_upper=-0.01), compat.INCONCLUSIVE, "wider"),
        (
            _evidence(drop=0.004, drop_lower=0.001, drop_upper=0.007),
            compat.INCONCLUSIVE,
            "straddles",
        ),
        (_evidence(pinned_ci=(0.49, 0.6)), compat.INCONCLUSIVE, "chance"),
    ],
)
def test_gate_rule_decides_in_order(evidence: compat.Evidence, verdict: str, why: str) -> None:
    found = compat.Lineage(True, ["b", "a"])
    got, reasons = compat.GateRule().decide(found, evidence)
    assert got == verdict and why in reasons[0]
    lost = compat.Lineage(False, ["b"], why="batch b has no alignment record naming a parent")
    assert compat.GateRule().decide(lost, evidence)[0] == compat.INCOMPATIBLE


def test_training_refuses_a_batch_whose_newest_validation_run_failed(world: World) -> None:
    from downstream.training_set import batch_validation, require_valid_batch

    assert require_valid_batch(world.settings, "b-a").run_id is None  # never validated: passes
    with session_scope(world.settings.metadata_db_url) as session:
        _batch(session, "b-checked")
        record_validation_run(session, "batch", "b-checked", "zu_v1", False, {}, ["z_u_finite"])
    with pytest.raises(batches.BatchError, match="z_u_finite"):
        require_valid_batch(world.settings, "b-checked")
    with session_scope(world.settings.metadata_db_url) as session:
        record_validation_run(session, "batch", "b-checked", "zu_v1", True, {}, [])
    check = batch_validation(world.settings, "b-checked")
    assert check.success and "passed" in check.headline()
    assert require_valid_batch(world.settings, "b-checked").run_id == check.run_id
