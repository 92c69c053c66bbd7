"""Quality floors: the z_u scores measured on a data set (floors.json beside this module) and
the check that a new run has not dropped below them by more than the measured seed noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from representation.evaluate.runner import EvalRun

FLOORS_FILE = Path(__file__).with_name("floors.json")
MIN_NOISE = 0.01  # DESIGN.md: differences under ~0.01 AUC are noise
GUARDED = ("linear_auc", "gbdt_auc", "recall@10", "ndcg@10", "cold_linear_auc")


def record(run: EvalRun, keys: tuple[str, ...] = ("z_u",)) -> dict:
    """Floors from a run: its first seed's scores per method, noise = seed-to-seed spread."""
    seed = run.seeds[0]
    methods = {
        r.key: {m: round(r.metrics[m], 4) for m in GUARDED if m in r.metrics}
        for r in run.runs
        if r.key in keys and r.seed == seed
    }
    noise = {m: MIN_NOISE for m in GUARDED}
    for r in run.runs:
        if r.key in keys and r.seed != seed:
            for m in GUARDED:
                gap = abs(r.metrics.get(m, 0.0) - methods[r.key].get(m, 0.0))
                noise[m] = round(max(noise[m], gap), 4)
    return {"seed": seed, "command": run.command, "noise": noise, "methods": methods}


def save(run: EvalRun, path: Path = FLOORS_FILE) -> None:
    """Merge this data set's floors into floors.json."""
    floors = json.loads(path.read_text()) if path.exists() else {}
    floors[run.dataset] = record(run)
    path.write_text(json.dumps(floors, indent=2, sort_keys=True) + "\n")


def below_floor(run: EvalRun, floors: dict) -> list[str]:
    """Every (method, metric) of the run more than the noise under its floor."""
    out = []
    for r in run.runs:
        for metric, floor in floors["methods"].get(r.key, {}).items():
            tolerance = floors["noise"].get(metric, MIN_NOISE)
            if r.metrics[metric] < floor - tolerance:
                out.append(f"{r.key} {metric}: {r.metrics[metric]:.4f} < {floor} - {tolerance}")
    return out
