"""One writer at a time per workspace: `workspace_lock(settings, job)` around every job that
writes (ingest, encoders build, features build, train, embed, batches promote / retire).

A real OS lock (filelock: flock on <workspace>/.userrep.lock), so the kernel releases it when
its holder dies, SIGKILL included. The holder writes its job, pid and start time beside it
(.userrep.lock.holder). A second writer waits up to USERREP_LOCK_TIMEOUT seconds (default
600), logging whom it waits for, then raises WorkspaceBusy naming that job. Re-entrant in a
thread (the demo runs each job's command inside one process); other threads of the process
wait like other processes. Taking the lock first finishes or removes what a killed writer
left (userrep.ingest.staging.recover).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from userrep.settings import Settings, WorkspacePaths

log = logging.getLogger(__name__)

LOCK_FILE = ".userrep.lock"
HOLDER_FILE = ".userrep.lock.holder"
TIMEOUT_ENV = "USERREP_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
_REPEAT_S = 30.0  # a waiting writer says again whom it waits for this often

_guard = threading.Lock()
_thread_locks: dict[Path, threading.RLock] = {}
_held: dict[Path, tuple[int, str]] = {}  # workspace -> (holding thread, job)


class WorkspaceBusy(RuntimeError):
    """Another job held the workspace lock for longer than the timeout."""


def _root(target: Settings | WorkspacePaths | Path) -> Path:
    if isinstance(target, Settings):
        return target.workspace
    if isinstance(target, WorkspacePaths):
        return target.root
    return Path(target)


def lock_timeout() -> float:
    """Seconds a writer waits for the lock (USERREP_LOCK_TIMEOUT; default 600)."""
    value = os.environ.get(TIMEOUT_ENV)
    return DEFAULT_TIMEOUT_S if not value else float(value)


def holder(workspace: Path) -> dict | None:
    """The job holding (or last holding) the workspace lock, as it described itself."""
    try:
        return json.loads((Path(workspace) / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _describe(info: dict | None) -> str:
    if not info:
        return "another job"
    return f"`{info.get('job')}` (pid {info.get('pid')}, since {info.get('since')})"


@contextmanager
def workspace_lock(
    target: Settings | WorkspacePaths | Path, job: str, timeout: float | None = None
) -> Iterator[None]:
    """Hold the workspace's writer lock for `job`; waits up to `timeout` seconds (default
    lock_timeout()), then raises WorkspaceBusy naming the job that holds it."""
    root = _root(target).expanduser().resolve()
    wait = lock_timeout() if timeout is None else timeout
    with _guard:
        rlock = _thread_locks.setdefault(root, threading.RLock())
    me = threading.get_ident()
    if not rlock.acquire(timeout=wait if wait >= 0 else -1):
        raise WorkspaceBusy(
            f"workspace {root} is locked by {_held.get(root, (0, 'another thread'))[1]} "
            f"in this process: {job} waited {wait:.0f}s"
        )
    try:
        if root in _held and _held[root][0] == me:  # nested: the outer job holds it
            yield
            return
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root / LOCK_FILE, thread_local=False)
        _acquire(lock, root, job, wait)
        try:
            info = {"job": job, "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (root / HOLDER_FILE).write_text(json.dumps(info))
            _held[root] = (me, job)
            _recover(root)
            yield
        finally:
            _held.pop(root, None)
            (root / HOLDER_FILE).unlink(missing_ok=True)
            lock.release()
    finally:
        rlock.release()


def _acquire(lock: FileLock, root: Path, job: str, wait: float) -> None:
    try:
        lock.acquire(timeout=0)
        return
    except Timeout:
        pass
    deadline = time.monotonic() + wait
    while True:
        info = holder(root)
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkspaceBusy(
                f"workspace {root} is locked by {_describe(info)}: {job} waited {wait:.0f}s "
                f"for it (USERREP_LOCK_TIMEOUT); run {job} again when that job has finished"
            )
        log.warning(
            "workspace %s is locked by %s: %s waits (up to %.0fs more)",
            root,
            _describe(info),
            job,
            left,
        )
        try:
            lock.acquire(timeout=min(left, _REPEAT_S))
            return
        except Timeout:
            continue


def _recover(root: Path) -> None:
    """Finish or remove what a killed writer left, now that no writer runs."""
    from userrep.ingest.staging import recover

    finished, removed = recover(WorkspacePaths(root))
    if finished or removed:
        log.info(
            "workspace %s: %d interrupted publishes finished, %d leftovers removed",
            root,
            finished,
            removed,
        )
