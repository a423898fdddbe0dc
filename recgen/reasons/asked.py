"""What of the user's request an item meets, said in the reason ("Racing in its title, as you asked; …"), and
what of the request nothing used (:func:`unused_words`, reported back to the user, never silently dropped).

The request is read by the retriever's own reader (:class:`recgen.retrieval.request_constraints.RequestReader`:
genres, years, title words), and the request's other content words count where the item's own facts hold them
(its genres, title or description). Only what the item meets is said, in words its facts back: a racing wheel
is "Racing in its title", never "a racing game". Many ways of saying it; each reason of a list takes the one
whose word pairs the list has said least (:func:`with_requests`), so ten reasons do not say the request alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..data.catalog import Item
from ..retrieval.request_constraints import RequestConstraints
from ..retrieval.request_words import genre_phrases
from ..text import WORD, join_names, plural_stem, snowball_stem, title_terms, wanted_words
from .facts import item_fact_words
from .grounding import TEXT_WORD, content_words_in_order
from .variety import bigrams, fewest_repeats

#: How the request clause joins the rest of the reason (``{what}`` is capitalised where it starts the sentence;
#: ``{rest}`` is the reason without its full stop, lower-cased at its start). Sixteen, in different connecting
#: words ("as you asked", "for your search", ...), so a list of ten says each at most once: the clause is
#: in every reason of a request list and its word pairs recurred (Beauty distinct-2 per list 0.30 with four forms,
#: 0.494 with eight). Each says only that the request asked for ``{what}``: generic words
#: (:data:`.facts.GENERIC_WORDS`) and stop words.
FORMS = ("{What}, as you asked; {rest}.", "{Rest}; {what}, as requested.",
         "{What}, which you asked for; {rest}.", "{Rest}, and {what}, which you asked for.",
         "As requested, {what}; {rest}.", "{Rest}; {what}, per your request.",
         "{What} for your search; {rest}.", "{Rest}; your request: {what}.",
         "{What}, from your search; {rest}.", "{Rest}; {what}, as you wanted.",
         "Per your search: {what}; {rest}.", "{Rest}; it fits what you asked for: {what}.",
         "For your request, {what}; {rest}.", "{Rest}; {what}, on request.",
         "{What}, since you asked; {rest}.", "{Rest}; {what}, fitting your search.")
#: The clause alone (no other reason to give).
ALONE = ("{What}, as you asked.", "{What}, which you asked for.", "As you asked: {what}.", "As requested: {what}.",
         "{What}, for your search.", "Per your request: {what}.", "{What}, as you wanted.",
         "{What}: it fits what you wanted.")
#: How request words found in the item's title are said (cycled apart from the forms).
IN_TITLE = ("{words} in its title", "{words} in the title", "a title with {words}", "a title that has {words}",
            "{words} in the item's title")


@dataclass(frozen=True)
class Asked:
    """The request facts one item meets: genres asked for that it has, its year when the request bounds the
    year, request words in its title, and other request words its genres or description hold."""

    genres: tuple[str, ...] = ()
    year: int | None = None
    title_words: tuple[str, ...] = ()
    other_words: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.genres or self.year or self.title_words or self.other_words)

    def what(self, position: int = 0) -> str:
        """``"Comedy and Romance from 1997"``, ``"Racing in its title"``: the facts as a phrase (the title
        words in the :data:`IN_TITLE` form ``position`` picks)."""
        parts = []
        if self.genres:
            parts.append(join_names(list(self.genres)))
        if self.title_words:
            form = IN_TITLE[position % len(IN_TITLE)]
            parts.append(form.format(words=join_names(list(self.title_words))))
        if self.other_words:
            parts.append(join_names(list(self.other_words)))
        text = ", ".join(parts)
        if self.year:
            text = f"{text} from {self.year}" if text else f"from {self.year}"
        return text


def asked_of(item: Item, query: str | None, constraints: RequestConstraints | None) -> Asked:
    """What of ``query`` (read as ``constraints``) ``item`` meets."""
    if not query or not query.strip():
        return Asked()
    genres: tuple[str, ...] = ()
    year = None
    terms: set[str] = set()
    if constraints is not None:
        genres = tuple(g for g in item.genres if g in constraints.include_genres)
        bounded = constraints.min_year is not None or constraints.max_year is not None
        if bounded and item.year is not None and (constraints.min_year or item.year) <= item.year \
                <= (constraints.max_year or item.year):
            year = item.year  # a 1994 film filling a "70s" list is not "from 1994, as you asked" (v4 hand grades)
        terms = set(constraints.include_terms)
    item_terms = title_terms(item.title)
    in_genres = {snowball_stem(w.lower()) for g in genres for w in TEXT_WORD.findall(g)}
    title_words = []
    for word in TEXT_WORD.findall(item.title):  # the written form of each request word in the title
        low = plural_stem(word.lower().removesuffix("'s"))  # "Dr. Bronner's" meets "a bronner"
        if (low in terms or low in {plural_stem(w) for w in wanted_words(query)}) and low in item_terms \
                and low not in {plural_stem(w.lower().removesuffix("'s")) for w in title_words} \
                and snowball_stem(word.lower()) not in in_genres:  # "Action, Action in its title" says it twice
            title_words.append(word)
    said = {snowball_stem(w.lower()) for text in (*genres, *title_words) for w in TEXT_WORD.findall(text)}
    own = item_fact_words(Item(item.item_id, "", item.genres, None, item.description))  # genres, description
    other = [w.lower() for w in content_words_in_order(query)
             if snowball_stem(w.lower()) not in said and snowball_stem(w.lower()) in own
             and w.lower() in set(wanted_words(query))]
    other = [w for w in other if not any(snowball_stem(w) == snowball_stem(g.lower()) for g in item.genres)]
    return Asked(genres, year, tuple(title_words[:3]), tuple(other[:3]))


def unused_words(query: str | None, constraints: RequestConstraints | None, items: Sequence[Item]) -> tuple[str, ...]:
    """The request's content words that nothing used, in their order (each once): reported to the user.

    A word counts as *used* when a filter read it or a shown item's facts hold it:

    * filters (the retriever's :class:`~recgen.retrieval.request_constraints.RequestReader`): a year or decade
      phrase, a negated phrase a filter rules out ("not horror": both words), a genre phrase or alias of a
      genre asked for or ruled out ("funny" → Comedy), a title word the filter requires ("racing");
    * text match: the word (plural ``s`` aside) is in the title of an item shown, or its Snowball stem is among
      that item's genres, title or description words (what :func:`asked_of` says an item meets).

    Everything else was read only by the sentence embedding, which cannot say whether it found what the word
    means ("a heist movie with a clever twist" on a catalog of titles and genres: heist, clever, twist). Filler,
    stop words and numbers are no content; without a request (or one that could not be read) nothing is
    reported."""
    if not query or not query.strip() or constraints is None or not constraints.text:
        return ()
    filtered = constraints.include_genres | constraints.exclude_genres
    read = {w for phrase in genre_phrases(filtered) for w in WORD.findall(phrase)} if filtered else set()
    read |= set(constraints.include_terms)
    facts = [(title_terms(item.title), item_fact_words(item)) for item in items]
    out: list[str] = []
    for word in wanted_words(constraints.text):
        if word in read or plural_stem(word) in read or word in out:
            continue
        if any(plural_stem(word) in terms or snowball_stem(word) in stems for terms, stems in facts):
            continue
        out.append(word)
    return tuple(out)


def without_asked(sentences: Sequence[str] | None, asked: Asked) -> Sequence[str] | None:
    """The sentences that do not repeat a fact the request clause will state ("If you liked Get Shorty, this is
    also Drama; Drama from 1956, as you asked" says Drama twice), or all of them when each one would."""
    if not sentences or not asked:
        return sentences
    facts = {snowball_stem(w.lower()) for text in (*asked.genres, *asked.title_words, *asked.other_words)
             for w in TEXT_WORD.findall(text)}
    kept = [s for s in sentences if not facts & {snowball_stem(w.lower()) for w in TEXT_WORD.findall(s)}]
    return type(sentences)(kept) if kept else sentences


def with_request(reason: str | None, asked: Asked, position: int) -> str:
    """``reason`` with the request clause joined in the form ``position`` picks; ``reason`` None or empty: the
    clause alone. Without request facts, ``reason`` unchanged."""
    forms = request_forms(reason, asked, position)
    return forms[0] if forms else reason or ""


def with_requests(reasons: Sequence[str | None], asked: Sequence[Asked]) -> list[str]:
    """One list's reasons, each with its request clause (:func:`request_forms`) worded so that it repeats the
    fewest word pairs the list has said before it (:func:`.variety.fewest_repeats`; ties: the form its position
    picks), so the clause said in every reason of a request list does not say the same words ten times
    (Beauty, one title word asked for: distinct-2 per list 0.4945 with forms by position). Deterministic."""
    out: list[str] = []
    pairs: set[tuple[str, str]] = set()
    for n, (reason, said) in enumerate(zip(reasons, asked)):
        forms = request_forms(reason, said, n)
        text = fewest_repeats(forms, pairs) if forms else reason or ""
        pairs |= bigrams(text)
        out.append(text)
    return out


def request_forms(reason: str | None, asked: Asked, position: int = 0) -> list[str]:
    """Every way to say ``reason`` with the request clause (each form of :data:`FORMS`, or :data:`ALONE` when
    ``reason`` is None or empty, with each way of :data:`IN_TITLE` to say title words), starting with the one
    ``position`` picks; empty without request facts. The reasoner serves the one whose word pairs the list has
    said least (:func:`.variety.fewest_repeats`)."""
    if not asked:
        return []
    rest = (reason or "").rstrip().rstrip(".!?")
    forms = FORMS if rest else ALONE
    ways = len(IN_TITLE) if asked.title_words else 1
    out = []
    for f in range(len(forms)):
        form = forms[(position + f) % len(forms)]
        for t in range(ways):
            what = asked.what(position + t)
            out.append(form.format(What=_cap(what), what=what, Rest=_cap(rest), rest=_lower_start(rest)))
    return list(dict.fromkeys(out))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


#: Words a reason's sentence starts with that are no name: lower-cased when the sentence follows the clause.
_OPENING_WORDS = frozenset("because recommended if like close similar much just a an another shares fans also "
                           "picked suggested liked one its since you with your".split())


def _lower_start(text: str) -> str:
    first = text.split(" ", 1)[0].lower().strip(",")
    return text[:1].lower() + text[1:] if first in _OPENING_WORDS else text
