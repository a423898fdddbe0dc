"""Automatic verdicts on one reason (grounding, personalisation, degenerate text) and their aggregate.

Pure functions over text and :class:`~recgen.reasons.facts.ReasonFacts`, so they are tested on hand-built
reasons with known answers; :mod:`recgen.evaluation.reasons` runs them on a dataset.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..data.catalog import Item
from ..reasons.asked import Asked
from ..reasons.facts import DANGLING, GENERIC_WORDS, ReasonFacts, item_fact_words, names_title, words_outside_titles
from ..reasons.grounded import claim_problems, history_claims, is_grounded
from ..reasons.variety import key as sentence_key
from ..text import STOPWORDS, claim_words, snowball_stem, tokens

#: A reason that shares a run of this many words with a few-shot example of its prompt copies it.
EXAMPLE_NGRAM = 4
#: A run of this many words said twice in one sentence is repetition ("a children's animated film ... a
#: children's animated film").
REPEAT_NGRAM = 3
_GENERIC_STEMS = frozenset(snowball_stem(w) for w in GENERIC_WORDS)


def example_reasons(prompt_texts: Iterable[str]) -> list[str]:
    """The few-shot example reasons of a rendered prompt: the text after ``Reason:`` on its lines."""
    out = []
    for text in prompt_texts:
        for line in text.splitlines():
            line = line.strip()
            if line.lower().startswith("reason:") and line[7:].strip():
                out.append(line[7:].strip())
    return out


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def repeated_ngrams(text: str, n: int = REPEAT_NGRAM, titles: Sequence[str] = ()) -> list[str]:
    """What ``text`` says twice, outside the ``titles`` it names: word ``n``-grams (with a content word in
    them) and content words other than generic ones ("a dystopian drama set in a dystopian future", "a
    comedy-comedy", "a children's animated film ... a children's animated film")."""
    words = words_outside_titles(text, titles)
    grams = [g for g in _ngrams(words, n) if None not in g and claim_words(" ".join(g))]
    out = [" ".join(g) for g, c in Counter(grams).items() if c > 1]
    in_grams = {snowball_stem(w) for g in out for w in g.split()}
    counts = Counter(snowball_stem(w) for w in words if w is not None and w not in STOPWORDS and not w.isdigit()
                     and len(w) > 1)
    out += [w for w, c in counts.items() if c > 1 and w not in _GENERIC_STEMS and w not in in_grams]
    return out


#: Endings on a :data:`DANGLING` word that finish a sentence: the request clause's "which you asked for."
COMPLETE_ENDINGS = (["asked", "for"],)


def is_truncated(text: str) -> bool:
    """Empty, or not a finished sentence: no closing . ! ?, an ellipsis, or a last word that needs a
    continuation ("... with a")."""
    stripped = text.strip().rstrip("\"'\u201d)")
    if not stripped or stripped.endswith(("\u2026", "...")) or stripped[-1] not in ".!?":
        return True
    words = tokens(stripped)
    if not words:
        return True
    last = stripped.rstrip(".!?\"')\u201d").rsplit(None, 1)[-1]
    if words[-2:] in COMPLETE_ENDINGS:
        return False
    return words[-1] in DANGLING and not re.search(r"\w-\w+$", last)  # "Leave-In." ends a title, not on "in"


def says_nothing(text: str, item: Item) -> bool:
    """No content word beyond the item's own title and year and generic words ("A 1996 Twister."). A reason
    that names a history item or the request says something (the link), so :func:`grade_reason` asks only of
    the others."""
    own = item_fact_words(Item(item.item_id, item.title, (), item.year))
    for word in claim_words(text):
        s = snowball_stem(word)
        if s not in own and word not in own and s not in _GENERIC_STEMS:
            return False
    return True


def copies_example(text: str, examples: Sequence[str], facts: ReasonFacts) -> bool:
    """Shares a run of :data:`EXAMPLE_NGRAM` words with a few-shot example, and that run holds a word the
    facts do not back (so "Alien, which you liked" with Alien in the history is not a copy)."""
    mine = set(_ngrams(tokens(text), EXAMPLE_NGRAM))
    for example in examples:
        for gram in _ngrams(tokens(example), EXAMPLE_NGRAM):
            if gram in mine and facts.unsupported(" ".join(gram)):
                return True
    return False


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word ``n``-grams over all ``n``-grams of a list of reasons (1.0 = nothing repeated; 0 when
    there are none)."""
    grams = [g for t in texts for g in _ngrams(tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


@dataclass
class ReasonVerdict:
    """What the automatic measure says of one reason."""

    content_words: int
    supported_words: int
    unsupported: list[str]
    named_history: list[str]           # item ids of history items the reason names
    related_named: list[str]           # ... of those, the ones related to the item
    names_request: bool
    repeated: list[str]
    truncated: bool
    says_nothing: bool
    copies_example: bool
    checker_problems: list[str] = field(default_factory=list)
    history_claims: list[str] = field(default_factory=list)
    #: with a request: whether the item meets any of its facts (:func:`recgen.reasons.asked.asked_of`), and
    #: whether the reason states every fact it meets (None without a request)
    meets_request: bool | None = None
    names_request_facts: bool | None = None

    @property
    def claim_problems(self) -> list[str]:
        """The invented claims (:func:`recgen.reasons.grounded.claim_problems`)."""
        return claim_problems(self.checker_problems, self.history_claims)

    @property
    def grounded(self) -> bool:
        """Grounded as :mod:`recgen.reasons.grounded` defines it (the one definition)."""
        return is_grounded(self.unsupported, self.claim_problems)

    @property
    def degenerate(self) -> bool:
        return bool(self.repeated) or self.truncated or self.says_nothing or self.copies_example

    @property
    def personal(self) -> bool:
        """Names a related history item, or ties the item to the request."""
        return bool(self.related_named) or self.names_request

    @property
    def passes(self) -> bool:
        """Every check: the served fact check, grounding, and no degenerate text."""
        return self.grounded and not self.degenerate and not self.checker_problems

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(claim_problems=self.claim_problems, grounded=self.grounded, degenerate=self.degenerate, personal=self.personal, passes=self.passes)
        return out


def states_asked(text: str, asked: Asked) -> bool:
    """Whether ``text`` states every request fact in ``asked`` (each content word of :meth:`Asked.what`, as a
    stem; the year as written). False when the item meets none: there is nothing of the request to state."""
    if not asked:
        return False
    said = {snowball_stem(w) for w in tokens(text)}
    wanted = {snowball_stem(w) for w in claim_words(asked.what())} - _GENERIC_STEMS
    return bool(wanted) and wanted <= said


def grade_reason(text: str, facts: ReasonFacts, *, history: Sequence[Item] = (), examples: Sequence[str] = (),
                 embeddings: np.ndarray | None = None, threshold: float | None = None,
                 checker_problems: Sequence[str] = (), asked: Asked | None = None) -> ReasonVerdict:
    """The verdict on ``text`` as a reason for ``facts.item``. ``history`` is the user's whole history (a
    reason may name any of it; default: the facts' history); related = shares a genre/category with the item,
    or embedding cosine >= ``threshold``."""
    history = list(history) or list(facts.history)
    words = claim_words(text)
    unsupported = facts.unsupported(text)
    bad = set(unsupported)
    named = [h for h in history if names_title(text, h.title) and h.item_id != facts.item.item_id]
    related = facts.related_history(embeddings, threshold, among=named)
    names_request = facts.names_request(text)
    return ReasonVerdict(
        content_words=len(words), supported_words=sum(w not in bad for w in words), unsupported=unsupported,
        named_history=[h.item_id for h in named], related_named=[r.item.item_id for r in related],
        names_request=names_request, repeated=repeated_ngrams(text, titles=[facts.item.title, *(h.title for h in named)]), truncated=is_truncated(text),
        says_nothing=not named and not names_request and says_nothing(text, facts.item), copies_example=copies_example(text, examples, facts),
        checker_problems=list(checker_problems), history_claims=history_claims(text, named, history),
        meets_request=None if asked is None else bool(asked),
        names_request_facts=None if asked is None else states_asked(text, asked))


def _share(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def summarize(rows: Sequence[dict], key: str = "served") -> dict:
    """Aggregate verdicts of per-user rows (see :mod:`recgen.evaluation.reasons`): shares over reasons, the
    content-word support rate (pooled and per reason), distinct-n per user's list, latency per reason and list.

    ``key`` picks which text of each reason is summarised: ``served`` (what the user sees) or ``model`` (what
    the LM wrote, before the fact check replaced it)."""
    reasons = [r for row in rows for r in row["reasons"] if r.get(key)]
    verdicts = [r[key]["verdict"] for r in reasons]
    if not verdicts:
        return {"reasons": 0}
    sources = Counter(r["source"] for r in reasons)
    model = [v for r, v in zip(reasons, verdicts) if r["source"] == "model"]
    words = sum(v["content_words"] for v in verdicts)
    out = {
        "reasons": len(verdicts),
        "source_shares": {s: round(c / len(reasons), 4) for s, c in sorted(sources.items())},
        "model_written_and_passing": _share([r["source"] == "model" and v["passes"]
                                             for r, v in zip(reasons, verdicts)]),
        "passing_among_model_written": _share([v["passes"] for v in model]),
        "passing": _share([v["passes"] for v in verdicts]),
        "grounding": {
            "supported_word_share": round(sum(v["supported_words"] for v in verdicts) / words, 4) if words else None,
            "supported_word_share_per_reason": _share([v["supported_words"] / v["content_words"]
                                                       if v["content_words"] else 1.0 for v in verdicts]),
            "with_unsupported_word": _share([bool(v["unsupported"]) for v in verdicts]),
            "with_unsupported_claim": _share([not v["grounded"] for v in verdicts]),
        },
        "personalisation": {
            "names_history_item": _share([bool(v["named_history"]) for v in verdicts]),
            "names_related_history_item": _share([bool(v["related_named"]) for v in verdicts]),
            "names_request": _share([v["names_request"] for v in verdicts]),
            "names_related_item_or_request": _share([v["personal"] for v in verdicts]),
        },
        "degenerate": {
            "any": _share([v["degenerate"] for v in verdicts]),
            "repetition": _share([bool(v["repeated"]) for v in verdicts]),
            "empty_or_truncated": _share([v["truncated"] for v in verdicts]),
            "says_nothing": _share([v["says_nothing"] for v in verdicts]),
            "copies_few_shot_example": _share([v["copies_example"] for v in verdicts]),
            "distinct_1_per_list": _share_mean([distinct_n([r[key]["text"] for r in row["reasons"] if r.get(key)], 1)
                                                for row in rows]),
            "distinct_2_per_list": _share_mean([distinct_n([r[key]["text"] for r in row["reasons"] if r.get(key)], 2)
                                                for row in rows]),
        },
        "checker_rejected": _share([bool(v["checker_problems"]) for v in verdicts]),
    }
    lists = [[r[key]["text"] for r in row["reasons"] if r.get(key)] for row in rows]
    repeated = [len({sentence_key(t) for t in texts}) < len(texts) for texts in lists]
    out["degenerate"]["lists_with_a_sentence_twice"] = sum(repeated)
    out["degenerate"]["lists"] = len(lists)
    asked = [v for v in verdicts if v.get("names_request_facts") is not None]
    if asked:
        meeting = [v for v in asked if v["meets_request"]]
        out["request"] = {
            "reasons": len(asked),
            "items_meeting_the_request": _share([v["meets_request"] for v in asked]),
            "names_the_request_facts": _share([v["names_request_facts"] for v in asked]),
            "names_the_request_facts_among_items_meeting_it": _share([v["names_request_facts"] for v in meeting]),
        }
    return out


def _share_mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def latency(rows: Sequence[dict]) -> dict:
    """Seconds to write one user's list of reasons (one batched LM call + checks) and per reason."""
    lists = np.array([row["reasons_s"] for row in rows], dtype=float)
    per_reason = np.array([row["reasons_s"] / max(len(row["reasons"]), 1) for row in rows], dtype=float)
    if not len(lists):
        return {}
    return {"per_list_s": {"mean": round(float(lists.mean()), 3), "median": round(float(np.median(lists)), 3),
                           "p90": round(float(np.quantile(lists, 0.9)), 3)},
            "per_reason_s": {"mean": round(float(per_reason.mean()), 3),
                             "median": round(float(np.median(per_reason)), 3)}}
