"""Per-user latency of the fused second stage without an LM (pool + features + LightGBM), from a fitted ranker.

    python benchmarks/fusion_latency.py -d amazon-beauty --ranker <file from the run's params> --users 200 \
        --out eval/results/fusion/latency-amazon-beauty.json

Signals are refitted on the training sequences (as `recgen eval run -s fusion` does); the ranker is read from
its LightGBM text file. Reports one user at a time (what a `recommend` call pays) and batches of 256 (what
batch jobs and the harness pay), test-stage histories, with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData, sample_users
from recgen.evaluation.systems.fusion import FusionSystem
from recgen.ranking.fusion import FeatureBuilder, FusionRanker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--ranker", required=True, help="LightGBM text file written by the fusion system")
    parser.add_argument("--depth", type=int, required=True, help="the pool depth the ranker was chosen with")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    data = EvalData.from_dataset(load_dataset(args.dataset))
    system = FusionSystem()
    sources = system._sources(data, None)
    builder = FeatureBuilder(sources, args.depth)
    ranker = FusionRanker.load(args.ranker, builder.names)
    positions = sample_users(data.n_users, args.users, seed=0)
    histories = [data.history("test", int(p)) for p in positions]

    def rank(batch):
        for group in builder.build(batch):
            order = np.argsort(-ranker.predict(group.X), kind="stable")
            group.rows[order[:10]]

    rank(histories[:5])  # warm-up
    single = []
    for hist in histories:
        start = time.perf_counter()
        rank([hist])
        single.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for i in range(0, len(histories), 256):
        rank(histories[i:i + 256])
    batched = (time.perf_counter() - start) * 1000 / len(histories)
    result = {"dataset": args.dataset, "users": len(histories), "depth": args.depth, "ranker": str(args.ranker),
              "ms_per_user_single": {"median": round(statistics.median(single), 2),
                                     "p95": round(float(np.percentile(single, 95)), 2)},
              "ms_per_user_batched_256": round(batched, 2), "load_average": os.getloadavg(),
              "threads": os.environ.get("OMP_NUM_THREADS")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
