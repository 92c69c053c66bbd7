"""Quality floors (test data): the z_u scores measured on a data set (tests/data/floors.json)
and the check that a new run has not dropped below them by more than the measured seed noise.
Record a data set's floor with `python -m tests.floors DATASET --seed 0 --seed 1 --seed 2`.

A floor is the mean over several protocol seeds, and the check compares the mean of a run over
the same seeds. One seed is not enough: the same seed on another CPU trains along another float
path, and on MovieLens 100K that moved R@10 from 0.311 to 0.288, as far as a change of seed does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.report import MIN_NOISE
from evaluation.runner import EvalRun, evaluate

FLOORS_FILE = Path(__file__).with_name("data") / "floors.json"
GUARDED = (
    "linear_auc",
    "linear_auc_cv",
    "gbdt_auc",
    "recall@10",
    "ndcg@10",
    "similar",
    "cold_linear_auc",
)


def _per_seed(run: EvalRun, key: str) -> dict[str, list[float]]:
    """metric -> the run's values of one method, one per seed."""
    out: dict[str, list[float]] = {}
    for r in run.runs:
        if r.key == key:
            for m in GUARDED:
                if m in r.metrics:
                    out.setdefault(m, []).append(float(r.metrics[m]))
    return out


def record(run: EvalRun, keys: tuple[str, ...] = ("z_u",)) -> dict:
    """Floors from a run: each metric's mean over the run's seeds; noise = the largest spread
    (max - min) over those seeds, at least MIN_NOISE. The spread of n = 3 seeds is about 1.7
    standard deviations of one seed, and two means of 3 seeds differ by about 0.8 of one, so
    the spread is a ~2-sigma tolerance for a rerun's mean (on another machine too)."""
    methods: dict[str, dict[str, float]] = {}
    noise = {m: MIN_NOISE for m in GUARDED}
    for key in keys:
        values = _per_seed(run, key)
        if values:
            methods[key] = {m: round(float(np.mean(v)), 4) for m, v in values.items()}
            for m, v in values.items():
                noise[m] = round(max(noise[m], max(v) - min(v)), 4)
    return {"seeds": list(run.seeds), "command": run.command, "noise": noise, "methods": methods}


def seeds(floors: dict) -> list[int]:
    """The seeds a data set's floor was measured over (older files: one "seed")."""
    return list(floors.get("seeds", [floors.get("seed", 0)]))


def save(run: EvalRun, path: Path = FLOORS_FILE) -> None:
    """Merge this data set's floors into floors.json."""
    floors = json.loads(path.read_text()) if path.exists() else {}
    floors[run.dataset] = record(run)
    path.write_text(json.dumps(floors, indent=2, sort_keys=True) + "\n")


def below_floor(run: EvalRun, floors: dict) -> list[str]:
    """Every (method, metric) whose mean over the run's seeds is more than the noise under its
    floor."""
    out = []
    for key, metrics in floors["methods"].items():
        values = _per_seed(run, key)
        for metric, floor in metrics.items():
            if metric not in values:
                continue
            got = float(np.mean(values[metric]))
            tolerance = floors["noise"].get(metric, MIN_NOISE)
            if got < floor - tolerance:
                out.append(f"{key} {metric}: {got:.4f} < {floor} - {tolerance}")
    return out


def main() -> None:
    """Rerun z_u on a data set over the given seeds and store the result as its floor."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("dataset")
    parser.add_argument("--seed", type=int, action="append", default=None)
    args = parser.parse_args()
    seeds = args.seed or [0, 1, 2]
    run = evaluate(args.dataset, seeds, ["z_u"])
    run.command = f"python -m tests.floors {args.dataset} " + " ".join(f"--seed {s}" for s in seeds)
    save(run)
    print(f"{args.dataset}: floors written to {FLOORS_FILE}")


if __name__ == "__main__":
    main()
