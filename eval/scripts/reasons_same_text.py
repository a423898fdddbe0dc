"""Share of (user, rank) reasons two runs served with the same text (e.g. with and without an adapter).

    python eval/scripts/reasons_same_text.py ml-100k grammar-u200-s0 grammar+ft-u200-s0

Reads the runs' per-user rows (``<cache>/reasons/<dataset>/<run>.rows.jsonl``, ``RECGEN_CACHE_DIR`` moves the cache); prints counts only.
"""

from __future__ import annotations

import json
import sys

from recgen.evaluation.reasons import default_audit_dir


def served(dataset: str, run: str) -> dict[tuple[str, int], str]:
    path = default_audit_dir() / dataset / f"{run}.rows.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["user"], x["rank"]): x["served_text"] for r in rows if not r.get("header") for x in r["reasons"]}


def main() -> None:
    dataset, first, second = sys.argv[1:4]
    a, b = served(dataset, first), served(dataset, second)
    both = sorted(set(a) & set(b))
    same = sum(a[key] == b[key] for key in both)
    print(f"{len(both)} reasons in both runs; same text {same} ({same / len(both):.1%})")


if __name__ == "__main__":
    main()
