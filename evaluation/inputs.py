"""The autoencoder's input for the protocol's users, built in-process by the platform's own
feature code (features.pair_aggregates / history_table / onboarding_table, inputs.to_matrix).

The protocol cuts each user's history at a different time, so each user's features are taken
as of that user's last history event. One SQL pass does this: every user's events (and sign-up
time) are shifted so that the last history event lands on one common time T0, and the
features are computed as of T0. Horizons, counts and durations are all relative, so a shifted
user gets exactly the features they would get as of their own cut, and no event after the cut
(the future part) is ever read.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from representation.encoders import ItemVectors
from representation.features import history_table, onboarding_table, pair_aggregates
from representation.inputs import InputLayout, to_matrix
from userrep import columns as C

T0 = pd.Timestamp("2030-01-01", tz="UTC")  # common as-of time after the shift


def shift_to_cut(events: pd.DataFrame, users: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and users with each user's times moved so their last event is at T0."""
    last = events.groupby(C.USER_ID)[C.TS].max()
    delta = T0 - last  # (users,) Timedelta per user
    ev = events.assign(**{C.TS: events[C.TS] + events[C.USER_ID].map(delta).to_numpy()})
    us = users[users[C.USER_ID].isin(last.index)].copy()
    signup = pd.to_datetime(us[C.SIGNUP_TS], utc=True) + us[C.USER_ID].map(delta).to_numpy()
    us[C.SIGNUP_TS] = signup.where(signup <= T0, T0)  # sign-up never after the cut
    return ev, us


def feature_table(
    events: pd.DataFrame,
    users: pd.DataFrame,
    vecs: ItemVectors,
    horizons: Sequence[C.Horizon],
    user_ids: np.ndarray,
) -> pa.Table:
    """encoder_input_v2 columns, one row per user_ids entry, each as of its last event."""
    ev, us = shift_to_cut(events[events[C.USER_ID].isin(user_ids)], users)
    con = duckdb.connect()
    con.register("history_events", ev[[C.USER_ID, C.ITEM_ID, C.TS, C.WEIGHT]])
    pairs = pair_aggregates(con, "history_events", T0, horizons)
    drop = [C.EVENT_TIMESTAMP, C.CREATED]
    hist = history_table(pairs, vecs, T0, horizons).to_pandas().drop(columns=drop)
    onb = onboarding_table(us, vecs, T0).to_pandas().drop(columns=drop)
    frame = pd.DataFrame({C.USER_ID: np.asarray(user_ids, np.int64)})
    frame = frame.merge(hist, on=C.USER_ID, how="left").merge(onb, on=C.USER_ID, how="left")
    return pa.Table.from_pandas(frame, preserve_index=False)


def input_matrix(
    events: pd.DataFrame,
    users: pd.DataFrame,
    vecs: ItemVectors,
    layout: InputLayout,
    user_ids: np.ndarray,
) -> np.ndarray:
    """(len(user_ids), layout.dim) float32, NaN = missing, exactly as the autoencoder reads."""
    return to_matrix(feature_table(events, users, vecs, layout.horizon_list, user_ids), layout)
