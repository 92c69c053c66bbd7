"""Reuse of the downstream report's costly results (the task comparison and the cost
measurements): one JSON per key under <workspace>/reports/cache, read back by `userrep report`
unless --recompute. The key holds the batch, the label time(s), every option that changes the
numbers and a fingerprint of the workspace inputs, so new data or a new option misses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from downstream.costs import ModelCost, OnlineCost
from downstream.results import MethodResult
from userrep.settings import Settings

log = logging.getLogger(__name__)

VERSION = 1  # bump when the stored layout or what a result means changes
CACHE_DIR = "cache"


@dataclass
class Results:
    """What the report computes and may reuse (the projection and loss curves are cheap reads)."""

    comparison_md: str = ""
    comparison: list[MethodResult] = field(default_factory=list)
    costs: list[ModelCost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # steps skipped while computing


def input_fingerprint(settings: Settings, batch_id: str) -> str:
    """sha256 of (path, size, mtime) of every file the comparison reads: ingested tables,
    offline feature snapshots, item vectors and the batch's published z_u."""
    paths = settings.paths
    files = [paths.users, paths.items, paths.friends, *paths.events.glob("*.parquet")]
    for folder in (paths.user_history, paths.user_onboarding, paths.item_vectors):
        files += folder.rglob("*")
    files += paths.user_embedding.glob(f"{batch_id}__*.parquet")
    stats = sorted(
        (str(p.relative_to(paths.root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in files
        if p.is_file()
    )
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def cache_key(
    settings: Settings,
    batch_id: str,
    as_of: pd.Timestamp,
    label_times: Sequence[pd.Timestamp],
    **options: Any,
) -> dict[str, Any]:
    """Everything the cached numbers depend on, as JSON-able values."""
    return {
        "version": VERSION,
        "batch": batch_id,
        "as_of": str(as_of),
        "label_times": [str(t) for t in label_times],
        "seed": settings.seed,
        "horizons": settings.horizons,
        "online_store": settings.online_store,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())},
        "inputs": input_fingerprint(settings, batch_id),
    }


def cache_path(reports_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    batch = re.sub(r"[^A-Za-z0-9_.-]+", "-", key["batch"])
    when = pd.Timestamp(key["as_of"]).strftime("%Y%m%dT%H%M%S")
    return reports_dir / CACHE_DIR / f"downstream_{batch}_{when}_{digest}.json"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in metric dicts as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def save(path: Path, key: dict[str, Any], results: Results) -> None:
    payload = {"key": key, "computed_at": str(pd.Timestamp.now(tz="UTC")), **asdict(results)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=_plain, indent=1), encoding="utf-8")
    tmp.replace(path)  # a killed run leaves no half-written cache file


def load(path: Path, key: dict[str, Any]) -> tuple[Results, str] | None:
    """(results, when computed) stored under exactly this key; None when absent or unreadable."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload["key"] != json.loads(json.dumps(key)):
            return None
        costs = [ModelCost(**{**c, "online": OnlineCost(**c["online"])}) for c in payload["costs"]]
        results = Results(
            payload["comparison_md"],
            [MethodResult(**r) for r in payload["comparison"]],
            costs,
            list(payload["notes"]),
        )
        return results, payload["computed_at"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        log.warning("report cache %s unreadable (%s): recomputing", path, err)
        return None


def cached(
    reports_dir: Path, key: dict[str, Any], compute: Callable[[], Results], recompute: bool = False
) -> tuple[Results, str | None]:
    """(results, when they were computed if reused else None): read back the results stored
    under key unless recompute; otherwise compute them and store them."""
    path = cache_path(reports_dir, key)
    hit = None if recompute else load(path, key)
    if hit is not None:
        log.info("report: reusing %s", path)
        return hit
    results = compute()
    save(path, key, results)
    return results, None
