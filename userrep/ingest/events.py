"""Ingest of events: chunked, vectorised validation, quarantine with one reason per row,
idempotent append (event-id sidecars), parts under workspace/data/events. Everything is
written into the ingest's staging (staging.py) and published when the ingest commits
(transaction.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from userrep.columns import (
    EVENT_COLUMNS,
    EVENT_ID,
    EVENT_TYPE,
    ITEM_ID,
    REASON,
    TS,
    USER_ID,
    WEIGHT,
)
from userrep.ingest.common import (
    _CODE,
    _UNIT_NS,
    CSV_BLOCK_BYTES,
    DEFAULT_EVENT_TYPE,
    EVENT_SCHEMA,
    FUTURE_TOLERANCE,
    REASONS,
    ColumnMapping,
    IngestError,
    IngestReport,
    StagedParquet,
    _parse_weight,
    _report,
    hash_rows,
    hex_ids,
    id_keys,
    new_ingest_id,
    parse_ids,
    parse_ts,
    quarantine_table,
)
from userrep.ingest.staging import Stage
from userrep.settings import WorkspacePaths

log = logging.getLogger(__name__)


def _isin_sorted(sorted_keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(q), bool)
    idx = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
    return sorted_keys[idx] == q


def _sidecar(part: Path) -> Path:
    return part.with_suffix(".keys.npy")  # part-X.parquet -> part-X.keys.npy


def existing_keys(paths: WorkspacePaths) -> np.ndarray:
    """Sorted uint64 keys of every ingested event id (sidecars; a part's ids if one is lost)."""
    arrays = []
    for part in sorted(paths.events.glob("part-*.parquet")):
        side = _sidecar(part)
        if side.exists():
            arrays.append(np.load(side))
        else:
            ids = pq.read_table(part, columns=[EVENT_ID]).column(0).combine_chunks()
            arrays.append(id_keys(ids))
    return np.sort(np.concatenate(arrays)) if arrays else np.empty(0, np.uint64)


# ---------------------------------------------------------------- the event pipeline


@dataclass
class _Dedup:
    """Event-id keys already ingested (sorted) and seen earlier in this file (sorted)."""

    existing: np.ndarray
    seen: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))

    def reasons(self, keys: np.ndarray) -> np.ndarray:
        """Codes for rows that passed the other rules: 0, in-file or already-ingested dup."""
        order = np.argsort(keys, kind="stable")  # equal keys stay in row order
        ordered = keys[order]  # sorted queries keep the binary searches cache-friendly
        repeat = np.zeros(len(keys), bool)
        repeat[1:] = ordered[1:] == ordered[:-1]
        codes = np.zeros(len(keys), np.int8)
        codes[order[_isin_sorted(self.existing, ordered)]] = _CODE["duplicate: already ingested"]
        codes[order[repeat | _isin_sorted(self.seen, ordered)]] = _CODE[
            "duplicate event_id in file"
        ]
        self.seen = np.sort(np.concatenate([self.seen, ordered[~repeat]]), kind="stable")
        return codes


def _first_reason(n: int, rules: Iterable[tuple[str, np.ndarray]]) -> np.ndarray:
    reason = np.zeros(n, np.int8)
    for name, mask in rules:
        reason[(reason == 0) & mask] = _CODE[name]
    return reason


