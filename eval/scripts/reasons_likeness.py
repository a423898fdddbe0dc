"""What the likeness claims of a reasons run rest on: for every served reason that calls the item and a named
history item close or similar (``recgen.reasons.grammar.LIKENESS``), the genres the two share and whether two
other users had both.

    python eval/scripts/reasons_likeness.py ml-100k prefix-v2-u200-s0

Prints counts (no dataset text): claims on two or more shared genres covering the item (what
``grammar.alike`` accepts), on one shared genre covering the item, on shared genres not covering it, and on
co-interaction alone.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.reasons import default_audit_dir
from recgen.reasons.facts import names_title
from recgen.reasons.grammar import LIKENESS
from recgen.reasons.reasoner import co_liked_of
from recgen.retrieval.collaborative import ItemTransitions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("run")
    args = parser.parse_args()
    lines = (default_audit_dir() / args.dataset / f"{args.run}.rows.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [r for r in (json.loads(line) for line in lines if line.strip()) if not r.get("header")]
    data = EvalData.from_dataset(load_dataset(args.dataset))
    catalog = data.dataset.catalog
    train = data.train_dataset()  # what the run's recommender was fitted on
    transitions = ItemTransitions.fit(train.catalog, list(train.sequences.values()))
    co_liked = co_liked_of(catalog, transitions)
    counts: Counter[str] = Counter()
    reasons = 0
    for row in rows:
        history = [catalog.get(i) for i in row["history"]]
        for reason in row["reasons"]:
            reasons += 1
            text = reason["served_text"]
            if not LIKENESS.search(text):
                continue
            item = catalog.get(reason["item_id"])
            named = [h for h in history if names_title(text, h.title) and h.item_id != item.item_id]
            if not named:
                counts["names no history item"] += 1
                continue
            past = named[0]
            shared = set(item.genres) & set(past.genres)
            covers = bool(item.genres) and set(item.genres) <= shared
            if len(shared) >= 2 and covers:
                kind = "2+ shared genres covering the item"
            elif shared and covers:
                kind = "1 shared genre covering the item"
            elif shared:
                kind = "shared genres not covering the item"
            else:
                kind = "no shared genre"
            counts[kind + (", co-liked by 2+ users" if co_liked(item, past) else "")] += 1
    print(json.dumps({"run": args.run, "users": len(rows), "reasons": reasons,
                      "likeness_claims": sum(counts.values()), "by_evidence": dict(counts.most_common())}, indent=2))


if __name__ == "__main__":
    main()
