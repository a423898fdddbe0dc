"""One chat turn end to end: state from the messages → candidate filter → retrieval + LM ranking → reasons
the chat may show → the reply text.

The reply is assembled here from catalog titles and checked reasons; free LM text never names an item.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from ..data.catalog import Catalog, Item
from ..reasons.checker import unsupported_names
from ..text import join_names
from ..types import Recommendation
from .constraints import Constraints, blocked_items, distinctive_genres
from .state import ChatContext, ChatState, state_from_messages

# -- reasons the chat may show ---------------------------------------------------------------------------

def chat_fallback_reason(item: Item, liked: list[Item], history: list[Item], has_request: bool) -> str:
    """A reason built only from catalog facts, never quoting the user."""
    for past, why in [(p, "which you asked for more of") for p in reversed(liked)] + \
                     [(p, "which you liked") for p in reversed(history)]:
        shared = [g for g in item.genres if g in set(past.genres)]
        if shared:
            return f"Shares {join_names(shared[:3])} with {past.title}, {why}."
    what = join_names(list(item.genres[:3])) if item.genres else "An item"
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
    """One turn's reply; ``seeded``, ``liked``, ``history``, ``shown`` and ``who`` are what :func:`chat_reasons`
    needs to write the reasons of a reply ranked without them."""

    text: str
    recommendations: list[Recommendation]
    state: ChatState
    notes: list[str]
    query: str | None
    seeded: list[str] = field(default_factory=list)
    liked: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    shown: ChatState | None = None
    who: str | None = None
    #: the request's words no filter read and no item shown holds (also said in ``notes`` and the text)
    unused_words: tuple[str, ...] = ()

    @property
    def popular(self) -> bool:
        """Served from the popularity list (no history, no request): its reasons are fixed, not the LM's."""
        return not self.seeded and self.query is None


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
              extra_notes: list[str] | None = None, adapter: str | None = None) -> ChatReply:
    """State from ``messages`` → candidate filter → retrieval + LM ranking + checked reasons → reply text.

    Everything the constraints rule out (and items already shown, rejected or used as examples) is passed
    to retrieval as its exclude set, so the ≤``n_candidates`` items the LM ranks all satisfy them. ``adapter``:
    the named LoRA adapter the LM ranks and writes reasons with (None = the default).
    """
    state = state_from_messages(messages, context)
    catalog = recommender.catalog
    history = list(history or [])
    notes = list(extra_notes or []) + list(state.notes)
    liked = [i for i in state.constraints.liked if i in catalog]
    # "more like the second one": that item seeds retrieval (its neighbours, as the newest history item) and
    # its rarer genres are required, so what made it distinct is kept, not only the genre it shares
    required = distinctive_genres([catalog.get(i) for i in liked], catalog, state.constraints)
    constraints = replace(state.constraints, include_genres=required)
    blocked = blocked_items(catalog, constraints, state.excluded())
    seeded = [i for i in history if i not in set(liked)] + liked
    available = sum(1 for item in catalog if item.item_id not in blocked and item.item_id not in set(seeded))
    if available == 0 and constraints.describe():
        # nothing matches: say so, and show the closest items (labelled by the recommender) rather than
        # nothing; the genres asked for are relaxed first, what was ruled out (genres, years) is kept if it can be
        notes.append(f"No catalog item matches all of: {'; '.join(constraints.describe())}. "
                     "These are the closest items instead.")
        for relaxed in (replace(constraints, include_genres=frozenset()), Constraints(rejected=constraints.rejected)):
            blocked = blocked_items(catalog, relaxed, state.excluded())
            available = sum(1 for item in catalog if item.item_id not in blocked and item.item_id not in set(seeded))
            if available:
                break
    query = state.query(context.vocab, required, recommender.config.max_query_chars)
    recs: list[Recommendation] = []
    unused: tuple[str, ...] = ()
    if available > 0:
        if not seeded and query is None and not recommender.popularity:
            notes.append("Tell me what you are looking for (a genre, a mood, a title you liked).")
        else:
            found = recommender.recommend(history=seeded, query=query, k=min(k, available), mode=mode,
                                          reasons=reasons, exclude=sorted(blocked - set(seeded)), adapter=adapter)
            unused = found.unused_words
            if found.unused_note():
                notes.append(found.unused_note())
            recs = checked_for_chat(found, catalog, liked, history, query is not None,
                                    context.genre_words, recommender.config.prompt.history)
    shown = replace(state, constraints=constraints)  # the header lists what was really filtered
    return ChatReply(render_reply(recs, shown, notes, who), recs, state, notes, query, seeded, liked, history, shown,
                     who, unused)


def chat_reasons(recommender, context: ChatContext, reply: ChatReply, adapter: str | None = None) -> ChatReply:
    """``reply`` (ranked with ``reasons=False``) with the reasons ``chat_turn`` would have written: the server
    sends a turn's items as soon as they are ranked and its reasons when the LM has written them. Not for a
    popularity reply (:attr:`ChatReply.popular`), whose reasons are fixed."""
    recs = reply.recommendations
    if not recs:
        return reply
    reasons = recommender.explain(reply.seeded, reply.query, [r.item_id for r in recs], adapter=adapter)
    recs = [r.model_copy(update={"reason": text, "reason_source": source}) for r, (text, source) in zip(recs, reasons)]
    recs = checked_for_chat(recs, recommender.catalog, reply.liked, reply.history, reply.query is not None,
                            context.genre_words, recommender.config.prompt.history)
    return replace(reply, text=render_reply(recs, reply.shown or reply.state, reply.notes, reply.who),
                   recommendations=recs)
