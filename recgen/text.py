"""Pure text helpers shared by ranking (reason checks) and chat (reading turns and replies).

A leaf module: no recgen imports. Everything here runs in time linear in its input, because chat and the
server call it on text that clients control.
"""

from __future__ import annotations

import re

_WORDS = re.compile(r"[a-z0-9]+")
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
