"""Requests in words built from an item's own attributes, so a system that follows them can still find it.

* catalogs with genres and years (MovieLens): ``"a 90s comedy film"``: satisfied by an item with that genre
  whose year falls in that decade; when the item has no year, the genre alone;
* catalogs with titles only (Amazon): a product word of the title (a word of 4+ letters found in between 5
  items and 2% of the catalog, so neither a brand-like rarity nor filler): satisfied by an item whose title
  contains the word (case-insensitive, plural ``s`` ignored);
* negative requests (catalogs with genres): ``"anything but horror"`` for a genre of the recent history that
  the item lacks: satisfied by an item without that genre.

In ``data`` because two layers build them: the request stage's fit (from validation targets) and the request
evaluation (from test targets).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from ..text import title_terms
from .catalog import Catalog, Item

#: A title word makes a request only with 4+ letters (counted before its plural ``s`` is dropped).
MIN_WORD_LETTERS = 4
_DECADE_WORDS = {1920: "20s", 1930: "30s", 1940: "40s", 1950: "50s", 1960: "60s", 1970: "70s", 1980: "80s",
                 1990: "90s", 2000: "2000s", 2010: "2010s", 2020: "2020s"}


@dataclass(frozen=True)
class Request:
    """A request in words and the rule that says whether an item satisfies it."""

    text: str
    kind: str
    satisfied: Callable[[Item], bool]


class RequestBuilder:
    """Builds the requests of one catalog (its word frequencies are computed once)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.has_genres = any(item.genres for item in catalog)
        self.df = Counter(w for item in catalog for w in title_terms(item.title, MIN_WORD_LETTERS))
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
        words = sorted(w for w in title_terms(item.title, MIN_WORD_LETTERS) if 5 <= self.df[w] <= self.max_df)
        if not words:
            return None
        word = rng.choice(words)
        return Request(f"a {word}", "title word",
                       lambda other, w=word: w in title_terms(other.title, MIN_WORD_LETTERS))

    def negative(self, item: Item, history: list[Item], rng: random.Random) -> Request | None:
        """``not <genre>`` for a genre of the recent history that the target lacks (so the request bites)."""
        recent = Counter(g for past in history[-10:] for g in past.genres if g not in item.genres)
        if not recent:
            return None
        genre = rng.choice(sorted(g for g, _ in recent.most_common(3)))
        return Request(f"anything but {genre.lower()}", "negative", lambda other, g=genre: g not in other.genres)
