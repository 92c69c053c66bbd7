"""Shared fixtures: a tiny synthetic workspace run through the whole representation pipeline.

Built once per test session (about a minute on 2 cores) and read by many tests; tests that
change a workspace build their own from `fresh_settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from userrep.data import synthetic
from userrep.settings import Settings

TINY = synthetic.SyntheticConfig(
    n_users=800, n_items=400, n_artists=80, n_clusters=6, events_per_user=30, seed=7
)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module (`pytest.mark.usefixtures("one_torch_thread")`): tiny
    matrices gain nothing from threads and stall when other jobs share the cores, and matmul
    sums depend on the thread count (a Ray worker trains on one)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MiniLM text cache for the whole session: the catalog text is embedded once."""
    return tmp_path_factory.mktemp("text-cache") / "text_cache.parquet"


@pytest.fixture
def fresh_settings(tmp_path: Path, text_cache: Path) -> Settings:
    settings = Settings(workspace=tmp_path / "ws", text_cache=text_cache)
    settings.paths.ensure()
    settings.export_env()
    return settings


@dataclass
class Pipeline:
    settings: Settings
    data: synthetic.SyntheticData
    end: pd.Timestamp  # newest snapshot time
    earlier: pd.Timestamp  # a snapshot one week before
    batch_id: str


def ingest_synthetic(settings: Settings, data: synthetic.SyntheticData) -> None:
    from userrep import ingest

    ingest.ingest_event_frame(settings.paths, data.events, "synthetic")
    ingest.ingest_users(settings.paths, data.users)
    ingest.ingest_items(settings.paths, data.items)


def run_pipeline(settings: Settings, data: synthetic.SyntheticData, epochs: int = 20) -> Pipeline:
    from representation import build, pipeline
    from representation.train import TrainConfig
    from userrep.db import upgrade
    from userrep.feast_store import apply_repo

    upgrade(settings.metadata_db_url)
    apply_repo(settings)
    ingest_synthetic(settings, data)
    build.build_encoders(settings)
    end = build.last_event_time(settings.paths).ceil("D")
    earlier = end - pd.Timedelta(days=7)
    for t in (earlier, end):
        build.build_snapshot(settings, t)
    # select=False: the tests read the default 64-d z_u (tests/test_selection.py covers choosing)
    cfg = TrainConfig(epochs=epochs, seed=0, select=False)
    batch_id = pipeline.train_batch(settings, end, None, cfg)
    pipeline.embed_batch(settings, batch_id, end)
    return Pipeline(settings, data, end, earlier, batch_id)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, text_cache: Path) -> Pipeline:
    settings = Settings(workspace=tmp_path_factory.mktemp("pipeline") / "ws", text_cache=text_cache)
    return run_pipeline(settings, synthetic.generate(TINY))
