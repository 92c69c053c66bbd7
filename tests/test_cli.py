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


@pytest.mark.slow
def test_embed_user_reads_events_as_ingest_names_unknown_picks_and_publishes(
    built, tmp_path: Path
) -> None:  # built: conftest.Pipeline
    import shutil

    import numpy as np
    import pandas as pd

    from representation import batches
    from representation.encoders import load_item_vectors
    from representation.serving import get_user_embeddings
    from userrep.db import session_scope
    from userrep.feast_store import apply_repo
    from userrep.settings import Settings

    ws = tmp_path / "ws"
    shutil.copytree(built.settings.workspace, ws)
    settings = Settings(workspace=ws, text_cache=built.settings.text_cache)
    apply_repo(settings)
    with session_scope(settings.metadata_db_url) as session:
        batches.promote(session, built.batch_id, force_reason="embed-user test")
    vecs = load_item_vectors(settings.paths, None)
    item, genre = int(vecs.item_ids[0]), sorted(vecs.genre_content)[0]
    after = built.end + pd.Timedelta(days=1)
    plays_ms = tmp_path / "plays.csv"
    t_ms = int(built.end.value // 10**6) - 3_600_000
    plays_ms.write_text(f"item_id,ts\n{item},{t_ms}\n")
    base = ["-w", str(ws), "embed-user", "--user-id", "424242", "--as-of", str(after)]

    # the ingest timestamp rule: milliseconds read as seconds is an error naming both units
    line = _one_error_line(_invoke(*base, "--events", str(plays_ms)))
    assert "ts implausible as epoch s (looks like ms: pass --ts-unit ms)" in line
    ok = _invoke(*base, "--events", str(plays_ms), "--ts-unit", "ms", "--items", str(item))
    assert ok.exit_code == 0, ok.output

    # unknown picks are named (stderr and JSON) and left out; all unknown is an error
    result = _invoke(*base, "--items", f"{item},999999999", "--genres", f"{genre},no-such-genre")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["unknown_items"], out["unknown_genres"]) == ([999999999], ["no-such-genre"])
    assert "999999999" in result.stderr and "no-such-genre" in result.stderr
    alone = json.loads(_invoke(*base, "--items", str(item), "--genres", genre).stdout)
    assert alone["z_u"] == out["z_u"]  # the unknown picks changed nothing
    line = _one_error_line(_invoke(*base, "--items", "999999999", "--genres", "no-such-genre"))
    assert "none of the onboarding picks is known" in line

    # --publish writes the vector online, read back through the serving path
    result = _invoke(*base, "--items", str(item), "--publish")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["published"] is True
    batch, z = get_user_embeddings(settings, [424242])
    assert batch == built.batch_id
    np.testing.assert_allclose(z[0], out["z_u"], atol=1e-5)
    # an older vector never replaces it: the user's watermark, or the batch's published as-of
    for older in (after - pd.Timedelta(hours=1), built.end - pd.Timedelta(days=2)):
        args = ["-w", str(ws), "embed-user", "--user-id", "424242", "--as-of", str(older)]
        line = _one_error_line(_invoke(*args, "--genres", genre, "--publish"))
        assert line.startswith("error: not published:"), line
    np.testing.assert_allclose(get_user_embeddings(settings, [424242])[1][0], z[0])
