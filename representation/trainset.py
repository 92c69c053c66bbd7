"""The training data of one feature snapshot, by reference: the user ids, and any user-id range's
encoder inputs and item targets read straight from the snapshot files. `pipeline.train_batch`
hands it to the engine; a Ray Train worker reads only its own range (scale/ray_train.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from representation.features import events_source, snapshot_name
from representation.inputs import InputLayout, Snapshot, read_via_feast, to_matrix
from representation.publish import require_snapshot
from representation.scale.shards import read_user_range
from representation.targets import (
    item_targets,
    item_vocabulary,
    range_item_targets,
    tag_matrix,
    tag_vocabulary,
)
from representation.train import TrainConfig
from userrep import columns as C
from userrep.feast_store import store
from userrep.settings import Settings, WorkspacePaths

_READ_ROWS = 65_536  # rows per streamed batch when picking users out of a snapshot file
DUCKDB_MEMORY = "1GB"  # per item-pair query (as shards.history_part): DuckDB spills past it


@dataclass(frozen=True)
class TrainingSet:
    """Every user of the snapshot at as_of (its onboarding file), sorted by user id: row i of
    the training matrix is the i-th user. Holds no user data, so it travels to workers cheaply.
    The inputs read here equal training_matrix's Feast join bit for bit (as the batch
    embedding's reads do); item targets equal training_item_targets's rows."""

    paths: WorkspacePaths
    as_of: pd.Timestamp
    layout: InputLayout
    item_vocab: int  # the item decoder's vocabulary size (TrainConfig.item_vocab); 0 = no items

    @property
    def onboarding_file(self) -> Path:
        return self.paths.user_onboarding / snapshot_name(self.as_of)

    def user_ids(self) -> np.ndarray:
        """(n,) int64 sorted user ids: one column of the onboarding file, nothing else."""
        ids = pq.read_table(self.onboarding_file, columns=[C.USER_ID])[C.USER_ID]
        return np.sort(ids.to_numpy()).astype(np.int64)

    def read_range(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, x) of the users with lo <= user_id < hi: (k,) sorted ids, (k, dim) float32;
        only that range's rows of the snapshot are read (shards.read_user_range)."""

        onb = read_user_range(self.onboarding_file, lo, hi)
        hist = self._history(lambda path: read_user_range(path, lo, hi), onb)
        ids = np.sort(onb[C.USER_ID].to_numpy()).astype(np.int64)
        return ids, Snapshot(hist, onb).matrix(ids, self.layout)

    def inputs(self, user_ids: np.ndarray) -> np.ndarray:
        """(k, dim) float32 inputs of these users (any order), the files streamed and only
        their rows kept: memory follows k, not the snapshot."""
        ids = np.asarray(user_ids, np.int64)
        onb = _read_users(self.onboarding_file, ids)
        hist = self._history(lambda path: _read_users(path, ids), onb)
        return Snapshot(hist, onb).matrix(ids, self.layout)

    def _history(self, read, onb: pa.Table) -> pa.Table:
        path = self.paths.user_history / snapshot_name(self.as_of)
        return read(path) if path.exists() else onb.select([C.USER_ID]).slice(0, 0)

    def has_items(self) -> bool:
        return self.item_vocab > 0 and any(self.paths.events.glob("*.parquet"))

    def item_vocabulary(self) -> np.ndarray | None:
        """The item decoder's columns (sorted item ids) over all users, from one DuckDB
        aggregate; None when the item term is off (as training_item_targets)."""
        if not self.has_items():
            return None
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")  # the distinct pairs spill past it
        users = f"read_parquet('{self.onboarding_file}')"
        return item_vocabulary(con, events_source(self.paths), self.as_of, users, self.item_vocab)

    def item_targets(
        self, user_ids: np.ndarray, user_range: tuple[int, int], vocab: np.ndarray
    ) -> sp.csr_matrix:
        """(k, vocab) targets of the users of one range (user_ids: its rows, in order)."""
        con = duckdb.connect(config={"threads": 1})  # one CPU per worker
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        source = events_source(self.paths)
        return range_item_targets(con, source, self.as_of, user_ids, user_range, vocab).matrix

    def has_tags(self) -> bool:
        return any(self.paths.events.glob("*.parquet")) and self.paths.items.exists()

    def tag_vocabulary(self, cfg) -> np.ndarray | None:
        """The tag decoder's columns (sorted tag texts) over all users, from one DuckDB
        aggregate; None when the tag term is off (cfg.tag_weight 0) or nothing is tagged."""
        if cfg.tag_weight <= 0 or cfg.tag_vocab <= 0 or not self.has_tags():
            return None
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        users = f"read_parquet('{self.onboarding_file}')"
        source, items = events_source(self.paths), str(self.paths.items)
        tags = tag_vocabulary(con, source, items, self.as_of, users, cfg.tag_vocab)
        return tags if len(tags) else None

    def training_tags(self, user_ids: np.ndarray, cfg) -> sp.csr_matrix | None:
        """The tag decoder's targets of the whole training matrix (rows: user_ids, the
        snapshot's users) over tag_vocabulary; None when the tag term is off or nothing is
        tagged. Two event scans (vocabulary, then integer shares): the same two reads the Ray
        path splits between driver and workers, and no tag text per user in memory."""
        vocab = self.tag_vocabulary(cfg)
        return None if vocab is None else self.tag_targets(user_ids, vocab, None)

    def tag_targets(
        self, user_ids: np.ndarray, vocab: np.ndarray, user_range: tuple[int, int] | None
    ) -> sp.csr_matrix:
        """(k, tags) tag shares of user_ids (rows in their order) over a vocabulary of tag
        texts; user_range: read only that range's pairs (a Ray Train worker's)."""
        con = duckdb.connect(config={"threads": 1} if user_range else {})
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        source, items = events_source(self.paths), str(self.paths.items)
        return tag_matrix(con, source, items, self.as_of, user_ids, vocab, user_range)


