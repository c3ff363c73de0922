"""Tokens the app mints: rowhook.create_token / revoke_token, the app role's GRANT, the CLI's options."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rowhook.cli import main
from rowhook.sqlfiles import query
from rowhook.tokens import hash_token
from tests.integration.api_harness import Api, assert_problem

Conn = psycopg.Connection[dict[str, Any]]
DBA_DOC = Path(__file__).resolve().parents[2] / "docs" / "dba.md"
TOKEN = re.compile(r"^rh_[A-Za-z0-9_-]{43}$")


def mint(conn: Conn, *args: Any) -> dict[str, Any]:
    placeholders = ", ".join(["%s"] * len(args))
    row = conn.execute(f"SELECT * FROM rowhook.create_token({placeholders})", args).fetchone()
    assert row is not None
    return row


def test_create_token_returns_the_token_once_and_stores_only_its_digest(conn: Conn) -> None:
    made = mint(conn, "acme", "zapier", ["read", "read"], None)
    assert list(made) == ["id", "token", "account", "name", "scopes", "expires_at"]
    assert TOKEN.fullmatch(made["token"]) and made["id"].startswith("tok_")
    assert (made["account"], made["name"], made["scopes"], made["expires_at"]) == (
        "acme",
        "zapier",
        ["read"],
        None,
    )
    stored = conn.execute("SELECT * FROM rowhook.tokens WHERE id = %s", (made["id"],)).fetchone()
    assert stored is not None and bytes(stored["token_hash"]) == hash_token(made["token"])
    assert made["token"] not in str(stored)
    assert mint(conn, "acme")["scopes"] == ["manage"]  # the default
    assert len({mint(conn, "acme")["token"] for _ in range(20)}) == 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", None, ["read"], None), "account must not be empty"),
        (("  ", None, ["read"], None), "account must not be empty"),
        ((None, None, ["read"], None), "account must not be empty"),
        (("acme", None, ["admin"], None), "unknown scope 'admin'"),
        (("acme", None, ["read", None], None), "unknown scope NULL"),
        (("acme", None, [], None), "scopes must name at least one scope"),
        (("acme", None, None, None), "scopes must name at least one scope"),
    ],
)
def test_create_token_refuses_bad_input_clearly(conn: Conn, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=re.escape(message)):
        mint(conn, *args)
    assert conn.execute("SELECT count(*) AS n FROM rowhook.tokens").fetchone() == {"n": 0}


def test_create_token_refuses_an_expiry_in_the_past(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is not in the future"):
        conn.execute("SELECT * FROM rowhook.create_token('acme', NULL, '{read}', now() - interval '1 s')")
    made = conn.execute(
        "SELECT * FROM rowhook.create_token('acme', NULL, '{read}', now() + interval '1 hour')"
    ).fetchone()
    assert made is not None and made["expires_at"] is not None


def test_revoke_token_says_whether_it_revoked(conn: Conn) -> None:
    made = mint(conn, "acme")
    assert conn.execute("SELECT rowhook.revoke_token(%s) AS r", (made["id"],)).fetchone() == {"r": True}
    assert conn.execute("SELECT rowhook.revoke_token(%s) AS r", (made["id"],)).fetchone() == {"r": False}
    assert conn.execute("SELECT rowhook.revoke_token('tok_nope') AS r").fetchone() == {"r": False}


def documented_grant(role: str) -> str:
    """The GRANT block of docs/dba.md, for `role`."""
    text = DBA_DOC.read_text()
    block = re.search(r"runs this block with a role in place of app_role\. -->\n```sql\n(.*?)```", text, re.S)
    assert block is not None, "the app role's GRANT block is missing from docs/dba.md"
    return block[1].replace("app_role", role)


@pytest.fixture
def app_role(conn: Conn) -> Iterator[str]:
    """A NOLOGIN role (roles are global to the server: a unique name, dropped afterwards)."""
    role = f"rowhook_app_{uuid.uuid4().hex[:12]}"
    conn.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        yield role
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_without_the_grant_a_role_cannot_mint(conn: Conn, app_role: str) -> None:
    conn.execute(f"GRANT USAGE ON SCHEMA rowhook TO {app_role}")  # EXECUTE was revoked from PUBLIC
    conn.execute(f"SET ROLE {app_role}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        mint(conn, "acme")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT rowhook.revoke_token('tok_x')")


def test_the_documented_grant_lets_an_app_role_mint_and_revoke_and_nothing_more(
    conn: Conn, app_role: str, api: Api
) -> None:
    conn.execute(documented_grant(app_role))
    conn.execute(f"SET ROLE {app_role}")
    made = mint(conn, "acme", "integration", ["read"], None)
    assert TOKEN.fullmatch(made["token"])
    for statement in [
        "SELECT * FROM rowhook.tokens",
        "SELECT * FROM rowhook.subscriptions",
        "SELECT * FROM rowhook.outbox",
        "SELECT * FROM rowhook.idempotency_keys",
        "UPDATE rowhook.tokens SET revoked_at = NULL",
        "INSERT INTO rowhook.tokens (account, token_hash) VALUES ('acme', 'x')",
        "INSERT INTO rowhook.subscriptions (account, resource, target_url, secret)"
        " VALUES ('a', 'b', 'c', 'd')",
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    conn.execute("RESET ROLE")
    # The minted token works on the API, within its scope.
    with api.client(made["token"]) as client:
        assert client.get("/subscriptions").status_code == 200
        body = {"target_url": "http://127.0.0.1:9/h", "resource": "tasks"}
        assert_problem(client.post("/subscriptions", json=body), 403, "'manage' scope")
        conn.execute(f"SET ROLE {app_role}")
        assert conn.execute("SELECT rowhook.revoke_token(%s) AS r", (made["id"],)).fetchone() == {"r": True}
        conn.execute("RESET ROLE")
        assert_problem(client.get("/subscriptions"), 401, "revoked")


def test_the_functions_are_security_definer_with_a_pinned_search_path(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT proname, prosecdef, proconfig,"
        " EXISTS (SELECT FROM aclexplode(coalesce(proacl, acldefault('f', proowner))) a"
        "         WHERE a.grantee = 0) AS public_may_execute"
        " FROM pg_proc"
        " WHERE pronamespace = 'rowhook'::regnamespace AND proname IN ('create_token', 'revoke_token')"
        " ORDER BY proname"
    ).fetchall()
    assert [r["proname"] for r in rows] == ["create_token", "revoke_token"]
    for row in rows:
        assert row["prosecdef"] and row["proconfig"] == ["search_path=pg_catalog, pg_temp"]
        assert row["public_may_execute"] is False


def test_cli_creates_tokens_with_scopes_and_expiry(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["token", "create", "--database-url", db_url, "--account", "acme"]
    assert main([*args, "--scope", "read", "--expires-in", "1h"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert TOKEN.fullmatch(token) and "scopes: read" in err and "expires" in err
    assert main([*args, "--scope", "read", "--scope", "manage", "--expires-at", "2099-01-01T00:00:00Z"]) == 0
    assert "scopes: manage, read" in capsys.readouterr().err
    with psycopg.connect(db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        found = conn.execute(query("authenticate_token"), {"token_hash": hash_token(token)}).fetchone()
        assert found is not None and found["scopes"] == ["read"] and not found["expired"]
        assert conn.execute(
            "SELECT expires_at > now() + interval '59 minutes' AND expires_at < now() + interval '61 minutes'"
            " AS ok FROM rowhook.tokens WHERE token_hash = %s",
            (hash_token(token),),
        ).fetchone() == {"ok": True}
    assert main(["token", "list", "--database-url", db_url]) == 0
    listed = capsys.readouterr().out
    assert "\tread\tactive until " in listed and "\tmanage,read\tactive until 2099-01-01" in listed


def test_cli_refuses_bad_scope_and_expiry(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["token", "create", "--database-url", db_url, "--account", "acme"]
    for bad in (["--scope", "admin"], ["--expires-at", "2099-01-01T00:00"], ["--expires-in", "soon"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, *bad])
        assert exit_info.value.code == 2
    assert "give a time zone" in capsys.readouterr().err
    assert main([*args, "--expires-at", "2001-01-01T00:00:00Z"]) == 1
    assert "is not in the future" in capsys.readouterr().err
    assert main(["token", "create", "--database-url", db_url, "--account", " "]) == 1
    assert "account must not be empty" in capsys.readouterr().err
