"""The `userrep` CLI: `app` plus the modules that register its commands, in pipeline order."""

# fmt: off
from userrep.cli import data, representation, validate, downstream, compat, nrt, serve, report, demo, evaluate  # noqa: F401,I001  (registration order = help order)
# fmt: on
from userrep.cli.app import app

__all__ = ["app"]
