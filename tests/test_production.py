"""Production configuration against the local servers: Redis (and Postgres) online store,
Postgres-backed Feast registry and metadata DB, chosen by USERREP_* settings.

Each run uses a unique Feast project (the Redis key prefix) and throwaway databases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from representation import batches
from representation.pipeline import embedding_table
from representation.serving import get_user_embeddings
from tests.postgres import PostgresUnavailable, temporary_postgres_database
from userrep import columns as C
from userrep.db import session_scope, upgrade
from userrep.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AS_OF = pd.Timestamp("2024-06-01", tz="UTC")


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        with temporary_postgres_database("userrep_prod_test") as url:
            yield url
    except PostgresUnavailable as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {err}")


def redis_client():
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.ConnectionError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable: {err}")
    return client


def production_settings(tmp_path, pg_url: str, online_store: str) -> Settings:
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    return Settings(
        workspace=tmp_path / "ws",
        online_store=online_store,
        registry_url=pg_url,
        metadata_url=pg_url,
        project=f"userrep_test_{uuid.uuid4().hex[:8]}",
        pg_database=url.database,
        pg_user=url.username or "postgres",
    )


def publish_fake_batch(settings: Settings, batch_id: str, z: np.ndarray) -> None:
    """Register a batch and write its vectors online, as embed_batch does."""
    from userrep.feast_store import apply_repo

    store = apply_repo(settings)
    store.write_to_online_store(
        C.USER_EMBEDDING_VIEW, embedding_table(np.arange(len(z)), z, batch_id, AS_OF).to_pandas()
    )
    with session_scope(settings.metadata_db_url) as session:
        batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=AS_OF.to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=z.shape[1],
            artifact_path="-",
            artifact_sha256="-",
            metrics={},
        )
        batches.mark_ready(session, batch_id, len(z))


@pytest.mark.parametrize("online_store", ["redis", "postgres"])
def test_z_u_round_trips_through_production_stores(
    tmp_path, pg_url: str, online_store: str
) -> None:
    client = redis_client() if online_store == "redis" else None
    settings = production_settings(tmp_path, pg_url, online_store)
    upgrade(settings.metadata_db_url)
    z = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    try:
        publish_fake_batch(settings, "b-prod-1", z)
        publish_fake_batch(settings, "b-prod-2", -z)
        _, got1 = get_user_embeddings(settings, [0, 4], "b-prod-1")
        _, got2 = get_user_embeddings(settings, [0, 4], "b-prod-2")
        np.testing.assert_array_equal(got1, z[[0, 4]])
        np.testing.assert_array_equal(got2, -z[[0, 4]])
        assert (settings.workspace / "feature_store.yaml").exists()
        assert not (settings.paths.feast / "registry.db").exists()  # the registry lives in Postgres
        if client is not None:  # the vectors really are in Redis, under this run's project
            assert len(list(client.scan_iter(f"*{settings.project}*", count=1000))) == 10
    finally:
        from userrep.feast_store import feature_store

        feature_store(settings).teardown()
        if client is not None:
            assert not list(client.scan_iter(f"*{settings.project}*", count=1000))


def test_feast_cli_reads_the_rendered_production_yaml(tmp_path, pg_url: str) -> None:
    client = redis_client()
    settings = production_settings(tmp_path, pg_url, "redis")
    upgrade(settings.metadata_db_url)
    z = np.arange(12, dtype=np.float32).reshape(3, 4)
    try:
        publish_fake_batch(settings, "b-cli", z)
        feast = os.path.join(os.path.dirname(sys.executable), "feast")
        cmd = [
            feast,
            "-c",
            str(settings.feature_repo),
            "-f",
            str(settings.workspace / "feature_store.yaml"),
            "get-online-features",
            "-e",
            "user_id=2",
            "-e",
            "batch_id=b-cli",
            "-f",
            "user_embedding:z_u",
        ]
        env = {**os.environ, "USERREP_WORKSPACE": str(settings.workspace)}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        got = json.loads(out[out.index("{") :])
        assert got[C.Z_U] == [z[2].tolist()]
    finally:
        from userrep.feast_store import feature_store

        feature_store(settings).teardown()
        assert not list(client.scan_iter(f"*{settings.project}*", count=1000))
