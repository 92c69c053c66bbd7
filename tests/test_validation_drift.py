"""The feature-drift gate on the synthetic simulator with planted taste drift switched off and on.

Two worlds identical but for SyntheticConfig.drift (0 vs 0.5: half of each user's listening
moves to a second cluster over the year); the newest feature snapshot is compared with the one
4 months earlier. Without drift the gate must stay quiet; with drift it must fire on the taste
features (vector-feature norms: mixing two clusters shrinks a user's averaged item vector).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.drift_world import build_features, world_config
from userrep.settings import Settings
from validation.pipeline import validate_features

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)


@pytest.fixture(scope="module", params=[0.0, 0.5], ids=["no-drift", "drift"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, text_cache: Path
) -> tuple[float, Settings, dict]:
    settings = Settings(workspace=tmp_path_factory.mktemp("drift") / "ws", text_cache=text_cache)
    times = build_features(settings, world_config(request.param, n_users=3000))
    return request.param, settings, times


def test_feature_drift_gate_fires_only_with_planted_drift(world) -> None:
    level, settings, times = world
    out = validate_features(settings, times["end"], times["far"], save=False)
    observed = {c.name: c.observed for c in out.checks if c.name.startswith("expect_column_mean")}
    log.info("drift=%s failed=%s warnings=%s means=%s", level, out.failed, out.warnings, observed)
    assert out.statistics["reference"] == times["far"].isoformat()
    if level == 0.0:
        assert out.success, out.failed
    else:
        assert not out.success
        assert "expect_column_mean_to_be_between(norm_content_180d)" in out.failed
        assert all("(norm_" in name for name in out.failed)  # taste features, nothing else
