"""Account access tokens: minted and revoked by the SQL functions of 0009 (shown once), hashed, listed."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import psycopg

from rowhook.db import Row
from rowhook.sqlfiles import query

TOKEN_PREFIX = "rh_"
# `read` allows GET and HEAD; `manage` allows everything of the account, and implies `read`.
SCOPES = ("read", "manage")


def hash_token(token: str) -> bytes:
    # Tokens carry 244 random bits, so a fast digest is enough: there is nothing to brute-force.
    # rowhook.create_token stores sha256(token) computed the same way.
    return hashlib.sha256(token.encode()).digest()


def create_token(
    conn: psycopg.Connection[Row],
    account: str,
    name: str | None = None,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    expires_in_s: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """Mint a token with rowhook.create_token (the function an app calls itself); return the token
    (never stored) and its record. Bad input raises the function's psycopg error (a clear message)."""
    record = conn.execute(
        query("create_token"),
        {
            "account": account,
            "name": name,
            "scopes": scopes or ["manage"],
            "expires_at": expires_at,
            "expires_in_s": expires_in_s,
        },
    ).fetchone()
    assert record is not None
    return record.pop("token"), record


def list_tokens(conn: psycopg.Connection[Row], account: str | None = None) -> list[dict[str, Any]]:
    return conn.execute(query("list_tokens"), {"account": account}).fetchall()


def revoke_token(conn: psycopg.Connection[Row], token_id: str) -> bool:
    row = conn.execute(query("revoke_token"), {"id": token_id}).fetchone()
    return bool(row and row["revoked"])
