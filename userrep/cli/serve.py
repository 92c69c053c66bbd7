"""CLI: `userrep serve`, Feast's HTTP feature server on the workspace, started with settings
that keep its latency flat.

`feast serve` runs gunicorn with uvicorn workers. Its defaults restart each worker after about
1,000 requests (`--max-requests 1000`, jitter 50): while the new worker imports Feast, requests
wait 0.6-0.9 s and some fail (bench/bench_http.py). userrep serve turns recycling off
(`--max-requests 0`) and the per-request access log off, and starts one worker per core
instead of one; otherwise it is plain `feast serve`: the command replaces itself with it, so
signals and exit codes are Feast's. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from userrep.cli.app import console, state
from userrep.settings import Settings

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py

DEFAULT_PORT = 6566  # feast serve's own default


def default_workers() -> int:
    """One worker per core, at most 4: a worker is one Python process (one core at most), a
    forked copy of a process of about 450 MiB (importing Feast loads torch)."""
    return max(1, min(os.cpu_count() or 1, 4))


def feast_executable() -> str:
    """The `feast` script beside this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("feast")
    return str(beside) if beside.exists() else "feast"


def feast_serve_argv(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int | None = None,
    keep_alive: int = 30,
    access_log: bool = False,
    registry_ttl: int = 60,
) -> list[str]:
    """The `feast serve` command line for this workspace."""
    argv = [
        feast_executable(),
        "-c",
        str(settings.feature_repo),
        "-f",
        str(settings.workspace / "feature_store.yaml"),
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers or default_workers()),
        # 0 = never recycle a worker: a restart stalls requests for most of a second
        "--max-requests",
        "0",
        "--max-requests-jitter",
        "0",
        "--keep-alive-timeout",
        str(keep_alive),
        "--registry_ttl_sec",
        str(registry_ttl),
    ]
    if not access_log:
        argv.append("--no-access-log")  # one log line per request costs CPU on every read
    return argv


def example_request(settings: Settings, host: str, port: int) -> str:
    """A curl reading one user's z_u of the active batch (placeholder when none is active)."""
    import json

    batch = "<batch>"
    try:
        from representation.batches import active_batch
        from userrep.db import session_scope

        with session_scope(settings.metadata_db_url) as session:
            found = active_batch(session)
            batch = found.batch_id if found is not None else batch
    except Exception:  # an uninitialised metadata DB only costs the example its batch id
        pass
    body = json.dumps(
        {"features": ["user_embedding:z_u"], "entities": {"user_id": [7], "batch_id": [batch]}}
    )
    return (
        f"curl -s -X POST http://{host}:{port}/get-online-features "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


def prepare(settings: Settings) -> None:
    """Register the repo when it changed (what the in-process store does) and write the yaml
    feast serve reads; the check itself needs no Feast import."""
    from userrep import feast_store

    marker = settings.paths.feast / "applied.sha256"
    if not marker.exists() or marker.read_text() != feast_store.repo_fingerprint(settings):
        feast_store.apply_repo(settings)
    feast_store.write_feature_store_yaml(settings)


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@commands.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = DEFAULT_PORT,
    workers: Annotated[
        int | None,
        typer.Option(help="gunicorn worker processes (default: one per core, at most 4)."),
    ] = None,
    keep_alive: Annotated[
        int, typer.Option(help="Keep-alive timeout of idle connections (s).")
    ] = 30,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (off: it costs CPU on each read).")
    ] = False,
    registry_ttl: Annotated[
        int, typer.Option(help="Re-read the Feast registry this often (s).")
    ] = 60,
    dry_run: Annotated[
        bool, typer.Option(help="Print the feast serve command line and exit.")
    ] = False,
) -> None:
    """Serve z_u over HTTP: `feast serve` on this workspace, worker recycling off.

    POST /get-online-features with the batch id in every entity row (README, Reading z_u)."""
    settings = state.settings
    argv = feast_serve_argv(settings, host, port, workers, keep_alive, access_log, registry_ttl)
    if dry_run:
        print(shlex.join(argv))
        return
    prepare(settings)
    console.print(
        f"serving z_u at http://{host}:{port} (feast serve, {_option(argv, '--workers')} workers)"
    )
    console.print(f"example: {example_request(settings, host, port)}")
    console.print(f"command: {shlex.join(argv)}")
    sys.stderr.flush()
    sys.stdout.flush()
    os.execvpe(argv[0], argv, os.environ | settings.feast_env())
