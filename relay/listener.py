"""The LISTEN side: a dedicated autocommit connection that registers the relay; NOTIFY becomes a wake-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from tenacity import AsyncRetrying, RetryCallState, before_sleep_log, retry_if_exception_type

from relay.retrying import DATABASE_ERRORS, Backoff
from rowhook.db import async_connect
from rowhook.sqlfiles import query

log = logging.getLogger("rowhook.relay")

CHANNEL = "rowhook"
# The payload of the API's notification (api_wake_relays): a subscription was resumed or may send more.
SUBSCRIPTIONS_CHANGED = "subscriptions"
# notifies() returns this often, so a stop request or a dead connection is noticed promptly.
NOTIFY_CHECK_S = 1.0
RECONNECT_BACKOFF = Backoff(base_s=0.1, max_s=5.0, jitter_s=1.0)


class Listener:
    """Keeps a LISTEN connection alive (reconnecting with backoff) and calls `wake("notify")` on each
    notification (`on_subscriptions_changed` first for the API's), `wake("reconnect")` after each
    (re)connection."""

    def __init__(
        self,
        url: str,
        relay_id: str,
        wake: Callable[[str], None],
        stop: asyncio.Event,
        gone_after_s: float,
        on_registered: Callable[[], None],
        on_subscriptions_changed: Callable[[], None],
    ) -> None:
        self.url = url
        self.relay_id = relay_id
        self.wake = wake
        self.stop = stop
        self.gone_after_s = gone_after_s  # grace of relay_forget_dead
        self.on_registered = on_registered
        self.on_subscriptions_changed = on_subscriptions_changed
        self.connected = asyncio.Event()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._conn = await self._connect_with_backoff()
                self.connected.set()
                self.on_registered()
                self.wake("reconnect")  # notifications may have been missed while disconnected
                await self._pump(self._conn)
            except DATABASE_ERRORS as exc:
                self.connected.clear()
                log.warning("relay listen connection lost: %s; reconnecting", str(exc).strip())
            finally:
                await self._close()

    async def _connect_with_backoff(self) -> psycopg.AsyncConnection[Any]:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DATABASE_ERRORS),
            wait=RECONNECT_BACKOFF,
            stop=self._stopping,
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                conn = await async_connect(self.url, autocommit=True, role="relay-listen")
                try:
                    await conn.execute(query("relay_forget_dead"), {"grace_s": self.gone_after_s})
                    await conn.execute(query("relay_register"), {"relay_id": self.relay_id})
                    await conn.execute(f"LISTEN {CHANNEL}")
                except BaseException:
                    await conn.close()
                    raise
                return conn
        raise AssertionError("unreachable: tenacity retries forever or re-raises")

    def _stopping(self, _: RetryCallState) -> bool:
        return self.stop.is_set()

    async def _pump(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while not self.stop.is_set():
            async for note in conn.notifies(timeout=NOTIFY_CHECK_S):
                if note.payload == SUBSCRIPTIONS_CHANGED:
                    self.on_subscriptions_changed()
                self.wake("notify")
            if conn.closed or conn.broken:
                raise psycopg.OperationalError("listen connection closed")

    async def _close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
