"""The report's "retrain compatibility" section: for every downstream model with compatibility
records (`userrep batches compat`), its AUC on its own batch and on each newer batch used as
served and unaligned, a retrained reference, the drop's bounds, and the verdict.

Listed in downstream/report.py SECTIONS.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select

from downstream.compat import COMPAT_KEY
from downstream.report_data import ReportData
from downstream.report_html import Section, inline_html, tables
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
    "drop (own - aligned) [95 % bounds]",
    "test users",
    "lineage",
    "verdict",
)
SCORERS = ("pinned", "unaligned", "aligned", "retrained")


def _auc_cell(record: dict[str, Any], scorer: str) -> str:
    """AUC, with its interval when the record has one."""
    ci = record.get("metrics", {}).get(scorer, {}).get("auc_ci")
    if scorer not in record or record[scorer] is None:
        return "-"
    return f"{record[scorer]:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _drop_cell(r: dict[str, Any]) -> str:
    bounds = r.get("drop_bounds")
    within = f" (max {r.get('max_drop', float('nan')):.4f})"
    if not bounds:
        return f"{r['drop']:+.4f}{within}"
    return f"{r['drop']:+.4f} [{bounds[0]:+.4f}, {bounds[1]:+.4f}]{within}"


def _verdict(r: dict[str, Any]) -> str:
    # a record without a verdict predates the bounds: it never allows a repin
    return r.get("verdict") or ("unchecked (old record)" if r.get("compatible") else "no")


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
            lineage = r.get("lineage")
            rows.append(
                [
                    model_id,
                    task,
                    r.get("from_batch", "-"),
                    batch_id,
                    *(_auc_cell(r, s) for s in SCORERS),
                    _drop_cell(r),
                    r.get("evidence", {}).get("n_test_users", "-"),
                    "-" if lineage is None else ("yes" if lineage["found"] else "none"),
                    _verdict(r),
                ]
            )
    return rows


def compat_section(data: ReportData) -> Section | None:
    """Retrain compatibility of every pinned model that has been measured on a newer batch."""
    rows = compat_rows(data)
    if not rows:
        return None
    html_table, md_table = tables(HEAD, rows)
    note = (
        "A model may be repinned (`userrep downstream repin`) only where the verdict is "
        "compatible: the new batch descends from the pinned one through alignment records, and "
        "the drop's one-sided 95 % upper bound (paired bootstrap over test users) is within max "
        "drop, on enough test users. AUCs carry two-sided 95 % intervals. Each AUC is a "
        "registered model's on its own label time and test users, not the task comparison's."
    )
    body = f"<p>{inline_html(note)}</p>{html_table}"
    return Section("Retrain compatibility", body, f"{note}\n\n{md_table}")
