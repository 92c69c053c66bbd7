"""The downstream / infrastructure-cost report: ONE self-contained HTML page (matplotlib figures
as inline PNG, HTML tables) plus a markdown summary under <workspace>/reports/. The page is the
sections in SECTIONS, each a function of the collected ReportData (or pass `sections=`).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from downstream import charts
from downstream import labels as L
from downstream.compat_report import compat_section
from downstream.costs import ModelCost
from downstream.report_data import Projection, ReportData, collect, report_time
from downstream.report_html import Section, inline_html, markdown_html, tables
from downstream.results import COLD, WARM, MethodResult, metric_columns
from userrep.html import BASE_CSS

# collect / ReportData (report_data.py) and Section / tables (report_html.py): callers use
# them from here beside render
__all__ = [
    "SECTIONS",
    "Projection",
    "ReportData",
    "Section",
    "collect",
    "render",
    "report_time",
    "tables",
    "write_report",
]


_CSS = BASE_CSS + (
    "figure.chart{margin:12px 0}figcaption{font-size:12px;color:#555}"
    "tr.zu td{font-weight:bold;background:#fdecec}table{margin:8px 0}"
)


SectionFn = Callable[[ReportData], Section | None]  # None: nothing to show for this workspace


def _z_u_metric(results: Sequence[MethodResult], key: str) -> float | None:
    r = next((r for r in results if r.method == charts.Z_U and r.section == WARM), None)
    return None if r is None or key not in r.metrics else float(r.metrics[key])


def _any_finite(results: Sequence[MethodResult], key: str) -> bool:
    return any(math.isfinite(float(r.metrics.get(key, math.nan))) for r in results)


def metrics_section(data: ReportData) -> Section | None:
    """Task metrics of z_u beside every baseline (and the cold-start / ablation rows)."""
    if not data.comparison:
        return None
    figures = []
    for section, who in ((WARM, "all held-out users"), (COLD, "cold-start users")):
        rows = [r for r in data.comparison if r.section == section]
        if rows:
            title = f"Future listening, {who}: z_u and the baselines"
            by_method = {r.method: r.metrics for r in rows}
            shown = [(k, h) for k, h in metric_columns(rows) if _any_finite(rows, k)]
            figures.append(charts.figure_html(charts.metric_bars(by_method, shown, title)))
    note = (
        "The same numbers as the tables below. Cold-start rows are other users (in their first "
        "day) than the all-users rows, so their AUCs differ by design."
    )
    body = f"<p>{note}</p>{''.join(figures)}{markdown_html(data.comparison_md)}"
    return Section("Task metrics: z_u and the baselines", body, data.comparison_md)


def _cost_rows(costs: Sequence[ModelCost]) -> list[list[object]]:
    return [
        [
            c.task,
            c.feature_set,
            c.online.features,
            c.online.values,
            f"{c.online.bytes:,.0f}",
            f"{c.online.p50_ms:.2f} / {c.online.p95_ms:.2f}",
            f"{c.online.found:.0%}",
            f"{c.training_set_s:.2f}",
            f"{c.train_s:.2f}",
            f"{c.model_bytes / 1024:,.1f}",
            f"{c.metrics.get('auc', c.metrics.get('accuracy', float('nan'))):.3f}",
        ]
        for c in costs
    ]


COST_HEAD = (
    "task",
    "user features",
    "features / request",
    "values / request",
    "bytes / request",
    "online p50 / p95 ms",
    "found online",
    "training set s",
    "train s",
    "model KiB",
    "AUC / acc at T",
)
# chart panels: (title, value, format): the formats of the table's columns
COST_PANELS: tuple[tuple[str, Callable[[ModelCost], float], str], ...] = (
    ("features per request", lambda c: c.online.features, "{:,.0f}"),
    ("bytes fetched per request", lambda c: c.online.bytes, "{:,.0f}"),
    ("online fetch p50 (ms)", lambda c: c.online.p50_ms, "{:.2f}"),
    ("training-set generation (s)", lambda c: c.training_set_s, "{:.2f}"),
    ("training (s)", lambda c: c.train_s, "{:.2f}"),
    ("model size (KiB)", lambda c: c.model_bytes / 1024, "{:,.1f}"),
)


def _auc_note(data: ReportData) -> str:
    """Why z_u's future-listening AUC here is not the one under Task metrics ("" when equal)."""
    cost = next(
        (c for c in data.costs if c.feature_set == charts.Z_U and c.task == L.FUTURE_LISTENING),
        None,
    )
    pooled = _z_u_metric(data.comparison, "auc")
    if cost is None or pooled is None or "auc" not in cost.metrics:
        return ""
    here = float(cost.metrics["auc"])
    if f"{here:.3f}" == f"{pooled:.3f}":
        return ""
    times = data.label_times or [data.as_of]
    if len(times) > 1:
        where = (
            f"the labels of {len(times)} label times ({times[0]:%Y-%m-%d} .. "
            f"{times[-1]:%Y-%m-%d}) pooled"
        )
    else:
        where = f"the labels at {times[0]:%Y-%m-%d %H:%M}"
    return (
        f"z_u's future-listening AUC is {here:.3f} here and {pooled:.3f} under Task metrics: "
        f"the cost model is fitted and tested on the labels at T = {data.as_of:%Y-%m-%d %H:%M} "
        f"only ({cost.rows} rows, its own train / test split of those users), the task "
        f"comparison on {where}, with one user split shared by every method. Different label "
        "sets and test users, so different AUCs; neither is a typo."
    )


