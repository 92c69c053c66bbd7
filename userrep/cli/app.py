"""The `userrep` command line: one Typer app, verb-noun commands in pipeline order.

Each command is a thin wrapper over one library function; heavy imports happen inside.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console

from userrep.settings import Settings

app = typer.Typer(
    help="Generalized user representations (z_u) on Feast.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
encoders_app = typer.Typer(help="Modality encoders (item vectors).", no_args_is_help=True)
features_app = typer.Typer(help="Point-in-time user input features in Feast.", no_args_is_help=True)
app.add_typer(encoders_app, name="encoders")
app.add_typer(features_app, name="features")
console = Console(stderr=True)
log = logging.getLogger("userrep")


class State:
    settings: Settings


state = State()


@app.callback()
def main(
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            envvar="USERREP_WORKSPACE",
            help="Workspace directory (data, artifacts, Feast, metadata DB).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """userrep: one shared, versioned user embedding for every downstream model."""
    # before torch loads (commands import it lazily): OpenMP threads that spin-wait at each
    # parallel region make torch ~10x slower when other jobs share the cores; passive waiting
    # keeps 2 threads ahead of 1 (bench/bench_train.py: 1-2k vs 24k users/s at load 6)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet = ("feast", "great_expectations", "sentence_transformers", "httpx", "alembic")
    # per-epoch / per-chunk logs duplicate the progress bars unless --verbose
    chatty = ("representation.train", "representation.artifact", "userrep.feast_store")
    for name in quiet + (() if verbose else chatty):
        logging.getLogger(name).setLevel(logging.WARNING)
    state.settings = Settings(workspace=workspace) if workspace else Settings()
    state.settings.export_env()


def parse_time(value: str | None) -> pd.Timestamp | None:
    """ISO date/time (UTC unless it carries an offset)."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@app.command("init")
def init_cmd() -> None:
    """Create the workspace, migrate the metadata DB and register the Feast repo."""
    from userrep.feast_store import apply_repo

    settings = state.settings
    settings.paths.ensure()
    _migrate(settings)
    apply_repo(settings)
    console.print(f"workspace ready: {settings.workspace}")


@app.command("apply")
def apply_cmd() -> None:
    """Register feature_repo/ with Feast again (after editing its declarations)."""
    from userrep.feast_store import apply_repo

    apply_repo(state.settings)
    console.print(f"feature repo applied to {state.settings.workspace}")


def _migrate(settings: Settings) -> None:
    from userrep.db import upgrade

    upgrade(settings.metadata_db_url)
