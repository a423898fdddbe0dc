"""The reason prompts: the original free prompt, and the grounded one (the facts as a short list, with one
worked example as an earlier turn). The style (:mod:`.styles`) decides which, and what constraint it carries."""

from __future__ import annotations

import random

from ..config import PromptSettings
from ..data.catalog import Item
from ..lm.prompt import ChatPrompt
from ..lm.templates import chat, render, shorten
from .grounding import PromptFacts, phrase_reason, prompt_values


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


def build_grounded_prompt(facts: PromptFacts, settings: PromptSettings, example: bool = True,
                          example_seed: int | None = None) -> ChatPrompt:
    """The facts as a short list (``prompts/reason_grounded.jinja``), unconstrained (a style adds its
    constraint, :mod:`.styles`). With ``example`` one worked example
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
    return prompt


def _item_line(item: Item, title_chars: int) -> str:
    text = shorten(item.title, title_chars)
    if item.genres:
        text += f" ({', '.join(item.genres)})"
    return text
