"""The `userrep` CLI: the top-level `app` (userrep/cli/app.py) and each stage's commands."""

from userrep.cli import (
    compat,
    data,
    demo,
    downstream,
    evaluate,
    nrt,
    report,
    representation,
    serve,
    validate,
)
from userrep.cli.app import app

# pipeline order is help order
for _stage in (data, representation, validate, downstream, nrt, serve, report, demo, evaluate):
    app.add_typer(_stage.commands)
representation.batches_app.command("compat")(compat.batches_compat_cmd)
downstream.downstream_app.command("repin")(compat.repin_cmd)

__all__ = ["app"]
