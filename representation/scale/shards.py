"""One shard of users at a time: the per-shard work of the scale-out engine, with the local code.

Each function reads only its shard (a contiguous user-id range), writes a parquet part and
reports its size and the peak memory of the process that ran it; `concat_parts` publishes the
parts, in user order, as the one file a Feast source reads, by rename. Plain functions (no ray import): Ray runs them as tasks.
"""

from __future__ import annotations

import functools
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from representation import features as feat
from representation.align import load_encoder_dir
from representation.encoders import ItemVectors
from representation.inputs import Snapshot
from representation.publish import embedding_table
from userrep import columns as C
from userrep.feast_store import feature_store
from userrep.settings import Settings, WorkspacePaths

if TYPE_CHECKING:
    from representation.artifact import UserEncoder
    from representation.inputs import InputLayout

ONLINE_WRITE_ROWS = 50_000  # rows per write_to_online_store call


@dataclass(frozen=True)
class PartResult:
    shard: int
    path: Path | None  # None: no users in this shard
    n_users: int
    seconds: float
    peak_rss_mib: float  # of the process that ran the shard (a Ray worker: its peak so far)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_path(out_dir: Path, shard: int) -> Path:
    return out_dir / f"part-{shard:05d}.parquet"


def history_part(
    paths: WorkspacePaths,
    vecs: ItemVectors,
    as_of: pd.Timestamp,
    horizons: Sequence[C.Horizon],
    shard: int,
    user_range: tuple[int, int],
    out_dir: Path,
    memory_limit: str = "1GB",
) -> PartResult:
    """History feature rows of the users with lo <= user_id < hi (sorted by user)."""
    t0 = time.perf_counter()
    con = duckdb.connect(config={"threads": 1})  # one CPU per task: the engine runs the rest
    con.execute(f"SET memory_limit = '{memory_limit}'")
    pairs = feat.pair_aggregates(con, feat.events_source(paths), as_of, horizons, user_range)
    if not len(pairs[C.USER_ID]):
        return PartResult(shard, None, 0, time.perf_counter() - t0, peak_rss_mib())
    table = feat.history_table(pairs, vecs, as_of, horizons)
    path = part_path(out_dir, shard)
    pq.write_table(table, path, use_dictionary=False)  # as write_history_snapshot writes
    return PartResult(shard, path, table.num_rows, time.perf_counter() - t0, peak_rss_mib())


def _batches(path: Path, rows: int) -> Iterator[pa.Table]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        yield pa.Table.from_batches([batch])


def event_user_ranges(paths: WorkspacePaths, n_shards: int) -> list[tuple[int, int]]:
    """n_shards contiguous [lo, hi) user-id ranges covering every user with events (equal
    width between the smallest and largest id; one DuckDB min / max over the events)."""
    con = duckdb.connect(config={"threads": 1})
    sql = f"SELECT MIN(user_id), MAX(user_id) FROM {feat.events_source(paths)}"
    lo, hi = con.execute(sql).fetchone() or (None, None)
    if lo is None or hi is None:  # no events
        return []
    edges = np.linspace(int(lo), int(hi) + 1, n_shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def concat_parts(
    parts: Sequence[Path], target: Path, schema: pa.Schema, use_dictionary: bool = True
) -> int:
    """Parts in order -> one file (one or more row groups per part), published by rename."""
    tmp = target.parent / f".{target.name}.tmp"
    n = 0
    try:
        with pq.ParquetWriter(tmp, schema, use_dictionary=use_dictionary) as writer:
            for p in parts:
                for table in _batches(p, 262_144):
                    writer.write_table(table)
                    n += table.num_rows
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def user_ranges(path: Path, n_shards: int) -> list[tuple[int, int]]:
    """n_shards contiguous [lo, hi) user-id ranges covering a file, from its parquet statistics
    (no data read); equal width, so sizes follow the id distribution."""
    meta = pq.ParquetFile(path).metadata
    col = meta.schema.names.index(C.USER_ID)
    stats = [meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups)]
    lo = min(int(s.min) for s in stats)
    hi = max(int(s.max) for s in stats) + 1
    edges = np.linspace(lo, hi, n_shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def read_user_range(path: Path, lo: int, hi: int, batch_rows: int = 65_536) -> pa.Table:
    """Rows with lo <= user_id < hi, in file order: row groups outside the range are skipped by
    their statistics, the rest streamed in batches, so memory follows the range, not the file."""
    pf = pq.ParquetFile(path, buffer_size=1 << 22, pre_buffer=False)  # pages, not whole chunks
    col = pf.metadata.schema.names.index(C.USER_ID)
    groups = []
    for i in range(pf.num_row_groups):
        stats = pf.metadata.row_group(i).column(col).statistics
        if stats is None or not stats.has_min_max or (stats.min < hi and stats.max >= lo):
            groups.append(i)
    pieces = []
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups):
        ids = np.asarray(batch.column(C.USER_ID).to_numpy())
        keep = (ids >= lo) & (ids < hi)
        if keep.any():
            pieces.append(batch.filter(pa.array(keep)))
    return pa.Table.from_batches(pieces, schema=pf.schema_arrow)


