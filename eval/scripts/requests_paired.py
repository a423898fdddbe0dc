"""Paired comparison of two `recgen eval requests` runs on the same seeded requests (same users, same seed):
NDCG@10 of the target per request and way, bootstrap CI + p (recgen.evaluation.stats) and Wilcoxon.

    python eval/scripts/requests_paired.py eval/results/ml-100k/requests-fusion-test-u300-s0-pool50.rows.jsonl.gz \
        eval/results/ml-100k/requests-retrieval-test-u300-s0-pool50.rows.jsonl.gz
"""

from __future__ import annotations

import gzip
import json
import math
import sys

import numpy as np

from recgen.evaluation.stats import paired_bootstrap, wilcoxon_p


def rows(path: str) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def gain(rank) -> float:
    return 1.0 / math.log2(rank + 1) if rank and rank <= 10 else 0.0


def main(a_path: str, b_path: str) -> None:
    a, b = rows(a_path), rows(b_path)
    key = lambda r: (r["user"], r["kind"])  # one request per kind and user (the text is in "text" since 2026-11-30)
    b_by = {key(r): r for r in b}
    pairs = [(r, b_by[key(r)]) for r in a if key(r) in b_by]
    out = {"a": a_path, "b": b_path, "paired_requests": len(pairs), "unpaired": len(a) - len(pairs)}
    for kind in sorted({r["kind"] for r, _ in pairs}):
        for way in ("request+history", "request", "history"):
            x = np.array([gain(r[way]["rank"]) for r, s in pairs if r["kind"] == kind])
            y = np.array([gain(s[way]["rank"]) for r, s in pairs if r["kind"] == kind])
            diff, ci, p = paired_bootstrap(x, y)
            w, nonzero = wilcoxon_p(x, y)
            out[f"{kind} / {way}"] = {"n": len(x), "ndcg@10_a": round(x.mean(), 4), "ndcg@10_b": round(y.mean(), 4),
                                      "diff": round(diff, 4), "ci95": [round(ci[0], 4), round(ci[1], 4)],
                                      "p_bootstrap": round(p, 4), "p_wilcoxon": round(w, 4), "differing": nonzero}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
