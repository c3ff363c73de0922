"""Relay under real faults: SIGKILL mid-stream, PostgreSQL restarted under it, two relays at once, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from rowhook.migrate import migrate
from tests.integration.relay_harness import (
    Conn,
    Receiver,
    create_tasks,
    insert_tasks,
    new_secret,
    receiver,
    start_relay_process,
    stop_process,
    subscribe,
    wait_until,
)
from tests.pgserver import embedded_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def webhook_ids_by_event(server: Receiver) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = defaultdict(set)
    for r in server.received:
        ids[r.body["id"]].add(r.webhook_id)
    return ids


def count(conn: Conn, sql: str, params: Any = None) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row["n"])


async def test_sigkill_mid_stream_then_restart_delivers_everything(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    total = 3000
    async with receiver() as server:
        subscribe(conn, server.url("hook", secret), secret)
        first = await start_relay_process(db_url)
        insert_tasks(conn, total)
        await wait_until(lambda: len(server.received) >= 300, what="the stream to be under way")
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        received_before_restart = len(set(server.event_ids()))
        assert received_before_restart < total, "the kill came too late to interrupt the stream"
        second = await start_relay_process(db_url)
        try:
            await wait_until(lambda: len(set(server.event_ids())) == total, timeout_s=60, what="every event")
            # The restarted relay removed the row of the killed one (its LISTEN backend is gone).
            await wait_until(
                lambda: count(conn, "SELECT count(*) AS n FROM rowhook.relays") == 1, what="cleanup"
            )
            # Deliveries the killed relay had sent but not recorded are reaped, sent again and recorded.
            unfinished = "SELECT count(*) AS n FROM rowhook.deliveries WHERE status <> 'succeeded'"
            await wait_until(lambda: count(conn, unfinished) == 0, what="every delivery recorded")
        finally:
            assert await stop_process(second) == 0
    ids = webhook_ids_by_event(server)
    assert len(ids) == total
    assert all(len(webhook_ids) == 1 for webhook_ids in ids.values()), (
        "a duplicate must carry the same webhook-id"
    )
    assert all(r.signature_ok for r in server.received)
    assert count(conn, "SELECT count(*) AS n FROM rowhook.deliveries WHERE status <> 'succeeded'") == 0


async def test_two_relays_at_once_deliver_each_event_exactly_once(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    total = 2000
    async with receiver() as server:
        subscribe(conn, server.url("a", secret), secret)
        subscribe(conn, server.url("b", secret), secret, max_in_flight=4)
        relays = [await start_relay_process(db_url) for _ in range(2)]
        try:
            for _ in range(4):
                insert_tasks(conn, total // 4)
                await asyncio.sleep(0.05)
            await wait_until(lambda: len(server.received) >= 2 * total, timeout_s=60, what="every delivery")
            await asyncio.sleep(0.3)  # a duplicate in flight would land now
        finally:
            assert [await stop_process(p) for p in relays] == [0, 0]
    for path in ("/a", "/b"):
        events = server.event_ids(path)
        assert len(events) == len(set(events)) == total, f"{path}: duplicates or missing events"
    assert len({r.webhook_id for r in server.received}) == 2 * total


async def test_postgres_restart_under_the_relay_loses_nothing() -> None:
    with embedded_server() as pg:
        url = pg.url("postgres")
        migrate(url)
        secret = new_secret()
        async with receiver() as server:
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                create_tasks(conn)
                subscribe(conn, server.url("hook", secret), secret)
                relay = await start_relay_process(url)
                insert_tasks(conn, 500)
                await wait_until(lambda: len(server.received) >= 50, what="the stream to be under way")
            await asyncio.to_thread(pg.restart)  # cuts every connection, the relay's included
            try:
                with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                    insert_tasks(conn, 100)
                    await wait_until(
                        lambda: len(set(server.event_ids())) == 600, timeout_s=60, what="every event"
                    )
                    assert relay.returncode is None, "the relay must survive the restart"
                    # It registered again on its new LISTEN connection, so NOTIFY keeps working.
                    await wait_until(
                        lambda: (
                            count(
                                conn,
                                "SELECT count(*) AS n FROM rowhook.relays WHERE backend_pid IN"
                                " (SELECT pid FROM pg_stat_activity)",
                            )
                            == 1
                        ),
                        what="re-registration",
                    )
                    await wait_until(
                        lambda: (
                            count(
                                conn,
                                "SELECT count(*) AS n FROM rowhook.deliveries WHERE status = 'succeeded'",
                            )
                            == 600
                        ),
                        what="results recorded",
                    )
            finally:
                assert await stop_process(relay) == 0
        ids = webhook_ids_by_event(server)
        assert all(len(webhook_ids) == 1 for webhook_ids in ids.values())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_stop_signal_releases_in_flight_work_and_exits_0(db_url: str, conn: Conn, signum: int) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def hangs(_: int) -> None:
        await asyncio.sleep(30)

    async with receiver() as server:
        server.responders["/hook"] = hangs
        # An endpoint that answered before gets its whole cap at once (a new one is probed singly).
        subscribe(conn, server.url("hook", secret), secret, last_success_at=datetime.now(UTC))
        relay = await start_relay_process(db_url, shutdown_grace_s=0.5, request_timeout_s=30, lease_s=60)
        insert_tasks(conn, 3)
        await wait_until(lambda: server.counts.get("/hook") == 3, what="three requests in flight")
        leased = {
            r["id"] for r in conn.execute("SELECT id FROM rowhook.deliveries WHERE status = 'delivering'")
        }
        assert len(leased) == 3
        assert await stop_process(relay, signum) == 0
        rows = conn.execute("SELECT status, lease_until FROM rowhook.deliveries").fetchall()
        assert rows == [{"status": "pending", "lease_until": None}] * 3  # released, not left to expire
        assert count(conn, "SELECT count(*) AS n FROM rowhook.relays") == 0
        server.responders.clear()
        relay = await start_relay_process(db_url)
        try:
            await wait_until(lambda: len(server.received) == 3, what="released work sent by the next relay")
        finally:
            assert await stop_process(relay) == 0
    assert {r.webhook_id for r in server.received} == leased
