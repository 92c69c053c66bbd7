"""Validation on a copy of the session's `built` workspace: runs are recorded where the promotion
gate reads them, a corrupted batch cannot be promoted, the CLI exits non-zero on failure, and
GX stays out of imports that do not validate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from representation import batches, pipeline
from tests.conftest import Pipeline
from userrep import columns as C
from userrep.db import TargetKind, latest_validation_run, session_scope
from userrep.settings import Settings
from validation.frames import features_frame, zu_files
from validation.pipeline import validate_all, validate_batch

pytestmark = pytest.mark.slow  # the shared pipeline fixture trains an autoencoder
STDEV, SHAPE = "expect_column_stdev_to_be_between", "expect_column_shape_to_match_reference"


@dataclass
class Workspace:
    settings: Settings
    built: Pipeline


@pytest.fixture(scope="module")
def ws(built: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("validation") / "ws"
    shutil.copytree(built.settings.workspace, root)
    settings = Settings(workspace=root, text_cache=built.settings.text_cache)
    settings.export_env()
    yield Workspace(settings, built)
    built.settings.export_env()


def publish_copy(
    settings: Settings,
    source: str,
    batch_id: str,
    z: np.ndarray,
    as_of: pd.Timestamp,
    ids: np.ndarray,
) -> None:
    """Register `batch_id` like `source` and publish z as its vectors (status ready)."""
    with session_scope(settings.metadata_db_url) as session:
        src = batches.get_batch(session, source)
        batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=src.as_of,
            feature_service=src.feature_service,
            latent_dim=src.latent_dim,
            artifact_path=src.artifact_path,
            artifact_sha256=src.artifact_sha256,
            metrics={},
        )
        batches.mark_ready(session, batch_id, len(ids))
    table = pipeline.embedding_table(ids, z, batch_id, as_of)
    pq.write_table(
        table, settings.paths.user_embedding / f"{batch_id}__{as_of:%Y%m%dT%H%M%S}.parquet"
    )


def published(settings: Settings, batch_id: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_parquet(list(zu_files(settings, batch_id).values())[-1])
    return df[C.USER_ID].to_numpy(), np.stack(df[C.Z_U].to_numpy())


def test_a_valid_batch_is_recorded_and_can_be_promoted_without_force(ws: Workspace) -> None:
    batch_id = ws.built.batch_id
    out = validate_batch(ws.settings, batch_id, None)
    assert out.success, out.failed
    assert out.report_path is not None and out.report_path.exists()
    with session_scope(ws.settings.metadata_db_url) as session:
        run = latest_validation_run(session, TargetKind.BATCH, batch_id)
        assert run is not None and run.success and run.id == out.run_id
        assert run.statistics["row_count"] == len(ws.built.data.users)
        assert batches.promote(session, batch_id).status == "active"


def test_a_new_snapshot_of_the_same_batch_is_compared_in_its_own_space(ws: Workspace) -> None:
    """A newer snapshot of the same batch is compared with the earlier one in its own space
    (no alignment): the whole-vector checks run and hold, and what may flag is only the spread
    or shape of single dimensions (the last week adds ~10% brand-new users). Returning users
    alone pass; a planted doubling of two dimensions' spread fails on exactly those two."""
    from tests.drift_world import publish
    from validation.config import ValidationConfig
    from validation.drift import dim_column
    from validation.frames import load_zu
    from validation.targets import check_zu

    batch_id, end, earlier = ws.built.batch_id, ws.built.end, ws.built.earlier
    publish(ws.settings, batch_id, earlier)  # the batch's z_u one week earlier
    out = validate_batch(ws.settings, batch_id, end)
    assert out.statistics["drift_mode"] == "same_space"
    assert out.statistics["reference"] == f"{batch_id}@{earlier}"
    assert "expect_domain_classifier_auc_to_be_below(z_u)" in {c.name for c in out.checks}
    assert all(n.startswith((STDEV, SHAPE)) for n in out.failed), out.failed
    assert len({n.split("(")[1] for n in out.failed}) <= 8  # a few of the 64 dimensions
    frame, z = load_zu(zu_files(ws.settings, batch_id)[end], z_dim := z_width(ws))
    ref_frame, ref_z = load_zu(zu_files(ws.settings, batch_id)[earlier], z_dim, frame=False)
    returning = frame[C.USER_ID].isin(ref_frame[C.USER_ID]).to_numpy()
    assert 0.85 < returning.mean() < 0.95

    def check(vectors: np.ndarray):
        return check_zu(
            frame[returning].reset_index(drop=True),
            vectors,
            batch_id,
            z_dim,
            end,
            ValidationConfig(),
            reference=(ref_frame[C.USER_ID].to_numpy(), ref_z),
        )

    again = check(z[returning])
    assert again.success, again.failed
    planted = z[returning].copy()
    centre = planted[:, :2].mean(axis=0)
    planted[:, :2] = centre + 2.0 * (planted[:, :2] - centre)  # dims 0 and 1: spread doubled
    spread = check(planted)
    assert spread.failed
    flagged = {n.split("(")[1].rstrip(")") for n in spread.failed if n.startswith((STDEV, SHAPE))}
    assert flagged == {dim_column(0), dim_column(1)}, spread.failed


