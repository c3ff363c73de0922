"""The API's connection pool (opened in the lifespan), the per-request transaction and bearer-token auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import psycopg
from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from psycopg_pool import AsyncConnectionPool

from api.errors import Unauthorized
from api.targets import TargetChecker
from rowhook.db import async_pool
from rowhook.settings import Settings
from rowhook.sqlfiles import query
from rowhook.tokens import hash_token

Conn = psycopg.AsyncConnection[dict[str, Any]]
# Handler parameters filled by the dependencies of create_app().
ConnDep = NamedDependency[Conn]
TargetsDep = NamedDependency[TargetChecker]
AccountDep = NamedDependency[str]
SettingsDep = NamedDependency[Settings]
# How long a request waits for a free connection before it is answered 503.
POOL_WAIT_S = 5.0
POOL_OPEN_TIMEOUT_S = 30.0
EXCLUDE_FROM_AUTH = "exclude_from_auth"
# The OpenAPI security scheme of the bearer token, and the requirement of every protected route.
BEARER = "BearerToken"
SECURED: list[dict[str, list[str]]] = [{BEARER: []}]


@asynccontextmanager
async def pool_lifespan(app: Litestar) -> AsyncIterator[None]:
    pool = async_pool(app.state.database_url, role="api", max_size=app.state.settings.api_pool_size)
    await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


def pool_of(state: State) -> AsyncConnectionPool[Conn]:
    return cast("AsyncConnectionPool[Conn]", state.pool)


async def provide_conn(state: State) -> AsyncIterator[Conn]:
    """One transaction per request: committed when the handler returns, rolled back if it raises."""
    async with pool_of(state).connection(timeout=POOL_WAIT_S) as conn:
        yield conn


class LazyConn:
    """A request's pooled connection, taken on the first `await lazy_conn()`: a handler does its slow
    work that needs no database (resolving a target URL) first, and holds no connection meanwhile."""

    def __init__(self, pool: AsyncConnectionPool[Conn], stack: AsyncExitStack) -> None:
        self._pool = pool
        self._stack = stack
        self._conn: Conn | None = None

    async def __call__(self) -> Conn:
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(self._pool.connection(timeout=POOL_WAIT_S))
        return self._conn


LazyConnDep = NamedDependency[LazyConn]


async def provide_lazy_conn(state: State) -> AsyncIterator[LazyConn]:
    """Like provide_conn (one transaction, rolled back if the handler raises), taken only when used."""
    async with AsyncExitStack() as stack:
        yield LazyConn(pool_of(state), stack)


def provide_targets(state: State) -> TargetChecker:
    return TargetChecker(allow_private=state.settings.allow_private_targets, resolver=state.resolver)


def provide_settings(state: State) -> Settings:
    return cast(Settings, state.settings)


def provide_account(request: Request[str, str, Any]) -> str:
    return request.user


class BearerTokenAuth(AbstractAuthenticationMiddleware):
    """Resolves `Authorization: Bearer <token>` to the token's account (request.user)."""

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
            cursor = await conn.execute(query("authenticate_token"), {"token_hash": hash_token(token)})
            row = await cursor.fetchone()
        if row is None:
            raise Unauthorized("unknown or revoked token")
        return AuthenticationResult(user=row["account"], auth=row["id"])
