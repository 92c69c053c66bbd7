"""One user's z_u from raw signals (a sign-up, a few plays), for `userrep embed-user`: the NRT
service's feature executor (aggregates.feature_matrix) on a state built from the signals, so a
one-off embedding is computed exactly as the stream computes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nrt.aggregates import FeatureCache, feature_matrix
from nrt.state import Profile, UserStates
from representation.artifact import UserEncoder
from representation.encoders import ItemVectors
from representation.inputs import InputLayout
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
    events: pd.DataFrame | None = None  # item_id, ts (UTC), weight (default 1)

    def states(self, as_of: pd.Timestamp) -> UserStates:
        """The user's state as of a time: plays after it are left out."""
        ev = self.events if self.events is not None else pd.DataFrame(columns=[C.ITEM_ID, C.TS])
        ts_us = pd.to_datetime(ev[C.TS], utc=True).astype("int64").to_numpy() // 1000
        keep = ts_us <= as_of.value // 1000
        weight = ev[C.WEIGHT].to_numpy(np.float64) if C.WEIGHT in ev else np.ones(len(ev))
        profile = Profile(
            self.signup_ts.value // 1000,
            self.age,
            self.gender,
            self.country,
            json.dumps([int(i) for i in self.onboarding_items]),
            json.dumps([str(g) for g in self.onboarding_genres]),
        )
        return UserStates(
            user_ids=np.array([self.user_id], np.int64),
            as_of_us=np.array([as_of.value // 1000], np.int64),
            play_user=np.full(int(keep.sum()), self.user_id, np.int64),
            play_item=ev[C.ITEM_ID].to_numpy(np.int64)[keep],
            play_ts_us=ts_us[keep].astype(np.int64),
            play_weight=weight[keep],
            profiles={self.user_id: profile},
        )


def embed_signals(
    encoder: UserEncoder,
    layout: InputLayout,
    vecs: ItemVectors,
    signals: UserSignals,
    as_of: pd.Timestamp,
) -> np.ndarray:
    """z_u (latent_dim,) for one user as of a time."""
    x = feature_matrix(signals.states(as_of), vecs, layout, FeatureCache(max_entries=1))
    return encoder.embed(x)[0]
