"""One ingest = one transaction: every table it is given (events, users, items, friends) is
validated and staged first; then all of it is published together, or none of it.

    with IngestTransaction(paths) as tx:
        tx.events(path, mapping)
        tx.users(users_path)
        problems = tx.commit(max_quarantined=0.5)  # [] when published

Held under the workspace lock from start to publish, so two ingests of one file run one after
the other and the second finds every event already ingested. A table that fails as a whole
(unreadable, a mapped column missing) raises IngestError and nothing is published; leaving
the block without commit (an exception) publishes nothing either. commit(max_quarantined)
refuses to publish any data when a table accepts nothing or quarantines more than that share
of its new rows; its quarantine files are still published, so no rejected row is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from userrep.faults import fault_point
from userrep.ingest.common import (
    ColumnMapping,
    IngestReport,
    TextFormat,
    log_record,
    new_ingest_id,
    quarantine_problem,
)
from userrep.ingest.events import existing_keys, stage_event_frame, stage_events
from userrep.ingest.staging import Stage
from userrep.ingest.tables import FrameOrPath, Mapping, stage_friends, stage_items, stage_users
from userrep.lock import workspace_lock
from userrep.settings import WorkspacePaths


class IngestTransaction:
    """Stage tables with events / event_frame / users / items / friends, then commit."""

    def __init__(self, paths: WorkspacePaths, job: str = "ingest"):
        self.paths, self.job = paths, job
        self.reports: list[tuple[str, IngestReport]] = []  # (kind, report) in staging order
        self.rejected: list[str] = []  # why commit published no data (empty: it did)
        self._known: np.ndarray | None = None  # keys of events ingested or staged
        self._done = False

    def __enter__(self) -> IngestTransaction:
        self._lock = workspace_lock(self.paths, self.job)
        self._lock.__enter__()  # also finishes or removes what a killed ingest left
        self.stage = Stage(self.paths, new_ingest_id())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._done:
                self.stage.discard()
        finally:
            self._lock.__exit__(exc_type, exc, tb)

    # ------------------------------------------------------------ staging one table each

    def _add(self, kind: str, report: IngestReport) -> IngestReport:
        self.reports.append((kind, report))
        return report

    def _stage_events(self, stage: Callable[[Stage, np.ndarray], tuple]) -> IngestReport:
        if self._known is None:
            self._known = existing_keys(self.paths)
        report, keys = stage(self.stage, self._known)
        if len(keys):  # a second event table of this ingest is deduplicated against the first
            self._known = np.union1d(self._known, keys)
        return self._add("events", report)

    def events(
        self,
        source: Path,
        mapping: ColumnMapping = ColumnMapping(),
        *,
        ts_unit: str | None = None,
        now: pd.Timestamp | None = None,
        chunk_rows: int = 1_000_000,
        fmt: TextFormat = TextFormat(),
    ) -> IngestReport:
        return self._stage_events(
            lambda stage, known: stage_events(
                stage,
                known,
                self.paths,
                source,
                mapping,
                ts_unit=ts_unit,
                now=now,
                chunk_rows=chunk_rows,
                fmt=fmt,
            )
        )

    def event_frame(
        self,
        frame: pd.DataFrame,
        source_name: str,
        now: pd.Timestamp | None = None,
        chunk_rows: int = 1_000_000,
    ) -> IngestReport:
        return self._stage_events(
            lambda stage, known: stage_event_frame(
                stage, known, self.paths, frame, source_name, now, chunk_rows
            )
        )

    def users(
        self,
        source: FrameOrPath,
        mapping: Mapping = None,
        *,
        fmt: TextFormat = TextFormat(),
        ts_unit: str | None = None,
        now: pd.Timestamp | None = None,
    ) -> IngestReport:
        report = stage_users(
            self.stage, self.paths, source, mapping, fmt=fmt, ts_unit=ts_unit, now=now
        )
        return self._add("users", report)

    def items(
        self, source: FrameOrPath, mapping: Mapping = None, *, fmt: TextFormat = TextFormat()
    ) -> IngestReport:
        return self._add("items", stage_items(self.stage, self.paths, source, mapping, fmt=fmt))

    def friends(
        self, source: FrameOrPath, mapping: Mapping = None, *, fmt: TextFormat = TextFormat()
    ) -> IngestReport:
        report = stage_friends(self.stage, self.paths, source, mapping, fmt=fmt)
        return self._add("friends", report)

    def table(self, target: Path, data: pd.DataFrame | pa.Table) -> None:
        """Any other file of the ingest (the synthetic data's ground truth), published with it."""
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data)
        pq.write_table(table, self.stage.path(target))

    # ------------------------------------------------------------ publishing

    def problems(self, max_quarantined: float) -> list[str]:
        """Why this ingest must not be published (quarantine_problem of each table)."""
        found = (quarantine_problem(r, max_quarantined) for _, r in self.reports)
        return [p for p in found if p is not None]

    def commit(self, max_quarantined: float | None = None) -> list[str]:
        """Publish everything staged, or (when max_quarantined is given and a table fails it)
        only the quarantine files; returns the problems (empty: the data was published)."""
        if self._done:
            raise RuntimeError("this ingest is already committed")
        fault_point("ingest:staged")
        problems = [] if max_quarantined is None else self.problems(max_quarantined)
        if problems:
            self.stage.drop(keep={t for _, t in self.stage.moves if self._is_quarantine(t)})
            for _, report in self.reports:
                report.part_file = None
        extra = {"rejected": problems} if problems else {}
        self.stage.log_records = [log_record(r, kind, **extra) for kind, r in self.reports]
        self.stage.publish()
        self.rejected = problems
        self._done = True
        return problems

    def _is_quarantine(self, target: Path) -> bool:
        return target.parent == self.paths.quarantine


