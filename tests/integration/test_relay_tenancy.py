"""Fan-out and tenancy through a real relay: scope moves, account-less rows, many scope columns, ids."""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg.types.json import Jsonb

from rowhook.sqlfiles import query
from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    execute_off_loop,
    new_secret,
    receiver,
    running_relay,
    subscribe,
    wait_until,
)


def delivery_ids(conn: Conn, subscription_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM rowhook.deliveries WHERE subscription_id = %s ORDER BY event_id", (subscription_id,)
    ).fetchall()
    return [row["id"] for row in rows]


async def test_a_row_leaving_a_filter_is_told_to_its_subscribers_as_updated(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        subscribe(conn, server.url("p1", secret), secret, filter={"project_id": 1})
        subscribe(conn, server.url("p2", secret), secret, filter={"project_id": 2})
        subscribe(conn, server.url("p3", secret), secret, filter={"project_id": 3})
        conn.execute("INSERT INTO tasks (id, account_id, project_id, title) VALUES (1, 'acme', 1, 't')")
        conn.execute("UPDATE tasks SET project_id = 2 WHERE id = 1")
        async with running_relay(db_url):
            await wait_until(lambda: len(server.received) == 3, what="created to p1, updated to p1 and p2")
            await asyncio.sleep(0.3)
    by_path = {(r.path, r.body["type"]): r.body for r in server.received}
    assert set(by_path) == {("/p1", "tasks.created"), ("/p1", "tasks.updated"), ("/p2", "tasks.updated")}
    moved = by_path[("/p1", "tasks.updated")]
    assert moved["data"]["project_id"] == 2 and moved["previous"] == {"project_id": 1}
    assert all(r.signature_ok for r in server.received)


async def test_account_less_events_reach_no_account_unless_the_resource_is_public(
    db_url: str, conn: Conn
) -> None:
    create_tasks(conn)
    conn.execute("CREATE TABLE plans (code text PRIMARY KEY, title text)")
    conn.execute("SELECT rowhook.watch('plans', public => true)")
    secret = new_secret()
    async with receiver() as server:
        tasks_sub = subscribe(conn, server.url("tasks", secret), secret)
        subscribe(conn, server.url("plans-acme", secret), secret, resource="plans")
        subscribe(conn, server.url("plans-globex", secret), secret, resource="plans", account="globex")
        # What an installation from before NOT NULL was enforced may hold: a tenant row with no account.
        conn.execute(
            "INSERT INTO rowhook.outbox (resource, op, account, key, data)"
            " VALUES ('tasks', 'created', NULL, '9', '{\"id\": 9, \"title\": \"nobody\"}')"
        )
        conn.execute("INSERT INTO plans VALUES ('pro', 'Pro')")
        async with running_relay(db_url):
            await wait_until(lambda: len(server.received) == 2, what="the public event to both accounts")
            await asyncio.sleep(0.3)
        assert sorted(r.path for r in server.received) == ["/plans-acme", "/plans-globex"]
        replayed = conn.execute(
            query("api_replay"),
            {
                "subscription_id": tasks_sub,
                "account": "acme",
                "resource": "tasks",
                "events": ["created", "updated", "deleted"],
                "filter": Jsonb({}),
                "columns": None,
                "since": "2000-01-01",
                "until": "2100-01-01",
                "cap": 100,
                "replay_id": "r1",
                "status": "pending",
            },
        ).fetchone()
        assert replayed == {"count": 0, "truncated": False}


async def test_thirty_one_scope_columns_do_not_stall_fan_out(db_url: str, conn: Conn) -> None:
    columns = [f"s{n}" for n in range(31)]
    conn.execute(
        "CREATE TABLE wide (id int PRIMARY KEY, account_id text NOT NULL, "
        + ", ".join(f"{c} int NOT NULL DEFAULT 1" for c in columns)
        + ")"
    )
    conn.execute(
        "SELECT rowhook.watch('wide', account_column => 'account_id', scope_columns => %s)", (columns,)
    )
    secret = new_secret()
    async with receiver() as server:
        subscribe(conn, server.url("all", secret), secret, resource="wide")
        subscribe(conn, server.url("s30", secret), secret, resource="wide", filter={"s30": 1, "s7": 1})
        subscribe(conn, server.url("miss", secret), secret, resource="wide", filter={"s30": 1, "s7": 2})
        conn.execute("INSERT INTO wide (id, account_id) SELECT n, 'acme' FROM generate_series(1, 20) n")
        async with running_relay(db_url):
            await wait_until(lambda: len(server.received) == 40, timeout_s=30, what="40 deliveries")
            await asyncio.sleep(0.3)
    assert sorted({r.path for r in server.received}) == ["/all", "/s30"]


async def test_a_fan_out_redone_gives_the_receiver_the_same_webhook_ids(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        sub = subscribe(conn, server.url("hook", secret), secret)
        conn.execute(
            "INSERT INTO tasks (account_id, project_id, title) VALUES ('acme', 1, 'a'), ('acme', 1, 'b')"
        )
        async with running_relay(db_url):
            await wait_until(lambda: len(server.received) == 2, what="first fan-out")
            # Recorded too: the outcome moves each row from the queue to the log (0015), and a delete
            # meeting that move would be rolled back.
            done = "SELECT count(*) AS n FROM rowhook.deliveries WHERE status = 'succeeded'"
            await wait_until(lambda: conn.execute(done).fetchone() == {"n": 2}, what="outcomes recorded")
            first = delivery_ids(conn, sub)
            # What a crash that lost the relay's commit looks like: the events are undispatched again.
            await execute_off_loop(conn, "DELETE FROM rowhook.deliveries")
            await execute_off_loop(conn, "UPDATE rowhook.outbox SET dispatched_at = NULL")
            await wait_until(lambda: len(server.received) == 4, what="second fan-out")
    assert delivery_ids(conn, sub) == first
    ids = [r.webhook_id for r in server.received]
    assert sorted(ids) == sorted(first * 2)
    event = conn.execute("SELECT min(id) AS id FROM rowhook.outbox").fetchone()
    assert event is not None
    derived = conn.execute("SELECT rowhook.delivery_id(%s, %s) AS id", (event["id"], sub)).fetchone()
    assert derived == {"id": first[0]}


async def test_columns_excluded_after_capture_are_left_out_of_sends_and_replays(
    db_url: str, conn: Conn
) -> None:
    conn.execute(
        "CREATE TABLE users (id int PRIMARY KEY, account_id text NOT NULL, name text, phone text, ssn text)"
    )
    conn.execute("SELECT rowhook.watch('users', account_column => 'account_id', exclude_columns => '{ssn}')")
    conn.execute("INSERT INTO users VALUES (1, 'acme', 'ann', '555-0100', '078-05-1120')")
    conn.execute("UPDATE users SET phone = '555-0199', name = 'anne'")
    # The DBA decides the phone number must not leave either, after the events above were captured.
    conn.execute("SELECT rowhook.unwatch('users')")
    conn.execute(
        "SELECT rowhook.watch('users', account_column => 'account_id', exclude_columns => '{ssn,phone}')"
    )
    secret = new_secret()
    async with receiver() as server:
        subscribe(conn, server.url("hook", secret), secret, resource="users")
        async with running_relay(db_url):
            await wait_until(lambda: len(server.received) == 2, what="both events")
    bodies = [r.body for r in server.received]
    assert [b["type"] for b in bodies] == ["users.created", "users.updated"]
    assert "555-01" not in str(bodies) and "078-05" not in str(bodies)
    assert bodies[1]["previous"] == {"name": "ann"}


async def test_paused_subscription_holds_and_sends_in_order_on_resume(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as server:
        sub = subscribe(conn, server.url("hook", secret), secret, status="paused", ordered=True)
        async with running_relay(db_url):
            conn.execute("INSERT INTO tasks (id, account_id, project_id, title) VALUES (1, 'acme', 1, 'v0')")
            for version in range(1, 4):
                conn.execute("UPDATE tasks SET title = %s WHERE id = 1", (f"v{version}",))
            await wait_until(lambda: held(conn, sub) == 4, what="four held deliveries")
            await asyncio.sleep(0.5)
            assert server.received == []
            await execute_off_loop(
                conn, "UPDATE rowhook.subscriptions SET status = 'active' WHERE id = %s", (sub,)
            )
            await execute_off_loop(conn, query("api_release_held_deliveries"), {"subscription_id": sub})
            await wait_until(lambda: len(server.received) == 4, what="held deliveries after resume")
    assert [r.body["data"]["title"] for r in server.received] == ["v0", "v1", "v2", "v3"]


def held(conn: Conn, subscription_id: str) -> Any:
    row = conn.execute("SELECT rowhook.held_deliveries(%s) AS n", (subscription_id,)).fetchone()
    return row and row["n"]
