"""Relay delivery: matching, Standard Webhooks signatures, bodies, pings, caps, ordering, pause and delete."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC

import pytest
from aiohttp import web

from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    execute_off_loop,
    insert_tasks,
    new_secret,
    receiver,
    running_relay,
    subscribe,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def statuses(conn: Conn, subscription_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT status FROM rowhook.deliveries WHERE subscription_id = %s ORDER BY created_at",
        (subscription_id,),
    ).fetchall()
    return [row["status"] for row in rows]


async def test_event_is_signed_and_carries_the_documented_body(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    async with receiver() as server, running_relay(db_url):
        secret = new_secret()
        subscribe(conn, server.url("hook", secret), secret)
        conn.execute("INSERT INTO tasks (account_id, project_id, title) VALUES ('acme', 1, 'old')")
        conn.execute("UPDATE tasks SET title = 'new'")
        await wait_until(lambda: len(server.received) == 2, what="two deliveries")
    created, updated = server.received
    assert created.signature_ok and updated.signature_ok
    assert created.webhook_id.startswith("msg_") and created.webhook_id != updated.webhook_id
    event = conn.execute("SELECT id, occurred_at FROM rowhook.outbox ORDER BY id DESC LIMIT 1").fetchone()
    assert event is not None
    assert updated.body == {
        "id": f"evt_{event['id']}",
        "type": "tasks.updated",
        "timestamp": event["occurred_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "resource": "tasks",
        "account": "acme",
        "key": "1",
        "data": {"id": 1, "account_id": "acme", "project_id": 1, "title": "new"},
        "previous": {"title": "old"},
    }
    assert "previous" not in created.body and created.body["type"] == "tasks.created"
    assert conn.execute(
        "SELECT count(*) AS n FROM rowhook.outbox WHERE dispatched_at IS NULL"
    ).fetchone() == {"n": 0}


async def test_matching_by_account_events_and_filter_of_native_type(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        wanted = {
            "all": {},
            "proj1": {"filter": {"project_id": 1}},
            "created_only": {"events": ["created"]},
        }
        unwanted = {
            "proj1_as_text": {"filter": {"project_id": "1"}},
            "proj2": {"filter": {"project_id": 2}},
            "other_account": {"account": "globex"},
            "deleted_only": {"events": ["deleted"]},
            "paused": {"status": "paused"},
            "removed": {"deleted_at": "2020-01-01"},
        }
        for path, columns in {**wanted, **unwanted}.items():
            subscribe(conn, server.url(path, secret), secret, **columns)
        async with running_relay(db_url):
            insert_tasks(conn, 1, project=1)
            await wait_until(lambda: len(server.received) >= len(wanted), what="matching deliveries")
            await asyncio.sleep(0.3)  # a wrongly matched delivery would have arrived by now
    assert sorted(r.path for r in server.received) == sorted("/" + p for p in wanted)


async def test_public_resource_goes_to_every_account(db_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE news (id int PRIMARY KEY, headline text)")
    conn.execute("SELECT rowhook.watch('news', public => true)")
    secret = new_secret()
    async with receiver() as server, running_relay(db_url):
        for account in ("acme", "globex"):
            subscribe(conn, server.url(account, secret), secret, account=account, resource="news")
        conn.execute("INSERT INTO news VALUES (1, 'hello')")
        await wait_until(lambda: len(server.received) == 2, what="both accounts")
    assert {r.path for r in server.received} == {"/acme", "/globex"}


async def test_ping_body_is_sent_as_stored(db_url: str, conn: Conn) -> None:
    secret = new_secret()
    async with receiver() as server, running_relay(db_url):
        sub = subscribe(conn, server.url("hook", secret), secret)
        ping = {"id": "evt_ping_1", "type": "ping", "timestamp": "2026-01-01T00:00:00.000000Z", "data": {}}
        conn.execute(
            "INSERT INTO rowhook.deliveries (subscription_id, account, event_type, body)"
            " VALUES (%s, 'acme', 'ping', %s)",
            (sub, json.dumps(ping)),
        )
        await wait_until(lambda: len(server.received) == 1, what="ping")
    assert server.received[0].body == ping and server.received[0].signature_ok


async def test_during_rotation_both_secrets_sign(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    old, new = new_secret(), new_secret()
    async with receiver() as server, running_relay(db_url):
        server.url("old", old)
        subscribe(
            conn, server.url("new", new), new, previous_secret=old, previous_secret_expires_at="2999-01-01"
        )
        insert_tasks(conn, 1)
        await wait_until(lambda: len(server.received) == 1, what="delivery")
        server.secrets["/new"] = old  # the very same request must also verify with the old secret
    assert server.received[0].signature_ok


async def test_fresh_events_are_sent_without_waiting_for_a_poll(db_url: str, conn: Conn) -> None:
    """With a one-minute poll interval, only the NOTIFY hand-shake can bring the event over."""
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        subscribe(conn, server.url("hook", secret), secret)
        async with running_relay(db_url, poll_interval_s=60.0):
            await wait_until(
                lambda: (
                    conn.execute("SELECT bool_or(sleeping) AS s FROM rowhook.relays").fetchone()["s"] is True
                ),  # type: ignore[index]
                what="the relay to declare itself sleeping",
            )
            for n in range(3):
                insert_tasks(conn, 1)
                await wait_until(lambda n=n: len(server.received) == n + 1, timeout_s=10, what="delivery")
        assert conn.execute("SELECT count(*) AS n FROM rowhook.relays").fetchone() == {"n": 0}


async def test_per_subscription_cap_holds_and_other_subscriptions_keep_flowing(
    db_url: str, conn: Conn
) -> None:
    create_tasks(conn)
    secret = new_secret()
    in_flight = {"now": 0, "max": 0}

    async def slow(_: int) -> None:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.3)
        in_flight["now"] -= 1

    async with receiver() as server:
        server.responders["/slow"] = slow  # type: ignore[assignment]
        slow_id = subscribe(conn, server.url("slow", secret), secret, max_in_flight=2)
        subscribe(conn, server.url("fast", secret), secret)
        async with running_relay(db_url, relay_concurrency=6):
            insert_tasks(conn, 40)
            await wait_until(lambda: len(server.event_ids("/fast")) == 40, what="the fast subscription")
            # An endpoint is probed one request at a time until its first success, then gets its cap.
            await wait_until(lambda: len(server.event_ids("/slow")) >= 3, what="the slow one to ramp up")
            slow_done = len(server.event_ids("/slow"))
        assert in_flight["max"] == 2
        assert slow_done < 40
        # Stopping released the slow subscription's leased work back to pending.
        assert "delivering" not in statuses(conn, slow_id)


async def test_an_endpoint_that_has_not_answered_yet_or_fails_is_probed_one_request_at_a_time(
    db_url: str, conn: Conn
) -> None:
    create_tasks(conn)
    secret = new_secret()
    in_flight = {"now": 0, "max": 0}

    async def slow_failure(_: int) -> web.StreamResponse:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.05)
        in_flight["now"] -= 1
        return web.Response(status=503)

    async with receiver() as server:
        server.responders["/down"] = slow_failure
        subscribe(conn, server.url("down", secret), secret, max_in_flight=8)
        async with running_relay(db_url, retry_schedule_s=(0.0, 0.0, 0.0)):
            insert_tasks(conn, 10)
            await wait_until(lambda: len(server.received) >= 20, what="attempts at the failing endpoint")
    assert in_flight["max"] == 1


async def test_ordered_subscription_never_overtakes_a_retry_of_the_same_key(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def first_fails(count: int) -> web.StreamResponse | None:
        return web.Response(status=503) if count == 1 else None

    async with receiver() as server:
        server.responders["/ordered"] = first_fails
        server.responders["/unordered"] = first_fails
        subscribe(conn, server.url("ordered", secret), secret, ordered=True)
        subscribe(conn, server.url("unordered", secret), secret)
        async with running_relay(db_url):
            conn.execute("INSERT INTO tasks (id, account_id, project_id, title) VALUES (1, 'acme', 1, 'v0')")
            for version in range(1, 6):
                conn.execute("UPDATE tasks SET title = %s WHERE id = 1", (f"v{version}",))
            await wait_until(lambda: len(server.received) >= 14, what="all deliveries")
    ordered = [r.body["data"]["title"] for r in server.received if r.path == "/ordered"]
    unordered = [r.body["data"]["title"] for r in server.received if r.path == "/unordered"]
    assert ordered == ["v0", "v0", "v1", "v2", "v3", "v4", "v5"]
    assert unordered != ["v0", "v0", "v1", "v2", "v3", "v4", "v5"]  # without ordering the retry comes later


def replay(conn: Conn, subscription_id: str) -> None:
    """Pending deliveries of every event for a subscription, as the API's replay inserts them."""
    conn.execute("SELECT rowhook.expand_changes()")
    conn.execute(
        "INSERT INTO rowhook.deliveries (subscription_id, account, event_id, event_type, key)"
        " SELECT %s, 'acme', id, resource || '.' || op, key FROM rowhook.outbox ORDER BY id",
        (subscription_id,),
    )


