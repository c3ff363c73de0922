"""Bearer tokens: every route but /health and /schema needs one; bad tokens get a 401 problem."""

from __future__ import annotations

from datetime import datetime

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


def test_a_read_token_may_get_but_every_change_is_403_naming_manage(api: Api) -> None:
    sub = api.subscribe()
    ping = api.acme.post(f"/subscriptions/{sub['id']}/test").json()
    token, _ = create_token(api.conn, "acme", "reader", scopes=["read"])
    with api.client(token) as reader:
        for path in [
            "/resources",
            "/subscriptions",
            f"/subscriptions/{sub['id']}",
            f"/deliveries/{ping['id']}",
        ]:
            assert reader.get(path).status_code == 200, path
        assert reader.head("/subscriptions").status_code in (200, 405)  # never a 401/403
        changes = [
            ("POST", "/subscriptions", {"target_url": "http://127.0.0.1:9/h", "resource": "tasks"}),
            ("PATCH", f"/subscriptions/{sub['id']}", {"status": "paused"}),
            ("POST", f"/subscriptions/{sub['id']}/secret/rotate", None),
            ("POST", f"/subscriptions/{sub['id']}/test", None),
            ("POST", f"/subscriptions/{sub['id']}/replay", {"since": "2026-01-01T00:00:00Z"}),
            ("POST", f"/deliveries/{ping['id']}/retry", None),
            ("POST", "/hooks", {"target_url": "http://127.0.0.1:9/h", "event": "tasks.created"}),
            ("DELETE", f"/hooks/{sub['id']}", None),
            ("DELETE", f"/subscriptions/{sub['id']}", None),
        ]
        for method, path, body in changes:
            response = reader.request(method, path, json=body)
            assert_problem(response, 403, "'manage' scope", method)
    still = api.acme.get(f"/subscriptions/{sub['id']}").json()
    assert still["status"] == "active" and still["previous_secret_expires_at"] is None
    assert api.conn.execute("SELECT count(*) AS n FROM rowhook.subscriptions").fetchone() == {"n": 1}


def test_a_manage_token_may_read_too(api: Api) -> None:
    token, record = create_token(api.conn, "acme", "admin", scopes=["manage"])
    assert record["scopes"] == ["manage"]
    with api.client(token) as admin:
        assert admin.get("/subscriptions").status_code == 200
        assert (
            admin.post(
                "/subscriptions", json={"target_url": "http://127.0.0.1:9/h", "resource": "tasks"}
            ).status_code
            == 201
        )


def test_an_expired_token_is_401_saying_expired_and_is_not_marked_used(api: Api) -> None:
    token, record = create_token(api.conn, "acme", "short", expires_in_s=1.0)
    with api.client(token) as client:
        assert client.get("/subscriptions").status_code == 200
        api.conn.execute(
            "UPDATE rowhook.tokens SET expires_at = now() - interval '1 second', last_used_at = NULL"
            " WHERE id = %s",
            (record["id"],),
        )
        problem = assert_problem(client.get("/subscriptions"), 401, "expired")
        assert client.get("/subscriptions").headers["www-authenticate"].startswith("Bearer")
        assert "revoked" not in problem["detail"]
    row = api.conn.execute(
        "SELECT last_used_at FROM rowhook.tokens WHERE id = %s", (record["id"],)
    ).fetchone()
    assert row == {"last_used_at": None}


def test_a_revoked_expired_token_says_revoked(api: Api) -> None:
    token, record = create_token(api.conn, "acme", expires_in_s=3600.0)
    revoke_token(api.conn, record["id"])
    api.conn.execute("UPDATE rowhook.tokens SET expires_at = now() - interval '1 hour'")
    with api.client(token) as client:
        assert_problem(client.get("/subscriptions"), 401, "unknown or revoked token")


def test_last_used_at_is_refreshed_at_most_once_a_minute(api: Api) -> None:
    token, record = create_token(api.conn, "acme")
    with api.client(token) as client:
        client.get("/resources")
        first = last_used(api, record["id"])
        client.get("/resources")
        assert last_used(api, record["id"]) == first  # within the minute: no write
        api.conn.execute(
            "UPDATE rowhook.tokens SET last_used_at = now() - interval '2 minutes' WHERE id = %s",
            (record["id"],),
        )
        client.get("/resources")
        assert last_used(api, record["id"]) > first


def last_used(api: Api, token_id: str) -> datetime:
    row = api.conn.execute("SELECT last_used_at FROM rowhook.tokens WHERE id = %s", (token_id,)).fetchone()
    assert row is not None and row["last_used_at"] is not None
    return row["last_used_at"]  # type: ignore[no-any-return]
