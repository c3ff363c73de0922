"""The one connection helper: psycopg connections and pools configured the same way everywhere."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from rowhook.errors import DatabaseUnavailable

log = logging.getLogger("rowhook")

APPLICATION_NAME = "rowhook"
Row = dict[str, Any]


def connect(url: str, *, autocommit: bool = False, role: str = "cli") -> psycopg.Connection[Row]:
    try:
        return psycopg.connect(
            url, autocommit=autocommit, row_factory=dict_row, application_name=f"{APPLICATION_NAME}-{role}"
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip()) from exc


async def async_connect(url: str, *, autocommit: bool = False, role: str) -> psycopg.AsyncConnection[Row]:
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=autocommit, row_factory=dict_row, application_name=f"{APPLICATION_NAME}-{role}"
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip()) from exc


# How long a request waits for a pooled connection before it suspects the pool of waiting out its
# reconnection backoff (when fewer than max_size connections are in use, none is busy serving others).
STARVED_WAIT_S = 0.5


class AsyncPool(AsyncConnectionPool):
    """psycopg_pool's pool, checking each connection before handing it out, and not starved by its own
    backoff: once the database is back after an outage, the pool's next reconnection attempt may still
    be seconds away (1, 2, 4 s...). A request that finds no connection although fewer than max_size are
    in use then opens one of its own at once (closed after the request) instead of answering 503."""

    in_use = 0
    direct_url = ""
    direct_kwargs: dict[str, Any] = {}  # set by async_pool
    trust_recent_s = 0.0  # connections returned more recently than this are handed out unchecked

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, check=self._check, **kwargs)
        self._returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def _check(self, conn: Any) -> None:
        returned_at = self._returned_at.get(conn)
        if returned_at is not None and time.monotonic() - returned_at < self.trust_recent_s:
            return
        await AsyncConnectionPool.check_connection(conn)

    async def putconn(self, conn: Any) -> None:
        self._returned_at[conn] = time.monotonic()
        await super().putconn(conn)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:  # noqa: ASYNC109
        wait = self.timeout if timeout is None else timeout
        if self.in_use >= self.max_size:  # busy serving others: wait for one like any pool
            async with self._counted(super().connection(timeout=wait)) as conn:
                yield conn
            return
        started = time.monotonic()
        try:
            conn = await self.getconn(timeout=min(wait, STARVED_WAIT_S))
        except PoolTimeout:
            log.info("no pooled connection within %.1f s; connecting directly", STARVED_WAIT_S)
            remaining = max(1, int(wait - (time.monotonic() - started)))
            async with self._counted(self._connect_directly(remaining)) as direct:
                yield direct
            return
        self.in_use += 1
        try:
            async with conn:
                yield conn
        finally:
            self.in_use -= 1
            await self.putconn(conn)

    @asynccontextmanager
    async def _connect_directly(self, timeout_s: int) -> AsyncIterator[Any]:
        try:
            direct = await psycopg.AsyncConnection.connect(
                self.direct_url, connect_timeout=timeout_s, **self.direct_kwargs
            )
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(str(exc).strip()) from exc
        async with direct:  # commits on success, rolls back on error, then closes
            yield direct

    @asynccontextmanager
    async def _counted(self, manager: AbstractAsyncContextManager[Any]) -> AsyncIterator[Any]:
        self.in_use += 1
        try:
            async with manager as conn:
                yield conn
        finally:
            self.in_use -= 1


def async_pool(
    url: str, *, role: str, min_size: int = 1, max_size: int = 10, trust_recent_s: float = 0.0
) -> AsyncConnectionPool:
    """A pool that is not open yet: open it with `await pool.open(wait=True)` in a lifespan.

    Each connection is checked (an empty query: one round trip) before it is handed out, except one
    that came back less than `trust_recent_s` ago: a caller that retries on connection errors anyway
    (the relay) saves the round trip on every transaction of a busy loop."""
    kwargs = {"row_factory": dict_row, "application_name": f"{APPLICATION_NAME}-{role}"}
    pool = AsyncPool(url, min_size=min_size, max_size=max_size, open=False, kwargs=kwargs)
    pool.direct_url, pool.direct_kwargs = url, kwargs
    pool.trust_recent_s = trust_recent_s
    return pool
