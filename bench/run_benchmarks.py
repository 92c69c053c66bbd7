"""Run the serving benchmarks (and the quick batch ones) and write docs/benchmarks.md.

One command, one run: every figure sits beside its floor or anchor measured in the same run
and the ratio, with the machine, the load average when it was taken and the date.

- in-process reads (bench_serving.py): get_user_embeddings vs Feast vs the store's own read
- HTTP (bench_http.py): `feast serve` defaults vs `userrep serve`, GET /health as the floor
- the Feast CLI: `feast get-online-features` wall time vs the in-process read, `import feast`
  with -X importtime (top offenders), with torch kept out and with python -O (no typeguard)
- batch (bench_pipeline.py, bench_train.py at small sizes): training and embedding through the
  pipeline vs the model alone on random data in memory

SQLite always; Redis too when it answers on 127.0.0.1:6379.

Run: .venv/bin/python bench/run_benchmarks.py [--out docs/benchmarks.md] [--quick] [--no-batch]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_http  # noqa: E402
import bench_serving  # noqa: E402
from bench_serving import build_world, drop_world, machine, machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY = str(BIN / "python")
IN_PROCESS_TARGET = 1.3  # target: within 1.3x of plain Feast, p50 and p99
HTTP_P99_SEQ_MS, HTTP_P99_CONC_MS, STALL_MS = 2.0, 10.0, 50.0  # the HTTP read path's targets


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def load() -> float:
    return round(os.getloadavg()[0], 2)


def wall(cmd: list[str], env: dict | None = None, runs: int = 3) -> tuple[float, str]:
    """Median wall seconds of a command over runs; its last output (it must succeed)."""
    times, out = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd} failed: {done.stderr[-2000:]}")
        out = done.stdout + done.stderr
    return statistics.median(times), out


def feast_cli(settings, batch_id: str, user: int, runs: int) -> dict:
    """`feast get-online-features` for one user, as the README shows it."""
    cmd = [
        str(BIN / "feast"),
        "-c",
        str(settings.feature_repo),
        "-f",
        str(settings.workspace / "feature_store.yaml"),
        "get-online-features",
        "-e",
        f"user_id={user}",
        "-e",
        f"batch_id={batch_id}",
        "-f",
        "user_embedding:z_u",
    ]
    env = dict(os.environ, USERREP_WORKSPACE=str(settings.workspace))
    seconds, out = wall(cmd, env, runs)
    assert "z_u" in out, out[-2000:]
    return {"cli_s": seconds, "load": load()}


def parse_importtime(text: str) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) per line of python -X importtime."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append((m.group(4), int(m.group(1)), int(m.group(2))))
    return rows


def import_study(runs: int) -> dict:
    """import feast: wall time plain, with torch kept out, with -O; -X importtime offenders."""
    env = dict(os.environ)
    plain, _ = wall([PY, "-c", "import feast"], env, runs)
    no_torch, _ = wall(
        [PY, "-c", "import sys; sys.modules['torch'] = None; import feast"], env, runs
    )
    torch_alone, _ = wall([PY, "-c", "import torch"], env, runs)
    # -O needs its own .pyc files: written under a temporary prefix (the venv stays untouched)
    with tempfile.TemporaryDirectory() as cache:
        opt_env = dict(env, PYTHONPYCACHEPREFIX=cache)
        opt_env.pop("PYTHONDONTWRITEBYTECODE", None)
        wall([PY, "-O", "-c", "import feast"], opt_env, 1)  # compile once
        optimized, _ = wall([PY, "-O", "-c", "import feast"], opt_env, runs)
        opt_rows = parse_importtime(
            subprocess.run(
                [PY, "-O", "-X", "importtime", "-c", "import feast"],
                env=opt_env,
                capture_output=True,
                text=True,
            ).stderr
        )
    rows = parse_importtime(
        subprocess.run(
            [PY, "-X", "importtime", "-c", "import feast"], env=env, capture_output=True, text=True
        ).stderr
    )

    def by_package(rs):
        c: collections.Counter = collections.Counter()
        for mod, self_us, _ in rs:
            c[mod.split(".")[0]] += self_us
        return c

    cumulative = {m: cum for m, _, cum in rows}
    return {
        "plain_s": plain,
        "no_torch_s": no_torch,
        "torch_alone_s": torch_alone,
        "optimized_s": optimized,
        "total_self_s": sum(s for _, s, _ in rows) / 1e6,
        "by_package_s": {k: v / 1e6 for k, v in by_package(rows).most_common(8)},
        "by_package_opt_s": {k: v / 1e6 for k, v in by_package(opt_rows).most_common(8)},
        "top_self": [(m, s / 1e6) for m, s, _ in sorted(rows, key=lambda r: -r[1])[:10]],
        "torch_cum_s": cumulative.get("feast.torch_wrapper", 0) / 1e6,
        "bigquery_source_cum_s": cumulative.get("feast.infra.offline_stores.bigquery_source", 0)
        / 1e6,
        "google_cloud_bigquery": any(m.startswith("google.cloud.bigquery") for m, _, _ in rows),
        "load": load(),
    }


def batch_figures(users: int, epochs: int) -> dict:
    """bench_pipeline (features through Feast, parquet out) vs bench_train (random, in memory)."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    out = {}
    _, text = wall(
        [
            PY,
            "bench/bench_pipeline.py",
            "--users",
            str(users),
            "--events",
            "20",
            "--epochs",
            str(epochs),
        ],
        env,
        1,
    )
    m = re.search(r"per-epoch throughput \[([^\]]+)\] users/s", text)
    if m:
        out["pipeline_train"] = statistics.median(float(x) for x in m.group(1).split(","))
    m = re.search(r"embed \+ publish offline: [\d,]+ users in [\d.]+s = ([\d,]+) users/s", text)
    if m:
        out["pipeline_embed"] = float(m.group(1).replace(",", ""))
    out["pipeline_load"] = load()
    _, text = wall(
        [PY, "bench/bench_train.py", "--users", str(users), "--epochs", str(epochs)], env, 1
    )
    m = re.search(r"train users/s per epoch: ([\d, ]+)", text)
    if m:
        out["model_train"] = statistics.median(
            float(x) for x in m.group(1).replace(",", "").split() if x
        )
    m = re.search(r"embed users/s: ([\d,]+)", text)
    if m:
        out["model_embed"] = float(m.group(1).replace(",", ""))
    out["model_load"] = load()
    return out


