"""Loading each stage's published output as the frames the suites check: events parts, item
vectors, feature snapshots (history + onboarding), z_u files; vector columns stay Arrow-backed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from representation.batches import get_batch
from representation.encoders import current_version
from representation.features import DEMO_DIM, snapshot_name
from representation.inputs import InputLayout
from userrep import columns as C
from userrep.db import session_scope
from userrep.settings import Settings


def encoder_dims(settings: Settings, version: str) -> tuple[int, int]:
    meta = json.loads((settings.paths.encoders / version / "meta.json").read_text())
    return int(meta["config"]["collab_dim"]), int(meta["config"]["content_dim"])


def read_arrow_lists(path: Path) -> pd.DataFrame:
    """A parquet file with vector (list) columns kept Arrow-backed: no per-row Python objects."""
    table = pq.read_table(path)
    return table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)


def features_frame(settings: Settings, as_of: pd.Timestamp) -> pd.DataFrame:
    """encoder_input_v2 of one snapshot: onboarding and history rows joined on user_id."""

    name = snapshot_name(as_of)
    onb = read_arrow_lists(settings.paths.user_onboarding / name).drop(columns=[C.CREATED])
    hist_path = settings.paths.user_history / name
    if not hist_path.exists():
        return onb
    hist = read_arrow_lists(hist_path).drop(columns=[C.CREATED])
    frame = onb.merge(hist, on=C.USER_ID, how="outer", suffixes=("", "_history"))
    ts_hist = f"{C.EVENT_TIMESTAMP}_history"
    frame[C.EVENT_TIMESTAMP] = frame[C.EVENT_TIMESTAMP].fillna(frame[ts_hist])
    return frame.drop(columns=[ts_hist]).sort_values(C.USER_ID, ignore_index=True)


def vector_widths(settings: Settings) -> dict[str, int]:
    """Every vector feature of the encoder input and its width, read from the input layout."""
    collab, content = encoder_dims(settings, current_version(settings.paths))
    layout = InputLayout(tuple(h.name for h in settings.horizon_list), collab, content)
    vectors = {name: width for name, _, width in layout.widths() if width > 1}
    return vectors | {C.DEMO_VEC: DEMO_DIM}


def zu_files(settings: Settings, batch_id: str) -> dict[pd.Timestamp, Path]:
    """Published z_u files of a batch by snapshot time, oldest first."""
    out = {}
    for path in settings.paths.user_embedding.glob(f"{batch_id}__*.parquet"):
        out[pd.Timestamp(path.stem.split("__", 1)[1], tz="UTC")] = path
    return dict(sorted(out.items()))


def load_zu(path: Path, dim: int, frame: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """A z_u file as GX's frame (z_u an Arrow list column: no per-row Python objects) and an
    (n, dim) matrix (NaN rows where a vector is null or of the wrong length). frame=False
    returns only user_id in the frame (a reference needs no quality checks)."""
    table = pq.read_table(path, columns=None if frame else [C.USER_ID, C.Z_U])
    col = table[C.Z_U].combine_chunks()
    ok = pc.fill_null(pc.equal(pc.list_value_length(col), dim), False)
    mask = np.asarray(ok.to_numpy(zero_copy_only=False), bool)
    if mask.all():  # the usual case: a view of the Arrow buffer, no copy
        z = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    else:
        z = np.full((len(col), dim), np.nan, np.float32)
        flat = col.filter(ok).flatten().to_numpy(zero_copy_only=False)
        z[mask] = flat.reshape(-1, dim)
    out = table.drop_columns([C.Z_U]).to_pandas()
    if frame:
        out.insert(2, C.Z_U, pd.Series(pd.arrays.ArrowExtensionArray(col)))
    return out, z


def batch_record(settings: Settings, batch_id: str):  # -> RepresentationBatch (detached)

    with session_scope(settings.metadata_db_url) as session:
        return get_batch(session, batch_id)
