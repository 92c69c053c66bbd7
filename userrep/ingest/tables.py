"""Ingest of the user, item and friends tables: validated upserts with quarantine, staged
(staging.py) and published with the rest of the ingest (transaction.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from userrep.columns import (
    AGE,
    ARTIST,
    ARTIST_ID,
    COUNTRY,
    FRIEND_ID,
    GENDER,
    GENRES,
    ITEM_COLUMNS,
    ITEM_ID,
    ONBOARDING_GENRES,
    ONBOARDING_ITEMS,
    SIGNUP_TS,
    TITLE,
    USER_COLUMNS,
    USER_ID,
)
from userrep.ingest.common import (
    FUTURE_TOLERANCE,
    MALFORMED,
    IngestError,
    IngestReport,
    StagedParquet,
    TextFormat,
    _np_mask,
    _parse_weight,
    check_unit,
    new_ingest_id,
    parse_ids,
    parse_mapping,
    parse_ts_checked,
    quarantine_table,
)
from userrep.ingest.events import check_columns, frame_to_table, open_table_source
from userrep.ingest.staging import Stage
from userrep.settings import WorkspacePaths

USER_SCHEMA = pa.schema(
    [
        (USER_ID, pa.int64()),
        (SIGNUP_TS, pa.timestamp("ns", tz="UTC")),
        (AGE, pa.float64()),
        (GENDER, pa.string()),
        (COUNTRY, pa.string()),
        (ONBOARDING_ITEMS, pa.list_(pa.int64())),
        (ONBOARDING_GENRES, pa.list_(pa.string())),
    ]
)
ITEM_SCHEMA = pa.schema(
    [
        (ITEM_ID, pa.int64()),
        (TITLE, pa.string()),
        (ARTIST_ID, pa.int64()),
        (ARTIST, pa.string()),
        (GENRES, pa.string()),
    ]
)
FRIEND_SCHEMA = pa.schema([(USER_ID, pa.int64()), (FRIEND_ID, pa.int64())])
FrameOrPath: TypeAlias = pd.DataFrame | Path | str
Mapping: TypeAlias = dict[str, str] | str | None  # {canonical: source} or "canonical=source,..."

log = logging.getLogger(__name__)


def _load_table(
    frame_or_path: FrameOrPath,
    mapping: Mapping,
    known: tuple[str, ...],
    required: tuple[str, ...],
    fmt: TextFormat = TextFormat(),
) -> tuple[pa.Table, dict[str, str], str, np.ndarray]:
    """Source table, canonical -> source column for the columns present, a source name, and a
    mask of the table's rows that are a text file's malformed lines (appended at the end)."""
    mapping = parse_mapping(mapping, known) if isinstance(mapping, str) else dict(mapping or {})
    if unknown := sorted(set(mapping) - set(known)):
        raise IngestError(f"unknown canonical column(s) {unknown} in mapping (known: {known})")
    n_malformed = 0
    if isinstance(frame_or_path, pd.DataFrame):
        table, source = frame_to_table(frame_or_path), "<frame>"
    else:
        source = str(frame_or_path)
        names, chunks, bad = open_table_source(Path(frame_or_path), 1 << 30, fmt, True)
        check_columns(names, mapping, source)
        try:
            tables = list(chunks)
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"cannot read {source}: {str(exc).splitlines()[0]}") from exc
        if bad is not None and (lines := bad.take()).num_rows:
            tables, n_malformed = [*tables, lines], lines.num_rows
        empty = pa.schema([(c, pa.string()) for c in names]).empty_table()
        table = pa.concat_tables(tables) if tables else empty
    cols = {c: mapping.get(c, c) for c in known}
    check_columns(table.column_names, {c: cols[c] for c in (*mapping, *required)}, source)
    present = {c: s for c, s in cols.items() if s in table.column_names}
    malformed = np.arange(table.num_rows) >= table.num_rows - n_malformed
    return table, present, source, malformed


def _text(table: pa.Table, col: str | None, default: str = "") -> pa.Array:
    if col is None:
        return pa.repeat(pa.scalar(default), table.num_rows)
    return pc.fill_null(pc.cast(table.column(col).combine_chunks(), pa.string()), default)


def _lists(arr: pa.Array | None, n: int, as_int: bool) -> tuple[pa.Array, np.ndarray]:
    """List column or "|"-separated text -> (list array without empty entries, bad-row mask)."""
    if arr is None:
        arr = pa.nulls(n, pa.string())
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        arr = pc.split_pattern(pc.fill_null(pc.cast(arr, pa.string()), ""), "|")
    values = pc.cast(pc.list_flatten(arr), pa.string())
    parent = pc.list_parent_indices(arr).to_numpy()
    values = pc.utf8_trim_whitespace(values)
    keep = _np_mask(pc.not_equal(values, ""))
    values, parent = pc.filter(values, pa.array(keep)), parent[keep]
    bad = np.zeros(n, bool)
    if as_int:
        ints, _, non_int = parse_ids(values)
        bad[parent[non_int]] = True
        values = pa.array(ints, pa.int64())
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parent, minlength=n))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values), bad


def _id_reasons(arr: pa.Array, name: str, optional: bool = False) -> tuple[np.ndarray, list]:
    values, missing, bad = parse_ids(arr)
    rules = [(f"non-integer {name}", bad)]
    return values, rules if optional else [(f"missing {name}", missing), *rules]


def _reason_text(
    rules: list[tuple[str, np.ndarray]], key: np.ndarray, key_name: str, malformed: np.ndarray
) -> np.ndarray:
    """First failing rule per row ("" = ok), a malformed line's before any (its fields are not
    where the columns say); earlier rows of a repeated key are superseded by later good ones."""
    reason = np.full(len(malformed), "", dtype=object)
    for name, mask in [(MALFORMED, malformed), *rules]:
        reason[(reason == "") & mask] = name
    ok = np.flatnonzero(reason == "")
    later = pd.Series(key[ok]).duplicated(keep="last").to_numpy()
    reason[ok[later]] = f"duplicate {key_name} in file (a later row wins)"
    return reason


def _stage_table(
    stage: Stage,
    paths: WorkspacePaths,
    kind: str,
    source: str,
    table: pa.Table,
    reason: np.ndarray,
    rows: pa.Table,
    target: Path,
    key: str | None,
    malformed: np.ndarray,
) -> IngestReport:
    """Quarantine bad rows and upsert the good ones into `target` by `key`, both staged; the
    `malformed` rows (lines the reader could not split) have no source_row."""
    ingest_id, bad = new_ingest_id(), np.flatnonzero(reason != "")
    qfile = None
    if len(bad):
        q = StagedParquet(stage, paths.quarantine / f"{ingest_id}.parquet")
        q.write(quarantine_table(table, bad, reason[bad].astype(str), 0, malformed[bad]))
        qfile = q.close()
    good = rows.filter(pa.array(reason == ""))
    if good.num_rows:
        _upsert(stage, target, good, key)
    counts = pd.Series(reason[bad], dtype=object).value_counts()
    report = IngestReport(
        source,
        len(reason),
        good.num_rows,
        len(bad),
        {str(k): int(v) for k, v in counts.items()},
        qfile,
        target if good.num_rows else None,
        ingest_id,
    )
    log.info(
        "ingest %s %s: read %d, accepted %d, quarantined %d %s",
        kind,
        source,
        report.read,
        report.accepted,
        report.quarantined,
        report.reasons,
    )
    return report


def _upsert(stage: Stage, target: Path, new: pa.Table, key: str | None) -> None:
    """Stage the new `target`: new rows replace old ones with the same key (None: union). The
    old rows are the published table's, or this ingest's staged version of it."""
    merged = new
    base = stage.staged(target) or (target if target.exists() else None)
    if base is not None:
        old = pq.read_table(base, schema=new.schema)
        if key is not None:
            old = old.filter(pc.invert(pc.is_in(old[key], new[key])))
        merged = pa.concat_tables([old, new])
    if key is None:
        merged = merged.group_by(merged.column_names).aggregate([])  # distinct rows
    out = StagedParquet(stage, target)
    out.write(merged.sort_by([(c, "ascending") for c in ([key] if key else merged.column_names)]))
    out.close()


def stage_users(
    stage: Stage,
    paths: WorkspacePaths,
    frame_or_path: FrameOrPath,
    mapping: Mapping = None,
    *,
    fmt: TextFormat = TextFormat(),
    ts_unit: str | None = None,
    now: pd.Timestamp | None = None,
) -> IngestReport:
    """Upsert users by user_id (whole rows replace); lists may be "|"-separated text; epoch
    numbers in signup_ts are in ts_unit (s), checked as the events' ts are."""
    unit = check_unit(ts_unit or "s")
    table, cols, source, malformed = _load_table(
        frame_or_path, mapping, USER_COLUMNS, (USER_ID,), fmt
    )
    col = {c: table.column(s).combine_chunks() for c, s in cols.items()}
    n = table.num_rows
    user, rules = _id_reasons(col[USER_ID], USER_ID)
    signup = col.get(SIGNUP_TS, pa.nulls(n, pa.timestamp("ns", tz="UTC")))
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    cutoff = (now if now.tzinfo else now.tz_localize("UTC")) + FUTURE_TOLERANCE
    ts, ts_bad, unit_rules = parse_ts_checked(signup, unit, cutoff.value, SIGNUP_TS)
    age_in = col.get(AGE, pa.nulls(n, pa.float64()))
    age = _parse_weight(age_in)
    items, items_bad = _lists(col.get(ONBOARDING_ITEMS), n, as_int=True)
    genres, _ = _lists(col.get(ONBOARDING_GENRES), n, as_int=False)
    null_ts, null_age = _np_mask(signup.is_null()), _np_mask(age_in.is_null())
    rules += [
        *unit_rules,
        (f"unparseable {SIGNUP_TS}", ts_bad & ~null_ts),
        (f"non-numeric {AGE}", np.isnan(age) & ~null_age),
        (f"non-integer {ONBOARDING_ITEMS}", items_bad),
    ]
    reason = _reason_text(rules, user, USER_ID, malformed)
    ts_arr = pa.array(np.where(ts_bad, np.iinfo(np.int64).min, ts), mask=ts_bad)
    rows = pa.Table.from_arrays(
        [
            pa.array(user),
            ts_arr.cast(pa.timestamp("ns", tz="UTC")),
            pa.array(age),
            _text(table, cols.get(GENDER)),
            _text(table, cols.get(COUNTRY)),
            items,
            genres,
        ],
        schema=USER_SCHEMA,
    )
    return _stage_table(
        stage, paths, "users", source, table, reason, rows, paths.users, USER_ID, malformed
    )