def _process_chunk(
    table: pa.Table, m: ColumnMapping, unit: str, cutoff_ns: int, dedup: _Dedup
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Validate one chunk -> (accepted canonical rows, their id keys, per-row reason codes)."""
    col = {k: table.column(v).combine_chunks() for k, v in m.columns().items()}
    n = table.num_rows
    user, u_missing, u_bad = parse_ids(col[USER_ID])
    item, i_missing, i_bad = parse_ids(col[ITEM_ID])
    ts, ts_bad = parse_ts(col[TS], unit)
    weight = _parse_weight(col[WEIGHT]) if WEIGHT in col else np.ones(n)
    with np.errstate(invalid="ignore"):
        reason = _first_reason(
            n,
            [
                ("missing user_id", u_missing),
                ("missing item_id", i_missing),
                ("non-integer user_id", u_bad),
                ("non-integer item_id", i_bad),
                ("unparseable ts", ts_bad),
                ("future ts", ts > cutoff_ns),
                ("negative weight", weight < 0),
                ("NaN weight", ~np.isfinite(weight)),
            ],
        )
    etype = pa.repeat(pa.scalar(DEFAULT_EVENT_TYPE), n)
    if EVENT_TYPE in col:
        etype = pc.fill_null(pc.cast(col[EVENT_TYPE], pa.string()), DEFAULT_EVENT_TYPE)
    ok = reason == 0
    h = hash_rows(user[ok], item[ok], ts[ok], weight[ok], pc.filter(etype, pa.array(ok)))
    ids = hex_ids(h)
    if EVENT_ID in col:
        given = pc.filter(pc.cast(col[EVENT_ID], pa.string()), pa.array(ok))
        ids = pc.if_else(given.is_null(), ids, given)
        h = id_keys(ids)
    dup = dedup.reasons(h)
    reason[np.flatnonzero(ok)[dup > 0]] = dup[dup > 0]
    keep, final = dup == 0, reason == 0
    accepted = pa.Table.from_arrays(
        [
            pc.filter(ids, pa.array(keep)),
            pa.array(user[final]),
            pa.array(item[final]),
            pa.array(ts[final]).cast(pa.timestamp("ns", tz="UTC")),
            pa.array(weight[final]),
            pc.filter(etype, pa.array(final)),
        ],
        schema=EVENT_SCHEMA,
    )
    return accepted, h[keep], reason


def _future_cutoff(now: pd.Timestamp | None) -> pd.Timestamp:
    """Latest accepted ts: now (default: the clock; naive means UTC) plus the tolerance."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    return now + FUTURE_TOLERANCE


def _stage_sidecar(stage: Stage, part: Path, keys: np.ndarray) -> None:
    np.save(stage.path(_sidecar(part)), keys)


def stage_chunks(
    stage: Stage,
    known: np.ndarray,
    paths: WorkspacePaths,
    chunks: Iterator[pa.Table],
    mapping: ColumnMapping,
    source: str,
    ts_unit: str,
    now: pd.Timestamp | None,
) -> tuple[IngestReport, np.ndarray]:
    """Validate chunks into a staged part (+ id sidecar) and quarantine file; `known`: sorted
    keys of the events already ingested or staged. Returns the report (with the paths the
    files get when published) and the accepted rows' keys. Nothing is published here."""
    cutoff_ns = _future_cutoff(now).value
    ingest_id, dedup = new_ingest_id(), _Dedup(known)
    # dictionary-encode only the low-cardinality columns: event ids are random hex
    part = StagedParquet(
        stage, paths.events / f"part-{ingest_id}.parquet", use_dictionary=[EVENT_TYPE]
    )
    quarantine = StagedParquet(
        stage, paths.quarantine / f"{ingest_id}.parquet", use_dictionary=[REASON]
    )
    counts, keys, offset = np.zeros(len(REASONS) + 1, np.int64), [], 0
    try:
        for table in chunks:
            accepted, k, reason = _process_chunk(table, mapping, ts_unit, cutoff_ns, dedup)
            counts += np.bincount(reason, minlength=len(counts))
            if accepted.num_rows:
                part.write(accepted)
                keys.append(k)
            bad = np.flatnonzero(reason)
            if len(bad):
                names = np.asarray(REASONS, dtype=object)[reason[bad] - 1]
                quarantine.write(quarantine_table(table, bad, names, offset))
            offset += table.num_rows
        part_file, quarantine_file = part.close(), quarantine.close()
        new_keys = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        if len(new_keys):
            _stage_sidecar(stage, part.target, new_keys)
    except BaseException as exc:  # the transaction drops the staged files
        part.abort()
        quarantine.abort()
        if isinstance(exc, (pa.ArrowException, OSError, UnicodeDecodeError)):
            raise IngestError(f"cannot read {source}: {str(exc).splitlines()[0]}") from exc
        raise
    report = _report(
        source, counts, ingest_id, part_file=part_file, quarantine_file=quarantine_file
    )
    log.info(
        "ingest %s: read %d, accepted %d, quarantined %d %s",
        source,
        report.read,
        report.accepted,
        report.quarantined,
        report.reasons,
    )
    return report, new_keys


# ---------------------------------------------------------------- readers


def _rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup record batches into tables of exactly `rows` rows (the last one shorter)."""
    buf: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        buf.append(batch)
        size += batch.num_rows
        while size >= rows:
            table = pa.Table.from_batches(buf)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            buf, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(buf)


def _file_kind(source: Path) -> str:
    name = source.name.lower()
    for comp in (".gz", ".bz2", ".zst", ".lz4"):
        name = name.removesuffix(comp)
    kind = Path(name).suffix.lstrip(".")
    if kind not in ("csv", "tsv", "parquet", "pq"):
        raise IngestError(f"unsupported file type {source.name!r}: use .csv, .tsv or .parquet")
    return kind


def open_table_source(source: Path, chunk_rows: int) -> tuple[list[str], Iterator[pa.Table]]:
    """Column names and a lazy stream of chunks; every CSV column is read as text."""
    kind = _file_kind(source)
    try:
        if kind in ("parquet", "pq"):
            pf = pq.ParquetFile(source)
            names = pf.schema_arrow.names
            return names, (pa.Table.from_batches([b]) for b in pf.iter_batches(chunk_rows))
        parse = pacsv.ParseOptions(delimiter="\t" if kind == "tsv" else ",")
        names = pacsv.open_csv(source, parse_options=parse).schema.names
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in names}, strings_can_be_null=True
        )
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=parse,
            convert_options=convert,
        )
        return names, _rechunk(reader, chunk_rows)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"cannot read {source}: {str(exc).splitlines()[0]}") from exc


def check_columns(names: list[str], wanted: dict[str, str], source: str) -> None:
    """IngestError naming the first mapped column that the source lacks."""
    for canonical, col in wanted.items():
        if col not in names:
            raise IngestError(
                f"column {col!r} (for {canonical}) not found in {source}; columns are {names}"
            )


def stage_events(
    stage: Stage,
    known: np.ndarray,
    paths: WorkspacePaths,
    source: Path,
    mapping: ColumnMapping = ColumnMapping(),
    *,
    ts_unit: str | None = None,
    now: pd.Timestamp | None = None,
    chunk_rows: int = 1_000_000,
) -> tuple[IngestReport, np.ndarray]:
    """Validate a CSV/TSV/parquet event file into the stage (see stage_chunks)."""
    unit = ts_unit or "s"
    if unit not in _UNIT_NS:
        raise IngestError(f"unknown ts_unit {unit!r}: use one of {list(_UNIT_NS)}")
    source = Path(source)
    names, chunks = open_table_source(source, chunk_rows)
    check_columns(names, mapping.columns(), str(source))
    return stage_chunks(stage, known, paths, chunks, mapping, str(source), unit, now)


def stage_event_frame(
    stage: Stage,
    known: np.ndarray,
    paths: WorkspacePaths,
    frame: pd.DataFrame,
    source_name: str,
    now: pd.Timestamp | None = None,
    chunk_rows: int = 1_000_000,
) -> tuple[IngestReport, np.ndarray]:
    """A frame that already has canonical columns (built-in loaders, synthetic data)."""
    optional = {c: c for c in (WEIGHT, EVENT_ID, EVENT_TYPE) if c in frame.columns}
    mapping = ColumnMapping(**optional)
    check_columns(list(frame.columns), mapping.columns(), source_name)
    table = frame_to_table(frame)
    chunks = (pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=chunk_rows))
    return stage_chunks(stage, known, paths, chunks, mapping, source_name, "s", now)


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """pandas -> arrow; object columns of mixed types become text instead of failing."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        fixed = frame.copy()
        for c in fixed.select_dtypes(include="object").columns:
            fixed[c] = fixed[c].astype("string")
        return pa.Table.from_pandas(fixed, preserve_index=False)


def read_events(paths: WorkspacePaths, columns: list[str] | None = None) -> pd.DataFrame:
    """All accepted events, parts in ingest order, canonical dtypes."""
    parts = sorted(paths.events.glob("part-*.parquet")) if paths.events.exists() else []
    cols = list(columns) if columns is not None else list(EVENT_COLUMNS)
    tables = [pq.read_table(p, columns=cols) for p in parts]
    empty = pa.schema([EVENT_SCHEMA.field(c) for c in cols]).empty_table()
    return pa.concat_tables(tables or [empty]).to_pandas()


# ---------------------------------------------------------------- users, items, friends
