"""Counters and latency summaries of the NRT path, served at GET /metrics (Prometheus text
format, or JSON with ?format=json) and logged by the stream consumer; plus dead-letter sinks.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "userrep_nrt_"


class Metrics:
    """Thread-safe counters (optionally labelled) and recent-latency windows (milliseconds)."""

    def __init__(self, window: int = 200_000):
        self._lock = threading.Lock()
        self.counters: Counter[tuple[str, str]] = Counter()
        self.latencies: dict[str, deque[float]] = {}
        self.window = window
        self.started = time.time()

    def inc(self, name: str, n: int = 1, label: str = "") -> None:
        with self._lock:
            self.counters[(name, label)] += n

    def observe(self, name: str, values_ms: list[float] | float) -> None:
        values = values_ms if isinstance(values_ms, list) else [values_ms]
        with self._lock:
            self.latencies.setdefault(name, deque(maxlen=self.window)).extend(values)

    def get(self, name: str, label: str | None = None) -> int:
        with self._lock:
            return sum(
                v
                for (n, lab), v in self.counters.items()
                if n == name and (label is None or lab == label)
            )

    def summary(self, name: str) -> dict[str, float]:
        with self._lock:
            x = np.array(self.latencies.get(name, ()), np.float64)
        if not len(x):
            return {"count": 0}
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return {"count": len(x), "p50": p50, "p90": p90, "p99": p99, "max": float(x.max())}

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            counters = dict(self.counters)
            names = list(self.latencies)
        out: dict[str, Any] = {"uptime_s": time.time() - self.started, "counters": {}}
        for (name, label), v in sorted(counters.items()):
            out["counters"][f"{name}{{{label}}}" if label else name] = v
        out["latency_ms"] = {n: self.summary(n) for n in names}
        return out

    def dump(self, path: Path) -> None:
        """as_dict() plus every latency sample in the windows (benchmarks merge processes)."""
        with self._lock:
            raw = {n: list(v) for n, v in self.latencies.items()}
        Path(path).write_text(json.dumps({**self.as_dict(), "latency_samples_ms": raw}))

    def prometheus(self) -> str:
        """Text exposition: counters as *_total, latency windows as summaries (quantiles)."""
        with self._lock:
            counters = dict(self.counters)
        lines = [f"{PREFIX}uptime_seconds {time.time() - self.started:.3f}"]
        for (name, label), v in sorted(counters.items()):
            labels = f'{{reason="{_escape(label)}"}}' if label else ""
            lines.append(f"{PREFIX}{name}_total{labels} {v}")
        for name in list(self.latencies):
            s = self.summary(name)
            for q in ("p50", "p90", "p99"):
                if q in s:
                    lines.append(f'{PREFIX}{name}_ms{{quantile="0.{q[1:]}"}} {s[q]:.3f}')
            lines.append(f"{PREFIX}{name}_ms_count {s['count']}")
        return "\n".join(lines) + "\n"


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class FileDeadLetters:
    """Malformed events of the HTTP path: one JSON line each, with the reason (append-only)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, items: Sequence[tuple[object, str]], source: str = "http") -> None:
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        with self._lock, self.path.open("a") as f:
            for raw, reason in items:
                f.write(
                    json.dumps(
                        {
                            "reason": reason,
                            "event": _jsonable(raw),
                            "source": source,
                            "received_at": now,
                        }
                    )
                    + "\n"
                )


def _jsonable(raw: object) -> object:
    try:
        json.dumps(raw)
        return raw
    except (TypeError, ValueError):
        return repr(raw)


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
