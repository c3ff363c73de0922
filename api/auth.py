"""Bearer-token auth: `Authorization: Bearer <token>` resolved to the token's account, and its scope checked,
for every route."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from api.database import POOL_WAIT_S, pool_of
from api.errors import Forbidden, Unauthorized
from api.store import fetch_optional
from rowhook.tokens import hash_token

EXCLUDE_FROM_AUTH = "exclude_from_auth"
# The OpenAPI security scheme of the bearer token, and the requirement of every protected route.
BEARER = "BearerToken"
SECURED: list[dict[str, list[str]]] = [{BEARER: []}]
# Methods that change nothing: a `read` token may use them; anything else needs `manage`.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def needed_scope(method: str) -> str:
    return "read" if method.upper() in READ_METHODS else "manage"


def allows(scopes: list[str], needed: str) -> bool:
    """`manage` implies `read`."""
    return needed in scopes or "manage" in scopes


def provide_account(request: Request[str, str, Any]) -> str:
    return request.user


class BearerTokenAuth(AbstractAuthenticationMiddleware):
    """Resolves `Authorization: Bearer <token>` to the token's account (request.user), if the token may
    be used for this request's method."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization")
        if not header:
            raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <token>'")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthorized("malformed Authorization header; expected 'Bearer <token>'")
        async with pool_of(connection.app.state).connection(timeout=POOL_WAIT_S) as conn:
            row = await fetch_optional(conn, "authenticate_token", {"token_hash": hash_token(token)})
        check_usable(row, connection.scope["method"])  # type: ignore[typeddict-item]
        assert row is not None
        return AuthenticationResult(user=row["account"], auth=row["id"])


def check_usable(row: dict[str, Any] | None, method: str) -> None:
    """401 for a token that cannot be used at all (unknown, revoked, expired); 403 for one without the
    scope that `method` needs."""
    if row is None or row["revoked"]:
        raise Unauthorized("unknown or revoked token")
    if row["expired"]:
        expired_at = row["expires_at"].astimezone(UTC)  # the session's time zone may be another
        raise Unauthorized(f"token expired at {expired_at:%Y-%m-%dT%H:%M:%SZ}; ask for a new one")
    needed = needed_scope(method)
    if not allows(row["scopes"], needed):
        raise Forbidden(
            f"this token lacks the '{needed}' scope that {method} needs (it has: {', '.join(row['scopes'])})"
        )
