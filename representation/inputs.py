"""Encoder input assembly: the encoder_input_v2 features of a set of users -> one float matrix.

The column layout (blocks grouped by horizon / stats / onboarding) is what the autoencoder's
block masking works on. Missing values stay NaN; the autoencoder's normaliser handles them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from representation.features import DEMO_DIM, snapshot_name
from representation.model import InputBlock
from userrep import columns as C
from userrep.feast_store import feature_store
from userrep.settings import Settings, WorkspacePaths


@dataclass(frozen=True)
class InputLayout:
    """Which feature fills which columns; saved with each encoder artifact."""

    horizons: tuple[str, ...]
    collab_dim: int
    content_dim: int

    def widths(self) -> list[tuple[str, str, int]]:
        """(feature, group, width) in column order."""
        out = []
        for h in self.horizons:
            out += [
                (f"collab_{h}", h, self.collab_dim),
                (f"content_{h}", h, self.content_dim),
                (f"n_events_{h}", h, 1),
                (f"weight_{h}", h, 1),
            ]
        last = self.horizons[-1]  # the preference blocks summarise all history: masked with it
        for m, dim in zip(C.MODALITIES, (self.collab_dim, self.content_dim), strict=True):
            out += [(C.liked_feature(m), last, dim), (C.disliked_feature(m), last, dim)]
        out += [
            (C.LEVEL_MEAN, last, 1),
            (C.LEVEL_STD, last, 1),
            (C.DISLIKED_SHARE, last, 1),
        ]
        out += [
            (C.RECENCY_DAYS, "stats", 1),
            (C.N_DISTINCT_ITEMS, "stats", 1),
            (C.DIVERSITY, "stats", 1),
        ]
        out += [
            (C.DEMO_VEC, "onboarding", DEMO_DIM),
            (C.ONBOARD_COLLAB, "onboarding", self.collab_dim),
            (C.ONBOARD_CONTENT, "onboarding", self.content_dim),
            (C.N_ONBOARDING, "onboarding", 1),
            (C.DAYS_SINCE_SIGNUP, "onboarding", 1),
        ]
        return out

    def blocks(self) -> list[InputBlock]:
        blocks, start = [], 0
        for name, group, width in self.widths():
            blocks.append(InputBlock(name=name, start=start, stop=start + width, group=group))
            start += width
        return blocks

    @property
    def horizon_list(self) -> tuple[C.Horizon, ...]:
        return tuple(C.horizon_from_name(h) for h in self.horizons)

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _, _ in self.widths()]

    @property
    def dim(self) -> int:
        return sum(w for _, _, w in self.widths())


# Counts and durations are heavy-tailed: log1p before standardisation.
_LOG_FEATURES = (
    "n_events_",
    "weight_",
    C.RECENCY_DAYS,
    C.N_DISTINCT_ITEMS,
    C.N_ONBOARDING,
    C.DAYS_SINCE_SIGNUP,
)
# A user with no history row (new users) gets NaN counts, i.e. "missing", exactly as the
# autoencoder's block masking presents hidden groups in training; a user whose short horizon is
# empty keeps a real 0. Only "no onboarding picks" is a true zero.
_ZERO_IF_MISSING = (C.N_ONBOARDING,)


def to_matrix(table: pa.Table, layout: InputLayout) -> np.ndarray:
    """Feature table (one row per user, columns named as in the layout) -> (n, dim) float32."""
    sources = [_Source.of(table[b.name], b, None) for b in layout.blocks()]
    return _assemble(sources, np.empty((table.num_rows, layout.dim), np.float32), 0)


_GATHER_ROWS = 32_768  # rows per gather step: the temporary stays a few MB at any width


@dataclass(frozen=True)
class _Source:
    """One input block's values and, per output row, the source row to take (to_matrix's rules
    applied as rows are written; the column is converted once, not per part)."""

    block: InputBlock
    values: np.ndarray  # vectors: (m, width) float32; scalars: (m,) float64, NaN = missing
    rows: np.ndarray | None  # (n,) row of `values` per output row, -1 = missing; None: identity

    @classmethod
    def of(cls, col: pa.ChunkedArray, block: InputBlock, rows: np.ndarray | None) -> _Source:
        """rows[i]: the column's row for output row i (-1: none), None when they are the same."""
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if block.width == 1:
            return cls(block, _numeric(arr), rows)
        values, index = _vector_rows(arr, block.width)  # (m, width), column row -> values row
        if index is not None:
            rows = index if rows is None else np.where(rows >= 0, index[np.maximum(rows, 0)], -1)
        return cls(block, values, rows)

    def fill(self, dst: np.ndarray, lo: int) -> None:
        """dst (k, width) <- output rows [lo, lo + k) of this block."""
        rows = None if self.rows is None else self.rows[lo : lo + len(dst)]
        if self.block.width > 1:
            _gather(dst, self.values, rows, lo)
            return
        if rows is None:
            x = self.values[lo : lo + len(dst)]  # (k,) float64
        else:
            x = np.full(len(dst), np.nan)
            if len(self.values):
                ok = rows >= 0
                x[ok] = self.values[rows[ok]]
        name = self.block.name
        if name.startswith(_ZERO_IF_MISSING):
            x = np.nan_to_num(x, nan=0.0)
        if name.startswith(_LOG_FEATURES):
            x = np.log1p(np.maximum(x, 0.0))
        dst[:, 0] = x


