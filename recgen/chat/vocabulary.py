"""What chat turns can name in one catalog: its genres (with a few aliases), its distinctive titles, and the
small word lists the turn parser uses (negations, filler, stop words).

Pure functions of strings and the catalog; every matcher here is linear in the text it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from ..data.catalog import Catalog
from ..text import NEG_WORDS, short_title

#: Extra phrases per canonical genre name (used only when the catalog has that genre).
GENRE_ALIASES: dict[str, tuple[str, ...]] = {
    "Sci-Fi": ("science fiction", "science-fiction", "scifi", "sci fi", "sf"),
    "Horror": ("scary", "spooky", "slasher", "slashers"),
    "Comedy": ("funny", "comedic", "comedies"),
    "Animation": ("animated", "cartoon", "cartoons", "anime"),
    "Children's": ("kids", "kid", "children", "childrens", "family", "family-friendly"),
    "Romance": ("romantic", "romcom", "rom-com", "romcoms", "love story", "love stories"),
    "Film-Noir": ("noir", "film noir"),
    "Documentary": ("documentaries", "docs", "docu"),
    "Drama": ("dramatic", "dramas"),
    "Thriller": ("thrillers", "suspense"),
    "Mystery": ("mysteries", "whodunit", "whodunnit"),
    "Musical": ("musicals",),
    "Western": ("westerns", "cowboy"),
    "War": ("war movie", "war movies", "war film", "war films"),
    "Action": ("action-packed",),
    "Fantasy": ("fantasies",),
}

#: Words that reject a referenced item ("I've seen the first one") but say nothing about a genre.
REF_NEG_WORDS = {"seen", "watched", "saw", "already", "drop", "remove", "removed", "boring", "own", "read", "meh"}
#: Words that neither end a negation's scope nor count as request content.
FILLER = set(
    "a an the any some more movies movie films film flicks flick shows show stuff things ones items titles "
    "books products of at all too really very so much kind sort type types genre genres particularly "
    "especially in or and nor either i i'm im am is are be it it's its that that's this these those want "
    "wanted like likes need care for about give me us watch see get recommend suggest please into fan big "
    "huge many anything something with".split()
)
STOP = FILLER | set(
    "else other another different new now then also just only but what how maybe perhaps could would can "
    "you your my we our they them there here lol ok okay thanks thank hi hello hey yes yeah sure great good "
    "nice cool well hmm instead rather one list similar to as than from on by do does did have has had i've "
    "i'd i'll let's let which who where when why will shall should must may might was were been being if "
    "such up out over again even still yet back pick picks recommendation recommendations suggestion "
    "suggestions options option tell find looking look search choose select with same looks sounds seems fine "
    "interesting awesome love loved liked enjoyed enjoy nothing none".split()
) | NEG_WORDS | REF_NEG_WORDS
_WORD = re.compile(r"[a-z0-9]+")
_ARTICLES = {"the", "a", "an", "les", "la", "le", "il", "das", "der", "die", "el"}


def norm(text: str) -> str:
    """Lower case with curly quotes made straight; the same length as ``text``, so spans line up."""
    return text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("\u2013", "-")


def _genre_forms(genre: str) -> set[str]:
    g = genre.lower()
    forms = {g, g.replace("-", " "), g.replace("-", ""), g.replace("'", "")}
    if g.endswith("'s"):
        forms.add(g[:-2])
    for form in list(forms):
        if form.endswith("y"):
            forms.add(form[:-1] + "ies")
        elif not form.endswith("s"):
            forms.add(form + "s")
    return {f for f in forms if len(f) >= 2}


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
            alternatives = "|".join(re.escape(p) for p in sorted(self.genre_phrases, key=len, reverse=True))
            self._genre_re = re.compile(rf"(?<![\w'-])(?:{alternatives})(?![\w-])")
        if self.titles and not self.max_title_tokens:
            self.max_title_tokens = max(len(t) for t in self.titles)
        self._prefixes = frozenset(key[:n] for key in self.titles for n in range(1, len(key) + 1))

    @classmethod
    def from_genres(cls, genres: Iterable[str], titles: dict[tuple[str, ...], tuple[str, ...]] | None = None):
        genres = tuple(sorted(set(genres)))
        phrases: dict[str, str] = {}
        by_lower = {g.lower(): g for g in genres}
        for genre in genres:
            for form in _genre_forms(genre):
                phrases.setdefault(form, genre)
        for canonical, aliases in GENRE_ALIASES.items():
            target = by_lower.get(canonical.lower())
            if target is None:
                continue
            for alias in aliases:
                phrases.setdefault(alias, target)
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
