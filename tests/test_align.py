"""Aligned batches with planted answers: an exact rotation of a batch aligns with residual ~0 and
leaves a pinned model's predictions unchanged; shuffled user rows are refused; a real retrain
(another seed) breaks a pinned model unaligned and stays close aligned.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner, Result

from downstream import compat
from downstream.metrics import split_users
from downstream.models import make_model
from downstream.tasks import Design
from representation import align, batches, build, encoders, pipeline
from representation.artifact import UserEncoder, artifact_sha256
from representation.model import AutoencoderConfig, InputBlock
from representation.train import Anchors, TrainConfig, train_autoencoder
from tests.conftest import Pipeline
from userrep import columns as C
from userrep.db import DownstreamModel, session_scope
from userrep.settings import Settings

log = logging.getLogger(__name__)


def _orthogonal(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q  # (d, d)


def _clustered(n: int = 3000, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """z (n, d) with a planted label: y = 1 when the first two coordinates' sum is positive."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) + 0.5  # offset: the map must handle means too
    y = ((z[:, 0] + z[:, 1] - 1.0 + 0.3 * rng.normal(size=n)) > 0).astype(np.int64)
    return z.astype(np.float32), y


def _design(z: np.ndarray, y: np.ndarray) -> Design:
    users = np.arange(len(z))
    names = [f"z{i}" for i in range(z.shape[1])]
    return Design(z, y, users, split_users(users, seed=0), names, z.shape[1], {})


def test_procrustes_recovers_a_planted_rotation_and_scale() -> None:
    z_a, _ = _clustered()
    z_b = 2.5 * z_a @ _orthogonal(16, 1) + 3.0  # (n, d) rotated, scaled, shifted
    amap, fit = align.fit_procrustes(z_b, z_a)
    assert fit["residual"] < 1e-6 and fit["variance_explained"] > 1 - 1e-9
    assert amap.scale == pytest.approx(1 / 2.5)
    np.testing.assert_allclose(amap.apply(z_b), z_a, atol=1e-5)
    np.testing.assert_allclose(amap.invert(amap.apply(z_b)), z_b, atol=1e-4)


def test_shuffled_rows_do_not_align() -> None:
    z_a, _ = _clustered()
    perm = np.random.default_rng(2).permutation(len(z_a))
    _, fit = align.fit_procrustes(z_a[perm] @ _orthogonal(16, 1), z_a)
    assert fit["variance_explained"] < 0.1


def test_map_round_trips_without_pickles(tmp_path: Path) -> None:
    z_a, _ = _clustered()
    amap, _ = align.fit_procrustes(z_a @ _orthogonal(16, 3), z_a)
    amap.save(tmp_path)
    back = align.AlignmentMap.load(tmp_path)
    assert back is not None
    np.testing.assert_array_equal(back.rotation, amap.rotation)
    assert align.AlignmentMap.load(tmp_path / "nowhere") is None


def test_pinned_model_scores_the_same_on_a_rotated_space_and_not_on_a_shuffled_one() -> None:
    z_a, y = _clustered()
    design_a = _design(z_a, y)
    train, val = design_a.split == "train", design_a.split == "val"
    model = make_model("lightgbm").fit(z_a[train], y[train], z_a[val], y[val])
    rotated = _design((z_a @ _orthogonal(16, 4)).astype(np.float32), y)
    amap, _ = align.fit_procrustes(rotated.x, z_a)
    aligned = _design(amap.apply(rotated.x), y)
    np.testing.assert_allclose(model.predict_proba(aligned.x), model.predict_proba(z_a), atol=1e-6)
    scores = compat.compat_scores(model, design_a, aligned, amap)
    assert abs(scores["pinned"] - scores["aligned"]) < 1e-9
    assert scores["pinned"] - scores["unaligned"] > 0.1  # the raw rotated space breaks it
    perm = np.random.default_rng(5).permutation(len(z_a))
    shuffled = _design(z_a[perm], y)
    bad = compat.compat_scores(model, design_a, shuffled, None)
    log.info("planted: rotated %s, shuffled %s", scores, bad)
    assert bad["pinned"] - bad["aligned"] > 0.1 > compat.DEFAULT_MAX_DROP


