"""How the LM is asked for a reason (``prompt.reasons``): one small class per style, registered by name.

A style is the prompt (with its decoding constraint, :mod:`recgen.lm.constraint`), the token budget, what
else makes its answer unservable, and the fallback sentence served instead. The reasoner looks the style up
(:func:`style_for`); a new style is a class with :func:`register_style`, not another branch. The styles:

* ``free`` — the original prompt (history titles, one example), unconstrained; fallback from catalog facts.
* ``facts`` — the facts a reason may use as a short list (:func:`.prompts.build_grounded_prompt`).
* ``grounded`` — that list, and decoding constrained to the facts' words plus a generic list
  (:func:`.grounding.vocabulary_for`), so an invented genre, plot or claim about the user cannot be written.
* ``grammar`` (the default) — that list, and the model writes one of the sentences :mod:`.grammar` composes
  from the facts (a :class:`~recgen.lm.constraint.Choice`).

The fact check (:class:`.checker.ReasonChecker`) is the second gate in every style.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

from ..config import PromptSettings
from ..data.catalog import Item
from ..errors import ConfigError
from ..lm.constrained import WordVocabulary
from ..lm.constraint import Choice
from ..lm.prompt import ChatPrompt
from .checker import fallback_reason
from .grammar import reason_choices
from .grounding import PromptFacts, allowed_phrases, phrase_reason, select_facts, vocabulary_for
from .prompts import build_grounded_prompt, build_reason_prompt

#: History items named in the free reason prompt (the checker still knows the whole shown history).
PROMPT_HISTORY_ITEMS = 5
#: Token budget of a ``grammar`` reason: decoding ends at the end of its sentence; this only bounds it.
GRAMMAR_TOKENS = 64


@dataclass(frozen=True)
class ReasonRequest:
    """One explain call: the user's history ids and shown history items, the request, and the settings."""

    history: list[str]
    past: list[Item]
    query: str | None
    settings: PromptSettings


class ReasonStyle:
    """The fact-based styles' common part: facts picked per item, a fact-built fallback, and an answer that
    must be a finished sentence ending outside a title. Subclasses give the prompt and its constraint."""

    name = ""

    def facts(self, stage, item: Item, request: ReasonRequest, named: dict[str, int] | None = None) -> PromptFacts | None:
        """``named``: liked item id → reasons earlier in the list that name it (updated here)."""
        facts = select_facts(item, request.past, request.query, stage.closeness, named, stage.similar)
        if named is not None and facts.related is not None:
            named[facts.related.item_id] = named.get(facts.related.item_id, 0) + 1
        return facts

    def choices(self, stage, item: Item, facts: PromptFacts | None, request: ReasonRequest) -> tuple[str, ...] | None:
        """Every sentence the LM may write for ``item`` (each with a leading space), or None when the style has
        no closed set; the reasoner spreads these over the list (:func:`.variety.spread`)."""
        return None

    def prompt(self, stage, item: Item, facts: PromptFacts | None, request: ReasonRequest,
               choices: tuple[str, ...] | None = None) -> ChatPrompt:
        raise NotImplementedError

    def tokens(self, settings: PromptSettings) -> int:
        return settings.reason_tokens

    def problems(self, reason: str, facts: PromptFacts | None, settings: PromptSettings) -> list[str]:
        """What besides the fact check makes ``reason`` unservable."""
        if not reason.rstrip().endswith((".", "!", "?")):
            return ["not a finished sentence"]  # out of tokens part-way: never served
        if _ends_inside_title(reason, facts, settings.title_chars):
            # "... with Faster Pussycat!" (an engine that only allows tokens, like vLLM's allowed_token_ids,
            # may stop at a title's own "!")
            return ["ends part-way through a title"]
        return []

    def fallback(self, stage, item: Item, facts: PromptFacts | None, request: ReasonRequest,
                 choices: tuple[str, ...] | None = None) -> str:
        """The first of the item's sentences when it has a closed set, else the first fact-built pattern."""
        if choices:
            return choices[0].strip()
        return phrase_reason(facts, title_chars=request.settings.title_chars)


#: name → style class (``prompt.reasons``).
STYLES: dict[str, type[ReasonStyle]] = {}


def register_style(cls: type[ReasonStyle]) -> type[ReasonStyle]:
    """Class decorator: serve ``cls`` under ``cls.name``."""
    if not cls.name or cls.name in STYLES:
        raise ValueError(f"a reason style needs a new name, not {cls.name!r}")
    STYLES[cls.name] = cls
    return cls


def style_for(name: str) -> ReasonStyle:
    try:
        return STYLES[name]()
    except KeyError:
        raise ConfigError(f"unknown prompt.reasons style {name!r}; choose one of: {', '.join(STYLES)}") from None


@register_style
class FreeStyle(ReasonStyle):
    name = "free"

    def facts(self, stage, item, request, named=None):
        return None

    def prompt(self, stage, item, facts, request, choices=None):
        return build_reason_prompt(item, request.past[-PROMPT_HISTORY_ITEMS:], request.query, request.settings)

    def problems(self, reason, facts, settings):
        return []

    def fallback(self, stage, item, facts, request, choices=None):
        return fallback_reason(item, request.past, request.query, stage.closest(item, request.past))


@register_style
class FactsStyle(ReasonStyle):
    name = "facts"

    def prompt(self, stage, item, facts, request, choices=None):
        return build_grounded_prompt(facts, request.settings)


@register_style
class GroundedStyle(ReasonStyle):
    name = "grounded"

    def prompt(self, stage, item, facts, request, choices=None):
        return replace(build_grounded_prompt(facts, request.settings),
                       constraint=vocabulary_for(facts, request.settings.title_chars))


@register_style
class GrammarStyle(ReasonStyle):
    name = "grammar"

    def choices(self, stage, item, facts, request):
        co_liked = facts.related is not None and stage.co_liked(facts.item, facts.related)
        return tuple(reason_choices(facts, request.settings.title_chars, co_liked))

    def prompt(self, stage, item, facts, request, choices=None):
        seed = zlib.crc32("\x1f".join(request.history).encode())  # one example phrasing per user
        prompt = build_grounded_prompt(facts, request.settings, example_seed=seed)
        return replace(prompt, constraint=Choice(tuple(choices or self.choices(stage, item, facts, request))))

    def tokens(self, settings):
        return max(settings.reason_tokens, GRAMMAR_TOKENS)


def _ends_inside_title(reason: str, facts: PromptFacts, title_chars: int) -> bool:
    phrases = allowed_phrases(facts, title_chars)
    return bool(phrases) and WordVocabulary([], phrases).inside_phrase(reason.rstrip())
