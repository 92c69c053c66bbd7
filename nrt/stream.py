"""The Redis Streams consumer of the NRT path: stream entries -> NrtEngine -> XACK after the
state commit and the online write; pending entries are resumed after a restart.

A bad entry never stalls its partition: it is dead-lettered and acknowledged in one atomic
step (a Lua script: XACK, and XADD to the dead-letter stream only when that XACK acknowledged
the entry), so a consumer killed at any point, or two consumers racing for one entry, leave
exactly one dead letter per entry. An entry that keeps failing to apply (every event of its
micro-batch failing alone: a store down, or a poison event no rule foresaw) is retried with a
growing pause and dead-lettered after max_deliveries deliveries (Redis counts them).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from nrt.config import NrtConfig
from nrt.engine import DEAD_LETTER, NrtEngine
from userrep.settings import Settings

log = logging.getLogger(__name__)
FIELD = "event"  # stream entry field holding the event's JSON
FaultHook = Callable[[int], None]  # tests: called with the micro-batch count before XACK
MAX_DELIVERIES = 10  # deliveries of an entry that never applies before it is dead-lettered
RETRY_S, RETRY_MAX_S = 1.0, 30.0  # pause after a failed micro-batch, doubling up to the cap
# KEYS: stream, dead-letter stream; ARGV: group, entry id, reason, event, source
_DEAD_LETTER_ONCE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'reason', ARGV[3], 'event', ARGV[4], 'source', ARGV[5],
             'entry', ARGV[2])
  return 1
end
return 0
"""


class ApplyFailed(Exception):
    """A micro-batch could not be applied at all; its entries stay pending for a retry."""


def redis_client(cfg: NrtConfig, settings: Settings) -> Any:
    """redis.Redis for the configured URL (USERREP_NRT_REDIS_URL, else USERREP_REDIS_URL)."""
    import redis

    kwargs = cfg.redis_kwargs(settings)
    if "url" in kwargs:
        return redis.Redis.from_url(kwargs["url"])
    return redis.Redis(**kwargs)


