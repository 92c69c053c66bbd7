"""Ingest of events: chunked, vectorised validation, quarantine with one reason per row,
idempotent append (event-id sidecars), parts under workspace/data/events. Everything is
written into the ingest's staging (staging.py) and published when the ingest commits
(transaction.py)."""

from __future__ import annotations

import io
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
    CSV_BLOCK_BYTES,
    DEFAULT_EVENT_TYPE,
    EVENT_SCHEMA,
    FUTURE_TOLERANCE,
    MALFORMED,
    UNIT_SEP,
    ColumnMapping,
    IngestError,
    IngestReport,
    StagedParquet,
    TextFormat,
    _parse_weight,
    _report,
    check_unit,
    file_kind,
    hash_rows,
    hex_ids,
    id_keys,
    new_ingest_id,
    parse_ids,
    parse_ts_checked,
    quarantine_table,
    reasons_for,
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


def _first_reason(
    n: int, rules: Iterable[tuple[str, np.ndarray]], names: tuple[str, ...]
) -> np.ndarray:
    codes = {name: i + 1 for i, name in enumerate(names)}
    reason = np.zeros(n, np.int8)
    for name, mask in rules:
        reason[(reason == 0) & mask] = codes[name]
    return reason


def _process_chunk(
    table: pa.Table, m: ColumnMapping, unit: str, cutoff_ns: int, dedup: _Dedup
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Validate one chunk -> (accepted canonical rows, their id keys, per-row reason codes)."""
    col = {k: table.column(v).combine_chunks() for k, v in m.columns().items()}
    n = table.num_rows
    user, u_missing, u_bad = parse_ids(col[USER_ID])
    item, i_missing, i_bad = parse_ids(col[ITEM_ID])
    ts, ts_bad, unit_rules = parse_ts_checked(col[TS], unit, cutoff_ns)
    weight = _parse_weight(col[WEIGHT]) if WEIGHT in col else np.ones(n)
    with np.errstate(invalid="ignore"):
        reason = _first_reason(
            n,
            [
                ("missing user_id", u_missing),
                ("missing item_id", i_missing),
                ("non-integer user_id", u_bad),
                ("non-integer item_id", i_bad),
                *unit_rules,
                ("unparseable ts", ts_bad),
                ("future ts", ts > cutoff_ns),
                ("negative weight", weight < 0),
                ("NaN weight", ~np.isfinite(weight)),
            ],
            reasons_for(unit),
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
    malformed: MalformedLines | None = None,
) -> tuple[IngestReport, np.ndarray]:
    """Validate chunks into a staged part (+ id sidecar) and quarantine file; `known`: sorted
    keys of the events already ingested or staged; `malformed`: the lines the text reader
    skipped, quarantined as they turn up. Returns the report (with the paths the files get when
    published) and the accepted rows' keys. Nothing is published here."""
    cutoff_ns = _future_cutoff(now).value
    ingest_id, dedup = new_ingest_id(), _Dedup(known)
    # dictionary-encode only the low-cardinality columns: event ids are random hex
    part = StagedParquet(
        stage, paths.events / f"part-{ingest_id}.parquet", use_dictionary=[EVENT_TYPE]
    )
    quarantine = StagedParquet(
        stage, paths.quarantine / f"{ingest_id}.parquet", use_dictionary=[REASON]
    )
    names = reasons_for(ts_unit)
    counts, keys, offset = np.zeros(len(names) + 1, np.int64), [], 0

    def quarantine_malformed() -> None:
        lines = malformed.take() if malformed is not None else None
        if lines is not None and lines.num_rows:
            counts[_CODE[MALFORMED]] += lines.num_rows
            rows, unplaced = np.arange(lines.num_rows), np.ones(lines.num_rows, bool)
            why = np.full(lines.num_rows, MALFORMED, object)
            quarantine.write(quarantine_table(lines, rows, why, 0, unplaced))

    try:
        for table in chunks:
            quarantine_malformed()
            accepted, k, reason = _process_chunk(table, mapping, ts_unit, cutoff_ns, dedup)
            counts += np.bincount(reason, minlength=len(counts))
            if accepted.num_rows:
                part.write(accepted)
                keys.append(k)
            bad = np.flatnonzero(reason)
            if len(bad):
                why = np.asarray(names, dtype=object)[reason[bad] - 1]
                quarantine.write(quarantine_table(table, bad, why, offset))
            offset += table.num_rows
        quarantine_malformed()
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
        source, counts, ingest_id, names, part_file=part_file, quarantine_file=quarantine_file
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


class _JoinedSeparator(io.RawIOBase):
    """A byte stream with each separator of several characters (MovieLens' "::") replaced by
    UNIT_SEP, left to right as str.replace does, across read boundaries: pyarrow's CSV
    parser, which keeps ingest chunked and fast, takes a one-character delimiter only."""

    def __init__(self, raw: pa.NativeFile, sep: str):
        super().__init__()
        self.raw, self.sep, self.tail = raw, sep.encode(), b""
        self.prefixes = [self.sep[:k] for k in range(len(self.sep) - 1, 0, -1)]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        while True:
            chunk = self.raw.read(size if size and size > 0 else CSV_BLOCK_BYTES)
            if UNIT_SEP.encode() in chunk:
                raise OSError(f"the text holds byte 0x1f, which separator {self.sep!r} needs")
            out = (self.tail + chunk).replace(self.sep, UNIT_SEP.encode())
            if not chunk:  # end of the file
                self.tail = b""
                return out
            keep = next((len(p) for p in self.prefixes if out.endswith(p)), 0)
            out, self.tail = out[: len(out) - keep], out[len(out) - keep :]
            if out:
                return out

    def close(self) -> None:
        self.raw.close()
        super().close()


class MalformedLines:
    """pyarrow's invalid_row_handler for a delimited file: a line whose number of fields is not
    the header's is skipped by the reader and kept here, so that the ingest quarantines it
    ("wrong number of fields") instead of failing the whole file."""

    def __init__(self, sep: str, names: list[str]):
        self.sep, self.names = sep, names
        self.lines: list[str] = []

    def __call__(self, row: pacsv.InvalidRow) -> str:
        self.lines.append(row.text.replace(UNIT_SEP, self.sep))
        return "skip"

    def take(self) -> pa.Table:
        """The lines kept since the last take, as text rows of the file's columns: fields in
        order, missing ones null, any extra fields left in the last column with separators."""
        lines, names, self.lines = self.lines, self.names, []
        fields = [line.split(self.sep, len(names) - 1) for line in lines]
        return pa.table(
            {
                name: pa.array([f[i] if i < len(f) else None for f in fields], pa.string())
                for i, name in enumerate(names)
            }
        )


def _text_reader(
    source: Path,
    sep: str,
    block: int,
    names: list[str] | None = None,
    header: bool = True,
    encoding: str = "utf-8",
    malformed: MalformedLines | None = None,
) -> pacsv.CSVStreamingReader:
    """pyarrow's streaming CSV reader of a delimited file; given names, every column is text
    (a header line is skipped); without them, the header or "f0", "f1", ... name them. Lines
    of the wrong field count go to `malformed` (without it, they fail the read)."""
    joined = len(sep) > 1
    parse = pacsv.ParseOptions(
        delimiter=UNIT_SEP if joined else sep,
        quote_char=False if joined else '"',
        invalid_row_handler=malformed,
    )
    read = pacsv.ReadOptions(block_size=block, encoding=encoding)
    convert = pacsv.ConvertOptions()
    if names is not None:
        read.column_names, read.skip_rows = names, int(header)
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in names}, strings_can_be_null=True
        )
    else:
        read.autogenerate_column_names = not header
    stream = pa.input_stream(str(source), compression="detect")
    data = _JoinedSeparator(stream, sep) if joined else stream
    return pacsv.open_csv(data, read_options=read, parse_options=parse, convert_options=convert)


