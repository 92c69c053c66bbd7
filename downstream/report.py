"""The downstream / infrastructure-cost report: ONE self-contained HTML page (inline SVG) plus a
markdown summary under <workspace>/reports/. Built from sections: each is a function of the
collected ReportData; add one with `register_section` (or pass `sections=`).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downstream import labels as L
from downstream import svg
from downstream.baselines import COLD, WARM, MethodResult, metric_columns
from downstream.costs import ModelCost
from userrep.html import BASE_CSS
from userrep.settings import Settings

log = logging.getLogger(__name__)

PROJECTION_USERS = 2000  # points in the z_u scatter (a seeded sample beyond that)
_CSS = BASE_CSS + ".charts>svg{margin:8px 24px 8px 0;vertical-align:top}pre{font-size:12px}"


@dataclass
class ReportData:
    """Everything the sections draw from; sections may also read the workspace themselves."""

    settings: Settings
    batch_id: str
    as_of: pd.Timestamp  # label time T of the task comparisons
    comparison: list[MethodResult] = field(default_factory=list)
    comparison_md: str = ""
    costs: list[ModelCost] = field(default_factory=list)
    encoder_metrics: dict[str, Any] = field(default_factory=dict)  # the batch's metrics.json
    projection: tuple[np.ndarray, list[str], str] | None = None  # (xy, labels, what labels are)
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    title: str
    html: str  # body fragment (the renderer adds the <h2>)
    markdown: str  # body fragment (the renderer adds the "## ")


SectionFn = Callable[[ReportData], Section | None]  # None: nothing to show for this workspace
SECTIONS: list[SectionFn] = []  # the default page, in order; filled below


def register_section(fn: SectionFn, before: SectionFn | None = None) -> SectionFn:
    """Add a section to the default report (at the end, or before another one). Usable as a
    decorator; registering the same function twice is a no-op."""
    if fn not in SECTIONS:
        SECTIONS.insert(SECTIONS.index(before) if before in SECTIONS else len(SECTIONS), fn)
    return fn


def _md_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{trs}</table>"


def tables(head: Sequence[str], rows: Sequence[Sequence[object]]) -> tuple[str, str]:
    """(HTML table, markdown table) of the same rows."""
    return _html_table(head, rows), _md_table(head, rows)


def metrics_section(data: ReportData) -> Section | None:
    """Task metrics of z_u beside every baseline (and the cold-start / ablation rows)."""
    if not data.comparison:
        return None
    charts = []
    for section in (WARM, COLD):
        rows = [r for r in data.comparison if r.section == section]
        for key, head in metric_columns(rows)[:2] if rows else []:
            values = {r.method: float(r.metrics.get(key, np.nan)) for r in rows}
            charts.append(svg.bar_chart(values, f"{section}: {head}"))
    body = f'<div class="charts">{"".join(charts)}</div>'
    body += f"<pre>{html.escape(data.comparison_md)}</pre>"
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
            f"{c.metrics.get('auc', c.metrics.get('accuracy', np.nan)):.3f}",
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
    "AUC / acc",
)


def cost_section(data: ReportData) -> Section | None:
    """Per downstream model: what serving and training it costs, curated features vs z_u."""
    if not data.costs:
        return None
    charts = []
    for label, get in (
        ("features per request", lambda c: c.online.features),
        ("bytes fetched per request", lambda c: c.online.bytes),
        ("online fetch p50 ms", lambda c: c.online.p50_ms),
        ("training-set generation s", lambda c: c.training_set_s),
        ("training s", lambda c: c.train_s),
        ("model KiB", lambda c: c.model_bytes / 1024),
    ):
        values = {f"{c.feature_set} ({c.task[:6]})": float(get(c)) for c in data.costs}
        charts.append(svg.bar_chart(values, label, fmt="{:,.2f}", width=360))
    table_html, table_md = tables(COST_HEAD, _cost_rows(data.costs))
    calls = data.costs[0].online.calls
    note = (
        f"Online: {calls} real get_online_features calls per feature set, one user each, user "
        "features only (the item vectors are the same for every feature set). Times are wall "
        "clock on this machine."
    )
    body = f"<p>{html.escape(note)}</p>{table_html}<div class='charts'>{''.join(charts)}</div>"
    return Section("Infrastructure cost: curated features vs z_u", body, f"{note}\n\n{table_md}")


def projection_section(data: ReportData) -> Section | None:
    """z_u in two dimensions (PCA), coloured by planted cluster or top genre."""
    if data.projection is None:
        return None
    xy, labels, what = data.projection
    chart = svg.scatter(xy, labels, f"z_u of {data.batch_id}, PCA, by {what}")
    md = f"PCA of z_u ({len(xy)} users) coloured by {what}: see the HTML page."
    return Section("z_u projection", f'<div class="charts">{chart}</div>', md)


def loss_section(data: ReportData) -> Section | None:
    """The autoencoder's training curves, from the batch artifact's metrics.json."""
    m = data.encoder_metrics
    curves = {k: m[k] for k in ("train_loss", "val_loss", "val_clean_loss") if m.get(k)}
    if not curves:
        return None
    chart = svg.line_chart(curves, f"autoencoder loss, batch {data.batch_id}")
    facts = {k: m.get(k) for k in ("best_epoch", "epochs_run", "best_val_loss", "seconds")}
    rows = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in facts.items()]
    table_html, table_md = tables(("metric", "value"), rows)
    return Section(
        "Autoencoder training", f'<div class="charts">{chart}</div>{table_html}', table_md
    )


for _fn in (metrics_section, cost_section, projection_section, loss_section):
    register_section(_fn)


def render(data: ReportData, sections: Sequence[SectionFn] | None = None) -> tuple[str, str]:
    """(HTML page, markdown summary) of the sections that have something to show."""
    parts = [s for fn in (SECTIONS if sections is None else sections) if (s := fn(data))]
    title = f"userrep downstream report: batch {data.batch_id}, T = {data.as_of:%Y-%m-%d %H:%M}"
    notes_md = "".join(f"- {n}\n" for n in data.notes)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
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


def encoder_metrics(settings: Settings, batch_id: str) -> dict[str, Any]:
    """The batch artifact's metrics.json (loss curves), {} when there is none."""
    from representation import batches
    from representation.artifact import METRICS_FILE
    from userrep.db import session_scope

    with session_scope(settings.metadata_db_url) as session:
        path = Path(batches.get_batch(session, batch_id).artifact_path) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def projection(
    settings: Settings, batch_id: str, as_of: pd.Timestamp, truth: pd.DataFrame | None = None
) -> tuple[np.ndarray, list[str], str]:
    """PCA of the batch's z_u; colours: planted cluster (truth table) or top genre so far."""
    from downstream.similar import batch_vectors
    from userrep import columns as C

    users, z, _ = batch_vectors(settings, batch_id, as_of)
    keep = np.sort(np.random.default_rng(0).permutation(len(users))[:PROJECTION_USERS])
    users, z = users[keep], z[keep]
    truth_file = settings.paths.truth / "users.parquet"
    if truth is None and truth_file.exists():
        truth = pd.read_parquet(truth_file)
    if truth is not None:
        label = pd.Series(truth[C.CLUSTER].to_numpy(), index=truth[C.USER_ID].to_numpy())
        what = "planted cluster"
    else:
        genre = L.genre_preference(settings, as_of, source="history")
        label, what = genre.set_index(C.USER_ID)[L.LABEL], "top genre so far"
    names = [str(v) for v in pd.Series(users).map(label).fillna("unknown")]
    return svg.pca_2d(z), names, what


