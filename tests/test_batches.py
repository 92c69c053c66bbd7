"""Batch lifecycle: publish, promote (one active), retire (never while pinned), gates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from representation.batches import (
    DEFAULT_GATES,
    BatchError,
    active_batch,
    check_batch_id,
    create_batch,
    get_batch,
    list_batches,
    mark_ready,
    mark_ready_if_building,
    new_batch_id,
    promote,
    ready_deferred,
    require_embeddable,
    retire,
    servable_batches,
    validation_gate,
)
from tests.postgres import PostgresUnavailable, temporary_postgres_database
from userrep.db import (
    BatchStatus,
    DownstreamModel,
    RepresentationBatch,
    record_validation_run,
    session_scope,
    upgrade,
)

AS_OF = datetime(2024, 6, 15, 12, 30, tzinfo=UTC)
NO_GATES = ()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A metadata DB migrated to head: temp SQLite file, or a fresh local Postgres database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metadata.db'}"
        upgrade(url)
        yield url
        return
    try:
        with temporary_postgres_database() as url:
            upgrade(url)
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    with session_scope(db_url) as s:
        yield s


def _batch(session: Session, batch_id: str, *, ready: bool = True, **kw: object) -> str:
    create_batch(
        session,
        batch_id=batch_id,
        as_of=kw.pop("as_of", AS_OF),  # type: ignore[arg-type]
        feature_service="encoder_input_v2",
        latent_dim=8,
        artifact_path=f"/ws/batches/{batch_id}",
        artifact_sha256="0" * 64,
        metrics={"recon_loss": 0.1},
        **kw,  # type: ignore[arg-type]
    )
    if ready:
        mark_ready(session, batch_id, n_users=100)
    return batch_id


def _pin(session: Session, model_id: str, batch_id: str) -> DownstreamModel:
    model = DownstreamModel(
        model_id=model_id,
        name="ranker",
        task="next_item",
        family="lightgbm",
        pinned_batch_id=batch_id,
        artifact_path=f"/ws/models/{model_id}",
        metrics={},
    )
    session.add(model)
    session.flush()
    return model


def _passing_run(session: Session, batch_id: str) -> None:
    record_validation_run(session, "batch", batch_id, "z_u_batch", True, {"n": 100}, [])


def test_new_batch_id_is_dated_and_unique() -> None:
    ids = {new_batch_id(AS_OF) for _ in range(20)}
    assert len(ids) > 1
    assert all(i.startswith("b20240615-") and len(i) == len("b20240615-3f2a0c9d1e7b") for i in ids)
    late = datetime(2024, 6, 15, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert new_batch_id(late).startswith("b20240616-")  # the UTC date
    with pytest.raises(BatchError, match="naive"):
        new_batch_id(datetime(2024, 6, 15))


def test_lifecycle_building_ready_active(session: Session) -> None:
    _batch(session, "bA", ready=False)
    assert get_batch(session, "bA").status == BatchStatus.BUILDING
    assert servable_batches(session) == []
    with pytest.raises(BatchError, match="only a ready batch"):
        promote(session, "bA", NO_GATES)

    batch = mark_ready(session, "bA", n_users=42)
    assert (batch.status, batch.n_users) == (BatchStatus.READY, 42)
    with pytest.raises(BatchError, match="only a building batch"):
        mark_ready(session, "bA", n_users=42)

    promote(session, "bA", NO_GATES)
    assert active_batch(session) is not None
    assert active_batch(session).batch_id == "bA"  # type: ignore[union-attr]
    assert get_batch(session, "bA").promoted_at is not None


def test_promoting_b_demotes_a_and_one_active(session: Session) -> None:
    _batch(session, "bA")
    _batch(session, "bB", parent_batch_id="bA")
    promote(session, "bA", NO_GATES)
    _pin(session, "m1", "bA")

    b = promote(session, "bB", NO_GATES)
    assert b.promotion is not None and b.promotion["previous_active"] == "bA"
    statuses = {x.batch_id: x.status for x in list_batches(session)}
    assert statuses == {"bA": BatchStatus.READY, "bB": BatchStatus.ACTIVE}
    # bA is still served to m1; bB is active
    assert [x.batch_id for x in servable_batches(session)] == ["bB", "bA"]

    promote(session, "bA", NO_GATES)  # rollback is just another promotion
    active = [x.batch_id for x in list_batches(session) if x.status == BatchStatus.ACTIVE]
    assert active == ["bA"]


def test_database_enforces_single_active(session: Session) -> None:
    _batch(session, "bA")
    _batch(session, "bB")
    promote(session, "bA", NO_GATES)
    get_batch(session, "bB").status = BatchStatus.ACTIVE  # bypassing promote()
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_retire_refused_while_pinned(session: Session) -> None:
    _batch(session, "bA")
    _batch(session, "bB")
    promote(session, "bA", NO_GATES)
    model = _pin(session, "ranker-7", "bA")
    promote(session, "bB", NO_GATES)

    with pytest.raises(BatchError, match="ranker-7"):
        retire(session, "bA")

    model.pinned_batch_id = "bB"  # retrained on bB
    session.flush()
    retired = retire(session, "bA")
    assert retired.status == BatchStatus.RETIRED and retired.retired_at is not None
    assert [x.batch_id for x in servable_batches(session)] == ["bB"]
    with pytest.raises(BatchError, match="only a ready batch"):
        promote(session, "bA", NO_GATES)


def test_retire_allowed_after_model_retired(session: Session) -> None:
    _batch(session, "bA")
    model = _pin(session, "m1", "bA")
    with pytest.raises(BatchError, match="m1"):
        retire(session, "bA")
    model.status = "retired"
    session.flush()
    assert retire(session, "bA").status == BatchStatus.RETIRED


def test_retire_refused_for_active(session: Session) -> None:
    _batch(session, "bA")
    promote(session, "bA", NO_GATES)
    with pytest.raises(BatchError, match="is active"):
        retire(session, "bA")


def test_unknown_batch_and_duplicates(session: Session) -> None:
    _batch(session, "bA")
    with pytest.raises(BatchError, match="unknown batch 'nope'.*bA"):
        get_batch(session, "nope")
    with pytest.raises(BatchError, match="already exists"):
        _batch(session, "bA")
    with pytest.raises(BatchError, match="unknown batch"):
        _batch(session, "bC", parent_batch_id="nope")


def test_validation_gate(session: Session) -> None:
    assert (validation_gate,) == DEFAULT_GATES
    _batch(session, "bA")
    with pytest.raises(BatchError, match="no validation run"):
        promote(session, "bA")

    record_validation_run(
        session, "batch", "bA", "z_u_batch", False, {}, ["expect_no_nan", "expect_norm_range"]
    )
    with pytest.raises(BatchError, match="expect_no_nan, expect_norm_range"):
        promote(session, "bA")

    _passing_run(session, "bA")
    assert validation_gate(session, get_batch(session, "bA")) == []
    batch = promote(session, "bA")
    assert batch.status == BatchStatus.ACTIVE
    assert batch.promotion is not None
    assert batch.promotion["gates"] == {"validation_gate": []}


def test_force_reason_records_failed_gates(session: Session) -> None:
    _batch(session, "bA")
    batch = promote(session, "bA", force_reason="validation suite not built yet")
    assert batch.status == BatchStatus.ACTIVE
    assert batch.promotion is not None
    assert batch.promotion["force_reason"] == "validation suite not built yet"
    assert "no validation run" in batch.promotion["gates"]["validation_gate"][0]


def test_datetimes_round_trip_as_utc(db_url: str) -> None:
    eastern = timezone(timedelta(hours=-4))
    with session_scope(db_url) as s:
        _batch(
            s,
            "bA",
            as_of=datetime(2024, 6, 15, 8, 30, tzinfo=eastern),
            train_start=datetime(2024, 1, 1, tzinfo=UTC),
            train_end=datetime(2024, 6, 1, tzinfo=UTC),
        )
    with session_scope(db_url) as s:
        batch = s.get(RepresentationBatch, "bA")
        assert batch is not None
        assert batch.as_of == AS_OF
        assert batch.as_of.tzinfo is UTC and batch.as_of.hour == 12
        for value in (batch.created_at, batch.train_start, batch.train_end):
            assert value is not None and value.utcoffset() == timedelta(0)
    with pytest.raises(BatchError, match="naive"), session_scope(db_url) as s:
        _batch(s, "bB", as_of=datetime(2024, 6, 15))


@pytest.mark.parametrize("bad", ["*", "../../x", "a/b", "b1__x", "", "-b", "b 1", "x" * 65])
def test_batch_ids_that_are_globs_or_paths_are_refused(session: Session, bad: str) -> None:
    with pytest.raises(BatchError, match="not a batch id"):
        check_batch_id(bad)
    with pytest.raises(BatchError, match="not a batch id"):
        _batch(session, bad, ready=False)
    with pytest.raises(BatchError, match="unknown batch"):
        get_batch(session, bad)  # looked up, never matched as a pattern
    assert check_batch_id("b20240615-3f2a0c9d1e7b") == "b20240615-3f2a0c9d1e7b"


def test_ready_is_deferred_until_the_backfill_marks_it(session: Session) -> None:
    _batch(session, "bA", ready=False)
    with ready_deferred("bA"):
        mark_ready(session, "bA", n_users=5)  # what each as-of's embed_batch does
        assert get_batch(session, "bA").status == BatchStatus.BUILDING
        _batch(session, "bB")  # another batch is not deferred
        assert get_batch(session, "bB").status == BatchStatus.READY
    assert mark_ready_if_building(session, "bA", n_users=7)
    assert (get_batch(session, "bA").status, get_batch(session, "bA").n_users) == ("ready", 7)
    assert not mark_ready_if_building(session, "bA", n_users=9)  # embedded again: unchanged
    assert get_batch(session, "bA").n_users == 7


def test_a_retired_batch_is_not_embedded(session: Session) -> None:
    _batch(session, "bA")
    assert require_embeddable(session, "bA").batch_id == "bA"
    retire(session, "bA")
    with pytest.raises(BatchError, match="retired"):
        require_embeddable(session, "bA")


def test_artifacts_are_verified_against_their_sha256(tmp_path: Path) -> None:
    from representation.artifact import (
        ARTIFACT_FILES,
        SHA_FILE,
        ArtifactIntegrityError,
        artifact_sha256,
        save_artifact,
        verify_artifact,
    )

    for name in ARTIFACT_FILES:
        (tmp_path / name).write_bytes(name.encode())
    sha = artifact_sha256(tmp_path)
    verify_artifact(tmp_path, sha)  # no SHA256 file (an older artifact): the DB record alone
    (tmp_path / SHA_FILE).write_text(sha)
    verify_artifact(tmp_path, "-")  # a placeholder record: the file beside it still checks
    (tmp_path / "model.pt").write_bytes(b"other weights")
    with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256"):
        verify_artifact(tmp_path, "-")
    (tmp_path / "model.pt").unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"incomplete \(model.pt missing\)"):
        verify_artifact(tmp_path, sha)
    with pytest.raises(FileExistsError, match="already holds an encoder artifact"):
        save_artifact(tmp_path, None)  # type: ignore[arg-type]  # refused before writing
    assert not (tmp_path / "model.pt").exists()
