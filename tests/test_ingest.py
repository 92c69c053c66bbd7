"""Ingest: planted bad rows land in quarantine with the right reason; re-ingest is idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import userrep.ingest.events as ingest_module
from userrep.columns import (
    EVENT_COLUMNS,
    EVENT_ID,
    EVENT_TYPE,
    GENRES,
    ITEM_ID,
    ONBOARDING_GENRES,
    ONBOARDING_ITEMS,
    REASON,
    SOURCE_ROW,
    TS,
    USER_ID,
    WEIGHT,
)
from userrep.ingest import (
    EVENT_SCHEMA,
    FRIEND_ID,
    REASONS,
    ColumnMapping,
    IngestError,
    event_ids,
    ingest_event_frame,
    ingest_events,
    ingest_friends,
    ingest_items,
    ingest_users,
    read_events,
)
from userrep.settings import Settings, WorkspacePaths

NOW = pd.Timestamp("2024-01-01", tz="UTC")
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
MAPPING = ColumnMapping.parse("user_id=uid,item_id=track,ts=played_at,weight=ms")
HEADER = "uid,track,played_at,ms,note\n"
SEED_ROW = f"9,90,{T0},1,seed\n"  # ingested first, so the planted file's copy is a duplicate
# (source line, expected reason or None for accepted), one row per reason
PLANTED = [
    (f"1,10,{T0},5,ok epoch", None),
    ("2,20,2023-11-14T22:13:20Z,1,ok iso", None),
    (f",30,{T0},1,no user", "missing user_id"),
    (f"3,,{T0},1,no item", "missing item_id"),
    (f"x,30,{T0},1,bad user", "non-integer user_id"),
    (f"3,1.5,{T0},1,bad item", "non-integer item_id"),
    (
        f"3,30,{T0 * 1000},1,ms read as s",
        "ts implausible as epoch s (looks like ms: pass --ts-unit ms)",
    ),
    (
        f"3,30,{T0 * 10**6},1,us read as s",
        "ts implausible as epoch s (looks like us: pass --ts-unit us)",
    ),
    (
        f"3,30,{T0 * 10**9},1,ns read as s",
        "ts implausible as epoch s (looks like ns: pass --ts-unit ns)",
    ),
    ("3,30,5,1,1970", "ts implausible as epoch s (before 1990)"),
    ("3,30,yesterday,1,bad ts", "unparseable ts"),
    ("3,30,2030-01-01T00:00:00Z,1,future", "future ts"),
    (f"3,30,{T0},-1,negative", "negative weight"),
    (f"3,30,{T0},,empty weight", "NaN weight"),
    (f"1,10,{T0},5,copy of row 0", "duplicate event_id in file"),
    (SEED_ROW.strip(), "duplicate: already ingested"),
    ("4,40,2023-11-14 22:13:20,2,ok naive iso", None),
    ("5,50,1", "wrong number of fields"),  # last: the rows that parse keep their positions
]


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    return Settings(workspace=tmp_path / "ws").paths.ensure()


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(line.rstrip("\n") + "\n" for line in lines))
    return path


def written_files(paths: WorkspacePaths) -> list[Path]:
    dirs = (paths.events, paths.quarantine)
    files = [p for d in dirs for p in d.iterdir()]
    return files + ([paths.ingest_log] if paths.ingest_log.exists() else [])


def test_planted_bad_rows_one_per_reason(paths: WorkspacePaths, tmp_path: Path) -> None:
    ingest_events(paths, write_csv(tmp_path / "seed.csv", [SEED_ROW]), MAPPING, now=NOW)
    source = write_csv(tmp_path / "planted.csv", [line for line, _ in PLANTED])
    report = ingest_events(paths, source, MAPPING, now=NOW, chunk_rows=4)  # dups span chunks
    never = "ts implausible as epoch s (looks like s: pass --ts-unit s)"  # the unit given
    assert report.reasons == {reason: 1 for reason in REASONS if reason != never}
    assert (report.read, report.accepted, report.quarantined) == (18, 3, 15)
    assert report.accepted + report.quarantined == report.read
    bad = pd.read_parquet(report.quarantine_file)
    expected = {i: reason for i, (_, reason) in enumerate(PLANTED[:-1]) if reason}
    placed = bad[SOURCE_ROW].notna()
    assert dict(zip(bad[SOURCE_ROW][placed], bad[REASON][placed], strict=True)) == expected
    assert bad[REASON][~placed].tolist() == ["wrong number of fields"]  # no position reported
    assert list(bad.columns) == ["uid", "track", "played_at", "ms", "note", REASON, SOURCE_ROW]
    assert bad.set_index(SOURCE_ROW).loc[4, "uid"] == "x"  # original text kept
    assert len(read_events(paths)) == 1 + 3


def test_reingest_same_file_adds_nothing(paths: WorkspacePaths, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", [f"{u},{u * 10},{T0 + u},1,x" for u in range(5)])
    first = ingest_events(paths, source, MAPPING, now=NOW)
    again = ingest_events(paths, source, MAPPING, now=NOW)
    assert first.accepted == 5
    assert (again.accepted, again.part_file) == (0, None)
    assert again.reasons == {"duplicate: already ingested": 5}
    assert len(list(paths.events.glob("part-*.parquet"))) == 1
    assert len(read_events(paths)) == 5


def test_append_adds_only_new_events(paths: WorkspacePaths, tmp_path: Path) -> None:
    rows = [f"{u},{u * 10},{T0 + u},1,x" for u in range(7)]
    ingest_events(paths, write_csv(tmp_path / "a.csv", rows[:5]), MAPPING, now=NOW)
    report = ingest_events(paths, write_csv(tmp_path / "b.csv", rows[2:]), MAPPING, now=NOW)
    assert (report.read, report.accepted) == (5, 2)
    assert report.reasons == {"duplicate: already ingested": 3}
    events = read_events(paths)
    assert sorted(events[USER_ID]) == list(range(7))
    assert events[EVENT_ID].is_unique


def test_dedup_survives_a_lost_sidecar(paths: WorkspacePaths, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", [f"{u},1,{T0},1,x" for u in range(3)])
    ingest_events(paths, source, MAPPING, now=NOW)
    for sidecar in paths.events.glob("*.keys.npy"):
        sidecar.unlink()
    assert ingest_events(paths, source, MAPPING, now=NOW).accepted == 0


def test_missing_mapped_column_raises_and_writes_nothing(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "a.csv", [f"1,10,{T0},5,x"])
    mapping = ColumnMapping.parse("user_id=uid,item_id=track,ts=played_at,weight=plays")
    with pytest.raises(IngestError, match="'plays'"):
        ingest_events(paths, source, mapping, now=NOW)
    with pytest.raises(IngestError, match="'user_id'"):
        ingest_events(paths, source, now=NOW)  # default mapping: no user_id column
    assert written_files(paths) == []


@pytest.mark.parametrize("name", ["missing.csv", "events.json", "garbage.parquet", "empty.csv"])
def test_unreadable_file_raises_and_writes_nothing(
    paths: WorkspacePaths, tmp_path: Path, name: str
) -> None:
    source = tmp_path / name
    if name != "missing.csv":
        source.write_bytes(b"" if name == "empty.csv" else b"not a parquet file at all")
    with pytest.raises(IngestError, match=name):
        ingest_events(paths, source, MAPPING, now=NOW)
    assert written_files(paths) == []


def test_a_malformed_csv_line_is_quarantined_and_the_file_ingested(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    lines = [f"{u},10,{T0},5,x" for u in range(20)] + ["2,20,3,4,5,6,7"]  # too many fields
    report = ingest_events(
        paths, write_csv(tmp_path / "a.csv", lines), MAPPING, now=NOW, chunk_rows=2
    )
    assert (report.read, report.accepted, report.quarantined) == (21, 20, 1)
    q = pd.read_parquet(report.quarantine_file)
    assert q["reason"].tolist() == ["wrong number of fields"]
    assert q[["uid", "note"]].values.tolist() == [["2", "5,6,7"]]


def test_malformed_table_lines_are_quarantined(paths: WorkspacePaths, tmp_path: Path) -> None:
    """A short line is quarantined, and it does not supersede an earlier good row of its key
    (a later row of a repeated key wins only when it is good)."""
    lines = ["1,One,rock", "2,Two,jazz", "2,Broken", "3,Three,pop"]
    items = write_csv(tmp_path / "items.csv", lines, "item_id,title,genres\n")
    report = ingest_items(paths, items)
    assert (report.read, report.accepted, report.quarantined) == (4, 3, 1)
    assert report.reasons == {"wrong number of fields": 1}
    q = pd.read_parquet(report.quarantine_file)
    assert q[["item_id", "title"]].values.tolist() == [["2", "Broken"]]
    assert q["source_row"].isna().all()
    kept = pd.read_parquet(paths.items).set_index("item_id")
    assert kept.loc[2, "title"] == "Two"


def test_failure_midway_leaves_no_temp_files(
    paths: WorkspacePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = ingest_module._process_chunk, []

    def fail_on_third_chunk(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise pa.ArrowInvalid("simulated read error")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "_process_chunk", fail_on_third_chunk)
    lines = [f"{u},10,{T0},5,x" for u in range(4)] + [f",10,{T0},5,x"] * 4  # parts + quarantine
    with pytest.raises(IngestError, match="simulated read error"):
        ingest_events(paths, write_csv(tmp_path / "a.csv", lines), MAPPING, now=NOW, chunk_rows=3)
    assert len(calls) == 3
    assert written_files(paths) == []


def test_mapping_parse() -> None:
    m = ColumnMapping.parse("user_id=uid, item_id=track,ts=played_at,weight=ms_played")
    assert m == ColumnMapping("uid", "track", "played_at", "ms_played")
    assert ColumnMapping.parse("") == ColumnMapping()
    with pytest.raises(IngestError, match="duration"):
        ColumnMapping.parse("user_id=uid,duration=ms")
    with pytest.raises(IngestError, match="canonical=source"):
        ColumnMapping.parse("user_id")


def test_parquet_input_typed_columns(paths: WorkspacePaths, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "uid": [1, 2, 3, None],
            "track": [10, 20, 30, 40],
            "played_at": pd.to_datetime([T0, T0 + 1, T0 + 2, T0 + 3], unit="s", utc=True),
            "ms": [1.0, np.nan, 3.0, 4.0],
        }
    )
    frame.to_parquet(tmp_path / "a.parquet")
    report = ingest_events(paths, tmp_path / "a.parquet", MAPPING, now=NOW)
    assert report.accepted == 2
    assert report.reasons == {"NaN weight": 1, "missing user_id": 1}
    assert pd.read_parquet(report.quarantine_file)[SOURCE_ROW].tolist() == [1, 3]


def test_ts_epoch_iso_and_units_agree(paths: WorkspacePaths, tmp_path: Path) -> None:
    stamps = [
        str(T0),
        f"{T0}.0",
        "2023-11-14T22:13:20Z",
        "2023-11-15T00:13:20+02:00",
        "2023-11-14 22:13:20",
    ]
    lines = [f"{i},1,{ts},1,x" for i, ts in enumerate(stamps)]
    ingest_events(paths, write_csv(tmp_path / "a.csv", lines), MAPPING, now=NOW)
    ms = write_csv(tmp_path / "ms.csv", [f"99,1,{T0 * 1000},1,x"])
    ingest_events(paths, ms, MAPPING, ts_unit="ms", now=NOW)
    events = read_events(paths)
    assert len(events) == 6
    assert (events[TS] == pd.Timestamp(T0, unit="s", tz="UTC")).all()
    with pytest.raises(IngestError, match="ts_unit"):
        ingest_events(paths, ms, MAPPING, ts_unit="minutes", now=NOW)


def test_part_file_schema_and_read_dtypes(paths: WorkspacePaths, tmp_path: Path) -> None:
    report = ingest_events(paths, write_csv(tmp_path / "a.csv", [f"1,10,{T0},5,x"]), MAPPING)
    assert pq.read_schema(report.part_file).remove_metadata() == EVENT_SCHEMA
    events = read_events(paths)
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert str(events[TS].dtype) == "datetime64[ns, UTC]"
    assert events[[USER_ID, ITEM_ID]].dtypes.tolist() == [np.int64, np.int64]
    assert events[WEIGHT].dtype == np.float64
    assert events[EVENT_TYPE].tolist() == ["play"]
    assert read_events(Settings(workspace=tmp_path / "empty").paths).columns.tolist() == list(
        EVENT_COLUMNS
    )


def test_event_ids_from_mapping(paths: WorkspacePaths, tmp_path: Path) -> None:
    header = "uid,track,played_at,eid,kind\n"
    lines = [f"1,10,{T0},e1,skip", f"1,10,{T0},e2,", f"2,20,{T0},e1,play", f"3,30,{T0},,play"]
    mapping = ColumnMapping.parse(
        "user_id=uid,item_id=track,ts=played_at,event_id=eid,event_type=kind"
    )
    report = ingest_events(paths, write_csv(tmp_path / "a.csv", lines, header), mapping)
    assert (report.accepted, report.reasons) == (3, {"duplicate event_id in file": 1})
    events = read_events(paths)
    assert events[EVENT_ID].tolist()[:2] == ["e1", "e2"]
    assert events[EVENT_TYPE].tolist() == ["skip", "play", "play"]  # empty -> "play"
    assert len(events[EVENT_ID].iloc[2]) == 16  # missing id -> deterministic hash


def test_event_frame_defaults_and_deterministic_ids(paths: WorkspacePaths) -> None:
    frame = pd.DataFrame(
        {USER_ID: [1, 2], ITEM_ID: [3, 4], TS: pd.to_datetime([T0, T0], unit="s", utc=True)}
    )
    report = ingest_event_frame(paths, frame, "frame", now=NOW)
    assert (report.accepted, report.quarantined) == (2, 0)
    events = read_events(paths)
    assert events[WEIGHT].tolist() == [1.0, 1.0]
    assert events[EVENT_ID].tolist() == event_ids(frame).tolist()
    assert (
        ingest_event_frame(paths, frame.assign(**{EVENT_ID: event_ids(frame)}), "f").accepted == 0
    )


def test_ingest_log_has_one_line_per_ingest(paths: WorkspacePaths, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", [f"1,10,{T0},5,x", f",10,{T0},5,x"])
    ingest_events(paths, source, MAPPING, now=NOW)
    ingest_events(paths, source, MAPPING, now=NOW)
    lines = [json.loads(line) for line in paths.ingest_log.read_text().splitlines()]
    assert [(r["accepted"], r["quarantined"]) for r in lines] == [(1, 1), (0, 2)]
    assert lines[0]["ingest_id"] < lines[1]["ingest_id"]  # sortable ids


def test_users_upsert_and_lists(paths: WorkspacePaths, tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text(
        "id,signup_ts,age,gender,country,onboarding_items,onboarding_genres\n"
        "1,2024-01-01T00:00:00Z,30,f,SE,10|20,rock|jazz\n"
        "2,,,,,,\n"
        "x,,,,,,\n"
        "3,2024-01-01,old,m,US,,\n"
        "4,2024-01-01,40,m,US,1|a,\n"
    )
    report = ingest_users(paths, source, {USER_ID: "id"})
    assert (report.accepted, report.quarantined) == (2, 3)
    assert set(report.reasons) == {
        "non-integer user_id",
        "non-numeric age",
        "non-integer onboarding_items",
    }
    users = pd.read_parquet(paths.users).set_index(USER_ID)
    assert users.loc[1, ONBOARDING_ITEMS].tolist() == [10, 20]
    assert users.loc[1, ONBOARDING_GENRES].tolist() == ["rock", "jazz"]
    assert users.loc[2, ONBOARDING_ITEMS].tolist() == []
    update = pd.DataFrame({USER_ID: [2, 5], "country": ["NO", "DK"]})
    assert ingest_users(paths, update).accepted == 2
    users = pd.read_parquet(paths.users).set_index(USER_ID)
    assert users.index.tolist() == [1, 2, 5]
    assert users.loc[2, "country"] == "NO"


def test_items_upsert_last_row_wins(paths: WorkspacePaths) -> None:
    items = pd.DataFrame(
        {ITEM_ID: [1, 2, 2], "title": ["a", "b", "B"], GENRES: [["x", "y"], [], []]}
    )
    report = ingest_items(paths, items)
    assert report.reasons == {"duplicate item_id in file (a later row wins)": 1}
    stored = pd.read_parquet(paths.items)
    assert stored["title"].tolist() == ["a", "B"]
    assert stored[GENRES].tolist() == ["x|y", ""]
    assert stored["artist_id"].isna().all()
    with pytest.raises(IngestError, match="'sku'"):
        ingest_items(paths, items, {ITEM_ID: "sku"})


def test_friends_union(paths: WorkspacePaths) -> None:
    pairs = pd.DataFrame({USER_ID: [1, 1, 2], FRIEND_ID: [2, 3, 1]})
    assert ingest_friends(paths, pairs).accepted == 3
    assert ingest_friends(paths, pairs.iloc[:1]).accepted == 1
    assert len(pd.read_parquet(paths.friends)) == 3


# ---------------------------------------------------------------- staging, transactions, lock


def test_one_ingest_is_all_or_nothing(paths: WorkspacePaths, tmp_path: Path) -> None:
    """Events fine, items table without item_id: nothing of the ingest is published."""
    from userrep.ingest import IngestTransaction

    events = write_csv(tmp_path / "a.csv", [f"{u},{u},{T0},1,x" for u in range(5)])
    items = tmp_path / "items.csv"
    items.write_text("movie,title\n1,a\n")
    with pytest.raises(IngestError, match="'item_id'"), IngestTransaction(paths) as tx:
        assert tx.events(events, MAPPING, now=NOW).accepted == 5
        tx.items(items)
    assert written_files(paths) == [] and not paths.items.exists()
    assert not any((paths.data / ".staging").iterdir())
    with IngestTransaction(paths) as tx:  # the corrected rerun accepts every event
        tx.events(events, MAPPING, now=NOW)
        tx.items(items, {ITEM_ID: "movie"})
        assert tx.commit() == []
    assert len(read_events(paths)) == 5 and len(pd.read_parquet(paths.items)) == 1


def test_too_much_quarantined_publishes_only_the_quarantine(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    from userrep.ingest import IngestTransaction

    rows = [f"{u},{u},{T0},1,x" for u in range(2)] + [f"x{u},1,{T0},1,x" for u in range(8)]
    source = write_csv(tmp_path / "a.csv", rows)
    with IngestTransaction(paths) as tx:
        report = tx.events(source, MAPPING, now=NOW)
        problems = tx.commit(max_quarantined=0.5)
    assert problems == [
        f"{source}: 8 of 10 rows quarantined (80%; most: non-integer user_id), "
        "more than --max-quarantined 0.5"
    ]
    assert report.part_file is None and read_events(paths).empty
    bad = pd.read_parquet(report.quarantine_file)  # nothing lost: every bad row kept
    assert sorted(bad[SOURCE_ROW]) == list(range(2, 10))
    logged = json.loads(paths.ingest_log.read_text())
    assert (logged["accepted"], logged["rejected"]) == (2, problems)
    with IngestTransaction(paths) as tx:  # a looser threshold publishes it
        tx.events(source, MAPPING, now=NOW)
        assert tx.commit(max_quarantined=0.9) == []
    assert len(read_events(paths)) == 2


def test_nothing_accepted_fails_but_a_rerun_of_ingested_events_does_not(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    from userrep.ingest import IngestTransaction

    source = write_csv(tmp_path / "a.csv", [f"{u},{u},{T0},1,x" for u in range(3)])
    wrong = ColumnMapping.parse("user_id=note,item_id=track,ts=played_at")  # text user ids
    for mapping, problem in [
        (
            wrong,
            f"{source}: nothing accepted (3 of 3 rows quarantined; most: non-integer user_id)",
        ),
        (MAPPING, None),
        (MAPPING, None),  # every event already ingested: idempotent, not a failure
    ]:
        with IngestTransaction(paths) as tx:
            tx.events(source, mapping, now=NOW)
            assert tx.commit(max_quarantined=0.5) == ([problem] if problem else [])
    assert len(read_events(paths)) == 3


def test_killed_ingest_leftovers_are_ignored_and_cleaned(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    """An unjournaled staging (killed before publishing) and an old-style temp file inside
    data/events: readers never see them, the next ingest removes them and publishes alone."""
    import duckdb

    from representation.features import events_source

    ingest_events(paths, write_csv(tmp_path / "a.csv", [f"1,1,{T0},1,x"]), MAPPING, now=NOW)
    killed = paths.data / ".staging" / "killed"
    killed.mkdir(parents=True)
    (killed / "0000-part-x.parquet").write_bytes(b"half a parquet")
    legacy = paths.events / ".tmp-abcd.parquet"
    legacy.write_bytes(b"half a parquet")
    with pytest.raises(duckdb.Error, match="magic"):  # what readers hit before cleanup
        duckdb.connect().sql(f"SELECT count(*) FROM {events_source(paths)}").fetchone()
    ingest_events(paths, write_csv(tmp_path / "b.csv", [f"2,2,{T0},1,x"]), MAPPING, now=NOW)
    assert not legacy.exists() and not killed.exists()
    assert duckdb.connect().sql(f"SELECT count(*) FROM {events_source(paths)}").fetchone() == (2,)


def test_a_journaled_ingest_is_finished_by_the_next_writer(
    paths: WorkspacePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after its commit journal, halfway through the moves: the next writer finishes
    it (every file, one log line), and a rerun of the same file then adds nothing."""
    import userrep.ingest.staging as staging

    source = write_csv(tmp_path / "a.csv", [f"{u},{u},{T0},1,x" for u in range(4)] + ["x,1,1,1,x"])
    real = staging._finish
    monkeypatch.setattr(staging, "_finish", lambda *a: None)  # "killed" right after the journal
    ingest_events(paths, source, MAPPING, now=NOW)
    monkeypatch.setattr(staging, "_finish", real)
    (journal,) = (paths.data / ".staging").glob(f"*/{staging.JOURNAL}")
    first_move = json.loads(journal.read_text())["moves"][0]
    staging.os.replace(paths.root / first_move[0], paths.root / first_move[1])  # half moved
    assert len(read_events(paths)) == 4  # the part moved; quarantine and sidecar not yet
    again = ingest_events(paths, source, MAPPING, now=NOW)
    assert len(read_events(paths)) == 4 and again.accepted == 0
    assert len(list(paths.quarantine.glob("*.parquet"))) == 2  # the first run's and this one's
    kinds = [json.loads(line)["accepted"] for line in paths.ingest_log.read_text().splitlines()]
    assert kinds == [4, 0]
    assert not any((paths.data / ".staging").iterdir())


