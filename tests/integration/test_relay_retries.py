"""Relay retries and refusals: 503, timeouts, refused then back; Retry-After, 410, exhaustion, SSRF;
the quick in-process retry of dropped connections."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.sender import is_transient
from rowhook.target_rules import TargetRefused
from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    insert_tasks,
    new_secret,
    receiver,
    running_relay,
    subscribe,
    wait_until,
)
from tests.integration.test_relay_hostile import (
    Handler,
    RawServer,
    junk_instead_of_tls,
    raw_server,
    read_request,
)

pytestmark = pytest.mark.timeout(60)


def deliveries(conn: Conn) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM rowhook.deliveries ORDER BY created_at").fetchall()


def attempts(conn: Conn) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM rowhook.attempts ORDER BY attempted_at, seq NULLS LAST").fetchall()


def all_succeeded(conn: Conn, count: int) -> bool:
    rows = deliveries(conn)
    return len(rows) == count and all(row["status"] == "succeeded" for row in rows)


async def test_503_then_back_everything_arrives_with_stable_webhook_ids(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def unavailable_at_first(count: int) -> web.StreamResponse | None:
        return web.Response(status=503, text="down for maintenance") if count <= 12 else None

    async with receiver() as server:
        server.responders["/hook"] = unavailable_at_first
        subscribe(conn, server.url("hook", secret), secret)
        async with running_relay(db_url):
            insert_tasks(conn, 5)
            await wait_until(lambda: all_succeeded(conn, 5), what="all five delivered")
    assert len(set(server.event_ids())) == 5
    by_event: dict[str, set[str]] = {}
    for r in server.received:
        by_event.setdefault(r.body["id"], set()).add(r.webhook_id)
    assert all(len(ids) == 1 for ids in by_event.values()), "a retry must reuse the webhook-id"
    failed = [a for a in attempts(conn) if a["status_code"] == 503]
    assert len(failed) == 12 and failed[0]["response_body"] == "down for maintenance"
    assert conn.execute("SELECT failing_since FROM rowhook.subscriptions").fetchone() == {
        "failing_since": None
    }


async def test_timeouts_then_back(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def hangs_at_first(count: int) -> None:
        if count <= 2:
            await asyncio.sleep(2)

    async with receiver() as server:
        server.responders["/hook"] = hangs_at_first
        subscribe(conn, server.url("hook", secret), secret)
        async with running_relay(db_url, request_timeout_s=0.3):
            insert_tasks(conn, 2)
            await wait_until(lambda: all_succeeded(conn, 2), what="delivered after timeouts")
    errors = [a["error"] for a in attempts(conn) if a["error"]]
    assert errors == ["timed out after 0.3 s"] * 2


async def test_connection_refused_then_receiver_back(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    with socket.socket() as probe:  # a free port nobody listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subscribe(conn, f"http://127.0.0.1:{port}/hook", secret)
    async with running_relay(db_url):
        insert_tasks(conn, 3)
        await wait_until(lambda: len(attempts(conn)) >= 6, what="refused attempts")
        assert all("connection failed" in a["error"] for a in attempts(conn))
        async with receiver() as server:
            server.port = port
            await server.stop()
            server.secrets["/hook"] = secret
            await server.start()
            await wait_until(lambda: all_succeeded(conn, 3), what="delivered once the receiver is back")
    assert len(server.event_ids()) == len(set(server.event_ids())) == 3


async def test_a_failing_subscription_waits_for_its_retry_then_one_probe_then_everything(
    db_url: str, conn: Conn
) -> None:
    """After a failed attempt of a failing subscription, none of its other due deliveries is sent
    until that retry is due; then one probes, and its success lets the rest go. Nothing is lost."""
    create_tasks(conn)
    secret = new_secret()

    async def down_once(count: int) -> web.StreamResponse | None:
        return web.Response(status=503) if count == 1 else None

    async with receiver() as server:
        server.responders["/hook"] = down_once
        subscription = subscribe(conn, server.url("hook", secret), secret, max_in_flight=8)
        schedule = (0.0, 1.0, 0.2, 0.2)
        async with running_relay(db_url, retry_schedule_s=schedule):
            insert_tasks(conn, 6)
            await wait_until(lambda: all_succeeded(conn, 6), what="all six delivered")
    first, second = server.received[:2]
    # Before, the next due delivery was sent as soon as the first failed (milliseconds later).
    assert second.at - first.at >= 0.95
    assert len(server.received) == 7 and len(set(server.event_ids())) == 6
    rows = deliveries(conn)
    assert sorted(row["attempts"] for row in rows) == [1, 1, 1, 1, 1, 2]
    assert conn.execute(
        "SELECT failing_since, next_probe_at FROM rowhook.subscriptions WHERE id = %s", (subscription,)
    ).fetchone() == {"failing_since": None, "next_probe_at": None}


async def test_a_subscription_that_keeps_failing_is_probed_one_delivery_at_a_time_to_the_end(
    db_url: str, conn: Conn
) -> None:
    """Every delivery still gets its whole schedule and ends failed; attempts never overlap, and no
    two come closer than the schedule's step."""
    create_tasks(conn)
    secret = new_secret()
    in_flight = {"now": 0, "max": 0}

    async def always_500(_: int) -> web.StreamResponse:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.01)
        in_flight["now"] -= 1
        return web.Response(status=500)

    async with receiver() as server:
        server.responders["/down"] = always_500
        subscribe(conn, server.url("down", secret), secret, max_in_flight=8)
        async with running_relay(db_url, retry_schedule_s=(0.0, 0.3, 0.3)):
            insert_tasks(conn, 4)
            await wait_until(
                lambda: [row["status"] for row in deliveries(conn)] == ["failed"] * 4,
                what="every delivery failed after its schedule",
            )
    assert [row["attempts"] for row in deliveries(conn)] == [3] * 4
    assert len(server.received) == 12 and in_flight["max"] == 1
    gaps = [b.at - a.at for a, b in zip(server.received, server.received[1:], strict=False)]
    # After a failure, the next attempt waits for the earliest retry (0.3 s), except right after a
    # delivery's last attempt: nothing of it is retried, and the next due one is probed at once.
    assert sum(gap >= 0.28 for gap in gaps) >= 8, gaps