# ---------------------------------------------------------------------------------------------


def fmt_ms(*xs: float) -> str:
    return " / ".join(f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}" for x in xs)


def fmt_ratio(*xs: float) -> str:
    return " / ".join(f"{x:.3f}" if x < 0.1 else f"{x:.2f}" if x < 10 else f"{x:.0f}" for x in xs)


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def serving_table_rows(rows: list[dict]) -> list[list[str]]:
    label = {
        "readme": "get_user_embeddings(settings, ids, batch) (README call, no store)",
        "store": "get_user_embeddings(..., store=store)",
        "feast": "Feast get_online_features(...).to_dict()",
        "feast-raw": "Feast get_online_features(...) (no to_dict)",
    }
    floor_label = {
        "sqlite": "SQLite: Feast's SELECT, keys precomputed",
        "redis": "Redis: Feast's HMGET pipeline, keys precomputed",
    }
    out = []
    for r in rows:
        if r["method"] == "floor":
            continue
        same = [x for x in rows if x["store"] == r["store"] and x["users"] == r["users"]]
        feast = next(x for x in same if x["method"] == "feast")
        floor = next(x for x in same if x["method"] == "floor")
        anchor, what = (
            (floor, floor_label[r["store"]])
            if r["method"].startswith("feast")
            else (
                feast,
                "Feast get_online_features(...).to_dict()",
            )
        )
        p50 = r["p50_ms"] / anchor["p50_ms"]
        p99 = r["p99_ms"] / anchor["p99_ms"]
        target, met = "", ""
        if r["method"] in ("readme", "store"):
            target = f"<= {IN_PROCESS_TARGET}x Feast"
            met = yes(p50 <= IN_PROCESS_TARGET and p99 <= IN_PROCESS_TARGET)
        out.append(
            [
                f"in-process, {r['store']}, {r['users']} user{'s' * (r['users'] > 1)}",
                label[r["method"]],
                fmt_ms(r["p50_ms"], r["p99_ms"]),
                what,
                fmt_ms(anchor["p50_ms"], anchor["p99_ms"]),
                fmt_ratio(p50, p99),
                target,
                met,
                f"{r['load']:.2f}",
            ]
        )
    return out


