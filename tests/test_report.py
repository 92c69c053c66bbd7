"""The downstream report without a workspace: planted results in, the page out (HTML tables,
titled matplotlib figures with z_u highlighted, the note on a number seen twice), the results
cache, and the page as headless Chromium draws it."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image
from typer.testing import CliRunner

from downstream import charts, report, report_cache
from downstream.costs import ModelCost, OnlineCost
from downstream.report_data import Projection, pca_2d
from downstream.results import COLD, MethodResult
from userrep.settings import Settings

T = pd.Timestamp("2024-12-17", tz="UTC")
LABEL_TIMES = list(pd.date_range("2024-11-19", periods=5, freq="7D", tz="UTC"))
COMPARISON_MD = """Future listening at 5 label times 2024-11-19 .. 2024-12-17 (+7d), batch b-test

| method | user features | AUC | Recall@10 | NDCG@10 |
|---|---|---|---|---|
| z_u | 64 | 0.794 | 0.300 | 0.200 |
| popularity | 0 | 0.550 | 0.100 | 0.100 |

Cold start as of 2024-12-17 00:00 UTC: 40 users

| method | user features | AUC | Recall@10 | NDCG@10 |
|---|---|---|---|---|
| z_u | 64 | 0.610 | nan | nan |
| onboarding | 768 | 0.660 | nan | nan |"""
FIGURES = {  # every figure of the planted page, by title
    "Future listening, all held-out users: z_u and the baselines",
    "Future listening, cold-start users: z_u and the baselines",
    "Infrastructure cost per downstream model: z_u vs curated",
    "z_u of batch b-test: its two principal components",
    "Loss of the z_u encoder (autoencoder) per epoch, batch b-test",
}
HIGHLIGHT_RGB = np.array([round(255 * c) for c in to_rgb(charts.HIGHLIGHT)])
FIGURE = re.compile(
    r'<figure class="chart"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)" '
    r'width="(\d+)" height="(\d+)" alt="([^"]*)"><figcaption>([^<]*)</figcaption></figure>'
)


def _cost(task: str, fs: str, features: int, nbytes: float, auc: float) -> ModelCost:
    online = OnlineCost(features, 64 if fs == "z_u" else 27, nbytes, 0.4, 0.9, 1.0, 50)
    return ModelCost(task, fs, "lightgbm", online, 1.5, 2.5, 4096, 1000, {"auc": auc})


def _data(tmp_path: Path, cost_auc: float = 0.765) -> report.ReportData:
    results = [
        MethodResult("z_u", 64, {"auc": 0.794, "recall@10": 0.3, "ndcg@10": 0.2}),
        MethodResult("popularity", 0, {"auc": 0.55, "recall@10": 0.1, "ndcg@10": 0.1}),
        MethodResult("z_u", 64, {"auc": 0.61}, COLD),
        MethodResult("onboarding", 768, {"auc": 0.66}, COLD),
    ]
    costs = [
        _cost("future-listening", "z_u", 1, 612.0, cost_auc),
        _cost("future-listening", "curated", 14, 1234.0, 0.74),
        _cost("genre-preference", "z_u", 1, 612.0, 0.61),
        _cost("genre-preference", "curated", 14, 1234.0, 0.58),
    ]
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 4, 300)
    z = rng.standard_normal((300, 8)) + clusters[:, None] * np.eye(8)[0] * 3
    xy, explained = pca_2d(z)
    loss = np.exp(-np.arange(30) / 4) + 0.01  # 1.0 down to 0.01: two decades
    return report.ReportData(
        Settings(workspace=tmp_path / "ws"),
        "b-test",
        T,
        comparison=results,
        comparison_md=COMPARISON_MD,
        costs=costs,
        encoder_metrics={
            "train_loss": list(loss),
            "val_loss": list(loss * 1.2),
            "val_clean_loss": list(0.05 + loss / 100),  # another scale: its own panel
            "best_epoch": 25,
        },
        projection=Projection(xy, [str(c) for c in clusters], "planted cluster", explained),
        notes=["a note"],
        label_times=LABEL_TIMES,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(HTML page, markdown) of the planted data with the default sections."""
    return report.render(_data(tmp_path_factory.mktemp("report")))


def _png_pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16)  # (h, w, 3)


def _highlighted(pixels: np.ndarray) -> int:
    """Pixels of z_u's colour."""
    return int(np.all(np.abs(pixels - HIGHLIGHT_RGB) <= 8, axis=-1).sum())


def test_pca_separates_planted_clusters_and_reports_variance() -> None:
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(16)
    labels = np.repeat([0, 1], 100)
    z = rng.standard_normal((200, 16)) * 0.3 + np.where(labels[:, None] == 1, 1, -1) * direction
    xy, (pc1, pc2) = pca_2d(z)
    assert xy.shape == (200, 2)
    s0, s1 = np.sign(xy[labels == 0, 0]), np.sign(xy[labels == 1, 0])
    assert abs(s0.sum()) == 100 and abs(s1.sum()) == 100 and s0[0] != s1[0]  # PC 1 splits them
    assert pc1 > 0.8 and pc2 < 0.1  # the planted direction carries nearly all the variance


