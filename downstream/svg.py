"""Hand-written inline SVG charts for the downstream report (no matplotlib in the venv): grouped
bars, a scatter coloured by label, and line curves. Each returns one <svg> string.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np

PALETTE = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2",
    "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
)  # fmt: skip
HIGHLIGHT = "z_u"  # the bar drawn in the first colour, outlined


def _text(x: float, y: float, s: str, size: int = 10, anchor: str = "start", **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{html.escape(s)}</text>"
    )


def _svg(width: int, height: int, body: Sequence[str], title: str) -> str:
    label = html.escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{label}"><title>{label}</title>{"".join(body)}</svg>'
    )


def legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out.append(
            f'<rect x="{x:.1f}" y="{y + 14 * i:.1f}" width="10" height="10" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
        )
        out.append(_text(x + 14, y + 9 + 14 * i, name))
    return out


def bar_chart(
    values: Mapping[str, float],
    title: str,
    fmt: str = "{:.3f}",
    width: int = 420,
    bar_h: int = 18,
    lo: float | None = None,
) -> str:
    """Horizontal bars, one per name (NaN bars are left empty); `lo` is the axis start."""
    names = list(values)
    finite = [v for v in values.values() if math.isfinite(v)]
    top = max(finite, default=1.0) or 1.0
    lo = 0.0 if lo is None else lo
    label_w, pad = 110, 6
    span = max(top - lo, 1e-12)
    body = [_text(0, 12, title, 12, font_weight="bold")]
    for i, name in enumerate(names):
        v = values[name]
        y = 20 + i * (bar_h + pad)
        body.append(_text(label_w - 4, y + bar_h - 5, name, anchor="end"))
        if not math.isfinite(v):
            body.append(_text(label_w + 2, y + bar_h - 5, "n/a"))
            continue
        w = (width - label_w - 60) * max(v - lo, 0.0) / span
        stroke = ' stroke="#222" stroke-width="1.5"' if name == HIGHLIGHT else ""
        colour = PALETTE[0] if name == HIGHLIGHT else PALETTE[9]
        body.append(
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"{stroke}/>'
        )
        body.append(_text(label_w + w + 4, y + bar_h - 5, fmt.format(v)))
    height = 20 + len(names) * (bar_h + pad) + 8
    return _svg(width, height, body, title)


def scatter(xy: np.ndarray, labels: Sequence[object], title: str, size: int = 360) -> str:
    """2-D points coloured by label (at most len(PALETTE) labels get their own colour)."""
    xy = np.asarray(xy, np.float64)
    names = sorted({str(v) for v in labels})
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    scale = (size - 20) / np.maximum(hi - lo, 1e-12)
    pts = (xy - lo) * scale + 10  # (n, 2) in pixels
    body = [_text(0, 12, title, 12, font_weight="bold")]
    for (px, py), lab in zip(pts, labels, strict=True):
        body.append(
            f'<circle cx="{px:.1f}" cy="{size - py + 10:.1f}" r="2.2" '
            f'fill="{colour[str(lab)]}" fill-opacity="0.7"/>'
        )
    body += legend(names, size + 10, 24)
    return _svg(size + 130, size + 20, body, title)


def line_chart(
    curves: Mapping[str, Sequence[float]], title: str, width: int = 420, height: int = 200
) -> str:
    """Curves over 1..n (epochs), shared y axis; the minimum and maximum are labelled."""
    finite = [v for c in curves.values() for v in c if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    n = max(len(c) for c in curves.values())
    left, top, plot_w, plot_h = 44, 20, width - 170, height - 40
    body = [_text(0, 12, title, 12, font_weight="bold")]
    body.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>'
    )
    for i, c in enumerate(curves.values()):
        xs = [left + plot_w * (j / max(n - 1, 1)) for j in range(len(c))]
        ys = [top + plot_h * (1 - (v - lo) / max(hi - lo, 1e-12)) for v in c]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{PALETTE[i % len(PALETTE)]}" '
            'stroke-width="1.8"/>'
        )
    body.append(_text(left - 4, top + 8, f"{hi:.3g}", anchor="end"))
    body.append(_text(left - 4, top + plot_h, f"{lo:.3g}", anchor="end"))
    body.append(_text(left + plot_w / 2, top + plot_h + 14, f"epoch (1..{n})", anchor="middle"))
    body += legend(list(curves), left + plot_w + 10, top)
    return _svg(width, height, body, title)


def pca_2d(z: np.ndarray) -> np.ndarray:
    """(n, 2) projection of z on its two leading principal components (SVD of centred z)."""
    centred = np.asarray(z, np.float64) - np.asarray(z, np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (d, d)
    return centred @ vt[:2].T  # (n, 2)
