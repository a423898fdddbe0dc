"""Pure text helpers shared by ranking (reason checks) and chat (reading turns and replies).

A leaf module: no recgen imports. Everything here runs in time linear in its input, because chat and the
server call it on text that clients control.
"""

from __future__ import annotations

import re

_WORDS = re.compile(r"[a-z0-9]+")
#: Words that negate what follows ("not horror", "no musicals").
NEG_WORDS = {
    "not", "no", "non", "without", "except", "excluding", "exclude", "avoid", "avoiding", "skip", "nothing",
    "never", "neither", "nor", "hate", "hated", "dislike", "disliked", "don't", "dont", "doesn't", "didn't",
    "isn't", "aren't", "won't", "wouldn't", "less", "fewer", "minus", "none", "nope", "against",
}
#: Phrases that do the same ("anything but", "other than", ...).
NEGATION_PHRASES = re.compile(
    r"\b(?:(?:anything|everything|all)\s+but|other\s+than|rather\s+than|instead\s+of|except\s+for|"
    r"(?:tired|sick)\s+of|do\s+not|does\s+not|did\s+not|no\s+more|get\s+rid\s+of|leave\s+out|not\s+into)\b"
)
_NEGATION_SCAN_CHARS = 2000
_ARTICLES_MOVED = ("The", "A", "An", "Les", "La", "Il", "Das")


def short_title(title: str) -> str:
    """``"Usual Suspects, The (1995)"`` → ``"the usual suspects"``: how a title is written in prose."""
    title = title.strip()
    if len(title) >= 6 and title[-6] == "(" and title[-1] == ")" and title[-5:-1].isdigit():
        title = title[:-6].strip()  # a trailing "(1995)"
    for article in _ARTICLES_MOVED:
        suffix = f", {article}"
        if title.endswith(suffix):
            title = f"{article} {title[: -len(suffix)]}"
    return title.lower()


def words_of(text: str) -> set[str]:
    """Lower-case alphanumeric words of ``text``."""
    return set(_WORDS.findall(text.lower()))


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars``: the hard cap every parser of untrusted text applies before any pattern."""
    return text if len(text) <= max_chars else text[:max_chars]


def collapse_spaces(text: str) -> str:
    """Runs of whitespace as one space, ends stripped (linear; use before patterns that contain ``\\s+``)."""
    return " ".join(text.split())


def has_negation(text: str) -> bool:
    """Whether a request says what it does not want (a negation word or phrase) in its first 2,000 characters:
    a sentence embedding reads "anything but horror" as horror, so such a request must not steer by
    similarity alone."""
    lower = text[:_NEGATION_SCAN_CHARS].lower()
    words = set(re.findall(r"[a-z']+", lower))
    return bool(words & NEG_WORDS) or NEGATION_PHRASES.search(lower) is not None