async def test_paused_waits_deleted_is_cancelled_and_manual_retry_resends(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        paused = subscribe(conn, server.url("paused", secret), secret, status="paused")
        deleted = subscribe(conn, server.url("deleted", secret), secret, deleted_at="2020-01-01")
        disabled = subscribe(conn, server.url("disabled", secret), secret, status="disabled")
        insert_tasks(conn, 2)
        for subscription_id in (paused, deleted, disabled):
            replay(conn, subscription_id)
        async with running_relay(db_url):
            await wait_until(lambda: statuses(conn, deleted) == ["cancelled"] * 2, what="cancelled (deleted)")
            await wait_until(
                lambda: statuses(conn, disabled) == ["cancelled"] * 2, what="cancelled (disabled)"
            )
            await asyncio.sleep(0.5)  # several poll rounds: a paused subscription's work must stay put
            assert server.received == []
            # Held: the two fanned-out events and the two replayed ones found pending.
            assert statuses(conn, paused) == ["held"] * 4
            # Resumed behind the API's back: the relay releases held work of lately resumed subscriptions.
            await execute_off_loop(
                conn,
                "UPDATE rowhook.subscriptions SET status = 'active', updated_at = now() WHERE id = %s",
                (paused,),
            )
            await wait_until(lambda: len(server.received) == 4, what="deliveries after resume")
            first = server.received[0].webhook_id
            retry = "UPDATE rowhook.deliveries SET status = 'pending', next_attempt_at = now() WHERE id = %s"
            await execute_off_loop(conn, retry, (first,))
            await wait_until(
                lambda: [r.webhook_id for r in server.received].count(first) == 2, what="manual retry"
            )


async def test_logs_one_line_per_failed_attempt_and_none_per_success(
    db_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    create_tasks(conn)
    secret = new_secret()

    async def fails_twice(count: int) -> web.StreamResponse | None:
        return web.Response(status=500) if count <= 2 else None

    caplog.set_level("INFO", logger="rowhook.relay")
    async with receiver() as server:
        server.responders["/flaky"] = fails_twice
        subscribe(conn, server.url("flaky", secret), secret, max_in_flight=1)
        subscribe(conn, server.url("fine", secret), secret)
        async with running_relay(db_url, summary_interval_s=0.3):
            insert_tasks(conn, 10)
            await wait_until(lambda: len(server.received) == 22, what="all deliveries")
            await wait_until(
                lambda: any("relay summary" in r.message for r in caplog.records), what="summary"
            )
    relay_records = [r for r in caplog.records if r.name.startswith("rowhook.relay")]
    failures = [r for r in relay_records if r.message.startswith("delivery attempt failed")]
    assert len(failures) == 2 and all(r.levelname == "WARNING" for r in failures)
    assert "status=500" in failures[0].message and "delivery=msg_" in failures[0].message
    # Start, stop, the two failures and periodic summaries (as many as the run's length allows on a
    # loaded machine): nothing per success.
    others = [r for r in relay_records if not r.message.startswith("relay summary")]
    assert len(others) < 6, [r.message for r in others]


async def test_fan_out_reads_only_matching_subscriptions(db_url: str, conn: Conn) -> None:
    """Many non-matching subscriptions of the same resource do not make the fan-out read more."""
    create_tasks(conn)
    secret = new_secret()

    def fan_out_buffers() -> int:
        from rowhook.sqlfiles import query

        insert_tasks(conn, 1, project=1)
        with conn.transaction():
            conn.execute("SET LOCAL jit = off")
            conn.execute(query("relay_expand_changes"), {"batch": 10})
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query("relay_fan_out"),
                {"batch": 10, "free": 0, "lease_s": 60, "relay_id": "none"},
            )
            row = plan.fetchone()
            assert row is not None
            subscriptions_read = 0
            stack = [row["QUERY PLAN"][0]["Plan"]]
            while stack:
                node = stack.pop()
                stack.extend(node.get("Plans", []))
                if node.get("Relation Name") == "subscriptions":
                    subscriptions_read += node["Shared Hit Blocks"] + node["Shared Read Blocks"]
        return subscriptions_read

    subscribe(conn, "https://example.com/match", secret, filter={"project_id": 1})
    conn.execute("ANALYZE rowhook.subscriptions")
    alone = fan_out_buffers()
    conn.execute(
        "INSERT INTO rowhook.subscriptions (account, resource, target_url, secret, filter)"
        " SELECT 'acme', 'tasks', 'https://example.com/other', %s, jsonb_build_object('project_id', n + 100)"
        " FROM generate_series(1, 20000) n",
        (secret,),
    )
    conn.execute("ANALYZE rowhook.subscriptions")
    crowded = fan_out_buffers()
    pages = conn.execute(
        "SELECT relpages FROM pg_class WHERE oid = 'rowhook.subscriptions'::regclass"
    ).fetchone()
    assert pages is not None and pages["relpages"] > 200
    # Index descents grow with the tree's depth only: a few blocks, against hundreds for a scan.
    assert crowded <= alone + 12, f"fan-out read {crowded} subscription blocks with 20,000 others vs {alone}"


async def test_receiver_rejects_a_wrong_signature() -> None:
    async with receiver() as server:
        url = server.url("hook", new_secret())
        import aiohttp

        async with aiohttp.ClientSession() as session, session.post(url, data=b"{}") as response:
            assert response.status == 200
        assert [r.signature_ok for r in server.received] == [False]
