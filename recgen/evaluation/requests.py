"""Request following: does a request in words change the list, and do the returned items satisfy it?

For held-out test targets, a request is built from the target's own attributes, deterministically for a
seed, so a system that follows requests can both satisfy them and still find the target:

* catalogs with genres and years (MovieLens): ``"a 90s comedy"``: satisfied by an item with that genre
  whose year falls in that decade; when the target has no year, the genre alone;
* catalogs with titles only (Amazon): a product word of the target's title (a word of 4+ letters found in
  between 5 items and 2% of the catalog, so neither a brand-like rarity nor filler), ``"a moisturizer"``:
  satisfied by an item whose title contains the word (case-insensitive, plural ``s`` ignored);
* negative requests (catalogs with genres): ``"not horror"`` for a genre of the user's recent history that the
  target lacks: satisfied by an item without that genre.

Each request is run three ways on the same users: with the history (request + history), without it
(request only, a new user), and the history alone (no request: the baseline that shows whether the request
changed anything). Reported per way: the share of returned items that satisfy the request, and Hit@10 /
NDCG@10 of the target (full catalog, history excluded, a miss counts 0). Test targets are used for
measurement only; nothing is fitted on them.
"""

from __future__ import annotations

import random
from typing import Callable

from ..data.requests import RequestBuilder
from ..progress import task
from .metrics import mean_metrics, metrics_from_ranks, rank_of
from .protocol import EvalData, pseudonym

WAYS = ("request+history", "request", "history")


def evaluate_requests(recommend: Callable[[list[str], str | None, int], list[str]], data: EvalData,
                      positions, seed: int = 0, k: int = 10, stage: str = "test") -> dict:
    """Run every request three ways through ``recommend(history, query, k) -> item ids``; summary + rows.
    ``stage="valid"`` builds requests from validation targets (history = training items): for tuning.
    Progress (users done) goes to the active display (:func:`recgen.progress.reporting`)."""
    builder = RequestBuilder(data.dataset.catalog)
    rng = random.Random(seed)
    rows: list[dict] = []
    positions = list(positions)
    with task(f"requests ({stage} users)", total=len(positions)) as advance:
        for p in positions:
            rows += _user_rows(recommend, data, builder, rng, int(p), stage, k)
            advance()
    return {"summary": summarise(rows, k), "rows": rows}


def _user_rows(recommend, data: EvalData, builder: RequestBuilder, rng: random.Random, p: int, stage: str,
               k: int) -> list[dict]:
    """One user's requests, each run the three ways."""
    catalog, ids, rows = data.dataset.catalog, data.dataset.catalog.ids, []
    history = [ids[i] for i in data.history(stage, int(p))]
    target = ids[data.target(stage, int(p))]
    item = catalog.get(target)
    requests = [builder.positive(item, rng), builder.negative(item, [catalog.get(h) for h in history], rng)]
    for request in filter(None, requests):
        row = {"user": pseudonym(data.user_ids[int(p)]), "target": pseudonym(target), "kind": request.kind,
               "text": request.text}  # not "request": that key is one of the WAYS
        for way in WAYS:
            returned = recommend(history if way != "request" else [], request.text if way != "history" else None,
                                 k)
            row[way] = {"rank": rank_of(returned, target),
                        "satisfied": sum(request.satisfied(catalog.get(i)) for i in returned),
                        "returned": len(returned)}
        rows.append(row)
    return rows


def summarise(rows: list[dict], k: int = 10) -> dict:
    """Per request kind and way: share of returned items satisfying the request, Hit@k and NDCG@k."""
    out: dict = {}
    for kind in sorted({row["kind"] for row in rows}):
        chosen = [row for row in rows if row["kind"] == kind]
        out[kind] = {"requests": len(chosen)}
        for way in WAYS:
            returned = sum(row[way]["returned"] for row in chosen)
            means = mean_metrics(metrics_from_ranks([row[way]["rank"] for row in chosen], (k,)))
            out[kind][way] = {"satisfying_share": round(sum(row[way]["satisfied"] for row in chosen) / returned, 4)
                              if returned else None,
                              f"hit@{k}": round(means[f"recall@{k}"], 4), f"ndcg@{k}": round(means[f"ndcg@{k}"], 4)}
    return out