def embed_range(
    paths: WorkspacePaths,
    encoder: UserEncoder | Path,
    layout: InputLayout,
    batch_id: str,
    as_of: pd.Timestamp,
    shard: int,
    user_range: tuple[int, int],
    out_dir: Path,
) -> PartResult:
    """z_u of the snapshot's users with lo <= user_id < hi: only their rows are read. `encoder`
    may be the batch's artifact directory (loaded once per process, as a cluster worker does)."""

    encoder = _load_encoder(encoder) if isinstance(encoder, Path) else encoder
    t0 = time.perf_counter()
    name = feat.snapshot_name(as_of)
    onb = read_user_range(paths.user_onboarding / name, *user_range)
    hist_path = paths.user_history / name
    hist = (
        read_user_range(hist_path, *user_range)
        if hist_path.exists()
        else onb.select([C.USER_ID]).slice(0, 0)
    )
    ids = onb[C.USER_ID].to_numpy()
    if not len(ids):
        return PartResult(shard, None, 0, time.perf_counter() - t0, peak_rss_mib())
    z = np.empty((len(ids), encoder.latent_dim), np.float32)  # (n, latent_dim)
    lo = 0
    for x in Snapshot(hist, onb).matrix_parts(ids, layout):  # (part, input_dim)
        z[lo : lo + len(x)] = encoder.embed(x)
        lo += len(x)
    path = part_path(out_dir, shard)
    pq.write_table(embedding_table(ids, z, batch_id, as_of), path)
    return PartResult(shard, path, len(ids), time.perf_counter() - t0, peak_rss_mib())


@functools.lru_cache(maxsize=2)
def _load_encoder(directory: Path) -> UserEncoder:

    return load_encoder_dir(
        directory
    )  # with the batch's alignment map, as publish.load_encoder loads it


def online_rows(
    settings: Settings, path: Path, row_groups: Sequence[int], shard: int
) -> PartResult:
    """Write these row groups of a published z_u file to the online store."""

    store = feature_store(settings)  # first call in a process imports feast: not timed
    t0 = time.perf_counter()
    pf = pq.ParquetFile(path)
    n = 0
    for rg in row_groups:
        table = pf.read_row_group(rg)
        for lo in range(0, table.num_rows, ONLINE_WRITE_ROWS):
            chunk = table.slice(lo, ONLINE_WRITE_ROWS)
            store.write_to_online_store(C.USER_EMBEDDING_VIEW, chunk.to_pandas())
            n += chunk.num_rows
    return PartResult(shard, path, n, time.perf_counter() - t0, peak_rss_mib())
