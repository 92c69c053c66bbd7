"""Measure the null (and planted-drift) distributions behind the thresholds in config.py.

    .venv/bin/python bench/calibrate_validation.py --drift 0 0.5 [--users 3000] [--root /tmp/calib]

Builds a synthetic workspace per drift level (ingest -> encoders -> weekly and 4-month-apart
feature snapshots -> two autoencoders trained with different seeds), then runs the real suites
and prints, per comparison, the statistics each check thresholds and the checks that failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.drift_world

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tests.drift_world import build_features, publish, world_config
from userrep.settings import Settings
from validation import drift, stats
from validation.config import ValidationConfig

log = logging.getLogger(__name__)


@dataclass
class World:
    settings: Settings
    times: dict[str, pd.Timestamp]  # "far" (end - 120 d), "week" (end - 7 d), "end"
    batches: list[str]  # two batches trained on the end snapshot with seeds 0 and 1


def build_world(
    root: Path,
    drift_level: float,
    n_users: int,
    new_users: float = 0.0,
    events_per_user: float = 150.0,
    epochs: int = 20,
) -> World:
    from representation import pipeline
    from representation.train import TrainConfig
    from userrep.feast_store import apply_repo

    settings = Settings(workspace=root, text_cache=root.parent / "text_cache.parquet")
    times = build_features(settings, world_config(drift_level, n_users, new_users, events_per_user))
    apply_repo(settings)
    ids = [
        pipeline.train_batch(settings, times["end"], None, TrainConfig(epochs=epochs, seed=s))
        for s in (0, 1)
    ]
    for t in times.values():
        publish(settings, ids[0], t)
    publish(settings, ids[1], times["end"])
    return World(settings, times, ids)


def column_summary(
    reference: pd.DataFrame, candidate: pd.DataFrame, cols: list[str], quantiles: tuple[float, ...]
) -> dict[str, float]:
    """Worst per-column location / scale / shape change, in the units the checks use."""
    shift, ratio, shape = [], [], []
    for c in cols:
        r = drift.ColumnStats.of(reference[c].to_numpy(), quantiles)
        k = drift.ColumnStats.of(candidate[c].to_numpy(), quantiles)
        if not (np.isfinite(r.std) and r.std > 0 and np.isfinite(k.std)):
            continue
        shift.append(abs(k.mean - r.mean) / r.std)
        ratio.append(k.std / r.std)
        if r.quantiles and k.quantiles:
            shape.append(max(abs(a - b) for a, b in zip(r.quantiles, k.quantiles, strict=True)))
    return {
        "max_mean_shift_sd": max(shift),
        "min_std_ratio": min(ratio),
        "max_std_ratio": max(ratio),
        "max_shape_shift_sd": max(shape),
    }


def feature_report(world: World, ref_key: str, cfg: ValidationConfig) -> dict[str, object]:
    from validation.frames import features_frame
    from validation.pipeline import validate_features
    from validation.targets import feature_drift_frame

    s, t = world.settings, world.times
    out = validate_features(s, t["end"], t[ref_key], config=cfg, save=False)
    vectors = [
        c for c in features_frame(s, t["end"]).columns if c.startswith(("collab_", "content_"))
    ]
    exclude = [*cfg.cumulative_features, *(v for v in vectors if v.endswith("_all"))]
    cand = feature_drift_frame(features_frame(s, t["end"]), vectors, exclude)
    base = feature_drift_frame(features_frame(s, t[ref_key]), vectors, exclude)
    norms = [c for c in cand if c.startswith("norm_")]
    scalars = [c for c in cand if c not in norms]
    q = cfg.feature_columns.quantiles
    return {
        "vector norms": column_summary(base, cand, norms, q),
        "scalars": column_summary(base, cand, scalars, q),
        "failed": out.failed,
        "warnings": out.warnings,
    }


def zu_report(
    world: World, ref: tuple[str, str], cand: tuple[str, str], cfg: ValidationConfig
) -> dict[str, object]:
    from validation.frames import batch_record, load_zu, zu_files
    from validation.pipeline import validate_batch

    s = world.settings
    ref_batch, cand_batch = world.batches[int(ref[0])], world.batches[int(cand[0])]
    ref_time, cand_time = world.times[ref[1]], world.times[cand[1]]
    out = validate_batch(
        s, cand_batch, cand_time, f"{ref_batch}@{ref_time.isoformat()}", config=cfg, save=False
    )
    observed = {c.name: c.observed for c in out.checks}
    row = {k: v for k, v in observed.items() if "kl_divergence" in k or "(z_u)" in k}
    if ref_batch == cand_batch:
        dim = batch_record(s, ref_batch).latent_dim
        _, a = load_zu(zu_files(s, ref_batch)[ref_time], dim)
        _, b = load_zu(zu_files(s, cand_batch)[cand_time], dim)
        dims = [drift.dim_column(k) for k in range(a.shape[1])]
        frames = [pd.DataFrame(m[stats.finite_rows(m)], columns=dims) for m in (a, b)]
        row |= column_summary(frames[0], frames[1], dims, cfg.zu_columns.quantiles)
    return row | {"failed": out.failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drift", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--new-users", type=float, default=0.0, help="sign-up burst share")
    parser.add_argument("--events-per-user", type=float, default=150.0)
    parser.add_argument("--root", type=Path, default=Path("/tmp/userrep-calibrate"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    cfg = ValidationConfig()
    for level in args.drift:
        world = build_world(
            args.root / f"drift{level}", level, args.users, args.new_users, args.events_per_user
        )
        for key in ("week", "far"):
            log.info("drift=%s features end vs %s: %s", level, key, feature_report(world, key, cfg))
        for label, ref, cand in (
            ("same batch, weekly", ("0", "week"), ("0", "end")),
            ("same batch, 4 months", ("0", "far"), ("0", "end")),
            ("two seeds, same snapshot", ("0", "end"), ("1", "end")),
        ):
            log.info("drift=%s z_u %s: %s", level, label, zu_report(world, ref, cand, cfg))


if __name__ == "__main__":
    main()