def open_table_source(
    source: Path,
    chunk_rows: int,
    fmt: TextFormat = TextFormat(),
    keep_malformed: bool = False,
) -> tuple[list[str], Iterator[pa.Table], MalformedLines | None]:
    """Column names, a lazy stream of chunks, and a text file's malformed lines as they are
    read (keep_malformed; None for parquet, or when such a line should fail the read).
    Every text column is read as text. A text file without a header (fmt, or .dat) names its
    columns "1", "2", ... by position."""
    kind = file_kind(source)
    try:
        if kind in ("parquet", "pq"):
            pf = pq.ParquetFile(source)
            names = pf.schema_arrow.names
            return names, (pa.Table.from_batches([b]) for b in pf.iter_batches(chunk_rows)), None
        sep, header = fmt.resolve(source)
        first = _text_reader(  # reads the names; malformed lines are the second reader's
            source,
            sep,
            1 << 20,
            header=header,
            encoding=fmt.encoding,
            malformed=MalformedLines(sep, []) if keep_malformed else None,
        )
        names = first.schema.names
        first.close()
        if not header:
            names = [str(i + 1) for i in range(len(names))]
        bad = MalformedLines(sep, names) if keep_malformed else None
        reader = _text_reader(source, sep, CSV_BLOCK_BYTES, names, header, fmt.encoding, bad)
        return names, _rechunk(reader, chunk_rows), bad
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"cannot read {source}: {str(exc).splitlines()[0]}") from exc