def test_tables_are_html_tables_not_markdown(rendered: tuple[str, str]) -> None:
    page, md = rendered
    assert "|---" not in page and "<pre>" not in page
    assert not any(line.lstrip().startswith("|") for line in page.splitlines())
    assert page.count("<table>") == 2 + 1 + 1  # comparison + cold start, costs, loss facts
    assert "<tr class='zu'><td>z_u</td><td>64</td><td>0.794</td>" in page  # z_u row in bold
    assert "<p>Cold start as of 2024-12-17 00:00 UTC: 40 users</p>" in page
    assert "<tr class='zu'><td>future-listening</td><td>z_u</td><td>1</td><td>64</td>" in page
    # the markdown summary keeps markdown tables
    assert "| future-listening | curated | 14 | 27 | 1,234 |" in md and "| z_u | 64 | 0.794 |" in md


def test_every_figure_is_one_titled_png_with_z_u_highlighted(rendered: tuple[str, str]) -> None:
    page, _ = rendered
    figures = FIGURE.findall(page)
    assert {alt for *_, alt, _ in figures} == FIGURES and len(figures) == len(FIGURES)
    assert page.count("<img") == len(FIGURES) and "<svg" not in page
    for data, width, height, alt, caption in figures:
        pixels = _png_pixels(base64.b64decode(data))
        assert caption == alt
        shown = np.array([int(height), int(width)])
        assert np.abs(np.array(pixels.shape[:2]) / 2 - shown).max() <= 1  # shown at half size
        assert (pixels < 200).any(axis=-1).mean() > 0.01  # drawn, not blank
        if "z_u and the baselines" in alt or "Infrastructure" in alt:
            assert _highlighted(pixels) > 100, alt
    no_z_u = charts.figure_html(charts.metric_bars({"als": {"auc": 0.7}}, [("auc", "AUC")], "-"))
    assert _highlighted(_png_pixels(base64.b64decode(FIGURE.findall(no_z_u)[0][0]))) == 0


def _check_titles_and_labels(fig: Figure) -> None:
    assert fig.get_suptitle()
    for ax in (a for a in fig.axes if a.get_visible()):
        assert ax.get_title() and ax.get_xlabel(), fig.get_suptitle()
        shared = ax.get_shared_y_axes().get_siblings(ax)
        assert any(a.get_ylabel() for a in shared), (fig.get_suptitle(), ax.get_title())


def test_plots_have_titles_labelled_axes_and_whole_labels(tmp_path: Path) -> None:
    data = _data(tmp_path)
    rows = {r.method: r.metrics for r in data.comparison}
    bars = charts.metric_bars(rows, [("auc", "AUC"), ("recall@10", "Recall@10")], "metrics")
    panels = {"model KiB": ({"future-listening": {"z_u": 4.0}, "genre-preference": {}}, "{}")}
    cost = charts.grouped_bars(panels, "cost")
    p = data.projection
    assert p is not None
    scatter = charts.scatter(p.xy, p.labels, p.explained, "projection", p.what)
    m = data.encoder_metrics
    objective = {k: m[k] for k in ("train_loss", "val_loss")}
    loss = charts.loss_curves(
        {"objective": objective, "clean": {"c": m["val_clean_loss"]}}, 25, "-"
    )
    for fig in (bars, cost, scatter, loss):
        _check_titles_and_labels(fig)
    ax = scatter.axes[0]
    assert ax.get_xlabel() == f"PC 1 ({p.explained[0]:.1%} of the variance of z_u)"
    assert ax.get_ylabel() == f"PC 2 ({p.explained[1]:.1%} of the variance of z_u)"
    assert [t.get_text() for t in cost.axes[0].get_yticklabels()] == [
        "future-listening",
        "genre-preference",
    ]  # whole task names, never cut
    z_u_tick = next(t for t in bars.axes[0].get_yticklabels() if t.get_text() == "z_u")
    assert z_u_tick.get_fontweight() == "bold"
    # loss: the objective spans two decades (log axis); the clean loss, 0.0501 .. 0.06, has
    # its own linear axis fitted to it rather than squashed under the objective's range
    assert [a.get_yscale() for a in loss.axes] == ["log", "linear"]
    lo, hi = loss.axes[0].get_ylim()
    assert lo <= 0.011 and hi >= 1.2
    lo, hi = loss.axes[1].get_ylim()
    assert 0.049 < lo < 0.0502 and 0.06 < hi < 0.061


def test_an_auc_seen_twice_is_explained_where_it_differs(tmp_path: Path) -> None:
    differs = report.cost_section(_data(tmp_path, cost_auc=0.765))
    assert differs is not None
    note = "z_u's future-listening AUC is 0.765 here and 0.794 under Task metrics"
    assert note in html.unescape(differs.html) and note in differs.markdown
    assert "5 label times (2024-11-19 .. 2024-12-17) pooled" in differs.markdown
    same = report.cost_section(_data(tmp_path, cost_auc=0.794))
    assert same is not None and "under Task metrics" not in same.markdown


