"""One list's reasons never repeat a sentence and open in different ways: deterministic, decided before the
LM chooses (so its choice stays its own).

Two items of a list often share the liked item a reason names, and so the same sentences ("If you liked Star
Trek IV ..., this is also Action" four times in one list of five). :func:`spread` gives each item, in list
order, a few of its sentences that no earlier item was given, preferring openings no earlier item was given;
the LM then chooses among those. :func:`distinct` is the net after decoding (fallbacks, styles without a
closed set of sentences): a sentence already served in the list is swapped for the item's next unused one.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..text import tokens

#: Sentences each item keeps for the LM to choose among (more repeat across a list; fewer leave no choice).
KEEP = 3
#: Words that make a sentence's opening.
OPENING_WORDS = 2


def key(sentence: str) -> str:
    """A sentence as compared for repeats: its words, lower case."""
    return " ".join(tokens(sentence))


def opening(sentence: str) -> str:
    """The first :data:`OPENING_WORDS` words of a sentence, lower case."""
    return " ".join(tokens(sentence)[:OPENING_WORDS])


def bigrams(sentence: str) -> set[tuple[str, str]]:
    words = tokens(sentence)
    return set(zip(words, words[1:]))


def spread(options: Sequence[Sequence[str] | None], keep: int = KEEP) -> list[tuple[str, ...] | None]:
    """Per item (in list order), up to ``keep`` of its sentences, none given to an earlier item, picked one at
    a time by the fewest word pairs already given (distinct-2), then the least-given opening, then the item's
    own order; kept in the item's order (its first is its fallback). An item whose every sentence was given
    already keeps its first (the list can say nothing new about it). ``None`` (no closed set) stays."""
    given: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    openings: Counter[str] = Counter()
    out: list[tuple[str, ...] | None] = []
    for sentences in options:
        if sentences is None:
            out.append(None)
            continue
        unique = list(dict.fromkeys(sentences))
        free = [s for s in unique if key(s) not in given]
        if not free:
            out.append(tuple(unique[:1]))
            continue
        chosen: list[int] = []
        seen_pairs, seen_openings = set(pairs), Counter(openings)
        while len(chosen) < min(keep, len(free)):
            n = min((n for n in range(len(free)) if n not in chosen),
                    key=lambda n: (len(bigrams(free[n]) & seen_pairs), seen_openings[opening(free[n])], n))
            chosen.append(n)
            seen_pairs |= bigrams(free[n])
            seen_openings[opening(free[n])] += 1
        picked = tuple(free[n] for n in sorted(chosen))
        for s in picked:
            given.add(key(s))
            pairs.update(bigrams(s))
            openings[opening(s)] += 1
        out.append(picked)
    return out


def distinct(reasons: Sequence[tuple[str, str]], options: Sequence[Sequence[str] | None]) -> list[tuple[str, str]]:
    """``(reason, source)`` per item with a sentence already served earlier in the list replaced by the
    item's first option not served yet (source ``fallback``); kept when there is none."""
    served: set[str] = set()
    out = []
    for (reason, source), sentences in zip(reasons, options):
        if key(reason) in served:
            spare = next((s.strip() for s in sentences or () if key(s) not in served), None)
            if spare is not None:
                reason, source = spare, "fallback"
        served.add(key(reason))
        out.append((reason, source))
    return out


def fewest_repeats(options: Sequence[str], pairs: set[tuple[str, str]]) -> str:
    """The first of ``options`` with the fewest word pairs already in ``pairs`` (those the list has served):
    how the request clause, said in every reason of a request list, is worded apart from the reasons before it."""
    return min(options, key=lambda s: len(bigrams(s) & pairs))