def report_time(settings: Settings, batch_id: str) -> pd.Timestamp:
    """The newest time the batch is published at that still has later events to label."""
    from representation.build import last_event_time
    from representation.pipeline import published_times

    times = published_times(settings, batch_id)
    if not times:
        raise FileNotFoundError(f"batch {batch_id} has no published z_u")
    last = last_event_time(settings.paths)
    return max((t for t in times if t < last), default=times[-1])


def collect(
    settings: Settings,
    batch_id: str | None = None,
    as_of: pd.Timestamp | None = None,
    family: str = "lightgbm",
    window_days: int | None = None,
    methods: Sequence[str] | None = None,
    cost_tasks: Sequence[str] = (L.FUTURE_LISTENING, L.GENRE_PREFERENCE),
    n_calls: int = 50,
    truth: pd.DataFrame | None = None,
) -> ReportData:
    """Run the comparison and the cost measurements for one batch; a step that cannot run on
    this workspace (e.g. no labels after T) leaves a note instead of failing the report.
    Without as_of the comparison runs at every label time of the batch (label_times), or at
    report_time when it has none; costs and the projection use report_time."""
    from downstream.baselines import METHODS, compare_baselines
    from downstream.costs import measure_costs
    from downstream.label_times import label_times, window_for
    from downstream.tasks import batch_as_of
    from downstream.training_set import trainable_batch

    batch = trainable_batch(settings, batch_id)
    t = as_of if as_of is not None else report_time(settings, batch)
    data = ReportData(settings, batch, t, encoder_metrics=encoder_metrics(settings, batch))
    trained = batch_as_of(settings, batch)
    when: Any = t
    if as_of is None:
        with contextlib.suppress(ValueError):  # none leak-free: T = report_time, noted below
            when, _ = label_times(settings, batch, window_days)
    if trained > t and when is t:
        data.notes.append(
            f"batch trained as of {trained:%Y-%m-%d %H:%M}, after T: its encoder saw input "
            "features and item targets up to then, label windows included; metrics are optimistic"
        )
    try:
        data.comparison_md, data.comparison = compare_baselines(
            settings, when, batch, family, window_days, tuple(methods or METHODS), cold_start=True
        )
    except ValueError as err:
        data.notes.append(f"task comparison skipped: {err}")
    cost_window = window_for([t], window_days)
    for task in cost_tasks:
        try:
            data.costs += measure_costs(
                settings, batch, t, task, family=family, window_days=cost_window, n_calls=n_calls
            )
        except ValueError as err:
            data.notes.append(f"cost of {task} skipped: {err}")
    data.projection = projection(settings, batch, t, truth)
    return data