def z_width(ws: Workspace) -> int:
    with session_scope(ws.settings.metadata_db_url) as session:
        return batches.get_batch(session, ws.built.batch_id).latent_dim


def test_a_corrupted_batch_fails_and_promotion_is_refused_naming_the_expectation(
    ws: Workspace,
) -> None:
    ids, z = published(ws.settings, ws.built.batch_id)
    z = z.copy()
    z[:5, 0] = np.nan
    publish_copy(ws.settings, ws.built.batch_id, "b-corrupt", z, ws.built.end, ids)
    out = validate_batch(ws.settings, "b-corrupt", None, reference="none")
    assert out.failed == ["expect_column_vectors_to_be_finite(z_u)"]
    html = out.report_path.read_text()
    assert "expect_column_vectors_to_be_finite(z_u)" in html and "FAILED" in html
    with (
        session_scope(ws.settings.metadata_db_url) as session,
        pytest.raises(batches.BatchError, match="expect_column_vectors_to_be_finite"),
    ):
        batches.promote(session, "b-corrupt")


def test_drift_against_a_sibling_batch_uses_space_invariant_checks(ws: Workspace) -> None:
    ids, z = published(ws.settings, ws.built.batch_id)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((z.shape[1],) * 2))
    publish_copy(
        ws.settings, ws.built.batch_id, "b-rotated", (z @ q).astype(np.float32), ws.built.end, ids
    )
    out = validate_batch(ws.settings, "b-rotated", None, reference=ws.built.batch_id)
    assert out.statistics["drift_mode"] == "cross_space"
    assert out.success, out.failed
    assert "expect_neighbourhood_overlap_to_be_above(z_u)" in {c.name for c in out.checks}
    rng = np.random.default_rng(1)
    publish_copy(
        ws.settings, ws.built.batch_id, "b-shuffled", z[rng.permutation(len(z))], ws.built.end, ids
    )
    out = validate_batch(ws.settings, "b-shuffled", None, reference=ws.built.batch_id)
    assert out.failed == ["expect_neighbourhood_overlap_to_be_above(z_u)"]


def test_cli_exits_non_zero_with_a_readable_table(ws: Workspace) -> None:
    from userrep.cli import app

    ids, z = published(ws.settings, ws.built.batch_id)
    z = z.copy()
    z[7, 3] = np.inf
    publish_copy(ws.settings, ws.built.batch_id, "b-cli", z, ws.built.end, ids)
    runner = CliRunner()
    root = str(ws.settings.workspace)
    ok = runner.invoke(
        app, ["-w", root, "validate", "batch", "--batch", ws.built.batch_id, "--reference", "none"]
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        app, ["-w", root, "validate", "batch", "--batch", "b-cli", "--reference", "none"]
    )
    assert bad.exit_code == 1
    assert "expect_column_vectors_to_be_finite(z_u)" in bad.output and "FAIL" in bad.output
    as_json = runner.invoke(
        app, ["-w", root, "validate", "batch", "--batch", "b-cli", "--reference", "none", "--json"]
    )
    assert as_json.exit_code == 1
    (outcome,) = json.loads(as_json.stdout)
    assert outcome["target_ref"].startswith("b-cli") and outcome["success"] is False
    assert "expect_column_vectors_to_be_finite(z_u)" in outcome["failed"]
    checks = {c["name"]: c for c in outcome["checks"]}
    assert checks["expect_column_vectors_to_be_finite(z_u)"]["success"] is False


def test_validate_all_covers_every_stage(ws: Workspace) -> None:
    outcomes = validate_all(ws.settings)
    kinds = [o.target_kind for o in outcomes]
    assert kinds == ["events", "item_vectors", "features", "batch"]
    by_kind = {o.target_kind: o for o in outcomes}
    assert by_kind["events"].success and by_kind["item_vectors"].success
    assert by_kind["features"].statistics["reference"] == ws.built.earlier.isoformat()


def test_feature_snapshot_corruptions_are_named(ws: Workspace) -> None:
    from validation.config import ValidationConfig
    from validation.frames import vector_widths
    from validation.targets import check_features

    frame = features_frame(ws.settings, ws.built.end)
    widths, horizons = vector_widths(ws.settings), ws.settings.horizon_list
    now = ws.built.end
    good = check_features(frame, "t", widths, horizons, now, ValidationConfig())
    assert good.success, good.failed
    bad = frame.copy()
    row = bad.index[bad["n_events_30d"].fillna(0) > 0][0]
    bad.loc[row, "n_events_7d"] = bad.loc[row, "n_events_30d"] + 1  # 7d cannot exceed 30d
    collab = list(bad["collab_30d"].astype(object))  # Arrow-backed column -> plain objects
    collab[row + 1] = np.full(widths["collab_30d"], np.inf, np.float32)
    bad["collab_30d"] = pd.Series(collab, index=bad.index, dtype=object)
    got = check_features(bad, "t", widths, horizons, now, ValidationConfig()).failed
    assert set(got) == {
        "expect_column_pair_values_a_to_be_greater_than_b(n_events_30d,n_events_7d)",
        "expect_column_vectors_to_be_finite(collab_30d)",
    }


def test_great_expectations_is_imported_only_when_validating() -> None:
    code = (
        "import sys, userrep.cli, validation.pipeline, validation.gate, validation.targets; "
        "assert 'great_expectations' not in sys.modules, 'GX imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