class RedisDeadLetters:
    """Malformed events: XADD to the dead-letter stream with the reason (the engine's sink;
    the consumer dead-letters its entries itself, each once, see StreamConsumer)."""

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
        self,
        engine: NrtEngine,
        client: Any,
        cfg: NrtConfig,
        fault: FaultHook | None = None,
        max_deliveries: int = MAX_DELIVERIES,
        retry_s: float = RETRY_S,
    ):
        self.engine, self.client, self.cfg, self.fault = engine, client, cfg, fault
        self.max_deliveries, self.retry_s = max_deliveries, retry_s
        self.batches = 0
        self.entries = 0
        self.dead_lettered = 0  # entries this consumer dead-lettered (and acknowledged)
        self.failures = 0  # micro-batches in a row that could not be applied
        self._dead_letter_once = client.register_script(_DEAD_LETTER_ONCE)

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
        retry = True  # start with this consumer's pending entries
        idle_since = last_claim = time.monotonic()
        while not (stop and stop.is_set()) and (max_events is None or self.entries < max_events):
            try:
                if retry:
                    retry = False
                    self.recover()
                    idle_since = last_claim = time.monotonic()
                    continue
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
            except ApplyFailed as err:
                self.failures += 1
                pause = min(self.retry_s * 2 ** (self.failures - 1), RETRY_MAX_S)
                log.error("%s; retrying its pending entries in %.1fs", err, pause)
                if stop is not None:
                    stop.wait(pause)
                else:
                    time.sleep(pause)
                retry = True
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
            self.process(entries, redelivered=True)
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
                self.process(entries, redelivered=True)
            if cursor in (b"0-0", "0-0"):
                break

    def process(self, entries: list[tuple[Any, dict | None]], redelivered: bool = False) -> None:
        """Apply one micro-batch of entries, dead-letter (and acknowledge) the bad ones, then
        XACK the rest. Raises ApplyFailed, acknowledging nothing, when nothing could be applied.
        redelivered: the entries may have been delivered before (pending ones): those
        delivered more than max_deliveries times are dead-lettered without another try."""
        ids: list[Any] = []
        raws: list[object] = []
        raw_ids: list[Any] = []
        bad: list[tuple[Any, object, str]] = []  # (entry id, payload, reason)
        for entry_id, fields in entries:
            ids.append(entry_id)
            data = (fields or {}).get(FIELD.encode(), (fields or {}).get(FIELD))
            if data is None:
                if fields:  # a deleted entry (None) just gets acknowledged
                    payload = json.dumps({_text(k): _text(v) for k, v in fields.items()})
                    bad.append((entry_id, payload, f"entry has no {FIELD!r} field"))
                continue
            try:
                raws.append(json.loads(data))
                raw_ids.append(entry_id)
            except (UnicodeDecodeError, ValueError):
                bad.append((entry_id, data, "invalid JSON"))
            except RecursionError:
                bad.append((entry_id, data, "JSON nested too deep"))
        if redelivered and raw_ids:
            tired = self._over_delivered(raw_ids)
            if tired:
                keep = [i for i, e in enumerate(raw_ids) if e not in tired]
                bad += [
                    (e, raws[i], f"not applied after {tired[e]} deliveries")
                    for i, e in enumerate(raw_ids)
                    if e in tired
                ]
                raws, raw_ids = [raws[i] for i in keep], [raw_ids[i] for i in keep]
        for _, _, reason in bad:  # the engine counts the ones it rejects itself
            self.engine.metrics.inc("events_dead_letter", label=reason)
        if raws:
            try:
                result = self.engine.apply(raws, source="stream", dead_letter=False)
            except Exception as err:
                self.engine.metrics.inc("micro_batches_failed")
                raise ApplyFailed(
                    f"micro-batch of {len(raws)} entries not applied: {type(err).__name__}: {err}"
                ) from err
            bad += [
                (e, raw, o.reason or "rejected")
                for e, raw, o in zip(raw_ids, raws, result.outcomes, strict=True)
                if o.status == DEAD_LETTER
            ]
        self._dead_letter(bad)
        self.failures = 0
        self.batches += 1
        if self.fault is not None:
            self.fault(self.batches)
        if ids:
            self.client.xack(self.cfg.partition_stream, self.cfg.group, *ids)
        self.entries += len(ids)
        now_ms = time.time() * 1000
        self.engine.metrics.observe("event_to_online", [now_ms - _entry_ms(i) for i in ids])

    def _dead_letter(self, bad: list[tuple[Any, object, str]]) -> None:
        """Each entry to the dead-letter stream and acknowledged, atomically and once."""
        if not bad:
            return
        keys = [self.cfg.partition_stream, self.cfg.dead_letter_stream]
        with self.client.pipeline(transaction=False) as pipe:
            for entry_id, payload, reason in bad:
                event = _text(payload) if isinstance(payload, str | bytes) else _dumps(payload)
                args = [self.cfg.group, entry_id, reason, event, "stream"]
                self._dead_letter_once(keys=keys, args=args, client=pipe)
            self.dead_lettered += sum(pipe.execute())

    def _over_delivered(self, entry_ids: list[Any]) -> dict[Any, int]:
        """Entries (of these) delivered more than max_deliveries times, with their count."""
        order = sorted(entry_ids, key=_entry_key)
        pending = self.client.xpending_range(  # own entries only: these were just (re)read
            self.cfg.partition_stream,
            self.cfg.group,
            order[0],
            order[-1],
            2 * len(order) + 100,
            consumername=self.cfg.consumer,
        )
        wanted = {_text(e): e for e in entry_ids}
        out: dict[Any, int] = {}
        for p in pending:
            entry = wanted.get(_text(p["message_id"]))
            if entry is not None and p["times_delivered"] > self.max_deliveries:
                out[entry] = int(p["times_delivered"])
        return out


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _dumps(raw: object) -> str:
    try:
        return json.dumps(raw)
    except (TypeError, ValueError, RecursionError):
        return repr(raw)


def _entry_key(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _entry_ms(entry_id: Any) -> float:
    """Stream entry ids start with the XADD time in milliseconds."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return float(text.split("-", 1)[0])
