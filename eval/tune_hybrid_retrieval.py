"""Choose retrieval's ``collaborative_weight`` on validation targets; report test Recall@N for the choice.

    python eval/tune_hybrid_retrieval.py --dataset ml-100k --dataset amazon-beauty

Validation: history = training items, transitions fitted on training items only. Test: history = training
+ validation items, transitions fitted on those. Full ranking over all items, history masked, every user
counted. Writes ``eval/results/<dataset>/tuning/hybrid-retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from recgen.data import leave_one_out, load_dataset
from recgen.retrieval import Retriever
from recgen.retrieval.collaborative import ItemTransitions

GRID = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0]


def recall_at(retriever: Retriever, histories, targets, weights, n: int) -> dict[float, float]:
    hits = {w: 0 for w in weights}
    cat = retriever.catalog
    for history, target in zip(histories, targets):
        vector = retriever.query_vector(history)
        rows = np.array([cat.index_of(i) for i in history])
        cos = retriever.item_embeddings @ vector
        cf = retriever.transitions.scores(rows)
        t = cat.index_of(target)
        for w in weights:
            s = cos + w * cf
            s[rows] = -np.inf
            # rank of the target = items strictly better (ties broken against the target)
            if (s > s[t]).sum() + (s[np.arange(len(s)) != t] == s[t]).sum() < n:
                hits[w] += 1
    return {w: hits[w] / len(targets) for w in weights}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    for name in args.dataset:
        start = time.perf_counter()
        data = load_dataset(name)
        split = leave_one_out(data)
        base = Retriever.build(data.catalog)
        report = {"command": "python " + " ".join(sys.argv), "dataset": data.name, "users": len(split.splits),
                  "excluded_users": split.excluded_users, "n": args.n, "grid": GRID}
        for stage in ("valid", "test"):
            histories = [s.history_for(stage) for s in split.splits]
            targets = [s.target(stage) for s in split.splits]
            base.transitions = ItemTransitions.fit(data.catalog, histories)
            weights = GRID if stage == "valid" else [0.0, report["chosen_weight"]]
            report[f"recall@{args.n}_{stage}"] = {str(w): round(r, 4) for w, r in
                                                  recall_at(base, histories, targets, weights, args.n).items()}
            if stage == "valid":
                scores = report[f"recall@{args.n}_valid"]
                report["chosen_weight"] = float(max(scores, key=lambda w: (scores[w], -float(w))))
        report["seconds"] = round(time.perf_counter() - start, 1)
        out = Path("eval/results") / data.name / "tuning" / "hybrid-retrieval.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