class SnapshotInputs:
    """The training matrix x without holding it: x[rows] reads only those users' rows from the
    snapshot (what alignment needs: its anchor users, at most align.MAX_FIT_USERS)."""

    def __init__(self, data: TrainingSet, users: np.ndarray):
        self.data, self.users = data, users

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.data.inputs(self.users[np.asarray(rows)])  # (len(rows), dim)


def _read_users(path: Path, ids: np.ndarray) -> pa.Table:
    """The rows of a snapshot file whose user is in ids, streamed batch by batch."""
    pf = pq.ParquetFile(path, buffer_size=1 << 22, pre_buffer=False)
    wanted = np.unique(ids)
    pieces = []
    for batch in pf.iter_batches(batch_size=_READ_ROWS):
        keep = np.isin(np.asarray(batch.column(C.USER_ID).to_numpy()), wanted)
        if keep.any():
            pieces.append(batch.filter(pa.array(keep)))
    return pa.Table.from_batches(pieces, schema=pf.schema_arrow)


def training_matrix(
    settings: Settings, as_of: pd.Timestamp, layout: InputLayout, chunk: int = 200_000
) -> tuple[np.ndarray, np.ndarray]:
    """encoder_input_v2 for every user known at as_of (sorted by id), through Feast's
    point-in-time join, `chunk` users per join."""

    require_snapshot(settings, as_of)
    store(settings)  # applied once: the views and encoder_input_v2 exist for this workspace
    users = pd.read_parquet(
        settings.paths.user_onboarding / snapshot_name(as_of), columns=[C.USER_ID]
    )
    user_ids = np.sort(users[C.USER_ID].to_numpy(np.int64))
    x = np.empty((len(user_ids), layout.dim), np.float32)
    for lo in range(0, len(user_ids), chunk):  # the join's own temporaries stay one chunk big
        part = pd.DataFrame({C.USER_ID: user_ids[lo : lo + chunk], C.EVENT_TIMESTAMP: as_of})
        table = read_via_feast(settings, part).sort_by(C.USER_ID)
        if not np.array_equal(table[C.USER_ID].to_numpy(), part[C.USER_ID].to_numpy()):
            raise RuntimeError(f"the Feast join at {as_of} did not return one row per user")
        x[lo : lo + len(part)] = to_matrix(table, layout)
    return user_ids, x


def training_item_targets(
    settings: Settings, as_of: pd.Timestamp, users: np.ndarray, train_cfg: TrainConfig
) -> sp.csr_matrix | None:
    """The item decoder's targets for the training users (events <= as_of), or None when
    the item term is off (train_cfg.item_weight == 0)."""
    if train_cfg.item_weight <= 0 or not any(settings.paths.events.glob("*.parquet")):
        return None
    con = duckdb.connect()
    source = events_source(settings.paths)
    return item_targets(con, source, as_of, users, train_cfg.item_vocab).matrix
