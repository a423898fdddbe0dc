"""Schema-driven fuzzing of the HTTP API (issue 12, robustness): schemathesis generates requests from the
server's own OpenAPI schema and sends them to the app in-process (ASGI), with the tiny recommender. Every
answer must be a documented status (never a 5xx), with a body that matches the schema.

Examples per operation and mode: 25 by default (``make test``); ``RECGEN_FUZZ_EXAMPLES=500`` for a longer run.
"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency (pip install -e .[dev])")
from fuzzkit import fuzz_statuses  # noqa: E402

from recgen.server.app import create_app  # noqa: E402
from recgen.server.serving import ServerSettings  # noqa: E402

EXAMPLES = int(os.environ.get("RECGEN_FUZZ_EXAMPLES", "25"))
KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
OPERATIONS = [("GET", "/healthz"), ("GET", "/v1/models"), ("POST", "/v1/recommendations"),
              ("POST", "/v1/chat/completions"), ("POST", "/v1/feedback"), ("DELETE", "/v1/users/{user_id}"),
              ("POST", "/v1/items")]
# (the tiny recommender has no event log: the feedback routes answer 400 here; tests/test_feedback_fuzz.py
# fuzzes them with one)


@pytest.fixture(scope="module")
def api_schema(tiny_backend, dataset):
    from recgen import RecgenConfig, Recommender

    # its own recommender: fuzzing POST /v1/items may grow the catalog, which no other test should see
    recommender = Recommender.from_dataset(dataset, RecgenConfig(retrieval={"n_candidates": 10},
                                                                 prompt={"reason_tokens": 8}), backend=tiny_backend)
    app = create_app(recommender, dataset, ServerSettings(api_key=KEY, max_body_bytes=200_000, timeout=60))
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)


def test_the_schema_lists_the_fuzzed_operations(api_schema):
    found = sorted((op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations())
    assert found == sorted(OPERATIONS)


#: Negative cases (data that breaks the schema) only where there is input to break: the POST bodies.
CASES = [(m, p, "positive") for m, p in OPERATIONS] + [(m, p, "negative") for m, p in OPERATIONS if m == "POST"]


def _served_model(case):
    if isinstance(case.body, dict):
        case.body["model"] = "recgen"
    return case


@pytest.mark.parametrize("method, path, mode", CASES)
def test_api_never_fails_and_matches_its_schema(api_schema, method, path, mode):
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    if path == "/v1/chat/completions" and mode == "positive":
        strategy = strategy.map(_served_model)  # else nearly every case stops at 404 (unknown model)

    sent = fuzz_statuses(strategy, AUTH, EXAMPLES, negative=mode == "negative")
    print(f"\n{method} {path} [{mode}]: {len(sent)} requests, statuses {sorted(set(sent))}")
    assert sent
