"""The relay gives back the index pages a drained backlog grew the delivery queue's indexes to (a btree
never shrinks by itself), without making the queue's other users wait, and only when it is worth it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

import relay.store
import relay.worker
from relay.store import Store
from relay.worker import relay_session_url
from rowhook.db import async_pool
from rowhook.sqlfiles import query
from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    insert_tasks,
    new_secret,
    receiver,
    running_relay,
    settings,
    subscribe,
    wait_until,
)

BURST = 3000

QUEUE_FILES = (
    "SELECT c.relname, c.relfilenode FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE i.indrelid = 'rowhook.delivery_queue'::regclass ORDER BY c.relname"
)
INDEX_BYTES = "SELECT pg_indexes_size('rowhook.delivery_queue') AS n"


def queue_index_files(conn: Conn) -> dict[str, int]:
    return {row["relname"]: row["relfilenode"] for row in conn.execute(QUEUE_FILES)}


def index_bytes(conn: Conn) -> int:
    row = conn.execute(INDEX_BYTES).fetchone()
    assert row is not None
    return int(row["n"])


def finished(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) AS n FROM rowhook.delivery_log WHERE status = 'succeeded'").fetchone()
    assert row is not None
    return int(row["n"])


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thresholds a test-sized burst passes: checked after 1,000 deliveries, rebuilt above 160 kB of index
    (an empty queue's indexes take about 60) with at most 1,000 rows queued; looked at again soon."""
    monkeypatch.setattr(relay.worker, "QUEUE_CHECK_AFTER_CREATED", 1000)
    monkeypatch.setattr(relay.store, "REBUILD_QUEUE_MIN_INDEX_BYTES", 160 * 1024)
    monkeypatch.setattr(relay.store, "REBUILD_QUEUE_MAX_ROWS", 1000)
    monkeypatch.setattr(relay.worker, "QUEUE_CHECK_RETRY_S", (0.2, 1.0))


async def drain_burst(db_url: str, conn: Conn, rebuilt_to: int | None = None) -> None:
    """BURST events to one subscription, drained by a relay to a real receiver; waits for it to go idle
    (and, with `rebuilt_to`, until the queue's indexes take at most that many bytes)."""
    create_tasks(conn)
    async with receiver() as server:
        secret = new_secret()
        subscribe(conn, server.url("hook", secret), secret, max_in_flight=64)
        insert_tasks(conn, BURST)
        async with running_relay(db_url) as relay_:
            await wait_until(lambda: finished(conn) == BURST, 60, "every delivery recorded")
            await wait_until(lambda: not relay_.in_flight, 10, "the relay's sends to finish")
            # Idle: the last outcomes written woke the relay to look at the queue on its way to sleep.
            if rebuilt_to is not None:
                await wait_until(lambda: index_bytes(conn) <= rebuilt_to, 60, "the queue's indexes rebuilt")
            else:
                await asyncio.sleep(1.0)
        assert len(server.received) == BURST
        assert all(r.signature_ok for r in server.received)


async def test_a_drained_burst_gives_the_queues_index_pages_back(
    db_url: str, conn: Conn, small_thresholds: None
) -> None:
    files_before = queue_index_files(conn)
    # An empty btree is its metapage (and a root page once written): far below what BURST rows took. A
    # rebuild keeps the entries of rows a snapshot may still see (another session's on a shared server):
    # the relay rebuilds again a second or so later.
    await drain_burst(db_url, conn, rebuilt_to=2 * 8192 * len(files_before))
    files_after = queue_index_files(conn)
    assert set(files_after) == set(files_before), "the same indexes, rebuilt"
    assert all(files_after[name] != files_before[name] for name in files_before), "every index rebuilt"
    row = conn.execute("SELECT count(*) AS n FROM rowhook.delivery_queue").fetchone()
    assert row == {"n": 0}
    assert finished(conn) == BURST, "nothing lost by the rebuild"


async def test_a_burst_below_the_thresholds_leaves_the_indexes_alone(db_url: str, conn: Conn) -> None:
    files_before = queue_index_files(conn)
    await drain_burst(db_url, conn)
    assert queue_index_files(conn) == files_before


async def test_the_rebuild_waits_for_nobody_and_comes_once_the_queue_is_free(
    db_url: str, conn: Conn, small_thresholds: None
) -> None:
    create_tasks(conn)
    subscribe(conn, "https://example.com/hook", new_secret())
    insert_tasks(conn, BURST)
    conn.execute(query("relay_expand_changes"), {"batch": BURST})
    conn.execute(query("relay_fan_out"), {"batch": BURST, "free": 0, "lease_s": 60, "relay_id": "none"})
    grown = index_bytes(conn)
    assert grown > relay.store.REBUILD_QUEUE_MIN_INDEX_BYTES
    pool = async_pool(relay_session_url(db_url), role="relay", max_size=2)
    await pool.open(wait=True)
    try:
        store = Store(pool, "test", settings())
        assert await store.rebuild_outgrown_queue() == "busy", "3,000 rows are still queued"
        conn.execute("UPDATE rowhook.deliveries SET status = 'succeeded', finished_at = now()")
        files_before = queue_index_files(conn)
        async with holding_the_queue(db_url):
            started = time.monotonic()
            assert await store.rebuild_outgrown_queue() == "locked", "another session writes the queue"
            assert time.monotonic() - started < 5, "gave up at once instead of queueing behind it"
        assert queue_index_files(conn) == files_before
        outcomes = [await store.rebuild_outgrown_queue()]
        assert outcomes[0] in ("rebuilt", "busy"), "busy: rows some snapshot still sees kept their entries"
        while outcomes[-1] == "busy" and len(outcomes) < 50:
            await asyncio.sleep(0.2)
            outcomes.append(await store.rebuild_outgrown_queue())
        assert outcomes[-1] == "rebuilt", outcomes
        assert index_bytes(conn) < grown
        assert await store.rebuild_outgrown_queue() == "kept", "nothing left to give back"
    finally:
        await pool.close()
    assert finished(conn) == BURST


@contextlib.asynccontextmanager
async def holding_the_queue(db_url: str) -> AsyncIterator[None]:
    """Another session in the middle of a transaction that wrote to the queue (as the API's retry does)."""
    async with await psycopg.AsyncConnection.connect(db_url) as other:
        await other.execute("LOCK TABLE rowhook.delivery_queue IN ROW EXCLUSIVE MODE")
        yield
        await other.commit()
