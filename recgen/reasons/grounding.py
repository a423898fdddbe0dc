"""What a reason is shown and may say, and sentences built only from it.

A prompt shows a subset of the facts (:mod:`.facts`; grounded as :mod:`.grounded` defines it): the item's
title, year and attributes, ONE related history item (picked by embedding similarity and item transitions)
with the attributes the two share, and the user's request. :func:`select_facts` picks them,
:func:`prompt_values` shows them to the LM as a short list, :func:`allowed_words` is the vocabulary the
constrained decoder may use, and :func:`phrase_reason` writes a true sentence from them in one of several
patterns (the fine-tuning targets and the fallback).
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass
from typing import Callable

from ..data.catalog import Item
from ..lm.constraint import SentenceRules, Vocabulary
from ..text import STOPWORDS, claim_words, clip, collapse_spaces, join_names, snowball_stem
from .facts import DANGLING, GENERIC_WORDS, NAME_CHARS, item_fact_words, short_name, title_head

#: Function words a reason may never use: it speaks about the item, never as "I" or "we".
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "we", "our", "ours", "ourselves", "us", "am"})
#: Shared attributes named in a prompt or reason (more reads as a list, not a sentence).
MAX_SHARED = 3
#: Longest title written in a prompt or reason (product titles' main parts: 90% are shorter on Beauty).
DISPLAY_TITLE_CHARS = 80
#: Request characters shown in a prompt (a request is untrusted text of any length).
MAX_QUERY_CHARS = 120
_ARTICLES = ("The", "A", "An", "Les", "La", "Il", "Das")
_MARKUP = re.compile(r"<[^>]{0,200}>")
_UNSAFE = re.compile(r"[<>{}|`\\\x00-\x1f\x7f]")
#: A word of a title or reason, with its apostrophe suffix ("Schindler's").
TEXT_WORD = re.compile(r"[A-Za-z0-9]+(?:'[a-z]+)?")


def safe_text(text: str, limit: int) -> str:
    """Untrusted catalog or request text as plain prompt data: HTML entities decoded, markup tags and
    template/special-token characters (``< > { } |``) removed, one line, at most ``limit`` characters."""
    text = html.unescape(clip(text, 8 * limit))
    text = _MARKUP.sub(" ", text)
    text = _UNSAFE.sub(" ", text)
    text = collapse_spaces(text)
    if len(text) > limit:
        cut = text[: limit - 1]
        if " " in cut[limit // 2:]:
            cut = cut[: cut.rfind(" ")]
        text = cut.rstrip(" ,;:-") + "…"
    return text


def display_title(title: str, limit: int = NAME_CHARS) -> str:
    """How a reason writes an item's name: ``"Usual Suspects, The (1995)"`` → ``"The Usual Suspects (1995)"``;
    a title longer than ``min(limit, NAME_CHARS)`` (a product title) → its :func:`.facts.short_name` (main part,
    without the size, whole words within the cap), which the checker and the measure recognise as the item."""
    limit = min(limit, NAME_CHARS)
    text = safe_text(title, 4 * DISPLAY_TITLE_CHARS).rstrip("…")
    year = ""
    match = re.search(r"\s*\((\d{4})\)$", text)
    if match:
        text, year = text[: match.start()], f" ({match.group(1)})"
    for article in _ARTICLES:
        if text.endswith(f", {article}"):
            text = f"{article} {text[: -len(article) - 2]}"
    if len(text) > limit:  # a product title, or a film title with a long subtitle
        text = short_name(text, limit)
    if not year and re.search(r"(?:^|\s)[^\s.]+\.$", text):
        # "... 8 oz." + the sentence's own full stop read "oz.."; not an initialism ("I.Q.") nor before a year
        text = text[:-1]
    return text + year


@dataclass(frozen=True)
class PromptFacts:
    """The facts one reason's prompt gives the model (what it is checked against is
    :class:`recgen.reasons.facts.ReasonFacts`). ``shared``: attributes the item and ``related`` have in common (genres,
    or title words for items that have only a title); ``link``: why ``related`` was picked."""

    item: Item
    related: Item | None = None
    shared: tuple[str, ...] = ()
    link: str = ""  # "similar", "transition" or ""
    query: str | None = None
    query_words: tuple[str, ...] = ()  # request words the item's own facts support

    @property
    def shares_genres(self) -> bool:
        return bool(self.related is not None and self.item.genres and self.related.genres)

    def attributes(self) -> tuple[str, ...]:
        return tuple(self.item.genres)


def shared_attributes(item: Item, other: Item) -> tuple[str, ...]:
    """Genres both have; for items without genres, the content words both titles' main parts use
    (:func:`.facts.title_head`: the brand and product words, not the size: "Ounce" and "Fluid" in "16.9 Fluid
    Ounce" say nothing about what the two items have in common), less those the other item's name already says
    ("Shares Mizani with Mizani Smooth Guard Serum" repeats itself)."""
    if item.genres and other.genres:
        return tuple(g for g in item.genres if g in set(other.genres))[:MAX_SHARED]
    mine = _written_title_words(title_head(item.title))
    theirs = {w.lower() for w in _written_title_words(title_head(other.title))}
    named = {w.lower() for w in TEXT_WORD.findall(display_title(other.title))}
    return tuple(w for w in mine if w.lower() in theirs and w.lower() not in named)[:MAX_SHARED]


def _written_title_words(title: str) -> list[str]:
    """Content words of a title in their written form, in order, without repeats or years."""
    seen, out = set(), []
    keep = set(claim_words(safe_text(title, 200)))
    for word in TEXT_WORD.findall(safe_text(title, 200)):
        low = word.lower().removesuffix("'s").replace("'", "")
        if low in keep and low not in seen and not low.isdigit() and len(low) > 2:
            seen.add(low)
            out.append(word)
    return out


#: Weight of the item transition (0-1, scaled to the history item's strongest) beside embedding cosine when
#: the related history item is picked: a tie-breaker only. On Amazon Beauty half the transition-picked items
#: were unrelated products (a cuticle pusher for a body jelly: one co-purchase makes a transition).
TRANSITION_WEIGHT = 0.1


#: Times a list names one liked item before a reason prefers another liked item as related to the item as it
#: (lists that name one title ten times read as one sentence: distinct-2 per list 0.28-0.40 on Beauty).
NAMED_PER_LIST = 1


def select_facts(item: Item, history: list[Item], query: str | None,
                 closeness: Callable[[Item, Item], tuple[float, float]] | None = None,
                 named: dict[str, int] | None = None,
                 related: Callable[[Item, Item], bool] | None = None) -> PromptFacts:
    """The related history item: one sharing a genre/category with ``item`` first, then one ``related(item,
    past)`` holds for (embedding cosine above the catalog's related threshold), then the closest by embedding
    similarity (item transitions break near-ties), from ``closeness(item, past)`` = (transition strength,
    embedding similarity); without ``closeness`` the most recent. An empty history gives facts of the item and
    the request only. Shared title words do not decide it: "Ounce", "Products" or "Hair" are shared by
    unrelated products. ``named`` (liked item id → reasons of this list naming it so far): within each of those
    tiers, one named fewer than :data:`NAMED_PER_LIST` times before comes first, so a list spreads over the
    liked items as close to each item as the one it named already (never trading a related liked item for an
    unrelated one: on Beauty, titles only, most lists named one liked item in 8 of 10 reasons)."""
    query = safe_text(query, MAX_QUERY_CHARS) if query and query.strip() else None
    supported = tuple(supported_query_words(item, query)) if query else ()
    own = " ".join(item.title.lower().split())
    past = [p for p in history if p.item_id != item.item_id and " ".join(p.title.lower().split()) != own]
    if not past:  # (a second listing of the same title is no other item: "Shares Horror with <itself>")
        return PromptFacts(item, query=query, query_words=supported)

    def key(n_past):
        n, p = n_past
        link = closeness(item, p) if closeness else (0.0, 0.0)
        genres = bool(item.genres and set(item.genres) & set(p.genres))
        tier = 2 if genres else 1 if related is not None and related(item, p) else 0
        used = (named or {}).get(p.item_id, 0) // NAMED_PER_LIST
        return (tier, -used, link[1] + TRANSITION_WEIGHT * link[0], n)

    best_n, best = max(enumerate(past), key=key)
    strength = closeness(item, best) if closeness else (0.0, 0.0)
    link = "transition" if strength[0] > 0 else "similar"
    return PromptFacts(item, best, shared_attributes(item, best), link, query, supported)


def supported_query_words(item: Item, query: str) -> list[str]:
    """The request's content words that the item's title, genres or description also use: the part of a
    request a reason may repeat (never "say I am a bad person": the item's facts do not say it)."""
    mine = item_fact_words(item)
    return [w for w in content_words_in_order(query) if snowball_stem(w.lower()) in mine or w.lower() in mine]


def prompt_values(facts: PromptFacts, title_chars: int) -> dict:
    """The template values of the grounded reason prompt (all plain, escaped text)."""
    item = facts.item
    return {
        "item": display_title(item.title, title_chars),
        "year": str(item.year) if item.year and str(item.year) not in item.title else "",
        "attributes": [safe_text(g, 40) for g in item.genres[:6]],
        "related": display_title(facts.related.title, title_chars) if facts.related else "",
        "shared": [safe_text(s, 40) for s in facts.shared],
        "query": facts.query or "",
        "query_words": list(facts.query_words),
    }


def allowed_words(facts: PromptFacts, title_chars: int) -> list[str]:
    """Every free word a constrained reason may write: the item's attributes, what it shares with the related
    item, the request words it supports, the generic list and function words (not "I", "we"). The related
    title only as a whole (:func:`allowed_phrases`); never the item's own title: the user sees it beside the
    reason, and the model otherwise writes it where the liked item belongs ("Shares Comedy with <itself>")."""
    values = prompt_values(facts, title_chars)
    words: set[str] = (set(GENERIC_WORDS) | {w for w in STOPWORDS - FIRST_PERSON if len(w) > 1 or w == "a"}) - NEVER_FREE
    texts = [*values["attributes"], *values["shared"], *values["query_words"]]
    for text in texts:
        words |= set(TEXT_WORD.findall(text))
    if not values["shared"]:
        words -= SHARE_WORDS  # "Shares <liked item>": nothing shared is named
    return sorted(words)


#: Verbs that say the user liked something: only of a history item the reason names.
LIKED_VERBS = frozenset({"liked", "loved", "enjoyed", "watched", "bought"})
#: Words a liked item's name never directly follows: "This is a <liked item>" says the recommendation IS it.
NOT_BEFORE_NAME = frozenset({"is", "a", "an", "this", "are", "was", "be", "it", "shares", "share", "another", "of",
                             "product", "products", "item", "items", "recommended", "suggested", "same"})
#: Words that claim something is shared: allowed only when the facts hold a shared attribute.
SHARE_WORDS = frozenset({"share", "shares", "shared", "sharing", "common", "both"})


#: How a sentence that names a liked item may start (and with one of the shared attributes): the openings of
#: :data:`PATTERNS` and the few other ways into a reason. Free openings ("This product is a must-have for
#: those who ...", "Loves ...", "May, ...") ran on without naming anything on Amazon Beauty.
OPENERS = frozenset("shares like if since because fans another similar close both just".split())
#: Words the constraint never lets a reason use: light verbs and "must" ("a product that is made with <liked
#: item>", "a must-<liked item>") claim relations the facts do not hold, and a reason needs none of them; a
#: reason speaks to "you", so "the user"/"they" only made "Similar to the user, ..." and "Because of the user";
#: "the most recent <liked item>", "the previous one" and "the only ... most recommended" are claims about the
#: history's order and rank that the facts do not hold (hand-graded grounded-r3 sample).
NEVER_FREE = frozenset("""make makes made making get gets got getting take takes took taken give gives gave given
go goes went gone come comes came become becomes became seem seems seemed must ought
user users viewer viewers customer customers shopper shoppers they them their theirs
history recent recently earlier previous previously past last latest most only""".split())
#: Free words before the liked item's name starts, and after it before the sentence ends.
NAME_WITHIN, TAIL_WORDS = 6, 5
#: Function words a sentence may repeat; every other word is said once ("really, really, very, really").
REPEATABLE = frozenset("a an the and of to with is it which you for in this that as on by or be its your".split())


def sentence_rules(facts: PromptFacts, title_chars: int) -> SentenceRules:
    """What the constrained sentence must do besides using allowed words (:class:`recgen.lm.constraint.SentenceRules`):
    name the related item before it ends (or, with none, one of the item's attributes or the request words it
    supports), never end on a dangling word, say "liked" only of the named item, never call the recommendation
    the liked item, and say each content word once."""
    values = prompt_values(facts, title_chars)
    needs = {w.lower() for text in [*values["attributes"], *values["shared"], *values["query_words"]]
             for w in TEXT_WORD.findall(text)}
    once = {w.lower() for w in allowed_words(facts, title_chars)} - REPEATABLE
    related = bool(values["related"])
    return SentenceRules(must_name=related, end_needs=frozenset() if related else frozenset(needs),
                         no_end_after=DANGLING, after_phrase=LIKED_VERBS, not_before_phrase=NOT_BEFORE_NAME,
                         once=frozenset(once), openers=OPENERS | frozenset(needs) if related else frozenset(),
                         name_within=NAME_WITHIN if related else 0, tail_words=TAIL_WORDS if related else 0,
                         no_comma_after=OPENERS, claim_subject="you")


def allowed_phrases(facts: PromptFacts, title_chars: int) -> list[str]:
    """Titles a constrained reason writes only whole, as the prompt shows them: the related history item's (its
    words are not free words, so half a title or a stitched one cannot be written; a full stop inside it,
    "Mrs. Doubtfire", does not end the sentence)."""
    related = prompt_values(facts, title_chars)["related"]
    return [related] if related else []


def vocabulary_for(facts: PromptFacts, title_chars: int) -> Vocabulary:
    """The constraint of a ``grounded`` reason: the facts' words, the related title written whole, the rules."""
    return Vocabulary(tuple(allowed_words(facts, title_chars)), tuple(allowed_phrases(facts, title_chars)),
                      sentence_rules(facts, title_chars))


#: Sentence patterns, by what the facts hold. {related}, {shared}, {attributes}, {query}, {item}.
PATTERNS = {
    "shared": [
        "Shares {shared} with {related}, which you liked.",
        "{a_shared} pick, as is {related}, which you liked.",
        "If you liked {related}, this is also {shared}.",
        "Like {related}, which you liked, it is {shared}.",
        "{shared_cap}, as is {related}, which you liked.",
    ],
    "words": [
        "Shares {words} with {related}, which you liked.",
        "Another {words} pick after {related}, which you liked.",
        "If you liked {related}, here is another {words} pick.",
    ],
    "related": [
        "Because you liked {related}.",
        "Recommended because you liked {related}.",
        "If you liked {related}, try this one.",
    ],
    "transition": [
        "Fans of {related} also liked this one.",
        "Liked by fans of {related}, which you liked.",
    ],
    "query": [
        "{attributes_cap}, close to your request for {query}.",
        "{a_attributes} pick that fits your request for {query}.",
    ],
    "query_words": [
        "Close to your request for {query}.",
        "A close match for your request for {query}.",
    ],
    "query_attributes": [
        "{attributes_cap}, one of the closest matches to your request.",
        "{a_attributes} pick, one of the closest matches to your request.",
    ],
    "query_plain": [
        "One of the closest matches to your request.",
        "A close match for your request.",
    ],
    "plain": [
        "{attributes_cap}, one of the closest matches.",
        "{a_attributes} pick, one of the closest matches.",
    ],
    "nothing": ["One of the closest matches in the catalog."],
}


def phrase_reason(facts: PromptFacts, rng: random.Random | None = None, title_chars: int = 60) -> str:
    """A reason made only of the facts (true by construction), in a pattern picked by ``rng`` (the first
    pattern without one). Used as fine-tuning targets and as the fallback when the LM's reason fails."""
    values = prompt_values(facts, title_chars)
    choices = PATTERNS[pattern_kind(facts, values)]
    pattern = choices[rng.randrange(len(choices))] if rng is not None else choices[0]
    return fill_pattern(pattern, values)


def pattern_kind(facts: PromptFacts, values: dict) -> str:
    """Which :data:`PATTERNS` group fits what the facts hold."""
    attributes, query = unrequested(values), values["query_words"]
    if facts.related is not None and values["shared"]:
        return "shared" if facts.shares_genres else "words"
    if facts.related is not None:
        return "transition" if facts.link == "transition" else "related"
    if query:
        return "query" if attributes else "query_words"
    if facts.query:
        return "query_attributes" if attributes else "query_plain"
    return "plain" if attributes else "nothing"


def fill_pattern(pattern: str, values: dict) -> str:
    """A pattern's fields from :func:`prompt_values`: {related}, {shared}, {attributes}, {query}, {item}, and
    their capitalised (``_cap``) and indefinite-article (``a_``) forms."""
    shared = join_names(values["shared"])
    attributes = join_names(unrequested(values)[:MAX_SHARED])
    return pattern.format(related=values["related"], shared=shared, shared_cap=_cap(shared),
                          query=" ".join(values["query_words"][:4]), words=" ".join(values["shared"]),
                          a_shared=_article(shared), a_attributes=_article(attributes),
                          attributes=attributes, attributes_cap=_cap(attributes), item=values["item"])


def unrequested(values: dict) -> list[str]:
    """The item's attributes less those the request words already say ("Action, close to your request for
    action" says it twice)."""
    asked = {snowball_stem(w.lower()) for w in values["query_words"]}
    return [a for a in values["attributes"] if not {snowball_stem(w.lower()) for w in TEXT_WORD.findall(a)} & asked]


def content_words_in_order(text: str) -> list[str]:
    """The content words of ``text`` in their written order (for echoing a request)."""
    keep = set(claim_words(text))
    out: list[str] = []
    for word in TEXT_WORD.findall(text):
        if word.lower().removesuffix("'s") in keep and word.lower() not in {w.lower() for w in out}:
            out.append(word)
    return out


def _article(text: str) -> str:
    """``"An Action"`` / ``"A Drama"``: the capitalised indefinite article and ``text``."""
    return ("An " if text[:1].lower() in "aeiou" else "A ") + text if text else "A"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text
