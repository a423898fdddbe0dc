"""The facts a reason may use, as recgen holds them, and the words they support.

The facts are the recommended item's title, year, genres/categories and description, the history items'
titles and attributes and the user's request; :data:`GENERIC_WORDS` are the few words any recommendation needs
and that claim nothing checkable. Words are compared as Snowball stems, so "comedies" matches "Comedy". What
makes a reason grounded in them is :mod:`.grounded` (one definition, for the served check and the measure).
The same object gives a prompt the facts as short lines and tells constrained decoding which content words
are allowed.

Everything here runs in time linear in its input: reasons and requests come from a model or a client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from ..data.catalog import Catalog, Item
from ..text import MAX_TEXT_CHARS, STOPWORDS, claim_words, clip, short_title, snowball_stem, tokens

#: Generic recommendation words: the act of recommending, the link to the user ("you liked", "fans of", "the
#: user"; what is claimed about the user is checked through the other words and the fact check), the
#: kind of thing recommended, and the words of recgen's own template reasons ("shares ... with ...", "close
#: to your request", "closest catalog matches"). None of them says anything about an item that could be false.
#: Left out on purpose: evaluative words ("classic", "acclaimed", "beloved", "hilarious", "best"), which are
#: exactly the invented claims the issue shows ("A classic adventure film with a dark and gritty tone"), and
#: "description", which is a fact only when the item has one (then it comes from the facts).
GENERIC_WORDS = frozenset("""
recommend recommended recommendation suggest suggested pick choice option try match matches fit
because since similar similarly like likes liked alike another same also both more close closer closest
share shares shared sharing common together
user users viewer viewers customer customers shopper shoppers
enjoy enjoyed enjoys enjoying love loved loves fan fans appreciate appreciated taste tastes interest interested
watch watched watching buy bought purchase purchased pick picked
history recent recently earlier previous previously past request requested ask asked asks want wants wanted
looking look search
film films movie movies product products item items title titles one ones genre genres kind type
content catalog closest
""".split())

#: Spelling variants of genre names that stemming does not merge ("Sci-Fi" → "science fiction", "Romance" →
#: "romantic", "Children's" → "kids"), keyed by the stem of the genre word. Short on purpose: a synonym
#: here is a claim the checker lets through.
GENRE_VARIANTS = {
    "sci": ("science", "fiction", "scifi"),
    "fi": ("science", "fiction", "scifi"),
    "romanc": ("romantic",),
    "children": ("child", "kid", "kids", "family"),
    "comedi": ("comedic",),
    "thriller": ("thrilling",),
    "anim": ("cartoon",),
    "music": ("musical",),
    "musical": ("music",),
    "noir": ("noir",),
    "documentari": ("documentary",),
    "mysteri": ("mysterious",),
    "war": ("wartime",),
    "crime": ("criminal",),
    "fantasi": ("fantastical",),
}

_DECADE = re.compile(r"^(?:1[89]|20)?\d0s$")


_GENERIC_STEMS = frozenset(snowball_stem(w) for w in GENERIC_WORDS)


def _fact_stems(text: str) -> set[str]:
    stems = set()
    for word in claim_words(text):
        s = snowball_stem(word)
        stems.add(s)
        stems.update(snowball_stem(v) for v in GENRE_VARIANTS.get(s, ()))
    return stems


def _year_words(year: int) -> set[str]:
    """A year supports itself and its decade written as "1990s" or "90s"."""
    decade = year - year % 10
    return {str(year), f"{decade}s", f"{decade % 100:02d}s"}


def item_fact_words(item: Item) -> set[str]:
    """The stems an item's own facts support: title, year (and decade), genres, description."""
    stems = _fact_stems(item.title) | _fact_stems(" ".join(item.genres)) | _fact_stems(item.description)
    years = {item.year} if item.year else set()
    years |= {int(y) for y in re.findall(r"\((1[89]\d\d|20\d\d)\)", item.title)}
    for year in years:
        stems |= _year_words(year)
    if item.description:
        stems.add(snowball_stem("description"))
    return stems


