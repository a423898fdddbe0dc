"""A :class:`.constraint.Vocabulary` as plain data (no torch): which prompts carry one, how a word may be
written, and the word-level grammar a ``vllm serve`` server enforces (:mod:`.constrained` has the token-level
form for backends that hold a tokenizer)."""

from __future__ import annotations

import re

from .constraint import Vocabulary
from .prompt import ChatPrompt

#: Punctuation allowed between two words in the grammar (runs of 1-3 characters, spaces included).
_BETWEEN = r"[ ,.;:()'&/\-]{1,3}"


def vocabulary_of(prompt: ChatPrompt) -> Vocabulary | None:
    """The vocabulary a prompt's answer is constrained to, or None: unconstrained or another constraint."""
    return prompt.constraint if isinstance(prompt.constraint, Vocabulary) else None


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
