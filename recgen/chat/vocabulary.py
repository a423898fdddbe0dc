"""What chat turns can name in one catalog: its genres (with a few aliases), its distinctive titles, and the
small word lists the turn parser uses (negations, filler, stop words).

Pure functions of strings and the catalog; every matcher here is linear in the text it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from ..data.catalog import Catalog
from ..retrieval.request_words import genre_phrases, phrase_pattern
from ..text import STOP, norm, short_title

_WORD = re.compile(r"[a-z0-9]+")
_ARTICLES = {"the", "a", "an", "les", "la", "le", "il", "das", "der", "die", "el"}


@dataclass
class ChatVocabulary:
    """What the rules may recognise in a catalog: its genres (with aliases) and its distinctive titles."""

    genres: tuple[str, ...]
    genre_phrases: dict[str, str]
    titles: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    max_title_tokens: int = 0
    _genre_re: re.Pattern | None = field(default=None, init=False, repr=False)
    _prefixes: frozenset = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.genre_phrases:
            self._genre_re = phrase_pattern(self.genre_phrases)
        if self.titles and not self.max_title_tokens:
            self.max_title_tokens = max(len(t) for t in self.titles)
        self._prefixes = frozenset(key[:n] for key in self.titles for n in range(1, len(key) + 1))

    @classmethod
    def from_genres(cls, genres: Iterable[str], titles: dict[tuple[str, ...], tuple[str, ...]] | None = None):
        genres = tuple(sorted(set(genres)))
        phrases = genre_phrases(genres)
        return cls(genres, phrases, dict(titles or {}))

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> "ChatVocabulary":
        genres = {g for item in catalog for g in item.genres}
        genre_words = {w for g in genres for w in _WORD.findall(g.lower())}
        titles: dict[tuple[str, ...], list[str]] = {}
        for item in catalog:
            key = title_key(item.title)
            if key and _distinctive(key, genre_words):
                titles.setdefault(key, []).append(item.item_id)
        return cls.from_genres(genres, {k: tuple(v) for k, v in titles.items()})

    def genre_spans(self, lower: str) -> list[tuple[int, int, str]]:
        if self._genre_re is None:
            return []
        return [(m.start(), m.end(), self.genre_phrases[m.group(0)]) for m in self._genre_re.finditer(lower)]

    def title_spans(self, lower: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """Longest catalog-title matches on word boundaries, left to right, not overlapping.

        From each word, the key grows only while it is a prefix of some title, so the cost per word is the
        length of the longest partial match, not the length of the longest title in the catalog."""
        if not self.titles:
            return []
        words = list(_WORD.finditer(lower))
        out = []
        i = 0
        while i < len(words):
            best = 0
            key: tuple[str, ...] = ()
            for n in range(1, min(self.max_title_tokens, len(words) - i) + 1):
                key = key + (words[i + n - 1].group(0),)
                if key not in self._prefixes:
                    break
                if key in self.titles:
                    best = n
            if best:
                key = tuple(w.group(0) for w in words[i: i + best])
                out.append((words[i].start(), words[i + best - 1].end(), self.titles[key]))
                i += best
            else:
                i += 1
        return out


def title_key(title: str) -> tuple[str, ...]:
    """``"Usual Suspects, The (1995)"`` → ``("usual", "suspects")``: how a user would type it, sans article."""
    words = _WORD.findall(norm(short_title(title)))
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return tuple(words)


def _distinctive(key: tuple[str, ...], genre_words: set[str]) -> bool:
    """Titles short or common enough to appear in ordinary chat ("Heat", "Kids") are not matched."""
    content = [w for w in key if w not in STOP and w not in genre_words and not w.isdigit()]
    if not content:
        return False
    if len(key) >= 2:
        return len(" ".join(key)) >= 6
    return len(key[0]) >= 8
