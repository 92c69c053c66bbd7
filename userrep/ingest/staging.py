"""Staged publishing of what one ingest writes: all or nothing, invisible until published.

Every file of an ingest (event part and its id sidecar, quarantine files, the rewritten users /
items / friends tables) is written under <workspace>/data/.staging/<ingest id>/: outside every
directory a reader globs (`data/events/*.parquet` matches hidden files too), on the same
filesystem, so publishing is os.replace. Publishing writes a journal (COMMIT.json: every move
and the ingest-log records) first, then moves the files and appends the log. A job killed
before the journal leaves a staging directory the next writer deletes (nothing was published);
one killed after it leaves a journal the next writer finishes (everything is published).
`recover` does both, and removes the temp files other writers (features, embed) leave when
killed; the workspace lock runs it whenever a writer takes the lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from userrep.faults import fault_point
from userrep.settings import WorkspacePaths

log = logging.getLogger(__name__)

STAGING_DIR = ".staging"  # under <workspace>/data
JOURNAL = "COMMIT.json"
# Temp files of earlier versions, written inside the globbed directories.
_LEGACY_LEFTOVERS = (
    ("events", ".tmp-*.parquet"),
    ("events", "*.keys.tmp.npy"),
    ("quarantine", ".tmp-*.parquet"),
    ("data", ".tmp-*.parquet"),
)
# Temp files and part folders of the offline writers (features, embed, NRT flush): hidden and
# not ending in .parquet, so readers never match them. The batch writers hold the workspace
# lock; the NRT flusher does not, but finishes a file in seconds: older ones are leftovers.
_OFFLINE_TEMPS = (".*.tmp", ".*.parts")
STALE_TEMP_S = 600.0


def staging_root(paths: WorkspacePaths) -> Path:
    return paths.data / STAGING_DIR


class Stage:
    """Files staged for one publish: `path(target)` gives where to write a file that will
    become `target`; `publish` moves them all (journaled), `discard` drops them."""

    def __init__(self, paths: WorkspacePaths, stage_id: str):
        self.paths = paths
        self.dir = staging_root(paths) / stage_id
        self.moves: list[tuple[Path, Path]] = []  # (staged file, target), in publish order
        self.log_records: list[dict] = []

    def path(self, target: Path) -> Path:
        """A fresh staged file for `target` (targets staged twice: the later one wins)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        staged = self.dir / f"{len(self.moves):04d}-{target.name}"
        self.moves.append((staged, target))
        return staged

    def staged(self, target: Path) -> Path | None:
        """The newest staged file for `target` that exists, if any (upserts build on it)."""
        for staged, t in reversed(self.moves):
            if t == target and staged.exists():
                return staged
        return None

    def drop(self, keep: set[Path]) -> None:
        """Forget every staged file whose target is not in `keep` (they are not published)."""
        for staged, target in self.moves:
            if target not in keep:
                staged.unlink(missing_ok=True)
        self.moves = [(s, t) for s, t in self.moves if t in keep]

    def publish(self) -> None:
        """Journal, then move every staged file into place and append the log records."""
        moves = [(s, t) for s, t in self.moves if s.exists()]
        if not moves and not self.log_records:
            self.discard()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        root = self.paths.root
        journal = {
            "moves": [[str(s.relative_to(root)), str(t.relative_to(root))] for s, t in moves],
            "log": self.log_records,
        }
        tmp = self.dir / f".{JOURNAL}.tmp"
        tmp.write_text(json.dumps(journal))
        fault_point("ingest:before-journal")
        os.replace(tmp, self.dir / JOURNAL)  # the commit point
        fault_point("ingest:journaled")
        _finish(self.paths, self.dir, journal)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _finish(paths: WorkspacePaths, directory: Path, journal: dict) -> None:
    """Carry out a journal (again after a crash: every step is idempotent)."""
    root = paths.root
    for i, (staged, target) in enumerate(journal["moves"]):
        src, dst = root / staged, root / target
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        if i == 0:
            fault_point("ingest:half-moved")
    _append_log_once(paths, journal["log"])
    shutil.rmtree(directory, ignore_errors=True)


def _append_log_once(paths: WorkspacePaths, records: list[dict]) -> None:
    """Append ingest-log records, skipping those already there (a finished journal re-run)."""
    if not records:
        return
    done: set[tuple] = set()
    if paths.ingest_log.exists():
        for line in paths.ingest_log.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            done.add((r.get("ingest_id"), r.get("kind")))
    new = [r for r in records if (r.get("ingest_id"), r.get("kind")) not in done]
    if not new:
        return
    paths.ingest_log.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.ingest_log, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in new))


def recover(paths: WorkspacePaths) -> tuple[int, int]:
    """Finish journaled publishes and delete unjournaled staging left by killed writers (and
    earlier versions' temp files); returns (finished, removed). Call under the workspace lock."""
    finished = removed = 0
    root = staging_root(paths)
    if root.exists():
        for directory in sorted(p for p in root.iterdir() if p.is_dir()):
            journal = directory / JOURNAL
            if journal.exists():
                log.warning("finishing the ingest publish a killed job left in %s", directory)
                _finish(paths, directory, json.loads(journal.read_text()))
                finished += 1
            else:
                log.info("removing the staging a killed ingest left in %s", directory)
                shutil.rmtree(directory, ignore_errors=True)
                removed += 1
    for where, pattern in _LEGACY_LEFTOVERS:
        base = paths.data if where == "data" else getattr(paths, where)
        if base.exists():
            for leftover in base.glob(pattern):
                leftover.unlink(missing_ok=True)
                removed += 1
    return finished, removed + _remove_stale_temps(paths)


def _remove_stale_temps(paths: WorkspacePaths) -> int:
    """Delete offline temp files / part folders older than STALE_TEMP_S (killed writers')."""
    cutoff, removed = time.time() - STALE_TEMP_S, 0
    dirs = (paths.user_history, paths.user_onboarding, paths.user_embedding, paths.item_vectors)
    for d in (d for d in dirs if d.exists()):
        for leftover in (p for pattern in _OFFLINE_TEMPS for p in d.glob(pattern)):
            try:
                if leftover.stat().st_mtime > cutoff:
                    continue
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed += 1
            except FileNotFoundError:  # finished (renamed) meanwhile
                continue
    return removed
