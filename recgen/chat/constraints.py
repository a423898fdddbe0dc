"""The conversation's constraints: turns folded into one :class:`Constraints`, applied as a candidate filter.

:func:`merge_turn` folds each :class:`~recgen.chat.parser.TurnConstraints` in; :func:`apply_constraints` /
:func:`blocked_items` turn the result into a filter on catalog items. Pure functions, unit-tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from ..data.catalog import Catalog, Item
from ..text import wanted_words
from .parser import TurnConstraints


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
        if not self.include_genres <= genres:  # "a funny sci-fi film": Comedy AND Sci-Fi
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
            out.append("only " + " and ".join(sorted(self.include_genres)))
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


def starts_new_request(turn: TurnConstraints) -> bool:
    """True when the turn states a new request ("a tense thriller set at sea") rather than a refinement
    ("with robots", "not horror", "more like the first one")."""
    return len(wanted_words(turn.request)) >= NEW_REQUEST_WORDS


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


#: "More like the second one" requires that item's rarer genres while at least this many items keep them.
DISTINCT_MIN_ITEMS = 20


def distinctive_genres(liked: list[Item], catalog: Catalog, constraints: Constraints,
                       min_items: int = DISTINCT_MIN_ITEMS) -> frozenset[str]:
    """What made the liked items distinct: each one's genres, rarest in the catalog first, required for as
    long as at least ``min_items`` catalog items satisfy them with the other constraints (its rarest genre
    always). Delicatessen (Comedy, Sci-Fi) asks for Sci-Fi, and Comedy too while 20 items are both."""
    counts: dict[str, int] = {}
    for item in catalog:
        for genre in item.genres:
            counts[genre] = counts.get(genre, 0) + 1
    required = set(constraints.include_genres)
    for item in liked:
        rarest_first = sorted((g for g in item.genres if g not in constraints.exclude_genres),
                              key=lambda g: (counts[g], g))
        for n, genre in enumerate(rarest_first):
            trial = replace(constraints, include_genres=frozenset(required | {genre}), liked=(), rejected=frozenset())
            if n > 0 and sum(1 for other in catalog if trial.allows(other)) < min_items:
                break
            required.add(genre)
    return frozenset(required)


def blocked_items(catalog: Catalog, constraints: Constraints, exclude: Iterable[str] = ()) -> set[str]:
    """Every catalog id the constraints rule out (plus ``exclude``): passed to retrieval as its exclude set,
    so the ≤20 candidates the LM ranks are the nearest items that satisfy every constraint."""
    out = set(exclude)
    out.update(item.item_id for item in catalog if not constraints.allows(item))
    return out
