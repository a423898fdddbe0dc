"""What a server with an API key shows without it (issue 12 Low): /healthz only says it is alive, the schema
needs the key, the interactive docs are off, and the bearer scheme is case-insensitive."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from recgen.server.app import bearer_token_matches, create_app
from recgen.server.serving import ServerSettings

KEY = "test-key-123"


@pytest.fixture(scope="module")
def keyed(tiny_recommender, dataset):
    with TestClient(create_app(tiny_recommender, dataset, ServerSettings(api_key=KEY))) as c:
        yield c


@pytest.fixture(scope="module")
def open_client(tiny_recommender, dataset):
    with TestClient(create_app(tiny_recommender, dataset, ServerSettings())) as c:
        yield c


def test_healthz_hides_details_without_the_key(keyed):
    anonymous = keyed.get("/healthz")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert keyed.get("/healthz", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
    full = keyed.get("/healthz", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert full["status"] == "ok" and "adapter" in full and full["items"] == 60 and "served" in full


def test_healthz_is_complete_without_a_configured_key(open_client):
    assert open_client.get("/healthz").json()["items"] == 60


def test_schema_needs_the_key_and_docs_are_off(keyed):
    assert keyed.get("/openapi.json").status_code == 401
    schema = keyed.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert schema.status_code == 200 and "/v1/chat/completions" in schema.json()["paths"]
    for path in ("/docs", "/redoc"):
        assert keyed.get(path).status_code == 404
        assert keyed.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 404


def test_docs_stay_public_without_a_configured_key(open_client):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert open_client.get(path).status_code == 200


@pytest.mark.parametrize("header", [f"bearer {KEY}", f"BEARER {KEY}", f"Bearer  {KEY}", f"  Bearer {KEY} "])
def test_bearer_scheme_is_case_insensitive(keyed, header):
    assert keyed.get("/v1/models", headers={"Authorization": header}).status_code == 200


@pytest.mark.parametrize("header", [KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer", "", f"Bearer{KEY}"])
def test_wrong_authorization_is_401(keyed, header):
    assert keyed.get("/v1/models", headers={"Authorization": header}).status_code == 401
    assert not bearer_token_matches(header.encode(), KEY)
