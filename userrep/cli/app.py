"""The `userrep` command line: one Typer app, verb-noun commands in pipeline order.

Each command is a thin wrapper over one library function; heavy imports happen inside.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from typer import rich_utils
from typer.core import TyperGroup, TyperOption

from userrep.settings import Settings

# results (tables, ids, paths, JSON) go to stdout so `userrep ... | grep` works; logs,
# progress and errors go to stderr
console = Console(stderr=True)
out = Console()
log = logging.getLogger("userrep")

# typer renders every flag as `<bool>`: a flag takes no value, so it shows no type
_display_type_rich = TyperOption.display_type_rich
TyperOption.display_type_rich = lambda self, ctx: (  # type: ignore[method-assign]
    None if self.is_flag else _display_type_rich(self, ctx)
)
# option help (examples, paths) fits on one line at 120 columns; TERMINAL_WIDTH still wins
rich_utils.MAX_WIDTH = rich_utils.MAX_WIDTH or max(120, shutil.get_terminal_size().columns)


class UserError(Exception):
    """A mistake the user can fix: reported as one `error:` line, exit code 2."""


EXIT_USER_ERROR = 2


class State:
    """The running command's settings and flags, set anew by the top-level callback at every
    invocation (and by --workspace after a subcommand)."""

    settings: Settings
    debug: bool = False


state = State()


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Library errors that mean a wrong id, a missing step or a bad input, not a bug."""
    types: list[type[BaseException]] = [UserError, FileNotFoundError]
    # only the modules a command already imported: an error handler loads no torch
    for module, name in (
        ("representation.batches", "BatchError"),
        ("representation.artifact", "ArtifactIntegrityError"),
        ("userrep.lock", "WorkspaceBusy"),
        ("userrep.ingest", "IngestError"),
    ):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            types.append(cls)
    return tuple(types)


def _set_workspace(_ctx: object, _param: object, value: Path | None) -> None:
    if value is not None:
        state.settings = Settings(workspace=value)


def _add_workspace_option(group: TyperGroup, template: TyperOption) -> None:
    """Give every command the top-level --workspace, so it also works after the subcommand."""
    for command in group.commands.values():
        if isinstance(command, TyperGroup):
            _add_workspace_option(command, template)
        elif not any(p.name == "workspace" for p in command.params):
            option = copy.copy(template)
            option.expose_value = False  # the command functions take no workspace argument
            option.callback = _set_workspace
            option.envvar = None  # USERREP_WORKSPACE is read once, by the top level
            option.show_envvar = False
            option.help = "Workspace directory (as `userrep --workspace DIR COMMAND`)."
            command.params.append(option)


class UserrepGroup(TyperGroup):
    """The top-level command: --workspace after any subcommand, and user mistakes as one
    `error:` line with exit code 2 (a traceback only with --debug)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        template = next((p for p in self.params if p.name == "workspace"), None)
        if isinstance(template, TyperOption):
            _add_workspace_option(self, template)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:
            if state.debug or not isinstance(err, _user_error_types()):
                raise
            report_error(str(err))
            raise typer.Exit(code=EXIT_USER_ERROR) from None


app = typer.Typer(
    cls=UserrepGroup,
    help="Generalized user representations (z_u) on Feast.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 120},
)


@app.callback()
def main(
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            envvar="USERREP_WORKSPACE",
            help="Workspace directory (data, artifacts, Feast, metadata DB); also accepted "
            "after the subcommand.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="USERREP_DEBUG", help="Show the traceback of a user error too."
        ),
    ] = False,
) -> None:
    """userrep: one shared, versioned user embedding for every downstream model."""
    # before torch loads (commands import it lazily): OpenMP threads that spin-wait at each
    # parallel region make torch ~10x slower when other jobs share the cores; passive waiting
    # keeps 2 threads ahead of 1 (bench/bench_train.py: 1-2k vs 24k users/s at load 6)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # third-party deprecation notices (ibis under Feast, ...) are not the user's to act on
    warnings.filterwarnings("ignore", category=DeprecationWarning)
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
    state.debug = debug
    state.settings = Settings(workspace=workspace) if workspace else Settings()


def parse_time(value: str | None) -> pd.Timestamp | None:
    """ISO date/time (UTC unless it carries an offset)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except ValueError as err:
        raise UserError(f"bad date {value!r} ({err}): use ISO 8601, e.g. 2024-01-31") from None
    if ts is pd.NaT:
        raise UserError(f"bad date {value!r}: use ISO 8601, e.g. 2024-01-31")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def report_error(message: str) -> None:
    """One plain line on stderr: never wrapped, so scripts and tests can match it."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Stop with `error: message` (exit 2: a user mistake; 1 where the data was refused)."""
    report_error(message)
    raise typer.Exit(code=code)


def require_workspace() -> Settings:
    """The workspace of a command that reads it: never created here (`userrep init` does)."""
    settings = state.settings
    db = settings.paths.metadata_db
    if not settings.workspace.is_dir() or (settings.metadata_url is None and not db.is_file()):
        raise UserError(f"no workspace at {settings.workspace}: run `userrep init`")
    return settings


def db_url() -> str:
    """The metadata DB of an initialised workspace (SQLite would create a missing file)."""
    return require_workspace().metadata_db_url


def emit_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def emit_table(columns: Sequence[str], rows: Iterable[Sequence[object]], title: str = "") -> None:
    """Rows on stdout: a table on a terminal (ids and paths fold, never cut), else
    tab-separated lines with a header, for grep / cut / awk."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if not out.is_terminal:
        print("\t".join(columns))
        for row in cells:
            print("\t".join(v.replace("\t", " ").replace("\n", " ") for v in row))
        return
    table = Table(title=title or None)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in cells:
        table.add_row(*row)
    out.print(table)


@app.command("init")
def init_cmd() -> None:
    """Create the workspace, migrate the metadata DB and register the Feast repo."""
    from userrep.feast_store import apply_repo

    settings = state.settings
    settings.paths.ensure()
    _migrate(settings)
    apply_repo(settings)
    console.print(f"workspace ready: {settings.workspace}")
    print(settings.workspace)


@app.command("apply")
def apply_cmd() -> None:
    """Register feature_repo/ with Feast again (after editing its declarations)."""
    from userrep.feast_store import apply_repo

    apply_repo(require_workspace())
    console.print(f"feature repo applied to {state.settings.workspace}")


def _migrate(settings: Settings) -> None:
    from userrep.db import upgrade

    upgrade(settings.metadata_db_url)
