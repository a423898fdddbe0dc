"""The same app started twice (test clients, schema fuzzers and reloaders do this) keeps serving: the first
shutdown used to leave the LM worker closed, so every later request got 503 (found by the schema fuzzing)."""

from fastapi.testclient import TestClient

from recgen.server.app import create_app


def test_app_serves_again_after_a_restart(tiny_recommender, dataset):
    app = create_app(tiny_recommender, dataset)
    body = {"query": "comedy", "k": 2, "reasons": False}
    for _ in range(2):
        with TestClient(app) as client:
            response = client.post("/v1/recommendations", json=body)
            assert response.status_code == 200, response.text