def _assemble(sources: list[_Source], out: np.ndarray, lo: int) -> np.ndarray:
    """out (k, dim) <- output rows [lo, lo + k), block by block."""
    for src in sources:
        src.fill(out[:, src.block.start : src.block.stop], lo)
    return out


def _numeric(arr: pa.Array) -> np.ndarray:
    """Column -> float64 as pd.to_numeric(..., errors="coerce") gives it (null -> NaN)."""
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    return np.asarray(pd.to_numeric(arr.to_pandas(), errors="coerce"), np.float64)


def _vector_rows(arr: pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """list<float> column -> ((m, dim) float32 values of its non-null rows, the values row of
    each source row (-1 for null rows); None when no row is null (values row = source row))."""
    if len(arr) == 0:
        return np.empty((0, dim), np.float32), None
    if pa.types.is_null(arr.type):  # a column of type null (e.g. from an all-None frame)
        return np.empty((0, dim), np.float32), np.full(len(arr), -1, np.int64)
    if arr.null_count == 0:
        flat = arr.flatten().to_numpy(zero_copy_only=False)  # a view unless it has nulls
        return flat.astype(np.float32, copy=False).reshape(-1, dim), None
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    if not valid.any():  # also a column of type null, which has no values to flatten
        return np.empty((0, dim), np.float32), np.full(len(arr), -1, np.int64)
    if hasattr(arr, "offsets"):  # list / large_list: view the values when rows are regular
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), np.int64)  # (n + 1,)
        start = offsets[:-1] - offsets[0]  # (n,) first value of each row, sliced values
        on_grid = (offsets[-1] - offsets[0]) % dim == 0 and not (start[valid] % dim).any()
        if on_grid and ((np.diff(offsets) == dim) | ~valid).all():
            flat = arr.values.slice(offsets[0], offsets[-1] - offsets[0])
            values = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            return values.reshape(-1, dim), np.where(valid, start // dim, -1)
    flat = arr.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
    index = np.where(valid, np.cumsum(valid) - 1, -1)
    return flat.astype(np.float32, copy=False).reshape(-1, dim), index


def _gather(dst: np.ndarray, values: np.ndarray, rows: np.ndarray | None, lo: int) -> None:
    """dst[i] = values[rows[i]], NaN where rows[i] < 0; values[lo + i] when rows is None."""
    if rows is None:
        dst[:] = values[lo : lo + len(dst)]
        return
    for start in range(0, len(dst), _GATHER_ROWS):
        part, out = rows[start : start + _GATHER_ROWS], dst[start : start + _GATHER_ROWS]
        if len(values) and part.min(initial=0) >= 0:
            out[:] = values[part]
            continue
        ok = part >= 0
        out[~ok] = np.nan
        if ok.any():
            out[ok] = values[part[ok]]


def layout_for(settings: Settings, collab_dim: int, content_dim: int) -> InputLayout:
    return InputLayout(tuple(h.name for h in settings.horizon_list), collab_dim, content_dim)


@dataclass(frozen=True)
class Snapshot:
    """The encoder_input_v2 features of one snapshot, read straight from the views' source
    files (the fast path for batch embedding; equal to Feast's point-in-time join at as_of)."""

    history: pa.Table  # one row per user with plays <= as_of
    onboarding: pa.Table  # one row per user signed up <= as_of

    @classmethod
    def load(cls, paths: WorkspacePaths, as_of: pd.Timestamp) -> Snapshot:
        onb = pq.read_table(paths.user_onboarding / snapshot_name(as_of))
        hist_path = paths.user_history / snapshot_name(as_of)
        hist = (
            pq.read_table(hist_path) if hist_path.exists() else onb.select([C.USER_ID]).slice(0, 0)
        )
        return cls(hist, onb)

    def user_ids(self) -> np.ndarray:
        ids = (self.history[C.USER_ID].to_numpy(), self.onboarding[C.USER_ID].to_numpy())
        return np.union1d(*ids).astype(np.int64)

    def rows(self, user_ids: np.ndarray) -> pa.Table:
        """Feature rows for these users, in this order; users absent from a view get nulls."""
        ids = np.asarray(user_ids, np.int64)
        columns: dict[str, pa.Array] = {C.USER_ID: pa.array(ids)}
        for table in (self.history, self.onboarding):
            taken = _take_by_id(table, ids)
            columns.update({name: taken[name] for name in taken.column_names})
        return pa.table(columns)

    def matrix(self, user_ids: np.ndarray, layout: InputLayout) -> np.ndarray:
        """to_matrix(self.rows(user_ids), layout), bit for bit, assembled straight from the
        snapshot's arrow buffers into one float32 array (no intermediate table)."""
        sources = self._sources(np.asarray(user_ids, np.int64), layout)
        return _assemble(sources, np.empty((len(user_ids), layout.dim), np.float32), 0)

    def matrix_parts(
        self, user_ids: np.ndarray, layout: InputLayout, part_rows: int = 8192
    ) -> Iterator[np.ndarray]:
        """self.matrix(user_ids, layout) as consecutive row parts written into one reused buffer
        (each part is valid until the next is requested): cache-sized, no fresh pages per part."""
        sources = self._sources(np.asarray(user_ids, np.int64), layout)
        buf = np.empty((min(part_rows, len(user_ids)), layout.dim), np.float32)
        for lo in range(0, len(user_ids), part_rows):
            yield _assemble(sources, buf[: min(part_rows, len(user_ids) - lo)], lo)

    def _sources(self, ids: np.ndarray, layout: InputLayout) -> list[_Source]:
        rows = {name: _positions(t, ids) for name, t in self._tables().items()}
        out = []
        for block in layout.blocks():
            owner = [k for k, t in self._tables().items() if block.name in t.column_names]
            if not owner:
                raise KeyError(f"feature {block.name} is in neither snapshot table")
            col = self._tables()[owner[0]][block.name]
            out.append(_Source.of(col, block, rows[owner[0]]))
        return out

    def _tables(self) -> dict[str, pa.Table]:
        """The snapshot's tables, onboarding first: its columns win on a name clash, as in rows."""
        return {"onboarding": self.onboarding, "history": self.history}


def _positions(table: pa.Table, ids: np.ndarray) -> np.ndarray | None:
    """Row of `table` for each id (-1 where missing), as _take_by_id picks it; None when the
    rows are the ids in order (no gather needed)."""
    keys = table[C.USER_ID].to_numpy()
    if len(keys) == 0:
        return np.full(len(ids), -1, np.int64)
    if len(keys) == len(ids) and np.array_equal(keys, ids):
        return None
    order = np.argsort(keys, kind="stable")
    pos = np.clip(np.searchsorted(keys[order], ids), 0, len(keys) - 1)
    found = keys[order][pos] == ids
    return np.where(found, order[pos], -1)


def _take_by_id(table: pa.Table, ids: np.ndarray) -> pa.Table:
    """Rows of `table` matching ids (null rows where missing), without the key/time columns."""
    keys = table[C.USER_ID].to_numpy()
    payload = table.drop_columns(
        [c for c in (C.USER_ID, C.EVENT_TIMESTAMP, C.CREATED) if c in table.column_names]
    )
    if len(keys) == 0:
        return payload.take(pa.nulls(len(ids), pa.int64()))
    order = np.argsort(keys, kind="stable")
    pos = np.clip(np.searchsorted(keys[order], ids), 0, len(keys) - 1)
    found = keys[order][pos] == ids
    return payload.take(pa.array(order[pos], mask=~found))


def read_snapshot(
    paths: WorkspacePaths, as_of: pd.Timestamp, user_ids: np.ndarray | None = None
) -> pa.Table:
    """Feature rows of a snapshot for these users (default: everyone in it)."""
    snapshot = Snapshot.load(paths, as_of)
    return snapshot.rows(snapshot.user_ids() if user_ids is None else user_ids)


def read_via_feast(settings: Settings, entity_df: pd.DataFrame) -> pa.Table:
    """Point-in-time join of encoder_input_v2 for (user_id, event_timestamp) rows through Feast,
    as Arrow: vector columns stay list arrays (a DataFrame holds one Python object per cell,
    several times the memory at a million users)."""

    store = feature_store(settings)
    service = store.get_feature_service(C.ENCODER_INPUT_SERVICE)
    return store.get_historical_features(entity_df=entity_df, features=service).to_arrow()


def snapshot_times(paths: WorkspacePaths) -> list[pd.Timestamp]:
    """As-of times with an onboarding snapshot (every snapshot has one)."""
    times = [
        pd.Timestamp(p.name[len("asof=") : -len(".parquet")], tz="UTC")
        for p in paths.user_onboarding.glob("asof=*.parquet")
    ]
    return sorted(times)