def stage_items(
    stage: Stage,
    paths: WorkspacePaths,
    frame_or_path: FrameOrPath,
    mapping: Mapping = None,
    *,
    fmt: TextFormat = TextFormat(),
) -> IngestReport:
    """Upsert catalog items by item_id; genres may be a list or "|"-joined text."""
    table, cols, source, malformed = _load_table(
        frame_or_path, mapping, ITEM_COLUMNS, (ITEM_ID,), fmt
    )
    col = {c: table.column(s).combine_chunks() for c, s in cols.items()}
    n = table.num_rows
    item, rules = _id_reasons(col[ITEM_ID], ITEM_ID)
    artist_in = col.get(ARTIST_ID, pa.nulls(n, pa.int64()))
    artist_id, artist_rules = _id_reasons(artist_in, ARTIST_ID, optional=True)
    reason = _reason_text(rules + artist_rules, item, ITEM_ID, malformed)
    genres = col.get(GENRES, pa.nulls(n, pa.string()))
    if pa.types.is_list(genres.type) or pa.types.is_large_list(genres.type):
        genres = pc.binary_join(pc.cast(genres, pa.list_(pa.string())), "|")
    rows = pa.Table.from_arrays(
        [
            pa.array(item),
            _text(table, cols.get(TITLE)),
            pa.array(artist_id, mask=_np_mask(artist_in.is_null())),
            _text(table, cols.get(ARTIST)),
            pc.fill_null(pc.cast(genres, pa.string()), ""),
        ],
        schema=ITEM_SCHEMA,
    )
    return _stage_table(
        stage, paths, "items", source, table, reason, rows, paths.items, ITEM_ID, malformed
    )


