"""Encoder input assembly: the encoder_input_v1 features of a set of users -> one float matrix.

The column layout (blocks grouped by horizon / stats / onboarding) is what the autoencoder's
block masking works on. Missing values stay NaN; the autoencoder's normaliser handles them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from representation.features import DEMO_DIM, snapshot_name
from representation.model import InputBlock
from userrep import columns as C
from userrep.arrow import vectors_from_column
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
    cols = []
    for name, _, width in layout.widths():
        if width > 1:
            cols.append(vectors_from_column(table[name], width)[0])
            continue
        x = np.asarray(pd.to_numeric(table[name].to_pandas(), errors="coerce"), np.float64)
        if name.startswith(_ZERO_IF_MISSING):
            x = np.nan_to_num(x, nan=0.0)
        if name.startswith(_LOG_FEATURES):
            x = np.log1p(np.maximum(x, 0.0))
        cols.append(x.astype(np.float32)[:, None])
    return np.hstack(cols) if cols else np.zeros((table.num_rows, 0), np.float32)


def layout_for(settings: Settings, collab_dim: int, content_dim: int) -> InputLayout:
    return InputLayout(tuple(h.name for h in settings.horizon_list), collab_dim, content_dim)


@dataclass(frozen=True)
class Snapshot:
    """The encoder_input_v1 features of one snapshot, read straight from the views' source
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


def read_via_feast(settings: Settings, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of encoder_input_v1 for (user_id, event_timestamp) rows through Feast."""
    from userrep.feast_store import feature_store

    store = feature_store(settings)
    service = store.get_feature_service(C.ENCODER_INPUT_SERVICE)
    return store.get_historical_features(entity_df=entity_df, features=service).to_df()


def snapshot_times(paths: WorkspacePaths) -> list[pd.Timestamp]:
    """As-of times with an onboarding snapshot (every snapshot has one)."""
    times = [
        pd.Timestamp(p.name[len("asof=") : -len(".parquet")], tz="UTC")
        for p in paths.user_onboarding.glob("asof=*.parquet")
    ]
    return sorted(times)
