"""Feast data sources: parquet tables in the workspace ($USERREP_WORKSPACE/offline/...).

Each table is a directory of immutable parquet files (one per snapshot / encoder build /
batch) read through a glob, so publishing a new one is an atomic file rename.
"""

from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat

from userrep import columns as C
from userrep.settings import workspace_from_env

_ws = workspace_from_env()


def _parquet_dir(name: str, directory: Path) -> FileSource:
    """A directory of immutable parquet files, stamped with event_timestamp / created."""
    return FileSource(
        name=name,
        path=str(directory / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field=C.EVENT_TIMESTAMP,
        created_timestamp_column=C.CREATED,
    )


# Per-user multi-horizon history aggregates, one file per as-of snapshot.
user_history_source = _parquet_dir("user_history_source", _ws.user_history)

# Onboarding signals (demographics, sign-up picks) as of each snapshot.
user_onboarding_source = _parquet_dir("user_onboarding_source", _ws.user_onboarding)

# Modality-encoder item vectors, one file per encoder version.
item_vectors_source = _parquet_dir("item_vectors_source", _ws.item_vectors)

# z_u, one file per published batch (event_timestamp = the batch's as-of time).
user_embedding_source = _parquet_dir("user_embedding_source", _ws.user_embedding)
