"""The feature repo as Feast users drive it: `feast apply`, `feast materialize` and
`feast get-online-features` in subprocesses, on a workspace named by $USERREP_WORKSPACE."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from representation import features as feat
from tests.test_features import DAY, T, planted_events, planted_vectors, write_workspace
from userrep.settings import Settings

pytestmark = pytest.mark.slow
FEAST = os.path.join(os.path.dirname(sys.executable), "feast")


def feast(repo: Path, workspace: Path, *args: str) -> str:
    env = {**os.environ, "USERREP_WORKSPACE": str(workspace)}
    done = subprocess.run([FEAST, "-c", str(repo), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_apply_materialize_and_read_online(fresh_settings: Settings, tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(fresh_settings.feature_repo, repo, ignore=shutil.ignore_patterns("__pycache__"))
    write_workspace(fresh_settings, planted_events())
    feat.write_history_snapshot(
        fresh_settings.paths, planted_vectors(), T, fresh_settings.horizon_list
    )
    ws = fresh_settings.workspace
    out = feast(repo, ws, "apply")
    assert "user_embedding" in out and "encoder_input_v2" in out
    feast(
        repo,
        ws,
        "materialize",
        (T - DAY).isoformat(),
        (T + DAY).isoformat(),
        "-v",
        "user_history_features",
    )
    got = json.loads(
        feast(
            repo,
            ws,
            "get-online-features",
            "-e",
            "user_id=1",
            "-f",
            "user_history_features:n_events_all",
            "-f",
            "user_history_features:collab_7d",
        )
    )
    assert got["n_events_all"] == [4]
    np.testing.assert_allclose(got["collab_7d"][0], [1, 0, 0, 0], atol=1e-6)
    assert (ws / "feast" / "registry.db").exists() and (ws / "feast" / "online.db").exists()
