"""`userrep serve`: the feast serve command line it builds, and (slow) one vector read over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from userrep.cli import app
from userrep.cli.serve import feast_serve_argv
from userrep.settings import Settings


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_serve_help() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--port" in result.output


def test_feast_serve_argv_turns_worker_recycling_off(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    argv = feast_serve_argv(settings, port=7001, workers=2)
    assert Path(argv[0]).name == "feast"
    assert argv[argv.index("serve") - 4 :][:4] == [
        "-c",
        str(settings.feature_repo),
        "-f",
        str(settings.workspace / "feature_store.yaml"),
    ]
    assert _option(argv, "--max-requests") == "0"  # gunicorn: 0 = never restart a worker
    assert _option(argv, "--max-requests-jitter") == "0"
    assert "--no-access-log" in argv
    assert _option(argv, "--host") == "127.0.0.1"
    assert _option(argv, "--port") == "7001"
    assert _option(argv, "--workers") == "2"
    assert "--no-access-log" not in feast_serve_argv(settings, access_log=True)


def test_serve_dry_run_prints_the_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["-w", str(tmp_path / "ws"), "serve", "--port", "7002", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "serve --host 127.0.0.1 --port 7002" in result.output
    assert "--max-requests 0" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_answers_one_vector(built) -> None:
    port = _free_port()
    env = dict(os.environ, USERREP_WORKSPACE=str(built.settings.workspace))
    userrep = Path(sys.executable).with_name("userrep")
    proc = subprocess.Popen(
        [str(userrep), "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    user = int(built.data.users["user_id"].iloc[0])
    body = json.dumps(
        {
            "features": ["user_embedding:z_u"],
            "entities": {"user_id": [user], "batch_id": [built.batch_id]},
        }
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request(
                    "POST", "/get-online-features", body, {"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                got = json.loads(resp.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "userrep serve did not start"
                time.sleep(0.5)
        assert resp.status == 200, got
        z = got["results"][-1]["values"][0]
        assert got["metadata"]["feature_names"][-1] == "z_u"
        assert isinstance(z, list) and len(z) > 1 and all(v is not None for v in z)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