def cost_section(data: ReportData) -> Section | None:
    """Per downstream model: what serving and training it costs, curated features vs z_u."""
    if not data.costs:
        return None
    panels = {
        head: (
            {t: {c.feature_set: float(get(c)) for c in data.costs if c.task == t} for t in tasks},
            fmt,
        )
        for tasks in [list(dict.fromkeys(c.task for c in data.costs))]
        for head, get, fmt in COST_PANELS
    }
    figure = charts.figure_html(
        charts.grouped_bars(panels, "Infrastructure cost per downstream model: z_u vs curated")
    )
    table_html, table_md = tables(COST_HEAD, _cost_rows(data.costs))
    calls = data.costs[0].online.calls
    notes = [
        f"Online: {calls} real get_online_features calls per feature set, one user each, user "
        "features only (the item vectors are the same for every feature set). Times are wall "
        "clock on the machine that wrote the report.",
        _auc_note(data),
    ]
    notes = [n for n in notes if n]
    body = "".join(f"<p>{inline_html(n)}</p>" for n in notes) + table_html + figure
    md = "\n\n".join([*notes, table_md])
    return Section("Infrastructure cost: curated features vs z_u", body, md)


def projection_section(data: ReportData) -> Section | None:
    """z_u in two dimensions (PCA), coloured by planted cluster or top genre."""
    if data.projection is None:
        return None
    p = data.projection
    title = f"z_u of batch {data.batch_id}: its two principal components"
    chart = charts.figure_html(charts.scatter(p.xy, p.labels, p.explained, title, p.what))
    md = (
        f"PCA of z_u ({len(p.xy)} users) coloured by {p.what}; PC 1 explains "
        f"{p.explained[0]:.1%} and PC 2 {p.explained[1]:.1%} of the variance: see the HTML page."
    )
    return Section("z_u projection", chart, md)


LOSS_PANELS = {  # the batch's metrics.json curves, by what they measure (their scales differ)
    "training objective (corrupted inputs)": ("train_loss", "val_loss"),
    "feature reconstruction, uncorrupted validation inputs": ("val_clean_loss",),
}


def loss_section(data: ReportData) -> Section | None:
    """The autoencoder's training curves, from the batch artifact's metrics.json."""
    m = data.encoder_metrics
    panels = {
        head: curves
        for head, keys in LOSS_PANELS.items()
        if (curves := {k: m[k] for k in keys if m.get(k)})
    }
    if not panels:
        return None
    title = f"Loss of the z_u encoder (autoencoder) per epoch, batch {data.batch_id}"
    chart = charts.figure_html(charts.loss_curves(panels, m.get("best_epoch"), title))
    facts = {k: m.get(k) for k in ("best_epoch", "epochs_run", "best_val_loss", "seconds")}
    rows = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in facts.items()]
    table_html, table_md = tables(("metric", "value"), rows)
    note = (
        "best_val_loss is val_loss at best_epoch, the weights the batch keeps. val_clean_loss "
        "is the feature reconstruction alone on uncorrupted inputs (no item term): another "
        "scale, hence its own panel."
    )
    return Section(
        "Autoencoder training", f"<p>{note}</p>{chart}{table_html}", f"{note}\n\n{table_md}"
    )


# The default page, in order.
SECTIONS: tuple[SectionFn, ...] = (
    metrics_section,
    cost_section,
    projection_section,
    loss_section,
    compat_section,
)


def render(data: ReportData, sections: Sequence[SectionFn] | None = None) -> tuple[str, str]:
    """(HTML page, markdown summary) of the sections that have something to show."""
    parts = [s for fn in (SECTIONS if sections is None else sections) if (s := fn(data))]
    title = f"userrep downstream report: batch {data.batch_id}, T = {data.as_of:%Y-%m-%d %H:%M}"
    notes_md = "".join(f"- {n}\n" for n in data.notes)
    notes_html = "".join(f"<li>{inline_html(n)}</li>" for n in data.notes)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><ul>{notes_html}</ul>"
        + "".join(f"<h2>{html.escape(s.title)}</h2>{s.html}" for s in parts)
        + "</body></html>"
    )
    md = f"# {title}\n\n{notes_md}\n" + "".join(f"## {s.title}\n\n{s.markdown}\n\n" for s in parts)
    return page, md


def write_report(
    data: ReportData, reports_dir: Path, sections: Sequence[SectionFn] | None = None
) -> tuple[Path, Path]:
    """Write downstream_<batch>_<UTC time>.html and .md; returns both paths."""
    page, md = render(data, sections)
    reports_dir.mkdir(parents=True, exist_ok=True)
    ref = re.sub(r"[^A-Za-z0-9_.-]+", "-", data.batch_id)
    stem = f"downstream_{ref}_{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%f}"
    html_path, md_path = reports_dir / f"{stem}.html", reports_dir / f"{stem}.md"
    html_path.write_text(page, encoding="utf-8")
    md_path.write_text(md, encoding="utf-8")
    return html_path, md_path
