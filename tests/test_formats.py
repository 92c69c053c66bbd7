"""Input formats and the one timestamp rule: planted .dat / .txt / renamed-column tables read
into known rows; epoch numbers in the wrong unit are caught by every reader, naming the unit."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from userrep.cli import app
from userrep.columns import GENRES, ITEM_ID, ONBOARDING_GENRES, REASON, SOURCE_ROW, TS, USER_ID
from userrep.ingest import (
    ColumnMapping,
    IngestError,
    TextFormat,
    ingest_events,
    ingest_items,
    ingest_users,
    read_events,
    read_table,
    read_user_events,
)
from userrep.ingest.common import parse_ts_checked
from userrep.ingest.tables import ITEM_SCHEMA, USER_SCHEMA
from userrep.settings import Settings, WorkspacePaths

NOW = pd.Timestamp("2024-01-01", tz="UTC")
ML_MAPPING = ColumnMapping.parse("user_id=1,item_id=2,weight=3,ts=4")
# MovieLens 1M's ratings.dat: UserID::MovieID::Rating::Timestamp, no header
RATINGS = [
    "1::1193::5::978300760",
    "1::661::3::978302109",
    "2::3::4::888549960",  # 1998-02-27 03:26:00 UTC
    "2::x::4::888549960",  # bad item id
    "3::10::4::888549960000",  # milliseconds among seconds
]


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    return Settings(workspace=tmp_path / "ws").paths.ensure()


@pytest.fixture(autouse=True)
def _keep_env() -> Iterator[None]:
    saved = os.environ.get("USERREP_WORKSPACE")
    yield
    if saved is None:
        os.environ.pop("USERREP_WORKSPACE", None)
    else:
        os.environ["USERREP_WORKSPACE"] = saved


def _lines(path: Path, lines: list[str]) -> Path:
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["ratings.dat", "ratings.dat.gz"])
def test_a_double_colon_dat_file_without_header(
    paths: WorkspacePaths, tmp_path: Path, name: str
) -> None:
    source = _lines(tmp_path / name, RATINGS)
    report = ingest_events(paths, source, ML_MAPPING, now=NOW, chunk_rows=2)
    assert (report.read, report.accepted, report.quarantined) == (5, 3, 2)
    assert report.accepted + report.quarantined == report.read
    assert report.reasons == {
        "non-integer item_id": 1,
        "ts implausible as epoch s (looks like ms: pass --ts-unit ms)": 1,
    }
    bad = pd.read_parquet(report.quarantine_file)
    assert bad[SOURCE_ROW].tolist() == [3, 4]
    assert list(bad.columns) == ["1", "2", "3", "4", REASON, SOURCE_ROW]
    assert bad["2"].tolist() == ["x", "10"]  # the source text, as read
    events = read_events(paths).sort_values([USER_ID, ITEM_ID])
    assert events[USER_ID].tolist() == [1, 1, 2]
    assert events[ITEM_ID].tolist() == [661, 1193, 3]
    assert events["weight"].tolist() == [3.0, 5.0, 4.0]
    assert events[TS].iloc[2] == pd.Timestamp("1998-02-27 03:26:00", tz="UTC")


def test_separators_across_read_boundaries_and_suffix_defaults(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    # 40k rows: the "::" replacement runs over many reads of the stream, splitting separators
    rows = [f"{u}::{u % 97}::1::{888549960 + u}" for u in range(40_000)]
    report = ingest_events(paths, _lines(tmp_path / "big.dat", rows), ML_MAPPING, now=NOW)
    assert (report.read, report.accepted) == (40_000, 40_000)
    events = read_events(paths).sort_values(USER_ID)
    assert events[ITEM_ID].tolist() == [u % 97 for u in range(40_000)]
    # .txt is tab-separated with a header; --sep and --no-header override the suffix
    txt = _lines(tmp_path / "plays.txt", ["uid\ttrack\tat", f"5\t50\t{888549960}"])
    m = ColumnMapping.parse("user_id=uid,item_id=track,ts=at")
    assert ingest_events(paths, txt, m, now=NOW).accepted == 1
    semi = _lines(tmp_path / "plays.csv", [f"6;60;{888549960}"])
    fmt = TextFormat(sep=";", header=False)
    assert ingest_events(paths, semi, ColumnMapping("1", "2", "3"), now=NOW, fmt=fmt).accepted == 1
    with pytest.raises(IngestError, match=r"no header: map by position, e\.g\. user_id=1"):
        ingest_events(paths, semi, now=NOW, fmt=fmt)
    with pytest.raises(IngestError, match="unsupported file type 'plays.json'"):
        ingest_events(paths, tmp_path / "plays.json", now=NOW)


def test_malformed_dat_lines_are_quarantined_with_their_fields_and_the_rest_accepted(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    """A line of too few or too many fields is one quarantined row, not a failed file."""
    lines = [*RATINGS[:2], "1::2::3", *RATINGS[2:3], "4::5::6::888549960::extra"]
    source = _lines(tmp_path / "ratings.dat", lines)
    report = ingest_events(paths, source, ML_MAPPING, now=NOW, chunk_rows=2)
    assert (report.read, report.accepted, report.quarantined) == (5, 3, 2)
    assert report.reasons == {"wrong number of fields": 2}
    q = pd.read_parquet(report.quarantine_file)
    assert q[["1", "2", "3", "4"]].values.tolist() == [
        ["1", "2", "3", None],
        ["4", "5", "6", "888549960::extra"],  # the extra field stays, separator and all
    ]
    assert q["source_row"].isna().all()  # the streaming reader does not say where they were


def test_users_and_items_tables_with_renamed_columns_and_dat(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    users = _lines(
        tmp_path / "people.csv",
        [
            "uid,joined,years,likes",
            "1,888549960,31,rock|jazz",
            "2,2001-01-01T00:00:00Z,,",
            "3,888549960000,40,pop",  # ms among seconds
        ],
    )
    mapping = "user_id=uid,signup_ts=joined,age=years,onboarding_genres=likes"
    report = ingest_users(paths, users, mapping, now=NOW)
    assert (report.read, report.accepted, report.quarantined) == (3, 2, 1)
    assert report.reasons == {
        "signup_ts implausible as epoch s (looks like ms: pass --ts-unit ms)": 1
    }
    table = read_table(paths.users, USER_SCHEMA).set_index(USER_ID)
    assert table.loc[1, "signup_ts"] == pd.Timestamp("1998-02-27 03:26:00", tz="UTC")
    assert table.loc[1, "age"] == 31.0
    assert list(table.loc[1, ONBOARDING_GENRES]) == ["rock", "jazz"]
    # the same rows in milliseconds with --ts-unit ms: all three accepted, the same times
    ms = _lines(tmp_path / "people_ms.tsv", ["uid\tjoined", "1\t888549960000", "3\t888549960000"])
    report = ingest_users(paths, ms, {"user_id": "uid", "signup_ts": "joined"}, ts_unit="ms")
    assert report.accepted == 2
    assert read_table(paths.users, USER_SCHEMA).set_index(USER_ID).loc[3, "signup_ts"] == (
        pd.Timestamp("1998-02-27 03:26:00", tz="UTC")
    )
    # MovieLens' movies.dat: MovieID::Title::Genres, "|"-joined genres, titles with ':' and ','
    movies = _lines(
        tmp_path / "movies.dat",
        [
            "1::Toy Story (1995)::Animation|Children's",
            "2::Dr. Strangelove or: How, Why (1963)::Comedy",
        ],
    )
    report = ingest_items(paths, movies, "item_id=1,title=2,genres=3")
    assert (report.read, report.accepted) == (2, 2)
    items = read_table(paths.items, ITEM_SCHEMA).set_index(ITEM_ID)
    assert items.loc[2, "title"] == "Dr. Strangelove or: How, Why (1963)"
    assert items.loc[1, GENRES] == "Animation|Children's"
    with pytest.raises(IngestError, match="unknown canonical column 'rating'"):
        ingest_items(paths, movies, "item_id=1,rating=2")


def test_the_unit_rule_names_the_unit_and_the_one_that_fits() -> None:
    cutoff = (NOW + pd.Timedelta(days=1)).value
    values = pa.array([888549960, 888549960 * 1000, 888549960 * 10**6, 5, None], pa.int64())
    ns, bad, rules = parse_ts_checked(values, "s", cutoff)
    assert pd.Timestamp(ns[0], tz="UTC") == pd.Timestamp("1998-02-27 03:26:00", tz="UTC")
    hits = {reason: np.flatnonzero(mask).tolist() for reason, mask in rules if mask.any()}
    assert hits == {
        "ts implausible as epoch s (looks like ms: pass --ts-unit ms)": [1],
        "ts implausible as epoch s (looks like us: pass --ts-unit us)": [2],
        "ts implausible as epoch s (before 1990)": [3],
    }
    # read in ms, the seconds are the implausible ones; ISO text is never judged
    _, _, rules = parse_ts_checked(pa.array(["888549960", "888549960000"]), "ms", cutoff)
    hits = {reason: np.flatnonzero(mask).tolist() for reason, mask in rules if mask.any()}
    assert hits == {"ts implausible as epoch ms (looks like s: pass --ts-unit s)": [0]}
    _, _, rules = parse_ts_checked(pa.array(["1985-01-01T00:00:00Z"]), "s", cutoff)
    assert not any(mask.any() for _, mask in rules)


def test_read_user_events_uses_the_ingest_rule(tmp_path: Path) -> None:
    plays = _lines(tmp_path / "plays.csv", ["item_id,ts,weight", "7,888549960,2", "8,888549961,1"])
    frame = read_user_events(plays, now=NOW)
    assert frame[TS].tolist() == [
        pd.Timestamp("1998-02-27 03:26:00", tz="UTC"),
        pd.Timestamp("1998-02-27 03:26:01", tz="UTC"),
    ]
    assert frame[ITEM_ID].tolist() == [7, 8] and frame["weight"].tolist() == [2.0, 1.0]
    ms = _lines(tmp_path / "plays_ms.csv", ["item_id,ts", "7,888549960000"])
    with pytest.raises(
        IngestError,
        match=r"row 0 \(ts '888549960000'\): ts implausible as "
        r"epoch s \(looks like ms: pass --ts-unit ms\)",
    ):
        read_user_events(ms, now=NOW)
    assert read_user_events(ms, ts_unit="ms", now=NOW)[TS].tolist() == frame[TS].tolist()[:1]


def _cli(*args: str):  # -> click.testing.Result
    return CliRunner().invoke(app, list(args))


def test_cli_ingest_of_movielens_dat_tables(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ratings = _lines(tmp_path / "ratings.dat", RATINGS[:3])
    users = _lines(tmp_path / "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072"])
    movies = _lines(
        tmp_path / "movies.dat",
        ["1193::One Flew (1975)::Drama", "661::J (1996)::X", "3::G (1995)::Y"],
    )
    result = _cli(
        "-w", str(ws), "ingest", str(ratings), "--mapping", "user_id=1,item_id=2,weight=3,ts=4",
        "--users", str(users), "--users-mapping", "user_id=1,gender=2,age=3",
        "--items", str(movies), "--items-mapping", "item_id=1,title=2,genres=3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "ratings.dat: read 3 accepted 3 quarantined 0" in out
    assert "users.dat: read 2 accepted 2 quarantined 0" in out
    paths = Settings(workspace=ws).paths
    assert read_table(paths.users, USER_SCHEMA).set_index(USER_ID).loc[2, "gender"] == "M"
    assert read_events(paths)[TS].min() == pd.Timestamp("1998-02-27 03:26:00", tz="UTC")


def test_cli_ingest_in_the_wrong_unit_is_refused_with_the_unit_that_fits(tmp_path: Path) -> None:
    source = _lines(
        tmp_path / "plays.csv", ["user_id,item_id,ts", "1,2,888549960000", "1,3,888549961000"]
    )
    result = _cli("-w", str(tmp_path / "ws"), "ingest", str(source))
    assert result.exit_code == 1, result.output
    assert (
        "nothing accepted (2 of 2 rows quarantined; most: ts implausible as epoch s "
        "(looks like ms: pass --ts-unit ms))" in result.stderr.replace("\n", "")
    )
    result = _cli("-w", str(tmp_path / "ws"), "ingest", str(source), "--ts-unit", "ms")
    assert result.exit_code == 0, result.output
    result = _cli("-w", str(tmp_path / "ws"), "ingest", str(source), "--ts-unit", "minutes")
    assert result.exit_code == 2 and "error: unknown ts_unit 'minutes'" in result.stderr


def test_nrt_events_use_the_ingest_timestamp_rule() -> None:
    from nrt.events import parse_events

    play = {"user_id": 1, "item_id": 2}
    raws = [
        {**play, "ts": 888549960},
        {**play, "ts": "888549960"},  # numeric text: epoch seconds, as ingest reads it
        {**play, "ts": 888549960000},
        {**play, "ts": "1998-02-27T03:26:00Z"},
        {"user_id": 3, "signup_ts": 888549960000, "onboarding_items": [2]},
    ]
    good, bad = parse_events(raws, now=NOW)
    expected_us = pd.Timestamp("1998-02-27 03:26:00", tz="UTC").value // 1000
    assert [(pos, e.ts_us) for pos, e in good] == [
        (0, expected_us),
        (1, expected_us),
        (3, expected_us),
    ]
    assert bad == [
        (2, "ts implausible as epoch s (looks like ms: pass --ts-unit ms)"),
        (4, "signup_ts implausible as epoch s (looks like ms: pass --ts-unit ms)"),
    ]
    good, bad = parse_events(raws, now=NOW, ts_unit="ms")
    assert [pos for pos, _ in good] == [2, 3, 4]
    assert bad[0] == (0, "ts implausible as epoch ms (looks like s: pass --ts-unit s)")


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_one_event_fast_path_reads_epoch_numbers_as_the_full_rule_does(unit: str) -> None:
    """NRT parses integer and digit-text times without pyarrow; each value must end as the
    full rule (parse_ts_checked) has it: the same microseconds, or the same refusal."""
    from nrt.events import _parse_us

    now_us = 1_800_000_000 * 10**6
    cutoff_ns = now_us * 1000 + 86_400 * 10**9
    values: list[object] = [888549960, 888549960123, "888549960", " 1700000000 ", "-5", 0]
    values += [2**62, "99999999999999999999", 1_800_000_000 + 7 * 86_400, "+1700000000"]
    for value in values:
        ns, bad, rules = parse_ts_checked(pa.array([str(value).strip()]), unit, cutoff_ns)
        refused = bad[0] or any(mask[0] for _, mask in rules)
        if refused:
            with pytest.raises(ValueError):
                _parse_us(value, TS, now_us, unit)
        else:
            assert _parse_us(value, TS, now_us, unit) == int(ns[0]) // 1000, value


def test_nrt_commands_take_the_ingest_unit_and_refuse_another(tmp_path: Path) -> None:
    from nrt.config import NrtConfig

    assert NrtConfig().ts_unit == "s" and NrtConfig(ts_unit="ms").ts_unit == "ms"
    for command in ("serve", "consume"):
        got = CliRunner().invoke(app, ["-w", str(tmp_path), "nrt", command, "--ts-unit", "h"])
        assert got.exit_code == 2 and "error: --ts-unit" in got.output, got.output


def test_a_latin1_dat_file_is_read_with_its_encoding(paths: WorkspacePaths, tmp_path: Path) -> None:
    """MovieLens 1M's movies.dat is latin-1: as UTF-8 it is refused whole, with --encoding
    latin-1 the titles come through intact."""
    movies = tmp_path / "movies.dat"
    movies.write_bytes("1::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1"))
    with pytest.raises(IngestError, match="cannot read"):
        ingest_items(paths, movies, "item_id=1,title=2,genres=3")
    report = ingest_items(
        paths, movies, "item_id=1,title=2,genres=3", fmt=TextFormat(encoding="latin-1")
    )
    assert report.accepted == 1
    assert (
        read_table(paths.items, ITEM_SCHEMA).set_index(ITEM_ID).loc[1, "title"] == "Amélie (2001)"
    )
    with pytest.raises(IngestError, match="unknown encoding"):
        TextFormat(encoding="latin-99")
