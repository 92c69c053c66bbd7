"""Ingest: raw event / user / item files -> validated parquet tables under workspace/data.

First stage of the data flow: bad rows go to data/quarantine with a reason, never dropped;
accepted events land as one parquet part per ingest (data/events/part-<ingest_id>.parquet).

Whole-file problems (bad mapping, unreadable file, a malformed CSV line or invalid UTF-8
anywhere) raise IngestError and leave nothing behind. One writer at a time per workspace:
two concurrent ingests could both accept the same new event.
"""

from userrep.columns import FRIEND_ID
from userrep.ingest.common import (
    EVENT_SCHEMA,
    REASONS,
    ColumnMapping,
    IngestError,
    IngestReport,
    event_ids,
)
from userrep.ingest.events import ingest_event_frame, ingest_events, read_events
from userrep.ingest.tables import (
    FRIEND_SCHEMA,
    ITEM_SCHEMA,
    USER_SCHEMA,
    ingest_friends,
    ingest_items,
    ingest_users,
    read_table,
)

__all__ = [
    "EVENT_SCHEMA",
    "FRIEND_ID",
    "FRIEND_SCHEMA",
    "ITEM_SCHEMA",
    "REASONS",
    "USER_SCHEMA",
    "ColumnMapping",
    "IngestError",
    "IngestReport",
    "event_ids",
    "ingest_event_frame",
    "ingest_events",
    "ingest_friends",
    "ingest_items",
    "ingest_users",
    "read_events",
    "read_table",
]