def _one(paths: WorkspacePaths, stage: Callable[[IngestTransaction], IngestReport]) -> IngestReport:
    with IngestTransaction(paths) as tx:
        report = stage(tx)
        tx.commit()
    return report


def ingest_events(
    paths: WorkspacePaths,
    source: Path,
    mapping: ColumnMapping = ColumnMapping(),
    *,
    ts_unit: str | None = None,
    now: pd.Timestamp | None = None,
    chunk_rows: int = 1_000_000,
    fmt: TextFormat = TextFormat(),
) -> IngestReport:
    """Validate an event file (parquet or delimited text) and append its new events as one
    part."""
    return _one(
        paths,
        lambda tx: tx.events(
            source, mapping, ts_unit=ts_unit, now=now, chunk_rows=chunk_rows, fmt=fmt
        ),
    )


def ingest_event_frame(
    paths: WorkspacePaths,
    frame: pd.DataFrame,
    source_name: str,
    now: pd.Timestamp | None = None,
    chunk_rows: int = 1_000_000,
) -> IngestReport:
    """Ingest a frame that already has canonical columns (built-in loaders, synthetic data)."""
    return _one(paths, lambda tx: tx.event_frame(frame, source_name, now, chunk_rows))


def ingest_users(
    paths: WorkspacePaths,
    frame_or_path: FrameOrPath,
    mapping: Mapping = None,
    *,
    fmt: TextFormat = TextFormat(),
    ts_unit: str | None = None,
    now: pd.Timestamp | None = None,
) -> IngestReport:
    """Upsert users by user_id (whole rows replace); lists may be "|"-separated text."""
    return _one(
        paths, lambda tx: tx.users(frame_or_path, mapping, fmt=fmt, ts_unit=ts_unit, now=now)
    )


def ingest_items(
    paths: WorkspacePaths,
    frame_or_path: FrameOrPath,
    mapping: Mapping = None,
    *,
    fmt: TextFormat = TextFormat(),
) -> IngestReport:
    """Upsert catalog items by item_id; genres may be a list or "|"-joined text."""
    return _one(paths, lambda tx: tx.items(frame_or_path, mapping, fmt=fmt))


def ingest_friends(
    paths: WorkspacePaths,
    frame_or_path: FrameOrPath,
    mapping: Mapping = None,
    *,
    fmt: TextFormat = TextFormat(),
) -> IngestReport:
    """Add (user_id, friend_id) pairs to the friends table (a set union)."""
    return _one(paths, lambda tx: tx.friends(frame_or_path, mapping, fmt=fmt))
