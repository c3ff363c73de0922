"""The relay's claim queries keep plans that read a few rows, whatever the statistics say.

Each case analyses the tables before a burst (while they are empty, or while they hold only finished
deliveries), then writes the burst without analysing again (what autovacuum lagging behind, or switched
off, leaves), and checks the plan PostgreSQL picks in a relay session: by index and key, never a read of
the whole backlog."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from relay.policy import Outcome
from relay.sender import Attempt
from relay.store import Result, outcomes_json
from relay.worker import relay_session_url
from rowhook.sqlfiles import query
from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    insert_tasks,
    new_secret,
    running_relay,
    subscribe,
    wait_until,
)

BURST = 20000  # the backlog of issue 9; at a few thousand rows a sequential scan is as cheap
NONE = {"free": 0, "lease_s": 60, "relay_id": "none"}
# rowhook.deliveries and its partitions (0015): the queue of unfinished deliveries and the finished log.
DELIVERIES = {"deliveries", "delivery_queue", "delivery_log"}


@pytest.fixture(params=["analysed empty", "analysed with only finished deliveries"])
def stale_backlog(request: pytest.FixtureRequest, conn: Conn) -> str:
    """A subscription with a backlog of BURST pending deliveries that statistics know nothing of."""
    create_tasks(conn)
    subscription = subscribe(conn, "https://example.com/hook", new_secret(), max_in_flight=64)
    if request.param != "analysed empty":
        insert_tasks(conn, BURST)
        fan_out(conn, BURST)
        conn.execute("UPDATE rowhook.deliveries SET status = 'succeeded', finished_at = now()")
    conn.execute("ANALYZE")
    insert_tasks(conn, BURST)
    fan_out(conn, BURST)
    return subscription


def fan_out(conn: Conn, batch: int) -> None:
    """What the relay's fan-out transaction does: expand captured statements, then fan their events out."""
    conn.execute(query("relay_expand_changes"), {"batch": batch})
    conn.execute(query("relay_fan_out"), {"batch": batch, **NONE})


