"""Column names, horizons and Feast feature references: the one place they are spelled out.

Every table the platform writes uses these names; Feast views in feature_repo/ use them too.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- canonical event table (what `userrep ingest` writes) ---
EVENT_ID = "event_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
TS = "ts"
WEIGHT = "weight"
EVENT_TYPE = "event_type"
EVENT_COLUMNS = (EVENT_ID, USER_ID, ITEM_ID, TS, WEIGHT, EVENT_TYPE)
REQUIRED_EVENT_COLUMNS = (USER_ID, ITEM_ID, TS)

# --- user table (onboarding signals) ---
SIGNUP_TS = "signup_ts"
AGE = "age"
GENDER = "gender"
COUNTRY = "country"
ONBOARDING_ITEMS = "onboarding_items"
ONBOARDING_GENRES = "onboarding_genres"
USER_COLUMNS = (USER_ID, SIGNUP_TS, AGE, GENDER, COUNTRY, ONBOARDING_ITEMS, ONBOARDING_GENRES)

# --- item table (catalog metadata) ---
TITLE = "title"
ARTIST_ID = "artist_id"
ARTIST = "artist"
GENRES = "genres"  # "|"-separated genre / tag text
ITEM_COLUMNS = (ITEM_ID, TITLE, ARTIST_ID, ARTIST, GENRES)

# --- friends graph (Last.fm): (user_id, friend_id) ---
FRIEND_ID = "friend_id"

# --- planted ground truth (synthetic only) ---
CLUSTER = "cluster"

# --- quarantine ---
REASON = "reason"
SOURCE_ROW = "source_row"

# --- Feast ---
EVENT_TIMESTAMP = "event_timestamp"  # snapshot / as-of time in every Feast source
CREATED = "created"
BATCH_ID = "batch_id"
Z_U = "z_u"
AS_OF = "as_of"

MODALITIES = ("collab", "content")


@dataclass(frozen=True)
class Horizon:
    """A look-back window ending at the snapshot time; days=None means all history."""

    name: str
    days: int | None


DEFAULT_HORIZONS = (
    Horizon("7d", 7),
    Horizon("30d", 30),
    Horizon("180d", 180),
    Horizon("all", None),
)


def parse_horizons(spec: str) -> tuple[Horizon, ...]:
    """Parse "7,30,180,all" into horizons."""
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        out.append(Horizon("all", None) if part == "all" else Horizon(f"{int(part)}d", int(part)))
    if not out:
        raise ValueError(f"no horizons in {spec!r}")
    return tuple(out)


def vector_feature(modality: str, horizon: Horizon) -> str:
    return f"{modality}_{horizon.name}"


def count_feature(horizon: Horizon) -> str:
    return f"n_events_{horizon.name}"


def weight_feature(horizon: Horizon) -> str:
    return f"weight_{horizon.name}"


def liked_feature(modality: str) -> str:
    """Mean item vector of the items a user liked: at or above their own mean weight."""
    return f"{modality}_liked"


def disliked_feature(modality: str) -> str:
    """Mean item vector of the items a user disliked: below their own mean weight."""
    return f"{modality}_disliked"


# the level of a user's feedback: mean and spread of ln(1 + weight) over their events, and the
# share of their items below their own mean (explicit ratings: dislikes; plays: the tail)
LEVEL_MEAN = "level_mean"
LEVEL_STD = "level_std"
DISLIKED_SHARE = "disliked_share"
# scalar history features beside the per-horizon ones
RECENCY_DAYS = "recency_days"
N_DISTINCT_ITEMS = "n_distinct_items"
DIVERSITY = "diversity"  # normalised entropy of the user's item weights, in [0, 1]

# onboarding view
DEMO_VEC = "demo_vec"
ONBOARD_COLLAB = "onboard_collab"
ONBOARD_CONTENT = "onboard_content"
DAYS_SINCE_SIGNUP = "days_since_signup"
N_ONBOARDING = "n_onboarding"

# Feast object names (variable name == object name in feature_repo/)
USER_ENTITY = "user"
ITEM_ENTITY = "item"
BATCH_ENTITY = "batch"
USER_HISTORY_VIEW = "user_history_features"
USER_ONBOARDING_VIEW = "user_onboarding_features"
ITEM_VECTORS_VIEW = "item_vectors"
USER_EMBEDDING_VIEW = "user_embedding"
ENCODER_INPUT_SERVICE = "encoder_input_v2"


def horizon_from_name(name: str) -> Horizon:
    """Inverse of Horizon.name: "30d" -> Horizon("30d", 30), "all" -> Horizon("all", None)."""
    return Horizon("all", None) if name == "all" else Horizon(name, int(name.rstrip("d")))
