"""CLI, near-real-time stage: `userrep nrt serve | consume | send | bootstrap | status`, thin
wrappers over nrt (settings: USERREP_NRT_*, the flags override them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from userrep.cli.app import console, emit_json, fail, require_workspace, state

commands = typer.Typer()  # registered on the top-level app by userrep/cli/__init__.py

nrt_app = typer.Typer(
    help="Near-real-time z_u: event service, stream consumer, sender.", no_args_is_help=True
)
commands.add_typer(nrt_app, name="nrt")
log = logging.getLogger("userrep.nrt")

StatePath = Annotated[
    Path | None, typer.Option(help="NRT state DB (default <workspace>/nrt/state.db).")
]
Threads = Annotated[int | None, typer.Option(help="torch threads for embedding (default 1).")]
RedisUrl = Annotated[
    str | None, typer.Option(help="Redis host:port[,db=N] (default USERREP_REDIS_URL).")
]
Stream = Annotated[str | None, typer.Option(help="Event stream (default userrep:nrt:events).")]
TsUnit = Annotated[
    str | None,
    typer.Option(
        help="Unit of epoch numbers in ts / signup_ts: s, ms, us or ns (default s, as ingest)."
    ),
]


def _config(**overrides: Any):  # -> NrtConfig
    from pydantic import ValidationError

    from nrt.config import NrtConfig

    try:
        return NrtConfig(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        wrong = "; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        fail(wrong.replace("_", "-"))


def _engine(cfg: Any, dead_letters: Any):  # -> NrtEngine
    from nrt.engine import NrtEngine
    from userrep.feast_store import store

    store(state.settings)  # applied once: the user_embedding view exists for this workspace
    return NrtEngine(state.settings, cfg, dead_letters)


@nrt_app.command("bootstrap")
def bootstrap_cmd(
    state_path: StatePath = None,
    rebuild: Annotated[bool, typer.Option(help="Empty the state and load it again.")] = False,
) -> None:
    """Load the workspace's events and users into the NRT state (serve/consume do it once)."""
    from nrt.bootstrap import bootstrap
    from nrt.state import SqliteState

    cfg = _config(state_path=state_path)
    db = SqliteState(cfg.state_file(state.settings))
    report = bootstrap(db, state.settings.paths, rebuild=rebuild)
    console.print(f"NRT state {db.path}: {report}")


@nrt_app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Events applied together at most.")] = None,
    refresh_seconds: Annotated[
        float | None, typer.Option(help="Re-read servable batches this often.")
    ] = None,
    state_path: StatePath = None,
    threads: Threads = None,
    ts_unit: TsUnit = None,
) -> None:
    """HTTP service: POST /events, GET /users/{id}/embedding?batch=B, /healthz, /metrics."""
    from nrt.http import serve
    from nrt.metrics import FileDeadLetters

    cfg = _config(
        host=host,
        port=port,
        max_batch=max_batch,
        refresh_seconds=refresh_seconds,
        state_path=state_path,
        torch_threads=threads,
        ts_unit=ts_unit,
    )
    engine = _engine(cfg, FileDeadLetters(cfg.dead_letter_file(state.settings)))
    try:
        serve(engine, cfg.host, cfg.port, cfg.max_batch)
    finally:
        engine.close()


Group = Annotated[str | None, typer.Option(help="Consumer group (default userrep-nrt).")]
Consumer = Annotated[str | None, typer.Option(help="Consumer name (default: host name).")]
DeadStream = Annotated[
    str | None, typer.Option(help="Stream for malformed events (default userrep:nrt:dead-letter).")
]
Count = Annotated[
    int | None, typer.Option(help="Entries per XREADGROUP: the micro-batch size (default 1000).")
]
BlockMs = Annotated[int | None, typer.Option(help="XREADGROUP block time in ms.")]
ClaimMs = Annotated[int | None, typer.Option(help="Take over entries pending this long (ms).")]
IdleExit = Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")]
MaxEvents = Annotated[int | None, typer.Option(help="Exit after this many entries.")]
Partition = Annotated[int | None, typer.Option(help="User partition served: user_id % partitions.")]
Partitions = Annotated[int | None, typer.Option(help="Number of user partitions (default 1).")]
MetricsOut = Annotated[Path | None, typer.Option(help="Write metrics (+ latency samples) at exit.")]


