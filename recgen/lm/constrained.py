"""Constrained reasons: the model may write only the words it is given (``ChatPrompt.constraint``, a
:class:`.constraint.Vocabulary`).

The reasons layer puts in the vocabulary the words of a reason's facts and a generic list; this module turns
it into what each backend enforces:

* :class:`AllowedTokens` — the token ids of those words (as the tokenizer spells them at a word start, with
  and without a leading space, lower-case and capitalised), punctuation tokens, the digits of years, and the
  end-of-turn tokens. The transformers backend masks every other logit (:class:`.logits.AllowedTokensProcessor`,
  a ``transformers.LogitsProcessor``); the in-process vLLM engine passes the same ids as
  ``SamplingParams.allowed_token_ids``, so both backends allow the same tokens.
* :func:`.vocabulary.vocabulary_regex` — a word-level grammar for a ``vllm serve`` server, which recgen
  reaches without a tokenizer of its own: ``structured_outputs={"regex": ...}``.

Sub-word tokens of allowed words can recombine into words not in the list; the reason checker stays the
second gate.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .constraint import SentenceRules
from .vocabulary import word_forms

#: Tokens outside the allowed ids tried (best first) when none inside passes the word check.
SECOND_CHANCE = 512
#: Characters a punctuation token may consist of (with spaces).
PUNCTUATION = set(".,;:!?'\"()-\u2013\u2014&/") | {"\u2019"}


def _variants(word: str) -> set[str]:
    return {prefix + v for v in word_forms(word) for prefix in ("", " ")}


class AllowedTokens:
    """Allowed token ids per vocabulary, for one Hugging Face tokenizer (word tokenizations are cached)."""

    def __init__(self, tokenizer, stop_ids: set[int]):
        self.tokenizer = tokenizer
        self.stop_ids = {i for i in stop_ids if i is not None}
        self._words: dict[str, set[int]] = {}
        self._base: set[int] | None = None

    def base_ids(self) -> set[int]:
        """Punctuation-only tokens and the end-of-turn tokens: always allowed."""
        if self._base is None:
            base = set(self.stop_ids)
            for token, token_id in self.tokenizer.get_vocab().items():
                text = self.tokenizer.convert_tokens_to_string([token])
                stripped = text.strip(" ")
                if stripped and "\n" not in text and all(c in PUNCTUATION for c in stripped):
                    base.add(token_id)
            self._base = base
        return self._base

    def word_ids(self, word: str) -> set[int]:
        if word not in self._words:
            ids: set[int] = set()
            for variant in _variants(word):
                ids.update(self.tokenizer(variant, add_special_tokens=False)["input_ids"])
            self._words[word] = ids
        return self._words[word]

    def text(self, token_id: int) -> str:
        """A token's text as it appears in decoded output (leading space included)."""
        cache = self.__dict__.setdefault("_texts", {})
        if token_id not in cache:
            cache[token_id] = self.tokenizer.convert_tokens_to_string([self.tokenizer.convert_ids_to_tokens(token_id)])
        return cache[token_id]

    def boundaries(self, phrase: str) -> frozenset[int]:
        """Character offsets in ``phrase`` where its own tokens end (tokenized after a space, and alone): a title
        is written in these tokens, never begun in others it cannot finish in ("... Nail La" + ?)."""
        cache = self.__dict__.setdefault("_bounds", {})
        if phrase not in cache:
            out = set()
            for prefix in ("", " "):
                position = -len(prefix)
                for token_id in self.tokenizer(prefix + phrase, add_special_tokens=False)["input_ids"]:
                    position += len(self.text(token_id))
                    out.add(position)
            cache[phrase] = frozenset(p for p in out if p > 0)
        return cache[phrase]

    def ids_for(self, words: list[str], phrases: list[str] = ()) -> list[int]:
        ids = set(self.base_ids())
        for word in words:
            ids |= self.word_ids(word)
        for phrase in phrases:
            for variant in (phrase, " " + phrase):
                ids.update(self.tokenizer(variant, add_special_tokens=False)["input_ids"])
        return sorted(ids)