def test_sections_are_an_explicit_ordered_list(tmp_path: Path) -> None:
    assert isinstance(report.SECTIONS, tuple) and report.SECTIONS[-1] is report.compat_section

    def planted(data: report.ReportData) -> report.Section:
        return report.Section("Planted", "<p>planted</p>", "planted")

    def nothing(data: report.ReportData) -> None:
        return None

    page, md = report.render(_data(tmp_path), sections=[report.loss_section, nothing, planted])
    assert page.count("<h2>") == 2 and "## Planted" in md
    assert page.index("Autoencoder training") < page.index("<h2>Planted")


def test_page_is_self_contained_and_has_every_section(
    rendered: tuple[str, str], tmp_path: Path
) -> None:
    page, md = rendered
    for title in ("Task metrics", "Infrastructure cost", "z_u projection", "Autoencoder training"):
        assert f"<h2>{title}" in page and f"## {title}" in md
    assert "Retrain compatibility" not in page  # a workspace without models: left out
    assert "<script" not in page and "<link" not in page
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert "<li>a note</li>" in page
    data, sections = _data(tmp_path), [report.loss_section]
    html_path, md_path = report.write_report(data, tmp_path / "reports", sections)
    assert (html_path.read_text(), md_path.read_text()) == report.render(data, sections)


def test_cache_reuses_results_until_an_option_or_input_changes(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    settings.paths.events.mkdir(parents=True)
    (settings.paths.events / "part-0.parquet").write_bytes(b"planted")
    planted = report_cache.Results(
        "planted markdown",
        [MethodResult("z_u", 64, {"auc": np.float64(0.794), "ci": np.array([0.7, 0.8])})],
        [_cost("future-listening", "z_u", 1, 612.0, 0.765)],
        ["cost of genre-preference skipped: planted"],
    )
    computed: list[int] = []

    def compute() -> report_cache.Results:
        computed.append(1)
        return planted

    def run(recompute: bool = False, n_calls: int = 50) -> tuple[report_cache.Results, str | None]:
        key = report_cache.cache_key(
            settings, "b-1", T, LABEL_TIMES, family="lgbm", n_calls=n_calls
        )
        return report_cache.cached(settings.paths.reports, key, compute, recompute)

    assert run()[1] is None and len(computed) == 1
    again, when = run()
    assert len(computed) == 1 and when is not None  # reused, with the time it was computed
    assert again.comparison == [MethodResult("z_u", 64, {"auc": 0.794, "ci": [0.7, 0.8]})]
    assert (again.comparison_md, again.costs, again.notes) == (
        planted.comparison_md,
        planted.costs,
        planted.notes,
    )
    assert run(recompute=True)[1] is None and len(computed) == 2
    assert run(n_calls=10)[1] is None and len(computed) == 3  # another option: another key
    (settings.paths.events / "part-1.parquet").write_bytes(b"new events")
    assert run()[1] is None and len(computed) == 4  # new input data: recomputed
    stored = sorted(p.name for p in (settings.paths.reports / "cache").iterdir())
    assert len(stored) == 3 and all(n.startswith("downstream_b-1_20241217T000000_") for n in stored)


def test_cli_report_offers_recompute() -> None:
    from userrep.cli import app

    result = CliRunner().invoke(app, ["report", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--recompute" in result.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Counts the figures Chromium decoded and laid out inside the window, and the raw markdown it
# shows, into the DOM that --dump-dom prints (a copy of the page only: the report has no script).
PROBE = """<script>addEventListener("load", () => {
  const shown = [...document.images].filter(i => i.complete && i.naturalWidth > 0
    && i.getBoundingClientRect().bottom <= innerHeight);
  document.body.dataset.figures = shown.length;
  document.body.dataset.markdown = document.body.innerText.includes("|---");
});</script></body>"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,4000", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian: apt-get install -y chromium): the report "
    "page is not checked as a browser draws it",
)
def test_page_in_headless_chromium_shows_every_figure(
    rendered: tuple[str, str], tmp_path: Path
) -> None:
    page, _ = rendered
    html_path, shot = tmp_path / "report.html", tmp_path / "report.png"
    html_path.write_text(page, encoding="utf-8")
    _chromium(f"--screenshot={shot}", html_path.as_uri())
    pixels = _png_pixels(shot.read_bytes())
    assert pixels.shape == (4000, 1280, 3)
    assert (pixels < 200).any(axis=-1).mean() > 0.02  # text, tables and charts, not a blank page
    assert _highlighted(pixels) > 500  # z_u's bars, drawn from the embedded PNGs
    probe_path = tmp_path / "probe.html"
    probe_path.write_text(page.replace("</body>", PROBE), encoding="utf-8")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe_path.as_uri()).stdout
    assert f'data-figures="{len(FIGURES)}"' in dom and 'data-markdown="false"' in dom
