"""CLI, batch compatibility: `userrep batches compat B --model M`, `userrep downstream repin M`.

Thin wrappers over downstream/compat.py: check a pinned model against a newer batch (alignment
lineage + a paired bootstrap over test users), then move its pin without retraining once the
record says compatible (or with --force REASON, which is recorded). userrep/cli/__init__.py
registers them in the `batches` and `downstream` groups.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from userrep.cli.app import console, fail, parse_time, state


def batches_compat_cmd(
    batch_id: Annotated[str, typer.Argument(help="The newer batch B.")],
    model: Annotated[str, typer.Option(help="Downstream model id pinned to an older batch.")],
    as_of: Annotated[str | None, typer.Option(help="Label time T (default: B's as-of).")] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            help="Largest AUC drop (model on its own batch - on B) that is compatible; "
            "compared with the drop's one-sided 95 % upper bound."
        ),
    ] = 0.005,
    max_width: Annotated[
        float,
        typer.Option(
            help="Widest drop interval (lower to upper one-sided 95 % bound) that decides "
            "anything; wider is inconclusive."
        ),
    ] = 0.05,
    min_test_users: Annotated[
        int, typer.Option(help="Fewest held-out users scored on both batches.")
    ] = 50,
    min_labels: Annotated[
        int,
        typer.Option(
            help="Fewest positive and negative test labels each (multiclass: rows "
            "of the rarest class)."
        ),
    ] = 50,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the test users.")] = 1000,
) -> None:
    """Check MODEL against B: B must descend from MODEL's batch through alignment records, and
    the drop's upper bound (paired bootstrap over test users) must be within --max-drop with
    enough users to tell. Records compatible / inconclusive / incompatible with the numbers:
    AUC and Recall@10 with intervals on both batches, B unaligned, and a refit on B."""
    from downstream.compat import CompatError, GateRule, evaluate_compat
    from representation.batches import BatchError

    rule = GateRule(
        max_drop=max_drop,
        max_width=max_width,
        min_test_users=min_test_users,
        min_labels=min_labels,
        n_resamples=resamples,
        seed=state.settings.seed,
    )
    try:
        result = evaluate_compat(state.settings, model, batch_id, parse_time(as_of), rule=rule)
    except (CompatError, BatchError, KeyError, ValueError) as err:
        fail(str(err))
    print(json.dumps(result.record, indent=2, default=str))  # the record: the result, on stdout
    e = result.evidence
    if e is None:
        console.print(f"model {model} is {result.verdict.upper()} with batch {batch_id}: ", end="")
        console.print("; ".join(result.reasons), markup=False)
        return
    console.print(
        f"model {model} is {result.verdict.upper()} with batch {batch_id}: drop {e.drop:+.4f} "
        f"(one-sided 95 % bounds {e.drop_lower:+.4f} .. {e.drop_upper:+.4f}, max "
        f"{max_drop:.4f}) on {e.n_test_users} test users; {'; '.join(result.reasons)}"
    )


def repin_cmd(
    model_id: Annotated[str, typer.Argument(help="Downstream model id.")],
    batch: Annotated[str, typer.Option(help="Batch to pin to (needs a compatible record).")],
    force: Annotated[
        str | None,
        typer.Option(
            "--force",
            metavar="REASON",
            help="Repin without a compatible record; REASON is recorded with the move.",
        ),
    ] = None,
) -> None:
    """Move a model's pin to another batch without retraining."""
    from downstream.compat import CompatError, repin
    from representation.batches import BatchError

    try:
        previous = repin(state.settings, model_id, batch, force_reason=force)
    except (CompatError, BatchError, KeyError) as err:
        fail(str(err))
    forced = f" (forced: {force})" if force else ""
    console.print(f"model {model_id} repinned from {previous} to {batch}{forced}")
