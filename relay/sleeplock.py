"""The relay's half of the wake-up handshake: the sleep lock, held on a session of its own while waiting."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from rowhook.db import async_connect
from rowhook.sqlfiles import query

log = logging.getLogger("rowhook.relay")

# How long a relay about to sleep waits for writers that saw it awake to commit (usually milliseconds).
WAIT_FOR_WRITERS_MS = 200


class SleepLock:
    """Writers NOTIFY only while some relay holds this lock (see rowhook.sleep_lock_key in sql/)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.held = False

    async def acquire(self) -> bool:
        """Take the lock before waiting. True when writers will wake us: we hold it, or another relay
        sleeps holding it (its NOTIFY reaches every listener). False when writers that saw the relays
        awake still hold it after WAIT_FOR_WRITERS_MS: then only a short wait is safe."""
        if self.held:  # advisory locks count: never take it twice
            return True
        conn = await self._connection()
        row = await (await conn.execute(query("relay_try_sleep_lock"))).fetchone()
        assert row is not None
        if row["held"]:
            self.held = True
        elif row["some_relay_asleep"]:
            return True
        else:
            try:
                await conn.execute(query("relay_wait_sleep_lock"))
                self.held = True
            except psycopg.errors.LockNotAvailable:
                return False
        return True

    async def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._conn is not None and not self._conn.closed:
            await self._conn.execute(query("relay_release_sleep_lock"))

    async def close(self) -> None:
        self.held = False
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.held = False  # a lost session took its lock with it
            self._conn = await async_connect(self.url, autocommit=True, role="relay-sleep")
            await self._conn.execute(f"SET lock_timeout = {WAIT_FOR_WRITERS_MS}")
        return self._conn
