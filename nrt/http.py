"""The NRT HTTP service (FastAPI): POST /events -> NrtEngine (group commit) -> z_u online;
GET /users/{id}/embedding, /healthz, /metrics.

Bad input gets a 4xx with the reason, never a 500: a body that is not JSON (or nests deeper
than Python can parse) 400, a body over FastPath.max_body 413, a request whose every event is
rejected 422 (a mixed request: 200, each event with its own status), a user id outside int64
400. When the events could not be applied at all (a store is down) the answer is 503: nothing
was applied or rejected, and the sender may retry.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from nrt.engine import APPLIED, DEAD_LETTER, DUPLICATE, NrtEngine, Outcome
from nrt.events import INT64_MAX, INT64_MIN
from userrep import columns as C

log = logging.getLogger(__name__)


class Applier:
    """A thread applying queued events in micro-batches of up to max_batch events (group commit:
    the events of every request waiting at that moment share one transaction, embedding and
    online write), and one turning the outbox into offline files, so those never hold up an
    event. A request is answered once its events are applied and readable online."""

    def __init__(self, engine: NrtEngine, max_batch: int = 512, idle_s: float = 0.5):
        self.engine, self.max_batch, self.idle_s = engine, max_batch, idle_s
        self._queue: queue.Queue[tuple[list[object], Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="nrt-applier", daemon=True)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush, name="nrt-flusher", daemon=True)

    def start(self) -> None:
        self.engine.auto_flush = False
        self._thread.start()
        self._flusher.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._stop.set()
        self._flusher.join()
        self.engine.maybe_flush(force=True)

    def _flush(self) -> None:
        while not self._stop.wait(self.idle_s):
            try:
                self.engine.maybe_flush()
            except Exception:  # the outbox stays; the next round retries
                log.exception("offline flush failed")

    def submit(self, raws: list[object]) -> Future:
        fut: Future = Future()
        self._queue.put((raws, fut))
        return fut

    def _take(self) -> tuple[list[tuple[list[object], Future]], bool]:
        """Block for one request, then take whatever else is waiting (up to max_batch events)."""
        try:
            first = self._queue.get(timeout=self.idle_s)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        jobs, n = [first], len(first[0])
        while n < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job[0])
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            jobs, stop = self._take()
            if jobs:
                self._apply(jobs)

    def _apply(self, jobs: list[tuple[list[object], Future]]) -> None:
        raws = [r for job, _ in jobs for r in job]
        try:
            result = self.engine.apply(raws, source="http")
        except Exception as err:  # the state rolled back: every request of the batch fails
            log.exception("micro-batch of %d events failed", len(raws))
            for _, fut in jobs:
                fut.set_exception(err)
            return
        lo = 0
        for job, fut in jobs:
            fut.set_result(result.outcomes[lo : lo + len(job)])
            lo += len(job)


def _summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    return {
        "applied": sum(o.status == APPLIED for o in outcomes),
        "duplicates": sum(o.status == DUPLICATE for o in outcomes),
        "dead_lettered": sum(o.status == DEAD_LETTER for o in outcomes),
        "events": [{k: v for k, v in asdict(o).items() if v is not None} for o in outcomes],
    }


Answer = tuple[int, dict[str, Any]]  # HTTP status, JSON body


class Handlers:
    """The two hot endpoints as plain coroutines answering (status, JSON body): called by the
    FastAPI routes (OpenAPI docs, TestClient, any request the fast path passes on) and by
    FastPath, so both give the same answers."""

    def __init__(self, engine: NrtEngine, applier: Applier, ttl_s: float = 5.0):
        self.engine, self.applier, self.ttl_s = engine, applier, ttl_s
        self._resolved: dict[str | None, tuple[str, float]] = {}
        # Redis answers over the network: read with Feast's asyncio client there, so the event
        # loop serves other requests while a read waits (stores without async reads: sync call)
        self._async_read = engine.store._get_provider().async_supported.online.read

    async def post_events(self, body: bytes) -> Answer:
        """One event (a JSON object) or a list of them; answers once they are applied."""
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return self._reject(body.decode(errors="replace"), "invalid JSON")
        except RecursionError:
            return self._reject(body.decode(errors="replace"), "JSON nested too deep")
        if not isinstance(payload, dict | list):
            return self._reject(payload, "body is neither an event nor a list of events")
        raws = payload if isinstance(payload, list) else [payload]
        if not raws:
            return 200, _summary([])
        try:
            outcomes = await asyncio.wrap_future(self.applier.submit(raws))
        except Exception as err:  # nothing applied, nothing rejected: the sender may retry
            self.engine.metrics.inc("requests_failed")
            return 503, {"detail": f"events not applied ({type(err).__name__}: {err}); retry"}
        summary = _summary(outcomes)
        if all(o.status == DEAD_LETTER for o in outcomes):  # every event rejected: a 4xx
            return 422, {"detail": outcomes[0].reason, **summary}
        return 200, summary

    def _reject(self, raw: object, reason: str) -> Answer:
        """A body that is not events at all: dead-lettered and counted, 400."""
        self.engine.dead_letters.write([(raw, reason)], "http")
        self.engine.metrics.inc("events_dead_letter", label=reason)
        return 400, {"detail": reason, "dead_lettered": 1}

    def _resolve(self, batch: str | None) -> str:
        """serving.resolve_batch (the batch lifecycle rule), remembered for ttl_s seconds."""
        from representation.serving import resolve_batch

        hit = self._resolved.get(batch)
        if hit is None or time.monotonic() > hit[1]:
            hit = (resolve_batch(self.engine.settings, batch)[0], time.monotonic() + self.ttl_s)
            self._resolved[batch] = hit
        return hit[0]

    async def embedding(self, user_id: int, batch: str | None) -> Answer:
        """z_u of a user under a batch (default: the active one) through get_online_features,
        with the time it is as of. Runs on the event loop: a local read (SQLite) is shorter
        (~0.5 ms) than a hop to the thread pool, a Redis read is awaited."""
        from representation.batches import BatchError

        if not INT64_MIN <= user_id <= INT64_MAX:
            return 400, {"detail": f"user_id {user_id} is outside int64"}
        try:
            batch_id = self._resolve(batch)  # only published batches
        except BatchError as err:
            return 404, {"detail": str(err)}
        features = [f"{C.USER_EMBEDDING_VIEW}:{C.Z_U}"]
        rows = [{C.USER_ID: user_id, C.BATCH_ID: batch_id}]
        store = self.engine.store
        if self._async_read:
            response = await store.get_online_features_async(features, rows)
        else:
            response = store.get_online_features(features, rows)
        got = response.to_dict(include_event_timestamps=True)
        z, stamp = got[C.Z_U][0], got[f"{C.Z_U}__ts"][0]
        if z is None:
            return 404, {"detail": f"no z_u for user {user_id} in batch {batch_id}"}
        as_of = pd.Timestamp(stamp, unit="s", tz="UTC").isoformat()
        return 200, {"user_id": user_id, "batch_id": batch_id, "z_u": z, "as_of": as_of}


class FastPath:
    """ASGI in front of the FastAPI app for POST /events and GET /users/{id}/embedding.

    Each event costs two requests (its POST, then the reader's GET), and under load the
    service's event loop spent about half its time in the framework's per-request machinery
    (middleware stack, routing, dependency solving, response classes) rather than in the
    handlers: py-spy, 500 events/s. These two routes go straight to `Handlers`; every other
    request (docs, /healthz, /metrics, a non-integer user id, ...) and the lifespan go to FastAPI.
    """

    max_body = 16 << 20  # bytes: a larger POST gets 413 (and is not read)

    def __init__(self, app: FastAPI, handlers: Handlers):
        self.app, self.handlers = app, handlers

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        answer = None
        if scope["type"] == "http":
            try:
                answer = await self._route(scope, receive)
            except Exception:  # what FastAPI's ServerErrorMiddleware would answer
                log.exception("%s %s failed", scope["method"], scope["path"])
                answer = 500, {"detail": "Internal Server Error"}
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, payload = answer
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        data = body.encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _route(self, scope: dict, receive: Any) -> Answer | None:
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/events":
            body = await _read_body(receive, self.max_body)
            if body is None:  # refused unread: the sender still holds every event of it
                self.handlers.engine.metrics.inc("requests_refused", label="body too large")
                return 413, {"detail": f"body over {self.max_body} bytes: send fewer events"}
            return await self.handlers.post_events(body)
        if method == "GET" and path.startswith("/users/") and path.endswith("/embedding"):
            user = path[len("/users/") : -len("/embedding")]
            if not user.isdigit():  # FastAPI answers 422 with its own detail
                return None
            if len(user) > 20:  # past int64 (and int()'s own limit on digits)
                return 400, {"detail": f"user_id {user[:24]}... is outside int64"}
            query = parse_qs(scope["query_string"].decode("latin-1"))
            return await self.handlers.embedding(int(user), query.get("batch", [None])[-1])
        return None


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None when it is longer than limit bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected before the body was read")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def create_app(engine: NrtEngine, max_batch: int = 512) -> FastPath:
    """The service around one engine; the applier runs while the app is up (lifespan)."""
    applier = Applier(engine, max_batch)
    handlers = Handlers(engine, applier)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # everything loaded so far (state, encoders, Feast registry) lives as long as the
        # service: out of the collector's sight, full collections stop stalling event applies
        gc.collect()
        gc.freeze()
        applier.start()
        yield
        applier.stop()

    app = FastAPI(title="userrep NRT", lifespan=lifespan)

    def respond(answer: Answer) -> JSONResponse:
        return JSONResponse(answer[1], status_code=answer[0])

    @app.post("/events")
    async def post_events(request: Request) -> JSONResponse:
        """One event (a JSON object) or a list of them; answers once they are applied."""
        return respond(await handlers.post_events(await request.body()))

    @app.get("/users/{user_id}/embedding")
    async def get_embedding(user_id: int, batch: str | None = None) -> JSONResponse:
        """z_u of a user under a batch (default: the active one), read through
        get_online_features, with the time it is as of."""
        return respond(await handlers.embedding(user_id, batch))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "batches": sorted(engine.serving.batches),
            "online_store": engine.settings.online_store,
            "project": engine.settings.project,
        }

    @app.get("/metrics")
    async def metrics(format: str = "prometheus") -> Any:
        if format == "json":
            return engine.metrics.as_dict()
        return PlainTextResponse(engine.metrics.prometheus())

    return FastPath(app, handlers)


def serve(
    engine: NrtEngine, host: str = "127.0.0.1", port: int = 8765, max_batch: int = 512
) -> None:
    """Run the service until interrupted (uvicorn, one process: the engine is not shareable)."""
    import uvicorn

    log.info(
        "NRT service on http://%s:%d (batches: %s)", host, port, sorted(engine.serving.batches)
    )
    uvicorn.run(
        create_app(engine, max_batch),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # bound to loopback by default; no proxy to trust
    )
