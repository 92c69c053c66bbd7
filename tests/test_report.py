"""The downstream report's pieces without a workspace: hand-made SVG charts, the PCA used for the
z_u projection, section registration and the self-contained page (planted inputs)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from downstream import report, svg
from downstream.baselines import COLD, MethodResult
from downstream.costs import ModelCost, OnlineCost
from userrep.settings import Settings


def test_pca_separates_planted_clusters() -> None:
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(16)
    labels = np.repeat([0, 1], 100)
    z = rng.standard_normal((200, 16)) * 0.3 + np.where(labels[:, None] == 1, 1, -1) * direction
    xy = svg.pca_2d(z)
    assert xy.shape == (200, 2)
    s0, s1 = np.sign(xy[labels == 0, 0]), np.sign(xy[labels == 1, 0])
    assert abs(s0.sum()) == 100 and abs(s1.sum()) == 100 and s0[0] != s1[0]  # PC 1 splits them


def test_bar_widths_follow_the_values() -> None:
    chart = svg.bar_chart({"z_u": 0.8, "curated": 0.4, "als": float("nan")}, "AUC")
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)"', chart)]
    assert len(widths) == 2 and widths[0] == 2 * widths[1]  # NaN: no bar
    assert "n/a" in chart and chart.startswith("<svg") and 'stroke="#222"' in chart


def _data(tmp_path: Path) -> report.ReportData:
    results = [
        MethodResult("z_u", 64, {"auc": 0.71, "recall@10": 0.3, "ndcg@10": 0.2}),
        MethodResult("popularity", 0, {"auc": 0.55, "recall@10": 0.1, "ndcg@10": 0.1}),
        MethodResult("onboarding", 768, {"auc": 0.66}, COLD),
    ]

    def cost(fs: str, features: int, values: int, nbytes: float) -> ModelCost:
        online = OnlineCost(features, values, nbytes, 0.4, 0.9, 1.0, 50)
        return ModelCost(
            "future-listening", fs, "lightgbm", online, 1.5, 2.5, 4096, 1000, {"auc": 0.7}
        )

    return report.ReportData(
        Settings(workspace=tmp_path / "ws"),
        "b-test",
        pd.Timestamp("2024-12-17", tz="UTC"),
        comparison=results,
        comparison_md="| method |\n|---|\n| z_u |",
        costs=[cost("z_u", 1, 64, 612.0), cost("curated", 14, 27, 1234.0)],
        encoder_metrics={"train_loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.7, 0.65]},
        projection=(np.array([[0.0, 0.0], [1.0, 1.0]]), ["0", "1"], "planted cluster"),
        notes=["a note"],
    )


def test_page_is_self_contained_and_has_every_section(tmp_path: Path) -> None:
    data = _data(tmp_path)
    page, md = report.render(data)
    for title in ("Task metrics", "Infrastructure cost", "z_u projection", "Autoencoder training"):
        assert f"<h2>{title}" in page and f"## {title}" in md
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert page.count("<svg") >= 2 + 6 + 1 + 1  # metric bars, cost bars, scatter, loss curve
    assert "| future-listening | curated | 14 | 27 | 1,234 |" in md
    assert "| future-listening | z_u | 1 | 64 | 612 |" in md
    assert "<li>a note</li>" in page
    html_path, md_path = report.write_report(data, tmp_path / "reports")
    assert html_path.read_text() == page and md_path.read_text() == md


def test_a_new_section_registers_once_and_empty_sections_are_left_out(tmp_path: Path) -> None:
    def compat(data: report.ReportData) -> report.Section:
        return report.Section("Retrain compatibility", "<p>planted</p>", "planted")

    def nothing(data: report.ReportData) -> None:
        return None

    before = list(report.SECTIONS)
    try:
        report.register_section(compat, before=report.cost_section)
        report.register_section(compat)  # twice: still once
        report.register_section(nothing)
        assert report.SECTIONS.index(compat) == report.SECTIONS.index(report.cost_section) - 1
        page, md = report.render(_data(tmp_path))
        assert page.count("Retrain compatibility") == 1 and "## Retrain compatibility" in md
        assert page.index("Retrain compatibility") < page.index("Infrastructure cost")
        only, _ = report.render(_data(tmp_path), sections=[nothing, report.loss_section])
        assert only.count("<h2>") == 1
    finally:
        report.SECTIONS[:] = before
    assert compat not in report.SECTIONS
