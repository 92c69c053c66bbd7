"""The downstream report's figures, drawn with matplotlib (Agg, no display): each function
returns a Figure with a title (suptitle) and titled, labelled panels; figure_html embeds it in
the page as a base64 PNG so the HTML stays one file. z_u's bars are drawn in HIGHLIGHT.
"""

from __future__ import annotations

import base64
import html
import io
import math
import struct
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Z_U = "z_u"
HIGHLIGHT = "#d62728"  # z_u's bars, its tick label in bold
OTHER = "#9e9e9e"  # every other method / feature set
DPI = 192  # twice the CSS pixel density: the <img> is shown at half its pixel size
CSS_DPI = 96


def figure_html(fig: Figure) -> str:
    """The figure as one <figure>: an inline PNG, its title as alt text and caption."""
    title = fig.get_suptitle()
    if not title:
        raise ValueError("a report figure needs a title (fig.suptitle)")
    buf = io.BytesIO()
    FigureCanvasAgg(fig)  # the Agg raster canvas: no display, no pyplot state
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    png = buf.getvalue()
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk: pixel size
    scale = DPI / CSS_DPI
    label = html.escape(title, quote=True)
    return (
        f'<figure class="chart"><img src="data:image/png;base64,{base64.b64encode(png).decode()}"'
        f' width="{round(width / scale)}" height="{round(height / scale)}" alt="{label}">'
        f"<figcaption>{label}</figcaption></figure>"
    )


def _bold_z_u(ax: Axes) -> None:
    for tick in ax.get_yticklabels():
        if tick.get_text() == Z_U:
            tick.set_fontweight("bold")
            tick.set_color(HIGHLIGHT)


def _hbars(
    ax: Axes, values: Mapping[str, float], fmt: Callable[[float], str], names: bool = True
) -> None:
    """One horizontal bar per name, top to bottom in order; NaN: an empty row marked n/a.
    names=False: a panel sharing the y axis of one that shows the names (set there once)."""
    labels = list(values)
    vals = np.array([values[k] for k in labels], np.float64)  # (bars,)
    y = np.arange(len(labels))
    bars = ax.barh(
        y,
        np.nan_to_num(vals),
        color=[HIGHLIGHT if k == Z_U else OTHER for k in labels],
        edgecolor=["#222" if k == Z_U else "none" for k in labels],
    )
    ax.bar_label(bars, [fmt(v) if math.isfinite(v) else "n/a" for v in vals], padding=3)
    if names:
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
    else:
        ax.tick_params(labelleft=False)
    top = np.nanmax(vals) if np.isfinite(vals).any() else 1.0
    ax.set_xlim(0, max(top, 1e-12) * 1.25)  # room for the value labels
    _bold_z_u(ax)


def metric_bars(
    rows: Mapping[str, Mapping[str, float]], metrics: Sequence[tuple[str, str]], title: str
) -> Figure:
    """One panel per metric (key, header), one bar per method (rows: method -> metrics)."""
    fig = Figure(figsize=(3.6 * len(metrics), 0.9 + 0.32 * len(rows)), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for i, (ax, (key, head)) in enumerate(zip(axes, metrics, strict=True)):
        values = {m: float(r.get(key, np.nan)) for m, r in rows.items()}
        _hbars(ax, values, "{:.3f}".format, names=i == 0)
        ax.set_title(head)
        ax.set_xlabel(f"{head} (higher is better)")
    axes[0].set_ylabel("method")
    fig.suptitle(title, fontweight="bold")
    return fig


def grouped_bars(
    panels: Mapping[str, tuple[Mapping[str, Mapping[str, float]], str]], title: str
) -> Figure:
    """One panel per quantity: panels[title] = ({group: {series: value}}, value format).
    Groups (tasks) on the y axis, one bar per series (feature set), z_u in HIGHLIGHT."""
    n = len(panels)
    cols = min(n, 3)
    first = next(iter(panels.values()))[0]
    groups = list(first)
    series = list(dict.fromkeys(s for g in first.values() for s in g))
    fig = Figure(
        figsize=(4.2 * cols, 0.8 + (1.1 + 0.45 * len(groups)) * math.ceil(n / cols)),
        layout="constrained",
    )
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()
    height = 0.8 / len(series)
    colours = {s: HIGHLIGHT if s == Z_U else OTHER for s in series}
    hatches = {s: "" if s == Z_U else "//" * (i % 2) for i, s in enumerate(series)}
    for ax, (head, (values, fmt)) in zip(axes, panels.items(), strict=False):
        y = np.arange(len(groups))
        top = 0.0
        for j, s in enumerate(series):
            v = np.array([values[g].get(s, np.nan) for g in groups], np.float64)  # (groups,)
            bars = ax.barh(
                y + (j - (len(series) - 1) / 2) * height,
                np.nan_to_num(v),
                height,
                label=s,
                color=colours[s],
                hatch=hatches[s],
            )
            ax.bar_label(
                bars,
                [fmt.format(x) if math.isfinite(x) else "n/a" for x in v],
                padding=3,
                fontsize=8,
            )
            top = max(top, float(np.nanmax(v)) if np.isfinite(v).any() else 0.0)
        ax.set_yticks(y, groups)
        ax.invert_yaxis()
        ax.set_xlim(0, max(top, 1e-12) * 1.3)
        ax.set_title(head)
        ax.set_xlabel(head)
        ax.set_ylabel("task")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=len(series),
        title="user features",
    )
    fig.suptitle(title, fontweight="bold")
    return fig


