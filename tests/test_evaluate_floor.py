"""z_u must not fall below the floors recorded in tests/data/floors.json by more
than the measured seed-to-seed noise (the mean over the floor's seeds against the floor, which is
that mean when it was recorded): on the built-in synthetic world always, so every CI run guards
z_u's quality, and on MovieLens 100K where the data set is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.runner import evaluate
from tests.floors import FLOORS_FILE, below_floor, seeds
from userrep.data.loaders import dataset_dir

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize(
    "dataset", ["synthetic", pytest.param("movielens-100k", marks=pytest.mark.dataset)]
)
def test_zu_stays_above_its_floor(dataset: str, text_cache: Path) -> None:
    if dataset != "synthetic" and dataset_dir(dataset) is None:
        pytest.skip(f"{dataset} not in ../shared/datasets (or $USERREP_DATASETS)")
    floors = json.loads(FLOORS_FILE.read_text())[dataset]
    run = evaluate(dataset, seeds(floors), list(floors["methods"]), text_cache=text_cache)
    assert {r.key for r in run.runs} == set(floors["methods"])
    assert below_floor(run, floors) == []
