r"""A request in words read as hard filters over the catalog, for every entry point (API, CLI, server, batch,
chat): genres (all of them: "a funny sci-fi film" = Comedy AND Sci-Fi), genres ruled out ("not horror"), years
and decades ("a 90s comedy", "after 1995"), and, on catalogs whose items carry no genres (Amazon titles), the
product words of titles ("a conditioner", "a racing game").

The retriever's request pool is the text retrieval on what is left of the request, restricted to the items
these filters allow; the history then orders the pool. What a sentence embedding gets wrong (it reads
"anything but horror" as horror) is exactly what a filter gets right, so negated phrases are removed from the
text that is embedded and become exclusions.

Reading is bounded: the request is cut to :data:`MAX_REQUEST_CHARS` and its whitespace collapsed before any
pattern runs; every pattern is one linear scan. The reading (phrases, words, negation scope) is
:mod:`.request_parser`, shared with the chat; this module says what the units mean for a filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..data.catalog import Catalog, Item
from ..errors import InvalidRequestError
from ..text import NEG_WORDS, STOP, plural_stem, request_remainder, title_terms
from .request_parser import Unit, negation_units, prepare, read_units, remainder_source, scope, year_units
from .request_words import genre_phrases, phrase_pattern

#: Characters of a request that are read (the recommender's own limit, ``max_query_chars``, is lower).
MAX_REQUEST_CHARS = 10_000
#: A catalog reads title words only when fewer than this share of its items carry genres (titles are all it has).
TITLE_TERMS_BELOW_GENRE_SHARE = 0.5
#: A title word in more than this share of the catalog is too common to filter on ("cream", "set").
MAX_TERM_SHARE = 0.05


@dataclass(frozen=True)
class RequestConstraints:
    """What a request rules in and out. ``text`` is the request without its year and negated phrases: what
    the embedder reads. Genres and title terms asked for are all required."""

    include_genres: frozenset[str] = frozenset()
    exclude_genres: frozenset[str] = frozenset()
    min_year: int | None = None
    max_year: int | None = None
    include_terms: tuple[str, ...] = ()
    exclude_terms: frozenset[str] = frozenset()
    text: str | None = None
    unresolved_negation: bool = False

    @property
    def filters(self) -> bool:
        return bool(self.include_genres or self.exclude_genres or self.include_terms or self.exclude_terms
                     or self.min_year is not None or self.max_year is not None)

    def allows(self, item: Item) -> bool:
        genres = set(item.genres)
        if not self.include_genres <= genres or self.exclude_genres & genres:
            return False
        if self.min_year is not None or self.max_year is not None:
            if item.year is None or (self.min_year is not None and item.year < self.min_year) or \
                    (self.max_year is not None and item.year > self.max_year):
                return False
        words = title_terms(item.title)
        return all(t in words for t in self.include_terms) and not self.exclude_terms & words

    def describe(self, negations: bool = True) -> str:
        """``"Comedy and Sci-Fi, 1990–1999, not Horror"``: the filters as a user would read them (without the
        "not" part when ``negations`` is False: text an embedder may read)."""
        parts = []
        if self.include_genres:
            parts.append(" and ".join(sorted(self.include_genres)))
        if self.include_terms:
            parts.append("titles with " + " and ".join(f"'{t}'" for t in self.include_terms))
        if self.min_year is not None and self.max_year is not None:
            parts.append(f"{self.min_year}\u2013{self.max_year}" if self.min_year != self.max_year else str(self.min_year))
        elif self.min_year is not None:
            parts.append(f"{self.min_year} or later")
        elif self.max_year is not None:
            parts.append(f"{self.max_year} or earlier")
        excluded = sorted(self.exclude_genres) + [f"'{t}'" for t in sorted(self.exclude_terms)]
        if excluded and negations:
            parts.append("not " + ", ".join(excluded))
        return ", ".join(parts)


@dataclass
class RequestMatch:
    """Which catalog rows a request's filters allow; ``note`` says when the match is only partial."""

    mask: np.ndarray
    note: str | None = None