def plan(db_url: str, name: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The executed plan of a query in a relay session (rolled back), and its nodes, flattened."""
    with psycopg.connect(relay_session_url(db_url), row_factory=dict_row) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query(name), params).fetchone()  # type: ignore[operator]
        conn.rollback()
    assert row is not None
    top = row["QUERY PLAN"][0]["Plan"]
    nodes, stack = [], [top]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return top, nodes


def deliveries_rows_read(nodes: list[dict[str, Any]]) -> int:
    return sum(
        n.get("Actual Rows", 0) * n.get("Actual Loops", 1)
        for n in nodes
        if n.get("Relation Name") in DELIVERIES
    )


def test_the_due_scan_reads_the_due_index_in_order_and_stops(db_url: str, stale_backlog: str) -> None:
    _, nodes = plan(db_url, "relay_scan_due", {"limit": 24, "skip_subscriptions": [], "window": 96})
    scans = [n for n in nodes if n.get("Relation Name") in DELIVERIES]
    # The window read in time order from the queue's due index, then each picked row by key, in the
    # queue alone (the finished log is not even probed).
    assert {(n["Node Type"], n["Index Name"]) for n in scans} == {
        ("Index Scan", "delivery_queue_due"),
        ("Index Scan", "delivery_queue_id"),
    }, json.dumps(scans)
    assert all(n["Actual Rows"] <= 96 for n in nodes if n["Node Type"] == "Sort"), "sorted the backlog"
    assert deliveries_rows_read(nodes) <= 96 + 24


def test_claims_by_subscription_read_no_row_of_a_skipped_subscription(
    db_url: str, conn: Conn, stale_backlog: str
) -> None:
    healthy = subscribe(conn, "https://example.com/healthy", new_secret())
    insert_tasks(conn, 10)
    fan_out(conn, 10)
    params = {"limit": 24, "skip_subscriptions": [stale_backlog]}
    rows = conn.execute(query("relay_scan_due_by_subscription"), params).fetchall()
    assert {row["subscription_id"] for row in rows} == {healthy} and len(rows) == 10
    _, nodes = plan(db_url, "relay_scan_due_by_subscription", params)
    assert deliveries_rows_read(nodes) < 100, "the skipped subscription backlog was read"


def test_claims_by_subscription_read_only_their_own_rows_of_interleaved_backlogs(
    db_url: str, conn: Conn
) -> None:
    """Every event goes to each subscription, so the due rows of the skipped ones (failing, waiting for
    their probe) interleave in time with the others'. With statistics that know the backlog, each
    subscription's rows are still read from its own entries, not from the due index in time order
    filtered by subscription (1,500 rows passed per subscription, measured beside five failing ones)."""
    create_tasks(conn)
    skipped = [subscribe(conn, f"https://example.com/down{n}", new_secret()) for n in range(5)]
    healthy = [subscribe(conn, f"https://example.com/up{n}", new_secret()) for n in range(5)]
    insert_tasks(conn, 2000)
    fan_out(conn, 2000)
    conn.execute("ANALYZE")
    params = {"limit": 16, "skip_subscriptions": skipped}
    rows = conn.execute(query("relay_scan_due_by_subscription"), params).fetchall()
    assert len(rows) == 16 and {row["subscription_id"] for row in rows} <= set(healthy)
    _, nodes = plan(db_url, "relay_scan_due_by_subscription", params)
    assert deliveries_rows_read(nodes) < 300, "rows of other subscriptions were read"


def test_leasing_and_recording_look_deliveries_up_by_key(db_url: str, conn: Conn, stale_backlog: str) -> None:
    subscription = stale_backlog
    due = conn.execute(
        query("relay_scan_due"), {"limit": 24, "skip_subscriptions": [], "window": 96}
    ).fetchall()
    ids = [row["id"] for row in due]
    params = {"ids": Jsonb(ids), "subscription_ids": [subscription], "lease_s": 60, "relay_id": "r1"}
    _, nodes = plan(db_url, "relay_take", params)
    assert deliveries_rows_read(nodes) < 200, "relay_take read the backlog"
    conn.execute(query("relay_take"), params)
    attempt = Attempt(attempted_at=datetime(2026, 11, 29, 10, tzinfo=UTC), duration_ms=3, status_code=200)
    results = [Result(i, subscription, attempt, Outcome("succeeded"), 1) for i in ids]
    outcomes = {"relay_id": "r1", "outcomes": outcomes_json(results)}
    _, nodes = plan(db_url, "relay_record_outcomes", outcomes)
    assert deliveries_rows_read(nodes) < 200, "recording outcomes read the backlog"
    assert not any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") in DELIVERIES for n in nodes)


def test_a_few_leases_and_outcomes_are_found_by_address_in_a_queue_of_thousands(
    db_url: str, conn: Conn
) -> None:
    """Ids and outcomes come as JSON arrays, which the planner takes for 100 rows unless told: then it
    hashed the whole queue (a sequential scan) to update 12 rows of a queue of a few thousand."""
    create_tasks(conn)
    subscription = subscribe(conn, "https://example.com/hook", new_secret(), max_in_flight=64)
    conn.execute("UPDATE rowhook.subscriptions SET last_success_at = now()")  # its whole cap, not one probe
    insert_tasks(conn, 3000)
    fan_out(conn, 3000)
    conn.execute("ANALYZE")
    due = conn.execute(query("relay_scan_due"), {"limit": 12, "skip_subscriptions": [], "window": 48})
    ids = [row["id"] for row in due.fetchall()]
    take = {"ids": Jsonb(ids), "subscription_ids": [subscription], "lease_s": 60, "relay_id": "r1"}
    _, nodes = plan(db_url, "relay_take", take)
    assert not queue_scans(nodes), json.dumps(nodes)
    assert len(conn.execute(query("relay_take"), take).fetchall()) == 12
    attempt = Attempt(attempted_at=datetime(2026, 11, 29, 10, tzinfo=UTC), duration_ms=3, status_code=200)
    results = [Result(i, subscription, attempt, Outcome("succeeded"), 1) for i in ids]
    _, nodes = plan(db_url, "relay_record_outcomes", {"relay_id": "r1", "outcomes": outcomes_json(results)})
    assert not queue_scans(nodes), json.dumps(nodes)


def queue_scans(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in DELIVERIES]


def test_the_relay_analyses_tables_that_grew_since_their_statistics(db_url: str, conn: Conn) -> None:
    create_tasks(conn)
    conn.execute("ANALYZE")
    insert_tasks(conn, 12000)
    conn.execute("SELECT rowhook.expand_changes()")
    if _has_flush(conn):  # PostgreSQL 15+: publish this session's counts now, not within a second
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
    deadline = time.monotonic() + 10  # older servers publish counts within a second or so
    while "outbox" not in (grown := [row["name"] for row in conn.execute(query("relay_grown_tables"))]):
        assert time.monotonic() < deadline, grown
        time.sleep(0.1)
    conn.execute("ANALYZE rowhook.outbox")
    assert "outbox" not in [row["name"] for row in conn.execute(query("relay_grown_tables")).fetchall()]


def _has_flush(conn: Conn) -> bool:
    row = conn.execute("SELECT to_regproc('pg_stat_force_next_flush') IS NOT NULL AS ok").fetchone()
    return bool(row and row["ok"])


def test_a_rate_limited_backlog_is_skipped_and_waited_for_without_reading_it(
    db_url: str, conn: Conn, stale_backlog: str
) -> None:
    subscription = stale_backlog
    conn.execute("UPDATE rowhook.subscriptions SET rate_limit_per_s = 50, last_success_at = now()")
    conn.execute("INSERT INTO rowhook.rate_buckets VALUES (%s, 0, now())", (subscription,))
    _, nodes = plan(db_url, "relay_capped_subscriptions", {})
    assert deliveries_rows_read(nodes) < 100, "the capped scan read the backlog"
    _, nodes = plan(db_url, "relay_next_due", {"rate_wake_s": 0.1})
    assert deliveries_rows_read(nodes) < 100, "relay_next_due read the backlog"
    probes = {n.get("Index Name") for n in nodes if n.get("Relation Name") in DELIVERIES}
    assert "delivery_queue_waiting" in probes, json.dumps(nodes)
    # With tokens again, a claim of the limited subscription reads what it takes, by key.
    conn.execute("UPDATE rowhook.rate_buckets SET tokens = 50")
    scan = {"subscription_ids": [subscription], "tokens": [24], "limit": 24}
    _, nodes = plan(db_url, "relay_scan_due_rate_limited", scan)
    # Its tokens' worth of index entries, then each of those rows locked by key.
    assert deliveries_rows_read(nodes) <= 2 * 24, "the scan of a limited subscription read its backlog"
    scans = {n.get("Index Name") for n in nodes if n.get("Relation Name") in DELIVERIES}
    assert scans == {"delivery_queue_waiting", "delivery_queue_id"}, json.dumps(nodes)
    due = conn.execute(query("relay_scan_due_rate_limited"), scan).fetchall()
    params = {
        "ids": Jsonb([r["id"] for r in due]),
        "subscription_ids": [subscription],
        "lease_s": 60,
        "relay_id": "r1",
    }
    _, nodes = plan(db_url, "relay_take", params)
    assert deliveries_rows_read(nodes) < 200, "relay_take read the backlog"


async def test_the_relay_vacuums_the_delivery_queue_once_deliveries_churned_through_it(
    db_url: str, conn: Conn
) -> None:
    create_tasks(conn)
    subscribe(conn, "https://example.com/hook", new_secret())
    insert_tasks(conn, 1500)
    fan_out(conn, 1500)
    # Finished: each row moves to the log and leaves a dead one in the queue.
    conn.execute("UPDATE rowhook.deliveries SET status = 'succeeded', finished_at = now()")
    if _has_flush(conn):
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
    vacuums = (
        "SELECT vacuum_count + autovacuum_count AS n FROM pg_stat_user_tables"
        " WHERE relname = 'delivery_queue'"
    )
    before = conn.execute(vacuums).fetchone()
    churned = query("relay_churned_queue")
    # Older servers publish counts within a second or so.
    await wait_until(lambda: conn.execute(churned).fetchone() == {"churned": True}, 10, "the churn counted")
    async with running_relay(db_url):
        await wait_until(lambda: conn.execute(vacuums).fetchone() != before, what="a vacuum of the queue")
    dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'delivery_queue'")
    assert dead.fetchone() == {"n_dead_tup": 0}
