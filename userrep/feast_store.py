"""The Feast side of a workspace: repo config from settings, applying feature_repo/, the store.

`feast apply` runs where the repo changes: `userrep init` / `userrep apply` (apply_repo), or
the first time a workspace's store is asked for after the declarations or the config changed
(store, which compares a fingerprint). One FeatureStore per workspace and process.
`feast` is imported lazily (about 5 s) so commands that do not touch Feast stay fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import yaml

from userrep.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

# feature_repo modules in dependency order (they import each other by plain module name,
# as `feast apply` does when it runs inside the repo directory).
REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")


def online_store_config(settings: Settings) -> dict[str, Any]:
    """The `online_store` section for the configured backend."""
    if settings.online_store == "redis":
        config = {"type": "redis", "connection_string": settings.redis_url}
        if settings.redis_type != "redis":
            config["redis_type"] = settings.redis_type
        return config
    if settings.online_store == "postgres":
        return {
            "type": "postgres",
            "host": settings.pg_host,
            "port": settings.pg_port,
            "database": settings.pg_database,
            "db_schema": settings.pg_schema,
            "user": settings.pg_user,
            "password": settings.pg_password,
            "sslmode": "disable",
        }
    return {"type": "sqlite", "path": str(settings.paths.feast / "online.db")}


def registry_config(settings: Settings) -> dict[str, Any] | str:
    """A file registry in the workspace, or a SQL registry when USERREP_REGISTRY_URL is set."""
    if settings.registry_url:
        return {
            "registry_type": "sql",
            "path": settings.registry_url,
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        }
    return str(settings.paths.feast / "registry.db")


def repo_config_dict(settings: Settings) -> dict[str, Any]:
    """feature_store.yaml content for these settings."""
    return {
        "project": settings.project,
        "provider": "local",
        "registry": registry_config(settings),
        "offline_store": {"type": "duckdb"},
        "online_store": online_store_config(settings),
        "entity_key_serialization_version": 3,
        "auth": {"type": "no_auth"},
    }


def write_feature_store_yaml(settings: Settings) -> None:
    """Write <workspace>/feature_store.yaml so `feast -c feature_repo -f ...` sees this workspace."""
    path = settings.workspace / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(repo_config_dict(settings), sort_keys=False))


def feature_store(settings: Settings) -> FeatureStore:
    """An in-process FeatureStore on the workspace (no yaml needed)."""
    from feast import FeatureStore, RepoConfig

    settings.paths.ensure()
    config = RepoConfig(**repo_config_dict(settings))
    config.repo_path = settings.feature_repo
    return FeatureStore(config=config)


def load_repo_modules(settings: Settings) -> list[ModuleType]:
    """Import feature_repo/*.py fresh for this workspace (paths are read at import time)."""
    settings.export_env()
    saved = {name: sys.modules.pop(name) for name in REPO_MODULES if name in sys.modules}
    modules = []
    try:
        for name in REPO_MODULES:
            spec = importlib.util.spec_from_file_location(
                name, settings.feature_repo / f"{name}.py"
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            modules.append(module)
    finally:
        for name in REPO_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return modules


def repo_objects(settings: Settings) -> list[Any]:
    """Every Feast object declared in feature_repo/, deduplicated by identity."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, FeatureView, FeatureService)
    objects: list[Any] = []
    for module in load_repo_modules(settings):
        for value in vars(module).values():
            if isinstance(value, kinds) and not any(value is o for o in objects):
                objects.append(value)
    return objects


def repo_fingerprint(settings: Settings) -> str:
    """sha256 of what `feast apply` registers: the declarations, the config and the horizons."""
    h = hashlib.sha256(json.dumps(repo_config_dict(settings), sort_keys=True).encode())
    h.update(settings.horizons.encode())
    for name in REPO_MODULES:
        h.update((settings.feature_repo / f"{name}.py").read_bytes())
    return h.hexdigest()


def _fingerprint_file(settings: Settings):
    return settings.paths.feast / "applied.sha256"


def apply_repo(settings: Settings) -> FeatureStore:
    """`feast apply` in-process: register the feature repo's objects for this workspace."""
    store = feature_store(settings)
    objects = repo_objects(settings)
    store.apply(objects)
    write_feature_store_yaml(settings)
    _fingerprint_file(settings).write_text(repo_fingerprint(settings))
    log.info("applied %d Feast objects to project %s", len(objects), settings.project)
    _STORES[_key(settings)] = store
    return store


_STORES: dict[tuple[str, ...], FeatureStore] = {}


def _key(settings: Settings) -> tuple[str, ...]:
    registry = settings.registry_url or ""
    return (
        str(settings.workspace),
        settings.online_store,
        settings.project,
        registry,
        settings.redis_url,
    )


def store(settings: Settings) -> FeatureStore:
    """The workspace's FeatureStore, one per process; applies the repo first only when it was
    never applied or its declarations or config changed since."""
    key = _key(settings)
    fingerprint = _fingerprint_file(settings)
    if key in _STORES and fingerprint.exists():  # compared once per process: then one stat
        return _STORES[key]
    if not fingerprint.exists() or fingerprint.read_text() != repo_fingerprint(settings):
        return apply_repo(settings)
    _STORES[key] = feature_store(settings)
    return _STORES[key]