@dataclass
class RequestReader:
    """Reads requests against one catalog (its genre phrases, years and title words are indexed once)."""

    catalog: Catalog
    genres: tuple[str, ...] = field(init=False)
    _genre_re: re.Pattern | None = field(init=False, default=None, repr=False)
    _phrases: dict[str, str] = field(init=False, default_factory=dict, repr=False)
    _genre_rows: dict[str, np.ndarray] = field(init=False, default_factory=dict, repr=False)
    _years: np.ndarray = field(init=False, repr=False)
    _term_rows: dict[str, np.ndarray] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        items = self.catalog.items
        self.genres = tuple(sorted({g for item in items for g in item.genres}))
        genre_rows: dict[str, list[int]] = {}  # each genre's rows, not an [items, genres] matrix (2.3 GB at 1M x 2,331)
        for row, item in enumerate(items):
            for g in item.genres:
                genre_rows.setdefault(g, []).append(row)
        self._genre_rows = {g: np.array(r, dtype=np.int64) for g, r in genre_rows.items()}
        self._phrases = genre_phrases(self.genres) if self.genres else {}
        self._genre_re = phrase_pattern(self._phrases) if self._phrases else None
        self._years = np.array([np.nan if i.year is None else i.year for i in items], dtype=np.float64)
        with_genres = sum(1 for i in items if i.genres)
        if with_genres < TITLE_TERMS_BELOW_GENRE_SHARE * len(items):
            rows: dict[str, list[int]] = {}
            for row, item in enumerate(items):
                for term in title_terms(item.title):
                    rows.setdefault(term, []).append(row)
            limit = max(5, int(MAX_TERM_SHARE * len(items)))
            self._term_rows = {t: np.array(r) for t, r in rows.items() if len(r) <= limit}

    # -- reading ----------------------------------------------------------------------------------------
    def read(self, query: str) -> RequestConstraints:
        """The constraints of one request; contradictory ones ("comedy, not comedy") are an
        :class:`InvalidRequestError` that names them."""
        text, lower = prepare(query, MAX_REQUEST_CHARS)
        genres = () if self._genre_re is None else (
            # a genre named like a negation word (a catalog's "none") reads as that negation here
            Unit(m.start(), m.end(), "neg" if self._phrases[m.group(0)] in NEG_WORDS else "genre",
                 self._phrases[m.group(0)]) for m in self._genre_re.finditer(lower))
        units = read_units(lower, year_units(lower), negation_units(lower), genres)

        include, exclude, terms, no_terms = set(), set(), [], set()
        lows, highs, remove = [], [], []
        unresolved = False
        for scoped in scope(units):
            start, end, kind, value = scoped.unit.start, scoped.unit.end, scoped.unit.kind, scoped.unit.value
            if kind == "year":
                if scoped.negated:  # "not from the 90s": excluding a period is not a filter; left to the text
                    unresolved = True
                    continue
                lo, hi = value
                lows += [lo] if lo is not None else []
                highs += [hi] if hi is not None else []
                remove.append((start, end))
            elif kind == "genre":
                (exclude if scoped.negated else include).add(value)
                if scoped.negated:
                    remove.append((scoped.cue, end))
            else:
                term = plural_stem(value) if value.isalpha() and value not in STOP else None
                if term is not None and term in self._term_rows:
                    (no_terms.add(term) if scoped.negated else terms.append(term))
                    if scoped.negated:
                        remove.append((scoped.cue, end))
                elif scoped.negated and value.isalnum():
                    unresolved = True  # "not too violent": no filter can say it
        lo = min(lows) if lows else None
        hi = max(highs) if highs else None
        _check_consistent(include & exclude, set(terms) & no_terms, lo, hi)
        return RequestConstraints(frozenset(include), frozenset(exclude), lo, hi, tuple(dict.fromkeys(terms)),
                                  frozenset(no_terms), request_remainder(remainder_source(text, lower), remove),
                                  unresolved)

    # -- matching ---------------------------------------------------------------------------------------
    def match(self, request: RequestConstraints) -> RequestMatch:
        """The rows the filters allow. Title terms: the items with all of them, or, when no title has all,
        those with the most (the note says so)."""
        n = len(self.catalog)
        mask = np.ones(n, dtype=bool)
        for g in request.include_genres:
            has = np.zeros(n, dtype=bool)
            has[self._genre_rows[g]] = True
            mask &= has
        for g in request.exclude_genres:
            mask[self._genre_rows[g]] = False
        if request.min_year is not None:
            mask &= self._years >= request.min_year  # NaN (no year) compares False: not allowed
        if request.max_year is not None:
            mask &= self._years <= request.max_year
        for term in request.exclude_terms:
            mask[self._term_rows[term]] = False
        note = None
        if request.include_terms:
            counts = np.zeros(n, dtype=np.int32)
            for term in request.include_terms:
                counts[self._term_rows[term]] += 1
            counts[~mask] = 0
            best = int(counts.max())
            if 0 < best < len(request.include_terms):
                note = (f"no title has all of {', '.join(repr(t) for t in request.include_terms)}; "
                        f"these have {best} of them")
            mask &= counts == best if best else np.zeros(n, dtype=bool)
        return RequestMatch(mask, note)


def _check_consistent(genres: set[str], terms: set[str], lo: int | None, hi: int | None) -> None:
    if genres or terms:
        both = ", ".join(sorted(genres) + [repr(t) for t in sorted(terms)])
        raise InvalidRequestError(f"the request both asks for and rules out {both}; say which one you want")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidRequestError(f"the request asks for items from {lo} or later and from {hi} or earlier; "
                                  "no year is both")
