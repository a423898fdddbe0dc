"""A conversation's state, rebuilt from the OpenAI-style ``messages`` list on every request (the server keeps
none), and the reply text the server writes. Used by ``POST /v1/chat/completions`` and ``recgen chat``.

The reply is assembled here from catalog titles and checked reasons; free LM text never names an item.
Each listed item carries its id (``[item 50]``) so the next request can tell which items were shown and what
"the second one" refers to, even though the client only sends the text back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..chat.constraints import (ChatVocabulary, Constraints, blocked_items, merge_turn, parse_turn,
                                starts_new_request)
from ..data.catalog import Catalog, Item
from ..errors import InvalidRequestError
from ..ranking.reasons import short_title, words_of as _words, unsupported_names
from ..types import Recommendation

_ITEM_LINE = re.compile(r"^\s*(\d+)[.)]\s+(.+?)\s+\[item ([^\]\s]+)\]")
_PLAIN_LINE = re.compile(r"^\s*(\d+)[.)]\s+(?:\*\*)?(.+?)(?:\*\*)?(?:\s+[\u2014\u2013-]\s+.*)?$")


@dataclass
class ChatContext:
    """Per-catalog lookups, built once: the constraint vocabulary and titles for reading old replies."""

    catalog: Catalog
    vocab: ChatVocabulary
    by_title: dict[str, str]
    genre_words: frozenset[str]

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> "ChatContext":
        by_title: dict[str, str] = {}
        for item in catalog:
            by_title.setdefault(item.title.strip().lower(), item.item_id)
        genre_words = frozenset(w for item in catalog for g in item.genres for w in _words(g))
        return cls(catalog, ChatVocabulary.from_catalog(catalog), by_title, genre_words)


@dataclass
class ChatState:
    """What the messages so far ask for. ``previous`` is the last reply's items, in order."""

    request: str | None = None
    constraints: Constraints = field(default_factory=Constraints)
    shown: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    allow_shown: bool = False
    notes: list[str] = field(default_factory=list)
    user_turns: int = 0

    def query(self, catalog: Catalog, max_chars: int | None = None) -> str | None:
        """Retrieval/ranking request: the request text plus the titles the user wants more like."""
        parts = [self.request] if self.request else []
        liked = [catalog.get(i).title for i in self.constraints.liked if i in catalog]
        if liked:
            parts.append("Similar to " + "; ".join(liked))
        text = ". ".join(parts) or None
        if text and max_chars and len(text) > max_chars:
            text = text[-max_chars:]  # the most recent part of a long conversation matters most
        return text

    def excluded(self) -> set[str]:
        """Items not to show again: everything already shown (unless asked), rejected and liked items."""
        out = set(self.constraints.rejected) | set(self.constraints.liked)
        if not self.allow_shown:
            out |= set(self.shown)
        return out

    def as_dict(self) -> dict:
        return {"request": self.request, "filters": self.constraints.describe(), **self.constraints.as_dict(),
                "shown": list(self.shown), "allow_shown": self.allow_shown}


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


def items_in_reply(text: str, context: ChatContext) -> list[str]:
    """Item ids a previous reply listed, in its order: ``1. Title [item 50] — ...`` lines (or bare titles)."""
    found: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = _ITEM_LINE.match(line)
        if match and match.group(3) in context.catalog:
            found.append((int(match.group(1)), match.group(3)))
            continue
        match = _PLAIN_LINE.match(line)
        if match:
            item_id = context.by_title.get(match.group(2).strip().lower())
            if item_id is not None:
                found.append((int(match.group(1)), item_id))
    ids = [i for _, i in sorted(found, key=lambda pair: pair[0])]
    return list(dict.fromkeys(ids))


def _role_and_content(message: Any) -> tuple[str, Any]:
    if isinstance(message, dict):
        return str(message.get("role", "")), message.get("content")
    return str(getattr(message, "role", "")), getattr(message, "content", None)


def state_from_messages(messages: Iterable[Any], context: ChatContext) -> ChatState:
    """Fold the conversation. System/developer/tool messages are ignored: they cannot change the catalog."""
    messages = list(messages)
    roles = [_role_and_content(m)[0] for m in messages]
    if "user" not in roles:
        raise InvalidRequestError("messages must contain at least one message with role 'user'")
    last_user = len(roles) - 1 - roles[::-1].index("user")
    state = ChatState()
    for index, message in enumerate(messages):
        role, content = _role_and_content(message)
        text = message_text(content)
        if role == "assistant":
            state.previous = items_in_reply(text, context)
            state.shown.extend(i for i in state.previous if i not in state.shown)
        elif role == "user":
            state.user_turns += 1
            turn = parse_turn(text, context.vocab, state.previous)
            if turn.reset:
                state.request = None
            if turn.request:
                if state.request is None or starts_new_request(turn):
                    state.request = turn.request
                else:
                    state.request = f"{state.request}; {turn.request}"
            state.constraints = merge_turn(state.constraints, turn)
            if index == last_user:
                state.notes = list(turn.notes)
                state.allow_shown = turn.allow_shown
    return state


