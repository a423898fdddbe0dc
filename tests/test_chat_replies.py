"""Reading an earlier reply back (issue 12 Low): list positions survive a line that cannot be read, and item
ids may contain spaces."""

from __future__ import annotations

import pytest

from recgen.chat.state import ChatContext, reply_positions, state_from_messages
from recgen.chat.turn import render_reply
from recgen.data import Catalog, Item
from recgen.types import Recommendation

CATALOG = Catalog([
    Item("1", "Star Voyage (1977)", ("Sci-Fi",), 1977),
    Item("2", "Haunted Harbor (1985)", ("Horror",), 1985),
    Item("3", "Laugh Track (1995)", ("Comedy",), 1995),
    Item("B00 X1", "Space Giggles (1997)", ("Comedy", "Sci-Fi"), 1997),   # an id with a space
    Item("a]b \u2014 c", "Odd Id Story (1990)", ("Drama",), 1990),         # an id holding "] — "
])


@pytest.fixture(scope="module")
def context() -> ChatContext:
    return ChatContext.from_catalog(CATALOG)


def rendered(ids) -> str:
    recs = [Recommendation(item_id=i, title=CATALOG.get(i).title, rank=n + 1, score=0.0, reason="A reason.")
            for n, i in enumerate(ids)]
    return render_reply(recs, state_from_messages([{"role": "user", "content": "x"}], ChatContext.from_catalog(CATALOG)), [])


def test_first_one_is_not_shifted_by_a_dropped_line(context):
    """Line 1 was edited (no id, no catalog title): "the first one" must not become item 2's line."""
    reply = rendered(["1", "2", "3"]).replace("Star Voyage (1977) [item 1]", "Something else entirely")
    messages = [{"role": "user", "content": "space"}, {"role": "assistant", "content": reply},
                {"role": "user", "content": "more like the first one"}]
    state = state_from_messages(messages, context)
    assert state.previous == [None, "2", "3"]
    assert state.constraints.liked == ()  # before: ("2",), the wrong item
    assert any("cannot tell which item the 1st one" in note for note in state.notes)
    second = state_from_messages(messages[:-1] + [{"role": "user", "content": "more like the second one"}], context)
    assert second.constraints.liked == ("2",)
    last = state_from_messages(messages[:-1] + [{"role": "user", "content": "not the last one"}], context)
    assert "3" in last.constraints.rejected


def test_an_id_with_a_space_is_not_shown_again(context):
    reply = rendered(["B00 X1", "3"])
    assert "[item B00 X1]" in reply
    state = state_from_messages([{"role": "user", "content": "comedy"}, {"role": "assistant", "content": reply},
                                 {"role": "user", "content": "more"}], context)
    assert state.shown == ["B00 X1", "3"] and "B00 X1" in state.excluded()  # before: shown == ["3"]


def test_ids_are_read_with_or_without_a_reason(context):
    assert reply_positions("1. Space Giggles (1997) [item B00 X1]\n2. Laugh Track (1995) [item 3] \u2014 Fun.", context) \
        == ["B00 X1", "3"]
    assert reply_positions(rendered(["a]b \u2014 c", "1"]), context) == ["a]b \u2014 c", "1"]
