"""The API's connection pool (opened in the lifespan), the per-request transaction (run once more when its
connection broke before anything of it committed) and the dependencies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from litestar.utils.scope.state import CONNECTION_STATE_KEY
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
# The scope key of a request's RequestAttempt (set by RetryOnConnectionLoss, read by the connection
# dependencies).
ATTEMPT_KEY = "rowhook.attempt"

log = logging.getLogger("rowhook.api")


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


@dataclass
class RequestAttempt:
    """One run of a request; `connection_lost` is set when its connection broke before any commit."""

    connection_lost: bool = False


# The server rolled the transaction back for a concurrent change (psycopg's classes for SQLSTATE 40001
# and 40P01 do not derive from its TransactionRollback).
ROLLED_BACK = (
    psycopg.errors.TransactionRollback,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)


def connection_lost(exc: BaseException, conn: Conn | None) -> bool:
    """The request failed before any commit in a way that running it again can mend: its connection
    broke (database restarted, backend terminated: a psycopg OperationalError, or an error raised from
    one, and the connection is closed now), or the server rolled its transaction back for a concurrent
    change (a serialization failure: a relay moved the same delivery between the queue and the log at
    that moment, 0015). A query cancelled or refused on a live connection is not a loss."""
    if conn is None:
        return False
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ROLLED_BACK):
            return True
        if isinstance(cause, psycopg.OperationalError) and conn.closed:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def note_failure(scope: Scope, exc: BaseException, conn: Conn | None) -> None:
    """Called only where the handler raised, before the commit was attempted: the server rolled the
    transaction back with the lost connection, so the request may run again from scratch."""
    attempt = cast("RequestAttempt | None", scope.get(ATTEMPT_KEY))
    if attempt is not None and connection_lost(exc, conn):
        attempt.connection_lost = True


async def provide_conn(state: State, scope: Scope) -> AsyncIterator[Conn]:
    """One transaction per request: committed when the handler returns, rolled back if it raises."""
    async with pool_of(state).connection(timeout=POOL_WAIT_S) as conn:
        try:
            yield conn
        except Exception as exc:  # the handler's error, thrown in here; a failed commit is never caught
            note_failure(scope, exc, conn)
            raise


class LazyConn:
    """A request's pooled connection, taken on the first `await lazy_conn()`: a handler does its slow
    work that needs no database (resolving a target URL) first, and holds no connection meanwhile."""

    def __init__(self, pool: AsyncConnectionPool[Conn], stack: AsyncExitStack) -> None:
        self._pool = pool
        self._stack = stack
        self._conn: Conn | None = None
        # Run on the connection once it is taken, before the handler uses it (api/idempotency.py claims
        # its key there: after the slow checks that need no database, before anything is written).
        self.when_taken: Callable[[Conn], Awaitable[None]] | None = None

    async def __call__(self) -> Conn:
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(self._pool.connection(timeout=POOL_WAIT_S))
            if self.when_taken is not None:
                await self.when_taken(self._conn)
        return self._conn

    @property
    def taken(self) -> Conn | None:
        return self._conn


LazyConnDep = NamedDependency[LazyConn]


async def provide_lazy_conn(state: State, scope: Scope) -> AsyncIterator[LazyConn]:
    """Like provide_conn (one transaction, rolled back if the handler raises), taken only when used."""
    async with AsyncExitStack() as stack:
        lazy = LazyConn(pool_of(state), stack)
        try:
            yield lazy
        except Exception as exc:  # as in provide_conn: only the handler's error, never a failed commit
            note_failure(scope, exc, lazy.taken)
            raise


class RetryOnConnectionLoss:
    """Runs a request once more, from scratch, when its connection broke before anything of it could
    commit (the database restarted between the pool's check and the query), or when the server rolled
    it back for a concurrent change: the first run's answer (a 503 or a 409) is dropped and the request
    is replayed, body included, on a fresh connection. Nothing else is retried, and nothing whose answer
    has started."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received: list[ReceiveMessage] = []
        attempt = RequestAttempt()
        dropping = False

        async def recording_receive() -> ReceiveMessage:
            message = await receive()
            received.append(message)
            return message

        async def send_unless_lost(message: Message) -> None:
            nonlocal dropping
            if message["type"] == "http.response.start":
                dropping = attempt.connection_lost
            if not dropping:
                await send(message)

        scope[ATTEMPT_KEY] = attempt  # type: ignore[literal-required]
        await self.app(scope, recording_receive, send_unless_lost)
        if not dropping:
            return
        log.warning(
            "%s %s lost its database connection or was rolled back before committing; running it once more",
            scope.get("method"),
            scope["path"],
        )
        replay = iter(list(received))

        async def replaying_receive() -> ReceiveMessage:
            return next(replay, None) or await receive()

        # A fresh start: no parsed body, query or dependency of the first run is reused; no third run.
        fresh = {k: v for k, v in scope.items() if k != ATTEMPT_KEY}
        fresh["state"] = {k: v for k, v in scope.get("state", {}).items() if k != CONNECTION_STATE_KEY}
        await self.app(cast("Scope", fresh), replaying_receive, send)


def provide_targets(state: State) -> TargetChecker:
    return TargetChecker(allow_private=state.settings.allow_private_targets, resolver=state.resolver)


def provide_settings(state: State) -> Settings:
    return cast(Settings, state.settings)
