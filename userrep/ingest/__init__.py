"""Ingest: raw event / user / item files -> validated parquet tables under workspace/data.

First stage of the data flow: bad rows go to data/quarantine with a reason, never dropped;
accepted events land as one parquet part per ingest (data/events/part-<ingest_id>.parquet).

One ingest is one transaction (transaction.py): every table it is given is validated and
staged outside the directories readers glob, then all of it is published, or none of it.
Files: parquet, or delimited text (.csv, .tsv, .txt, .dat, also compressed; TextFormat: the
separator, "::" included, and whether there is a header). Epoch-number timestamps are in one
unit (ts_unit, s by default) and checked for it (common.parse_ts_checked), by every reader.
Whole-file problems (bad mapping, unreadable file, a malformed CSV line or invalid UTF-8
anywhere) raise IngestError and publish nothing. Ingests hold the workspace lock
(userrep/lock.py), so two ingests of one file never both accept its events.
"""

from userrep.columns import FRIEND_ID
from userrep.ingest.common import (
    EVENT_SCHEMA,
    REASONS,
    ColumnMapping,
    IngestError,
    IngestReport,
    TextFormat,
    event_ids,
    quarantine_problem,
)
from userrep.ingest.events import read_events, read_user_events
from userrep.ingest.tables import FRIEND_SCHEMA, ITEM_SCHEMA, USER_SCHEMA, read_table
from userrep.ingest.transaction import (
    IngestTransaction,
    ingest_event_frame,
    ingest_events,
    ingest_friends,
    ingest_items,
    ingest_users,
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
    "IngestTransaction",
    "TextFormat",
    "event_ids",
    "ingest_event_frame",
    "ingest_events",
    "ingest_friends",
    "ingest_items",
    "ingest_users",
    "quarantine_problem",
    "read_events",
    "read_table",
    "read_user_events",
]
