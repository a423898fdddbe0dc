"""Pure text helpers shared by ranking (reason checks) and chat (reading turns and replies), and the one
validator of text that crosses a boundary (ids, titles, queries, chat messages: server, batch, CLI, chat).

Imports only :mod:`recgen.errors`. Everything here runs in time linear in its input, because chat and the
server call it on text that clients control.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from .errors import InvalidRequestError

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


# -- validating text that crosses a boundary ------------------------------------------------------------------

#: The longest user, item or event id (and the longest title of an item added over HTTP, x8).
MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 8 * MAX_ID_CHARS


class InvalidTextError(InvalidRequestError, ValueError):
    """Text that no tokenizer, file or log should receive: a lone surrogate, bytes that were not UTF-8, a
    control character. Also a ``ValueError``, so a pydantic validator that raises it yields a 400/line error."""


#: Code points no text may hold: control characters (category Cc, all of U+0000-U+001F and U+007F-U+009F) and
#: surrogates (Cs). A regex, so a 1 MB chat message is scanned at C speed.
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")  # tab, LF, CR allowed


def _first_bad(text: str, bad: re.Pattern, formats: bool) -> tuple[int, str] | None:
    found = bad.search(text)
    if found is not None:
        return found.start(), found.group()
    if formats:  # ids only (at most 256 characters), so a loop in Python is fine
        return next(((n, c) for n, c in enumerate(text) if unicodedata.category(c) == "Cf"), None)
    return None


def _code_point_problem(text: str, bad: re.Pattern, formats: bool) -> str | None:
    """Why ``text`` is refused (the first bad code point), or None. Lone surrogates U+DC80-U+DCFF are how
    Python decodes bytes that are not UTF-8 (``surrogateescape``: argv, stdin), so they are named as such.
    ``formats``: also refuse format characters (Cf: zero-width, bidi controls), for ids that must look as they are."""
    found = _first_bad(text, bad, formats)
    if found is None:
        return None
    position, char = found
    if "\udc80" <= char <= "\udcff":
        return f"holds a byte that is not valid UTF-8 (0x{ord(char) - 0xDC00:02x}) at character {position + 1}"
    if "\ud800" <= char <= "\udfff":
        return f"holds a lone surrogate (U+{ord(char):04X}) at character {position + 1}, which is not valid Unicode"
    return f"contains control characters (U+{ord(char):04X} at character {position + 1})"


def check_text(value: Any, what: str, *, max_chars: int | None = None) -> str:
    """Free text (a query, a chat message, a description): a string of valid Unicode with no control
    characters but tab and newlines. Returns it unchanged, or raises :class:`InvalidTextError`."""
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be a string, not {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidTextError(f"{what} is {len(value)} characters; the limit is {max_chars}")
    problem = _code_point_problem(value, _BAD_IN_TEXT, formats=False)
    if problem:
        raise InvalidTextError(f"{what} {problem}")
    return value


def check_id(value: Any, what: str) -> str:
    """A user, item or event id, on every surface: a non-blank string of at most :data:`MAX_ID_CHARS`
    characters with no control or format characters and no invalid code points."""
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidTextError(f"{what} is empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidTextError(f"{what} is {len(value)} characters; the limit is {MAX_ID_CHARS}")
    problem = _code_point_problem(value, _BAD, formats=True)
    if problem:
        raise InvalidTextError(f"{what} {value[:40]!r} {problem}")
    return value


def check_title(value: Any, what: str = "title") -> str:
    """An item title (or genre): a non-blank, one-line string of valid Unicode, at most :data:`MAX_TITLE_CHARS`."""
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidTextError(f"{what} is empty")
    if len(value) > MAX_TITLE_CHARS:
        raise InvalidTextError(f"{what} is {len(value)} characters; the limit is {MAX_TITLE_CHARS}")
    problem = _code_point_problem(value, _BAD, formats=False)
    if problem:
        raise InvalidTextError(f"{what} {value[:40]!r} {problem}")
    return value


def message_text(content: Any) -> str:
    """OpenAI message content: a string, ``None``, or a list of parts (only text parts are read)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict):
            if part.get("type", "text") == "text":
                parts.append(str(part.get("text") or ""))
        elif getattr(part, "type", "text") == "text":
            parts.append(str(getattr(part, "text", "") or ""))
    return "\n".join(parts)
