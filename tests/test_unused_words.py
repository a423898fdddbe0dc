"""Issue 26 item 5: words of a request that no filter read and no item shown holds are told to the user (the
API's ``unused_words``, the chat's note, the batch line, the CLI), never silently dropped."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from recgen import RecgenConfig, Recommender
from recgen.batch.jobs import process_requests
from recgen.batch.requests import BatchRequest
from recgen.chat.state import ChatContext
from recgen.chat.turn import chat_turn
from recgen.data import Catalog, Item
from recgen.reasons.asked import unused_words
from recgen.retrieval.request_constraints import RequestReader
from recgen.server.app import create_app
from recgen.text import title_terms
from recgen.types import Recommendations, RecommendRequest

FILMS = Catalog([
    Item("1", "Heat (1995)", ("Action", "Crime", "Thriller"), 1995),
    Item("2", "Oliver Twist (1948)", ("Drama",), 1948),
    Item("3", "Space Jam (1996)", ("Animation", "Comedy"), 1996),
    Item("4", "The Sting (1973)", ("Comedy", "Crime"), 1973, "A clever con on a mob banker."),
    *(Item(f"c{n}", f"Plain Comedy {n} (199{n % 10})", ("Comedy",), 1990 + n % 10) for n in range(20)),
    *(Item(f"h{n}", f"Haunted House {n} (198{n % 10})", ("Horror",), 1980 + n % 10) for n in range(10)),
])
READER = RequestReader(FILMS)


def _unused(query: str, shown: list[str]) -> tuple[str, ...]:
    return unused_words(query, READER.read(query), [FILMS.get(i) for i in shown])


def test_words_no_filter_read_and_no_item_shown_holds_are_unused():
    assert _unused("a heist movie with a clever twist", ["c1", "c2"]) == ("heist", "clever", "twist")
    # a shown item's title, genres or description holds the word: it was matched (plural s and stems aside)
    assert _unused("a heist movie with a clever twist", ["2", "4"]) == ("heist",)
    assert _unused("crime films about cons", ["4"]) == ()  # "crime" is a genre filter; "cons" the description's "con"


def test_filters_use_their_words():
    assert _unused("a funny 90s film", ["c1"]) == ()                  # alias of Comedy, and a decade
    assert _unused("anything but horror, from the 80s", ["c1"]) == ()  # negated genre and a decade
    assert _unused("not too violent", ["c1"]) == ("violent",)         # a negation no filter can read
    assert _unused("a movie please", ["c1"]) == ()                    # filler says nothing
    assert unused_words(None, None, []) == () and unused_words("", None, []) == ()


def test_title_words_a_filter_requires_are_used():
    games = Catalog([Item("g1", "Project Gotham Racing 2 - Xbox"), Item("g2", "Mad Catz Racing Wheel"),
                     *(Item(f"x{n}", f"Filler Title Number {n} Deluxe") for n in range(40))])
    reader = RequestReader(games)
    query = "a racing game with realistic physics"
    read = reader.read(query)
    assert read.include_terms == ("racing",)
    assert unused_words(query, read, [games.get("g1"), games.get("g2")]) == ("game", "realistic", "physics")


@pytest.fixture(scope="module")
def recommender(tiny_backend):
    return Recommender(FILMS, RecgenConfig(retrieval={"n_candidates": 8}), backend=tiny_backend)


def test_every_surface_reports_them(recommender):
    query = "a funny heist film"
    recs = recommender.recommend(query=query, k=3, reasons=False)
    assert isinstance(recs, Recommendations) and recs.unused_words == ("heist",)
    assert "\u201cheist\u201d" in recs.unused_note()
    assert recommender.recommend(query="a funny film", k=3, reasons=False).unused_words == ()
    assert recommender.recommend(history=["c1"], k=3, reasons=False).unused_words == ()  # no request

    with TestClient(create_app(recommender, None)) as client:
        body = client.post("/v1/recommendations", json={"query": query, "k": 3, "reasons": False}).json()
        assert body["unused_words"] == ["heist"]
        chat = client.post("/v1/chat/completions", json={
            "model": "recgen", "messages": [{"role": "user", "content": "a funny heist film"}],
            "recgen": {"k": 3, "reasons": False}}).json()
        assert chat["unused_words"] == ["heist"] and "\u201cheist\u201d" in chat["choices"][0]["message"]["content"]

    line = process_requests(recommender, None, [BatchRequest("a", 1, RecommendRequest(query=query, k=3, reasons=False))])
    assert json.loads(line[0])["response"]["body"]["unused_words"] == ["heist"]

    reply = chat_turn(recommender, ChatContext.from_catalog(FILMS), [{"role": "user", "content": query}], k=3,
                      reasons=False)
    assert reply.unused_words == ("heist",) and any("heist" in note for note in reply.notes)
    assert "\u201cheist\u201d" in reply.text


@pytest.mark.slow
def test_a_heist_movie_with_a_clever_twist_on_ml_100k(shared_data, tiny_backend, monkeypatch):
    """The issue's chat turn: "heist" and "twist" were dropped silently. Now each word no filter read and no item
    shown holds is named in the reply (ml-100k titles and genres: no film says "heist")."""
    from recgen.data import load_dataset

    monkeypatch.setenv("RECGEN_DATA_DIR", str(shared_data))
    data = load_dataset("ml-100k")
    assert not any("heist" in item.title.lower() for item in data.catalog)
    rec = Recommender.from_dataset(data, RecgenConfig(retrieval={"n_candidates": 10}), backend=tiny_backend)
    reply = chat_turn(rec, ChatContext.from_catalog(data.catalog),
                      [{"role": "user", "content": "a heist movie with a clever twist"}],
                      history=list(data.history("1"))[-20:], k=5, reasons=False)
    assert len(reply.recommendations) == 5 and "heist" in reply.unused_words
    shown = [data.catalog.get(r.item_id) for r in reply.recommendations]
    for word in ("clever", "twist"):  # unused exactly when no item shown holds the word ("Twister" does not)
        held = any(word in title_terms(f"{item.title} {item.description}") for item in shown)
        assert (word in reply.unused_words) == (not held), (word, [i.title for i in shown])
    assert "Not used from your request" in reply.text and "\u201cheist\u201d" in reply.text
