"""Pure text helpers shared by every layer, each with one home: the words and stems of a reason (reason checks
and their measure), names listed in a sentence, short titles, and the one validator of text that crosses a
boundary (ids, titles, queries, chat messages: server, batch, CLI, chat).

Imports only :mod:`recgen.errors` (and the Snowball stemmer). Everything here runs in time linear in its input,
because chat and the server call it on text that clients control.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

import snowballstemmer

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


def join_names(names: list[str] | tuple[str, ...]) -> str:
    """``"Comedy, Drama and Romance"``: names as a sentence lists them ("" for none)."""
    names = list(names)
    if not names:
        return ""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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


# -- words of a reason -------------------------------------------------------------------------------------

#: A word as requests and reasons are tokenized: letters and digits, with one "'s"/"'t"-like tail.
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

#: Text is cut to this many characters before tokenizing (a reason is one sentence of ~32 tokens).
MAX_TEXT_CHARS = 4000
#: Words are cut to this many characters before stemming (no real word is longer; keeps stemming bounded).
MAX_WORD_CHARS = 40

#: Function words and light verbs ("made for kids", "became a hit"): they carry no claim by themselves, so they
#: are never checked. A short hand-written list (scikit-learn's list holds content words such as "fire",
#: "system" and "bill", which a reason can use as claims).
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be been before being below between both
but by can could did do does doing down during each either else ever every few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just may me might more most
much must my myself neither no nor not now of off on once only or other ought our ours ourselves out over own
per quite rather really same she should so some such than that the their theirs them themselves then there
these they this those though through thus to too under until up upon us very was we were what when where
whether which while who whom whose why will with within without would yet you your yours yourself yourselves
s t d ll re ve m don doesn didn isn aren wasn weren won wouldn shouldn couldn
make makes made making get gets got getting take takes took taken give gives gave given go goes went gone
come comes came become becomes became seem seems seemed
""".split())

_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def snowball_stem(word: str) -> str:
    """The Snowball (Porter2) stem of one lower-case word, cut to :data:`MAX_WORD_CHARS` first: how a reason's
    word matches a fact ("comedies" = "Comedy", "animated" = "animation")."""
    word = word[:MAX_WORD_CHARS]
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "")
    return _STEMMER.stemWord(word)


def tokens(text: str) -> list[str]:
    """Lower-case words of ``text`` (possessive "'s" dropped), in order; the text is cut first."""
    out = []
    for word in WORD.findall(clip(text, MAX_TEXT_CHARS).lower()):
        word = word[:MAX_WORD_CHARS]
        if word.endswith("'s"):
            word = word[:-2]
        out.append(word.replace("'", ""))
    return out


def claim_words(text: str) -> list[str]:
    """The words of ``text`` that can carry a claim: not :data:`STOPWORDS`, not a lone letter (order kept)."""
    return [w for w in tokens(text) if w not in STOPWORDS and not (len(w) == 1 and w.isalpha())]


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