# -- reasons the chat may show ---------------------------------------------------------------------------

def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def chat_fallback_reason(item: Item, liked: list[Item], history: list[Item], has_request: bool) -> str:
    """A reason built only from catalog facts, never quoting the user."""
    for past, why in [(p, "which you asked for more of") for p in reversed(liked)] + \
                     [(p, "which you liked") for p in reversed(history)]:
        shared = [g for g in item.genres if g in set(past.genres)]
        if shared:
            return f"Shares {_join(shared[:3])} with {past.title}, {why}."
    what = _join(list(item.genres[:3])) if item.genres else "An item"
    when = f" from {item.year}" if item.year and str(item.year) not in item.title else ""
    target = "your request" if has_request else ("items you liked" if history else "what is popular")
    return f"{what}{when}, close to {target}."


def checked_for_chat(recs: list[Recommendation], catalog: Catalog, liked: list[str], history: list[str],
                     has_request: bool, genre_words: Iterable[str] = (), prompt_history: int = 10) -> list[Recommendation]:
    """Replace any reason that names something the catalog facts cannot back (see :func:`unsupported_names`)."""
    liked_items = [catalog.get(i) for i in liked if i in catalog]
    history_items = [catalog.get(i) for i in history[-prompt_history:] if i in catalog]
    context_titles = [i.title for i in liked_items + history_items]
    genre_words = set(genre_words)
    out = []
    for rec in recs:
        if rec.reason is None:
            out.append(rec)
            continue
        item = catalog.get(rec.item_id)
        if unsupported_names(rec.reason, [item.title, *context_titles], genre_words):
            reason = chat_fallback_reason(item, liked_items, history_items, has_request)
            rec = rec.model_copy(update={"reason": reason, "reason_source": "fallback"})
        out.append(rec)
    return out


# -- one chat turn end to end ----------------------------------------------------------------------------

@dataclass
class ChatReply:
    text: str
    recommendations: list[Recommendation]
    state: ChatState
    notes: list[str]
    query: str | None


def render_reply(recs: list[Recommendation], state: ChatState, notes: list[str], who: str | None = None) -> str:
    """The assistant message: notes, a one-line header with the active filters, one line per item."""
    lines = list(notes)
    filters = state.constraints.describe()
    suffix = f" (filters: {'; '.join(filters)})" if filters else ""
    if recs:
        for_whom = f" for {who}" if who else ""
        lines.append(f"Here {'is' if len(recs) == 1 else 'are'} {len(recs)} pick{'s' if len(recs) != 1 else ''} "
                     f"from the catalog{for_whom}{suffix}:")
        for rec in recs:
            line = f"{rec.rank}. {rec.title} [item {rec.item_id}]"
            if rec.reason:
                line += f" \u2014 {rec.reason}"
            lines.append(line)
    else:
        lines.append(f"No catalog item is left that matches{suffix or ' your request'}. "
                     "Relax a filter, or say \u201cstart over\u201d.")
    return "\n".join(lines)


def chat_turn(recommender, context: ChatContext, messages: Iterable[Any], *, history: list[str] | None = None,
              k: int = 5, mode: str = "score", reasons: bool = True, who: str | None = None,
              extra_notes: list[str] | None = None) -> ChatReply:
    """State from ``messages`` → candidate filter → retrieval + LM ranking + checked reasons → reply text.

    Everything the constraints rule out (and items already shown, rejected or used as examples) is passed
    to retrieval as its exclude set, so the ≤``n_candidates`` items the LM ranks all satisfy them.
    """
    state = state_from_messages(messages, context)
    catalog = recommender.catalog
    history = list(history or [])
    notes = list(extra_notes or []) + list(state.notes)
    blocked = blocked_items(catalog, state.constraints, state.excluded())
    available = sum(1 for item in catalog if item.item_id not in blocked and item.item_id not in set(history))
    query = state.query(catalog, recommender.config.max_query_chars)
    recs: list[Recommendation] = []
    if available > 0:
        if not history and query is None and not recommender.popularity:
            notes.append("Tell me what you are looking for (a genre, a mood, a title you liked).")
        else:
            recs = recommender.recommend(history=history, query=query, k=min(k, available), mode=mode,
                                         reasons=reasons, exclude=sorted(blocked))
            recs = checked_for_chat(recs, catalog, list(state.constraints.liked), history, query is not None,
                                    context.genre_words, recommender.config.prompt.history)
    return ChatReply(render_reply(recs, state, notes, who), recs, state, notes, query)
