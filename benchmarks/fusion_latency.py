"""Per-user latency of the served second stage without an LM, through the public API of a fitted dataset.

    python benchmarks/fusion_latency.py -d amazon-beauty --users 200 \
        --out eval/results/fusion/latency-served-amazon-beauty.json [--request "a 90s comedy" ...]

The recommender is what `recgen recommend/serve/batch -d <dataset>` load (`open_dataset`: the folder
`recgen fit` saved; refused when there is none). Timed per user: ``recommend(history, k=10, reasons=False)``
— request checks, merged pool, features, one booster call, top 10 as items — one user at a time (what a
request pays) and ``recommend_batch`` of 256 (what batch jobs pay). Histories: each sampled user's
sequence without its last item. The machine's load average is recorded (2 shared cores), and the CPU time
per call (process time: what the call costs, whatever the load; wall ≈ CPU × runnable processes / cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from recgen.evaluation.protocol import sample_users
from recgen.recommender import open_dataset


def timed(rec, histories, queries) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of one ``recommend`` call per history (with its query, or none)."""
    wall, cpu = [], []
    for hist, query in zip(histories, queries):
        t0, c0 = time.perf_counter(), time.process_time()
        rec.recommend(history=hist, query=query, k=10, reasons=False)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--fitted", type=Path, default=None, help="fitted folder (default: the cache)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--request", action="append", default=[],
                        help="also time requests with a history (the request stage), cycling these texts")
    args = parser.parse_args()

    started = time.perf_counter()
    data, rec = open_dataset(args.dataset, fitted=args.fitted)
    load_s = time.perf_counter() - started
    if rec.fusion is None:
        raise SystemExit(f"{args.dataset} has no fitted second stage: run `recgen fit -d {args.dataset}` first")
    users = list(data.sequences)
    positions = sample_users(len(users), args.users, seed=0)
    histories = [data.sequences[users[int(p)]][:-1] for p in positions]
    histories = [h for h in histories if h]

    rec.recommend(history=histories[0], k=10, reasons=False)  # warm-up (first use builds the sources)
    single, cpu = timed(rec, histories, [None] * len(histories))
    t0 = time.perf_counter()
    for i in range(0, len(histories), 256):
        rec.recommend_batch([{"history": h, "k": 10, "reasons": False} for h in histories[i:i + 256]])
    batched = (time.perf_counter() - t0) * 1000 / len(histories)
    requests = {}
    if args.request:
        wall_r, cpu_r = timed(rec, histories, [args.request[n % len(args.request)] for n in range(len(histories))])
        requests = {"request_stage": rec.pipeline.request_fusion is not None, "texts": args.request,
                    "ms_per_request_single": {"median": round(statistics.median(wall_r), 2),
                                              "p95": round(float(np.percentile(wall_r, 95)), 2)},
                    "cpu_ms_per_request_single": {"median": round(statistics.median(cpu_r), 2),
                                                  "p95": round(float(np.percentile(cpu_r, 95)), 2)}}
    result = {"dataset": data.name, "users": len(histories), "depth": rec.fusion.depth,
              "features": len(rec.fusion.ranker.feature_names), "sasrec": rec.fusion.sources.sasrec is not None,
              "open_dataset_seconds": round(load_s, 2),
              "ms_per_user_single": {"median": round(statistics.median(single), 2),
                                     "p95": round(float(np.percentile(single, 95)), 2),
                                     "max": round(max(single), 2)},
              "cpu_ms_per_user_single": {"median": round(statistics.median(cpu), 2),
                                         "p95": round(float(np.percentile(cpu, 95)), 2)},
              "ms_per_user_batched_256": round(batched, 2), **({"requests": requests} if requests else {}),
              "load_average": os.getloadavg(),
              "command": " ".join(["python", "benchmarks/fusion_latency.py", *sys.argv[1:]])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
