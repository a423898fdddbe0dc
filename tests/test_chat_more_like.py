"""Issue 15's chat: "a funny sci-fi film, not horror" means Comedy AND Sci-Fi, and "more like the second one"
keeps what made that item distinct (its rarer genres, and its neighbours as the seed), not only a shared genre."""

from __future__ import annotations

import pytest

from recgen import RecgenConfig, Recommender
from recgen.chat.constraints import Constraints, distinctive_genres
from recgen.chat.state import ChatContext
from recgen.chat.turn import chat_turn
from recgen.data import Catalog, Item

COMEDIES = [Item(f"c{n}", f"Plain Comedy {n}", ("Comedy",), 1990 + n % 9) for n in range(30)]
SCIFI_COMEDIES = [Item(f"s{n}", f"Dark Sci-Fi Comedy {n}", ("Comedy", "Sci-Fi"), 1990 + n % 9) for n in range(24)]
OTHER = [Item(f"d{n}", f"Drama {n}", ("Drama",), 1990 + n % 9) for n in range(20)] + \
    [Item(f"h{n}", f"Sci-Fi Horror {n}", ("Horror", "Sci-Fi"), 1990 + n % 9) for n in range(10)]
CATALOG = Catalog(COMEDIES + SCIFI_COMEDIES + OTHER)


def test_the_liked_items_rarer_genres_are_required_while_enough_items_keep_them():
    liked = CATALOG.get("s3")  # Comedy (54 items) + Sci-Fi (34): the rarer one first, then Comedy (24 have both)
    assert distinctive_genres([liked], CATALOG, Constraints()) == {"Sci-Fi", "Comedy"}
    assert distinctive_genres([liked], CATALOG, Constraints(), min_items=30) == {"Sci-Fi"}
    assert distinctive_genres([], CATALOG, Constraints(include_genres=frozenset({"Drama"}))) == {"Drama"}


@pytest.fixture(scope="module")
def recommender(tiny_backend):
    return Recommender(CATALOG, RecgenConfig(retrieval={"n_candidates": 8}), backend=tiny_backend)


def test_a_conversation_keeps_comedy_and_sci_fi_and_then_what_made_the_second_one_distinct(recommender):
    context = ChatContext.from_catalog(CATALOG)
    messages = [{"role": "user", "content": "a funny sci-fi film, not horror"}]
    first = chat_turn(recommender, context, messages, k=5, reasons=False)
    assert len(first.recommendations) == 5
    assert all({"Comedy", "Sci-Fi"} <= set(CATALOG.get(r.item_id).genres) for r in first.recommendations)
    messages += [{"role": "assistant", "content": first.text},
                 {"role": "user", "content": "more like the second one, but only after 1995"}]
    second = chat_turn(recommender, context, messages, k=5, reasons=False)
    liked = first.recommendations[1].item_id
    assert second.state.constraints.liked == (liked,)
    got = [CATALOG.get(r.item_id) for r in second.recommendations]
    assert got and all({"Comedy", "Sci-Fi"} <= set(i.genres) and i.year > 1995 for i in got)
    assert liked not in {i.item_id for i in got}


def test_a_chat_request_matching_nothing_says_so_and_shows_the_closest_items_labelled(recommender):
    context = ChatContext.from_catalog(CATALOG)  # no item is both Comedy and Horror
    reply = chat_turn(recommender, context, [{"role": "user", "content": "a funny horror film, not drama"}], k=3,
                      reasons=False)
    assert "No catalog item matches all of" in reply.text and len(reply.recommendations) == 3
    assert all(r.warning for r in reply.recommendations)
    assert not any("Drama" in CATALOG.get(r.item_id).genres for r in reply.recommendations)  # still ruled out
