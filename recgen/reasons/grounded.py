"""What "grounded" means, in one place: the served fact check and the reasons measure both read it here.

A reason is grounded when it makes no claim the facts (:mod:`.facts`) do not back:

* every content word comes from the facts or the generic words (:meth:`.facts.ReasonFacts.unsupported` is
  empty; a history item's attributes back a word only when the reason names that item);
* the fact check (:class:`.checker.ReasonChecker`) finds no invented claim: another title, a genre or year
  the item lacks, "you liked" of something unnamed, first person. Its other findings are about form, not
  claims (:data:`NOT_CLAIMS`: "too short");
* no claim about the history made of generic words, which word-level support cannot see (:func:`history_claims`).

The served stage replaces any reason the fact check finds fault with (claims and form alike); the measure
(:mod:`recgen.evaluation.reason_metrics`) reports the share of grounded reasons by :func:`is_grounded`.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..data.catalog import Item
from ..text import tokens
from .facts import title_variants, words_outside_titles

#: The fact check's finding for a reason of fewer than three words.
TOO_SHORT = "too short"
#: Fact-check findings that are not claims.
NOT_CLAIMS = frozenset({TOO_SHORT})

_ORDER_WORDS = frozenset("recent recently previous previously last latest earlier newest".split())
_IS_RECOMMENDED = re.compile(r"^(?:\d{4} )?(?:is|was) (?:a |an |the )?(?:very |most )?(?:recommended|suggested)")
_LIKED_THE_ITEM = re.compile(r"\byou\s+(?:liked|loved|enjoyed|bought|watched)\s+(?P<what>this|it|the\s+(?:product|"
                             r"item|film|movie|one|recommended))\b", re.IGNORECASE)


def claim_problems(checker_problems: Sequence[str], history_claims: Sequence[str] = ()) -> list[str]:
    """The fact check's findings that are invented claims, then the claims about the history."""
    return [p for p in checker_problems if p not in NOT_CLAIMS] + list(history_claims)


def is_grounded(unsupported: Sequence[str], claims: Sequence[str]) -> bool:
    """No unsupported claim: every content word is backed (``unsupported`` empty) and no claim is invented."""
    return not unsupported and not claims


def history_claims(text: str, named: Sequence[Item], history: Sequence[Item]) -> list[str]:
    """Claims about the user's history made of generic words, which word-level grounding cannot see (found by
    hand in the grounded-r3 sample): an order ("the most recent <liked item>", "the previous one") that the
    history does not have; the liked item called the recommendation ("the recommended <liked item>", "<liked
    item> is the recommended choice") or the same item ("just the same as <liked item>"); "you liked the
    product" of the recommended item."""
    out = []
    words = {w for w in words_outside_titles(text, [h.title for h in history]) if w is not None}  # "the Last Crusade"
    if words & _ORDER_WORDS and (not history or [h.item_id for h in named] != [history[-1].item_id]):
        out.append("claims an order of the history it does not have")
    padded = f" {' '.join(tokens(text))} "
    for past in named:
        for variant in title_variants(past.title):
            if any(f" {w} {variant} " in padded for w in ("recommended", "suggested")) or \
                    _IS_RECOMMENDED.search(padded.split(f" {variant} ", 1)[1] if f" {variant} " in padded else ""):
                out.append("calls the liked item the recommendation")
                break
    if named and " same as " in padded:
        out.append("says the item is the same as the liked item")
    starts = [v for past in named for v in title_variants(past.title)]
    if any(not any(" ".join(tokens(text[m.start("what"):])).startswith(v) for v in starts)  # "liked it Cosmetics …"
           for m in _LIKED_THE_ITEM.finditer(text)):
        out.append("says the user liked the recommended item")
    return out
