"""Pure text helpers shared by every layer, each with one home: the word lists and words of a request (chat,
retrieval's request filters), the words and stems of a reason (reason checks and their measure), title terms,
and the one validator of text that crosses a boundary (ids, titles, queries, chat messages: server, batch, CLI,
chat).

Two stems live here because two rules are wanted: :func:`plural_stem` (an ``s`` off: how a request's word
matches a title's) and :func:`snowball_stem` (Porter2: how a reason's word matches a fact). Two content-word
readers likewise: :func:`wanted_words` (what a request asks for) and :func:`claim_words` (what a reason claims).

Imports only :mod:`recgen.errors` (and the Snowball stemmer). Everything here runs in time linear in its input,
because chat and the server call it on text that clients control.
"""

from __future__ import annotations

import html
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
#: Words that reject a referenced item ("I've seen the first one") but say nothing about a genre.
REF_NEG_WORDS = {"seen", "watched", "saw", "already", "drop", "remove", "removed", "boring", "own", "read", "meh"}
#: Words that neither end a negation's scope nor count as request content.
FILLER = set(
    "a an the any some more movies movie films film flicks flick shows show stuff things ones items titles "
    "books products of at all too really very so much kind sort type types genre genres particularly "
    "especially in or and nor either i i'm im am is are be it it's its that that's this these those want "
    "wanted like likes need care for about give me us watch see get recommend suggest please into fan big "
    "huge many anything something with".split()
)
#: Words of a request that say nothing about what is wanted (:func:`wanted_words` drops them).
STOP = FILLER | set(
    "else other another different new now then also just only but what how maybe perhaps could would can "
    "you your my we our they them there here lol ok okay thanks thank hi hello hey yes yeah sure great good "
    "nice cool well hmm instead rather one list similar to as than from on by do does did have has had i've "
    "i'd i'll let's let which who where when why will shall should must may might was were been being if "
    "such up out over again even still yet back pick picks recommendation recommendations suggestion "
    "suggestions options option tell find looking look search choose select with same looks sounds seems fine "
    "interesting awesome love loved liked enjoyed enjoy nothing none".split()
) | NEG_WORDS | REF_NEG_WORDS
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


#: Rounds of entity decoding a title gets: a feed escaped twice ("&amp;rsquo;") reads right after two.
_UNESCAPE_ROUNDS = 3


def plain_title(text: str) -> str:
    """A title (or genre) as people read it, the one helper at the data boundary: HTML entities decoded
    (``"Tom Clancy&rsquo;s"`` → ``"Tom Clancy’s"``; twice-escaped ``"&amp;amp;"`` too) and whitespace runs as one
    space. Shop feeds carry entities; showing them raw is the hand-graded failure of issue 26."""
    for _ in range(_UNESCAPE_ROUNDS):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return collapse_spaces(text)


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


# -- words of a request ------------------------------------------------------------------------------------

#: A word as requests and reasons are tokenized: letters and digits, with one "'s"/"'t"-like tail.
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
#: Title terms shorter than this are not matched (a request's "a", "of"; "bag" is a product word).
MIN_TITLE_TERM_LETTERS = 3


def norm(text: str) -> str:
    """Lower case with curly quotes made straight; the same length as ``text``, so spans line up."""
    return text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("\u2013", "-")


def wanted_words(text: str | None) -> list[str]:
    """Words that say what a request wants (not filler, negations or numbers: not in :data:`STOP`)."""
    return [w for w in WORD.findall(norm(text or "")) if w not in STOP and not w.isdigit()]


def plural_stem(word: str) -> str:
    """Plural ``s`` off ("conditioners" → "conditioner", not "glass" → "glas", not "bus"): the light rule a
    request's word and a title's word are matched by (a Snowball stem would read "conditioners" as "condition")."""
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def title_terms(title: str, min_letters: int = MIN_TITLE_TERM_LETTERS) -> set[str]:
    """The plural-stemmed words of ``min_letters``+ letters of a title: what a request's title word must match.
    Request filters read 3+ letters; the evaluation's title-word requests are built from 4+."""
    return {plural_stem(w) for w in re.findall(rf"[a-z]{{{int(min_letters)},}}", title.lower())}


def blank_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with ``spans`` blanked and the spaces collapsed: the phrases a reader took out of a request."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * len(chars[start:end])
    return collapse_spaces("".join(chars))


def request_remainder(text: str, spans: list[tuple[int, int]]) -> str | None:
    """``text`` without ``spans`` (its year and negated phrases), edge separators stripped: what the
    retriever's embedder reads. None when no wanted word is left."""
    rest = blank_spans(text, spans).strip(" ,;:-")
    return rest if wanted_words(rest) else None


_LEAD = re.compile(r"^(?:[\s,.;:!?-]|(?:and|or|but|like|similar\s+to|similar|to|with|as|than|also|please|more)\b)+",
                   re.IGNORECASE)
_TAIL_WORDS = {"and", "or", "but", "like", "similar", "to", "with", "as", "than", "only", "just", "also", "please",
               "more", "the", "a", "an"}


def turn_remainder(text: str, spans: list[tuple[int, int]]) -> str | None:
    """``text`` without ``spans`` (a chat turn's constraint phrases), read as a sentence again: no space before
    punctuation, no doubled punctuation, no joining words left at either end ("..., and the"). None when no
    wanted word is left."""
    rest = re.sub(r"\s+([,.;:!?])", r"\1", blank_spans(text, spans))
    rest = re.sub(r"([,.;:!?])(?:\s*[,.;:!?])+", r"\1", rest)
    for _ in range(3):
        rest = _LEAD.sub("", rest)
        rest = _strip_tail(rest)
    if not wanted_words(rest):
        return None
    return rest.strip()


def _strip_tail(text: str) -> str:
    """``text`` without trailing separators and joining words ("..., and the"): a backwards scan, since a
    ``(...)+$`` pattern would be retried from every position (quadratic on "and and and ... x")."""
    end = len(text)
    while end:
        if text[end - 1].isspace() or text[end - 1] in ",;:-":
            end -= 1
            continue
        start = end
        while start and (text[start - 1].isalnum() or text[start - 1] == "_"):
            start -= 1
        if start == end or text[start:end].lower() not in _TAIL_WORDS:
            break
        end = start
    return text[:end]


# -- words of a reason -------------------------------------------------------------------------------------

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


def _check_string(value: Any, what: str, limit: int, *, formats: bool) -> str:
    """A non-blank string of at most ``limit`` characters with no invalid code points (and, with ``formats``,
    no format characters either): the one check behind ids and titles."""
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidTextError(f"{what} is empty")
    if len(value) > limit:
        raise InvalidTextError(f"{what} is {len(value)} characters; the limit is {limit}")
    problem = _code_point_problem(value, _BAD, formats=formats)
    if problem:
        raise InvalidTextError(f"{what} {value[:40]!r} {problem}")
    return value


def check_id(value: Any, what: str) -> str:
    """A user, item or event id, on every surface: a non-blank string of at most :data:`MAX_ID_CHARS`
    characters with no control or format characters and no invalid code points."""
    return _check_string(value, what, MAX_ID_CHARS, formats=True)


def check_title(value: Any, what: str = "title") -> str:
    """An item title (or genre): a non-blank, one-line string of valid Unicode, at most :data:`MAX_TITLE_CHARS`."""
    return _check_string(value, what, MAX_TITLE_CHARS, formats=False)


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
