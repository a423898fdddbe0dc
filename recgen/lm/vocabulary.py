"""The vocabulary of a constrained reason, as plain data (no torch): which prompts carry one, how a word may
be written, and the word-level grammar a ``vllm serve`` server enforces (:mod:`.constrained` has the
token-level form for backends that hold a tokenizer)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .prompt import ChatPrompt

#: Punctuation allowed between two words in the grammar (runs of 1-3 characters, spaces included).
_BETWEEN = r"[ ,.;:()'&/\-]{1,3}"


def vocabulary_of(prompt: ChatPrompt) -> list[str] | None:
    """The words a prompt may be answered with (``meta["vocabulary"]``), or None: unconstrained."""
    words = prompt.meta.get("vocabulary") if prompt.meta else None
    return list(words) if words else None


def phrases_of(prompt: ChatPrompt) -> list[str]:
    """Phrases (titles) a constrained answer may write only whole (``meta["phrases"]``)."""
    return list(prompt.meta.get("phrases") or []) if prompt.meta else []


@dataclass(frozen=True)
class SentenceRules:
    """What makes a constrained answer a sentence, not a fragment (all words lower case; empty = no rule).

    ``must_name``: the sentence ends only after one of the prompt's phrases is written whole; ``end_needs``:
    without phrases, only after one of these words; ``no_end_after``: never right after these ("with a.");
    ``after_phrase``: written only once a phrase is ("which you liked" of nothing named); ``not_before_phrase``:
    a phrase never right after these ("This is a <liked title>" says the recommendation IS the liked item);
    ``once``: written at most once outside phrases ("a product of the product"); ``openers``: the first word is
    one of these; ``name_within`` / ``tail_words``: at most this many free words before a phrase starts / after
    the last phrase (0 = no limit), so the sentence names the item early and ends soon after it;
    ``no_comma_after``: no comma right after these ("Like, <title>"); ``claim_subject`` ("you"): the word after it
    is one of ``after_phrase``, which are written only right after it, and nothing but the end follows them
    ("which you liked." and never "you like Sci-Fi", "fans of X loved ...", "you liked the product")."""

    must_name: bool = False
    end_needs: frozenset[str] = frozenset()
    no_end_after: frozenset[str] = frozenset()
    after_phrase: frozenset[str] = frozenset()
    not_before_phrase: frozenset[str] = frozenset()
    once: frozenset[str] = frozenset()
    openers: frozenset[str] = frozenset()
    name_within: int = 0
    tail_words: int = 0
    no_comma_after: frozenset[str] = frozenset()
    claim_subject: str = ""

    def to_meta(self) -> dict:
        return {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_meta(cls, meta: dict | None) -> "SentenceRules":
        meta = meta or {}
        return cls(must_name=bool(meta.get("must_name", False)), name_within=int(meta.get("name_within", 0)),
                   claim_subject=str(meta.get("claim_subject", "")).lower(),
                   tail_words=int(meta.get("tail_words", 0)),
                   **{k: frozenset(w.lower() for w in meta.get(k, ())) for k in
                      ("end_needs", "no_end_after", "after_phrase", "not_before_phrase", "once", "openers",
                       "no_comma_after")})


#: A sentence ending on one of these words was cut off ("... with a."): the constraint never ends one there,
#: and the reasons measure calls such a sentence truncated.
DANGLING = frozenset("""
a an the and or but nor with of to for in on at by from as like than that which who whose its their your his
her our is are was were be been has have had will would can could this these those into about
""".split())


def rules_of(prompt: ChatPrompt) -> SentenceRules:
    """The sentence rules a constrained prompt carries (``meta["rules"]``), else none."""
    return SentenceRules.from_meta(prompt.meta.get("rules") if prompt.meta else None)


def word_forms(word: str) -> set[str]:
    """How an allowed word may be written: as given, lower-case, capitalised."""
    return {word, word.lower(), word[:1].upper() + word[1:], word.capitalize()}


def vocabulary_regex(words: list[str], phrases: list[str] = ()) -> str:
    """A sentence of allowed words (or whole ``phrases``) joined by spaces and light punctuation, ending in an
    optional ``)`` and full stop. Word level, so sub-words cannot recombine into a word that is not allowed."""
    forms = {f for w in words for f in word_forms(w) if f and all(c.isalnum() or c in "'-" for c in f)}
    units = sorted(forms | {p for p in phrases if p}, key=lambda f: (-len(f), f))
    word = "(?:" + "|".join(re.escape(f) for f in units) + ")"
    return f" ?{word}(?:{_BETWEEN}{word})*\\)?[.!]?"
