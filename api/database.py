"""The API's connection pool (opened in the lifespan), the per-request transaction and dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import psycopg
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import NamedDependency
from psycopg_pool import AsyncConnectionPool

from api.target_checks import TargetChecker
from rowhook.db import async_pool
from rowhook.settings import Settings

Conn = psycopg.AsyncConnection[dict[str, Any]]
# Handler parameters filled by the dependencies of create_app().
ConnDep = NamedDependency[Conn]
TargetsDep = NamedDependency[TargetChecker]
AccountDep = NamedDependency[str]
SettingsDep = NamedDependency[Settings]
# How long a request waits for a free connection before it is answered 503.
POOL_WAIT_S = 5.0
POOL_OPEN_TIMEOUT_S = 30.0


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
