"""Embedding one user from raw signals (a sign-up, a few plays) with a batch's encoder.

Used by `userrep embed-user` and the near-real-time path. Features are computed with the same
functions as the batch snapshots (features.py), on an in-memory frame instead of the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from representation import features as feat
from representation.artifact import UserEncoder
from representation.encoders import ItemVectors
from representation.inputs import InputLayout, to_matrix
from userrep import columns as C


@dataclass
class UserSignals:
    """What we know about one user: sign-up info, onboarding picks and plays."""

    user_id: int
    signup_ts: pd.Timestamp
    age: float | None = None
    gender: str = ""
    country: str = ""
    onboarding_items: list[int] = field(default_factory=list)
    onboarding_genres: list[str] = field(default_factory=list)
    events: pd.DataFrame | None = None  # item_id, ts, weight

    def users_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                C.USER_ID: [self.user_id],
                C.SIGNUP_TS: [self.signup_ts],
                C.AGE: [np.nan if self.age is None else float(self.age)],
                C.GENDER: [self.gender],
                C.COUNTRY: [self.country],
                C.ONBOARDING_ITEMS: [list(self.onboarding_items)],
                C.ONBOARDING_GENRES: [list(self.onboarding_genres)],
            }
        )


def feature_row(
    signals: UserSignals, vecs: ItemVectors, as_of: pd.Timestamp, horizons: Sequence[C.Horizon]
) -> pa.Table:
    """encoder_input_v2 for one user as of a time, same definitions as the batch snapshots."""
    onb = feat.onboarding_table(signals.users_frame(), vecs, as_of).to_pandas()
    row = pd.DataFrame({C.USER_ID: [signals.user_id]})
    events = signals.events
    if events is not None and len(events):
        con = duckdb.connect()
        con.register("user_events", events.assign(**{C.USER_ID: signals.user_id}))
        pairs = feat.pair_aggregates(con, "user_events", as_of, horizons)
        if len(pairs[C.USER_ID]):
            hist = feat.history_table(pairs, vecs, as_of, horizons).to_pandas()
            row = row.merge(
                hist.drop(columns=[C.EVENT_TIMESTAMP, C.CREATED]), on=C.USER_ID, how="left"
            )
    row = row.merge(onb.drop(columns=[C.EVENT_TIMESTAMP, C.CREATED]), on=C.USER_ID, how="left")
    return pa.Table.from_pandas(row, preserve_index=False)


def embed_signals(
    encoder: UserEncoder,
    layout: InputLayout,
    vecs: ItemVectors,
    signals: UserSignals,
    as_of: pd.Timestamp,
) -> np.ndarray:
    """z_u (latent_dim,) for one user."""
    table = feature_row(signals, vecs, as_of, layout.horizon_list)
    table = _with_missing_columns(table, layout)
    return encoder.embed(to_matrix(table, layout))[0]


def _with_missing_columns(table: pa.Table, layout: InputLayout) -> pa.Table:
    """A user with no plays has no history columns: add them as nulls."""
    for name, _, width in layout.widths():
        if name not in table.column_names:
            typ = pa.list_(pa.float32()) if width > 1 else pa.float64()
            table = table.append_column(name, pa.nulls(table.num_rows, typ))
    return table
