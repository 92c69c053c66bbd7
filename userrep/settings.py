"""Settings from the environment (USERREP_*), built once by the CLI and passed down.

The workspace directory holds everything a run produces, so several workspaces coexist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from userrep.columns import Horizon, parse_horizons

WORKSPACE_ENV = "USERREP_WORKSPACE"
HORIZONS_ENV = "USERREP_HORIZONS"
REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Runtime configuration; every field can be set as USERREP_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="USERREP_", extra="ignore")

    workspace: Path = Path("workspace")
    # Feast online store: sqlite is the embedded default; redis / postgres for production.
    online_store: Literal["sqlite", "redis", "postgres"] = "sqlite"
    redis_url: str = "127.0.0.1:6379"  # Feast connection_string syntax: host:port[,db=N]
    # "redis_cluster": redis_url lists the cluster's nodes, host1:6379,host2:6379,...
    redis_type: Literal["redis", "redis_cluster"] = "redis"
    # Feast registry: a file in the workspace by default, or a SQL URL (postgresql+psycopg://...).
    registry_url: str | None = None
    # Postgres online store connection (only with online_store=postgres).
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_database: str = "postgres"
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_schema: str = "public"
    # Metadata DB (batches, downstream models, validation runs); SQLite in the workspace by default.
    metadata_url: str | None = None
    # Feast project name: also the Redis key prefix, so test runs use unique ones.
    project: str = "userrep"
    horizons: str = "7,30,180,all"
    feature_repo: Path = REPO_ROOT / "feature_repo"
    seed: int = 0
    # Cache of MiniLM text vectors (keyed by text hash); share one across workspaces to skip
    # re-embedding the same catalog text (tests do).
    text_cache: Path | None = None
    # Where the heavy batch jobs run (representation/scale/): in-process, or on a Ray cluster.
    # "local" never imports ray; results are the same either way.
    engine: Literal["local", "ray"] = "local"
    # Ray cluster to join ("ray://head:10001" or "auto"); None starts a local Ray on 2 CPUs.
    ray_address: str | None = None
    # User shards per Ray job (None: 2 per cluster CPU); peak memory per worker ~ users / shards.
    ray_shards: int | None = None
    # Ray Train workers of `userrep train` (DDP, one CPU and one user shard each); None:
    # min(ray_shards, cluster CPUs) when ray_shards is set, else one per cluster CPU.
    ray_train_workers: int | None = None

    def model_post_init(self, __context: object) -> None:
        self.workspace = self.workspace.expanduser().resolve()

    @property
    def paths(self) -> WorkspacePaths:
        return WorkspacePaths(self.workspace)

    @property
    def horizon_list(self) -> tuple[Horizon, ...]:
        return parse_horizons(self.horizons)

    @property
    def text_cache_path(self) -> Path:
        return self.text_cache or self.paths.encoders / "text_cache.parquet"

    @property
    def metadata_db_url(self) -> str:
        return self.metadata_url or f"sqlite:///{self.paths.metadata_db}"

    def feast_env(self) -> dict[str, str]:
        """What the feature repo's declarations read (feature_repo/ is imported by Feast's own
        CLI too, which gets no Settings)."""
        return {WORKSPACE_ENV: str(self.workspace), HORIZONS_ENV: self.horizons}

    def export_env(self) -> None:
        """Set feast_env() in this process, before the feature repo is imported
        (feast_store.load_repo_modules, the one caller outside tests and benchmarks)."""
        os.environ.update(self.feast_env())


@dataclass(frozen=True)
class WorkspacePaths:
    """Where each artifact lives inside a workspace."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def events(self) -> Path:
        return self.data / "events"  # one parquet part per ingest

    @property
    def users(self) -> Path:
        return self.data / "users.parquet"

    @property
    def items(self) -> Path:
        return self.data / "items.parquet"

    @property
    def friends(self) -> Path:
        return self.data / "friends.parquet"

    @property
    def truth(self) -> Path:
        return self.data / "truth"

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    @property
    def ingest_log(self) -> Path:
        return self.data / "ingest_log.jsonl"

    @property
    def encoders(self) -> Path:
        return self.root / "encoders"

    @property
    def offline(self) -> Path:
        return self.root / "offline"

    @property
    def item_vectors(self) -> Path:
        return self.offline / "item_vectors"

    @property
    def user_history(self) -> Path:
        return self.offline / "user_history"

    @property
    def user_onboarding(self) -> Path:
        return self.offline / "user_onboarding"

    @property
    def user_embedding(self) -> Path:
        return self.offline / "user_embedding"

    @property
    def batches(self) -> Path:
        return self.root / "batches"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def metadata_db(self) -> Path:
        return self.root / "metadata.db"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> WorkspacePaths:
        for p in (
            self.events,
            self.quarantine,
            self.truth,
            self.encoders,
            self.item_vectors,
            self.user_history,
            self.user_onboarding,
            self.user_embedding,
            self.batches,
            self.feast,
            self.reports,
        ):
            p.mkdir(parents=True, exist_ok=True)
        return self


def workspace_from_env() -> WorkspacePaths:
    """Workspace for the feature repo's declarations (feast CLI or userrep in-process)."""
    return WorkspacePaths(Path(os.environ.get(WORKSPACE_ENV, "workspace")).expanduser().resolve())


def horizons_from_env() -> tuple[Horizon, ...]:
    return parse_horizons(os.environ.get(HORIZONS_ENV, "7,30,180,all"))
