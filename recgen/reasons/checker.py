"""The served fact check: a reason written by the LM is checked against the catalog, and one with an invented
claim is replaced by a plain reason built only from facts (shared genres with named history items, or the
request). Which of its findings are claims, and so what "grounded" means, is :mod:`.grounded`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..data.catalog import Catalog, Item
from ..lm.templates import shorten
from ..text import clip, join_names, short_title, words_of
from .facts import names_title
from .grounded import TOO_SHORT
from .grounding import display_title

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_LIKED = re.compile(r"\b(you|user)\b[^.]*\b(liked|loved|watched|enjoyed|bought)\b|favou?rite of", re.IGNORECASE)
_FIRST_PERSON = re.compile(r"\b(I|me|my|mine|we|our)\b")


def _genre_pattern(genre: str) -> re.Pattern:
    stem = genre.lower().rstrip("s")
    if len(stem) > 5:
        stem = stem[:5]
    return re.compile(r"\b" + re.escape(stem) + r"[\w'-]*", re.IGNORECASE)


_CAPITALISED = re.compile(r"(?<![\w'\u2019])[A-Z][\w'\u2019&-]*")  # a word's start ("747S" is no name "S")
_QUOTED = re.compile(r'["\u201c]([^"\u201d]{2,})["\u201d]')


def unsupported_names(reason: str, allowed_titles: list[str], genre_words: Iterable[str] = ()) -> list[str]:
    """Names a reason uses that are not the item's or a history item's title, nor a genre: quoted text and
    capitalised words inside a sentence ("like The Matrix", "a Disney classic"). Such a reason is replaced."""
    allowed = set(genre_words) | {"i"}
    for title in allowed_titles:
        allowed |= words_of(title)
    titles = {short_title(t) for t in allowed_titles} | {t.lower() for t in allowed_titles}
    found = []
    for quoted in _QUOTED.findall(reason):
        q = quoted.strip(" .,!?")
        if q.lower() not in titles and short_title(q) not in titles:
            found.append(quoted)  # only a title may be quoted, never the user's words
    for match in _CAPITALISED.finditer(reason):
        before = reason[: match.start()].rstrip()
        if not before or before[-1] in ".!?:;\"\u201c(\u2014-":
            continue  # a sentence starts here
        words = words_of(match.group(0))
        if words and not words <= allowed:
            found.append(match.group(0))
    return found


@dataclass
class ReasonChecker:
    """Finds claims a reason cannot back: other catalog titles, genres the item lacks, wrong years."""

    catalog: Catalog

    def __post_init__(self) -> None:
        self._titles = {}
        for item in self.catalog:
            short = short_title(item.title)
            if len(short) >= 6 and not short.startswith("item "):
                self._titles.setdefault(short, item.item_id)
        genres = sorted({g for item in self.catalog for g in item.genres})
        self._genres = {g: _genre_pattern(g) for g in genres}
        self._genre_words = {w for g in genres for w in words_of(g)}

    def problems(self, reason: str, item: Item, history: list[Item]) -> list[str]:
        """Everything wrong with ``reason``: invented claims and form (:mod:`.grounded` says which is which)."""
        found = []
        if len(reason.split()) < 3:
            found.append(TOO_SHORT)
        lower = reason.lower()
        allowed_titles = {short_title(i.title) for i in [item, *history]}
        allowed_titles |= {display_title(i.title).rstrip("…").lower() for i in [item, *history]}
        for quoted in re.findall(r'["\u201c]([^"\u201d]{2,})["\u201d]', reason):
            if not any(_mentions(quoted.lower(), t) or _mentions(t, quoted.lower()) for t in allowed_titles):
                found.append(f"quotes {quoted!r}, not a title it may name")
        allowed_ids = {item.item_id} | {h.item_id for h in history}
        named = lower
        for title in sorted(allowed_titles, key=len, reverse=True):
            named = named.replace(title, " ")  # "Jurassic Park" inside "The Lost World: Jurassic Park" is no other title
        own = item.title.lower()
        for title, item_id in self._titles.items():
            # another item's title that is also words of this item's own title ("Moroccanoil" for a Moroccanoil
            # oil, named by a request clause) says nothing of the other item
            if item_id not in allowed_ids and _mentions(named, title) and not _mentions(own, title):
                found.append(f"names {title!r}, not in the history")
        if _FIRST_PERSON.search(_without_titles(reason, [item, *history])):
            found.append("speaks in the first person")
        for name in unsupported_names(reason, [item.title, *(h.title for h in history)], self._genre_words):
            found.append(f"uses the name {name!r}, which is not a title it may name")
        if _LIKED.search(reason):
            # "..., which you liked." is only true of a history item the reason names, never of the item itself:
            # looked for in the clauses that say "liked", history titles blanked ("Because you liked <brand> lashes;
            # <brand's word> in its title, as you asked" names the item only in the request's clause)
            liked = " ; ".join(c for c in _without_titles(reason, history).split(";") if _LIKED.search(c))
            if _mentions(liked.lower(), short_title(item.title)):
                found.append("says the user already liked the recommended item")
            if not history:
                found.append("says the user liked something, but there is no history (a request only)")
            elif not any(_mentions(lower, short_title(h.title)) or _mentions(lower, h.title.lower())
                         or names_title(reason, h.title) or _mentions(lower, display_title(h.title).rstrip("…").lower())
                         for h in history):
                found.append("says the user liked something without naming a history item")
        untitled = _without_titles(reason, [item, *history])  # "Star Wars" names a title, not the genre War
        for genre, pattern in self._genres.items():
            if genre not in item.genres and pattern.search(untitled):
                found.append(f"calls it {genre}, which it is not")
        years = {str(i.year) for i in [item, *history] if i.year}
        years |= {m for i in [item, *history] for m in _YEAR.findall(i.title)}
        for year in _YEAR.findall(reason):
            if year not in years:
                found.append(f"mentions year {year}")
        return found


def _without_titles(reason: str, items: list[Item]) -> str:
    """``reason`` with the titles of ``items`` (as written in prose, any case) blanked out."""
    for item in items:
        for name in sorted({item.title, short_title(item.title), display_title(item.title)}, key=len, reverse=True):
            if len(name) >= 4:
                reason = re.sub(re.escape(name), " ", reason, flags=re.IGNORECASE)
    return reason


def _mentions(text: str, title: str) -> bool:
    start = text.find(title)
    while start >= 0:
        end = start + len(title)
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        start = text.find(title, start + 1)
    return False


def clean_reason(text: str, max_chars: int = 240, titles: Iterable[str] = ()) -> str:
    """First sentence (or line) of the model's text, without list markers or quotes around it. The text is
    cut first: the sentence pattern below is quadratic on long text without a full stop. A full stop or
    "!" inside one of ``titles`` ("G.I. Jane", "Faster Pussycat! Kill! Kill!") does not end the sentence."""
    text = clip(text, 8 * max_chars).strip().strip('"').strip()
    text = re.sub(r"^(reason|because)\s*[:\-]\s*", "", text, flags=re.IGNORECASE)
    hidden = text
    for title in sorted({t for t in titles if re.search(r"[.!?]", t)}, key=len, reverse=True):
        hidden = hidden.replace(title, re.sub(r"[.!?]", "\x00", title))  # same length: positions stay valid
    match = re.search(r"(.+?[.!?])(\s|$)", hidden)
    if match:
        text = text[: match.end(1)]
    return shorten(text, max_chars)


def fallback_reason(item: Item, history: list[Item], query: str | None, similar: Item | None = None) -> str:
    """A reason made only of facts recgen holds, so it is true by construction."""
    for past in reversed(history):
        shared = [g for g in item.genres if g in set(past.genres)]
        if shared:
            return f"Shares {join_names(shared[:3])} with {past.title}, which you liked."
    if query:
        what = join_names(list(item.genres[:3])) if item.genres else "One of the closest catalog matches"
        return f"{what}, close to your request."
    if similar is not None:
        return f"Its description is close to {similar.title}, which you liked."
    if not history:  # nothing liked to point to: claim nothing about the user
        what = join_names(list(item.genres[:3])) if item.genres else "An item"
        return f"{what}, one of the closest catalog matches."
    if item.genres:
        return f"{join_names(list(item.genres[:3]))}, close in content to your recent items."
    return "Its description is close to items you liked recently."
