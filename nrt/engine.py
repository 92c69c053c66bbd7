"""The NRT update, shared by the HTTP service and the stream consumer: raw events -> state ->
features -> every servable batch's encoder -> z_u online (one write) + the offline outbox."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from nrt.aggregates import FeatureCache, feature_matrix
from nrt.bootstrap import bootstrap
from nrt.config import NrtConfig
from nrt.events import Event, parse_events
from nrt.metrics import Metrics
from nrt.publish import OnlineWriter, flush_outbox, nrt_feature_store, publish_rows
from nrt.serving_set import ServedBatch, ServingSet
from nrt.state import SqliteState
from userrep.settings import Settings

log = logging.getLogger(__name__)
APPLIED, DUPLICATE, DEAD_LETTER = "applied", "duplicate", "dead_letter"


class DeadLetterSink(Protocol):
    def write(self, items: Sequence[tuple[object, str]], source: str = ...) -> None: ...


@dataclass
class Outcome:
    """What happened to one raw event."""

    status: str  # applied | duplicate | dead_letter
    event_id: str | None = None
    user_id: int | None = None
    reason: str | None = None


@dataclass
class ApplyResult:
    outcomes: list[Outcome]
    users: list[int] = field(default_factory=list)  # users whose z_u was rewritten
    batches: list[str] = field(default_factory=list)  # under these batches

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


class NrtEngine:
    """State + servable batches + writers; `apply` is the one entry point for events.

    An event id is applied once (the state's `applied` table, in the same transaction as the
    state change). A user's vector is always recomputed from their full state as of their newest
    event time (the watermark never moves back), so a late older event is included in the state
    while the vector written is still the one as of the newest time. Micro-batches are applied
    one at a time per process (self.lock; one process per user partition), and the state
    transaction stays open across the online write, so writes of a user reach last-write-wins
    online stores (sqlite, postgres) in as-of order.
    """

    def __init__(
        self,
        settings: Settings,
        cfg: NrtConfig,
        dead_letters: DeadLetterSink,
        state: SqliteState | None = None,
        metrics: Metrics | None = None,
    ):
        self.settings, self.cfg = settings, cfg
        self.state = state or SqliteState(cfg.state_file(settings))
        bootstrap(self.state, settings.paths, partition=cfg.partition, partitions=cfg.partitions)
        self.dead_letters = dead_letters
        self.metrics = metrics or Metrics()
        self.store = nrt_feature_store(settings)
        self.writer = OnlineWriter(self.store)
        self.serving = ServingSet(settings, cfg.refresh_seconds)
        self.features = FeatureCache()
        self._outbox_rows, self._outbox_oldest = self.state.outbox_stats()  # rows, created_us
        self.lock = threading.Lock()  # one micro-batch at a time in this process
        self.auto_flush = True  # apply() flushes the outbox; the HTTP service uses a thread
        self._threads_set = threading.local()
        self.refresh_batches()
        self.warm_up()

    def warm_up(self) -> None:
        """Onboarding signals of the most recently active users into the feature cache: one
        vectorised pass now instead of a ~5 ms onboarding_table call per unseen user later."""
        t0 = time.perf_counter()
        profiles = self.state.recent_profiles(self.features.max_entries)
        for group in self.serving.groups():
            self.features.onboarding_rows(group.vecs, profiles)
        log.info(
            "feature cache warmed with %d profiles in %.1fs",
            len(profiles),
            time.perf_counter() - t0,
        )

    def refresh_batches(self) -> list[str]:
        """Re-read the servable batches. When a batch becomes servable, the users the NRT path
        has updated get vectors in it right away (its published ones are as of its snapshot);
        the state remembers which batches are caught up, so a restart does not redo it."""
        with self.lock:
            added, dropped = self.serving.refresh()
            if not self.serving.batches:
                log.warning("no servable batch (promote one): events update the state only")
            for batch_id in dropped:
                self.state.del_meta(f"served:{batch_id}")
            for sb in added:
                if self.state.get_meta(f"served:{sb.batch_id}") is None:
                    self._catch_up(sb)
            return [sb.batch_id for sb in added]

    def _catch_up(self, sb: ServedBatch, chunk: int = 5000) -> None:
        users = self.state.nrt_users()
        for lo in range(0, len(users), chunk):
            with self.state.transaction():
                self._publish(users[lo : lo + chunk], [sb])
        self.state.set_meta(f"served:{sb.batch_id}", "caught up")
        if users:
            log.info("batch %s: caught up %d NRT-updated users", sb.batch_id, len(users))

    def apply(
        self, raws: Sequence[object], source: str = "http", dead_letter: bool = True
    ) -> ApplyResult:
        """Apply a micro-batch of raw events (JSON values); never raises for bad events.

        A malformed event is rejected alone (events.py). When the micro-batch still fails
        (an event the stores refuse), its events are applied one at a time and only those
        that fail alone are rejected ("apply failed: ..."); when every one fails alone, the
        error is raised: a store is down, and nothing is rejected. dead_letter=False leaves
        writing the rejected events to the caller (the stream consumer, which acknowledges
        each one with its dead letter); outcomes carry the reasons either way."""
        t0, cpu0 = time.perf_counter(), time.thread_time()
        if self.serving.due():
            self.refresh_batches()
        good, bad = self._validate(raws)
        try:
            new_ids, users, batch_ids = self._commit(good)
        except Exception as err:
            new_ids, users, batch_ids, failed = self._isolate(good, err)
            if failed:
                at = {pos for pos, _ in failed}
                good = [(pos, e) for pos, e in good if pos not in at]
                bad = sorted(bad + failed)
        if dead_letter:
            self.dead_letters.write([(raws[pos], reason) for pos, reason in bad], source)
        for _, reason in bad:
            self.metrics.inc("events_dead_letter", label=_label(reason))
        outcomes = _outcomes(len(raws), good, bad, new_ids)
        self._count(outcomes, len(raws), len(users) * len(batch_ids), time.perf_counter() - t0)
        self.metrics.observe("apply_cpu", (time.thread_time() - cpu0) * 1000)
        if self.auto_flush:
            self.maybe_flush()
        return ApplyResult(outcomes, users, batch_ids)

    def _commit(self, good: list[tuple[int, Event]]) -> tuple[set[str], list[int], list[str]]:
        """One transaction: the events into the state, every touched user re-embedded and
        written online; (new event ids, users, batches). Rolled back when anything raises."""
        with self.lock, self.state.transaction():
            applied = self.state.apply([e for _, e in good])
            users = sorted(applied.users)
            batch_ids = self._publish(users, list(self.serving.batches.values()))
        return {e.event_id for e in applied.new}, users, batch_ids

    def _isolate(
        self, good: list[tuple[int, Event]], err: Exception
    ) -> tuple[set[str], list[int], list[str], list[tuple[int, str]]]:
        """After a failed micro-batch: each event in its own transaction. Returns what
        _commit does, summed, plus (position, reason) of the events that failed alone."""
        if len(good) <= 1:
            raise err
        log.warning("micro-batch of %d events failed (%r): applying one at a time", len(good), err)
        self.metrics.inc("micro_batches_isolated")
        new_ids: set[str] = set()
        users: set[int] = set()
        batch_ids: list[str] = []
        failed: list[tuple[int, str]] = []
        for pos, event in good:
            try:
                ids, u, b = self._commit([(pos, event)])
            except Exception as one:  # its reason goes to the dead letter
                failed.append((pos, f"apply failed: {type(one).__name__}: {str(one)[:200]}"))
                continue
            new_ids |= ids
            users.update(u)
            batch_ids = b or batch_ids
        if len(failed) == len(good):  # every event fails alone: the stores, not the events
            raise err
        for pos, reason in failed:
            log.error("event at %d rejected: %s", pos, reason)
        return new_ids, sorted(users), batch_ids, failed

    def _validate(self, raws: Sequence[object]) -> tuple[list[tuple[int, Event]], list]:
        """Parsed events and (position, reason) of the bad ones; with partitions, an event of
        another partition's user is bad too (applying it would split that user's state)."""
        good, bad = parse_events(raws, ts_unit=self.cfg.ts_unit)
        if self.cfg.partitions == 1:
            return good, bad
        where = f"partition {self.cfg.partition} of {self.cfg.partitions}"
        bad += [
            (p, f"user {e.user_id} is not in {where}")
            for p, e in good
            if not self.cfg.owns(e.user_id)
        ]
        return [(p, e) for p, e in good if self.cfg.owns(e.user_id)], sorted(bad)

    def _publish(self, users: list[int], served: list[ServedBatch]) -> list[str]:
        """Recompute, embed and write the users' z_u under each batch (inside the transaction)."""
        if not users or not served:
            return []
        self._torch_threads()
        states = self.state.load(users)
        ids, as_of = states.user_ids, states.as_of_us
        now_us = time.time_ns() // 1000
        # one online write per latent size (one per micro-batch when every batch has the same)
        by_dim: dict[int, tuple[list[int], list[str], list[np.ndarray], list[int]]] = {}
        for group in self.serving.groups(served):
            x = feature_matrix(
                states, group.vecs, group.layout, self.features
            )  # (n_users, input_dim)
            for sb in group.batches:
                z_b = sb.encoder.embed(x)  # (n_users, latent_dim)
                u, b, z, t = by_dim.setdefault(z_b.shape[1], ([], [], [], []))
                z.append(z_b)
                u += ids.tolist()
                b += [sb.batch_id] * len(ids)
                t += as_of.tolist()
        out_users: list[int] = []
        for u, b, zs, t in by_dim.values():
            z_all = np.vstack(zs).astype(np.float32)
            publish_rows(self.writer, self.state, u, b, z_all, t, now_us)
            out_users += u
        self._outbox_rows += len(out_users)
        self._outbox_oldest = self._outbox_oldest or now_us
        self.metrics.inc("online_rows_written", len(out_users))
        return [sb.batch_id for sb in served]

    def _torch_threads(self) -> None:
        """Apply cfg.torch_threads in the calling thread (once): a new thread, such as the HTTP
        service's applier, starts with one OpenMP thread per core (~3 ms a one-row embed)."""
        if not getattr(self._threads_set, "done", False):
            import torch

            torch.set_num_threads(self.cfg.torch_threads)
            self._threads_set.done = True

    def _count(self, outcomes: list[Outcome], n: int, rows: int, seconds: float) -> None:
        m = self.metrics
        m.inc("events_received", n)
        m.inc("events_applied", sum(o.status == APPLIED for o in outcomes))
        m.inc("events_duplicate", sum(o.status == DUPLICATE for o in outcomes))
        m.inc("micro_batches")
        m.inc("z_u_updates", rows)
        m.observe("apply", seconds * 1000)

    def maybe_flush(self, force: bool = False) -> int:
        """Turn the outbox into parquet files when big or old enough (or when forced)."""
        with self.lock:
            n, oldest = self._outbox_rows, self._outbox_oldest
            age = 0.0 if oldest is None else time.time() - oldest / 1e6
            if n == 0 or not (force or n >= self.cfg.flush_rows or age >= self.cfg.flush_seconds):
                return 0
            self._outbox_rows, self._outbox_oldest = 0, None
        rows, files = flush_outbox(self.state, self.settings, self.lock)
        self.metrics.inc("offline_rows_written", rows)
        self.metrics.inc("offline_files_written", files)
        return rows

    def close(self) -> None:
        self.maybe_flush(force=True)
        self.state.close()


def _label(reason: str) -> str:
    """Metrics label of a reason: an apply failure's message is left out (one label per kind)."""
    return ": ".join(reason.split(": ")[:2]) if reason.startswith("apply failed") else reason


def _outcomes(
    n: int, good: list[tuple[int, Event]], bad: list[tuple[int, str]], new_ids: set[str]
) -> list[Outcome]:
    """One outcome per raw event; the second copy of an id in one micro-batch is a duplicate."""
    out = [Outcome(DEAD_LETTER)] * n
    for pos, reason in bad:
        out[pos] = Outcome(DEAD_LETTER, reason=reason)
    for pos, e in good:
        out[pos] = Outcome(APPLIED if e.event_id in new_ids else DUPLICATE, e.event_id, e.user_id)
        new_ids.discard(e.event_id)
    return out
