"""Senders of NRT events (`userrep nrt send`): to the HTTP service or onto the Redis stream.

The producer end of the near-real-time path; events are JSON objects as events.py reads them.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nrt.config import partition_stream
from nrt.stream import FIELD


def read_events_file(path: Path | str) -> list[Any]:
    """Events from a JSON array file, a JSON-lines file, or stdin ("-")."""
    text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in stripped.splitlines() if line.strip()]


def _chunks(events: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for lo in range(0, len(events), size):
        yield events[lo : lo + size]


def send_http(url: str, events: Sequence[Any], chunk: int = 500, timeout: float = 30.0) -> dict:
    """POST events (in chunks) to <url>/events; returns the summed counts and outcomes."""
    total: dict[str, Any] = {"applied": 0, "duplicates": 0, "dead_lettered": 0, "events": []}
    for part in _chunks(events, chunk):
        req = urllib.request.Request(
            url.rstrip("/") + "/events",
            data=json.dumps(list(part)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as err:  # 400: the body was dead-lettered
            answer = json.loads(err.read() or b"{}")
            answer.setdefault("events", [])
        for key in ("applied", "duplicates", "dead_lettered"):
            total[key] += answer.get(key, 0)
        total["events"] += answer.get("events", [])
    return total


def _partition_of(event: Any, partitions: int) -> int:
    """user_id % partitions; events without an integer user_id go to partition 0 (and on to
    its dead-letter stream)."""
    try:
        return int(event.get("user_id")) % partitions if partitions > 1 else 0
    except (AttributeError, TypeError, ValueError):
        return 0


def send_stream(
    client: Any,
    stream: str,
    events: Sequence[Any],
    pipeline: int = 1000,
    maxlen: int | None = None,
    partitions: int = 1,
) -> list[str]:
    """XADD each event (JSON in the `event` field) to its user's partition stream, pipelined;
    returns the entry ids in event order."""
    ids: list[str] = []
    for part in _chunks(events, pipeline):
        with client.pipeline(transaction=False) as pipe:
            for event in part:
                data = event if isinstance(event, str) else json.dumps(event)
                target = partition_stream(stream, _partition_of(event, partitions), partitions)
                pipe.xadd(target, {FIELD: data}, maxlen=maxlen, approximate=maxlen is not None)
            ids += [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]
    return ids
