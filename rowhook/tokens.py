"""Account access tokens: creation (shown once), hashing, listing and revocation."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import psycopg

from rowhook.db import Row
from rowhook.sqlfiles import query

TOKEN_PREFIX = "rh_"


def hash_token(token: str) -> bytes:
    # Tokens carry 256 random bits, so a fast digest is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(
    conn: psycopg.Connection[Row], account: str, name: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Store a new token for `account`; return the token itself (never stored) and its record."""
    if not account.strip():
        raise ValueError("account must not be empty")
    token = new_token()
    record = conn.execute(
        query("insert_token"), {"account": account, "name": name, "token_hash": hash_token(token)}
    ).fetchone()
    assert record is not None
    return token, record


def list_tokens(conn: psycopg.Connection[Row], account: str | None = None) -> list[dict[str, Any]]:
    return conn.execute(query("list_tokens"), {"account": account}).fetchall()


def revoke_token(conn: psycopg.Connection[Row], token_id: str) -> bool:
    return conn.execute(query("revoke_token"), {"id": token_id}).fetchone() is not None
