"""CLI conventions: results on stdout, user mistakes as one `error:` line with
exit code 2 and no traceback, --workspace before or after the subcommand, --json."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from userrep.cli import app


@pytest.fixture(autouse=True)
def _keep_env() -> Iterator[None]:
    """The CLI exports the workspace to the environment (for feast): undo it per test."""
    saved = {k: os.environ.get(k) for k in ("USERREP_WORKSPACE", "USERREP_HORIZONS")}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def empty_ws(tmp_path: Path) -> Path:
    """An initialised workspace without data: the metadata DB, migrated (no Feast apply)."""
    from userrep.db import upgrade

    ws = tmp_path / "ws"
    ws.mkdir()
    upgrade(f"sqlite:///{ws / 'metadata.db'}")
    return ws


def _invoke(*args: str):  # -> click.testing.Result
    return CliRunner().invoke(app, list(args))


def _one_error_line(result) -> str:  # result: click.testing.Result
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_a_wrong_workspace_is_one_error_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for args in (
        ["-w", str(missing), "batches", "list"],
        ["batches", "list", "--workspace", str(missing)],
        ["downstream", "list", "-w", str(missing)],
        ["batches", "show", "b-x", "-w", str(missing)],
    ):
        line = _one_error_line(_invoke(*args))
        assert f"no workspace at {missing}" in line and "userrep init" in line
    assert not missing.exists()
    plain_dir = tmp_path / "plain"  # a directory that is not a workspace
    plain_dir.mkdir()
    _one_error_line(_invoke("batches", "list", "-w", str(plain_dir)))
    assert list(plain_dir.iterdir()) == []


def test_a_bad_date_is_one_error_line(empty_ws: Path) -> None:
    line = _one_error_line(_invoke("train", "--as-of", "2024-13-01", "-w", str(empty_ws)))
    assert "2024-13-01" in line


def test_an_unknown_batch_is_one_error_line(empty_ws: Path) -> None:
    line = _one_error_line(_invoke("batches", "show", "b-unknown", "-w", str(empty_ws)))
    assert "b-unknown" in line


def test_debug_shows_the_traceback(empty_ws: Path) -> None:
    result = _invoke("--debug", "-w", str(empty_ws), "batches", "show", "b-unknown")
    assert result.exit_code != 0 and result.exception is not None
    assert not isinstance(result.exception, SystemExit)


def test_lists_print_json_on_stdout_with_the_workspace_after_the_subcommand(
    empty_ws: Path,
) -> None:
    for args in (["batches", "list"], ["downstream", "list"]):
        result = _invoke(*args, "--json", "--workspace", str(empty_ws))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == []
    plain = _invoke("-w", str(empty_ws), "batches", "list")
    assert plain.exit_code == 0 and plain.stdout.startswith("batch\tstatus\tas_of")


def test_help_shows_no_bool_and_documents_the_workspace_option() -> None:
    for args in (["--help"], ["batches", "list", "--help"], ["ingest", "--help"]):
        result = _invoke(*args)
        assert result.exit_code == 0 and "<bool>" not in result.output, result.output
        assert "--workspace" in result.output
    ingest_help = _invoke("ingest", "--help").output
    assert "user_id=uid,item_id=track,ts=played_at,weight=ms" in ingest_help


def test_export_embeddings_takes_the_newest_as_of_unless_told(tmp_path: Path) -> None:
    import pandas as pd

    from representation.publish import export_embeddings
    from userrep import columns as C
    from userrep.settings import Settings

    settings = Settings(workspace=tmp_path / "ws")
    settings.paths.user_embedding.mkdir(parents=True)
    times = [pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")]
    for i, t in enumerate(times):
        pd.DataFrame(
            {
                C.USER_ID: [1, 2],
                C.Z_U: [[0.5 + i, 1.0], [2.0, 3.0]],
                C.BATCH_ID: "b-1",
                C.EVENT_TIMESTAMP: t,
            }
        ).to_parquet(settings.paths.user_embedding / f"b-1__{t:%Y%m%dT%H%M%S}.parquet")
    out = tmp_path / "z.parquet"
    assert export_embeddings(settings, "b-1", out, as_of="newest") == 2
    assert set(pd.read_parquet(out)[C.AS_OF]) == {times[1]}
    assert export_embeddings(settings, "b-1", out, as_of=times[0]) == 2
    assert export_embeddings(settings, "b-1", out) == 4  # the whole history
    csv = tmp_path / "z.csv"
    assert export_embeddings(settings, "b-1", csv, as_of="newest") == 2
    assert json.loads(pd.read_csv(csv)[C.Z_U][0]) == [1.5, 1.0]
    with pytest.raises(FileNotFoundError, match="no z_u as of"):
        export_embeddings(settings, "b-1", out, as_of=pd.Timestamp("2023-01-01", tz="UTC"))