async def test_retry_after_is_honoured(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def throttled_once(count: int) -> web.StreamResponse | None:
        return web.Response(status=429, headers={"Retry-After": "1"}) if count == 1 else None

    async with receiver() as server:
        server.responders["/hook"] = throttled_once
        subscribe(conn, server.url("hook", secret), secret)
        async with running_relay(db_url):
            insert_tasks(conn, 1)
            await wait_until(lambda: all_succeeded(conn, 1), what="delivery after Retry-After")
    first, second = server.received
    assert first.webhook_id == second.webhook_id
    assert second.at - first.at >= 0.95  # the schedule alone would have retried after 0.2 s
    assert [a["status_code"] for a in attempts(conn)] == [429, 200]


async def test_410_gone_disables_the_subscription_and_cancels_its_pending_work(
    db_url: str, conn: Conn
) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def gone(_: int) -> web.StreamResponse:
        return web.Response(status=410)

    async with receiver() as server:
        server.responders["/gone"] = gone
        sub = subscribe(conn, server.url("gone", secret), secret, max_in_flight=1)
        subscribe(conn, server.url("fine", secret), secret)
        async with running_relay(db_url):
            insert_tasks(conn, 5)
            await wait_until(lambda: len(server.event_ids("/fine")) == 5, what="the healthy subscription")
            await wait_until(
                lambda: (
                    conn.execute("SELECT status FROM rowhook.subscriptions WHERE id = %s", (sub,)).fetchone()
                    == {"status": "disabled"}
                ),
                what="disabled",
            )
            insert_tasks(conn, 2)
            await wait_until(lambda: len(server.event_ids("/fine")) == 7, what="later events")
        row = conn.execute(
            "SELECT disabled_reason FROM rowhook.subscriptions WHERE id = %s", (sub,)
        ).fetchone()
        assert row is not None and "410" in row["disabled_reason"]
        gone_statuses = [
            r["status"]
            for r in conn.execute("SELECT status FROM rowhook.deliveries WHERE subscription_id = %s", (sub,))
        ]
        assert len(gone_statuses) == 5  # nothing created for the two later events
        assert gone_statuses.count("failed") == 1 and gone_statuses.count("cancelled") == 4
        assert server.counts["/gone"] == 1


async def test_exhausted_schedule_fails_and_captures_the_first_bytes(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def broken(_: int) -> web.StreamResponse:
        return web.Response(status=500, text="x" * 5000)

    async with receiver() as server:
        server.responders["/hook"] = broken
        subscribe(conn, server.url("hook", secret), secret)
        async with running_relay(db_url, retry_schedule_s=(0.0, 0.1, 0.1), response_capture_bytes=100):
            insert_tasks(conn, 1)
            await wait_until(lambda: deliveries(conn)[0]["status"] == "failed" if deliveries(conn) else False)
    [delivery] = deliveries(conn)
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 500 and delivery["finished_at"]
    recorded = attempts(conn)
    assert [a["status_code"] for a in recorded] == [500, 500, 500]
    assert all(a["response_body"] == "x" * 100 and a["duration_ms"] >= 0 for a in recorded)


async def test_subscription_failing_continuously_is_disabled(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def broken(_: int) -> web.StreamResponse:
        return web.Response(status=500)

    async with receiver() as server:
        server.responders["/hook"] = broken
        sub = subscribe(conn, server.url("hook", secret), secret)
        async with running_relay(db_url, disable_after_s=0.5):
            insert_tasks(conn, 1)
            await wait_until(
                lambda: (
                    conn.execute("SELECT status FROM rowhook.subscriptions WHERE id = %s", (sub,)).fetchone()
                    == {"status": "disabled"}
                ),
                what="disabled after failing",
            )
    row = conn.execute("SELECT disabled_reason FROM rowhook.subscriptions").fetchone()
    assert row is not None and row["disabled_reason"].startswith("failing continuously since")
    assert deliveries(conn)[0]["status"] == "cancelled"


async def test_redirects_are_not_followed(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def redirect(_: int) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async with receiver() as server:
        server.responders["/hook"] = redirect
        subscribe(conn, server.url("hook", secret), secret)
        async with running_relay(db_url, retry_schedule_s=(0.0,)):
            insert_tasks(conn, 1)
            await wait_until(lambda: bool(deliveries(conn)) and deliveries(conn)[0]["status"] == "failed")
    assert [r.path for r in server.received] == ["/hook"]
    assert attempts(conn)[0]["status_code"] == 302


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:{port}/hook", "plain http is refused"),
        ("https://127.0.0.1:{port}/hook", "127.0.0.1 is a loopback address"),
        ("https://localhost:{port}/hook", "'localhost' resolves to a loopback address"),
        # aiohttp (yarl) would connect to 127.0.0.1: fullwidth digits are a loopback literal too.
        ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}/hook", "127.0.0.1 is a loopback address"),
        ("https://169.254.169.254/latest/meta-data", "cloud metadata address"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
    ],
)
async def test_private_targets_are_refused_and_recorded(
    db_url: str, conn: Conn, target: str, reason: str
) -> None:
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        subscribe(conn, target.format(port=server.port), secret)
        async with running_relay(db_url, allow_private_targets=False, retry_schedule_s=(0.0,)):
            insert_tasks(conn, 1)
            await wait_until(lambda: bool(deliveries(conn)) and deliveries(conn)[0]["status"] == "failed")
        assert server.received == []
    [attempt] = attempts(conn)
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("refused target: ") and reason in attempt["error"]


# What aiohttp passes as the connection key of a connector error.
KEY: Any = SimpleNamespace(host="127.0.0.1", port=443, ssl=True)


def resets_first(count: int, how: str) -> Handler:
    """Reads each request; hangs up on the first `count` connections (FIN or RST), then answers 200."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        if server.connections <= count:
            if how == "reset":
                sock = writer.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        await server.send(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return handle


@pytest.mark.parametrize("how", ["closed", "reset"])
async def test_a_dropped_connection_is_retried_within_the_same_attempt(
    db_url: str, conn: Conn, how: str
) -> None:
    create_tasks(conn)
    async with raw_server(resets_first(2, how)) as server:
        subscribe(conn, f"http://127.0.0.1:{server.port}/hook", new_secret())
        async with running_relay(db_url):
            insert_tasks(conn, 1)
            await wait_until(lambda: all_succeeded(conn, 1), what="delivery after two dropped connections")
    assert server.connections == 3
    [attempt] = attempts(conn)  # the quick retries are one attempt, not three
    assert attempt["status_code"] == 200 and deliveries(conn)[0]["attempts"] == 1


async def test_a_tls_failure_is_not_retried_within_the_attempt(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    async with raw_server(junk_instead_of_tls) as server:
        subscribe(conn, f"https://127.0.0.1:{server.port}/hook", new_secret())
        async with running_relay(db_url, retry_schedule_s=(0.0,)):
            insert_tasks(conn, 1)
            await wait_until(lambda: deliveries(conn)[0]["status"] == "failed" if deliveries(conn) else False)
    assert server.connections == 1
    [attempt] = attempts(conn)
    assert attempt["status_code"] is None and attempt["error"]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")), True),
        (
            aiohttp.ClientConnectorError(KEY, TargetRefused("127.0.0.1 is a loopback address")),
            False,
        ),
        (aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "wrong version number")), False),
        (aiohttp.ClientConnectorDNSError(KEY, socket.gaierror(-2, "Name not known")), False),
        (aiohttp.ClientPayloadError("cut short"), False),
        (TimeoutError(), False),
    ],
)
def test_only_connection_level_failures_are_quick_retried(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