_WORD_CHARS = re.compile(r"[A-Za-z0-9']+$")
_TOKEN_WORDS = re.compile(r"[A-Za-z0-9']+|[^A-Za-z0-9']+")
_ANY_WORD = re.compile(r"[A-Za-z0-9']+")
_COUNTED_WORD = re.compile(r"[A-Za-z0-9']+(?:-[A-Za-z0-9']+)*")  # "Sci-Fi" is one word of a sentence
_SENTENCE_END = re.compile(r"[.!?]")
#: Punctuation between free words: a space, a comma, a hyphen inside a word ("Sci-Fi"), the sentence end.
_FREE_PUNCT = re.compile(r"(?: ?|, ?|-|[.!?])$")
_TRAILING_PUNCT = re.compile(r"[^A-Za-z0-9']*$")


class WordVocabulary:
    """Word-level check of one constrained answer: every finished word must be an allowed form, and the word
    being written must be the prefix of one. Stops sub-word tokens of allowed words recombining into other
    words ("well-res" + "oned", a year "1979" rebuilt as "1970").

    ``phrases`` (the related history item's name) are written whole or not at all: their words are allowed
    only as the next part of the phrase, so a reason cannot name half a title or stitch a new one together
    ("Jurassic Park (1997)" out of "The Lost World: Jurassic Park (1997)"). A ``.`` ``!`` ``?`` inside a
    phrase ("Faster Pussycat! Kill! Kill!") never ends the sentence.

    An allowed word is written as given or in lower case anywhere, and capitalised only where a sentence
    starts (a capitalised "Shopper" or "A" inside a sentence reads as a name the facts do not hold, and the
    checker rejects it). ``rules`` (:class:`.constraint.SentenceRules`) add what makes a sentence a reason
    rather than a fragment: it ends only at ``.`` ``!`` ``?`` after naming a phrase (or, without phrases, one of
    ``rules.end_needs``), never on a dangling word; "liked" only once a phrase is named; a phrase never right
    after "is a"; a content word said once."""

    def __init__(self, words: list[str], phrases: list[str] = (), rules: SentenceRules | None = None,
                 boundaries=None):
        self.forms: set[str] = set()
        self.start_forms: set[str] = set()
        for word in words:
            self.forms |= _forms_and_prefixes(word, False)[0]
            self.start_forms |= _forms_and_prefixes(word, True)[0]
        self.completions: dict[str, set[str]] = {}  # a prefix -> the allowed forms it can become
        for form in self.start_forms:
            for n in range(1, len(form) + 1):
                self.completions.setdefault(form[:n], set()).add(form)
        self.phrases = [p for p in phrases if p]
        self.rules = rules or SentenceRules()
        #: phrase -> offsets where its tokens end (``AllowedTokens.boundaries``); None: any offset
        self.bounds = {p: boundaries(p) for p in self.phrases} if boundaries is not None else None
        self.boundary_of = boundaries

    # -- free words ---------------------------------------------------------------------------------------
    def _free(self, before: str, tail: str, piece: str) -> bool:
        """Whether ``tail + piece`` (``tail``: the unfinished word at the end of ``before + tail``) continues
        the answer with allowed free words and punctuation."""
        parts = _TOKEN_WORDS.findall(tail + piece)
        written = before
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if part[0].isalnum() or part[0] == "'":
                start = _starts_sentence(written)
                allowed = self.start_forms if start else self.forms
                candidates = [f for f in self.completions.get(part, ()) if f in allowed and self._on_boundary(f, part)] \
                    if last else ([part] if part in allowed else [])
                if not candidates:
                    return False
                context = self._context(written)
                if not any(self._word_fits(context, f) for f in candidates):
                    return False  # no word it can become is one the sentence rules allow here
            else:
                run = self._punctuation_tail(written) + part
                if not _FREE_PUNCT.match(run):
                    return False  # "which you’’’ (", "Like:": quotes and brackets only inside a title
                if _SENTENCE_END.search(part) and not self._may_end(written):
                    return False
                if "," in part and self._last_word(written) in self.rules.no_comma_after:
                    return False  # "Like, <title>", "Another, the user ..."
            written += part
        return True

    def _on_boundary(self, form: str, part: str) -> bool:
        """``part`` of ``form`` ends where one of the form's own tokens ends (or is the whole form): a word is
        begun only in tokens it can be finished in ("Sim" + "ila" of " Similar", then nothing)."""
        return self.boundary_of is None or part == form or len(part) in self.boundary_of(form)

    def _punctuation_tail(self, written: str) -> str:
        """The punctuation at the end of ``written`` after its last word or phrase (a title's own ")" is not
        free punctuation)."""
        start = _TRAILING_PUNCT.search(written).start()
        for phrase in self.phrases:
            at = written.rfind(phrase)
            if at >= 0:
                start = max(start, at + len(phrase))
        return written[start:]

    def _context(self, written: str) -> tuple[bool, set[str], int, bool, str]:
        """(a phrase is named, free words used (singular), free words since the last phrase or the start,
        nothing written yet, the last free word (lower case; "" right after a phrase)). Cached: every candidate
        token of a step shares the text before it."""
        cache = self.__dict__.setdefault("_contexts", {})
        if written not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[written] = self._compute_context(written)
        return cache[written]

    def _compute_context(self, written: str) -> tuple[bool, set[str], int, bool, str]:
        named = self.named(written)
        free = _ANY_WORD.findall(self._outside_phrases(written))
        since = written
        for phrase in self.phrases:
            since = since.rsplit(phrase, 1)[-1]
        return (named, {_singular(w) for w in free}, len(_COUNTED_WORD.findall(since)), not free and not named,
                self._last_word(written))

    def _word_fits(self, context: tuple[bool, set[str], int, bool, str], word: str) -> bool:
        named, used, since, first, last = context
        low = word.lower()
        rules = self.rules
        if first and rules.openers and low not in rules.openers:
            return False
        if low in rules.after_phrase and not named:
            return False  # "which you liked" of nothing named
        if rules.claim_subject:
            if last in rules.after_phrase:
                return False  # "you liked the product": nothing but the end after "liked"
            if (last == rules.claim_subject) != (low in rules.after_phrase):
                return False  # "you like Sci-Fi", "fans of X loved the genre"
        if low in rules.once and _singular(low) in used:
            return False  # "a product of the product"
        limit = rules.tail_words if named else rules.name_within
        return not (self.phrases and limit and since >= limit)  # name the item early; end soon after it

    def _outside_phrases(self, text: str) -> str:
        for phrase in self.phrases:
            text = text.replace(phrase, " ")
        return text

    def named(self, text: str) -> bool:
        """Whether ``text`` holds one of the phrases whole."""
        return any(p in text for p in self.phrases)

    def _may_end(self, text: str) -> bool:
        """Whether a sentence may end after ``text``: it names a phrase (or, without phrases, one of
        ``rules.end_needs``) and does not end on a word that needs a continuation."""
        rules = self.rules
        if rules.end_needs or self.phrases and rules.must_name:
            free = {w.lower() for w in _ANY_WORD.findall(self._outside_phrases(text))}
            if not ((self.phrases and rules.must_name and self.named(text)) or (free & rules.end_needs)):
                return False
        words = _ANY_WORD.findall(text)
        if self.named(text) and text.rstrip().endswith(tuple(self.phrases)):
            return True
        return bool(words) and words[-1].lower() not in rules.no_end_after

    # -- phrases ------------------------------------------------------------------------------------------
    def _in_phrase(self, text: str, piece: str) -> bool:
        """``piece`` starts, continues or completes (then goes on freely) a phrase begun at a word start."""
        joined = text + piece
        for phrase in self.phrases:
            for start in _word_starts(joined, len(phrase) + len(piece))[:-1]:
                if start > len(text) and any(c.isalnum() for c in joined[len(text):start]):
                    continue  # a word of the piece before the phrase would go unchecked
                if not self._may_start_phrase(joined[:start]):
                    continue
                written = joined[start:]
                if phrase.startswith(written):
                    return self.bounds is None or len(written) in self.bounds[phrase]
                if written.startswith(phrase):
                    rest = written[len(phrase):]
                    if not rest or not (rest[0].isalnum() or rest[0] == "'"):
                        return self._free(joined[: start + len(phrase)], "", rest)
        return False

    def _last_word(self, written: str) -> str:
        stripped = written.rstrip()
        if stripped.rstrip(" ,.;:!?-").endswith(tuple(self.phrases)) or stripped.endswith(tuple(self.phrases)):
            return ""  # right after the liked item's name (and its comma)
        words = _ANY_WORD.findall(stripped[-40:])
        return words[-1].lower() if words else ""

    def _may_start_phrase(self, before: str) -> bool:
        """A phrase starts only after finished text (never after half a word or half another phrase: "Sear"
        or "Fres Fres" then a title) and not right after ``rules.not_before_phrase``."""
        stripped = before.rstrip()
        if not stripped and self.rules.openers:
            return False  # "<liked item>, which you liked." is no reason: the sentence opens with an opener
        if self.inside_phrase(stripped):
            return False  # "Alien (Alien (1979)": never a title inside half a title
        if self.rules.must_name and self.named(stripped):
            return False  # the liked item is named once
        found = _WORD_CHARS.search(stripped)
        if found and not (found.end() < len(before) or not stripped):
            return False  # the phrase would glue onto a word ("Alt" + "Bamboo")
        if found and not stripped.endswith(tuple(self.phrases)):
            start = _starts_sentence(stripped[: found.start()])
            if found.group(0) not in (self.start_forms if start else self.forms):
                return False
            if not self._word_fits(self._context(stripped[: found.start()]), found.group(0)):
                return False  # the word before the title breaks a rule ("suggest suggest <title>")
        words = _ANY_WORD.findall(before[-40:])
        return not words or words[-1].lower() not in self.rules.not_before_phrase

    def accepts(self, text: str, piece: str) -> bool:
        """Whether ``piece`` (a token's text) may follow ``text`` (the answer so far)."""
        found = _WORD_CHARS.search(text)
        tail = found.group(0) if found else ""
        return self._free(text[: len(text) - len(tail)], tail, piece) or self._in_phrase(text, piece)

    def inside_phrase(self, text: str) -> bool:
        """Whether ``text`` ends part-way through a phrase ("... Mrs." of "Mrs. Doubtfire (1993)")."""
        return any(phrase.startswith(text[start:]) and len(text) - start < len(phrase)
                   for phrase in self.phrases for start in _word_starts(text, len(phrase))[:-1])

    def can_stop(self, text: str) -> bool:
        """The answer may end only as a finished sentence: after ``.`` ``!`` ``?`` outside a phrase (a reason
        that stops at "This is a" or half-way through a title is no reason)."""
        stripped = text.rstrip()
        return stripped[-1:] in (".", "!", "?") and not self.inside_phrase(stripped)


def _singular(word: str) -> str:
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _starts_sentence(written: str) -> bool:
    stripped = written.rstrip(" \"'(\u201c")
    return not stripped or stripped[-1] in ".!?:"


@lru_cache(maxsize=65536)
def _forms_and_prefixes(word: str, sentence_start: bool) -> tuple[frozenset[str], frozenset[str]]:
    forms = frozenset(word_forms(word) if sentence_start else {word, word.lower()})
    return forms, frozenset(f[:n] for f in forms for n in range(1, len(f) + 1))


def _word_starts(text: str, window: int) -> list[int]:
    """Positions in the last ``window`` characters of ``text`` where a word (or the text) starts, and the end."""
    first = max(0, len(text) - window)
    starts = [i for i in range(first, len(text)) if (i == 0 or not text[i - 1].isalnum()) and not text[i].isspace()]
    return starts + [len(text)]
