"""The phrases a request is read with, shared by every entry point (the retriever's request filters) and the chat:
genre names with their aliases and plural forms, year and decade phrases. (The word lists, negations, filler and
stop words, are :mod:`recgen.text`'s; the reader that uses all of them is :mod:`.request_parser`.)

Pure functions of strings; every matcher here is linear in the text it reads (requests come from clients).
"""

from __future__ import annotations

import re

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

def genre_forms(genre: str) -> set[str]:
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


def genre_phrases(genres) -> dict[str, str]:
    """Phrase → canonical genre for every genre of a catalog: its own forms ("comedies", "sci fi") and the
    aliases of :data:`GENRE_ALIASES` ("funny" → Comedy) when the catalog has that genre."""
    genres = tuple(sorted(set(genres)))
    phrases: dict[str, str] = {}
    by_lower = {g.lower(): g for g in genres}
    for genre in genres:
        for form in genre_forms(genre):
            phrases.setdefault(form, genre)
    for canonical, aliases in GENRE_ALIASES.items():
        target = by_lower.get(canonical.lower())
        if target is not None:
            for alias in aliases:
                phrases.setdefault(alias, target)
    return phrases


def phrase_pattern(phrases) -> re.Pattern:
    """One alternation of ``phrases`` (longest first) on word boundaries: a single linear scan of the text."""
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![\w'-])(?:{alternatives})(?![\w-])")


def period(text: str) -> tuple[int, int] | None:
    """A year or a decade (``1995``, ``the 90s``, ``1980s``, ``'80s``, ``the eighties``) → (first, last) year."""
    text = text.strip()
    words = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
             "seventies": 1970, "eighties": 1980, "nineties": 1990}
    m = re.fullmatch(r"(?:the\s+)?(?:(1[89]\d\d|20\d\d)|(1[89]\d0|20\d0)'?s|'?(\d)0'?s|(\w+ies))", text)
    if not m:
        return None
    if m.group(1):
        year = int(m.group(1))
        return year, year
    if m.group(2):
        start = int(m.group(2))
        return start, start + 9
    if m.group(3):
        digit = int(m.group(3))
        start = 2000 + 10 * digit if digit <= 2 else 1900 + 10 * digit
        return start, start + 9
    start = words.get(m.group(4))
    return (start, start + 9) if start else None


_Y = r"(?:1[89]\d\d|20\d\d)"
_T = rf"(?:(?:the\s+)?(?:1[89]\d0'?s|20\d0'?s|'?\d0'?s|twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties)|{_Y})"
_YEAR_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"\b(?:between|from)\s+(?P<a>{_T})\s+(?:and|to|until|till|through|-)\s+(?P<b>{_T})"), "range2"),
    (re.compile(rf"(?<![\w-])(?P<a>{_Y})\s*(?:-|to)\s*(?P<b>{_Y})\b"), "range2"),
    (re.compile(rf"\b(?:not|no|nothing|none)\s+(?:from\s+)?(?:before|earlier\s+than|older\s+than|prior\s+to)\s+"
                rf"(?P<a>{_T})"), "min_start"),
    (re.compile(rf"\b(?:not|no|nothing|none)\s+(?:from\s+)?(?:after|later\s+than|newer\s+than|more\s+recent\s+than)\s+"
                rf"(?P<a>{_T})"), "max_end"),
    (re.compile(rf"\b(?:after|later\s+than|newer\s+than|more\s+recent\s+than|post)\s+(?P<a>{_T})"), "min_after"),
    (re.compile(rf"\b(?:since|starting(?:\s+(?:in|from))?|in\s+or\s+after|from)\s+(?P<a>{_T})\s*"
                rf"(?:on(?:wards?)?|forwards?|and\s+(?:later|after|newer|up)|or\s+(?:later|after|newer))\b"), "min_start"),
    (re.compile(rf"\b(?:since|starting(?:\s+(?:in|from))?|in\s+or\s+after)\s+(?P<a>{_T})"), "min_start"),
    (re.compile(rf"\b(?:before|earlier\s+than|older\s+than|prior\s+to|pre)\s+(?P<a>{_T})"), "max_before"),
    (re.compile(rf"\b(?:until|till|up\s+to|through|no\s+later\s+than|in\s+or\s+before)\s+(?P<a>{_T})"), "max_end"),
    (re.compile(rf"(?P<a>{_T})\s*(?:or|and)\s+(?:later|newer|after|up|onwards?)\b|(?P<c>{_T})\s*(?:\+|onwards?\b)"), "min_start"),
    (re.compile(rf"(?P<a>{_T})\s*(?:or|and)\s+(?:earlier|older|before)\b"), "max_end"),
    (re.compile(rf"\b(?:in|of|from|during)\s+(?P<a>{_T})"), "range"),
    (re.compile(r"(?<![\w'])(?P<a>(?:the\s+)?(?:1[89]\d0'?s|20\d0'?s|'?\d0'?s|twenties|thirties|forties|fifties|"
                r"sixties|seventies|eighties|nineties))(?![\w'])"), "range"),
]


class SpanMap:
    """Which characters a span already covers: overlap checks cost the span's length, not the span count."""

    def __init__(self, length: int):
        self.map = bytearray(length)

    def free(self, start: int, end: int) -> bool:
        return self.map.find(1, start, end) < 0

    def take(self, start: int, end: int) -> None:
        self.map[start:end] = b"\x01" * (end - start)


def year_spans(lower: str) -> list[tuple[int, int, int | None, int | None]]:
    """(start, end, min_year, max_year) for each year phrase, first rule wins, no overlaps."""
    found: list[tuple[int, int, int | None, int | None]] = []
    taken = SpanMap(len(lower))
    for pattern, kind in _YEAR_RULES:
        for m in pattern.finditer(lower):
            if not taken.free(m.start(), m.end()):
                continue
            a = period(m.group("a") or m.groupdict().get("c") or "")
            if a is None:
                continue
            if kind == "range2":
                b = period(m.group("b"))
                if b is None:
                    continue
                lo, hi = min(a[0], b[0]), max(a[1], b[1])
            elif kind == "range":
                lo, hi = a
            elif kind == "min_start":
                lo, hi = a[0], None
            elif kind == "min_after":
                lo, hi = a[1] + 1, None
            elif kind == "max_end":
                lo, hi = None, a[1]
            else:  # max_before
                lo, hi = None, a[0] - 1
            found.append((m.start(), m.end(), lo, hi))
            taken.take(m.start(), m.end())
    return sorted(found)
