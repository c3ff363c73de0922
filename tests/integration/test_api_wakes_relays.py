"""What the API makes due (resume, a raised or removed limit, retry, replay, ping) wakes the relays at
commit instead of waiting for their next poll; edits that send nothing more wake nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.integration.api_harness import Api
from tests.integration.relay_harness import receiver, start_relay_process, stop_process, wait_until

# Far longer than the waits below: what arrives came from a notification, not from a poll.
LONG_POLL_S = 120.0


@pytest.fixture
def listening(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN rowhook")
        yield conn


def payloads(conn: psycopg.Connection[Any]) -> list[str]:
    """The notifications received since the last call (each API request has committed by now)."""
    return [note.payload for note in conn.notifies(timeout=0.3)]


def patch(api: Api, subscription_id: str, **body: Any) -> None:
    response = api.acme.patch(f"/subscriptions/{subscription_id}", json=body)
    assert response.status_code == 200, response.text


def test_changes_that_let_more_be_sent_notify_the_relays(
    api: Api, listening: psycopg.Connection[Any]
) -> None:
    sub = api.subscribe(rate_limit_per_s=5, max_in_flight=2)["id"]
    payloads(listening)
    for quiet in ({"description": "renamed"}, {"status": "paused"}, {"rate_limit_per_s": 2}):
        patch(api, sub, **quiet)
        assert payloads(listening) == [], quiet
    patch(api, sub, max_in_flight=1)
    assert payloads(listening) == []
    for waking in ({"status": "active"}, {"rate_limit_per_s": 3}, {"rate_limit_per_s": None}):
        patch(api, sub, **waking)
        assert payloads(listening) == ["subscriptions"], waking
    patch(api, sub, max_in_flight=4)
    assert payloads(listening) == ["subscriptions"]


def test_ping_retry_and_replay_notify_the_relays(api: Api, listening: psycopg.Connection[Any]) -> None:
    sub = api.subscribe()["id"]
    ping = api.acme.post(f"/subscriptions/{sub}/test")
    assert ping.status_code == 201, ping.text
    assert payloads(listening) == ["subscriptions"]
    api.conn.execute(
        "UPDATE rowhook.deliveries SET status = 'failed', finished_at = now() WHERE id = %s",
        (ping.json()["id"],),
    )
    retried = api.acme.post(f"/deliveries/{ping.json()['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert payloads(listening) == ["subscriptions"]
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    empty = api.acme.post(f"/subscriptions/{sub}/replay", json={"since": since})
    assert empty.json()["count"] == 0, empty.text
    assert payloads(listening) == []
    api.task("acme", api.project("acme", "p"), "replayed")
    payloads(listening)  # the write's own notification
    replayed = api.acme.post(f"/subscriptions/{sub}/replay", json={"since": since})
    assert replayed.json()["count"] == 1, replayed.text
    assert payloads(listening) == ["subscriptions"]


def test_ping_and_retry_probe_a_failing_subscription_now(api: Api) -> None:
    """A failing subscription waiting for its next probe would hold them until then (up to a minute)."""
    sub = api.subscribe()["id"]
    wait = (
        "UPDATE rowhook.subscriptions SET failing_since = now(), next_probe_at = now() + interval '1 minute'"
        " WHERE id = %s"
    )
    probe = (
        "SELECT failing_since IS NOT NULL AS failing, next_probe_at FROM rowhook.subscriptions WHERE id = %s"
    )
    api.conn.execute(wait, (sub,))
    ping = api.acme.post(f"/subscriptions/{sub}/test")
    assert ping.status_code == 201, ping.text
    assert api.conn.execute(probe, (sub,)).fetchone() == {"failing": True, "next_probe_at": None}
    api.conn.execute(
        "UPDATE rowhook.deliveries SET status = 'failed', finished_at = now() WHERE id = %s",
        (ping.json()["id"],),
    )
    api.conn.execute(wait, (sub,))
    retried = api.acme.post(f"/deliveries/{ping.json()['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert api.conn.execute(probe, (sub,)).fetchone() == {"failing": True, "next_probe_at": None}


async def test_a_resumed_subscription_is_served_before_the_next_poll(api: Api, db_url: str) -> None:
    async with receiver() as server:
        created = api.subscribe(target_url=server.url("hook", ""))
        server.secrets["/hook"] = created["secret"]
        await asyncio.to_thread(patch, api, created["id"], status="paused")
        relay = await start_relay_process(db_url, poll_interval_s=LONG_POLL_S)
        try:
            project = api.project("acme", "p")
            for n in range(3):
                api.task("acme", project, f"held {n}")
            held = "SELECT count(*) AS n FROM rowhook.deliveries WHERE status = 'held'"
            await wait_until(lambda: api.conn.execute(held).fetchone() == {"n": 3}, what="3 held")
            assert server.received == []
            await asyncio.to_thread(patch, api, created["id"], status="active")
            await wait_until(lambda: len(server.received) == 3, what="the held deliveries after resume")
        finally:
            assert await stop_process(relay) == 0
