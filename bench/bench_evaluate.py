"""Benchmark: wall time of the representation-quality protocol (`userrep evaluate`).

    .venv/bin/python bench/bench_evaluate.py [--dataset movielens-100k] [--seed 0 ...]
        [--methods z_u,tfidf,...] [--threads 1]

Prints the total wall time (CI budget for ml-100k: 5 minutes on 2 cores), fit and embed time
of every method, the CPU count and load average; the report tables go to --out when given.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from evaluation import report
from evaluation.runner import DEFAULT_METHODS, evaluate

log = logging.getLogger("bench_evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--seed", type=int, action="append")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--text-cache", type=Path, default=Path("workspace/text_cache.parquet"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("representation", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    run = evaluate(
        args.dataset,
        args.seed or [0],
        args.methods.split(","),
        text_cache=args.text_cache,
        threads=args.threads,
        command="bench/bench_evaluate.py",
    )
    wall = time.perf_counter() - t0
    for r in run.runs:
        log.info("%-36s seed %d  fit %7.1f s  embed %6.2f s", r.name, r.seed, r.fit_s, r.embed_s)
    log.info(
        "%s: %.0f s wall (%s cores, load average %.1f, %d torch threads)",
        args.dataset,
        wall,
        os.cpu_count(),
        os.getloadavg()[0],
        args.threads,
    )
    if args.out:
        report.write(run, args.out)


if __name__ == "__main__":
    main()
