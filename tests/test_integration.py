"""The default models on real ml-100k users: every promise of the API holds on real data."""

import random

import pytest

from recgen import RecgenConfig, Recommender, load_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(shared_data, tmp_path_factory):
    data = load_dataset(shared_data / "ml-100k")
    rec = Recommender.from_dataset(data, RecgenConfig(), index_dir=tmp_path_factory.mktemp("idx") / "ml")
    return data, rec


def test_real_users_get_valid_distinct_unseen_items(real):
    data, rec = real
    users = random.Random(7).sample(data.users, 6)
    requests = [{"history": data.history(u)[:-2], "k": 10, "reasons": False, "mode": mode}
                for u in users for mode in ("score", "generate")]
    for request, recs in zip(requests, rec.recommend_batch(requests)):
        ids = [r.item_id for r in recs]
        assert len(ids) == 10 == len(set(ids))
        assert all(i in data.catalog for i in ids)
        assert not set(ids) & set(request["history"])


def test_real_reasons_pass_the_check_or_fall_back(real):
    data, rec = real
    history = data.history("1")[:-2]
    recs = rec.recommend(history=history, k=5, reasons=True)
    past = [data.catalog.get(i) for i in history[-rec.config.prompt.history:]]
    for r in recs:
        assert r.reason
        if r.reason_source == "model":
            assert rec.pipeline.reasoner.checker.problems(r.reason, data.catalog.get(r.item_id), past) == []


def test_query_only_request_on_real_catalog(real):
    data, rec = real
    recs = rec.recommend(query="an animated movie for children", k=5, reasons=False)
    assert len(recs) == 5
    assert any("Animation" in data.catalog.get(r.item_id).genres or "Children's" in data.catalog.get(r.item_id).genres
               for r in recs)
