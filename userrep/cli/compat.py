"""CLI, batch compatibility: `userrep batches compat B --model M`, `userrep downstream repin M`.

Thin wrappers over downstream/compat.py: score a pinned model on a newer aligned batch, then
move its pin without retraining once the record passes.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from userrep.cli.app import console, fail, parse_time, state
from userrep.cli.downstream import downstream_app
from userrep.cli.representation import batches_app


@batches_app.command("compat")
def batches_compat_cmd(
    batch_id: Annotated[str, typer.Argument(help="The newer batch B.")],
    model: Annotated[str, typer.Option(help="Downstream model id pinned to an older batch.")],
    as_of: Annotated[str | None, typer.Option(help="Label time T (default: B's as-of).")] = None,
    max_drop: Annotated[float, typer.Option(help="Largest AUC drop that is compatible.")] = 0.005,
) -> None:
    """Score MODEL on B's z_u (aligned and unaligned) beside a refit on B; record the drop."""
    from downstream.compat import CompatError, evaluate_compat
    from representation.batches import BatchError

    try:
        record = evaluate_compat(state.settings, model, batch_id, parse_time(as_of), max_drop)
    except (CompatError, BatchError, KeyError, ValueError) as err:
        fail(str(err))
    console.print(json.dumps(record, indent=2, default=str))
    verdict = "compatible" if record["compatible"] else "NOT compatible"
    console.print(f"model {model} is {verdict} with batch {batch_id} (drop {record['drop']:+.4f})")


@downstream_app.command("repin")
def repin_cmd(
    model_id: Annotated[str, typer.Argument(help="Downstream model id.")],
    batch: Annotated[str, typer.Option(help="Batch to pin to (needs a passing compat record).")],
) -> None:
    """Move a model's pin to another batch without retraining."""
    from downstream.compat import CompatError, repin
    from representation.batches import BatchError

    try:
        previous = repin(state.settings, model_id, batch)
    except (CompatError, BatchError, KeyError) as err:
        fail(str(err))
    console.print(f"model {model_id} repinned from {previous} to {batch}")
