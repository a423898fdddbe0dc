"""Reasons: written by the LM, then checked against the catalog; an invented claim is replaced by a
plain reason built only from facts (shared genres with named history items, or the request)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterable

from ..config import PromptSettings
from ..data.catalog import Catalog, Item
from ..lm.prompt import ChatPrompt
from ..text import clip, short_title, words_of
from .facts import names_title
from .grounding import (
    PromptFacts,
    allowed_phrases,
    allowed_words,
    display_title,
    phrase_reason,
    prompt_values,
    sentence_rules,
)
from .prompts import chat, render, shorten

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
        found = []
        if len(reason.split()) < 3:
            found.append("too short")
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
        for title, item_id in self._titles.items():
            if item_id not in allowed_ids and _mentions(named, title):
                found.append(f"names {title!r}, not in the history")
        if _FIRST_PERSON.search(_without_titles(reason, [item, *history])):
            found.append("speaks in the first person")
        for name in unsupported_names(reason, [item.title, *(h.title for h in history)], self._genre_words):
            found.append(f"uses the name {name!r}, which is not a title it may name")
        if _LIKED.search(reason):
            # "..., which you liked." is only true of a history item the reason names, never of the item itself
            if _mentions(lower, short_title(item.title)):
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
            return f"Shares {_join(shared[:3])} with {past.title}, which you liked."
    if query:
        what = _join(list(item.genres[:3])) if item.genres else "One of the closest catalog matches"
        return f"{what}, close to your request."
    if similar is not None:
        return f"Its description is close to {similar.title}, which you liked."
    if not history:  # nothing liked to point to: claim nothing about the user
        what = _join(list(item.genres[:3])) if item.genres else "An item"
        return f"{what}, one of the closest catalog matches."
    if item.genres:
        return f"{_join(list(item.genres[:3]))}, close in content to your recent items."
    return "Its description is close to items you liked recently."


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def build_reason_prompt(item: Item, history: list[Item], query: str | None, settings: PromptSettings) -> ChatPrompt:
    return chat("reason", settings.prompts_dir, response_prefix="Reason:",
                history=[shorten(h.title, settings.title_chars) for h in history], query=query or "",
                item=_item_line(item, settings.title_chars))


#: Worked examples of the grounded prompt, one per kind of facts (attributes shared with a liked item; only
#: title words shared; a request and no history). Invented titles: under constrained decoding not one of their
#: content words can be copied (they are in no real reason's facts); they show the form, not the content.
_FILM, _FILM_LIKED = (Item("example-1", "Night Harbor (1988)", ("Crime", "Drama"), 1988),
                      Item("example-2", "Blue Coast (1985)", ("Crime", "Thriller"), 1985))
_PRODUCT, _PRODUCT_LIKED = Item("example-3", "Luna Rose Hand Cream 50 ml"), Item("example-4", "Luna Rose Body Lotion")
EXAMPLES = {
    "attributes": PromptFacts(_FILM, _FILM_LIKED, ("Crime",), "similar"),
    "title-words": PromptFacts(_PRODUCT, _PRODUCT_LIKED, (), "similar"),  # "Luna Rose" is in the name already
    "request": PromptFacts(_FILM, None, (), "", "a crime story", ("crime",)),
    "request-title-words": PromptFacts(_PRODUCT, None, (), "", "a hand cream", ("hand", "cream")),
}


def example_for(facts: PromptFacts) -> PromptFacts:
    """The worked example shown with ``facts``: it depends only on whether the catalog has attributes and the
    user a history, so one user's prompts still share their prefix."""
    titles_only = not facts.item.genres
    if facts.related is None and facts.query:
        return EXAMPLES["request-title-words" if titles_only else "request"]
    return EXAMPLES["title-words" if titles_only else "attributes"]


def build_grounded_prompt(facts: PromptFacts, settings: PromptSettings, constrained: bool = False,
                          example: bool = True, example_seed: int | None = None) -> ChatPrompt:
    """The facts as a short list (``prompts/reason_grounded.jinja``). With ``constrained`` the prompt carries
    ``meta["vocabulary"]``: the words the backend lets the model write. With ``example`` one worked example
    (:func:`example_for` and its fact-built reason) comes first, as an earlier turn of the chat; its pattern is
    the first, or the one ``example_seed`` picks (one seed per user keeps a user's prompts' prefix shared, and
    users see different phrasings: the model follows the example's)."""
    prompt = chat("reason_grounded", settings.prompts_dir, response_prefix="Reason:",
                  **prompt_values(facts, settings.title_chars))
    if example:
        worked = example_for(facts)
        shown = render("reason_grounded", settings.prompts_dir, **prompt_values(worked, settings.title_chars))
        rng = random.Random(example_seed) if example_seed is not None else None
        answer = "Reason: " + phrase_reason(worked, rng, title_chars=settings.title_chars)
        prompt.messages[1:1] = [{"role": "user", "content": shown}, {"role": "assistant", "content": answer}]
    if constrained:
        prompt.meta["vocabulary"] = allowed_words(facts, settings.title_chars)
        prompt.meta["phrases"] = allowed_phrases(facts, settings.title_chars)
        prompt.meta["rules"] = sentence_rules(facts, settings.title_chars).to_meta()
    return prompt


def _item_line(item: Item, title_chars: int) -> str:
    text = shorten(item.title, title_chars)
    if item.genres:
        text += f" ({', '.join(item.genres)})"
    return text
