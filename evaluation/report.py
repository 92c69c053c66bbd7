"""Render an EvalRun: markdown tables (one per seed, the mean over seeds with the seed-to-seed
spread, z_u against the best baseline paired by seed, z_u recipes and ablations against the
platform z_u paired by seed, ablation decrements), the same as a self-contained HTML page, and
JSON.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from evaluation.probes import MIN_RANKED_USERS
from evaluation.runner import EvalRun, MethodRun

# (metric key, column header); every metric is higher-is-better
MIN_NOISE = 0.01  # differences under ~0.01 AUC are noise (seed-to-seed spread on real data)
COLUMNS = (
    ("linear_auc", "linear AUC"),
    ("linear_auc_cv", "linear AUC (C by CV)"),
    ("gbdt_auc", "GBDT AUC"),
    ("recall@10", "GBDT R@10"),
    ("ndcg@10", "GBDT NDCG@10"),
    ("rating_level", "rating level (Spearman)"),
    ("genre_acc", "genre acc"),
    ("genre_f1", "genre F1"),
    ("similar", "similar users"),
    ("cold_linear_auc", "cold linear AUC"),
)
Row = tuple[str, dict[str, float], str]  # (method, metrics, extra cells: dim, times)


def _present(run: EvalRun) -> list[tuple[str, str]]:
    """(metric, header) of the columns some method scored; the similar-users header says what
    that probe measured on this data set (friends AUC, cluster purity)."""
    keys = {k for r in run.runs for k, v in r.metrics.items() if not math.isnan(v)}
    return [(k, run.similar if k == "similar" else h) for k, h in COLUMNS if k in keys]


def _fmt(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.3f}"


def _table(
    rows: list[Row],
    cols: list[tuple[str, str]],
    extra: str,
    spread: dict[str, dict[str, float]] | None = None,
) -> list[list[str]]:
    """Header + rows of cells; the best value of each column in **bold**."""
    best = {
        k: max((m[k] for _, m, _ in rows if not math.isnan(m.get(k, math.nan))), default=math.nan)
        for k, _ in cols
    }
    out = [["method", *[h for _, h in cols], *extra.split("|")]]
    for name, m, cells in rows:
        line = [name]
        for k, _ in cols:
            cell = _fmt(m.get(k))
            if spread and not math.isnan(spread[name].get(k, math.nan)):
                cell += f" ±{spread[name][k]:.3f}"
            line.append(f"**{cell}**" if m.get(k) == best[k] else cell)
        out.append(line + cells.split("|"))
    return out


def _markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells[1:]])


def _seed_rows(runs: Sequence[MethodRun]) -> list[Row]:
    return [(r.name, r.metrics, f"{r.dim}|{r.fit_s:.1f}|{r.embed_s:.2f}") for r in runs]


def _mean_rows(runs: Sequence[MethodRun]) -> tuple[list[Row], dict[str, dict[str, float]]]:
    """Mean over seeds per method, and half the max-min spread (the noise shown as ±)."""
    rows, spread = [], {}
    for name in dict.fromkeys(r.name for r in runs):
        mine = [r for r in runs if r.name == name]
        keys = {k for r in mine for k in r.metrics}
        vals = {k: [r.metrics.get(k, math.nan) for r in mine] for k in keys}
        rows.append(
            (
                name,
                {k: sum(v) / len(v) for k, v in vals.items()},
                f"{mine[0].dim}|{sum(r.fit_s for r in mine) / len(mine):.1f}|"
                f"{sum(r.embed_s for r in mine) / len(mine):.2f}",
            )
        )
        spread[name] = {k: (max(v) - min(v)) / 2 for k, v in vals.items()}
    return rows, spread


def verdicts(run: EvalRun, key: str = "z_u") -> list[dict]:
    """Per column: z_u (method `key`) against the baseline with the best mean, paired by seed.

    The paired difference (z_u minus that baseline on the same split) removes what a split does
    to every method alike; its noise is the larger of DESIGN's ~0.01 and the seed-to-seed
    standard deviation of the difference. Verdict: "clears" (mean difference >= 0), "within
    noise" (>= -noise) or "below". Baselines are the methods not named z_u."""
    by: dict[str, dict[int, dict[str, float]]] = {}
    for r in run.runs:
        by.setdefault(r.key, {})[r.seed] = r.metrics
    mine = by.get(key, {})
    out = []
    for col, header in _present(run):
        base = {
            k: [v[s][col] for s in mine if s in v and not math.isnan(v[s].get(col, math.nan))]
            for k, v in by.items()
            if not k.startswith("z_u")
        }
        scored = {k: sum(v) / len(v) for k, v in base.items() if len(v) == len(mine) > 0}
        if not scored or any(math.isnan(m.get(col, math.nan)) for m in mine.values()):
            continue
        best = max(scored, key=lambda k: scored[k])
        diffs = [mine[s][col] - by[best][s][col] for s in mine]
        mean, noise = _paired(diffs)
        verdict = "clears" if mean >= 0 else "within noise" if mean >= -noise else "below"
        out.append(
            {
                "metric": col,
                "column": header,
                "z_u": sum(m[col] for m in mine.values()) / len(mine),
                "baseline": best,
                "baseline_mean": scored[best],
                "diff": mean,
                "per_seed": diffs,
                "noise": noise,
                "verdict": verdict,
            }
        )
    return out


