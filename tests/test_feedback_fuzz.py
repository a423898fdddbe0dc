"""Schema-driven fuzzing of the feedback routes with a recommender that HAS an event log (tests/test_server_fuzz.py
fuzzes every route with the tiny recommender, which has none): every answer is a documented status, never a
5xx, with a body that matches the schema; whatever was accepted leaves the statistics equal to a refit."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency (pip install -e .[dev])")
from builders import make_dataset  # noqa: E402
from fuzzkit import fuzz_statuses  # noqa: E402
from test_feedback_stats import assert_equals_fit  # noqa: E402

from recgen import RecgenConfig, Recommender  # noqa: E402
from recgen.pipeline import FittedState  # noqa: E402
from recgen.server.app import create_app  # noqa: E402
from recgen.server.serving import ServerSettings  # noqa: E402

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONFIG = RecgenConfig(retrieval={"n_candidates": 10}, prompt={"reason_tokens": 8})


@pytest.fixture(scope="module")
def served(tiny_recommender, tiny_backend, tmp_path_factory):
    data = make_dataset()
    rec = Recommender(data.catalog, CONFIG, retriever=tiny_recommender.retriever,
                      state=FittedState.fit(data, CONFIG.retrieval), backend=tiny_backend)
    rec.use_feedback(data, tmp_path_factory.mktemp("log") / "events.sqlite")
    app = create_app(rec, data, ServerSettings(api_key=KEY, max_body_bytes=20_000))
    return rec, data, schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)


def _known_item(case):
    """Half the generated events name a catalog item, so accepted events (and their statistics) get fuzzed too."""
    if isinstance(case.body, dict) and isinstance(case.body.get("user"), str) and len(case.body["user"]) % 2:
        case.body["item"] = str(len(case.body["user"]) % 60)
    return case


@pytest.mark.parametrize("method, path, mode", [("POST", "/v1/feedback", "positive"),
                                                ("POST", "/v1/feedback", "negative"),
                                                ("DELETE", "/v1/users/{user_id}", "positive")])
def test_feedback_routes_never_fail_and_match_their_schema(served, method, path, mode):
    rec, data, schema = served
    strategy = schema[path][method].as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    if mode == "positive" and method == "POST":
        strategy = strategy.map(_known_item)
    sent = fuzz_statuses(strategy, AUTH, 40, negative=mode == "negative")
    print(f"\n{method} {path} [{mode}]: {len(sent)} requests, statuses {sorted(set(sent))}")
    assert sent
    assert_equals_fit(rec.pipeline, data.sequences)
