"""Bearer tokens: every route but /health and /schema needs one; bad tokens get a 401 problem."""

from __future__ import annotations

from rowhook.tokens import create_token, revoke_token
from tests.integration.api_harness import Api, assert_problem

PROTECTED = [
    ("GET", "/resources"),
    ("GET", "/resources/tasks/items"),
    ("GET", "/subscriptions"),
    ("POST", "/subscriptions"),
    ("POST", "/hooks"),
    ("GET", "/deliveries/msg_00000000000000000000000000000000"),
]


def test_missing_token_is_401_on_every_protected_route(api: Api) -> None:
    with api.client() as anonymous:
        for method, path in PROTECTED:
            response = anonymous.request(method, path, json={})
            assert_problem(response, 401, "missing Authorization header")
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_malformed_authorization_header_is_401(api: Api) -> None:
    with api.client() as client:
        for header in ["Basic abc", "Bearer", "Bearer\tx", "Bearer a b", "token"]:
            response = client.get("/subscriptions", headers={"authorization": header})
            assert_problem(response, 401, "malformed Authorization header")


def test_unknown_and_revoked_tokens_are_401(api: Api) -> None:
    token, record = create_token(api.conn, "acme")
    with api.client(token) as client:
        assert client.get("/subscriptions").status_code == 200
        revoke_token(api.conn, record["id"])
        assert_problem(client.get("/subscriptions"), 401, "unknown or revoked token")
    with api.client("rh_" + "x" * 43) as client:
        assert_problem(client.get("/subscriptions"), 401, "unknown or revoked token")


def test_token_use_is_recorded(api: Api) -> None:
    token, record = create_token(api.conn, "acme")
    with api.client(token) as client:
        client.get("/resources")
    row = api.conn.execute(
        "SELECT last_used_at FROM rowhook.tokens WHERE id = %s", (record["id"],)
    ).fetchone()
    assert row is not None and row["last_used_at"] is not None


def test_health_and_schema_need_no_token(api: Api) -> None:
    with api.client() as anonymous:
        health = anonymous.get("/health").json()
        assert health["status"] == "ok" and health["database"] == "ok"
        assert anonymous.get("/schema/openapi.json").status_code == 200
        assert "swagger" in anonymous.get("/schema/swagger").text.lower()