def _paired(diffs: Sequence[float]) -> tuple[float, float]:
    """(mean, noise) of per-seed paired differences: noise = max(MIN_NOISE, their sd)."""
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) if len(diffs) > 1 else 0
    return mean, max(MIN_NOISE, sd)


def effects(run: EvalRun) -> list[dict]:
    """Each z_u recipe (`z_u:<recipe>`) and each ablation against the platform z_u, paired by
    seed, per column: the mean difference, its noise (as `verdicts`) and "better" / "worse"
    beyond the noise or "within noise". What a change to z_u buys, read off one run."""
    base = {r.seed: r.metrics for r in run.runs if r.key == "z_u"}
    others: dict[str, list[MethodRun]] = {}
    for r in [*run.runs, *run.ablations]:
        if r.key != "z_u" and r.key.startswith("z_u") and r.seed in base:
            others.setdefault(r.name, []).append(r)
    out = []
    for name, runs in others.items():
        cells = {}
        for col, _ in _present(run):
            diffs = [
                r.metrics[col] - base[r.seed][col]
                for r in runs
                if col in r.metrics and col in base[r.seed]
            ]
            diffs = [d for d in diffs if not math.isnan(d)]
            if len(diffs) == len(runs):
                mean, noise = _paired(diffs)
                word = "within noise" if abs(mean) <= noise else "better" if mean > 0 else "worse"
                cells[col] = {"diff": mean, "noise": noise, "verdict": word}
        out.append({"method": name, "seeds": [r.seed for r in runs], "columns": cells})
    return out


def _effect_cells(run: EvalRun) -> list[list[str]]:
    cols = _present(run)
    out = [["z_u variant", "seeds", *[h for _, h in cols]]]
    for e in effects(run):
        line = [e["method"], ", ".join(map(str, e["seeds"]))]
        for col, _ in cols:
            c = e["columns"].get(col)
            line.append("-" if c is None else f"{c['diff']:+.3f} {c['verdict']}")
        out.append(line)
    return out


def _verdict_cells(run: EvalRun) -> list[list[str]]:
    cells = [["column", "z_u", "best baseline", "paired diff", "per seed", "noise", "verdict"]]
    for v in verdicts(run):
        cells.append(
            [
                v["column"],
                f"{v['z_u']:.3f}",
                f"{v['baseline']} {v['baseline_mean']:.3f}",
                f"{v['diff']:+.4f}",
                " / ".join(f"{d:+.3f}" for d in v["per_seed"]),
                f"{v['noise']:.3f}",
                v["verdict"],
            ]
        )
    return cells


def _ablation_rows(run: EvalRun) -> list[Row]:
    """Each ablation as its decrement from the full z_u of the same seed (negative = worse)."""
    full = {r.seed: r.metrics for r in run.runs if r.key == "z_u"}
    rows = []
    for a in run.ablations:
        base = full.get(a.seed, {})
        delta = {k: v - base.get(k, math.nan) for k, v in a.metrics.items()}
        rows.append((f"{a.name} (seed {a.seed})", delta, f"{a.dim}|{a.fit_s:.1f}|{a.embed_s:.2f}"))
    return rows


def sections(run: EvalRun) -> list[tuple[str, str, list[list[str]]]]:
    """(title, note, table cells) in report order."""
    cols = _present(run)
    extra = "dim|fit s|embed s"
    out = []
    if len(run.seeds) > 1:
        rows, spread = _mean_rows(run.runs)
        out.append(
            (
                "Mean over seeds",
                "± is half the seed-to-seed spread: the noise.",
                _table(rows, cols, extra, spread),
            )
        )
    paired = (
        (
            "z_u against the best baseline, paired by seed",
            "z_u minus the baseline with the best mean, on the same split of each seed; noise ="
            f" max({MIN_NOISE}, the seed-to-seed standard deviation of that difference).",
            _verdict_cells(run),
        ),
        (
            "z_u variants against the platform z_u, paired by seed",
            "Each z_u recipe and ablation minus the platform z_u, paired by seed; better / worse"
            f" beyond the noise (max({MIN_NOISE}, the sd of the difference)), else within noise.",
            _effect_cells(run),
        ),
    )
    out += [(title, note, cells) for title, note, cells in paired if len(cells) > 1]
    for seed in run.seeds:
        runs = [r for r in run.runs if r.seed == seed]
        out.append((f"Seed {seed}", _split_note(run, seed), _table(_seed_rows(runs), cols, extra)))
    if run.ablations:
        note = "Change from the full z_u of the same seed (negative = the block helps)."
        cells = _table(_ablation_rows(run), cols, extra)
        out.append(("Ablations", note, [[c.replace("**", "") for c in r] for r in cells]))
    return out