def _bct_world(n: int = 600, seed: int = 0) -> tuple[np.ndarray, list[InputBlock]]:
    """(n, 24) inputs with a planted 4-d structure and some missing values, one block group."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) @ rng.normal(size=(4, 24)) + 0.1 * rng.normal(size=(n, 24))
    x[rng.random(n) < 0.1, 12:] = np.nan  # some users lack the second block
    blocks = [InputBlock("a", 0, 12, "g1"), InputBlock("b", 12, 24, "g2")]
    return x.astype(np.float32), blocks


def _tiny_train(x, blocks, seed: int, anchors=None, weight: float = 1.0) -> UserEncoder:
    cfg = AutoencoderConfig.tiny(x.shape[1])
    tcfg = replace(TrainConfig.tiny(), epochs=15, seed=seed, compat_weight=weight)
    return UserEncoder.from_result(train_autoencoder(x, blocks, cfg, tcfg, anchors=anchors))


@pytest.mark.slow  # four autoencoder trainings
def test_bct_term_pulls_anchor_vectors_toward_the_parent() -> None:
    x, blocks = _bct_world()
    parent = _tiny_train(x, blocks, seed=0)
    rows = np.arange(0, len(x), 2)  # half the users are anchors
    anchors = Anchors(rows, parent.embed(x[rows]))
    plain = _tiny_train(x, blocks, seed=1)  # same data, same seed: only the term differs
    bct = _tiny_train(x, blocks, seed=1, anchors=anchors)
    off = _tiny_train(x, blocks, seed=1, anchors=anchors, weight=0.0)
    r_plain = align.identity_fit(plain.embed(x[rows]), anchors.z_parent)["residual"]
    r_bct = align.identity_fit(bct.embed(x[rows]), anchors.z_parent)["residual"]
    others = np.arange(1, len(x), 2)  # never anchors: the term generalises to them
    r_others = align.identity_fit(bct.embed(x[others]), parent.embed(x[others]))["residual"]
    log.info(
        "identity residual: plain %.3f, bct %.3f, bct non-anchors %.3f", r_plain, r_bct, r_others
    )
    assert r_plain > 0.7  # a retrain is another space: no closer than unrelated vectors
    assert r_bct < 0.35 * r_plain and r_others < 0.5 * r_plain
    np.testing.assert_array_equal(off.embed(x), plain.embed(x))  # weight 0: exactly no term


def test_fit_alignment_methods() -> None:
    z_a, _ = _clustered()
    anchors = Anchors(np.arange(len(z_a)), z_a)
    rotated = (z_a @ _orthogonal(16, 6)).astype(np.float32)
    amap, fit = align.fit_alignment(anchors, rotated, "procrustes")
    assert amap is not None and fit["residual"] < 1e-5 and fit["residual_raw"] > 0.5
    none, fit_bct = align.fit_alignment(anchors, rotated, "bct")
    assert none is None and fit_bct["residual"] == pytest.approx(fit["residual_raw"])
    with pytest.raises(ValueError, match="unknown alignment method"):
        align.fit_alignment(anchors, rotated, "magic")


# --- end to end on the tiny synthetic workspace ---------------------------------------------


@dataclass
class Aligned:
    settings: Settings
    as_of: pd.Timestamp
    parent: str  # batch A, active, with model_id pinned to it
    model_id: str


def _train(
    settings: Settings, t: pd.Timestamp, seed: int, align_to: str | None, method: str = "procrustes"
) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(epochs=12, seed=seed)
        batch_id = pipeline.train_batch(
            settings, t, None, cfg, align_to=align_to, align_method=method
        )
    finally:
        torch.set_num_threads(threads)
    pipeline.embed_batch(settings, batch_id, t)
    return batch_id


@pytest.fixture(scope="module")
def ws(built: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aligned]:
    from downstream.tasks import train_task
    from userrep.feast_store import apply_repo

    root = tmp_path_factory.mktemp("align") / "ws"
    shutil.copytree(built.settings.workspace, root)
    settings = Settings(workspace=root, text_cache=built.settings.text_cache)
    apply_repo(settings)
    t = built.earlier
    build.build_encoders(settings, t)
    build.build_snapshot(settings, t)
    parent = _train(settings, t, seed=0, align_to=None)
    with session_scope(settings.metadata_db_url) as session:
        batches.promote(session, parent, force_reason="test: no validation suite here")
    build.materialize_latest(settings, t, views=[C.ITEM_VECTORS_VIEW])
    model = train_task(settings, family="lightgbm", batch_id=parent, as_of=t)
    assert model.model_id is not None
    yield Aligned(settings, t, parent, model.model_id)
    built.settings.export_env()


def _rotated_copy(ws: Aligned, q: np.ndarray) -> str:
    """A batch whose encoder is the parent's with its last layer rotated: z_B = z_A @ q."""
    with session_scope(ws.settings.metadata_db_url) as session:
        src = Path(batches.get_batch(session, ws.parent).artifact_path)
    batch_id = f"b-rotated-{np.random.default_rng().integers(1 << 16):04x}"
    art = ws.settings.paths.batches / batch_id / "encoder"
    shutil.copytree(src, art)
    state = torch.load(art / "model.pt", weights_only=True)
    last = max(k for k in state if k.startswith("encoder.net.") and k.endswith(".weight"))
    qt = torch.from_numpy(q.T.astype(np.float32))
    state[last] = qt @ state[last]  # (latent, hidden)
    state[last.replace("weight", "bias")] = qt @ state[last.replace("weight", "bias")]
    torch.save(state, art / "model.pt")
    seal = art / "SHA256"  # the artifact's own checksum file, where artifacts carry one
    if seal.exists():  # re-sealed: the edited copy is this batch's artifact
        seal.write_text(artifact_sha256(art) + "\n")
    raw = UserEncoder.load(art)
    users, x = pipeline.training_matrix(
        ws.settings, ws.as_of, pipeline.load_encoder(ws.settings, ws.parent)[1]
    )
    record = align.align_new_batch(ws.settings, ws.parent, art, users, x, raw)
    with session_scope(ws.settings.metadata_db_url) as session:
        row = batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=ws.as_of.to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=raw.latent_dim,
            artifact_path=str(art),
            artifact_sha256=artifact_sha256(art),
            metrics={},
            parent_batch_id=ws.parent,
        )
        row.alignment = record
    pipeline.embed_batch(ws.settings, batch_id, ws.as_of)
    return batch_id


