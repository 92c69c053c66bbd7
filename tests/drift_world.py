"""A synthetic workspace whose taste drifts between snapshots: the world the drift checks are
tested on (tests/test_validation_drift.py) and calibrated on (bench/calibrate_validation.py)."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from representation import build
from representation.inputs import read_snapshot, to_matrix
from representation.pipeline import embedding_table, load_encoder
from userrep import columns as C
from userrep import ingest
from userrep.data import synthetic
from userrep.db import upgrade
from userrep.settings import Settings

FAR_DAYS, WEEK_DAYS = 120, 7


def world_config(
    drift_level: float,
    n_users: int,
    new_users: float = 0.0,
    events_per_user: float = 150.0,
    seed: int = 3,
) -> synthetic.SyntheticConfig:
    """By default mature histories (150 plays per user) and no sign-up burst: what changes
    between snapshots is history growth, the user base's tenure and the planted taste drift."""
    return synthetic.SyntheticConfig(
        n_users=n_users,
        n_items=800,
        n_artists=120,
        n_clusters=8,
        events_per_user=events_per_user,
        new_user_fraction=new_users,
        drift=drift_level,
        seed=seed,
    )


def build_features(settings: Settings, cfg: synthetic.SyntheticConfig) -> dict[str, pd.Timestamp]:
    """Ingest a synthetic world, build encoders and the three feature snapshots."""
    settings.paths.ensure()
    settings.export_env()
    upgrade(settings.metadata_db_url)
    data = synthetic.generate(cfg)
    ingest.ingest_event_frame(settings.paths, data.events, "synthetic")
    ingest.ingest_users(settings.paths, data.users)
    ingest.ingest_items(settings.paths, data.items)
    build.build_encoders(settings)
    end = build.last_event_time(settings.paths).ceil("D")
    times = {
        "far": end - pd.Timedelta(days=FAR_DAYS),
        "week": end - pd.Timedelta(days=WEEK_DAYS),
        "end": end,
    }
    for t in times.values():
        build.build_snapshot(settings, t)
    return times


def publish(settings: Settings, batch_id: str, as_of: pd.Timestamp) -> None:
    """Embed a snapshot with a batch's encoder and write its z_u file (no status change)."""
    encoder, layout = load_encoder(settings, batch_id)
    table = read_snapshot(settings.paths, as_of)
    z = encoder.embed(to_matrix(table, layout))
    out = embedding_table(table[C.USER_ID].to_numpy(), z, batch_id, as_of)
    pq.write_table(
        out, settings.paths.user_embedding / f"{batch_id}__{as_of:%Y%m%dT%H%M%S}.parquet"
    )