def check_columns(names: list[str], wanted: dict[str, str], source: str) -> None:
    """IngestError naming the first mapped column that the source lacks."""
    for canonical, col in wanted.items():
        if col not in names:
            hint = ""
            if names and all(n.isdigit() for n in names):
                hint = f" (no header: map by position, e.g. {canonical}=1)"
            raise IngestError(
                f"column {col!r} (for {canonical}) not found in {source}; columns are {names}{hint}"
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
    fmt: TextFormat = TextFormat(),
) -> tuple[IngestReport, np.ndarray]:
    """Validate an event file (parquet or delimited text, see TextFormat) into the stage
    (see stage_chunks)."""
    unit = check_unit(ts_unit or "s")
    source = Path(source)
    names, chunks, malformed = open_table_source(source, chunk_rows, fmt, keep_malformed=True)
    check_columns(names, mapping.columns(), str(source))
    return stage_chunks(stage, known, paths, chunks, mapping, str(source), unit, now, malformed)


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


def read_user_events(
    source: Path,
    *,
    ts_unit: str | None = None,
    fmt: TextFormat = TextFormat(),
    now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """A small file of one user's plays (item_id, ts, optional weight), read with ingest's
    readers and rules (epoch numbers in ts_unit, s by default, checked for the unit) ->
    item_id (int64), ts (UTC), weight (float64). Nothing is quarantined here: the first bad
    row is an IngestError naming the row and its reason."""
    unit = check_unit(ts_unit or "s")
    source = Path(source)
    names, chunks, _ = open_table_source(source, 1 << 30, fmt)
    wanted = {ITEM_ID: ITEM_ID, TS: TS} | ({WEIGHT: WEIGHT} if WEIGHT in names else {})
    check_columns(names, wanted, str(source))
    try:
        tables = list(chunks)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"cannot read {source}: {str(exc).splitlines()[0]}") from exc
    table = (
        pa.concat_tables(tables)
        if tables
        else pa.table({c: pa.array([], pa.string()) for c in names})
    )
    n, cutoff_ns = table.num_rows, _future_cutoff(now).value
    col = {c: table.column(c).combine_chunks() for c in wanted}
    item, i_missing, i_bad = parse_ids(col[ITEM_ID])
    ts, ts_bad, unit_rules = parse_ts_checked(col[TS], unit, cutoff_ns)
    weight = _parse_weight(col[WEIGHT]) if WEIGHT in col else np.ones(n)
    with np.errstate(invalid="ignore"):
        rules = [
            ("missing item_id", i_missing),
            ("non-integer item_id", i_bad),
            *unit_rules,
            ("unparseable ts", ts_bad),
            ("future ts", ts > cutoff_ns),
            ("negative weight", weight < 0),
            ("NaN weight", ~np.isfinite(weight)),
        ]
    for reason, mask in rules:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            about_ts = reason.startswith(f"{TS} ") or reason.endswith(f" {TS}")
            shown = f" ({TS} {col[TS][row].as_py()!r})" if about_ts else ""
            raise IngestError(f"{source}: row {row}{shown}: {reason}")
    return pd.DataFrame(
        {ITEM_ID: item, TS: pd.to_datetime(ts, utc=True), WEIGHT: weight.astype(np.float64)}
    )
