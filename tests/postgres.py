"""Throwaway PostgreSQL databases for the integration tests of anything using the metadata DB."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from userrep.db.session import dispose_engines

log = logging.getLogger(__name__)

# Local server, trust auth; override with USERREP_TEST_PG_URL (any database on the server).
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server to create a test database on."""


@contextmanager
def temporary_postgres_database(prefix: str = "userrep_test") -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it (forcibly) afterwards."""
    admin_url = os.environ.get("USERREP_TEST_PG_URL", DEFAULT_PG_ADMIN_URL)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        raise PostgresUnavailable(f"cannot create a database via {admin_url}: {exc}") from exc
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    log.info("created test database %s", name)
    try:
        yield url
    finally:
        dispose_engines(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        log.info("dropped test database %s", name)
