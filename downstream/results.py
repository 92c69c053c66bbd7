"""One row of a downstream comparison (a method's metrics on a label set) and its markdown:
shared by the comparison itself (baselines.py), its cold-start and ablation sections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WARM, COLD, ABLATION = "all users", "cold start", "ablation"  # MethodResult.section


@dataclass
class MethodResult:
    method: str
    n_user_features: int
    metrics: dict[str, Any]
    section: str = WARM  # which table of the comparison the row belongs to
    seconds: dict[str, float] | None = None  # training_set / fit wall times, when measured


def metric_columns(results: Sequence[MethodResult]) -> list[tuple[str, str]]:
    """(metric key, header): binary-task or multiclass columns, whichever the rows carry."""
    if any("accuracy" in r.metrics for r in results):
        return [("accuracy", "accuracy"), ("top3_accuracy", "top-3"), ("macro_auc", "macro AUC")]
    return [("auc", "AUC"), ("recall@10", "Recall@10"), ("ndcg@10", "NDCG@10")]


def results_rows(results: Sequence[MethodResult], extra: Sequence[str] = ()) -> list[str]:
    """Markdown header + one row per result; `extra` cells are appended row by row."""
    cols = metric_columns(results)
    head = ["method", "user features", *[h for _, h in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(results):
        cells = [r.method, str(r.n_user_features)]
        cells += [f"{float(r.metrics.get(k, float('nan'))):.3f}" for k, _ in cols]
        lines.append("| " + " | ".join(cells) + (f" | {extra[i]} |" if extra else " |"))
    return lines
