"""Settings of the near-real-time service (USERREP_NRT_*), beside the workspace Settings.

Read by `userrep nrt serve|consume|send`; every field is also a CLI flag there.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from userrep.settings import Settings


class NrtConfig(BaseSettings):
    """Knobs of the NRT path; every field can be set as USERREP_NRT_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="USERREP_NRT_", extra="ignore")

    # HTTP service: loopback by default (no auth in front of it).
    host: str = "127.0.0.1"
    port: int = 8765
    # Redis Streams: where events arrive, the consumer group, where bad events go.
    stream: str = "userrep:nrt:events"
    group: str = "userrep-nrt"
    consumer: str = socket.gethostname()  # stable across restarts: it resumes its own pending
    dead_letter_stream: str = "userrep:nrt:dead-letter"
    redis_url: str | None = None  # host:port[,db=N]; default: the workspace's USERREP_REDIS_URL
    read_count: int = 1000  # entries per XREADGROUP: the consumer's micro-batch size
    block_ms: int = 500  # XREADGROUP block time when the stream is empty
    claim_idle_ms: int = 60_000  # pending entries idle this long are taken over (XAUTOCLAIM)
    # Micro-batching of the HTTP path: events of concurrent requests applied together.
    max_batch: int = 512
    # Offline append: the outbox becomes a parquet file at this many rows or this age.
    flush_rows: int = 20_000
    flush_seconds: float = 5.0
    # How often the set of servable batches (active + pinned) is re-read from the metadata DB.
    refresh_seconds: float = 30.0
    # Users are split into partitions (user_id % partitions), one stream and one state per
    # partition, one consumer process each: per-user order holds, and partitions run in parallel.
    partitions: int = 1
    partition: int = 0  # the partition this consumer serves
    # epoch numbers in an event's ts / signup_ts are in this unit, as `userrep ingest --ts-unit`
    ts_unit: Literal["s", "ms", "us", "ns"] = "s"
    state: Literal["sqlite"] = "sqlite"  # per-user event state backend (see state.py)
    # torch threads of the thread that embeds (set there: OpenMP settings are per thread).
    # One is fastest for micro-batches; more only spin and contend on a shared CPU.
    torch_threads: int = 1
    state_path: Path | None = None  # default <workspace>/nrt/state.db
    dead_letter_path: Path | None = None  # default <workspace>/nrt/dead_letter.jsonl

    def state_file(self, settings: Settings) -> Path:
        name = (
            "state.db" if self.partitions == 1 else f"state-p{self.partition}of{self.partitions}.db"
        )
        return self.state_path or settings.workspace / "nrt" / name

    @property
    def partition_stream(self) -> str:
        """The stream this consumer reads: `stream`, or `stream:p<k>` when partitioned."""
        return partition_stream(self.stream, self.partition, self.partitions)

    def owns(self, user_id: int) -> bool:
        return user_id % self.partitions == self.partition

    def dead_letter_file(self, settings: Settings) -> Path:
        return self.dead_letter_path or settings.workspace / "nrt" / "dead_letter.jsonl"

    def redis_kwargs(self, settings: Settings) -> dict[str, Any]:
        """redis.Redis(**kwargs) from the Feast-style connection string host:port[,db=N]."""
        return parse_redis_url(self.redis_url or settings.redis_url)


def partition_stream(stream: str, partition: int, partitions: int) -> str:
    return stream if partitions == 1 else f"{stream}:p{partition}"


def parse_redis_url(url: str) -> dict[str, Any]:
    """'host:port[,db=N][,password=P]' (Feast's syntax) or 'redis://...' -> redis.Redis kwargs."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return {"url": url}
    head, *options = (p.strip() for p in url.split(","))
    host, _, port = head.partition(":")
    kwargs: dict[str, Any] = {"host": host or "127.0.0.1", "port": int(port or 6379)}
    for option in options:
        key, _, value = option.partition("=")
        if key == "db":
            kwargs["db"] = int(value)
        elif key == "password":
            kwargs["password"] = value
    return kwargs
