"""Constraints stated in a chat turn, read with plain rules, and applied as a filter on catalog items.

A turn such as ``"funny space adventures, not horror, only after 1990, more like the second one"`` becomes
:class:`TurnConstraints`: genres to exclude/include (the catalog's own genre vocabulary plus a few aliases),
year bounds, references to the previous reply ("the second one", "#3", "the last one"), catalog titles the
user liked or rejected, and the remaining request text. :func:`merge_turn` folds turns into one
:class:`Constraints`; :func:`apply_constraints` / :func:`blocked_items` turn it into a candidate filter.

Everything here is a pure function of strings and the catalog (no models), so it is unit-tested directly.
The rules are deliberately small and predictable; what they do not catch stays in the request text, which
still steers retrieval and ranking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable

from ..data.catalog import Catalog, Item
from ..ranking.reasons import short_title

# -- vocabulary ----------------------------------------------------------------------------------------

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

ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "last": -1, "final": -1,
}
_ORD_WORDS = "|".join(sorted(ORDINALS, key=len, reverse=True))
_ORD = rf"(?:{_ORD_WORDS}|\d{{1,2}}(?:st|nd|rd|th))"
_NOUN = r"(?:one|ones|item|movie|film|pick|suggestion|recommendation|title|option|entry|book|product)"
_REF = re.compile(
    rf"\b(?:(?:the|that|your)\s+(?P<a>{_ORD})(?:\s+{_NOUN})?|(?P<b>{_ORD})\s+{_NOUN})\b"
    rf"|(?:#\s*|\bnumber\s+|\bno\.\s*|\boption\s+)(?P<n>\d{{1,2}})(?!\d)"
)

_NEG_WORDS = {
    "not", "no", "non", "without", "except", "excluding", "exclude", "avoid", "avoiding", "skip", "nothing",
    "never", "neither", "nor", "hate", "hated", "dislike", "disliked", "don't", "dont", "doesn't", "didn't",
    "isn't", "aren't", "won't", "wouldn't", "less", "fewer", "minus", "none", "nope", "against",
}
#: Words that reject a referenced item ("I've seen the first one") but say nothing about a genre.
_REF_NEG_WORDS = {"seen", "watched", "saw", "already", "drop", "remove", "removed", "boring", "own", "read", "meh"}
_NEG_PHRASES = re.compile(
    r"\b(?:(?:anything|everything|all)\s+but|other\s+than|rather\s+than|instead\s+of|except\s+for|"
    r"(?:tired|sick)\s+of|do\s+not|does\s+not|did\s+not|no\s+more|get\s+rid\s+of|leave\s+out|not\s+into)\b"
)
#: Words that neither end a negation's scope nor count as request content.
_FILLER = set(
    "a an the any some more movies movie films film flicks flick shows show stuff things ones items titles "
    "books products of at all too really very so much kind sort type types genre genres particularly "
    "especially in or and nor either i i'm im am is are be it it's its that that's this these those want "
    "wanted like likes need care for about give me us watch see get recommend suggest please into fan big "
    "huge many anything something with".split()
)
_STOP = _FILLER | set(
    "else other another different new now then also just only but what how maybe perhaps could would can "
    "you your my we our they them there here lol ok okay thanks thank hi hello hey yes yeah sure great good "
    "nice cool well hmm instead rather one list similar to as than from on by do does did have has had i've "
    "i'd i'll let's let which who where when why will shall should must may might was were been being if "
    "such up out over again even still yet back pick picks recommendation recommendations suggestion "
    "suggestions options option tell find looking look search choose select with same looks sounds seems fine "
    "interesting awesome love loved liked enjoyed enjoy nothing none".split()
) | _NEG_WORDS | _REF_NEG_WORDS
_RESET = re.compile(
    r"\b(?:start\s+over|start\s+again|new\s+search|reset|clear\s+(?:the\s+|all\s+|my\s+)?(?:filters|constraints)|"
    r"forget\s+(?:it|that|everything|all\s+that|the\s+filters|my\s+filters|the\s+constraints))\b"
)
_AGAIN = re.compile(
    r"\b(?:show|list|give|include|recommend|see|bring)\b(?:\s+[\w']+){0,3}\s+again\b|\bagain\s*(?:please|pls)\b"
    r"|\brepeat\s+(?:them|those|that|these|the\s+(?:list|last|same))\b"
    r"|\binclude\s+(?:the\s+)?(?:ones|items|titles|movies|films|those)\s+(?:you\s+)?(?:already\s+)?"
    r"(?:showed|shown|suggested|recommended)\b"
)
_NOT_AGAIN = re.compile(r"\b(?:not|never|no|don't)\s+(?:\w+\s+){0,2}again\b")
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|override|bypass)\b.{0,40}\b(?:catalog|catalogue|instructions|rules|list|prompt)\b"
    r"|\bsystem\s+prompt\b|\byou\s+are\s+now\b",
    re.DOTALL,
)

_WORD = re.compile(r"[a-z0-9]+")
_CWORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_LIFT = re.compile(r"\s*(?:movies|films|stuff|ones)?\s*(?:is|are|'s|would\s+be|will\s+be)?\s*(?:also\s+|too\s+)?"
                   r"(?:fine|ok|okay|allowed|acceptable|welcome|alright|all\s+right)\b")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[,.;:!?()]")
_ARTICLES = {"the", "a", "an", "les", "la", "le", "il", "das", "der", "die", "el"}


def _norm(text: str) -> str:
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

    def __post_init__(self) -> None:
        if self.genre_phrases:
            alternatives = "|".join(re.escape(p) for p in sorted(self.genre_phrases, key=len, reverse=True))
            self._genre_re = re.compile(rf"(?<![\w'-])(?:{alternatives})(?![\w-])")
        if self.titles and not self.max_title_tokens:
            self.max_title_tokens = max(len(t) for t in self.titles)

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

    def genre_spans(self, norm: str) -> list[tuple[int, int, str]]:
        if self._genre_re is None:
            return []
        return [(m.start(), m.end(), self.genre_phrases[m.group(0)]) for m in self._genre_re.finditer(norm)]

    def title_spans(self, norm: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """Longest catalog-title matches on word boundaries, left to right, not overlapping."""
        if not self.titles:
            return []
        words = list(_WORD.finditer(norm))
        out = []
        i = 0
        while i < len(words):
            hit = None
            for n in range(min(self.max_title_tokens, len(words) - i), 0, -1):
                key = tuple(w.group(0) for w in words[i: i + n])
                if key in self.titles:
                    hit = (words[i].start(), words[i + n - 1].end(), self.titles[key])
                    i += n
                    break
            if hit:
                out.append(hit)
            else:
                i += 1
        return out


def title_key(title: str) -> tuple[str, ...]:
    """``"Usual Suspects, The (1995)"`` → ``("usual", "suspects")``: how a user would type it, sans article."""
    words = _WORD.findall(_norm(short_title(title)))
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return tuple(words)


def _distinctive(key: tuple[str, ...], genre_words: set[str]) -> bool:
    """Titles short or common enough to appear in ordinary chat ("Heat", "Kids") are not matched."""
    content = [w for w in key if w not in _STOP and w not in genre_words and not w.isdigit()]
    if not content:
        return False
    if len(key) >= 2:
        return len(" ".join(key)) >= 6
    return len(key[0]) >= 8


# -- one turn ------------------------------------------------------------------------------------------

@dataclass
class TurnConstraints:
    """What one user message says. Item ids are resolved against the catalog and the previous reply."""

    exclude_genres: set[str] = field(default_factory=set)
    include_genres: set[str] = field(default_factory=set)
    allow_genres: set[str] = field(default_factory=set)     # "horror is fine now": lifts an exclusion only
    min_year: int | None = None
    max_year: int | None = None
    liked: list[str] = field(default_factory=list)      # referenced or named items to find more like
    rejected: list[str] = field(default_factory=list)   # referenced or named items never to show again
    request: str | None = None                          # the remaining request text, if it says anything
    allow_shown: bool = False
    reset: bool = False
    notes: list[str] = field(default_factory=list)


def _period(text: str) -> tuple[int, int] | None:
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


def _year_spans(norm: str) -> list[tuple[int, int, int | None, int | None]]:
    """(start, end, min_year, max_year) for each year phrase, first rule wins, no overlaps."""
    found: list[tuple[int, int, int | None, int | None]] = []
    for pattern, kind in _YEAR_RULES:
        for m in pattern.finditer(norm):
            if any(m.start() < e and s < m.end() for s, e, _, _ in found):
                continue
            a = _period(m.group("a") or m.groupdict().get("c") or "")
            if a is None:
                continue
            if kind == "range2":
                b = _period(m.group("b"))
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
    return sorted(found)


def _ordinal(text: str) -> int:
    text = text.strip()
    if text in ORDINALS:
        return ORDINALS[text]
    return int(re.match(r"\d+", text).group(0))


def _nth(n: int) -> str:
    if n == -1:
        return "last"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def parse_turn(text: str, vocab: ChatVocabulary, previous: list[str] | None = None) -> TurnConstraints:
    """Read one user message. ``previous`` is the item ids of the last reply, in order (for "the second one")."""
    norm = _norm(text)
    turn = TurnConstraints(reset=bool(_RESET.search(norm)))
    turn.allow_shown = bool(_AGAIN.search(norm)) and not _NOT_AGAIN.search(norm)
    if _INJECTION.search(norm):
        turn.notes.append("I can only recommend items from the catalog; instructions to do otherwise are ignored.")

    # Spans, highest priority first; a later span overlapping an earlier one is dropped.
    spans: list[tuple[int, int, str, object]] = []

    def add(start: int, end: int, kind: str, value) -> None:
        if not any(start < e and s < end for s, e, _, _ in spans):
            spans.append((start, end, kind, value))

    for start, end, lo, hi in _year_spans(norm):
        add(start, end, "year", (lo, hi))
    for start, end, ids in vocab.title_spans(norm):
        add(start, end, "title", ids)
    for m in _REF.finditer(norm):
        add(m.start(), m.end(), "ref", _ordinal(m.group("a") or m.group("b") or m.group("n")))
    for m in _NEG_PHRASES.finditer(norm):
        add(m.start(), m.end(), "neg", None)
    for start, end, genre in vocab.genre_spans(norm):
        add(start, end, "genre", genre)

    units: list[tuple[int, int, str, object]] = list(spans)
    for m in _TOKEN.finditer(norm):
        if not any(m.start() < e and s < m.end() for s, e, _, _ in spans):
            units.append((m.start(), m.end(), "word", m.group(0)))
    units.sort(key=lambda u: u[0])

    remove: list[tuple[int, int]] = []
    neg = ref_neg = False
    cue_start = 0
    refs: list[tuple[int, bool]] = []
    for start, end, kind, value in units:
        if kind == "year":
            lo, hi = value
            if lo is not None:
                turn.min_year = lo
            if hi is not None:
                turn.max_year = hi
            remove.append((start, end))
            neg = ref_neg = False
        elif kind == "neg":
            if not (neg or ref_neg):
                cue_start = start
            neg = ref_neg = True
        elif kind == "genre":
            if neg:
                turn.exclude_genres.add(value)
                remove.append((cue_start, end))
            elif _LIFT.match(norm, end):
                turn.allow_genres.add(value)
                remove.append((start, _LIFT.match(norm, end).end()))
            else:
                turn.include_genres.add(value)
        elif kind == "title":
            if neg or ref_neg:
                turn.rejected.extend(value)
                remove.append((cue_start, end))
            else:
                turn.liked.extend(value)
        elif kind == "ref":
            refs.append((value, neg or ref_neg))
            remove.append((cue_start if (neg or ref_neg) else start, end))
        elif value in _NEG_WORDS:
            if not (neg or ref_neg):
                cue_start = start
            neg = ref_neg = True
        elif value in _REF_NEG_WORDS:
            if not (neg or ref_neg):
                cue_start = start
            ref_neg = True
        elif value in _FILLER:
            continue
        else:  # punctuation or a content word ends a negation's scope
            neg = ref_neg = False
    turn.include_genres -= turn.exclude_genres
    turn.allow_genres -= turn.exclude_genres
    remove.extend(m.span() for m in _RESET.finditer(norm))

    for position, negative in refs:
        item_id = _resolve(position, previous or [], turn.notes)
        if item_id is not None:
            (turn.rejected if negative else turn.liked).append(item_id)
    turn.liked = [i for i in dict.fromkeys(turn.liked) if i not in set(turn.rejected)]
    turn.rejected = list(dict.fromkeys(turn.rejected))
    # lower() can change the length of rare characters; then cut from the lower-cased text so spans line up
    turn.request = _residual(text if len(text) == len(norm) else norm, remove)
    return turn


def _resolve(position: int, previous: list[str], notes: list[str]) -> str | None:
    if not previous:
        notes.append(f"There is no {_nth(position)} item to refer to yet: I have not recommended anything.")
        return None
    if position == -1:
        return previous[-1]
    if 1 <= position <= len(previous):
        return previous[position - 1]
    notes.append(f"My last reply has {len(previous)} item(s), so there is no {_nth(position)} one.")
    return None


def _residual(text: str, remove: list[tuple[int, int]]) -> str | None:
    """The request text without the constraint phrases; None when nothing substantive is left."""
    keep = [True] * len(text)
    for start, end in remove:
        for i in range(start, min(end, len(text))):
            keep[i] = False
    rest = "".join(c if k else " " for c, k in zip(text, keep))
    rest = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(rest.split()))
    rest = re.sub(r"([,.;:!?])(?:\s*[,.;:!?])+", r"\1", rest)
    lead = r"(?:and|or|but|like|similar\s+to|similar|to|with|as|than|also|please|more)"
    tail = r"(?:and|or|but|like|similar|to|with|as|than|only|just|also|please|more|the|a|an)"
    for _ in range(3):
        rest = re.sub(rf"^(?:[\s,.;:!?-]|{lead}\b)+", "", rest, flags=re.IGNORECASE)
        rest = re.sub(rf"(?:[\s,;:-]|\b{tail})+$", "", rest, flags=re.IGNORECASE)
    if not content_words(rest):
        return None
    return rest.strip()


# -- the conversation so far ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Constraints:
    """Everything the conversation has ruled in or out. ``liked`` items steer retrieval and are not shown."""

    exclude_genres: frozenset[str] = frozenset()
    include_genres: frozenset[str] = frozenset()
    min_year: int | None = None
    max_year: int | None = None
    rejected: frozenset[str] = frozenset()
    liked: tuple[str, ...] = ()

    def allows(self, item: Item) -> bool:
        if item.item_id in self.rejected or item.item_id in self.liked:
            return False
        genres = set(item.genres)
        if self.exclude_genres & genres:
            return False
        if self.include_genres and not self.include_genres & genres:
            return False
        if self.min_year is not None or self.max_year is not None:
            if item.year is None:
                return False
            if self.min_year is not None and item.year < self.min_year:
                return False
            if self.max_year is not None and item.year > self.max_year:
                return False
        return True

    def describe(self) -> list[str]:
        """Short human-readable filters, e.g. ``["not Horror", "only Comedy", "1991 or later"]``."""
        out = []
        if self.include_genres:
            out.append("only " + " or ".join(sorted(self.include_genres)))
        if self.exclude_genres:
            out.append("not " + ", ".join(sorted(self.exclude_genres)))
        if self.min_year is not None and self.max_year is not None:
            out.append(f"{self.min_year}\u2013{self.max_year}" if self.min_year != self.max_year else f"from {self.min_year}")
        elif self.min_year is not None:
            out.append(f"{self.min_year} or later")
        elif self.max_year is not None:
            out.append(f"{self.max_year} or earlier")
        if self.rejected:
            out.append(f"{len(self.rejected)} rejected item(s) left out")
        return out

    def as_dict(self) -> dict:
        return {"exclude_genres": sorted(self.exclude_genres), "include_genres": sorted(self.include_genres),
                "min_year": self.min_year, "max_year": self.max_year, "rejected": sorted(self.rejected),
                "liked": list(self.liked)}


#: A request with at least this many content words replaces the previous one; a shorter one refines it.
NEW_REQUEST_WORDS = 3


def content_words(text: str | None) -> list[str]:
    return [w for w in _CWORD.findall(_norm(text or "")) if w not in _STOP and not w.isdigit()]


def starts_new_request(turn: TurnConstraints) -> bool:
    """True when the turn states a new request ("a tense thriller set at sea") rather than a refinement
    ("with robots", "not horror", "more like the first one")."""
    return len(content_words(turn.request)) >= NEW_REQUEST_WORDS


def merge_turn(state: Constraints, turn: TurnConstraints) -> Constraints:
    """The constraints after ``turn``. Later statements win: "horror is fine" lifts "not horror", a new
    upper year bound below the old lower bound replaces it, a new request replaces the genres it asked for."""
    if turn.reset:
        state = Constraints(rejected=state.rejected)
    exclude = (set(state.exclude_genres) - turn.include_genres - turn.allow_genres) | turn.exclude_genres
    fresh = starts_new_request(turn)
    if turn.include_genres:
        include = set(turn.include_genres)
    elif fresh:
        include = set()
    else:
        include = set(state.include_genres)
    include -= exclude
    lo, hi = state.min_year, state.max_year
    if turn.min_year is not None:
        lo = turn.min_year
        if turn.max_year is None and hi is not None and hi < lo:
            hi = None
    if turn.max_year is not None:
        hi = turn.max_year
        if turn.min_year is None and lo is not None and lo > hi:
            lo = None
    rejected = set(state.rejected) | set(turn.rejected)
    if turn.liked:
        liked = tuple(turn.liked)
    elif fresh or turn.reset:
        liked = ()
    else:
        liked = state.liked
    liked = tuple(i for i in liked if i not in rejected)
    return replace(state, exclude_genres=frozenset(exclude), include_genres=frozenset(include), min_year=lo,
                   max_year=hi, rejected=frozenset(rejected), liked=liked)


def apply_constraints(candidates: list[tuple[str, float]] | list[str], catalog: Catalog, constraints: Constraints,
                      limit: int | None = None, exclude: Iterable[str] = ()) -> list:
    """Keep the candidates (ids or (id, score) pairs, order kept) the constraints allow, up to ``limit``."""
    skip = set(exclude)
    out = []
    for candidate in candidates:
        item_id = candidate[0] if isinstance(candidate, tuple) else candidate
        if item_id in skip or not constraints.allows(catalog.get(item_id)):
            continue
        out.append(candidate)
        if limit is not None and len(out) >= limit:
            break
    return out


def blocked_items(catalog: Catalog, constraints: Constraints, exclude: Iterable[str] = ()) -> set[str]:
    """Every catalog id the constraints rule out (plus ``exclude``): passed to retrieval as its exclude set,
    so the ≤20 candidates the LM ranks are the nearest items that satisfy every constraint."""
    out = set(exclude)
    out.update(item.item_id for item in catalog if not constraints.allows(item))
    return out
