r"""One chat turn read with plain rules: genres in or out, year bounds, references to the previous reply,
catalog titles liked or rejected, and the request text that is left.

A turn such as ``"funny space adventures, not horror, only after 1990, more like the second one"`` becomes
:class:`TurnConstraints`. The rules are deliberately small and predictable; what they do not catch stays in the
request text, which still steers retrieval and ranking.

The reading itself (cutting the text to :data:`MAX_TURN_CHARS`, years, negations and their scope, the words
between phrases) is :mod:`recgen.retrieval.request_parser`, shared with the retriever's request filters; this
module adds what only a conversation has (catalog titles, "the second one", "start over", "show them again")
and what the units mean for a turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..retrieval.request_parser import (
    Unit,
    negation_units,
    prepare,
    read_units,
    remainder_source,
    scope,
    year_units,
)
from ..text import REF_NEG_WORDS, turn_remainder
from .vocabulary import ChatVocabulary

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

_LIFT = re.compile(r"\s*(?:movies|films|stuff|ones)?\s*(?:is|are|'s|would\s+be|will\s+be)?\s*(?:also\s+|too\s+)?"
                   r"(?:fine|ok|okay|allowed|acceptable|welcome|alright|all\s+right)\b")


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


#: Characters of one message that are read; the rest is ignored (with a note). Far above any real turn.
MAX_TURN_CHARS = 10_000


def parse_turn(text: str, vocab: ChatVocabulary, previous: list[str | None] | None = None) -> TurnConstraints:
    """Read one user message. ``previous`` is the last reply's item ids by position (``previous[0]`` is item
    1; ``None`` where that line could not be read), for "the second one"."""
    cut = len(text) > MAX_TURN_CHARS
    text, lower = prepare(text, MAX_TURN_CHARS)  # bounds every pattern below: no whitespace runs
    turn = TurnConstraints(reset=bool(_RESET.search(lower)))
    if cut:
        turn.notes.append(f"Only the first {MAX_TURN_CHARS:,} characters of your message were read.")
    turn.allow_shown = bool(_AGAIN.search(lower)) and not _NOT_AGAIN.search(lower)
    if _INJECTION.search(lower):
        turn.notes.append("I can only recommend items from the catalog; instructions to do otherwise are ignored.")

    # Phrases, highest priority first; a later phrase overlapping an earlier one is dropped.
    units = read_units(
        lower,
        year_units(lower),
        (Unit(start, end, "title", ids) for start, end, ids in vocab.title_spans(lower)),
        (Unit(m.start(), m.end(), "ref", _ordinal(m.group("a") or m.group("b") or m.group("n")))
         for m in _REF.finditer(lower)),
        negation_units(lower),
        (Unit(start, end, "genre", genre) for start, end, genre in vocab.genre_spans(lower)),
    )
    remove: list[tuple[int, int]] = []
    refs: list[tuple[int, bool]] = []
    for scoped in scope(units, rejecting=REF_NEG_WORDS):
        start, end, kind, value = scoped.unit.start, scoped.unit.end, scoped.unit.kind, scoped.unit.value
        if kind == "year":
            lo, hi = value
            if lo is not None:
                turn.min_year = lo
            if hi is not None:
                turn.max_year = hi
            remove.append((start, end))
        elif kind == "genre":
            if scoped.negated:
                turn.exclude_genres.add(value)
                remove.append((scoped.cue, end))
            elif lift := _LIFT.match(lower, end):
                turn.allow_genres.add(value)
                remove.append((start, lift.end()))
            else:
                turn.include_genres.add(value)
        elif kind == "title":
            if scoped.rejected:
                turn.rejected.extend(value)
                remove.append((scoped.cue, end))
            else:
                turn.liked.extend(value)
        elif kind == "ref":
            refs.append((value, scoped.rejected))
            remove.append((scoped.cue if scoped.rejected else start, end))
    turn.include_genres -= turn.exclude_genres
    turn.allow_genres -= turn.exclude_genres
    remove.extend(m.span() for m in _RESET.finditer(lower))

    for position, negative in refs:
        item_id = _resolve(position, previous or [], turn.notes)
        if item_id is not None:
            (turn.rejected if negative else turn.liked).append(item_id)
    turn.liked = [i for i in dict.fromkeys(turn.liked) if i not in set(turn.rejected)]
    turn.rejected = list(dict.fromkeys(turn.rejected))
    turn.request = turn_remainder(remainder_source(text, lower), remove)
    return turn


def _resolve(position: int, previous: list[str | None], notes: list[str]) -> str | None:
    if not previous:
        notes.append(f"There is no {_nth(position)} item to refer to yet: I have not recommended anything.")
        return None
    index = len(previous) - 1 if position == -1 else position - 1
    if not 0 <= index < len(previous):
        notes.append(f"My last reply has {len(previous)} item(s), so there is no {_nth(position)} one.")
        return None
    if previous[index] is None:  # that line of the reply was changed or is not a catalog item
        notes.append(f"I cannot tell which item the {_nth(position)} one of my last reply was; name it instead.")
    return previous[index]
