"""What a prompt's answer may be, as typed values a backend reads (the model: vLLM's ``StructuredOutputsParams``).

A prompt carries at most one constraint (:attr:`.prompt.ChatPrompt.constraint`): :class:`Choice` (write exactly
one of these sentences) or :class:`Vocabulary` (write only these words, these phrases whole, under these sentence
rules). The caller (the reasons stage) says what is allowed; each backend enforces it its own way
(:mod:`.choices`, :mod:`.constrained`, :mod:`.vocabulary`).
"""

from __future__ import annotations

from dataclasses import dataclass


def _words(values, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of strings, not one string")
    out = tuple(values)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{what} must be strings")
    return out


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

    def __post_init__(self) -> None:
        """Words are compared in lower case: store them so, whatever the caller passed."""
        for name in ("end_needs", "no_end_after", "after_phrase", "not_before_phrase", "once", "openers",
                     "no_comma_after"):
            object.__setattr__(self, name, frozenset(w.lower() for w in _words(getattr(self, name), name)))
        object.__setattr__(self, "claim_subject", str(self.claim_subject).lower())
        object.__setattr__(self, "must_name", bool(self.must_name))
        object.__setattr__(self, "name_within", int(self.name_within))
        object.__setattr__(self, "tail_words", int(self.tail_words))


@dataclass(frozen=True)
class Choice:
    """The answer is exactly one of ``options`` (vLLM: ``structured_outputs={"choice": [...]}``)."""

    options: tuple[str, ...]

    def __post_init__(self) -> None:
        options = _words(self.options, "Choice options")
        if not any(options):
            raise ValueError("a Choice needs at least one non-empty option")
        object.__setattr__(self, "options", options)


@dataclass(frozen=True)
class Vocabulary:
    """The answer uses only ``words`` (any listed form), writes ``phrases`` (titles) only whole, and is a
    sentence by ``rules``."""

    words: tuple[str, ...]
    phrases: tuple[str, ...] = ()
    rules: SentenceRules = SentenceRules()

    def __post_init__(self) -> None:
        words = _words(self.words, "Vocabulary words")
        if not any(words):
            raise ValueError("a Vocabulary needs at least one word")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "phrases", _words(self.phrases, "Vocabulary phrases"))
        if not isinstance(self.rules, SentenceRules):
            raise TypeError(f"Vocabulary rules must be SentenceRules, not {type(self.rules).__name__}")


#: The constraints a prompt may carry.
CONSTRAINTS = (Choice, Vocabulary)
