"""Relay containment: an error in one delivery is that delivery's failed attempt; dead leases are freed."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

import relay.sender
import relay.worker
from relay.policy import Outcome
from relay.sender import Attempt
from relay.store import Result
from relay.worker import Relay
from rowhook.status import format_status, read_status
from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    insert_tasks,
    new_secret,
    receiver,
    running_relay,
    settings,
    start_relay_process,
    stop_process,
    subscribe,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


def delivery_rows(conn: Conn, subscription_id: str) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM rowhook.deliveries WHERE subscription_id = %s ORDER BY created_at", (subscription_id,)
    ).fetchall()


def attempt_errors(conn: Conn, delivery_id: str) -> list[str | None]:
    rows = conn.execute(
        "SELECT error FROM rowhook.attempts WHERE delivery_id = %s ORDER BY seq NULLS LAST", (delivery_id,)
    )
    return [row["error"] for row in rows]


def all_failed(conn: Conn, subscription_id: str, count: int) -> bool:
    rows = delivery_rows(conn, subscription_id)
    return len(rows) == count and all(row["status"] == "failed" for row in rows)


async def hostile_503(_: int) -> web.StreamResponse:
    return web.Response(status=503, headers={"Retry-After": "explode"})


@pytest.mark.parametrize("where", ["sending", "deciding"])
async def test_an_unexpected_error_is_a_failed_attempt_of_that_delivery_and_the_relay_goes_on(
    db_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        server.responders["/hostile"] = hostile_503
        hostile = subscribe(conn, server.url("hostile", secret), secret)
        subscribe(conn, server.url("healthy", secret), secret)
        # A bug reached only by this subscription's deliveries, in the sender or in the policy.
        if where == "sending":
            body = relay.sender.delivery_body

            def exploding_body(delivery: dict[str, Any]) -> bytes:
                if delivery["subscription_id"] == hostile:
                    raise OverflowError("signed integer is greater than maximum")
                return body(delivery)

            monkeypatch.setattr(relay.sender, "delivery_body", exploding_body)
        else:
            decide = relay.worker.decide

            def exploding_decide(**kwargs: Any) -> Outcome:
                if kwargs["retry_after"] == "explode":
                    raise OverflowError("signed integer is greater than maximum")
                return decide(**kwargs)

            monkeypatch.setattr(relay.worker, "decide", exploding_decide)
        async with running_relay(db_url, retry_schedule_s=(0.0, 0.1, 0.1)) as running:
            insert_tasks(conn, 3)
            await wait_until(lambda: len(server.event_ids("/healthy")) == 3, what="the healthy subscription")
            await wait_until(lambda: all_failed(conn, hostile, 3), what="hostile deliveries to fail")
            insert_tasks(conn, 2)
            await wait_until(lambda: len(server.event_ids("/healthy")) == 5, what="later events")
            await wait_until(lambda: all_failed(conn, hostile, 5), what="later hostile deliveries to fail")
            assert running.failure is None
    assert all(r.signature_ok for r in server.received)
    for row in delivery_rows(conn, hostile):
        errors = attempt_errors(conn, row["id"])
        assert row["attempts"] == 3 and len(errors) == 3, "the normal schedule, one attempt at a time"
        assert all(e and e.startswith("internal error: OverflowError: signed integer") for e in errors)
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "unexpected error" in r.message]
    assert logged and all(r.exc_info for r in logged), "logged at ERROR with the traceback"


def leased_pings(conn: Conn, subscription_id: str, count: int, leased_by: str, lease_s: float) -> list[str]:
    rows = conn.execute(
        "INSERT INTO rowhook.deliveries"
        " (subscription_id, account, event_type, body, status, lease_until, leased_by)"
        " SELECT %s, 'acme', 'ping', '{\"type\": \"ping\"}', 'delivering',"
        "        now() + make_interval(secs => %s), %s FROM generate_series(1, %s) RETURNING id",
        (subscription_id, lease_s, leased_by, count),
    ).fetchall()
    return [row["id"] for row in rows]


async def test_a_result_the_database_refuses_is_recorded_as_a_plain_failed_attempt(
    db_url: str, conn: Conn
) -> None:
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    relay_ = Relay(settings(), db_url)
    good, bad, succeeded = leased_pings(conn, sub, 3, relay_.id, 60)
    now = datetime.now(UTC)
    results = [
        Result(good, sub, Attempt(now, 5, status_code=500), Outcome("pending", retry_in_s=0.1), 1),
        Result(bad, sub, Attempt(now, 2**40, status_code=500), Outcome("pending", retry_in_s=0.1), 1),
        Result(succeeded, sub, Attempt(now, 5, status_code=200), Outcome("succeeded"), 1),
    ]
    await relay_.pool.open()
    recording = asyncio.create_task(relay_.recorder.run())
    try:
        for result in results:
            relay_.recorder.add(result)
        assert await relay_.recorder.flush(10)
        assert not recording.done(), "the recorder must go on"
    finally:
        relay_.recorder.close()
        await asyncio.wait_for(recording, 5)
        await relay_.pool.close()
    rows = {r["id"]: r for r in conn.execute("SELECT * FROM rowhook.deliveries").fetchall()}
    assert [rows[i]["status"] for i in (good, bad, succeeded)] == ["pending", "pending", "succeeded"]
    assert all(row["attempts"] == 1 and row["leased_by"] is None for row in rows.values())
    assert attempt_errors(conn, good) == [None] and attempt_errors(conn, succeeded) == [None]
    [error] = attempt_errors(conn, bad)
    assert error is not None and error.startswith("internal error: NumericValueOutOfRange")
    assert rows[bad]["last_error"] == error and rows[bad]["last_status_code"] is None


async def reap(db_url: str, **overrides: Any) -> list[dict[str, Any]]:
    relay_ = Relay(settings(**overrides), db_url)
    await relay_.pool.open()
    try:
        return await relay_.store.reap_expired()
    finally:
        await relay_.pool.close()


async def test_an_expired_lease_counts_as_an_attempt_and_exhausts_the_schedule(
    db_url: str, conn: Conn
) -> None:
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    conn.execute("INSERT INTO rowhook.relays (id, backend_pid) VALUES ('relay_dead', pg_backend_pid())")
    first, last, live = leased_pings(conn, sub, 3, "relay_dead", 60)
    conn.execute("UPDATE rowhook.deliveries SET lease_until = now() - interval '1 s' WHERE id <> %s", (live,))
    conn.execute("UPDATE rowhook.deliveries SET attempts = 2 WHERE id = %s", (last,))
    reaped = await reap(db_url, retry_schedule_s=(0.0, 5.0, 5.0))
    assert {(r["id"], r["status"]) for r in reaped} == {(first, "pending"), (last, "failed")}
    rows = {r["id"]: r for r in conn.execute("SELECT * FROM rowhook.deliveries").fetchall()}
    assert (rows[first]["attempts"], rows[last]["attempts"]) == (1, 3)
    assert rows[first]["next_attempt_at"] <= datetime.now(UTC) and rows[first]["leased_by"] is None
    assert rows[last]["finished_at"] is not None
    assert rows[live]["status"] == "delivering", "a live lease of a registered relay is left alone"
    [attempt] = conn.execute("SELECT * FROM rowhook.attempts WHERE delivery_id = %s", (first,)).fetchall()
    assert attempt["error"] == "lease expired: relay relay_dead stopped answering"
    assert attempt["duration_ms"] == 0 and attempt["status_code"] is None


async def test_leases_of_an_unregistered_relay_are_reaped_before_they_expire(db_url: str, conn: Conn) -> None:
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    [orphan] = leased_pings(conn, sub, 1, "relay_unregistered", 120)
    [reaped] = await reap(db_url)
    assert (reaped["id"], reaped["status"]) == (orphan, "pending")
    assert attempt_errors(conn, orphan) == [
        "relay relay_unregistered went away while delivering (lease released)"
    ]


async def test_a_relay_whose_session_died_is_forgotten_once_silent_and_its_leases_delivered_at_once(
    db_url: str, conn: Conn
) -> None:
    """A relay SIGKILLed mid-delivery leaves leases for 120 s; the next relay sends them within seconds."""
    create_tasks(conn)
    secret = new_secret()
    release = asyncio.Event()

    async def hangs_until_released(_: int) -> None:
        await release.wait()

    async with receiver() as server:
        server.responders["/hook"] = hangs_until_released
        sub = subscribe(conn, server.url("hook", secret), secret)
        killed = await start_relay_process(db_url, lease_s=120, request_timeout_s=60)
        insert_tasks(conn, 1)
        await wait_until(lambda: server.counts.get("/hook") == 1, what="the first send")
        killed.send_signal(signal.SIGKILL)
        assert await killed.wait() == -signal.SIGKILL
        release.set()
        [row] = delivery_rows(conn, sub)
        assert row["status"] == "delivering" and row["lease_until"] > datetime.now(UTC)
        async with running_relay(db_url, lease_s=120, request_timeout_s=60):
            await wait_until(
                lambda: delivery_rows(conn, sub)[0]["status"] == "succeeded", timeout_s=15, what="redelivery"
            )
    [row] = delivery_rows(conn, sub)
    assert row["attempts"] == 2, "the lease of the killed relay counted as an attempt"
    [lost, ok] = attempt_errors(conn, row["id"])
    assert lost and "went away while delivering" in lost and ok is None
    assert len({r.webhook_id for r in server.received}) == 1


async def test_a_delivery_that_keeps_killing_relays_ends_failed(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    processes: list[asyncio.subprocess.Process] = []

    async def kills_the_relay(_: int) -> None:
        processes[-1].send_signal(signal.SIGKILL)
        await asyncio.sleep(5)

    overrides = {"retry_schedule_s": (0.0, 0.1, 0.1), "lease_s": 120, "request_timeout_s": 60}
    async with receiver() as server:
        server.responders["/killer"] = kills_the_relay
        sub = subscribe(conn, server.url("killer", secret), secret)
        insert_tasks(conn, 1)
        try:
            for kills in range(1, 4):
                processes.append(await start_relay_process(db_url, **overrides))
                await wait_until(lambda: server.counts.get("/killer") == kills, what=f"send {kills}")  # noqa: B023
                assert await processes[-1].wait() == -signal.SIGKILL
            processes.append(await start_relay_process(db_url, **overrides))
            await wait_until(
                lambda: delivery_rows(conn, sub)[0]["status"] == "failed", timeout_s=20, what="failed"
            )
        finally:
            assert await stop_process(processes[-1]) == 0
    [row] = delivery_rows(conn, sub)
    assert row["attempts"] == 3 and server.counts["/killer"] == 3
    assert all(e and "went away while delivering" in e for e in attempt_errors(conn, row["id"]))


async def test_a_relay_gives_back_the_leases_its_lost_session_held_without_counting(
    db_url: str, conn: Conn
) -> None:
    """As after a database crash that lost the outcomes: leases under this relay's id that it no longer
    works on. When it registers again it releases them at once instead of holding them for lease_s."""
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        sub = subscribe(conn, server.url("hook", secret), secret, max_in_flight=1)
        async with running_relay(db_url, lease_s=120) as running:
            await wait_until(running.listener.connected.is_set, what="registration")
            [stale] = leased_pings(conn, sub, 1, running.id, 120)
            # Cut the LISTEN session: the relay registers again on a new one.
            conn.execute(
                "SELECT pg_terminate_backend(backend_pid) FROM rowhook.relays WHERE id = %s", (running.id,)
            )
            await wait_until(lambda: delivery_rows(conn, sub)[0]["status"] == "succeeded", timeout_s=15)
    [row] = delivery_rows(conn, sub)
    assert row["id"] == stale and row["attempts"] == 1, "released, not counted as an attempt"
    assert attempt_errors(conn, stale) == [None]


async def test_relay_logs_and_status_never_show_a_query_value_of_the_target(
    db_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def fails(_: int) -> web.StreamResponse:
        return web.Response(status=500)

    async with receiver() as server:
        server.responders["/hook"] = fails
        sub = subscribe(conn, server.url("hook", secret) + "?key=SECRET123&x=1", secret)
        caplog.set_level(logging.INFO, logger="rowhook.relay")
        async with running_relay(db_url, retry_schedule_s=(0.0, 0.1)):
            insert_tasks(conn, 1)
            await wait_until(lambda: all_failed(conn, sub, 1), what="the delivery to fail")
    failures = [r.getMessage() for r in caplog.records if "delivery attempt failed" in r.getMessage()]
    assert len(failures) == 2 and all("/hook?key=***&x=***" in line for line in failures)
    # The relay's own records only: the test receiver's access log shows the URL it was sent, as it may.
    relay_text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("rowhook"))
    assert "SECRET123" not in relay_text
    shown = format_status(read_status(conn))
    assert "/hook?key=***&x=***" in shown and "SECRET123" not in shown
