"""A subscription's rate limit holds for all relays together, holds back no other subscription, and
changes live; the relay wakes when tokens come instead of polling for them."""

from __future__ import annotations

import asyncio
import time

import pytest
from psycopg.types.json import Jsonb

from rowhook.sqlfiles import query
from tests.integration.api_harness import Api
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

# Long enough that claims between polls come from the relay waking for tokens (relay_next_due).
SLOW_POLL_S = 5.0
# A token is spent at the start of the claim's transaction and the push arrives a little later: how much
# later varies by a few milliseconds (a hundred or more on a loaded machine), which lets a window of
# arrivals hold the leases of a slightly longer one.
ARRIVAL_JITTER_S = 0.2


def arrivals(server: Receiver, path: str) -> list[float]:
    return sorted(r.at for r in server.received if r.path == path)


async def relays_asleep(conn: Conn, count: int) -> None:
    """Wait until `count` relays sleep (registered, so the next commit wakes them)."""
    sql = "SELECT count(*) AS n FROM rowhook.relays WHERE sleeping"
    await wait_until(lambda: conn.execute(sql).fetchone() == {"n": count}, what=f"{count} relays asleep")


def most_in_any_window(times: list[float], window_s: float) -> int:
    """The most arrivals within any `window_s` seconds."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] > window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def assert_within_limit(times: list[float], limit_per_s: float) -> None:
    burst = max(1.0, limit_per_s)
    for window_s in (0.5, 1.0, 2.0, 3.0):
        allowed = limit_per_s * (window_s + ARRIVAL_JITTER_S) + burst
        assert most_in_any_window(times, window_s) <= allowed, (window_s, allowed, times)


async def test_two_relays_together_keep_to_the_limit_and_others_are_not_held_back(
    db_url: str, conn: Conn
) -> None:
    create_tasks(conn)
    secret = new_secret()
    limit, events = 20, 100
    async with receiver() as server:
        subscribe(conn, server.url("limited", secret), secret, rate_limit_per_s=limit)
        # A cap of 32 lets the unlimited one drain far faster than 20/s, to tell "not held back".
        subscribe(conn, server.url("free", secret), secret, max_in_flight=32)
        relays = [await start_relay_process(db_url, poll_interval_s=SLOW_POLL_S) for _ in range(2)]
        try:
            await relays_asleep(conn, 2)
            started = time.monotonic()
            insert_tasks(conn, events)
            await wait_until(lambda: len(arrivals(server, "/free")) == events, what="the unlimited one")
            free_done = arrivals(server, "/free")[-1]
            # 3 s of the limited backlog: about a burst plus 3 s' worth.
            await asyncio.sleep(max(0.0, started + 3.0 - time.monotonic()))
            limited = [at for at in arrivals(server, "/limited") if at <= started + 3.0]
        finally:
            assert [await stop_process(p) for p in relays] == [0, 0]
    assert_within_limit(limited, limit)
    # Not starved either: after the burst the relays woke for the tokens as they came.
    assert len(limited) >= limit * 2, len(limited)
    # The unlimited subscription drained at its own pace (well under a second on a quiet machine, 2 s
    # on a loaded one), not at the limited one's: 100 pushes at 20/s take at least 4 s (a burst of 20,
    # then 20/s).
    assert free_done - started < 3.5


async def test_a_patch_changes_the_limit_live(api: Api, db_url: str) -> None:
    conn = api.conn
    async with receiver() as server:
        created = api.subscribe(target_url=server.url("hook", ""), rate_limit_per_s=4)
        server.secrets["/hook"] = created["secret"]
        path = f"/subscriptions/{created['id']}"
        relay = await start_relay_process(db_url, poll_interval_s=SLOW_POLL_S)
        try:
            await relays_asleep(conn, 1)
            project = api.project("acme", "p")
            conn.execute(
                "INSERT INTO tasks (account_id, project_id, title)"
                " SELECT 'acme', %s, 'task ' || n FROM generate_series(1, 80) n",
                (project,),
            )
            started = time.monotonic()
            await asyncio.sleep(2.0)
            slow = arrivals(server, "/hook")
            patched = await asyncio.to_thread(api.acme.patch, path, json={"rate_limit_per_s": 40})
            assert patched.status_code == 200, patched.text
            raised_at = time.monotonic()
            await asyncio.sleep(1.0)
            faster = [at for at in arrivals(server, "/hook") if at > raised_at]
            removed = await asyncio.to_thread(api.acme.patch, path, json={"rate_limit_per_s": None})
            assert removed.status_code == 200, removed.text
            removed_at = time.monotonic()
            await wait_until(lambda: len(arrivals(server, "/hook")) == 80, timeout_s=10, what="the rest")
            rest_took_s = arrivals(server, "/hook")[-1] - removed_at
        finally:
            assert await stop_process(relay) == 0
    # 2 s at 4/s after a burst of 4: about 12.
    assert_within_limit([at for at in slow if at >= started], 4)
    assert len(slow) >= 6, len(slow)
    # At 40/s (with a full bucket of 40 tokens from the start), far more than 4/s.
    assert len(faster) >= 20, len(faster)
    assert_within_limit(faster, 40)
    # The removal wakes the relay (api_wake_relays): the rest does not wait for its next poll.
    assert rest_took_s < SLOW_POLL_S - 1.0


def test_the_relay_wakes_when_a_tenth_of_a_second_of_tokens_has_come(conn: Conn) -> None:
    create_tasks(conn)
    ids = {
        rate: subscribe(conn, f"https://example.com/{n}", new_secret(), rate_limit_per_s=rate)
        for n, rate in enumerate((50.0, 0.5))
    }
    insert_tasks(conn, 3)
    conn.execute(query("relay_expand_changes"), {"batch": 10})
    conn.execute(query("relay_fan_out"), {"batch": 10, "free": 64, "lease_s": 60, "relay_id": "r"})
    params = {"rate_wake_s": 0.1}

    def due_in_s() -> float | None:
        row = conn.execute(query("relay_next_due"), params).fetchone()
        assert row is not None
        return row["due_in_s"]  # type: ignore[no-any-return]

    # Full buckets (no row yet) and due work that no claim took (another relay held the row, say):
    # looked at again in a tenth of a second, not at once (no spinning) nor at the next poll.
    assert due_in_s() == pytest.approx(0.1)
    conn.execute("UPDATE rowhook.subscriptions SET rate_limit_per_s = NULL WHERE id = %s", (ids[0.5],))
    empty = "INSERT INTO rowhook.rate_buckets VALUES (%s, 0, now())"
    conn.execute(empty, (ids[50.0],))
    # Five tokens at 50/s: 0.1 s (less the time since the row was written, but not less than 0.1 s).
    assert due_in_s() == pytest.approx(0.1)
    # Every limited subscription, with the whole tokens of its bucket.
    skipped = conn.execute(query("relay_capped_subscriptions")).fetchall()
    assert skipped == [
        {"id": ids[50.0], "rate_limited": True, "tokens": 0, "has_due": True, "waiting_probe": False}
    ]
    conn.execute("UPDATE rowhook.subscriptions SET rate_limit_per_s = 0.5 WHERE id = %s", (ids[0.5],))
    conn.execute("UPDATE rowhook.subscriptions SET rate_limit_per_s = NULL WHERE id = %s", (ids[50.0],))
    conn.execute(empty, (ids[0.5],))
    # One token at least: 2 s at 0.5/s.
    due = due_in_s()
    assert due is not None and 1.9 < due <= 2.0
    # At its cap (one push at a time until the first success), its finished send wakes the relay.
    conn.execute(
        "UPDATE rowhook.deliveries SET status = 'delivering', lease_until = now() + interval '1 minute'"
        " WHERE id = (SELECT id FROM rowhook.deliveries WHERE subscription_id = %s LIMIT 1)",
        (ids[0.5],),
    )
    assert due_in_s() is None
    # Without a limit nothing is waited for.
    conn.execute("UPDATE rowhook.subscriptions SET rate_limit_per_s = NULL")
    assert due_in_s() is None
    assert conn.execute(query("relay_capped_subscriptions")).fetchall() == [
        {"id": ids[0.5], "rate_limited": False, "tokens": None, "has_due": False, "waiting_probe": False}
    ]


def test_a_claim_spends_the_tokens_and_the_next_claim_finds_none(conn: Conn) -> None:
    create_tasks(conn)
    subscription = subscribe(conn, "https://example.com/hook", new_secret(), rate_limit_per_s=3)
    conn.execute("UPDATE rowhook.subscriptions SET last_success_at = now()")  # its full cap of 8
    insert_tasks(conn, 10)
    conn.execute(query("relay_expand_changes"), {"batch": 10})
    fan_out = {"batch": 10, "free": 64, "lease_s": 60, "relay_id": "r"}
    [row] = conn.execute(query("relay_fan_out"), fan_out).fetchall()
    assert row["created"] == 10 and row["id"] is None, "fan-out leases no limited delivery"
    ids = [r["id"] for r in conn.execute("SELECT id FROM rowhook.deliveries ORDER BY next_attempt_at")]
    params = {"ids": Jsonb(ids), "subscription_ids": [subscription], "lease_s": 60, "relay_id": "r"}
    with conn.transaction():
        taken = conn.execute(query("relay_take"), params).fetchall()
        again = conn.execute(query("relay_take"), params).fetchall()
        bucket = conn.execute("SELECT tokens FROM rowhook.rate_buckets").fetchone()
    # A full bucket holds one second's worth: 3 leased, oldest first, and none left in this transaction
    # (its clock stands still, as for a relay that claims again at once).
    assert [r["id"] for r in taken] == ids[:3] and again == []
    assert bucket == {"tokens": 0}
    skipped = conn.execute(query("relay_capped_subscriptions")).fetchall()
    assert skipped == [
        {"id": subscription, "rate_limited": True, "tokens": 0, "has_due": True, "waiting_probe": False}
    ]
    # A claim's scan of limited subscriptions takes no more rows of each than its tokens.
    scan = {"subscription_ids": [subscription], "tokens": [2], "limit": 24}
    assert len(conn.execute(query("relay_scan_due_rate_limited"), scan).fetchall()) == 2
