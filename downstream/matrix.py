"""Training-set frame -> float matrices for the GBDTs: user block (z_u / curated / raw) and
item block (collab, content). Null features become NaN, which both GBDTs treat as missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from downstream.training_set import ITEM_FEATURES, user_feature_refs
from representation.inputs import InputLayout, to_matrix
from userrep import columns as C
from userrep.settings import Settings

# log1p before use, as the autoencoder's input does (heavy-tailed counts and durations)
_LOG_PREFIXES = (
    "n_events_",
    "weight_",
    C.RECENCY_DAYS,
    C.N_DISTINCT_ITEMS,
    C.N_ONBOARDING,
    C.DAYS_SINCE_SIGNUP,
)
_VECTORS = {C.Z_U, C.DEMO_VEC, C.ONBOARD_COLLAB, C.ONBOARD_CONTENT, *ITEM_FEATURES}


def is_vector(col: str) -> bool:
    """Whether one of our Feast features is a list<float> (z_u, item / onboarding / history)."""
    return col in _VECTORS or col.startswith(tuple(f"{m}_" for m in C.MODALITIES))


def vector_width(col: pd.Series) -> int:
    """Length of the first non-null vector in a column (0 when every row is null)."""
    present = col[col.notna()]
    return len(present.iloc[0]) if len(present) else 0


def stack_vectors(col: pd.Series, dim: int | None = None) -> np.ndarray:
    """Column of vectors (None for missing) -> (n, dim) float32 with NaN rows."""
    dim = vector_width(col) if dim is None else dim
    valid = col.notna().to_numpy()
    out = np.full((len(col), dim), np.nan, np.float32)
    if valid.any() and dim:
        out[valid] = np.stack(col[valid].to_numpy()).astype(np.float32)  # (n_valid, dim)
    return out


def _block(
    frame: pd.DataFrame, cols: Sequence[str], dims: dict[str, int]
) -> tuple[np.ndarray, list[str]]:
    mats, names = [], []
    for col in cols:
        if col in dims:
            mats.append(stack_vectors(frame[col], dims[col]))
            names += [f"{col}_{j}" for j in range(dims[col])]
            continue
        x = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        if col.startswith(_LOG_PREFIXES):
            x = np.log1p(np.maximum(x, 0.0))
        mats.append(x.astype(np.float32)[:, None])
        names.append(col)
    return (np.hstack(mats) if mats else np.zeros((len(frame), 0), np.float32)), names


def vector_dims(frame: pd.DataFrame, cols: Sequence[str]) -> dict[str, int]:
    """Width of each vector-valued column among cols (scalar columns are left out)."""
    return {col: vector_width(frame[col]) for col in cols if is_vector(col)}


def user_columns(settings: Settings, feature_set: str, frame: pd.DataFrame) -> list[str]:
    """The user feature columns of a training-set frame, in a fixed order."""
    cols = [r.split(":", 1)[1] for r in user_feature_refs(settings, feature_set)]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise KeyError(f"training set lacks {missing}: built with another feature set?")
    return cols


def user_matrix(
    frame: pd.DataFrame, cols: Sequence[str], dims: dict[str, int] | None = None
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """(X_user, feature names, vector widths); pass dims from training when scoring."""
    dims = vector_dims(frame, cols) if dims is None else dims
    x, names = _block(frame, cols, dims)
    return x, names, dims


def item_matrix(
    frame: pd.DataFrame, dims: dict[str, int] | None = None
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """(X_item, names, widths) from the item_vectors collab / content columns."""
    return user_matrix(frame, ITEM_FEATURES, dims)


def raw_matrix(
    settings: Settings, frame: pd.DataFrame, dims: dict[str, int] | None = None
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """encoder_input_v2 exactly as the autoencoder sees it (representation.inputs.to_matrix)."""

    cols = user_columns(settings, "raw", frame)
    dims = vector_dims(frame, cols) if dims is None else dims
    first = settings.horizon_list[0]
    layout = InputLayout(
        tuple(h.name for h in settings.horizon_list),
        dims[C.vector_feature("collab", first)],
        dims[C.vector_feature("content", first)],
    )
    x = to_matrix(pa.Table.from_pandas(frame[cols], preserve_index=False), layout)
    names = [f"{c}_{j}" if c in dims else c for c in cols for j in range(dims.get(c, 1))]
    return x, names, dims


def feature_set_matrix(
    settings: Settings, frame: pd.DataFrame, feature_set: str, dims: dict[str, int] | None = None
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """The user block of a training set for one feature set (z_u, curated or raw)."""
    if feature_set == "raw":
        return raw_matrix(settings, frame, dims)
    return user_matrix(frame, user_columns(settings, feature_set, frame), dims)