def http_table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        if r["server"].startswith("floor"):
            continue
        same = [x for x in rows if x["store"] == r["store"] and x["mode"] == r["mode"]]
        feast = next(x for x in same if x["server"] == "feast-defaults")
        floor = next(x for x in same if x["server"].startswith("floor"))
        anchor, what = (
            (floor, "GET /health, same server (HTTP without the read)")
            if r["server"] == "feast-defaults"
            else (feast, "`feast serve` defaults")
        )
        seq = r["mode"] == "sequential"
        p99_target = HTTP_P99_SEQ_MS if seq else HTTP_P99_CONC_MS
        measured = (
            f"{fmt_ms(r['p50_ms'], r['p99_ms'], r['max_ms'])}; {r['rps']:.0f} req/s; "
            f"{r['failed']} failed, {r['stalls']} > {STALL_MS:.0f} ms"
        )
        name = "`userrep serve`" if r["server"] == "userrep" else f"`{r['server']}`"
        if r["server"] == "feast-defaults":
            name = "`feast serve` (defaults)"
        met = ""
        if r["server"].startswith("userrep"):
            met = yes(r["p99_ms"] <= p99_target and not r["stalls"] and not r["failed"])
        out.append(
            [
                f"HTTP, {r['store']}, 1 user, {r['mode']}",
                name,
                measured,
                what,
                f"{fmt_ms(anchor['p50_ms'], anchor['p99_ms'], anchor['max_ms'])}; "
                f"{anchor['rps']:.0f} req/s",
                f"{fmt_ratio(r['p50_ms'] / anchor['p50_ms'], r['p99_ms'] / anchor['p99_ms'], r['max_ms'] / anchor['max_ms'])}; "
                f"{r['rps'] / anchor['rps']:.2f}",
                f"p99 <= {p99_target:.0f} ms, none > {STALL_MS:.0f} ms",
                met,
                f"{r['load']:.2f}",
            ]
        )
    return out


def cli_rows(cli: dict, imp: dict, serving: list[dict], http: list[dict]) -> list[list[str]]:
    feast1 = next(
        r for r in serving if r["store"] == "sqlite" and r["users"] == 1 and r["method"] == "feast"
    )
    serve1 = next(
        r
        for r in http
        if r["store"] == "sqlite" and r["server"] == "userrep" and r["mode"] == "sequential"
    )
    cli_ms = cli["cli_s"] * 1e3
    return [
        [
            "Feast CLI, sqlite, 1 user",
            "`feast get-online-features` (README), wall",
            f"{cli_ms:,.0f}",
            "in-process Feast read, p50 / `userrep serve` p50",
            fmt_ms(feast1["p50_ms"], serve1["p50_ms"]),
            f"{cli_ms / feast1['p50_ms']:,.0f} / {cli_ms / serve1['p50_ms']:,.0f}",
            "per-user scripts: SDK or HTTP",
            "",
            f"{cli['load']:.2f}",
        ],
        [
            "Feast import",
            "`python -c 'import feast'`, wall",
            f"{imp['plain_s'] * 1e3:,.0f}",
            "the CLI call above",
            f"{cli_ms:,.0f}",
            f"{imp['plain_s'] * 1e3 / cli_ms:.2f}",
            "",
            "",
            f"{imp['load']:.2f}",
        ],
        [
            "Feast import",
            "same, torch kept out (`sys.modules['torch'] = None` first)",
            f"{imp['no_torch_s'] * 1e3:,.0f}",
            "plain `import feast`",
            f"{imp['plain_s'] * 1e3:,.0f}",
            f"{imp['no_torch_s'] / imp['plain_s']:.2f}",
            "",
            "",
            f"{imp['load']:.2f}",
        ],
        [
            "Feast import",
            "same, `python -O` (typeguard's @typechecked is a no-op)",
            f"{imp['optimized_s'] * 1e3:,.0f}",
            "plain `import feast`",
            f"{imp['plain_s'] * 1e3:,.0f}",
            f"{imp['optimized_s'] / imp['plain_s']:.2f}",
            "",
            "",
            f"{imp['load']:.2f}",
        ],
    ]


def batch_rows(b: dict, users: int, epochs: int) -> list[list[str]]:
    out = []
    if "pipeline_train" in b and "model_train" in b:
        out.append(
            [
                f"batch, {users:,} users, {epochs} epochs",
                "training, users/s per epoch (pipeline: Feast feature read, real layout)",
                f"{b['pipeline_train']:,.0f}",
                "bench_train.py: same model, random data in memory",
                f"{b['model_train']:,.0f}",
                f"{b['pipeline_train'] / b['model_train']:.2f}",
                ">= 50,000 (at 200 k users, quiet)",
                "not this size",
                f"{b['pipeline_load']:.2f}",
            ]
        )
    if "pipeline_embed" in b and "model_embed" in b:
        out.append(
            [
                f"batch, {users:,} users",
                "embed + publish offline, users/s (feature read, encoder, parquet write)",
                f"{b['pipeline_embed']:,.0f}",
                "bench_train.py: the encoder alone, in memory",
                f"{b['model_embed']:,.0f}",
                f"{b['pipeline_embed'] / b['model_embed']:.2f}",
                "",
                "",
                f"{b['pipeline_load']:.2f}",
            ]
        )
    return out


