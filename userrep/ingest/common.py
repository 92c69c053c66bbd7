"""Ingest building blocks: errors, column mapping, reports, staged parquet, vectorised
parsing of ids / timestamps / weights, deterministic event ids."""

from __future__ import annotations

import codecs
import logging
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from userrep.columns import (
    EVENT_ID,
    EVENT_TYPE,
    ITEM_ID,
    REASON,
    SOURCE_ROW,
    TS,
    USER_ID,
    WEIGHT,
)

if TYPE_CHECKING:
    from userrep.ingest.staging import Stage

log = logging.getLogger(__name__)

DEFAULT_EVENT_TYPE = "play"
CSV_BLOCK_BYTES = 16 << 20  # CSV read granularity; chunks are regrouped to chunk_rows rows
FUTURE_TOLERANCE = pd.Timedelta(days=1)  # clock skew allowed before a ts counts as "future"
PLAUSIBLE_SINCE = pd.Timestamp("1990-01-01", tz="UTC")  # epoch numbers before it: a unit mistake
EPOCH_UNITS = ("s", "ms", "us", "ns")  # the units a wrong-unit reason may suggest
# Row-level reasons in rule order: a row gets the first one that applies (code = index + 1).
# "{unit}" is the ingest's ts unit (reasons_for); REASONS are the names for the default, s.
MALFORMED = "wrong number of fields"  # a delimited line the reader could not split into columns
REASON_TEMPLATES = (
    "missing user_id",
    "missing item_id",
    "non-integer user_id",
    "non-integer item_id",
    *(
        f"ts implausible as epoch {{unit}} (looks like {u}: pass --ts-unit {u})"
        for u in EPOCH_UNITS
    ),
    "ts implausible as epoch {unit} (before 1990)",
    "unparseable ts",  # also dates past 2262, the end of datetime64[ns]
    "future ts",
    "negative weight",
    "NaN weight",  # also +inf and unparseable text: any weight that is not a finite number
    "duplicate event_id in file",
    "duplicate: already ingested",
    MALFORMED,
)
_CODE = {r: i + 1 for i, r in enumerate(REASON_TEMPLATES)}


def reasons_for(unit: str) -> tuple[str, ...]:
    """The row-level reason names of an ingest whose numeric timestamps are in `unit`."""
    return tuple(t.format(unit=unit) for t in REASON_TEMPLATES)


