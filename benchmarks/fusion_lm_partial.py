"""Paired comparison of a finished run with an UNFINISHED one (its per-user file so far), on the users both have.

    python benchmarks/fusion_lm_partial.py eval/results/fusion-lm/ml-100k/fusion-lm-none-test.json \
        eval/results/fusion-lm/ml-100k/fusion-lm-zeroshot-test.users.jsonl

`recgen eval compare` needs two finished runs; when the LM run cannot finish in the time, this reports the same
statistics (paired bootstrap CI and p, Wilcoxon on NDCG@10; `recgen.evaluation.stats.compare_paired`) over the
users scored so far, and says how many that is. Which users are scored first depends only on the run's order
(sorted user positions), not on results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recgen.evaluation.metrics import metrics_from_ranks
from recgen.evaluation.runfiles import load_run, read_user_file
from recgen.evaluation.stats import compare_paired

METRICS = ["ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("finished", type=Path, help="the finished run's .json (B)")
    parser.add_argument("partial", type=Path, help="the unfinished run's .users.jsonl (A)")
    parser.add_argument("--bootstrap", type=int, default=10000)
    args = parser.parse_args()
    summary, rows_b = load_run(args.finished.parent.parent, args.finished.parent.name, str(args.finished))
    header, rows_a = read_user_file(args.partial)
    a, b = {r["user"]: r for r in rows_a}, {r["user"]: r for r in rows_b}
    users = [u for u in a if u in b]
    if any(a[u]["target"] != b[u]["target"] for u in users):
        raise SystemExit("the runs have different targets for some users; not comparable")
    per_a = metrics_from_ranks([a[u]["rank"] for u in users], [10, 20])
    per_b = metrics_from_ranks([b[u]["rank"] for u in users], [10, 20])
    results = compare_paired(per_a, per_b, METRICS, n_boot=args.bootstrap)
    out = {"partial_run": str(args.partial), "finished_run": str(args.finished), "paired_users": len(users),
           "finished_run_users": len(b), "comparisons": [r.to_dict() for r in results]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
