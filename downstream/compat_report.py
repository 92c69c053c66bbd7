"""The report's "retrain compatibility" section: for every downstream model with compatibility
records (`userrep batches compat`), its metric on its own batch and on each newer batch used
as-is, after alignment, and with the model retrained on that batch.

Importing this module registers the section (downstream/report.py register_section).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select

from downstream.compat import COMPAT_KEY
from downstream.report import ReportData, Section, register_section, tables
from userrep.db import DownstreamModel, session_scope

HEAD = (
    "model",
    "task",
    "pinned batch",
    "new batch",
    "own batch",
    "unaligned",
    "aligned",
    "retrained",
    "drop (own - aligned)",
    "compatible",
)


def compat_rows(data: ReportData) -> list[list[Any]]:
    """One row per (model, evaluated batch), from the models' compat records."""
    with session_scope(data.settings.metadata_db_url) as session:
        if not inspect(session.get_bind()).has_table(DownstreamModel.__tablename__):
            return []  # a workspace never initialised (`userrep init`) has no models
        models = session.scalars(select(DownstreamModel).order_by(DownstreamModel.model_id))
        records = [(m.model_id, m.task, (m.metrics or {}).get(COMPAT_KEY, {})) for m in models]
    rows = []
    for model_id, task, by_batch in records:
        for batch_id, r in sorted(by_batch.items()):
            rows.append(
                [
                    model_id,
                    task,
                    r.get("from_batch", "-"),
                    batch_id,
                    *(f"{r[k]:.4f}" if k in r else "-" for k in ("pinned", "unaligned")),
                    *(f"{r[k]:.4f}" if k in r else "-" for k in ("aligned", "retrained")),
                    f"{r['drop']:+.4f} (max {r.get('max_drop', float('nan')):.4f})",
                    "yes" if r.get("compatible") else "no",
                ]
            )
    return rows


@register_section
def compat_section(data: ReportData) -> Section | None:
    """Retrain compatibility of every pinned model that has been measured on a newer batch."""
    rows = compat_rows(data)
    if not rows:
        return None
    html_table, md_table = tables(HEAD, rows)
    note = (
        "A model may be repinned (`userrep downstream repin`) only where compatible is yes: "
        "the aligned batch loses at most max drop of the metric on a fresh labelled window."
    )
    return Section("Retrain compatibility", f"<p>{note}</p>{html_table}", f"{note}\n\n{md_table}")
