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
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from ..data.catalog import Catalog, Item
from .metrics import mean_metrics, metrics_from_ranks, rank_of
from .protocol import EvalData, pseudonym

WAYS = ("request+history", "request", "history")
_WORD = re.compile(r"[a-z]{4,}")
_DECADE_WORDS = {1920: "20s", 1930: "30s", 1940: "40s", 1950: "50s", 1960: "60s", 1970: "70s", 1980: "80s",
                 1990: "90s", 2000: "2000s", 2010: "2010s", 2020: "2020s"}


@dataclass(frozen=True)
class Request:
    """A request in words and the rule that says whether an item satisfies it."""

    text: str
    kind: str
    satisfied: Callable[[Item], bool]


def _stem(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _title_words(item: Item) -> set[str]:
    return {_stem(w) for w in _WORD.findall(item.title.lower())}


class RequestBuilder:
    """Builds the requests of one catalog (its word frequencies are computed once)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.has_genres = any(item.genres for item in catalog)
        self.df = Counter(w for item in catalog for w in _title_words(item))
        self.max_df = max(5, int(0.02 * len(catalog)))

    def positive(self, item: Item, rng: random.Random) -> Request | None:
        if self.has_genres:
            if not item.genres:
                return None
            genre = rng.choice(sorted(item.genres))
            decade = (item.year // 10) * 10 if item.year else None
            if decade in _DECADE_WORDS:
                return Request(f"a {_DECADE_WORDS[decade]} {genre.lower()} film", "genre+decade",
                               lambda other, g=genre, d=decade: g in other.genres and other.year is not None
                               and d <= other.year < d + 10)
            return Request(f"a {genre.lower()} film", "genre", lambda other, g=genre: g in other.genres)
        words = sorted(w for w in _title_words(item) if 5 <= self.df[w] <= self.max_df)
        if not words:
            return None
        word = rng.choice(words)
        return Request(f"a {word}", "title word", lambda other, w=word: w in _title_words(other))

    def negative(self, item: Item, history: list[Item], rng: random.Random) -> Request | None:
        """``not <genre>`` for a genre of the recent history that the target lacks (so the request bites)."""
        recent = Counter(g for past in history[-10:] for g in past.genres if g not in item.genres)
        if not recent:
            return None
        genre = rng.choice(sorted(g for g, _ in recent.most_common(3)))
        return Request(f"anything but {genre.lower()}", "negative", lambda other, g=genre: g not in other.genres)


def evaluate_requests(recommend: Callable[[list[str], str | None, int], list[str]], data: EvalData,
                      positions, seed: int = 0, k: int = 10, stage: str = "test",
                      log: Callable[[str], None] = lambda m: None) -> dict:
    """Run every request three ways through ``recommend(history, query, k) -> item ids``; summary + rows.
    ``stage="valid"`` builds requests from validation targets (history = training items): for tuning."""
    catalog = data.dataset.catalog
    builder = RequestBuilder(catalog)
    rng = random.Random(seed)
    ids = catalog.ids
    rows: list[dict] = []
    for n, p in enumerate(positions):
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
        if (n + 1) % 25 == 0:
            log(f"requests: {n + 1}/{len(positions)} users")
    return {"summary": summarise(rows, k), "rows": rows}


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
