"""The Redis Streams consumer of the NRT path: stream entries -> NrtEngine -> XACK after the
state commit and the online write; pending entries are resumed after a restart."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from nrt.config import NrtConfig
from nrt.engine import NrtEngine
from userrep.settings import Settings

log = logging.getLogger(__name__)
FIELD = "event"  # stream entry field holding the event's JSON
FaultHook = Callable[[int], None]  # tests: called with the micro-batch count before XACK


def redis_client(cfg: NrtConfig, settings: Settings) -> Any:
    """redis.Redis for the configured URL (USERREP_NRT_REDIS_URL, else USERREP_REDIS_URL)."""
    import redis

    kwargs = cfg.redis_kwargs(settings)
    if "url" in kwargs:
        return redis.Redis.from_url(kwargs["url"])
    return redis.Redis(**kwargs)


class RedisDeadLetters:
    """Malformed stream events: XADD to the dead-letter stream with the reason."""

    def __init__(self, client: Any, stream: str):
        self.client, self.stream = client, stream

    def write(self, items: Sequence[tuple[object, str]], source: str = "stream") -> None:
        if not items:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for raw, reason in items:
                event = raw if isinstance(raw, str) else json.dumps(raw, default=repr)
                pipe.xadd(self.stream, {"reason": reason, FIELD: event, "source": source})
            pipe.execute()


class StreamConsumer:
    """One consumer of the group; run() until stopped, idle for idle_exit_s, or max_events.

    Each entry holds one event as JSON in its `event` field; up to read_count entries per
    XREADGROUP are one micro-batch, acknowledged only after the state commit and the online
    write. On start it re-reads its own pending entries, then takes over entries other consumers
    left pending for claim_idle_ms (XAUTOCLAIM); re-delivered events are duplicates by id.
    """

    def __init__(
        self, engine: NrtEngine, client: Any, cfg: NrtConfig, fault: FaultHook | None = None
    ):
        self.engine, self.client, self.cfg, self.fault = engine, client, cfg, fault
        self.batches = 0
        self.entries = 0

    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(
                self.cfg.partition_stream, self.cfg.group, id="0", mkstream=True
            )
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def run(
        self,
        stop: threading.Event | None = None,
        idle_exit_s: float | None = None,
        max_events: int | None = None,
    ) -> int:
        """Consume; returns the number of stream entries handled by this run."""
        self.ensure_group()
        self.recover()
        idle_since = last_claim = time.monotonic()
        while not (stop and stop.is_set()) and (max_events is None or self.entries < max_events):
            resp = self.client.xreadgroup(
                self.cfg.group,
                self.cfg.consumer,
                {self.cfg.partition_stream: ">"},
                count=self.cfg.read_count,
                block=self.cfg.block_ms,
            )
            now = time.monotonic()
            if resp:
                self.process(resp[0][1])
                idle_since = now
            else:
                self.engine.maybe_flush()
                if idle_exit_s is not None and now - idle_since >= idle_exit_s:
                    break
            if now - last_claim >= self.cfg.claim_idle_ms / 1000:
                self.claim()
                last_claim = now
        self.engine.maybe_flush(force=True)
        return self.entries

    def recover(self) -> None:
        """Entries delivered to this consumer but never acknowledged, then other consumers'."""
        while True:
            resp = self.client.xreadgroup(
                self.cfg.group,
                self.cfg.consumer,
                {self.cfg.partition_stream: "0"},
                count=self.cfg.read_count,
            )
            entries = resp[0][1] if resp else []
            if not entries:
                break
            log.info("re-processing %d pending entries of %s", len(entries), self.cfg.consumer)
            self.process(entries)
        self.claim()

    def claim(self) -> None:
        """XAUTOCLAIM entries idle for claim_idle_ms (their consumer died) and process them."""
        cursor = "0-0"
        while True:
            cursor, entries, *_ = self.client.xautoclaim(
                self.cfg.partition_stream,
                self.cfg.group,
                self.cfg.consumer,
                self.cfg.claim_idle_ms,
                cursor,
                count=self.cfg.read_count,
            )
            if entries:
                log.info("claimed %d pending entries of other consumers", len(entries))
                self.process(entries)
            if cursor in (b"0-0", "0-0"):
                break

    def process(self, entries: list[tuple[Any, dict | None]]) -> None:
        """Apply one micro-batch of entries, then XACK them all."""
        ids, raws, bad = [], [], []
        for entry_id, fields in entries:
            ids.append(entry_id)
            data = (fields or {}).get(FIELD.encode(), (fields or {}).get(FIELD))
            if data is None:
                if fields:  # a deleted entry (None) just gets acknowledged
                    bad.append(
                        (
                            json.dumps({k.decode(): v.decode() for k, v in fields.items()}),
                            f"entry has no {FIELD!r} field",
                        )
                    )
                continue
            try:
                raws.append(json.loads(data))
            except (UnicodeDecodeError, ValueError):
                bad.append((data.decode(errors="replace"), "invalid JSON"))
        self.engine.dead_letters.write(bad, "stream")
        for _, reason in bad:
            self.engine.metrics.inc("events_dead_letter", label=reason)
        if raws:
            self.engine.apply(raws, source="stream")
        self.batches += 1
        if self.fault is not None:
            self.fault(self.batches)
        if ids:
            self.client.xack(self.cfg.partition_stream, self.cfg.group, *ids)
        self.entries += len(ids)
        now_ms = time.time() * 1000
        self.engine.metrics.observe("event_to_online", [now_ms - _entry_ms(i) for i in ids])


def _entry_ms(entry_id: Any) -> float:
    """Stream entry ids start with the XADD time in milliseconds."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return float(text.split("-", 1)[0])
