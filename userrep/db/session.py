"""Engines and sessions for the metadata DB (SQLite in the workspace, or PostgreSQL)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_ENGINES: dict[str, Engine] = {}


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def ensure_sqlite_dir(url: str) -> None:
    """Create the parent directory of a SQLite file so a fresh workspace just works."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> Engine:
    """One engine per URL for the process; SQLite gets foreign keys enforced."""
    engine = _ENGINES.get(url)
    if engine is None:
        ensure_sqlite_dir(url)
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _enable_sqlite_foreign_keys)
        _ENGINES[url] = engine
        log.debug("metadata DB engine for %s", engine.url.render_as_string(hide_password=True))
    return engine


def dispose_engines(url: str | None = None) -> None:
    """Close cached engines (one URL, or all), e.g. before dropping a test database."""
    for key in [url] if url is not None else list(_ENGINES):
        engine = _ENGINES.pop(key, None)
        if engine is not None:
            engine.dispose()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    Objects stay readable after the block (expire_on_commit=False), so a CLI can print them.
    """
    session = sessionmaker(make_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
