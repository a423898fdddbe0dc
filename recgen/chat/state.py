"""A conversation's state, rebuilt from the OpenAI-style ``messages`` list on every request (the server keeps
none). Used by ``POST /v1/chat/completions`` and ``recgen chat``.

Each item a reply lists carries its id (``1. Title [item 50] — reason``) so the next request can tell which
items were shown and what "the second one" refers to, even though the client only sends the text back.
That text is the client's to change, so it is read without regular expressions: each line is cut to
:data:`MAX_REPLY_LINE_CHARS` and scanned once with string methods (linear time whatever it holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..data.catalog import Catalog
from ..errors import InvalidRequestError
from ..retrieval.request_parser import remainder_source
from ..text import blank_spans, check_text, clip, collapse_spaces, message_text, norm, wanted_words, words_of
from .constraints import Constraints, merge_turn, starts_new_request
from .parser import parse_turn
from .vocabulary import ChatVocabulary

#: Characters of one earlier reply that are read (a reply of 26 items with reasons is ~15,000).
MAX_REPLY_CHARS = 200_000
#: Characters of one reply line that are read; an item line recgen writes is a few hundred.
MAX_REPLY_LINE_CHARS = 2_000
#: List numbers above this are not positions of a reply recgen wrote (it lists at most 26 items).
MAX_POSITION = 100
_DASHES = (" \u2014 ", " \u2013 ", " - ")


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
            by_title.setdefault(collapse_spaces(item.title).lower(), item.item_id)
        genre_words = frozenset(w for item in catalog for g in item.genres for w in words_of(g))
        return cls(catalog, ChatVocabulary.from_catalog(catalog), by_title, genre_words)


@dataclass
class ChatState:
    """What the messages so far ask for. ``previous`` is the last reply's items, in order."""

    request: str | None = None
    constraints: Constraints = field(default_factory=Constraints)
    shown: list[str] = field(default_factory=list)
    previous: list[str | None] = field(default_factory=list)  # by position; None where a line was unreadable
    allow_shown: bool = False
    notes: list[str] = field(default_factory=list)
    user_turns: int = 0

    def query(self, vocab: ChatVocabulary, genres: Iterable[str] = (), max_chars: int | None = None) -> str | None:
        """The retrieval/ranking request: the request text without its genre phrases, then the genres the
        conversation requires (``genres``) spelled out, so the recommender's own request filters read exactly
        these genres (a request refined over turns cannot contradict the conversation's constraints). Items
        to find more like are not named here: they seed the history (see :func:`recgen.chat.turn.chat_turn`)."""
        text = self.request or ""
        if text:
            source = remainder_source(text, norm(text))
            spans = [(start, end) for start, end, _genre in vocab.genre_spans(norm(source))]
            text = blank_spans(source, spans).strip(" ,;:-")
        genres = sorted(genres)
        if genres:
            text = f"{text}. {', '.join(genres)}" if wanted_words(text) else ", ".join(genres)
        if not wanted_words(text) and not genres:
            return None
        if max_chars and len(text) > max_chars:
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


def _numbered(line: str) -> tuple[int, str] | None:
    """``"  2. rest"`` / ``"2) rest"`` → ``(2, "rest")``; None for any other line."""
    line = line.lstrip()
    digits = 0
    while digits < len(line) and digits < 4 and "0" <= line[digits] <= "9":
        digits += 1
    if digits == 0 or digits == len(line) or line[digits] not in ".)":
        return None
    rest = line[digits + 1:]
    if not rest[:1].isspace():
        return None
    return int(line[:digits]), rest.strip()


def _id_in_line(body: str, catalog: Catalog) -> str | None:
    """The catalog id in ``Title [item ID]`` or ``Title [item ID] — reason``; ids may hold spaces."""
    start = body.find(" [item ")
    if start < 0:
        return None
    id_start = start + len(" [item ")
    dash = body.find("] \u2014 ", id_start)
    item_id = body[id_start:dash] if dash >= 0 else (body[id_start:-1] if body.endswith("]") else None)
    if item_id is None or item_id not in catalog:
        # an id holding "] — " itself, or text after the bracket: fall back to the first closing bracket
        close = body.find("]", id_start)
        item_id = body[id_start:close] if close >= 0 else None
    return item_id if item_id is not None and item_id in catalog else None


def _plain_title(body: str) -> str:
    """``**Title** — reason`` → ``Title``: the text before the first spaced dash, without bold markers."""
    body = collapse_spaces(body)
    if body.startswith("**"):
        body = body[2:]
    cut = min((i for i in (body.find(d, 1) for d in _DASHES) if i >= 0), default=len(body))
    title = body[:cut]
    if title.endswith("**"):
        title = title[:-2]
    return title.strip().lower()


def reply_positions(text: str, context: ChatContext) -> list[str | None]:
    """The ids a previous reply listed, by list number: ``[id of 1., id of 2., ...]``. A numbered line that
    names no catalog item (edited, or not ours) keeps its place as None, so "the third one" still means 3."""
    by_number: dict[int, str | None] = {}
    for line in clip(text, MAX_REPLY_CHARS).splitlines():
        numbered = _numbered(clip(line, MAX_REPLY_LINE_CHARS))
        if numbered is None or not 1 <= numbered[0] <= MAX_POSITION or numbered[0] in by_number:
            continue
        number, body = numbered
        item_id = _id_in_line(body, context.catalog)
        if item_id is None:
            item_id = context.by_title.get(_plain_title(body))
        by_number[number] = item_id
    if not by_number:
        return []
    return [by_number.get(n) for n in range(1, max(by_number) + 1)]


def items_in_reply(text: str, context: ChatContext) -> list[str]:
    """Item ids a previous reply listed, in its order: ``1. Title [item 50] — ...`` lines (or bare titles)."""
    return list(dict.fromkeys(i for i in reply_positions(text, context) if i is not None))


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
    shown: set[str] = set()
    for index, message in enumerate(messages):
        role, content = _role_and_content(message)
        text = check_text(message_text(content), f"message {index}")  # every surface: never a bad code point to the LM
        if role == "assistant":
            state.previous = reply_positions(text, context)
            for item_id in state.previous:
                if item_id is not None and item_id not in shown:
                    shown.add(item_id)
                    state.shown.append(item_id)
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
