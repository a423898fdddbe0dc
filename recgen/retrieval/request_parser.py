r"""The one reader of a request in words, for the chat's turns (:mod:`recgen.chat.parser`) and the retriever's
request filters (:mod:`.request_constraints`): the text cut and normalised, its phrases found (years and
decades, negation phrases, and whatever the caller recognises: genres, titles, "the second one"), the words
in between, and which of them a negation covers ("not horror or comedy", "anything but horror", "I've seen
the first one").

Each caller decides what the units mean (the chat keeps the last year said, the filters the widest range); the
reading, the priorities between overlapping phrases and the scope of a negation are decided here only.

Reading is bounded: the text is cut to the caller's limit and its whitespace collapsed before any pattern runs
(so ``\s*``/``\s+`` match one character at most and cannot backtrack over a run), and span overlaps are
checked with a byte map (:class:`.request_words.SpanMap`) instead of pairwise comparisons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..text import FILLER, NEG_WORDS, NEGATION_PHRASES, clip, collapse_spaces, norm
from .request_words import SpanMap, year_spans

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[,.;:!?()]")


@dataclass(frozen=True)
class Unit:
    """A phrase (``kind`` "year", "neg", "genre", "title", "ref", ...) or a word/punctuation mark ("word")."""

    start: int
    end: int
    kind: str
    value: object = None


@dataclass(frozen=True)
class Scoped:
    """A unit and the negation over it: ``negated`` by a negation word or phrase ("not", "anything but"),
    ``rejected`` by that or by a word that rejects an item only ("seen"); ``cue`` is where that negation
    began, so the caller can remove the cue with what it negates."""

    unit: Unit
    negated: bool
    rejected: bool
    cue: int


def prepare(query: str, max_chars: int) -> tuple[str, str]:
    """``(text, lower)``: ``query`` cut to ``max_chars`` with whitespace runs collapsed, and its
    :func:`~recgen.text.norm` (the same length, so spans found in ``lower`` cut ``text``)."""
    text = collapse_spaces(clip(query, max_chars))
    return text, norm(text)


def remainder_source(text: str, lower: str) -> str:
    """The text spans are cut from: ``text``, or ``lower`` when lower-casing changed the length of a rare
    character (then spans of ``lower`` would not line up with ``text``)."""
    return text if len(text) == len(lower) else lower


def year_units(lower: str) -> list[Unit]:
    return [Unit(start, end, "year", (lo, hi)) for start, end, lo, hi in year_spans(lower)]


def negation_units(lower: str) -> list[Unit]:
    return [Unit(m.start(), m.end(), "neg") for m in NEGATION_PHRASES.finditer(lower)]


def read_units(lower: str, *sources: Iterable[Unit]) -> list[Unit]:
    """The phrases of ``sources`` (earlier sources first; a phrase overlapping one already taken is dropped),
    then the words and punctuation marks no phrase covers, in text order."""
    taken = SpanMap(len(lower))
    units: list[Unit] = []
    for source in sources:
        for unit in source:
            if taken.free(unit.start, unit.end):
                units.append(unit)
                taken.take(unit.start, unit.end)
    for m in _TOKEN.finditer(lower):
        if taken.free(m.start(), m.end()):
            units.append(Unit(m.start(), m.end(), "word", m.group(0)))
    units.sort(key=lambda u: u.start)
    return units


def scope(units: Iterable[Unit], rejecting: frozenset[str] | set[str] = frozenset()) -> Iterator[Scoped]:
    """The units with the negation over each. A negation word or phrase opens a scope; a ``rejecting`` word
    opens one that rejects items only; filler words ("movies", "or", "the") neither end a scope nor are
    yielded; a year, a content word or a punctuation mark ends it (after it is yielded). Phrases of other
    kinds (genres, titles, references) stay inside it: "not horror or comedy" negates both."""
    negated = rejected = False
    cue = 0
    for unit in units:
        word = unit.value if unit.kind == "word" else None
        if unit.kind == "neg" or word in NEG_WORDS:
            if not rejected:
                cue = unit.start
            negated = rejected = True
        elif word in rejecting:
            if not rejected:
                cue = unit.start
            rejected = True
        elif word not in FILLER:
            yield Scoped(unit, negated, rejected, cue)
            if unit.kind in ("year", "word"):
                negated = rejected = False
