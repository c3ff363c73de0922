"""`rowhook prune`: what goes, what stays, and that it deletes in batches."""

from __future__ import annotations

import argparse
from typing import Any

import psycopg
import pytest

from rowhook.cli import main
from rowhook.prune import Retention, prune
from rowhook.settings import Settings

Conn = psycopg.Connection[dict[str, Any]]
DAY_S = 86400.0
RETENTION = Retention(succeeded_s=7 * DAY_S, failed_s=30 * DAY_S)


def add_subscription(conn: Conn) -> str:
    row = conn.execute(
        "INSERT INTO rowhook.subscriptions (account, resource, target_url, secret)"
        " VALUES ('acme', 'tasks', 'https://example.com/hook', 'whsec_x') RETURNING id"
    ).fetchone()
    assert row is not None
    return str(row["id"])


def add_event(conn: Conn, age_days: float, *, dispatched: bool = True) -> int:
    row = conn.execute(
        "INSERT INTO rowhook.outbox (occurred_at, resource, op, account, key, data, dispatched_at)"
        " VALUES (now() - make_interval(secs => %(age)s), 'tasks', 'created', 'acme', '1', '{}',"
        " CASE WHEN %(dispatched)s THEN now() - make_interval(secs => %(age)s) END) RETURNING id",
        {"age": age_days * DAY_S, "dispatched": dispatched},
    ).fetchone()
    assert row is not None
    return int(row["id"])


def add_delivery(conn: Conn, sub: str, status: str, age_days: float, event_id: int | None = None) -> str:
    finished = status in {"succeeded", "failed", "cancelled"}
    row = conn.execute(
        "INSERT INTO rowhook.deliveries (subscription_id, account, event_id, event_type, status, created_at,"
        " finished_at) VALUES (%(sub)s, 'acme', %(event)s, 'tasks.created', %(status)s,"
        " now() - make_interval(secs => %(age)s),"
        " CASE WHEN %(finished)s THEN now() - make_interval(secs => %(age)s) END)"
        " RETURNING id",
        {"sub": sub, "event": event_id, "status": status, "age": age_days * DAY_S, "finished": finished},
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO rowhook.delivery_attempts (delivery_id, duration_ms, status_code) VALUES (%s, 5, 200)",
        (row["id"],),
    )
    return str(row["id"])


def delivery_ids(conn: Conn) -> set[str]:
    return {r["id"] for r in conn.execute("SELECT id FROM rowhook.deliveries")}


def event_ids(conn: Conn) -> set[int]:
    return {r["id"] for r in conn.execute("SELECT id FROM rowhook.outbox")}


def test_succeeded_deliveries_go_after_the_cutoff_failed_ones_later(conn: Conn, db_url: str) -> None:
    sub = add_subscription(conn)
    old_ok = add_delivery(conn, sub, "succeeded", 8)
    old_cancelled = add_delivery(conn, sub, "cancelled", 8)
    young_ok = add_delivery(conn, sub, "succeeded", 6)
    failed_10d = add_delivery(conn, sub, "failed", 10)
    failed_31d = add_delivery(conn, sub, "failed", 31)
    old_pending = add_delivery(conn, sub, "pending", 40)
    old_delivering = add_delivery(conn, sub, "delivering", 40)

    counts = prune(db_url, RETENTION)

    assert delivery_ids(conn) == {young_ok, failed_10d, old_pending, old_delivering}
    assert {old_ok, old_cancelled, failed_31d}.isdisjoint(delivery_ids(conn))
    assert (counts.succeeded_deliveries, counts.failed_deliveries) == (2, 1)
    # attempts went with their deliveries
    orphans = conn.execute(
        "SELECT count(*) AS n FROM rowhook.delivery_attempts a"
        " WHERE NOT EXISTS (SELECT 1 FROM rowhook.deliveries d WHERE d.id = a.delivery_id)"
    ).fetchone()
    assert orphans is not None and orphans["n"] == 0
    assert conn.execute("SELECT count(*) AS n FROM rowhook.delivery_attempts").fetchone() == {"n": 4}


def test_events_go_only_when_dispatched_old_and_no_unfinished_delivery_needs(conn: Conn, db_url: str) -> None:
    sub = add_subscription(conn)
    old_unreferenced = add_event(conn, 8)
    old_undispatched = add_event(conn, 8, dispatched=False)
    young = add_event(conn, 6)
    old_pending = add_event(conn, 8)
    add_delivery(conn, sub, "pending", 8, old_pending)
    old_delivering = add_event(conn, 8)
    add_delivery(conn, sub, "delivering", 8, old_delivering)
    old_failed = add_event(conn, 8)
    add_delivery(conn, sub, "failed", 8, old_failed)  # kept 30 days, and retrying it needs the event
    old_succeeded = add_event(conn, 8)
    add_delivery(conn, sub, "succeeded", 8, old_succeeded)  # pruned first, so the event can go

    counts = prune(db_url, RETENTION)

    assert event_ids(conn) == {old_undispatched, young, old_pending, old_delivering, old_failed}
    assert {old_unreferenced, old_succeeded}.isdisjoint(event_ids(conn))
    assert counts.events == 2


def current_xid(conn: Conn) -> int:
    row = conn.execute("SELECT pg_current_xact_id()::text::bigint AS x").fetchone()
    assert row is not None
    return int(row["x"])


