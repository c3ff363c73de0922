"""Successes written by the next claim's transaction (issue 9): none lost, none written twice, none late."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

import relay.recorder
from relay.policy import Outcome
from relay.recorder import DEFER_MAX_S
from relay.sender import Attempt, printable
from relay.store import Result
from relay.worker import Relay
from tests.integration.relay_harness import Conn, new_secret, settings, subscribe, wait_until


def leased_pings(conn: Conn, subscription_id: str, count: int, leased_by: str) -> list[str]:
    rows = conn.execute(
        "INSERT INTO rowhook.deliveries"
        " (subscription_id, account, event_type, body, status, lease_until, leased_by)"
        " SELECT %s, 'acme', 'ping', '{\"type\": \"ping\"}', 'delivering',"
        "        now() + interval '60 s', %s FROM generate_series(1, %s) RETURNING id",
        (subscription_id, leased_by, count),
    ).fetchall()
    return [row["id"] for row in rows]


def success(delivery_id: str, subscription_id: str, duration_ms: int = 5) -> Result:
    attempt = Attempt(datetime.now(UTC), duration_ms, status_code=200)
    return Result(delivery_id, subscription_id, attempt, Outcome("succeeded"), 1)


def statuses(conn: Conn, ids: list[str]) -> list[str]:
    rows = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM rowhook.deliveries")}
    return [rows[i] for i in ids]


@pytest.fixture
def slow_deferral(monkeypatch: pytest.MonkeyPatch) -> None:
    """Successes wait for a claim as long as a test needs, however slow the machine."""
    monkeypatch.setattr(relay.recorder, "DEFER_MAX_S", 30.0)


@asynccontextmanager
async def recording_relay(db_url: str) -> AsyncIterator[tuple[Relay, list[int]]]:
    """A relay whose recorder runs (not its loop), with a backlog left: claims are coming. Yields it
    and the sizes of the batches the recorder itself wrote."""
    relay_ = Relay(settings(), db_url)
    relay_.backlog_left = True
    written: list[int] = []
    record = relay_.store.record

    async def counted(results: list[Result]) -> dict[str, str]:
        written.append(len(results))
        return await record(results)

    relay_.store.record = counted  # type: ignore[method-assign]
    await relay_.pool.open()
    recording = asyncio.create_task(relay_.recorder.run())
    try:
        yield relay_, written
    finally:
        relay_.recorder.close()
        await asyncio.wait_for(recording, 5)
        await relay_.pool.close()


@pytest.mark.usefixtures("slow_deferral")
async def test_successes_wait_for_the_next_claim_which_writes_them_before_it_leases(
    db_url: str, conn: Conn
) -> None:
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    async with recording_relay(db_url) as (relay_, written):
        ids = leased_pings(conn, sub, 3, relay_.id)
        for delivery_id in ids:
            relay_.recorder.add(success(delivery_id, sub))
        await asyncio.sleep(0)  # the recorder wakes, and leaves them for the claim
        assert statuses(conn, ids) == ["delivering"] * 3
        assert relay_.recorder.holding() == set(ids), "their leases are still needed"
        await relay_._claim(8)
        assert statuses(conn, ids) == ["succeeded"] * 3
        assert not relay_.recorder.holding()
        assert await relay_.recorder.flush(5)
    assert written == [], "the recorder wrote none of them again"


async def test_a_success_no_claim_comes_for_is_written_by_the_recorder_soon(db_url: str, conn: Conn) -> None:
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    async with recording_relay(db_url) as (relay_, written):
        [delivery_id] = leased_pings(conn, sub, 1, relay_.id)
        started = time.monotonic()
        relay_.recorder.add(success(delivery_id, sub))
        assert await relay_.recorder.flush(5)
        waited = time.monotonic() - started
    assert statuses(conn, [delivery_id]) == ["succeeded"] and written == [1]
    assert waited >= DEFER_MAX_S * 0.9, "it was left for a claim first"


@pytest.mark.usefixtures("slow_deferral")
async def test_failures_are_written_at_once_while_successes_wait(db_url: str, conn: Conn) -> None:
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    async with recording_relay(db_url) as (relay_, written):
        ok, failed = leased_pings(conn, sub, 2, relay_.id)
        relay_.recorder.add(success(ok, sub))
        attempt = Attempt(datetime.now(UTC), 5, status_code=500)
        relay_.recorder.add(Result(failed, sub, attempt, Outcome("pending", retry_in_s=30), 1))
        await wait_until(lambda: statuses(conn, [failed]) == ["pending"], 10, "the failure written")
        assert statuses(conn, [ok]) == ["delivering"]
        await relay_._claim(8)
        assert statuses(conn, [ok]) == ["succeeded"]
    assert written == [1]


@pytest.mark.usefixtures("slow_deferral")
async def test_a_claim_whose_successes_cannot_be_written_claims_without_them_and_none_is_lost(
    db_url: str, conn: Conn
) -> None:
    """A result the database refuses (a duration out of range) fails the claim's transaction: the
    recorder gets the successes back and writes them (the refused one as a failed attempt), and the
    claim is made again without them."""
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    async with recording_relay(db_url) as (relay_, written):
        good, bad = leased_pings(conn, sub, 2, relay_.id)
        relay_.recorder.add(success(good, sub))
        relay_.recorder.add(success(bad, sub, duration_ms=2**40))
        claims: list[Any] = []
        claim_due = relay_.store.claim_due

        async def watched(*args: Any) -> Any:
            claims.append(args[2:])
            return await claim_due(*args)

        relay_.store.claim_due = watched  # type: ignore[method-assign]
        await relay_._claim(8)
        assert await relay_.recorder.flush(5)
    assert statuses(conn, [good, bad]) == ["succeeded", "pending"]
    assert sum(written) >= 2, "the recorder wrote them"
    assert len(claims) == 2 and len(claims[0][0]) == 2 and claims[1] == (), "again, without them"


@pytest.mark.usefixtures("slow_deferral")
async def test_a_hostile_answer_to_a_success_is_written_by_the_claim_as_the_recorder_would(
    db_url: str, conn: Conn
) -> None:
    """Outcomes travel as one JSON parameter: what a receiver answered (NUL, invalid UTF-8, quotes,
    backslashes, 64 kB) must come out in the row as the sender captured it."""
    sub = subscribe(conn, "http://127.0.0.1:9/hook", new_secret())
    answer = printable(b'ok \x00 \xff\xfe "quoted" \\ \xed\xa0\x80 ' + b"x" * 65536)
    async with recording_relay(db_url) as (relay_, written):
        [delivery_id] = leased_pings(conn, sub, 1, relay_.id)
        attempt = Attempt(datetime.now(UTC), 5, status_code=204, response_body=answer)
        relay_.recorder.add(Result(delivery_id, sub, attempt, Outcome("succeeded"), 1))
        await relay_._claim(8)
    row = conn.execute("SELECT status, last_response FROM rowhook.deliveries").fetchone()
    assert row == {"status": "succeeded", "last_response": answer} and written == []