@nrt_app.command("consume")
def consume_cmd(
    stream: Stream = None,
    group: Group = None,
    consumer: Consumer = None,
    dead_letter_stream: DeadStream = None,
    redis_url: RedisUrl = None,
    count: Count = None,
    block_ms: BlockMs = None,
    claim_idle_ms: ClaimMs = None,
    idle_exit: IdleExit = None,
    max_events: MaxEvents = None,
    partition: Partition = None,
    partitions: Partitions = None,
    metrics_out: MetricsOut = None,
    state_path: StatePath = None,
    threads: Threads = None,
    ts_unit: TsUnit = None,
) -> None:
    """Redis Streams consumer (consumer group; resumes pending entries after a restart)."""
    from nrt.stream import RedisDeadLetters, StreamConsumer, redis_client

    cfg = _config(
        stream=stream,
        group=group,
        consumer=consumer,
        redis_url=redis_url,
        dead_letter_stream=dead_letter_stream,
        read_count=count,
        block_ms=block_ms,
        claim_idle_ms=claim_idle_ms,
        state_path=state_path,
        partition=partition,
        partitions=partitions,
        torch_threads=threads,
        ts_unit=ts_unit,
    )
    client = redis_client(cfg, state.settings)
    engine = _engine(cfg, RedisDeadLetters(client, cfg.dead_letter_stream))
    consumer_ = StreamConsumer(engine, client, cfg)
    log.info("consuming %s as %s/%s", cfg.partition_stream, cfg.group, cfg.consumer)
    try:
        n = consumer_.run(idle_exit_s=idle_exit, max_events=max_events)
    except KeyboardInterrupt:
        n = consumer_.entries
    finally:
        engine.close()
        if metrics_out is not None:
            engine.metrics.dump(metrics_out)
    console.print(f"handled {n:,} entries; {json.dumps(engine.metrics.as_dict()['counters'])}")


@nrt_app.command("send")
def send_cmd(
    file: Annotated[
        Path | None, typer.Argument(help="JSON array or JSON-lines file; '-' = stdin.")
    ] = None,
    event: Annotated[list[str] | None, typer.Option(help="One event as JSON (repeatable).")] = None,
    to: Annotated[str, typer.Option(help="http or redis.")] = "http",
    url: Annotated[str | None, typer.Option(help="Service URL (default http://HOST:PORT).")] = None,
    stream: Stream = None,
    redis_url: RedisUrl = None,
    partitions: Annotated[int, typer.Option(help="Route to stream:p<user_id % N>.")] = 1,
) -> None:
    """Send events to the HTTP service or onto the Redis stream."""
    from nrt.client import read_events_file, send_http, send_stream
    from nrt.stream import redis_client

    events = (read_events_file(file) if file else []) + [json.loads(e) for e in event or []]
    if not events:
        fail("no events: pass a FILE or --event '{...}'")
    cfg = _config(stream=stream, redis_url=redis_url)
    if to == "http":
        answer = send_http(url or f"http://{cfg.host}:{cfg.port}", events)
        console.print({k: answer[k] for k in ("applied", "duplicates", "dead_lettered")})
        print(json.dumps(answer["events"]))
    elif to == "redis":
        client = redis_client(cfg, state.settings)
        ids = send_stream(client, cfg.stream, events, partitions=partitions)
        console.print(f"{len(ids):,} events -> {cfg.stream} ({partitions} partition(s))")
    else:
        fail(f"--to {to!r}: use http or redis")


@nrt_app.command("status")
def status_cmd(
    state_path: StatePath = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout (the only form).")
    ] = False,
) -> None:
    """What the NRT state holds and where dead letters are (JSON)."""
    from nrt.metrics import read_dead_letters
    from nrt.state import SqliteState

    cfg = _config(state_path=state_path)
    if state_path is None:
        require_workspace()  # the default state DB lives in the workspace: never created here
    db = SqliteState(cfg.state_file(state.settings))
    record = {
        "state": str(db.path),
        **db.counts(),
        "plays_held": db.n_plays(),
        "dead_letter_file": str(cfg.dead_letter_file(state.settings)),
        "dead_letters": len(read_dead_letters(cfg.dead_letter_file(state.settings))),
    }
    emit_json(record)
