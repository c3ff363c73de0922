"""Relay metrics: scraped over real HTTP from running relays and parsed as Prometheus text."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.api_harness import free_port
from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    insert_tasks,
    new_secret,
    query_one,
    receiver,
    relay_env,
    running_relay,
    stop_process,
    subscribe,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> tuple[str, Samples]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        content_type = response.headers["content-type"]
        text = await response.text()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return content_type, samples


async def scrape_when_up(port: int, process: asyncio.subprocess.Process | None = None) -> Samples:
    """Scrape once the relay's metrics server listens (a relay task or process just started)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return (await scrape(port))[1]
        except aiohttp.ClientConnectionError:
            assert process is None or process.returncode is None, "the relay exited"
            assert time.monotonic() < deadline, "the metrics server did not come up"
            await asyncio.sleep(0.1)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def finished(conn: Conn) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM rowhook.deliveries WHERE status IN ('succeeded', 'failed', 'cancelled')"
    ).fetchone()
    assert row is not None
    return int(row["n"])


async def always(status: int) -> web.Response:
    return web.Response(status=status, text="no")


async def test_outcomes_latency_and_lag_are_counted_per_delivery(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    port = free_port()
    async with receiver() as server:
        server.responders["/fail"] = lambda _: always(500)
        server.responders["/gone"] = lambda _: always(410)
        for path, columns in {
            "ok": {},
            "fail": {"filter": {"project_id": 1}},
            "gone": {"filter": {"project_id": 2}},
        }.items():
            secret = new_secret()
            subscribe(conn, server.url(path, secret), secret, **columns)
        schedule = (0.0, 0.1, 0.1)  # three attempts: two retries scheduled, then given up
        async with running_relay(db_url, relay_metrics_port=port, retry_schedule_s=schedule) as relay:
            insert_tasks(conn, 3, project=1)
            insert_tasks(conn, 1, project=2)
            # ok: 4 deliveries; fail: 3 (project 1); gone: 1 (project 2).
            await wait_until(lambda: finished(conn) == 8, what="every delivery finished")
            stats = relay.stats
            await wait_until(lambda: stats.succeeded + stats.failed_attempts == 14, what="every attempt")
            content_type, samples = await scrape(port)
    assert content_type.startswith("text/plain; version=")
    assert value(samples, "rowhook_relay_attempts_total", outcome="succeeded") == 4
    assert value(samples, "rowhook_relay_attempts_total", outcome="pending") == 6  # 3 deliveries x 2 retries
    assert value(samples, "rowhook_relay_attempts_total", outcome="failed") == 4  # 3 given up, 1 gone
    assert value(samples, "rowhook_relay_attempt_duration_seconds_count") == 14
    assert value(samples, "rowhook_relay_attempt_duration_seconds_sum") > 0
    # Lag: first attempts only, one per delivery; all well under a minute on this machine.
    assert value(samples, "rowhook_relay_commit_to_send_seconds_count") == 8
    assert value(samples, "rowhook_relay_commit_to_send_seconds_bucket", le="60.0") == 8
    assert value(samples, "rowhook_relay_events_fanned_out_total") == 4
    assert value(samples, "rowhook_relay_deliveries_created_total") == 8
    assert value(samples, "rowhook_relay_subscriptions_disabled_total") == 1
    assert value(samples, "rowhook_relay_fan_out_duration_seconds_count") >= 1
    assert value(samples, "rowhook_relay_claim_duration_seconds_count") >= 1  # the retries were claimed
    assert value(samples, "rowhook_relay_in_flight") == 0
    assert value(samples, "rowhook_relay_info", relay_id=relay.id, version=relay_version()) == 1


def relay_version() -> str:
    from rowhook import __version__

    return __version__


async def test_a_notify_wakes_the_sleeping_relay_and_is_counted_as_such(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    port = free_port()
    async with receiver() as server:
        secret = new_secret()
        subscribe(conn, server.url("hook", secret), secret)
        # A poll interval longer than the test: only a NOTIFY can wake the relay in time.
        async with running_relay(db_url, relay_metrics_port=port, poll_interval_s=60.0) as relay:
            await wait_until(
                lambda: query_one(db_url, "SELECT bool_and(sleeping) AS s FROM rowhook.relays")["s"] is True,
                what="the relay asleep",
            )
            _, before = await scrape(port)
            insert_tasks(conn, 1)
            await wait_until(lambda: len(server.received) == 1, timeout_s=10, what="the delivery")
            _, after = await scrape(port)
            assert relay.stats.succeeded == 1
    assert value(before, "rowhook_relay_wakeups_total", cause="notify") == 0
    assert value(after, "rowhook_relay_wakeups_total", cause="notify") >= 1
    assert value(after, "rowhook_relay_wakeups_total", cause="poll") == 0


async def test_an_idle_relay_counts_poll_wakeups(db_url: str) -> None:
    port = free_port()
    async with running_relay(db_url, relay_metrics_port=port, poll_interval_s=0.1):
        for _ in range(200):  # a few seconds at most, even on a busy machine
            samples = await scrape_when_up(port)
            if value(samples, "rowhook_relay_wakeups_total", cause="poll") >= 3:
                break
            await asyncio.sleep(0.1)
    assert value(samples, "rowhook_relay_wakeups_total", cause="poll") >= 3
    assert value(samples, "rowhook_relay_wakeups_total", cause="notify") == 0


async def test_claimed_first_attempts_count_as_lag_and_replays_do_not(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    port = free_port()
    async with receiver() as server:
        secret = new_secret()
        # One in flight at a time: the fan-out leases the first delivery, the other two are claimed.
        subscription = subscribe(conn, server.url("hook", secret), secret, max_in_flight=1)
        async with running_relay(db_url, relay_metrics_port=port):
            insert_tasks(conn, 3)
            await wait_until(lambda: len(server.received) == 3, what="the deliveries")
            conn.execute(
                "INSERT INTO rowhook.deliveries (id, subscription_id, account, event_id, event_type, key)"
                " SELECT rowhook.delivery_id(id, %(s)s, 'rpl_test'), %(s)s, 'acme', id, 'tasks.created', key"
                " FROM rowhook.outbox",
                {"s": subscription},
            )
            await wait_until(lambda: len(server.received) == 6, what="the replayed deliveries")
            await wait_until(lambda: finished(conn) == 6, what="all recorded")
            _, samples = await scrape(port)
    assert value(samples, "rowhook_relay_attempts_total", outcome="succeeded") == 6
    assert value(samples, "rowhook_relay_claim_duration_seconds_count") >= 2
    # The three events' deliveries, fanned out or claimed; not the three replays.
    assert value(samples, "rowhook_relay_commit_to_send_seconds_count") == 3


async def start_cli_relay(db_url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rowhook.cli",
        "relay",
        *args,
        env=relay_env(db_url),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_rowhook_relay_metrics_port_serves_metrics_until_sigterm(db_url: str) -> None:
    port = free_port()
    process = await start_cli_relay(db_url, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    try:
        samples = await scrape_when_up(port, process)
        assert any(name == "rowhook_relay_info" for name, _ in samples)
    finally:
        assert await stop_process(process) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(port)


async def test_a_metrics_port_in_use_stops_the_relay_with_exit_2(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await start_cli_relay(db_url, "--metrics-port", str(port))
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert f"relay metrics cannot listen on 127.0.0.1:{port}" in stderr.decode()