def _cli(ws: Aligned, *args: str) -> Result:
    from userrep.cli import app

    return CliRunner().invoke(app, ["-w", str(ws.settings.workspace), *args])


def _published(settings: Settings, batch_id: str, t: pd.Timestamp) -> pd.DataFrame:
    path = settings.paths.user_embedding / f"{batch_id}__{t:%Y%m%dT%H%M%S}.parquet"
    return pq.read_table(path).to_pandas().sort_values(C.USER_ID).reset_index(drop=True)


@pytest.mark.slow
def test_exact_rotation_aligns_and_the_pinned_model_moves_over(ws: Aligned) -> None:
    batch_id = _rotated_copy(ws, _orthogonal(64, 11))
    with session_scope(ws.settings.metadata_db_url) as session:
        row = batches.get_batch(session, batch_id)
        assert row.parent_batch_id == ws.parent and row.alignment["method"] == "procrustes"
        assert row.alignment["residual"] < 1e-5
    z_a = np.stack(_published(ws.settings, ws.parent, ws.as_of)[C.Z_U])
    z_b = np.stack(_published(ws.settings, batch_id, ws.as_of)[C.Z_U])
    np.testing.assert_allclose(z_b, z_a, atol=1e-4)
    refused = _cli(ws, "downstream", "repin", ws.model_id, "--batch", batch_id)
    assert refused.exit_code != 0 and "no compatibility record" in refused.output
    # the tiny workspace labels ~40 test users a window: under the default floor of 50, so the
    # floor is lowered here (the exact rotation leaves a drop of exactly 0 on every resample)
    floor = ("--min-test-users", "30")
    assert _cli(ws, "batches", "compat", batch_id, "--model", ws.model_id, *floor).exit_code == 0
    with session_scope(ws.settings.metadata_db_url) as session:
        record = session.get(DownstreamModel, ws.model_id).metrics["compat"][batch_id]
    log.info("exact rotation: %s", record)
    assert record["verdict"] == compat.COMPATIBLE, record["reasons"]
    assert record["compatible"] and abs(record["drop"]) < 1e-6
    assert record["lineage"]["chain"] == [batch_id, ws.parent]
    assert record["unaligned"] < record["aligned"] - 0.02
    assert record["evidence"]["n_test_users"] >= 30 and record["rule"]["min_test_users"] == 30
    moved = _cli(ws, "downstream", "repin", ws.model_id, "--batch", batch_id)
    assert moved.exit_code == 0, moved.output
    with session_scope(ws.settings.metadata_db_url) as session:
        row = session.get(DownstreamModel, ws.model_id)
        assert row.pinned_batch_id == batch_id
        row.pinned_batch_id = ws.parent  # restore for the other tests


