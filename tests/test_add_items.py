"""Live item addition (issue 15): new items are embedded alone, added to the FAISS index without a rebuild and
recommendable at once; existing ids are refused unless updating; the API, `recgen index --add` and
`POST /v1/items` all do it. Real MiniLM embeddings over project-made catalogs."""

from __future__ import annotations

import numpy as np
import pytest
from builders import make_dataset
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recgen import RecgenConfig, Recommender
from recgen.cli.main import app as cli
from recgen.data import Item
from recgen.errors import DataError
from recgen.pipeline import history_rows
from recgen.ranking.fusion import SourceStats
from recgen.server.app import create_app
from recgen.server.serving import ServerSettings

NEW = [Item("n1", "Lunar Submarine Odyssey (1996)", ("Adventure", "Sci-Fi"), 1996),
       Item("n2", "Accordion Wedding Blues (1994)", ("Comedy", "Romance"), 1994)]


@pytest.fixture()
def recommender(tiny_backend):
    return Recommender.from_dataset(make_dataset(), RecgenConfig(retrieval={"n_candidates": 6}), backend=tiny_backend)


def test_added_items_are_found_at_once_without_re_embedding_the_catalog(recommender):
    old = recommender.retriever
    before = old.item_embeddings.copy()
    size = recommender.add_items(NEW)
    new = recommender.retriever
    assert size == len(old.catalog) + 2 and new.index.ntotal == size and new.catalog.index_of("n2") == size - 1
    assert np.array_equal(new.item_embeddings[: len(before)], before)  # the old vectors are copied, not recomputed
    assert old.index.ntotal == len(before) and "n1" not in old.catalog  # requests in flight keep a whole index
    assert recommender.retriever.retrieve([], "a lunar submarine odyssey", n=1)[0][0] == "n1"
    got = recommender.recommend(query="a lunar submarine odyssey", k=6, reasons=False)  # the tiny LM's order is random
    assert "n1" in {r.item_id for r in got}
    history = recommender.catalog.ids[:3] + ["n2"]  # a new item in a history: transitions grew with the catalog
    assert recommender.retriever.transitions.matrix.shape == (size, size)
    assert len(recommender.recommend(history=history, k=4, reasons=False)) == 4


def test_an_existing_id_is_refused_unless_it_is_an_update(recommender):
    recommender.add_items(NEW)
    with pytest.raises(DataError, match="already in the catalog"):
        recommender.add_items([NEW[0]])
    with pytest.raises(DataError, match="twice"):
        recommender.add_items([Item("z", "Zed"), Item("z", "Zed again")])
    with pytest.raises(DataError, match="title"):
        recommender.add_items([{"item_id": "t"}])
    size = len(recommender.catalog)
    assert recommender.add_items([Item("n1", "Glacier Poetry Slam (1996)", ("Drama",), 1996)], update=True) == size
    assert recommender.catalog.get("n1").title.startswith("Glacier")
    assert recommender.retriever.retrieve([], "glacier poetry slam", n=1)[0][0] == "n1"


def test_save_keeps_the_grown_catalog_and_its_new_fingerprint(recommender, tmp_path, tiny_backend):
    fingerprint = recommender.catalog.fingerprint()
    recommender.add_items(NEW)
    assert recommender.catalog.fingerprint() != fingerprint
    recommender.save(tmp_path / "rec")
    loaded = Recommender.load(tmp_path / "rec", backend=tiny_backend)
    assert "n2" in loaded.catalog and loaded.retriever.index.ntotal == len(loaded.catalog)


def test_post_items_adds_live_and_bad_items_are_4xx(recommender):
    with TestClient(create_app(recommender, None, ServerSettings())) as client:
        ok = client.post("/v1/items", json={"items": [item.to_dict() for item in NEW]})
        assert ok.status_code == 200 and ok.json()["added"] == 2
        found = client.post("/v1/recommendations", json={"query": "accordion wedding blues", "k": 6, "reasons": False})
        assert "n2" in {r["item_id"] for r in found.json()["recommendations"]}
        again = client.post("/v1/items", json={"items": [NEW[0].to_dict()]})
        assert again.status_code == 400 and "already in the catalog" in again.json()["error"]["message"]
        for body in ({"items": []}, {"items": "n3"}, {"items": [{"item_id": "n3"}]}, {"items": [7]},
                     {"items": [{"item_id": "n3", "title": "x", "year": "soon"}]}, {"item": []}):
            assert client.post("/v1/items", json=body).status_code == 400, body
        updated = client.post("/v1/items", json={"items": [NEW[0].to_dict()], "update": True})
        assert updated.status_code == 200 and updated.json()["updated"] == 1