def scatter(
    xy: np.ndarray,
    labels: Sequence[str],
    explained: Sequence[float],
    title: str,
    legend_title: str,
    max_colours: int = 19,
) -> Figure:
    """2-D points coloured by label; the most frequent labels get their own colour, the rest
    share one grey 'other'. Axes: PC 1 / PC 2 with the share of variance each explains."""
    xy = np.asarray(xy, np.float64)  # (n, 2)
    names, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], _natural(str(names[i]))))
    kept = sorted((str(names[i]) for i in order[:max_colours]), key=_natural)
    fig = Figure(figsize=(7.5, 5.6), layout="constrained")
    ax = fig.subplots()
    palette = [colormaps["tab20"](i) for i in range(20)]
    lab = np.asarray(labels, dtype=str)
    rest = ~np.isin(lab, kept)
    if rest.any():
        ax.scatter(
            xy[rest, 0],
            xy[rest, 1],
            s=6,
            c="#cccccc",
            alpha=0.6,
            label=f"other ({len(names) - len(kept)} labels)",
        )
    for i, name in enumerate(kept):
        ax.scatter(
            xy[lab == name, 0],
            xy[lab == name, 1],
            s=6,
            color=palette[i % 20],
            alpha=0.75,
            label=name,
        )
    ax.set_xlabel(f"PC 1 ({explained[0]:.1%} of the variance of z_u)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.1%} of the variance of z_u)")
    ax.set_title(f"{len(xy)} users, coloured by {legend_title}")
    fig.suptitle(title, fontweight="bold")
    ax.legend(
        title=legend_title,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        markerscale=2.5,
        fontsize=8,
        frameon=False,
    )
    return fig


def _natural(name: str) -> tuple[int, float, str]:
    """Numbers in numeric order before words (cluster 2 before cluster 10)."""
    try:
        return (0, float(name), "")
    except ValueError:
        return (1, 0.0, name)


LOG_SPAN = 10.0  # a panel whose curves span more than this factor gets a log y axis


def loss_curves(
    panels: Mapping[str, Mapping[str, Sequence[float]]], best_epoch: int | None, title: str
) -> Figure:
    """Loss per epoch, one panel per group of curves on one scale (panels[title] = {name:
    values}), each with its own y range: a loss of another magnitude never flattens the rest.
    A panel spanning more than LOG_SPAN gets a log y axis, so the first epochs' drop and the
    late small differences are both readable."""
    fig = Figure(figsize=(5.4 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (head, curves) in zip(axes, panels.items(), strict=True):
        values = np.array([v for c in curves.values() for v in c], np.float64)
        values = values[np.isfinite(values)]
        log = len(values) > 0 and values.min() > 0 and values.max() / values.min() > LOG_SPAN
        for name, c in curves.items():
            ax.plot(np.arange(1, len(c) + 1), c, marker="." if len(c) < 40 else None, label=name)
        if best_epoch:
            ax.axvline(best_epoch, color="#555", ls="--", lw=1, label=f"best epoch ({best_epoch})")
        ax.set_yscale("log" if log else "linear")
        ax.set_title(head)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss, mean per user" + (" (log scale)" if log else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontweight="bold")
    return fig