REASONS = reasons_for("s")
EVENT_SCHEMA = pa.schema(
    [
        (EVENT_ID, pa.string()),
        (USER_ID, pa.int64()),
        (ITEM_ID, pa.int64()),
        (TS, pa.timestamp("ns", tz="UTC")),
        (WEIGHT, pa.float64()),
        (EVENT_TYPE, pa.string()),
    ]
)
_UNIT_NS = {"D": 86_400 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_INT_RE = r"^[+-]?\d{1,18}(\.0*)?$"  # ids: integers that fit int64 ("12.0" counts as 12)
_NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_ZONED_RE = r"\d:\d\d(:\d\d(\.\d*)?)?\s*(Z|z|[+-]\d\d(:?\d\d)?)$"  # ISO time with a zone
_HEX_ID_RE = "^[0-9a-f]{16}$"
_HEX_LUT = np.zeros(256, np.uint8)
_HEX_LUT[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_HASH_KEY = "userrep-event-id"  # 16 bytes: pandas' siphash key for event ids


class IngestError(Exception):
    """A whole-file problem (bad mapping, unreadable file): nothing of the ingest was written."""


@dataclass(frozen=True)
class ColumnMapping:
    """Canonical column name -> source column name; weight/event_id/event_type are optional."""

    user_id: str = USER_ID
    item_id: str = ITEM_ID
    ts: str = TS
    weight: str | None = None  # absent: every event weighs 1.0
    event_id: str | None = None  # absent: a hash of (user, item, ts, weight, event_type)
    event_type: str | None = None  # absent: "play"

    @classmethod
    def parse(cls, spec: str) -> ColumnMapping:
        """Parse "user_id=uid,item_id=track,ts=played_at,weight=ms_played"."""
        return cls(**parse_mapping(spec, tuple(f.name for f in fields(cls))))

    def columns(self) -> dict[str, str]:
        """Canonical -> source, only for the columns that are mapped."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_mapping(spec: str, known: tuple[str, ...]) -> dict[str, str]:
    """ "canonical=source,..." -> {canonical: source}; `known`: the table's canonical columns.
    A source is a column name, or a 1-based position ("2") in a file without a header."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not value:
            raise IngestError(f"bad mapping entry {part!r}: expected canonical=source")
        if key not in known:
            raise IngestError(f"unknown canonical column {key!r} in mapping (known: {list(known)})")
        out[key] = value
    return out


SUFFIX_SEP = {"csv": ",", "tsv": "\t", "txt": "\t", "dat": "::"}  # by the name, less .gz etc.
TEXT_KINDS = tuple(SUFFIX_SEP)
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
UNIT_SEP = "\x1f"  # what a separator of several characters becomes for the CSV parser


def file_kind(source: Path) -> str:
    """csv, tsv, txt, dat or parquet (pq) from the name; a compression suffix is skipped."""
    name = source.name.lower()
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    kind = Path(name).suffix.lstrip(".")
    if kind not in (*TEXT_KINDS, "parquet", "pq"):
        raise IngestError(
            f"unsupported file type {source.name!r}: use .csv, .tsv, .txt, .dat or .parquet"
        )
    return kind


@dataclass(frozen=True)
class TextFormat:
    """How delimited text files are read. sep None: by suffix (.csv ",", .tsv / .txt tab,
    .dat "::", MovieLens' format); header None: every file has one except .dat. A file without
    a header names its columns by position, "1", "2", ..., which mappings then refer to."""

    sep: str | None = None
    header: bool | None = None
    encoding: str = "utf-8"  # of every text file; read as UTF-8 after transcoding

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise IngestError(f"unknown encoding {self.encoding!r} (e.g. utf-8, latin-1)") from None
        if self.sep is not None:
            sep = {"\\t": "\t", "tab": "\t"}.get(self.sep, self.sep)
            if not sep or any(c in sep for c in '\r\n"' + UNIT_SEP):
                raise IngestError(f"bad separator {self.sep!r}")
            object.__setattr__(self, "sep", sep)

    def resolve(self, source: Path) -> tuple[str, bool]:
        """(separator, has a header) of a text file."""
        kind = file_kind(source)
        sep = self.sep if self.sep is not None else SUFFIX_SEP[kind]
        return sep, self.header if self.header is not None else kind != "dat"


@dataclass
class IngestReport:
    """What one ingest did; accepted + quarantined == read always holds."""

    source: str
    read: int
    accepted: int
    quarantined: int
    reasons: dict[str, int]
    quarantine_file: Path | None
    part_file: Path | None
    ingest_id: str = ""

    def __post_init__(self) -> None:
        assert self.accepted + self.quarantined == self.read, self
        assert sum(self.reasons.values()) == self.quarantined, self


# ---------------------------------------------------------------- small shared helpers


def new_ingest_id() -> str:
    """Sortable id: UTC time to the microsecond plus a random suffix."""
    return f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


class StagedParquet:
    """A parquet file written into the ingest's staging (created on the first write, so an
    empty one is never published); the stage moves it to `target` when the ingest commits."""

    def __init__(self, stage: Stage, target: Path, **options: object) -> None:
        self.stage, self.target = stage, target
        self.writer: pq.ParquetWriter | None = None
        self.options = options  # pq.ParquetWriter keyword arguments
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            staged = self.stage.path(self.target)
            self.writer = pq.ParquetWriter(staged, table.schema, **self.options)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> Path | None:
        """Finish the file; returns the target it will be published as (None: no rows)."""
        if self.writer is None:
            return None
        self.writer.close()
        return self.target

    def abort(self) -> None:
        """Close the file after a failure (the transaction deletes the staging)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # a writer that failed mid-write may not close cleanly
                log.debug("closing %s after a failure", self.target, exc_info=True)
            self.writer = None


def log_record(report: IngestReport, kind: str, **extra: object) -> dict:
    """The ingest-log line of one table of an ingest."""
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(report).items()}
    record.update(kind=kind, at=pd.Timestamp.now(tz="UTC").isoformat(), **extra)
    return record


def quarantine_problem(report: IngestReport, max_quarantined: float) -> str | None:
    """Why an ingest of this table must not be published, or None. Rows already ingested (a
    re-run of the same file) count as good: they are in the workspace, not rejected."""
    already = report.reasons.get("duplicate: already ingested", 0)
    bad = report.quarantined - already
    if report.read == 0:
        return f"{report.source}: no rows"
    counts = {r: c for r, c in report.reasons.items() if r != "duplicate: already ingested"}
    top = f"; most: {max(counts, key=counts.__getitem__)}" if counts else ""
    if report.accepted + already == 0:
        return (
            f"{report.source}: nothing accepted ({bad:,} of {report.read:,} rows quarantined{top})"
        )
    if bad / report.read > max_quarantined:
        return (
            f"{report.source}: {bad:,} of {report.read:,} rows quarantined "
            f"({bad / report.read:.0%}{top}), more than --max-quarantined {max_quarantined:g}"
        )
    return None


def _report(
    source: str,
    codes: np.ndarray,
    ingest_id: str,
    names: tuple[str, ...] = REASONS,
    **files: Path | None,
) -> IngestReport:
    """Build a report from per-reason counts (codes[0] = accepted, codes[i] = names[i-1])."""
    reasons = {names[i]: int(c) for i, c in enumerate(codes[1:]) if c}
    return IngestReport(
        source,
        int(codes.sum()),
        int(codes[0]),
        int(codes[1:].sum()),
        reasons,
        files.get("quarantine_file"),
        files.get("part_file"),
        ingest_id,
    )


def quarantine_table(
    table: pa.Table,
    rows: np.ndarray,
    reasons: np.ndarray,
    offset: int,
    unplaced: np.ndarray | None = None,
) -> pa.Table:
    """Bad rows with every source column as text, plus `reason` and 0-based `source_row` (the
    row's position among the rows that parsed; null where `unplaced`, a mask over `rows`: a
    malformed line, whose position the streaming reader does not report)."""
    bad = table.take(pa.array(rows))
    cols, names = [], []
    for name, col in zip(bad.column_names, bad.columns, strict=True):
        try:
            cols.append(pc.cast(col, pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # nested types: fallback
            cols.append(pa.array([None if v is None else str(v) for v in col.to_pylist()]))
        names.append(f"source_{name}" if name in (REASON, SOURCE_ROW) else name)
    cols += [pa.array(reasons, pa.string()), pa.array(rows + offset, pa.int64(), mask=unplaced)]
    return pa.Table.from_arrays(cols, names=names + [REASON, SOURCE_ROW])


# ---------------------------------------------------------------- vectorised parsing


def _np_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def parse_ids(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Any column -> (int64 values, missing mask, non-integer mask); bad rows hold 0."""
    missing = _np_mask(arr.is_null())
    t = arr.type
    if pa.types.is_integer(t) and t != pa.uint64():
        return pc.fill_null(pc.cast(arr, pa.int64()), 0).to_numpy(), missing, np.zeros_like(missing)
    if pa.types.is_floating(t):
        f = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(f) & (f == np.floor(f)) & (np.abs(f) < 2**63)
        return np.where(ok, f, 0).astype(np.int64), missing, ~ok & ~missing
    s = arr if pa.types.is_string(t) else pc.cast(arr, pa.string())
    try:
        return pc.fill_null(pc.cast(s, pa.int64()), 0).to_numpy(), missing, np.zeros_like(missing)
    except pa.ArrowInvalid:
        pass
    s = pc.utf8_trim_whitespace(s)
    missing |= _np_mask(pc.equal(s, ""))
    ok = _np_mask(pc.match_substring_regex(s, _INT_RE))
    clean = pc.replace_substring_regex(pc.if_else(pa.array(ok), s, "0"), r"\.0*$", "")
    return pc.cast(clean, pa.int64()).to_numpy(), missing, ~ok & ~missing


def _epoch_ns(arr: pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Numbers since the epoch in `unit` -> (int64 ns, bad mask); null / out of range is bad."""
    factor = _UNIT_NS[unit]
    if pa.types.is_integer(arr.type):
        v = pc.fill_null(pc.cast(arr, pa.int64()), 0).to_numpy()
        ok = ~_np_mask(arr.is_null()) & (np.abs(v) <= (2**63 - 1) // factor)
        return np.where(ok, v, 0) * factor, ~ok
    with np.errstate(invalid="ignore", over="ignore"):
        x = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False) * factor
        ok = np.isfinite(x) & (np.abs(x) < 9.2e18)
    return np.where(ok, np.rint(x), 0).astype(np.int64), ~ok


def parse_ts(arr: pa.Array, unit: str = "s") -> tuple[np.ndarray, np.ndarray]:
    """Timestamps, dates, epoch numbers or ISO strings -> (UTC int64 ns, unparseable mask).
    Epoch numbers are in `unit` (s by default); check_ts_unit flags the implausible ones."""
    ns, bad, _ = _parse_ts(arr, unit)
    return ns, bad


def check_unit(unit: str) -> str:
    """`unit` when it is a known unit of epoch numbers, else IngestError."""
    if unit not in _UNIT_NS:
        raise IngestError(f"unknown ts_unit {unit!r}: use one of {list(_UNIT_NS)}")
    return unit


def plausible_epoch_ns(value: int, unit: str, cutoff_ns: int) -> int | None:
    """An integer epoch number in `unit` -> ns when parse_ts_checked would accept it as is
    (between PLAUSIBLE_SINCE and cutoff_ns), else None: the full rule then gives the reason.
    One event's fast path (NRT parses events one by one)."""
    factor = _UNIT_NS[check_unit(unit)]
    if abs(value) > (2**63 - 1) // factor:
        return None
    ns = value * factor
    return ns if PLAUSIBLE_SINCE.value <= ns <= cutoff_ns else None


def parse_ts_checked(
    arr: pa.Array, unit: str, cutoff_ns: int, col: str = TS
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]:
    """parse_ts plus the unit check, the one timestamp rule of every reader: (ns, unparseable
    mask, rules). An epoch number whose date in `unit` is before 1990 or after `cutoff_ns`
    is a unit mistake when another unit puts it in that range: the rule's reason names both
    units ("ts implausible as epoch s (looks like ms: pass --ts-unit ms)"); one before 1990
    in every unit gets "... (before 1990)". rules: (reason, mask) in rule order, to apply
    before unparseable / future, which keep every other row (ISO text is never judged)."""
    ns, bad, epoch = _parse_ts(arr, unit)
    if not epoch.any():
        return ns, bad, []
    # the number as given: from ns where it parsed, from the text where it overflowed
    value = np.where(bad, np.nan, ns / _UNIT_NS[unit])
    redo = epoch & bad
    if redo.any():
        sub = pc.filter(arr, pa.array(redo))
        if not (pa.types.is_integer(sub.type) or pa.types.is_floating(sub.type)):
            sub = pc.utf8_trim_whitespace(pc.cast(sub, pa.string()))
        value[redo] = pc.cast(sub, pa.float64()).to_numpy(zero_copy_only=False)
    lo = PLAUSIBLE_SINCE.value

    def fits(u: str) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            x = value * _UNIT_NS[u]
            return epoch & (x >= lo) & (x <= cutoff_ns)

    wrong = epoch & ~fits(unit)
    rules = [
        (f"{col} implausible as epoch {unit} (looks like {u}: pass --ts-unit {u})", wrong & fits(u))
        for u in EPOCH_UNITS
        if u != unit
    ]
    fitting = np.logical_or.reduce([mask for _, mask in rules]) if rules else wrong & False
    with np.errstate(invalid="ignore"):
        early = wrong & ~fitting & (value * _UNIT_NS[unit] < lo)
    rules.append((f"{col} implausible as epoch {unit} (before 1990)", early))
    return ns, bad, rules


def _parse_ts(arr: pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTC int64 ns, unparseable mask, mask of the rows given as epoch numbers)."""
    t = arr.type
    none = np.zeros(len(arr), bool)
    if pa.types.is_timestamp(t):  # arrow stores UTC (naive: as UTC)
        return (*_epoch_ns(pc.cast(arr, pa.int64()), t.unit), none)
    if pa.types.is_date(t):
        return (*_epoch_ns(pc.cast(pc.cast(arr, pa.date32()), pa.int32()), "D"), none)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        ns, bad = _epoch_ns(arr, unit)
        epoch = ~_np_mask(arr.is_null())
        if pa.types.is_floating(t):
            epoch &= np.isfinite(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False))
        return ns, bad, epoch
    s = arr if pa.types.is_string(t) else pc.cast(arr, pa.string())
    try:  # one strict, fast cast picked from a sample: a failed cast costs a full scan
        return _fast_ts(s, unit)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _parse_mixed_ts(pc.utf8_trim_whitespace(s), unit)


def _fast_ts(s: pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epoch integers, zoned ISO or naive ISO text, judged by the first 100 values."""
    sample = pc.drop_null(s.slice(0, 100))
    if len(sample) and pc.all(pc.match_substring_regex(sample, _NUM_RE)).as_py():
        return (*_epoch_ns(pc.cast(s, pa.int64()), unit), ~_np_mask(s.is_null()))
    zoned = pc.any(pc.match_substring_regex(sample, _ZONED_RE)).as_py()
    parsed = pc.cast(s, pa.timestamp("ns", tz="UTC") if zoned else pa.timestamp("ns"))
    return (*_epoch_ns(pc.cast(parsed, pa.int64()), "ns"), np.zeros(len(s), bool))


def _parse_mixed_ts(s: pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slow path for text mixing epoch numbers, zoned ISO and naive ISO (naive = UTC)."""
    ns, bad = np.zeros(len(s), np.int64), np.ones(len(s), bool)
    num = _np_mask(pc.match_substring_regex(s, _NUM_RE))
    zoned = _np_mask(pc.match_substring_regex(s, _ZONED_RE)) & ~num
    ns[num], bad[num] = _epoch_ns(pc.cast(pc.filter(s, pa.array(num)), pa.float64()), unit)
    # parsed apart: pandas applies one string's offset to the naive strings beside it
    for group in (zoned, ~num & ~zoned):
        text = pc.filter(s, pa.array(group)).to_numpy(zero_copy_only=False)
        iso = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        ns[group], bad[group] = iso.asi8, np.asarray(iso.isna())
    return ns, bad, num


def _parse_weight(arr: pa.Array) -> np.ndarray:
    """Any column -> float64 with NaN for missing / unparseable."""
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        s = arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())
        try:
            arr = pc.cast(s, pa.float64())
        except pa.ArrowInvalid:
            obj = s.to_numpy(zero_copy_only=False)
            return pd.to_numeric(pd.Series(obj), errors="coerce").to_numpy(np.float64)
    return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------- event ids and their keys


def hash_rows(
    user: np.ndarray, item: np.ndarray, ts_ns: np.ndarray, weight: np.ndarray, event_type: pa.Array
) -> np.ndarray:
    """Deterministic uint64 per (user_id, item_id, ts, weight, event_type)."""
    etype = pc.dictionary_encode(event_type).to_pandas()  # categorical: hashes uniques only
    frame = pd.DataFrame({"u": user, "i": item, "t": ts_ns, "w": weight, "e": etype.values})
    return pd.util.hash_pandas_object(frame, index=False, hash_key=_HASH_KEY).to_numpy()


def hex_ids(h: np.ndarray) -> pa.Array:
    """uint64 -> 16-char lowercase hex strings, built without a per-row loop."""
    b = h.astype(">u8").view(np.uint8).reshape(-1, 8)
    out = np.empty((len(h), 16), np.uint8)
    out[:, 0::2], out[:, 1::2] = _HEX_DIGITS[b >> 4], _HEX_DIGITS[b & 15]
    offsets = np.arange(0, 16 * (len(h) + 1), 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(h), pa.py_buffer(offsets), pa.py_buffer(out))


def id_keys(ids: pa.Array) -> np.ndarray:
    """Event id strings -> uint64 keys for dedup: 16-hex ids parse back, others are hashed."""
    ids = pc.cast(ids, pa.string())
    is_hex = _np_mask(pc.match_substring_regex(ids, _HEX_ID_RE))
    keys = np.empty(len(ids), np.uint64)
    if is_hex.any():
        hexes = pc.filter(ids, pa.array(is_hex))
        start = np.frombuffer(hexes.buffers()[1], np.int32)[hexes.offset]
        raw = np.frombuffer(hexes.buffers()[2], np.uint8)[start : start + 16 * len(hexes)]
        nib = _HEX_LUT[raw.reshape(-1, 16)]
        keys[is_hex] = ((nib[:, 0::2] << 4) | nib[:, 1::2]).copy().view(">u8").ravel()
    if (~is_hex).any():
        other = pc.filter(ids, pa.array(~is_hex)).to_numpy(zero_copy_only=False)
        keys[~is_hex] = pd.util.hash_array(
            other.astype(object), hash_key=_HASH_KEY, categorize=False
        )
    return keys


def event_ids(frame: pd.DataFrame) -> pd.Series:
    """The deterministic event ids ingest gives a canonical frame that has no event_id."""
    etype = (
        frame[EVENT_TYPE]
        if EVENT_TYPE in frame
        else pd.Series(DEFAULT_EVENT_TYPE, index=frame.index)
    )
    weight = frame[WEIGHT] if WEIGHT in frame else pd.Series(1.0, index=frame.index)
    ts = parse_ts(pa.array(frame[TS]))[0]
    h = hash_rows(
        frame[USER_ID].to_numpy(np.int64),
        frame[ITEM_ID].to_numpy(np.int64),
        ts,
        weight.to_numpy(np.float64),
        pa.array(etype.astype(str)),
    )
    return pd.Series(hex_ids(h).to_numpy(zero_copy_only=False), index=frame.index, name=EVENT_ID)
