"""One user's z_u from raw signals (a sign-up, a few plays), for `userrep embed-user`: the NRT
service's feature executor (aggregates.feature_matrix) on a state built from the signals, so a
one-off embedding is computed exactly as the stream computes it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nrt.aggregates import FeatureCache, feature_matrix
from nrt.config import NrtConfig
from nrt.publish import OnlineWriter, flush_outbox, nrt_feature_store, publish_rows
from nrt.state import UPSERT_WATERMARK, Profile, SqliteState, UserStates
from representation.artifact import UserEncoder
from representation.encoders import ItemVectors, load_item_vectors
from representation.inputs import InputLayout
from representation.publish import load_encoder, published_times
from userrep import columns as C
from userrep.settings import Settings


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


def unknown_picks(vecs: ItemVectors, signals: UserSignals) -> tuple[list[int], list[str]]:
    """Onboarding item ids and genre words this encoder version does not know: the features
    leave them out (features.onboarding_table), so a caller can say so."""
    items = [int(i) for i in signals.onboarding_items]
    rows = vecs.index(np.asarray(items, np.int64)) if items else np.zeros(0, np.int64)
    unknown_items = [i for i, r in zip(items, rows.tolist(), strict=True) if r < 0]
    unknown_genres = [g for g in signals.onboarding_genres if g not in vecs.genre_content]
    return unknown_items, unknown_genres


class NotNewer(ValueError):
    """A vector older than the one already online for the user: it is not written."""


def publish_signals_vector(
    settings: Settings, batch_id: str, user_id: int, z: np.ndarray, as_of: pd.Timestamp
) -> None:
    """Write one user's z_u online under `batch_id` as of `as_of`, as the NRT engine writes:
    OnlineWriter, the offline outbox (flushed here), inside the user's NRT state transaction,
    which serialises it with the engine's writes. The ordering guard is the engine's: the
    user's watermark (newest event time) never moves back, and a vector as of a time older
    than it, or than the batch's newest published as-of, raises NotNewer: the online store
    keeps the last write, and an older vector must never replace a newer one."""
    cfg = NrtConfig()
    cfg = cfg.model_copy(update={"partition": user_id % cfg.partitions})
    as_of_us = as_of.value // 1000
    newer = [t for t in published_times(settings, batch_id) if t > as_of]
    if newer:
        raise NotNewer(f"batch {batch_id} is published as of {max(newer)}, after {as_of}")
    state = SqliteState(cfg.state_file(settings))
    try:
        with state.transaction():
            marks = state.load([user_id]).as_of_us
            if len(marks) and int(marks[0]) > as_of_us:
                newest = pd.Timestamp(int(marks[0]), unit="us", tz="UTC")
                raise NotNewer(f"user {user_id} has NRT events up to {newest}, after {as_of}")
            now_us = time.time_ns() // 1000
            vec = np.asarray(z, np.float32)[None, :]
            writer = OnlineWriter(nrt_feature_store(settings))
            publish_rows(writer, state, [user_id], [batch_id], vec, [as_of_us], now_us)
            state.conn.execute(UPSERT_WATERMARK, (user_id, as_of_us, 0))
        flush_outbox(state, settings)
    finally:
        state.close()


class UnknownPicks(ValueError):
    """Every onboarding pick given is unknown to the batch's encoder: nothing to embed from."""


@dataclass
class EmbeddedUser:
    """embed_user's answer: the vector, whether it went online, the picks left out."""

    user_id: int
    batch_id: str
    z: np.ndarray  # (latent_dim,) float32
    published: bool
    unknown_items: list[int]
    unknown_genres: list[str]


def embed_user(
    settings: Settings,
    batch_id: str,
    signals: UserSignals,
    as_of: pd.Timestamp,
    publish: bool = False,
) -> EmbeddedUser:
    """`userrep embed-user`: one user's z_u from raw signals with batch_id's encoder, written
    online under the NRT ordering guard when publish (NotNewer when a newer vector is there).
    Unknown onboarding picks are left out and named; UnknownPicks when every pick is unknown."""
    encoder, layout = load_encoder(settings, batch_id)
    vecs = load_item_vectors(settings.paths, encoder.extra.get("encoder_version"))
    unknown_items, unknown_genres = unknown_picks(vecs, signals)
    n_picks = len(signals.onboarding_items) + len(signals.onboarding_genres)
    if n_picks and len(unknown_items) + len(unknown_genres) == n_picks:
        raise UnknownPicks(
            f"none of the onboarding picks is known to batch {batch_id}'s encoder "
            f"(items {unknown_items}, genres {unknown_genres})"
        )
    z = embed_signals(encoder, layout, vecs, signals, as_of)
    if publish:
        publish_signals_vector(settings, batch_id, signals.user_id, z, as_of)
    return EmbeddedUser(signals.user_id, batch_id, z, publish, unknown_items, unknown_genres)
