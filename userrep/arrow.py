"""Arrow helpers shared by every writer: vector columns and atomic parquet publishing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def list_array(x: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """(n, d) float array -> list<float32> column; rows where valid is False become null."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    offsets = pa.array(
        np.arange(0, (n + 1) * d, d, dtype=np.int32) if d else np.zeros(n + 1, np.int32)
    )
    mask = None if valid is None else pa.array(~np.asarray(valid, bool))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)), mask=mask)


def vectors_from_column(col: pa.ChunkedArray | pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """list<float> column -> ((n, dim) float32 with NaN rows for nulls, valid mask)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    out = np.full((len(arr), dim), np.nan, np.float32)
    if valid.any():
        flat = arr.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
        out[valid] = flat.astype(np.float32).reshape(-1, dim)
    return out, valid


def atomic_write_parquet(table: pa.Table, path: Path, row_group_size: int | None = None) -> None:
    """Write next to the target, then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
