"""Feast entities: who or what a feature describes (imported first by `feast apply`)."""

from feast import Entity, ValueType

from userrep import columns as C

# A listener; every user feature and z_u is keyed by it.
user = Entity(
    name=C.USER_ENTITY,
    join_keys=[C.USER_ID],
    value_type=ValueType.INT64,
    description="A listener (int64 user id).",
)

# A catalog item (track / artist / movie); modality-encoder vectors are keyed by it.
item = Entity(
    name=C.ITEM_ENTITY,
    join_keys=[C.ITEM_ID],
    value_type=ValueType.INT64,
    description="A catalog item (int64 item id).",
)

# A representation batch: one trained autoencoder's vector space. Part of z_u's key so that
# two batches can never be mixed: a consumer always names the batch it was trained on.
batch = Entity(
    name=C.BATCH_ENTITY,
    join_keys=[C.BATCH_ID],
    value_type=ValueType.STRING,
    description="A z_u batch id (one autoencoder training).",
)
