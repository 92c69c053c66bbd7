"""z_u on MovieLens 100K must not fall below the floor recorded in
representation/evaluate/floors.json by more than the measured seed-to-seed noise (the mean
over the floor's seeds against the floor, which is that mean when it was recorded).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from representation.evaluate.floors import FLOORS_FILE, below_floor, seeds
from representation.evaluate.runner import evaluate
from userrep.data.loaders import dataset_dir

pytestmark = [pytest.mark.dataset, pytest.mark.slow]
DATASET = "movielens-100k"


def test_zu_stays_above_its_floor(text_cache: Path) -> None:
    if dataset_dir(DATASET) is None:
        pytest.skip(f"{DATASET} not in ../shared/datasets (or $USERREP_DATASETS)")
    floors = json.loads(FLOORS_FILE.read_text())[DATASET]
    run = evaluate(DATASET, seeds(floors), list(floors["methods"]), text_cache=text_cache)
    assert {r.key for r in run.runs} == set(floors["methods"])
    assert below_floor(run, floors) == []
