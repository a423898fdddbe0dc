"""Request following (recgen.evaluation.requests): requests built from a target's own attributes, the three ways
of running them, and the satisfaction rule, on project-made catalogs."""

from __future__ import annotations

import random

from builders import make_dataset

from recgen.data import Catalog, Item
from recgen.data.requests import RequestBuilder
from recgen.evaluation.protocol import EvalData, sample_users
from recgen.evaluation.requests import WAYS, evaluate_requests


def test_genre_decade_requests_and_their_rule():
    catalog = Catalog([Item("1", "Old Comedy", ("Comedy",), 1994), Item("2", "New Comedy", ("Comedy",), 2004),
                       Item("3", "Old Horror", ("Horror",), 1995)])
    request = RequestBuilder(catalog).positive(catalog.get("1"), random.Random(0))
    assert request.text == "a 90s comedy film" and request.kind == "genre+decade"
    assert [request.satisfied(catalog.get(i)) for i in "123"] == [True, False, False]
    negative = RequestBuilder(catalog).negative(catalog.get("1"), [catalog.get("3")], random.Random(0))
    assert negative.text == "anything but horror"
    assert [negative.satisfied(catalog.get(i)) for i in "123"] == [True, True, False]


def test_title_word_requests_on_a_titles_only_catalog():
    titles = [f"{brand} Hydrating Moisturizers" for brand in ("Zorb", "Quix", "Lumo", "Vexa", "Pryn", "Dalt")] + [f"Shampoo number {i}" for i in range(400)]  # 2% of 406 = 8 >= 6
    catalog = Catalog([Item(str(n), t) for n, t in enumerate(titles)])
    builder = RequestBuilder(catalog)
    request = builder.positive(catalog.get("0"), random.Random(1))
    assert request.kind == "title word" and request.text in ("a hydrating", "a moisturizer")
    assert request.satisfied(Item("x", "A light MOISTURIZER")) == (request.text == "a moisturizer")
    assert builder.negative(catalog.get("0"), [catalog.get("7")], random.Random(0)) is None  # no genres


def test_the_three_ways_and_the_summary():
    data = EvalData.from_dataset(make_dataset())
    seen = []

    def recommend(history, query, k):
        seen.append((bool(history), query is not None))
        target_first = [data.dataset.catalog.ids[data.target("test", p)] for p in range(data.n_users)]
        return ([i for i in target_first if i not in history][:k] if query else list(data.dataset.catalog.ids[:k]))

    result = evaluate_requests(recommend, data, sample_users(data.n_users, 6, 0), seed=0)
    assert {(True, True), (False, True), (True, False)} == set(seen)
    for entry in result["summary"].values():
        assert set(WAYS) <= set(entry) and entry["requests"] > 0
        for way in WAYS:
            assert 0 <= entry[way]["satisfying_share"] <= 1 and 0 <= entry[way]["ndcg@10"] <= 1
    assert all(row["user"] != data.user_ids[0] for row in result["rows"])  # pseudonymised