def test_concurrent_ingests_of_one_file_add_each_event_once(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    import threading

    source = write_csv(tmp_path / "a.csv", [f"{u},{u % 7},{T0 + u},1,x" for u in range(300)])
    reports: list = []
    threads = [
        threading.Thread(
            target=lambda: reports.append(ingest_events(paths, source, MAPPING, now=NOW))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.accepted for r in reports) == [0, 0, 300]
    events = read_events(paths)
    assert len(events) == 300 and events[EVENT_ID].is_unique


def test_a_second_writer_waits_then_names_the_job_holding_the_lock(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from userrep.lock import HOLDER_FILE, WorkspaceBusy, workspace_lock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from userrep.lock import workspace_lock\n"
            f"with workspace_lock({str(paths.root)!r}, 'train'):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        source = write_csv(tmp_path / "a.csv", [f"1,1,{T0},1,x"])
        busy_lock = workspace_lock(paths, "ingest", timeout=0.3)
        with pytest.raises(WorkspaceBusy, match=r"locked by `train` \(pid \d+") as busy, busy_lock:
            ingest_events(paths, source, MAPPING, now=NOW)
        assert "ingest waited" in str(busy.value)
        assert read_events(paths).empty
    finally:
        holder.communicate("")  # lets it leave the block
    assert holder.returncode == 0 and not (paths.root / HOLDER_FILE).exists()
    assert ingest_events(paths, source, MAPPING, now=NOW).accepted == 1  # free again


def test_stale_offline_temp_files_are_removed_by_the_next_writer(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    """A killed features build / embed leaves hidden temp files (never matched by readers);
    the next writer removes those older than STALE_TEMP_S and leaves a live writer's alone."""
    import os

    from userrep.ingest.staging import STALE_TEMP_S

    old = paths.user_onboarding / ".asof=20240101T000000.parquet.tmp"
    parts = paths.user_embedding / ".b1__20240101T000000.parquet.parts"
    fresh = paths.user_embedding / ".b1__nrt-1.parquet.1234abcd.tmp"
    for f in (old, fresh):
        f.write_bytes(b"half")
    parts.mkdir()
    (parts / "part-00000.parquet").write_bytes(b"half")
    past = pd.Timestamp.now().timestamp() - STALE_TEMP_S - 60
    for f in (old, parts):
        os.utime(f, (past, past))
    ingest_events(paths, write_csv(tmp_path / "a.csv", [f"1,1,{T0},1,x"]), MAPPING, now=NOW)
    assert (old.exists(), parts.exists(), fresh.exists()) == (False, False, True)