def markdown(result: dict) -> str:
    m0, m1 = result["machine_start"], result["machine_end"]
    head = [
        "area",
        "figure",
        "measured",
        "floor / anchor (same run)",
        "floor / anchor value",
        "ratio",
        "target",
        "met",
        "load",
    ]
    body = serving_table_rows(result["serving"]) + http_table_rows(result["http"])
    if result.get("cli"):
        body += cli_rows(result["cli"], result["import"], result["serving"], result["http"])
    if result.get("batch"):
        body += batch_rows(result["batch"], result["batch_users"], result["batch_epochs"])
    lines = [
        "# Benchmarks",
        "",
        f"Written by `bench/run_benchmarks.py` on {result['date']}: {m0['cpu']}, "
        f"{m0['cores']} cores; 1-minute load average {m0['load']:.2f} at the start, "
        f"{m1['load']:.2f} at the end (the `load` column: when each figure was taken). Other "
        "jobs shared the machine, so absolute figures move with the load; each ratio compares "
        "two figures measured side by side in the same run.",
        "",
        *load_warning(result),
        f"In-process: {result['serving_calls']:,} timed calls per method and repetition after "
        "200 warm-up calls, methods alternating in blocks of 100; latency in ms as p50 / p99, "
        f"medians of {result['reps']} repetitions. The in-process anchor is Feast's read with "
        "`.to_dict()`, the least a caller does to get the values out (the row without it shows "
        "what the conversion costs). HTTP: one keep-alive connection per client "
        f"(http.client threads), {result['http_seq']:,} sequential and {result['http_conc']:,} "
        f"requests from {result['http_clients']} concurrent clients per repetition; p50 / p99 / "
        "worst ms, throughput, failed requests and requests over 50 ms summed over repetitions. "
        f"World: {result['world_users']:,} synthetic users, latent dim as trained, one promoted batch.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", *http_notes(result["http"]), "", *import_section(result.get("import"))]
    return "\n".join(lines) + "\n"


def load_warning(result: dict) -> list[str]:
    """A run on an overloaded machine says so: its ms figures are not the machine's quiet ones."""
    cores = result["machine_start"]["cores"] or 1
    loads = [result["machine_start"]["load"], result["machine_end"]["load"]]
    loads += [r["load"] for r in result["serving"] + result["http"]]
    if min(loads) <= cores:
        return []
    return [
        f"**The load average stayed above the core count ({min(loads):.1f} to {max(loads):.1f} "
        f"on {cores} cores) for the whole run**: every latency in ms here includes waiting for a "
        "core, so the targets in ms are not judged on a quiet machine; the ratios are the "
        "comparison that holds.",
        "",
    ]


def http_notes(http: list[dict]) -> list[str]:
    out = ["## HTTP: the load generator and the server's CPU", ""]
    out.append(
        "CPU ms per request (median of repetitions): load generator (this process, all client "
        "threads) and server (gunicorn master and workers, recycled workers included)."
    )
    out.append("")
    out.append("| store | server | mode | client CPU ms/req | client cores | server CPU ms/req |")
    out.append("|---|---|---|---|---|---|")
    for r in http:
        out.append(
            f"| {r['store']} | {r['server']} | {r['mode']} | {r['client_cpu_ms']:.3f} | "
            f"{r['client_cores']:.2f} | {r['server_cpu_ms']:.3f} |"
        )
    return out


