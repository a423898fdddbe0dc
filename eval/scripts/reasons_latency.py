"""Reason latency of each ``prompt.reasons`` style as a ratio to today's (``free``), measured in ONE process on
the same users and lists, styles interleaved (the order alternates per user), so machine load cancels out.

    python eval/scripts/reasons_latency.py -d ml-100k --users 6 --threads 1 --out eval/results/reasons/ml-100k/latency

Lists are the hybrid retriever's top k for each seeded user's training history (reasons do not depend on how
the list was ranked). Writes ``<out>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from recgen.config import RecgenConfig
from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData, sample_users
from recgen.reasons.reasoner import Reasoner
from recgen.recommender import Recommender


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-d", "--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--styles", default="free,facts,grounded")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = EvalData.from_dataset(load_dataset(args.dataset))
    lm = {"threads": args.threads, **({"adapter": args.adapter} if args.adapter else {})}
    rec = Recommender.from_dataset(data.train_dataset(), RecgenConfig().updated("latency", lm=lm))
    pipe = rec.pipeline
    styles = args.styles.split(",")
    reasoners = {s: Reasoner(rec.catalog, pipe.backend, pipe.config.prompt.model_copy(update={"reasons": s}),
                             pipe.retriever.item_embeddings, pipe.state.transitions) for s in styles}
    seconds: dict[str, list[float]] = {s: [] for s in styles}
    splits = data.split.splits
    for n, position in enumerate(sample_users(len(splits), args.users, args.seed)):
        history = list(splits[position].train)
        items = [i for i, _ in rec.retriever.retrieve(history, n=args.k, exclude=set(history))]
        order = styles if n % 2 == 0 else styles[::-1]
        for style in order:
            start = time.perf_counter()
            reasoners[style].explain(history, None, items)
            seconds[style].append(time.perf_counter() - start)
    base = statistics.median(seconds["free"]) if "free" in seconds else None
    result = {"dataset": args.dataset, "users": args.users, "k": args.k, "threads": args.threads,
              "adapter": args.adapter, "median_s_per_list": {s: statistics.median(v) for s, v in seconds.items()},
              "ratio_to_free": {s: statistics.median(v) / base for s, v in seconds.items()} if base else None,
              "seconds": seconds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    for style in styles:
        ratio = f" ({result['ratio_to_free'][style]:.2f}x free)" if base else ""
        print(f"{style:10s} {result['median_s_per_list'][style]:.2f} s per list of {args.k}{ratio}")


if __name__ == "__main__":
    main()
