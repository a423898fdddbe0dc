"""The seeded sample of served reasons a person grades by hand (``hand-graded-<dataset>.jsonl``), with the
facts beside each: the item, the history item the reason names, their genres, embedding cosine and whether
two other users had both.

    python eval/scripts/reasons_hand_sample.py amazon-beauty grammar-u200-s0 --n 50
    python eval/scripts/reasons_hand_sample.py ml-100k v2-u200-s0 v2-requests-u200-s0 --n 50
    python eval/scripts/reasons_hand_sample.py ml-100k v4-u200-s0 v4-requests-u200-s0 --n 26 --likeness 20

Sample: ``random.Random(seed).sample`` of ``n`` (user, rank) pairs from the runs' per-user rows (with several
runs, ``n`` split evenly between them, so reasons for requests are in it). ``--likeness K``: K of the ``n`` are
drawn first among reasons that call the item close or similar (:data:`recgen.reasons.grammar.LIKENESS`; split
evenly between the runs that have any), since a plain sample holds few (2 of 50 in v3) and those are the claims
a person doubts; the rest as above, from the reasons not drawn. Writes
``<cache>/reasons/<dataset>/<runs>.hand-sample.md`` (it quotes titles: never committed); each entry shows the
request, the item's facts, the history item the reason names and whether the reason claims likeness.
"""

from __future__ import annotations

import argparse
import json
import random

from recgen.config import RecgenConfig
from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData
from recgen.evaluation.reasons import default_audit_dir
from recgen.reasons.facts import names_title, similarity_threshold
from recgen.reasons.grammar import LIKENESS
from recgen.reasons.reasoner import co_liked_of
from recgen.recommender import Recommender
from recgen.retrieval.cache import index_folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--likeness", type=int, default=0, help="of the n, how many claim likeness")
    args = parser.parse_args()
    folder = default_audit_dir() / args.dataset
    runs = {}
    for run in args.runs:
        lines = (folder / f"{run}.rows.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        runs[run] = sorted((r for r in rows if not r.get("header")), key=lambda r: r["position"])
    cfg = RecgenConfig()
    data = EvalData.from_dataset(load_dataset(args.dataset))
    catalog = data.dataset.catalog
    rec = Recommender.from_dataset(data.train_dataset(), cfg, backend=object(), index_dir=index_folder(
        data.dataset.name, catalog.fingerprint(), cfg.retrieval.embedder))
    emb = rec.retriever.item_embeddings
    threshold = similarity_threshold(emb, seed=0)
    co_liked = co_liked_of(catalog, rec.retriever.transitions)
    name = "+".join(args.runs)
    out = [f"# Hand-grading sample of {name} ({args.dataset}): {args.n} served reasons, seed {args.seed}\n",
           f"related threshold (cosine) {threshold:.3f}\n"]
    pools = {run: [(run, r, x) for r in rows for x in r["reasons"]] for run, rows in runs.items()}
    liked = {run: [p for p in pool if LIKENESS.search(p[2]["served_text"])] for run, pool in pools.items()}
    picked = _split(liked, min(args.likeness, args.n), args.seed)
    taken = {(run, row["user"], reason["rank"]) for run, row, reason in picked}
    rest = {run: [p for p in pool if (run, p[1]["user"], p[2]["rank"]) not in taken] for run, pool in pools.items()}
    picked += _split(rest, args.n - len(picked), args.seed)
    for run, row, reason in picked:
        item = catalog.get(reason["item_id"])
        history = [catalog.get(i) for i in row["history"]]
        likeness = bool(LIKENESS.search(reason["served_text"]))
        out.append(f"## {row['user']}-{reason['rank']} [{run}, {reason['source']}{', LIKENESS' if likeness else ''}"
                   f"{', REQUEST' if row.get('query') else ''}]"
                   f"\n\n> {reason['served_text']}\n")
        if row.get("query"):
            out.append(f"- request: {row['query']}")
        out.append(f"- item: {item.title} {list(item.genres)} {item.year or ''} {item.description[:150]}")
        for past in history:
            if names_title(reason["served_text"], past.title):
                cos = float(emb[catalog.index_of(item.item_id)] @ emb[catalog.index_of(past.item_id)])
                out.append(f"- names: {past.title} {list(past.genres)}; cosine {cos:.3f}; "
                           f"two others had both: {co_liked(item, past)}")
        out.append("")
    path = folder / f"{name}.hand-sample.md"
    path.write_text("\n".join(out), encoding="utf-8")
    print(path)


def _split(pools: dict[str, list], n: int, seed: int) -> list:
    """``n`` drawn from the runs' pools, split evenly between the runs whose pool is not empty."""
    runs = [run for run, pool in pools.items() if pool]
    out: list = []
    for k, run in enumerate(runs):
        share = n // len(runs) + (1 if k < n % len(runs) else 0)
        out += random.Random(seed).sample(pools[run], min(share, len(pools[run])))
    return out


if __name__ == "__main__":
    main()