#: Longest name a reason writes for an item (a product title's brand and product words fit; a whole product
#: title of 60-200 characters does not fit a 32-token sentence, and the 135M model loses the sentence around it).
NAME_CHARS = 40
#: Longest main part of a title a reason writes whole rather than cut (a film's or game's full name with its
#: subtitle fits; a product title run on without separators does not and is cut to :data:`NAME_CHARS`).
MAX_NAME_CHARS = 64
#: A main part shorter than this is a brand, not a name ("L'Oreal Paris: Superior Preference Hair Color").
MIN_HEAD_CHARS = 16
#: A number followed by one of these is a size, not part of a name ("Go 360 Clean" keeps its 360).
_UNIT = re.compile(r"^\S*\d[\d.,/]*\s*-?\s*(?:fl|fluid|oz|ounces?|ml|g|grams?|lbs?|pounds?|count|ct|packs?|pcs|"
                   r"pieces?|pairs?|inch(?:es)?|in|mm|cm|x|sheets?|capsules?|tablets?|liters?|l)\b", re.IGNORECASE)
_NAME_SEPARATORS = (":", " - ", " \u2013 ", " | ", " (", ",", "|", " / ")
_NAME_TRAILING = re.compile(r"[\s,;:&/|\-\u2013]+$")


def title_head(title: str) -> str:
    """The main part of a long title, the way shops and people shorten it: before the first separator
    (``:`` `` - `` ``|`` ``(`` ``,``) when at least two words come before it, and before the first word that
    starts with a digit after two words (a size: "Tigi Masterpiece Shine Hairspray 9.5 oz" → "Tigi Masterpiece
    Shine Hairspray"). A title without such parts is returned whole (trailing "(1995)" and spaces removed)."""
    text = " ".join(clip(title, 4 * MAX_TEXT_CHARS // 10).split())
    text = re.sub(r"\s*\((1[89]\d\d|20\d\d)\)$", "", text)
    for sep in _NAME_SEPARATORS:
        head = text.split(sep, 1)[0].strip()
        if head != text and len(head.split()) >= 2 and len(head) >= MIN_HEAD_CHARS:
            text = head
    words = text.split()
    for n, word in enumerate(words[2:], 2):
        size = word[:1].isdigit() and _UNIT.search(" ".join(words[n:n + 2]))
        if (size or word[:1] in "#*") and len(" ".join(words[:n])) >= MIN_HEAD_CHARS:
            text = " ".join(words[:n])
            break
    return _NAME_TRAILING.sub("", text)


def short_name(title: str, limit: int = NAME_CHARS) -> str:
    """How a reason names an item: the title itself when it fits ``limit`` characters (a year aside), else
    its :func:`title_head` (main part, without the size) whole when that fits :data:`MAX_NAME_CHARS`, so a name
    is never cut inside ("Scooby-Doo and the Haunting of Castle" was a hand-graded failure). Only a main part
    longer than that (a product title with no separator) is cut, to whole words within ``limit`` and never
    ending on a function word ("Argan Oil For Hair Treatment and" → "Argan Oil For Hair Treatment").
    Recognised as the item's name by :func:`names_title`, so the checker and the measure accept it."""
    text = " ".join(title.split())
    year = re.search(r"\s*\((1[89]\d\d|20\d\d)\)$", text)
    bare = text[: year.start()] if year else text
    if len(bare) <= limit:
        return bare
    head = _whole_phrase(title_head(bare), bare)
    if len(head) <= max(limit, MAX_NAME_CHARS):
        return head
    words = head.split()
    kept: list[str] = []
    for word in words:
        if len(" ".join([*kept, word])) > limit:
            break
        kept.append(word)
    kept = kept or [words[0][:limit]]
    while len(kept) > 1 and (kept[-1].lower().strip(",.;:") in STOPWORDS or not any(c.isalnum() for c in kept[-1])):
        kept.pop()
    return _NAME_TRAILING.sub("", " ".join(kept))


#: Words that start a phrase a comma may split ("Cream for Dry, Sensitive Skin").
_PHRASE_STARTS = frozenset("for with and of in to or on".split())


def _whole_phrase(head: str, title: str) -> str:
    """``head`` without a phrase the title's comma cut in two: "Cetaphil Moisturizing Cream for Dry, Sensitive
    Skin" → "Cetaphil Moisturizing Cream", not "... Cream for Dry" (a shop would not print that). Only when the
    title goes on with a word after the comma (not a size: "Shampoo for Men, 8 oz" keeps "for Men")."""
    rest = title[len(head):] if title.startswith(head) else ""
    words = head.split()
    if not re.match(r",\s*[A-Za-z]", rest) or len(words) < 4:
        return head
    for n in (len(words) - 2, len(words) - 1):
        if words[n].lower() in _PHRASE_STARTS and n >= 2 and len(" ".join(words[:n])) >= MIN_HEAD_CHARS:
            return " ".join(words[:n])
    return head


@lru_cache(maxsize=65536)
def title_variants(title: str) -> frozenset[str]:
    """How a title may be written in a sentence, normalised (lower case, punctuation as spaces): the short title
    ("the usual suspects"), without its leading article, its main part before ':', ' - ', '(' or ','
    when that part is at least two words, and its :func:`short_name` (when at least two words). Variants shorter than four letters, or one stopword ("It"), are dropped
    (they match anywhere); "In & Out" is kept."""
    base = short_title(title)
    candidates = {base}
    for article in ("the ", "a ", "an "):
        if base.startswith(article):
            candidates.add(base[len(article):])
    for sep in (":", " - ", "(", ","):
        head = base.split(sep, 1)[0]
        if head != base and len(head.split()) >= 2:
            candidates.add(head)
    name = short_name(title).lower()
    if len(name.split()) >= 2:
        candidates.add(name)  # the name a reason writes for a long title (one word would match anywhere)
    out = set()
    for text in candidates:
        norm = _normalise(text)
        words = norm.split()
        if len(norm.replace(" ", "")) >= 4 and (len(words) >= 2 or words[0] not in STOPWORDS):
            out.add(norm)
    return frozenset(out)


#: A sentence ending on one of these words was cut off ("... with a."): the constraint never ends one there,
#: and the reasons measure calls such a sentence truncated.
DANGLING = frozenset("""
a an the and or but nor with of to for in on at by from as like than that which who whose its their your his
her our is are was were be been has have had will would can could this these those into about
""".split())


def words_outside_titles(text: str, titles: Sequence[str]) -> list[str | None]:
    """The words of ``text`` with every mention of one of ``titles`` replaced by a break (``None``): a title
    may repeat a word ("Dotting Pen Set ... Dotting") without the reason repeating itself."""
    words: list[str | None] = list(tokens(text))
    for title in titles:
        for variant in sorted(title_variants(title), key=len, reverse=True):
            parts = variant.split()
            n = len(parts)
            for i in range(len(words) - n + 1):
                if words[i:i + n] == parts:
                    words[i:i + n] = [None] * n
    return words


def _normalise(text: str) -> str:
    return " ".join(tokens(text))


def names_title(text: str, title: str) -> bool:
    """Whether ``text`` names ``title`` (case, articles, a trailing year and punctuation ignored)."""
    padded = f" {_normalise(text)} "
    return any(f" {variant} " in padded for variant in title_variants(title))


@dataclass(frozen=True)
class RelatedItem:
    """A history item related to the recommended one, and why: the attributes they share, or the similarity."""

    item: Item
    shared: tuple[str, ...] = ()
    similarity: float | None = None


@dataclass(frozen=True)
class ReasonFacts:
    """What one reason for ``item`` may say, built by :meth:`for_item`.

    ``words`` is the vocabulary (stems) a reason may draw on at all: the item's facts, the request, every history
    item's title and attributes, and :data:`GENERIC_WORDS`. :meth:`unsupported` is stricter: an attribute of a
    history item (its genres, year, description) backs a word only when the text names that history item, so
    "a family comedy" about Mrs. Doubtfire is not backed by Toy Story being a Children's film, while
    "like the animated Toy Story" is."""

    item: Item
    history: tuple[Item, ...]
    query: str | None
    fact_words: frozenset[str]
    words: frozenset[str]
    base_words: frozenset[str] = frozenset()
    history_words: tuple[frozenset[str], ...] = ()
    catalog: Catalog | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_item(cls, catalog: Catalog, item: Item | str, history_items: Sequence[Item | str],
                 query: str | None = None) -> "ReasonFacts":
        """Facts for a reason about ``item`` given the history recgen shows (items or ids) and the request."""
        item = catalog.get(item) if isinstance(item, str) else item
        history = tuple(catalog.get(h) if isinstance(h, str) else h for h in history_items)
        query = (query or "").strip() or None
        base = item_fact_words(item)
        for past in history:
            base |= _fact_stems(past.title)
        if query:
            base |= _fact_stems(query)
        per_history = tuple(frozenset(item_fact_words(past)) for past in history)
        facts = base.union(*per_history)
        return cls(item, history, query, frozenset(facts), frozenset(facts | _GENERIC_STEMS),
                   frozenset(base | _GENERIC_STEMS), per_history, catalog)

    def supports(self, word: str) -> bool:
        """Whether a word (any inflection) is in the vocabulary: the facts or the generic list (stopwords always)."""
        return _in(word, self.words)

    def unsupported(self, text: str) -> list[str]:
        """The content words of ``text`` the facts do not back, as written, in order (each once). History items'
        attributes back a word only when ``text`` names that history item."""
        allowed = set(self.base_words)
        for past, words in zip(self.history, self.history_words):
            if names_title(text, past.title):
                allowed |= words
        return list(dict.fromkeys(w for w in claim_words(text) if not _in(w, allowed)))

    def named_history(self, text: str) -> list[Item]:
        """History items ``text`` names by title."""
        return [h for h in self.history if names_title(text, h.title)]

    def names_request(self, text: str) -> bool:
        """Whether ``text`` ties the item to the request: it shares a non-generic content word with it."""
        if not self.query:
            return False
        asked = {snowball_stem(w) for w in claim_words(self.query)} - _GENERIC_STEMS
        return any(snowball_stem(w) in asked for w in claim_words(text))

    def related_history(self, embeddings: np.ndarray | None = None, threshold: float | None = None,
                        among: Iterable[Item] | None = None) -> list[RelatedItem]:
        """History items (or ``among``) related to the item: sharing a genre/category, or, with ``embeddings``
        (rows = catalog rows) and a ``threshold``, a cosine similarity at or above it."""
        out = []
        mine = {g.lower() for g in self.item.genres}
        for past in among if among is not None else self.history:
            shared = tuple(g for g in past.genres if g.lower() in mine)
            sim = None
            if embeddings is not None and self.catalog is not None:
                a = embeddings[self.catalog.index_of(self.item.item_id)]
                b = embeddings[self.catalog.index_of(past.item_id)]
                sim = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
            if shared or (sim is not None and threshold is not None and sim >= threshold):
                out.append(RelatedItem(past, shared, sim))
        return out

    def lines(self) -> list[str]:
        """The facts as short lines (for a prompt or an audit file)."""
        out = [fact_line("Recommended", self.item)]
        out += [fact_line("Liked", past) for past in self.history]
        if self.query:
            out.append(f"Request: {self.query}")
        return out


def _in(word: str, stems) -> bool:
    word = word.lower()
    if word in STOPWORDS:
        return True
    if _DECADE.match(word) or word.isdigit():
        return word in stems
    return snowball_stem(word) in stems


def fact_line(label: str, item: Item) -> str:
    """One item as a fact line: ``"Liked: Toy Story (1995) [Animation, Comedy] — <description>"``."""
    text = f"{label}: {item.title}"
    if item.year and str(item.year) not in item.title:
        text += f" ({item.year})"
    if item.genres:
        text += f" [{', '.join(item.genres)}]"
    if item.description:
        text += f" — {clip(item.description, 200)}"
    return text


#: Quantile of random-pair cosine similarity at or above which two items count as related (the reasons measure)
#: and a reason may call them close or similar (the reasoner): one definition for both.
RELATED_QUANTILE = 0.95


def similarity_threshold(embeddings: np.ndarray, quantile: float = RELATED_QUANTILE, pairs: int = 20000,
                         seed: int = 0) -> float:
    """The cosine similarity above which two items count as related: the ``quantile`` of the similarity of
    random item pairs in this catalog (seeded), i.e. "more alike than 95% of random pairs". Chosen from the
    catalog itself, so no dataset needs a hand-set number."""
    n = len(embeddings)
    if n < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, size=pairs)
    b = rng.integers(0, n, size=pairs)
    keep = a != b
    x, y = embeddings[a[keep]], embeddings[b[keep]]
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    sims = np.einsum("ij,ij->i", x, y) / np.maximum(norms, 1e-12)
    return float(np.quantile(sims, quantile))
