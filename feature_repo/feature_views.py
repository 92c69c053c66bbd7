"""Feast feature views: the user input features, item vectors and the versioned z_u view."""

from datetime import timedelta

from data_sources import (
    item_vectors_source,
    user_embedding_source,
    user_history_source,
    user_onboarding_source,
)
from entities import batch, item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

from userrep import columns as C
from userrep.settings import horizons_from_env

_horizons = horizons_from_env()


def _history_schema() -> list[Field]:
    fields = []
    for h in _horizons:
        fields += [Field(name=C.vector_feature(m, h), dtype=Array(Float32)) for m in C.MODALITIES]
        fields += [
            Field(name=C.count_feature(h), dtype=Int64),
            Field(name=C.weight_feature(h), dtype=Float32),
        ]
    fields += [
        Field(name=f(m), dtype=Array(Float32))
        for m in C.MODALITIES
        for f in (C.liked_feature, C.disliked_feature)
    ]
    fields += [Field(name=n, dtype=Float32) for n in (C.LEVEL_MEAN, C.LEVEL_STD, C.DISLIKED_SHARE)]
    return fields + [
        Field(name=C.RECENCY_DAYS, dtype=Float32),
        Field(name=C.N_DISTINCT_ITEMS, dtype=Int64),
        Field(name=C.DIVERSITY, dtype=Float32),
    ]


# Weight-averaged item vectors per horizon and modality, the liked and disliked items' mean
# vectors and the feedback level, plus counts, recency and diversity.
# A snapshot older than the ttl is not used (users silent for a year restart from onboarding).
user_history_features = FeatureView(
    name=C.USER_HISTORY_VIEW,
    entities=[user],
    ttl=timedelta(days=365),
    schema=_history_schema(),
    source=user_history_source,
    online=True,
)

# Onboarding signals: encoded demographics, mean vectors of sign-up picks, account age.
user_onboarding_features = FeatureView(
    name=C.USER_ONBOARDING_VIEW,
    entities=[user],
    ttl=timedelta(days=365),
    schema=[
        Field(name=C.DEMO_VEC, dtype=Array(Float32)),
        Field(name=C.ONBOARD_COLLAB, dtype=Array(Float32)),
        Field(name=C.ONBOARD_CONTENT, dtype=Array(Float32)),
        Field(name=C.N_ONBOARDING, dtype=Int64),
        Field(name=C.DAYS_SINCE_SIGNUP, dtype=Float32),
    ],
    source=user_onboarding_source,
    online=True,
)

# Pre-trained modality-encoder vectors for catalog items (versioned by encoder_version).
item_vectors = FeatureView(
    name=C.ITEM_VECTORS_VIEW,
    entities=[item],
    ttl=timedelta(0),  # no expiry: a vector is valid until the next encoder build replaces it
    schema=[
        Field(name="collab", dtype=Array(Float32)),
        Field(name="content", dtype=Array(Float32)),
        Field(name="encoder_version", dtype=String),
    ],
    source=item_vectors_source,
    online=True,
)

# z_u keyed by (user_id, batch_id): batches live side by side and are never mixed.
user_embedding = FeatureView(
    name=C.USER_EMBEDDING_VIEW,
    entities=[user, batch],
    ttl=timedelta(0),  # no expiry: a batch's vector holds until a newer one of the same batch
    schema=[Field(name=C.Z_U, dtype=Array(Float32))],
    source=user_embedding_source,
    online=True,
)
