"""What the downstream report draws from (ReportData) and how it is collected for one batch:
the task comparison and cost measurements (reused through report_cache.py unless recompute),
the batch's loss curves and a PCA of its z_u. Rendered by report.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from downstream import labels as L
from downstream import report_cache
from downstream.baselines import METHODS, compare_baselines
from downstream.costs import ModelCost, measure_costs
from downstream.label_times import label_times, window_for
from downstream.results import MethodResult
from downstream.similar import batch_vectors
from downstream.tasks import batch_as_of
from downstream.training_set import trainable_batch
from representation import batches
from representation.artifact import METRICS_FILE
from representation.build import last_event_time
from representation.publish import published_times
from userrep import columns as C
from userrep.db import session_scope
from userrep.settings import Settings

PROJECTION_USERS = 2000  # points in the z_u scatter (a seeded sample beyond that)


class Projection(NamedTuple):
    xy: np.ndarray  # (users, 2) on the two leading principal components of z_u
    labels: list[str]  # colour of each point
    what: str  # what the labels are ("planted cluster", "top genre so far")
    explained: tuple[float, float]  # share of z_u's variance on PC 1 and PC 2


@dataclass
class ReportData:
    """Everything the sections draw from; sections may also read the workspace themselves."""

    settings: Settings
    batch_id: str
    as_of: pd.Timestamp  # T: the cost measurements and the projection
    comparison: list[MethodResult] = field(default_factory=list)
    comparison_md: str = ""
    costs: list[ModelCost] = field(default_factory=list)
    encoder_metrics: dict[str, Any] = field(default_factory=dict)  # the batch's metrics.json
    projection: Projection | None = None
    notes: list[str] = field(default_factory=list)
    label_times: list[pd.Timestamp] = field(default_factory=list)  # of the task comparison


def encoder_metrics(settings: Settings, batch_id: str) -> dict[str, Any]:
    """The batch artifact's metrics.json (loss curves), {} when there is none."""
    with session_scope(settings.metadata_db_url) as session:
        path = Path(batches.get_batch(session, batch_id).artifact_path) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """(n, 2) projection of z on its two leading principal components, and the share of the
    variance each explains."""
    pca = PCA(n_components=2, random_state=0).fit(np.asarray(z, np.float64))
    xy = pca.transform(np.asarray(z, np.float64))  # (n, 2)
    ratio = pca.explained_variance_ratio_
    return xy, (float(ratio[0]), float(ratio[1]))


def projection(
    settings: Settings, batch_id: str, as_of: pd.Timestamp, truth: pd.DataFrame | None = None
) -> Projection:
    """PCA of the batch's z_u; colours: planted cluster (truth table) or top genre so far."""
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
    xy, explained = pca_2d(z)
    return Projection(xy, names, what, explained)


def report_time(settings: Settings, batch_id: str) -> pd.Timestamp:
    """The newest time the batch is published at that still has later events to label."""
    times = published_times(settings, batch_id)
    if not times:
        raise FileNotFoundError(f"batch {batch_id} has no published z_u")
    last = last_event_time(settings.paths)
    return max((t for t in times if t < last), default=times[-1])


_OPTIONS = ("family", "window_days", "methods", "cost_tasks", "n_calls")  # _compute's, in order


def _compute(
    settings: Settings,
    batch: str,
    t: pd.Timestamp,
    when: pd.Timestamp | list[pd.Timestamp],
    family: str,
    window_days: int | None,
    methods: tuple[str, ...],
    cost_tasks: Sequence[str],
    n_calls: int,
) -> report_cache.Results:
    """The costly part: the task comparison at `when`, the cost measurements at t."""
    out = report_cache.Results()
    try:
        out.comparison_md, out.comparison = compare_baselines(
            settings, when, batch, family, window_days, methods, cold_start=True
        )
    except ValueError as err:
        out.notes.append(f"task comparison skipped: {err}")
    cost_window = window_for([t], window_days)
    for task in cost_tasks:
        try:
            out.costs += measure_costs(
                settings, batch, t, task, family=family, window_days=cost_window, n_calls=n_calls
            )
        except ValueError as err:
            out.notes.append(f"cost of {task} skipped: {err}")
    return out


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
    recompute: bool = False,
) -> ReportData:
    """Run the comparison and the cost measurements for one batch; a step that cannot run on
    this workspace (e.g. no labels after T) leaves a note instead of failing the report.
    Without as_of the comparison runs at every label time of the batch (label_times), or at
    report_time when it has none; costs and the projection use report_time. Both are read back
    from the report cache (report_cache.py) when their key matches, unless recompute."""
    batch = trainable_batch(settings, batch_id)
    t = as_of if as_of is not None else report_time(settings, batch)
    data = ReportData(settings, batch, t, encoder_metrics=encoder_metrics(settings, batch))
    trained = batch_as_of(settings, batch)
    when: pd.Timestamp | list[pd.Timestamp] = t
    if as_of is None:
        with contextlib.suppress(ValueError):  # none leak-free: T = report_time, noted below
            when, _ = label_times(settings, batch, window_days)
    if trained > t and when is t:
        data.notes.append(
            f"batch trained as of {trained:%Y-%m-%d %H:%M}, after T: its encoder saw input "
            "features and item targets up to then, label windows included; metrics are optimistic"
        )
    data.label_times = L.label_time_list(when)
    how = (family, window_days, tuple(methods or METHODS), tuple(cost_tasks), n_calls)
    key = report_cache.cache_key(
        settings, batch, t, data.label_times, **dict(zip(_OPTIONS, how, strict=True))
    )
    results, computed_at = report_cache.cached(
        settings.paths.reports, key, lambda: _compute(settings, batch, t, when, *how), recompute
    )
    data.comparison_md, data.comparison, data.costs = (
        results.comparison_md,
        results.comparison,
        results.costs,
    )
    data.notes += results.notes
    if computed_at is not None:
        data.notes.append(
            f"task metrics and costs reused from {computed_at[:19]} UTC (same batch, T, options "
            "and input files); `userrep report --recompute` measures them again"
        )
    data.projection = projection(settings, batch, t, truth)
    return data
