"""What merging several users' reasons into one transformers call costs (issue 25, cross-request batching).

    python benchmarks/lm_merge.py --users 4 --reps 2

The real reason prompts of ``--users`` ml-100k users (10 items each, the fitted fused order) are written three
ways, interleaved per repetition: each user alone (what a server did before), all users in one merged call
with one shared prefix per user (:func:`recgen.lm.transformers_backend.shared_prefix_runs`, what the scheduler now
sends), and the same merged call with only the prefix common to all rows shared (what the merged call would
cost without per-user groups). Reports seconds per list, prefilled tokens, and whether the texts are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", default="eval/results/serving/lm_merge")
    args = parser.parse_args()

    from recgen.cli.common import make_config
    from recgen.lm import transformers_backend as tb
    from recgen.recommender import open_dataset

    dataset, rec = open_dataset(args.dataset, make_config(), show_progress=False)
    reasoner = rec.pipeline.reasoner
    backend = reasoner.backend
    recorded: list = []

    class Recorder:
        def __getattr__(self, name):
            return getattr(backend, name)

        def generate_text(self, prompts, max_new_tokens):
            recorded.append((list(prompts), max_new_tokens))
            return [""] * len(prompts)

    users = sorted(dataset.users, key=lambda u: (len(u), u))[: args.users]
    reasoner.backend = Recorder()
    for user in users:
        recs = rec.recommend(history=list(dataset.history(user)), k=args.k, reasons=False)
        reasoner.explain(list(dataset.history(user)), None, [r.item_id for r in recs])
    reasoner.backend = backend
    tokens = recorded[0][1]
    lists = [prompts for prompts, _ in recorded]
    merged = [p for prompts in lists for p in prompts]
    inner = backend.backend if hasattr(backend, "backend") else backend  # past the scheduler

    def one_group(rows):
        shared = min(min(len(r) for r in rows) - 1,
                     min(tb.common_prefix_length(rows[0], r) for r in rows))
        return [(0, len(rows), shared)]

    rows = [inner.encode(p) for p in merged]
    prefill = {"grouped": sum(s + sum(len(r) - s for r in rows[a:b]) for a, b, s in tb.shared_prefix_runs(rows)),
               "one_prefix": sum(s + sum(len(r) - s for r in rows[a:b]) for a, b, s in one_group(rows)),
               "alone": sum(g[0][2] + sum(len(r) - g[0][2] for r in rs)
                            for rs in ([inner.encode(p) for p in prompts] for prompts in lists)
                            for g in [one_group(rs)])}
    timings: dict[str, list[float]] = {"alone": [], "merged_grouped": [], "merged_one_prefix": []}
    texts: dict[str, list[str]] = {}
    for _ in range(args.reps):
        start = time.perf_counter()
        texts["alone"] = [t for prompts in lists for t in inner.generate_text(prompts, tokens)]
        timings["alone"].append(time.perf_counter() - start)
        start = time.perf_counter()
        texts["merged_grouped"] = inner.generate_text(merged, tokens)
        timings["merged_grouped"].append(time.perf_counter() - start)
        with mock.patch.object(tb, "shared_prefix_runs", one_group):
            start = time.perf_counter()
            texts["merged_one_prefix"] = inner.generate_text(merged, tokens)
            timings["merged_one_prefix"].append(time.perf_counter() - start)
    result = {
        "command": "python " + " ".join(sys.argv), "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "users": len(lists), "prompts": len(merged),
        "max_new_tokens": tokens, "prefilled_tokens": prefill,
        "seconds_per_list": {k: [round(t / len(lists), 2) for t in v] for k, v in timings.items()},
        "texts_equal_to_alone": {k: texts[k] == texts["alone"] for k in ("merged_grouped", "merged_one_prefix")},
    }
    out = Path(args.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
