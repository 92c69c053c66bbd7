"""Self-contained HTML report of one validation (written under <workspace>/reports/): the check
table plus inline-SVG histograms of the drifted columns, reference vs candidate. No matplotlib.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from userrep.html import BASE_CSS
from validation.outcome import ValidationOutcome

_REF, _CAND = "#4c78a8", "#f58518"
WIDTH, HEIGHT, BINS = 320, 160, 30


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, default=str) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def histogram_svg(column: str, reference: np.ndarray, candidate: np.ndarray) -> str:
    """Two overlaid histograms on shared bins (densities), as an inline <svg>."""
    a, b = reference[np.isfinite(reference)], candidate[np.isfinite(candidate)]
    if not len(a) or not len(b):
        return ""
    both = np.concatenate([a, b])
    lo, hi = np.quantile(both, [0.005, 0.995])
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, BINS + 1)
    ha = np.histogram(np.clip(a, lo, hi), edges)[0] / len(a)
    hb = np.histogram(np.clip(b, lo, hi), edges)[0] / len(b)
    top, bar = max(ha.max(), hb.max(), 1e-12), WIDTH / BINS
    rects = []
    for heights, colour in ((ha, _REF), (hb, _CAND)):
        for i, h in enumerate(heights):
            y = HEIGHT * (1 - h / top)
            rects.append(
                f'<rect x="{i * bar:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{HEIGHT - y:.1f}" fill="{colour}" fill-opacity="0.5"/>'
            )
    title = html.escape(column)
    axis = f'<text x="0" y="{HEIGHT + 14}" font-size="10">{lo:.3g}</text>' + (
        f'<text x="{WIDTH}" y="{HEIGHT + 14}" font-size="10" text-anchor="end">{hi:.3g}</text>'
    )
    return (
        f'<div class="hist"><div><b>{title}</b></div><svg width="{WIDTH}" '
        f'height="{HEIGHT + 18}" role="img" aria-label="{title}">{"".join(rects)}{axis}'
        "</svg></div>"
    )


def _rows(outcome: ValidationOutcome) -> str:
    rows = []
    for c in outcome.checks:
        css = "" if c.success else ("fail" if c.blocking else "warn")
        status = (
            '<span class="ok">pass</span>'
            if c.success
            else ('<span class="bad">FAIL</span>' if c.blocking else "warn")
        )
        observed = _fmt(c.observed) + (f" ({html.escape(c.error)})" if c.error else "")
        rows.append(
            f'<tr class="{css}"><td>{html.escape(c.suite)}</td><td>{html.escape(c.name)}'
            f"</td><td>{html.escape(observed)}</td><td>{html.escape(c.threshold)}</td>"
            f"<td>{status}</td></tr>"
        )
    return "\n".join(rows)


def render(outcome: ValidationOutcome) -> str:
    """The whole page as one string."""
    verdict = (
        '<span class="ok">PASSED</span>'
        if outcome.success
        else f'<span class="bad">FAILED ({len(outcome.failed)})</span>'
    )
    context = {k: v for k, v in outcome.statistics.items() if not isinstance(v, dict | list)}
    hists = "".join(histogram_svg(col, a, b) for col, (a, b) in outcome.samples.items())
    legend = (
        f'<p class="legend"><span style="background:{_REF}"></span>reference'
        f'<span style="background:{_CAND}"></span>candidate</p>'
    )
    drifted = f"<h2>Drifted columns</h2>{legend}{hists}" if hists else ""
    title = html.escape(f"{outcome.target_kind} {outcome.target_ref}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{BASE_CSS}</style></head><body><h1>{title}: {verdict}</h1>"
        f"<p>suite <b>{html.escape(outcome.suite)}</b>, {len(outcome.checks)} expectations, "
        f"{len(outcome.warnings)} warnings</p><pre>{html.escape(json.dumps(context, indent=1))}"
        f"</pre>{drifted}<h2>Expectations</h2><table><tr><th>suite</th><th>expectation</th>"
        f"<th>observed</th><th>threshold</th><th>result</th></tr>{_rows(outcome)}</table>"
        "</body></html>"
    )


def write_report(outcome: ValidationOutcome, reports_dir: Path) -> Path:
    """Write the page as reports/<kind>_<ref>_<UTC time>.html; sets outcome.report_path."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    ref = re.sub(r"[^A-Za-z0-9_.-]+", "-", outcome.target_ref)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    path = reports_dir / f"{outcome.target_kind}_{ref}_{stamp}.html"
    path.write_text(render(outcome), encoding="utf-8")
    outcome.report_path = path
    return path