def test_prune_deletes_in_batches_each_in_its_own_transaction(conn: Conn, db_url: str) -> None:
    sub = add_subscription(conn)
    for _ in range(5):
        add_delivery(conn, sub, "succeeded", 8, add_event(conn, 8))
    kept_pending = add_event(conn, 8)
    add_delivery(conn, sub, "pending", 1, kept_pending)
    for _ in range(5):
        add_event(conn, 8)  # after the kept one: the walk must go past it

    before = current_xid(conn)
    counts = prune(db_url, RETENTION, batch_size=2)
    after = current_xid(conn)

    assert (counts.succeeded_deliveries, counts.events) == (5, 10)
    assert event_ids(conn) == {kept_pending}
    # 5 deliveries in batches of 2 and 10 events in batches of 2 take at least 3 + 5 write transactions.
    assert after - before - 1 >= 8


def test_cli_prune_reports_counts_and_refuses_a_bad_batch_size(
    conn: Conn, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = add_subscription(conn)
    add_delivery(conn, sub, "succeeded", 3)
    add_delivery(conn, sub, "failed", 3)
    assert main(["prune", "--database-url", db_url, "--older-than", "2d", "--failed-older-than", "2d"]) == 0
    out = capsys.readouterr().out
    assert (
        "deleted 1 succeeded/cancelled deliveries older than 2 d, 1 failed deliveries older than 2 d" in out
    )
    assert delivery_ids(conn) == set()

    with pytest.raises(SystemExit) as refused:  # argparse refuses it, as it does any bad argument
        main(["prune", "--database-url", db_url, "--batch-size", "0"])
    assert refused.value.code == 2
    assert "--batch-size: 0 is out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--database-url", db_url, "--older-than", "soon"])
    assert exc.value.code == 2


def namespace(**values: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"older_than": None, "failed_older_than": None, **values})


def test_retention_defaults_and_failed_never_shorter_than_succeeded_by_default() -> None:
    defaults = Retention.from_args(namespace(), Settings())
    assert (defaults.succeeded_s, defaults.failed_s) == (7 * DAY_S, 30 * DAY_S)
    longer = Retention.from_args(namespace(older_than=40 * DAY_S), Settings())
    assert (longer.succeeded_s, longer.failed_s) == (40 * DAY_S, 40 * DAY_S)
    explicit = Retention.from_args(namespace(older_than=7 * DAY_S, failed_older_than=DAY_S), Settings())
    assert explicit.failed_s == DAY_S
    from_env = Retention.from_args(
        namespace(), Settings.from_env({"ROWHOOK_KEEP_SUCCEEDED_S": "1d", "ROWHOOK_KEEP_FAILED_S": "2d"})
    )
    assert (from_env.succeeded_s, from_env.failed_s) == (DAY_S, 2 * DAY_S)


def delete_subscription(conn: Conn, sub: str, age_days: float) -> None:
    conn.execute(
        "UPDATE rowhook.subscriptions SET deleted_at = now() - make_interval(secs => %s), secret = NULL"
        " WHERE id = %s",
        (age_days * DAY_S, sub),
    )


def subscription_ids(conn: Conn) -> set[str]:
    return {r["id"] for r in conn.execute("SELECT id FROM rowhook.subscriptions")}


def test_deleted_subscriptions_go_with_their_deliveries_after_the_retention(conn: Conn, db_url: str) -> None:
    gone = add_subscription(conn)
    gone_deliveries = {add_delivery(conn, gone, "succeeded", 40), add_delivery(conn, gone, "cancelled", 35)}
    delete_subscription(conn, gone, 31)
    recently_deleted = add_subscription(conn)
    delete_subscription(conn, recently_deleted, 29)
    still_sending = add_subscription(conn)
    kept_pending = add_delivery(conn, still_sending, "pending", 40)
    delete_subscription(conn, still_sending, 40)
    recently_failed = add_subscription(conn)
    kept_failed = add_delivery(conn, recently_failed, "failed", 10)
    delete_subscription(conn, recently_failed, 40)
    live = add_subscription(conn)
    conn.execute(
        "UPDATE rowhook.subscriptions SET created_at = now() - interval '100 days' WHERE id = %s", (live,)
    )

    counts = prune(db_url, RETENTION)

    assert counts.deleted_subscriptions == 1
    assert subscription_ids(conn) == {recently_deleted, still_sending, recently_failed, live}
    assert delivery_ids(conn) == {kept_pending, kept_failed}
    assert gone_deliveries.isdisjoint(delivery_ids(conn))
    attempts = conn.execute("SELECT count(*) AS n FROM rowhook.delivery_attempts").fetchone()
    assert attempts == {"n": 2}  # those of the two deliveries kept

    # Once the last delivery is finished and old enough, the subscription goes too.
    conn.execute(
        "UPDATE rowhook.deliveries SET status = 'failed', finished_at = now() - interval '31 days'"
        " WHERE id IN (%s, %s)",
        (kept_pending, kept_failed),
    )
    assert prune(db_url, RETENTION).deleted_subscriptions == 2
    assert subscription_ids(conn) == {recently_deleted, live}
    assert delivery_ids(conn) == set()
    assert conn.execute("SELECT count(*) AS n FROM rowhook.delivery_attempts").fetchone() == {"n": 0}


def test_quota_uses_older_than_an_hour_are_pruned(conn: Conn, db_url: str) -> None:
    conn.execute(
        "INSERT INTO rowhook.quota_uses (account, action, used_at) VALUES"
        " ('acme', 'ping', now() - interval '2 hours'), ('acme', 'replay', now() - interval '10 minutes')"
    )
    prune(db_url, RETENTION)
    kept = conn.execute("SELECT action FROM rowhook.quota_uses").fetchall()
    assert kept == [{"action": "replay"}]