def _split_note(run: EvalRun, seed: int) -> str:
    i = run.split_info.get(seed, {})
    note = (
        f"{i.get('users')} users ({i.get('probe_train')} probe-train / "
        f"{i.get('probe_test')} probe-test), {i.get('history_events')} history / "
        f"{i.get('future_events')} future events, {i.get('candidates')} candidate items"
        f" ({i.get('linear_items')} with both classes on both sides: the linear probe's)."
    )
    if "scored_pairs_test" in i:
        note += (
            f" Probe-test users rated {i['scored_pairs_test']} candidate pairs in the future"
            f" ({i['liked_pairs_test']} liked); NDCG@10 ranks {i['ranked_users_ndcg']} users,"
            f" Recall@10 {i['ranked_users_recall']} (a ranking metric needs"
            f" {MIN_RANKED_USERS}: users with liked and disliked rated candidates; Recall@10 also"
            " more than 10 of them, as it is 1 for any order otherwise)."
        )
    return note


def _kept(run: EvalRun) -> str:
    """Who and what the protocol kept (first seed; the user subsample is drawn per seed)."""
    i = run.split_info.get(run.seeds[0], {}) if run.seeds else {}
    if not i:
        return "kept: -"
    users = f"{i.get('users')} users"
    if "eligible_users" in i:
        users = f"{i['users']} users of {i['eligible_users']} with >= {i['min_events']} events"
        if i["users"] < i["eligible_users"]:
            users += f" (a random {run.protocol.max_users} drawn from the seed)"
    rule = (
        f"users need >= {run.protocol.min_events} events, or >= "
        f"{run.protocol.fallback_min_events} where fewer than "
        f"{run.protocol.min_eligible_users} users qualify; at most {run.protocol.max_users} users"
    )
    return (
        f"kept: {users}, {i.get('items')} items, "
        f"{i.get('history_events', 0) + i.get('future_events', 0)} events; {rule}"
    )


def _feedback(run: EvalRun) -> str:
    if run.feedback == "explicit":
        return (
            "explicit: label = liked, a future rating >= the user's mean history rating (ties"
            " liked); probes fit and score only the (user, candidate) pairs rated in the future;"
            " rankings order each user's rated candidates with the liked ones relevant"
        )
    return "implicit: label = any future event on the candidate"


def header(run: EvalRun) -> list[str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"command: `{run.command}`",
        f"dataset: {run.dataset} (history: {_history_rule(run)}); "
        f"seeds: {', '.join(map(str, run.seeds))}; "
        f"protocol: {json.dumps(asdict(run.protocol))}",
        f"feedback: {_feedback(run)}",
        _kept(run),
        *run.notes,
        f"wall time: {run.wall_s:.0f} s on {os.cpu_count()} cores (load average {load:.1f})",
    ]


def _history_rule(run: EvalRun) -> str:
    share = f"{run.protocol.history_fraction:.0%}"
    if run.split == "time":
        return f"each user's earliest {share} of events"
    return f"a random {share} of each user's events"


def to_markdown(run: EvalRun) -> str:
    parts = [f"## userrep evaluate: {run.dataset}", "", *[f"- {h}" for h in header(run)]]
    for title, note, cells in sections(run):
        parts += ["", f"### {title}", "", note, "", _markdown(cells)]
    return "\n".join(parts) + "\n"


def _html_cell(text: str, tag: str) -> str:
    if text.startswith("**"):
        return f"<{tag}><b>{html.escape(text.strip('*'))}</b></{tag}>"
    return f"<{tag}>{html.escape(text)}</{tag}>"


def to_html(run: EvalRun) -> str:
    """A self-contained page: the same tables, no scripts, no external assets."""
    body = [f"<h2>userrep evaluate: {html.escape(run.dataset)}</h2><ul>"]
    body += [f"<li>{html.escape(h)}</li>" for h in header(run)] + ["</ul>"]
    for title, note, cells in sections(run):
        body += [f"<h3>{html.escape(title)}</h3><p>{html.escape(note)}</p><table>"]
        body.append("<tr>" + "".join(_html_cell(c, "th") for c in cells[0]) + "</tr>")
        body += ["<tr>" + "".join(_html_cell(c, "td") for c in r) + "</tr>" for r in cells[1:]]
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>userrep evaluate"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write(run: EvalRun, out: Path) -> list[Path]:
    """report.md, report.html and results.json under out."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.md", out / "report.html", out / "results.json"]
    files[0].write_text(to_markdown(run))
    files[1].write_text(to_html(run))
    files[2].write_text(json.dumps(asdict(run), indent=2, default=str) + "\n")
    return files