def import_section(imp: dict | None) -> list[str]:
    if not imp:
        return []
    pk = ", ".join(f"{k} {v:.2f} s" for k, v in imp["by_package_s"].items())
    pk_opt = ", ".join(f"{k} {v:.2f} s" for k, v in imp["by_package_opt_s"].items())
    top = ", ".join(f"`{m}` {s:.2f} s" for m, s in imp["top_self"])
    return [
        "## Feast CLI start-up: what `import feast` loads",
        "",
        f"`python -X importtime -c 'import feast'` (load {imp['load']:.2f}): "
        f"{imp['total_self_s']:.2f} s of module bodies. Self time by top-level package: {pk}. "
        f"Largest single modules (self time): {top}.",
        "",
        f"- **torch**: `feast.torch_wrapper` imports torch unconditionally at import time when "
        f"it is installed (`feast.torch_wrapper` {imp['torch_cum_s']:.2f} s cumulative, nearly "
        f"all of it torch; `import torch` alone "
        f"{imp['torch_alone_s']:.2f} s wall); `feast.online_response` and "
        "`offline_store` import it through that module. Feast 0.67 has no option or "
        "environment variable to skip it. Keeping torch out of the interpreter "
        "(`sys.modules['torch'] = None` before `import feast`) makes the import fail softly "
        "(`TORCH_AVAILABLE = False`; only `to_tensor` paths need torch): "
        f"{imp['no_torch_s']:.2f} s instead of {imp['plain_s']:.2f} s. The `feast` console "
        "script offers no hook for that, and userrep imports torch itself.",
        "- **BigQuery**: `feast/__init__.py` imports `BigQuerySource` (and the Athena, Oracle, "
        "Redshift, Snowflake sources) unconditionally, but the Google SDK is not loaded "
        f"(google.cloud.bigquery imported: {imp['google_cloud_bigquery']}). "
        f"`bigquery_source`'s {imp['bigquery_source_cum_s']:.2f} s cumulative is the core of "
        "Feast it imports first (data_source, feature_view, on_demand_feature_view, "
        "feature_service ...), whose module bodies are slow because typeguard's "
        "`@typechecked` instruments each decorated class when it is defined: it parses its "
        "module's whole source again and compiles the instrumented code.",
        "- **typeguard**: `@typechecked` is a no-op under `python -O` "
        f"(`PYTHONOPTIMIZE=1`): `import feast` {imp['optimized_s']:.2f} s instead of "
        f"{imp['plain_s']:.2f} s, self time by package then {pk_opt}. -O also strips "
        "`assert` statements in every module; it needs its own `.opt-1.pyc` files (here under "
        "a temporary PYTHONPYCACHEPREFIX; this environment sets PYTHONDONTWRITEBYTECODE). "
        "Neither is a Feast option, and Feast is not patched.",
        "- What to use instead of the CLI when reading per user: the SDK with one FeatureStore "
        "per process (`representation.serving.get_user_embeddings`) or HTTP (`userrep serve`); "
        "both pay the import once.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--quick", action="store_true", help="fewer calls / requests, 1 rep")
    parser.add_argument("--no-batch", action="store_true", help="skip the batch figures")
    parser.add_argument("--online-store", nargs="+", choices=["sqlite", "redis"])
    parser.add_argument("--world-users", type=int, default=2000)
    parser.add_argument("--batch-users", type=int, default=20_000)
    parser.add_argument(
        "--from-json", type=Path, help="write the page from a --json file, measure nothing"
    )
    args = parser.parse_args()
    if args.from_json:
        args.out.write_text(markdown(json.loads(args.from_json.read_text())))
        print(f"wrote {args.out}")
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    stores = args.online_store or (["sqlite", "redis"] if redis_up() else ["sqlite"])
    reps = 1 if args.quick else 3
    calls, seq, conc = (400, 400, 800) if args.quick else (2000, 2000, 4000)
    result: dict = {
        "date": dt.date.today().isoformat(),
        "machine_start": machine(),
        "reps": reps,
        "serving_calls": calls,
        "http_seq": seq,
        "http_conc": conc,
        "http_clients": 8,
        "world_users": args.world_users,
        "serving": [],
        "http": [],
    }
    print(f"machine: {machine_line()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for store in stores:
            settings, batch_id, ids = build_world(Path(tmp) / store, store, args.world_users)
            print(f"{store} world: {len(ids):,} users, batch {batch_id}", flush=True)
            try:
                rows = bench_serving.measure(settings, batch_id, ids, (1, 100), calls, reps)
                print(bench_serving.table(rows), flush=True)
                result["serving"] += rows
                rows = bench_http.measure(
                    settings, batch_id, ids, ["feast-defaults", "userrep"], reps, seq, conc, 8
                )
                print(bench_http.table(rows), flush=True)
                result["http"] += rows
                if store == "sqlite":
                    result["cli"] = feast_cli(settings, batch_id, int(ids[0]), reps)
                    print(f"feast CLI: {result['cli']}", flush=True)
            finally:
                drop_world(settings)
    result["import"] = import_study(reps)
    print(f"import: {json.dumps(result['import'])}", flush=True)
    if not args.no_batch:
        epochs = 2
        result["batch_users"], result["batch_epochs"] = args.batch_users, epochs
        result["batch"] = batch_figures(args.batch_users, epochs)
        print(f"batch: {result['batch']}", flush=True)
    result["machine_end"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}; machine: {machine_line()}")


if __name__ == "__main__":
    main()
