"""Diagnosis of one reasons run from its per-user rows (no LM): why reasons fell back, what the degenerate ones
are made of, and how the related history item was chosen (see NOTES.md, "Amazon Beauty: diagnosis"), and the ceiling of
'related' by similarity alone and with co-purchase by two or more other users.

    python eval/scripts/reasons_diagnose.py amazon-beauty grounded-final-u200-s0

Prints counts only (no dataset text); the examples quoted in NOTES.md come from the audit file.
"""
import collections
import json
import sys

import numpy as np
import scipy.sparse as sp

from recgen.config import RecgenConfig
from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.reasons import default_audit_dir, grade_rows
from recgen.reasons.checker import ReasonChecker
from recgen.reasons.facts import similarity_threshold
from recgen.recommender import Recommender
from recgen.retrieval.cache import index_folder


def main() -> None:
    ds, run = sys.argv[1], sys.argv[2]
    cfg = RecgenConfig()
    data = EvalData.from_dataset(load_dataset(ds))
    catalog = data.dataset.catalog
    rec = Recommender.from_dataset(data.train_dataset(), cfg, backend=object(), index_dir=index_folder(
        data.dataset.name, catalog.fingerprint(), cfg.retrieval.embedder))
    emb = rec.retriever.item_embeddings
    thr = similarity_threshold(emb, seed=0)
    lines = (default_audit_dir() / ds / f"{run}.rows.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if not r.get("header")]
    graded = grade_rows(rows, catalog, cfg.prompt.history, emb, thr, ReasonChecker(catalog))

    def cos(a, b):
        x, y = emb[catalog.index_of(a)], emb[catalog.index_of(b)]
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    reasons = [(row, r) for row in graded for r in row["reasons"]]
    n = len(reasons)
    count = collections.Counter
    fallback = [r for _, r in reasons if r["source"] == "fallback"]
    why = count()
    for r in fallback:
        kinds = set()
        for p in (r.get("model") or {}).get("verdict", {}).get("checker_problems", []):
            kinds.add("capitalised word that is no title" if p.startswith("uses the name") else
                      "'liked' without naming a history item" if "without naming" in p else p.split("'")[0][:40])
        why.update(kinds)
    print(f"{n} reasons; fallback {len(fallback)} ({len(fallback) / n:.1%}); the replaced LM texts' checker findings:")
    for k, v in why.most_common():
        print(f"  {k}: {v}")
    model = [r for _, r in reasons if r["source"] == "model"]
    failing = [r["served"]["verdict"] for r in model if not r["served"]["verdict"]["passes"]]
    print(f"model-written {len(model)}, failing a check {len(failing)}: truncated {sum(v['truncated'] for v in failing)}, "
          f"says nothing {sum(v['says_nothing'] for v in failing)}, repetition {sum(bool(v['repeated']) for v in failing)}")
    best = []
    for row, r in reasons:
        past = [h for h in row["history"][-cfg.prompt.history:] if h != r["item_id"]]
        best.append(max((cos(r["item_id"], h) for h in past), default=-1.0))
    print(f"reasons whose item has a history item (window) at or above the related threshold {thr:.3f}: "
          f"{np.mean([b >= thr for b in best]):.1%} (the ceiling of 'related' by similarity)")
    # Users of the training split who had both items (exact, from the training sequences).
    train = data.train_dataset().sequences
    rows = [[catalog.index_of(i) for i in seq] for seq in train.values()]
    users = sp.csr_matrix((np.ones(sum(map(len, rows))), (np.repeat(np.arange(len(rows)), list(map(len, rows))),
                                                         np.concatenate(rows))), shape=(len(rows), len(catalog)))
    users.data[:] = 1.0
    users.sum_duplicates()
    users.data[:] = 1.0
    both = (users.T @ users).tocsr()
    co_bought = []
    for (row, r), b in zip(reasons, best):
        i = catalog.index_of(r["item_id"])
        past = [catalog.index_of(h) for h in row["history"][-cfg.prompt.history:] if h != r["item_id"]]
        co_bought.append(b >= thr or any(both[i, h] >= 2 for h in past))
    print(f"... or had by two or more other training users together with the item: {np.mean(co_bought):.1%}")
    named = [r["served"]["verdict"] for _, r in reasons]
    print(f"served: names a history item {np.mean([bool(v['named_history']) for v in named]):.1%}, a related one "
          f"{np.mean([v['personal'] for v in named]):.1%}")


if __name__ == "__main__":
    main()