def test_recgen_index_add_updates_a_saved_recommender(recommender, tmp_path):
    recommender.save(tmp_path / "rec")
    items = tmp_path / "new.jsonl"
    items.write_text("".join(__import__("json").dumps(i.to_dict()) + "\n" for i in NEW))
    result = CliRunner().invoke(cli, ["index", "--add", str(items), "--out", str(tmp_path / "rec"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"added": 2' in result.output
    assert "n1" in Recommender.load(tmp_path / "rec").catalog
    again = CliRunner().invoke(cli, ["index", "--add", str(items), "--out", str(tmp_path / "rec")])
    assert again.exit_code == 2 and "already in the catalog" in again.output


def test_a_new_item_borrows_its_text_neighbours_transition_scores(recommender):
    """Without interactions a new item had no transition score, so the hybrid (cosine + transitions) ranked it
    below every item the history has transitions to: on the cold-item protocol it retrieved no cold target
    at all (Recall@20 = 0). It now borrows the transition scores of its nearest warm items by text."""
    history = recommender.catalog.ids[:6]
    twin = recommender.catalog.get(recommender.retriever.retrieve(history, n=1)[0][0])
    recommender.add_items([Item("twin", twin.title, twin.genres, twin.year)])
    retriever = recommender.retriever
    everything = len(retriever.catalog)

    def position() -> int:
        return [i for i, _ in retriever.retrieve(history, n=everything)].index("twin")

    borrowed = position()
    retriever = retriever.rebound(retriever.settings.model_copy(update={"cold_neighbours": 0}),
                                  retriever.transitions)  # the old behaviour
    alone = position()
    rows = np.array([retriever.catalog.index_of(i) for i in history])
    with_transitions = int((retriever.transitions.scores(rows) > 0).sum()) - len(set(history) & set(
        retriever.catalog.ids[r] for r in np.flatnonzero(retriever.transitions.scores(rows) > 0)))
    assert alone >= with_transitions  # below every item with a transition from the history
    assert borrowed < alone and borrowed < 10


def test_a_new_item_named_by_its_title_comes_first_for_a_new_user(recommender):
    """The popularity prior for requests without a history (chosen on filtered requests) once buried a new
    item under popular ones when a user named it; free text keeps its own order."""
    recommender.add_items(NEW)
    for item in NEW:
        assert recommender.retriever.retrieve([], item.title, n=1)[0][0] == item.item_id


def test_index_add_refuses_an_items_file_inside_the_output_folder(recommender, tmp_path):
    """Replacing the saved folder would delete the input: refused before any work, nothing changed."""
    recommender.save(tmp_path / "rec")
    before = sorted(p.name for p in (tmp_path / "rec").iterdir())
    items = tmp_path / "rec" / "new.jsonl"
    items.write_text("".join(__import__("json").dumps(i.to_dict()) + "\n" for i in NEW))
    result = CliRunner().invoke(cli, ["index", "--add", str(items), "--out", str(tmp_path / "rec")])
    assert result.exit_code == 2 and "inside the output folder" in result.output
    assert items.is_file() and sorted(p.name for p in (tmp_path / "rec").iterdir()) == sorted(before + ["new.jsonl"])
    assert "n1" not in Recommender.load(tmp_path / "rec").catalog


def test_index_add_on_a_fit_that_fell_back_to_the_hybrid_order_keeps_the_folder_loadable(recommender, tmp_path):
    """Regression (issue 22): on a folder whose fit fell back (fusion/ sources saved, no ranker) `index --add`
    reported success and left sources sized for the old catalog: every later load and add failed."""
    catalog = recommender.catalog
    rows = [history_rows(catalog, s) for s in make_dataset().sequences.values()]
    state = recommender.pipeline.state.with_second_stage(SourceStats.fit(rows, len(catalog)), None, 0,
                                                         fallback="too few users to fit a ranker")
    fell_back = Recommender(catalog, recommender.config, retriever=recommender.retriever, state=state)
    fell_back.save(tmp_path / "rec")
    assert (tmp_path / "rec" / "fusion" / "neighbours.npz").is_file()
    for n, item in enumerate(NEW):
        items = tmp_path / f"new{n}.jsonl"
        items.write_text(__import__("json").dumps(item.to_dict()) + "\n")
        result = CliRunner().invoke(cli, ["index", "--add", str(items), "--out", str(tmp_path / "rec")])
        assert result.exit_code == 0, result.output
        loaded = Recommender.load(tmp_path / "rec")  # before the fix: "fitted sources are sized for 60 items"
        assert len(loaded.catalog) == len(catalog) + n + 1 and item.item_id in loaded.catalog