def stage_friends(
    stage: Stage,
    paths: WorkspacePaths,
    frame_or_path: FrameOrPath,
    mapping: Mapping = None,
    *,
    fmt: TextFormat = TextFormat(),
) -> IngestReport:
    """Add (user_id, friend_id) pairs to the friends table (a set union)."""
    known = (USER_ID, FRIEND_ID)
    table, cols, source, malformed = _load_table(frame_or_path, mapping, known, known, fmt)
    user, rules = _id_reasons(table.column(cols[USER_ID]).combine_chunks(), USER_ID)
    friend, friend_rules = _id_reasons(table.column(cols[FRIEND_ID]).combine_chunks(), FRIEND_ID)
    pair = pd.util.hash_pandas_object(pd.DataFrame({"u": user, "f": friend}), index=False)
    reason = _reason_text(rules + friend_rules, pair.to_numpy(), "pair", malformed)
    rows = pa.Table.from_arrays([pa.array(user), pa.array(friend)], schema=FRIEND_SCHEMA)
    return _stage_table(
        stage, paths, "friends", source, table, reason, rows, paths.friends, None, malformed
    )


def read_table(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """A users / items / friends table, empty with the right columns when absent."""
    table = pq.read_table(path, schema=schema) if path.exists() else schema.empty_table()
    return table.to_pandas()
