"""Request bodies are validated strictly (found by the schema fuzzing): ``{"reasons": 0.0}`` was accepted as
False and ``"k": "3"`` as 3, though the schema says boolean and integer."""

import pytest
from fastapi.testclient import TestClient

from recgen.server.app import create_app


@pytest.fixture(scope="module")
def client(tiny_recommender, dataset):
    with TestClient(create_app(tiny_recommender, dataset)) as c:
        yield c


@pytest.mark.parametrize("body", [{"query": "x", "reasons": 0.0}, {"query": "x", "k": "3"}, {"query": "x", "k": 2.0},
                                  {"query": 5}, {"history": "1"}])
def test_recommendations_reject_wrongly_typed_values(client, body):
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("extra", [{"stream": 0}, {"n": "1"}, {"recgen": {"reasons": 1}}, {"recgen": {"k": "2"}}])
def test_chat_rejects_wrongly_typed_values(client, extra):
    body = {"model": "recgen", "messages": [{"role": "user", "content": "drama"}], **extra}
    assert client.post("/v1/chat/completions", json=body).status_code == 400


def test_well_typed_requests_still_pass(client):
    ok = client.post("/v1/recommendations", json={"query": "drama", "k": 2, "reasons": False, "history": ["1"]})
    assert ok.status_code == 200, ok.text
    chat = client.post("/v1/chat/completions", json={"model": "recgen", "temperature": 0.2, "stream": False,
                                                      "messages": [{"role": "user", "content": [{"type": "text", "text": "drama"}]}],
                                                      "recgen": {"k": 2, "reasons": False}})
    assert chat.status_code == 200, chat.text