@pytest.mark.slow
def test_shuffled_batch_is_refused(ws: Aligned) -> None:
    frame = _published(ws.settings, ws.parent, ws.as_of)
    z = np.stack(frame[C.Z_U])[np.random.default_rng(3).permutation(len(frame))]
    batch_id = "b-shuffled"
    with session_scope(ws.settings.metadata_db_url) as session:
        batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=ws.as_of.to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=z.shape[1],
            artifact_path="-",
            artifact_sha256="-",
            metrics={},
        )
    table = pipeline.embedding_table(frame[C.USER_ID].to_numpy(), z, batch_id, ws.as_of)
    pq.write_table(
        table, ws.settings.paths.user_embedding / f"{batch_id}__{ws.as_of:%Y%m%dT%H%M%S}.parquet"
    )
    with session_scope(ws.settings.metadata_db_url) as session:
        batches.mark_ready(session, batch_id, len(frame))
    result = compat.evaluate_compat(ws.settings, ws.model_id, batch_id)
    log.info("shuffled: %s", result.record)
    assert result.verdict == compat.INCOMPATIBLE and not result.lineage.found
    assert result.evidence.drop > 0.05
    with pytest.raises(compat.CompatError, match="refusing"):
        compat.repin(ws.settings, ws.model_id, batch_id)


@pytest.mark.slow
def test_real_retrain_breaks_unaligned_and_stays_close_aligned(ws: Aligned) -> None:
    batch_id = _train(ws.settings, ws.as_of, seed=1, align_to=ws.parent, method="procrustes")
    assert isinstance(pipeline.load_encoder(ws.settings, batch_id)[0], align.AlignedEncoder)
    with session_scope(ws.settings.metadata_db_url) as session:
        alignment = batches.get_batch(session, batch_id).alignment
    result = compat.evaluate_compat(ws.settings, ws.model_id, batch_id)
    record = result.record
    log.warning("real retrain: alignment %s, compat %s", alignment, record)
    assert result.lineage.found
    assert record["pinned"] - record["unaligned"] > 0.05  # unaligned: the model is broken
    assert record["pinned"] - record["aligned"] < 0.5 * (record["pinned"] - record["unaligned"])


@pytest.mark.slow
def test_bct_retrain_records_its_alignment(ws: Aligned) -> None:
    batch_id = _train(ws.settings, ws.as_of, seed=1, align_to=ws.parent, method="bct+procrustes")
    with session_scope(ws.settings.metadata_db_url) as session:
        row = batches.get_batch(session, batch_id)
        record, parent = row.alignment, row.parent_batch_id
    log.warning("bct retrain: alignment %s", record)
    assert parent == ws.parent and record["method"] == "bct+procrustes"
    assert record["compat_weight"] == TrainConfig().compat_weight and record["sha256"]
    # the term pulls the raw space toward the parent: the same seed trained without it is
    # ~sqrt(2) away (independent spaces), the BCT batch well under that before any map
    plain = _train(ws.settings, ws.as_of, seed=1, align_to=ws.parent, method="procrustes")
    with session_scope(ws.settings.metadata_db_url) as session:
        raw_plain = batches.get_batch(session, plain).alignment["residual_raw"]
    log.warning("raw residual: bct %.3f, without the term %.3f", record["residual_raw"], raw_plain)
    assert 0 <= record["residual"] <= record["residual_raw"] < 0.7 * raw_plain
    assert record["variance_explained"] == pytest.approx(1 - record["residual"] ** 2)


@pytest.mark.slow
def test_report_lists_each_models_retrain_compatibility(ws: Aligned) -> None:
    from downstream import compat_report, report

    planted = {
        "pinned": 0.70,
        "unaligned": 0.55,
        "aligned": 0.698,
        "retrained": 0.71,
        "metrics": {"pinned": {"auc": 0.70, "auc_ci": [0.68, 0.72]}},
        "drop": 0.002,
        "drop_bounds": [-0.001, 0.004],
        "max_drop": 0.005,
        "evidence": {"n_test_users": 321},
        "lineage": {"found": True, "chain": ["b-planted", ws.parent]},
        "verdict": compat.COMPATIBLE,
        "compatible": True,
        "from_batch": ws.parent,
    }
    compat.save_record(ws.settings, ws.model_id, "b-planted", planted)
    try:
        data = report.ReportData(ws.settings, ws.parent, ws.as_of)
        section = compat_report.compat_section(data)
        assert section is not None and section.title == "Retrain compatibility"
        row = next(line for line in section.markdown.splitlines() if "b-planted" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        with session_scope(ws.settings.metadata_db_url) as session:
            task = session.get(DownstreamModel, ws.model_id).task
        assert cells[:4] == [ws.model_id, task, ws.parent, "b-planted"]
        assert cells[4:8] == ["0.7000 [0.680, 0.720]", "0.5500", "0.6980", "0.7100"]
        assert cells[8:] == ["+0.0020 [-0.0010, +0.0040] (max 0.0050)", "321", "yes", "compatible"]
        page, _ = report.render(data)
        assert "Retrain compatibility" in page  # registered on import, in the default page
    finally:
        with session_scope(ws.settings.metadata_db_url) as session:
            row = session.get(DownstreamModel, ws.model_id)
            records = dict(row.metrics["compat"])
            records.pop("b-planted")
            row.metrics = {**row.metrics, "compat": records}


@pytest.mark.slow
def test_reference_is_a_point_in_time_retrain(ws: Aligned) -> None:
    """Runs last: it adds a feature snapshot a window before the batches' time."""
    from downstream.registry import load_registered

    batch_id = _rotated_copy(ws, _orthogonal(64, 13))
    reg = load_registered(ws.settings, ws.model_id)
    label_time = ws.as_of - pd.Timedelta(days=reg.spec["window_days"])
    args = (ws.settings, reg.record.task, "lightgbm", reg.spec, batch_id)
    before = compat.point_in_time_reference(*args)
    # nothing published or snapshotted that early: no reference, never one fitted on later data
    assert before.model is None and "no feature snapshot" in before.info["why"]
    # the workspace as it would have been at label_time: item vectors, then a snapshot
    current = ws.settings.paths.encoders / encoders.CURRENT
    version = current.read_text()
    try:
        vecs = build.build_encoders(ws.settings, label_time)
    finally:
        current.write_text(version)  # later builds keep the batches' encoder
    build.build_snapshot(ws.settings, label_time, vecs=vecs)
    ref = compat.point_in_time_reference(*args)
    assert ref.model is not None and ref.info["available"] and ref.info["train_users"] > 50
    assert ref.info["label_time"] == label_time.isoformat()
    assert ref.info["labels_until"] == ws.as_of.isoformat()
    assert ref.info["vectors"] == f"embedded from the snapshot at {label_time.isoformat()}"
    result = compat.evaluate_compat(ws.settings, ws.model_id, batch_id, save=False)
    log.warning("point-in-time reference: %s", result.metrics["retrained"])
    retrained = result.metrics["retrained"]
    for metric in ("auc", "recall@10"):
        lo, hi = retrained[f"{metric}_ci"]
        assert lo <= retrained[metric] <= hi
    assert retrained["auc"] > 0.55 and result.record["reference"]["available"]
