"""Statement capture (migration 0011): one rowhook.changes row per statement chunk, expanded into outbox
events by rowhook.expand_changes in capture order, with exactly what per-row capture wrote."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from rowhook.sqlfiles import query
from tests.integration.test_capture import TASKS

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def tasks(conn: Conn) -> Conn:
    conn.execute(TASKS)
    conn.execute(
        "SELECT rowhook.watch('tasks', account_column => 'account_id', scope_columns => '{project_id}',"
        " exclude_columns => '{password_hash}')"
    )
    return conn


def insert_tasks(conn: Conn, count: int, account: str = "acme") -> None:
    conn.execute(
        "INSERT INTO tasks (account_id, project_id, title, password_hash)"
        " SELECT %s, 'p' || (i %% 3), 't' || i, 'hunter2' FROM generate_series(1, %s) AS i",
        (account, count),
    )


def changes(conn: Conn) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT statement, row_count, cardinality(old_keys) AS olds, cardinality(new_keys) AS news"
        " FROM rowhook.changes ORDER BY id"
    ).fetchall()


def expand(conn: Conn, max_events: int | None = None) -> int:
    row = conn.execute("SELECT rowhook.expand_changes(%s) AS n", (max_events,)).fetchone()
    assert row is not None
    return int(row["n"])


def events(conn: Conn) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM rowhook.outbox ORDER BY id").fetchall()


def test_a_bulk_insert_is_one_changes_row_per_thousand_rows_and_one_event_per_row(tasks: Conn) -> None:
    insert_tasks(tasks, 2500)
    assert changes(tasks) == [
        {"statement": "INSERT", "row_count": 1000, "olds": None, "news": 1000},
        {"statement": "INSERT", "row_count": 1000, "olds": None, "news": 1000},
        {"statement": "INSERT", "row_count": 500, "olds": None, "news": 500},
    ]
    assert expand(tasks) == 2500
    found = events(tasks)
    # Event ids follow the rows' order in the statement; every event is what per-row capture wrote.
    assert [e["key"] for e in found] == [str(i) for i in range(1, 2501)]
    assert found[41]["data"] == {
        "id": 42,
        "account_id": "acme",
        "project_id": "p0",
        "title": "t42",
        "done": False,
    }
    assert found[41]["scope"] == {"project_id": "p0"} and found[41]["account"] == "acme"
    assert {e["op"] for e in found} == {"created"}
    assert tasks.execute("SELECT count(*) AS n FROM rowhook.changes").fetchone() == {"n": 0}


@pytest.mark.parametrize("rows, chunks", [(1, 1), (1000, 1), (1001, 2), (2000, 2)])
def test_chunk_boundaries(tasks: Conn, rows: int, chunks: int) -> None:
    insert_tasks(tasks, rows)
    assert len(changes(tasks)) == chunks
    assert expand(tasks) == rows


def test_statements_that_change_nothing_write_no_changes_row(tasks: Conn) -> None:
    insert_tasks(tasks, 3)
    expand(tasks)
    tasks.execute("UPDATE tasks SET title = 'x' WHERE false")
    tasks.execute("DELETE FROM tasks WHERE false")
    tasks.execute("INSERT INTO tasks (account_id, title) SELECT 'acme', 'x' WHERE false")
    assert changes(tasks) == []


def test_a_bulk_update_pairs_old_and_new_rows_across_chunks(tasks: Conn) -> None:
    insert_tasks(tasks, 2500)
    expand(tasks)
    tasks.execute("UPDATE tasks SET done = true WHERE id % 2 = 0")  # 1,250 rows: 100 + 1,000 + 150
    # The first 100 old rows are whole; after them, an old row carries key, account, scope and what
    # changed (migration 0013).
    olds = tasks.execute("SELECT old_rows -> 0 AS first FROM rowhook.changes ORDER BY id").fetchall()
    assert [set(o["first"]) for o in olds] == [
        {"id", "account_id", "project_id", "title", "done"},
        {"id", "account_id", "project_id", "done"},
        {"id", "account_id", "project_id", "done"},
    ]
    tasks.execute("UPDATE tasks SET password_hash = 'changed'")  # excluded only: no event
    assert [c["statement"] for c in changes(tasks)] == ["UPDATE"] * 7
    assert expand(tasks) == 1250
    updated = events(tasks)[2500:]
    assert [e["key"] for e in updated] == [str(i) for i in range(2, 2501, 2)]
    assert all(e["op"] == "updated" and e["previous"] == {"done": False} for e in updated)
    assert all(e["changed"] == ["done"] and e["data"]["done"] is True for e in updated)


def test_an_account_move_in_a_bulk_update_is_deleted_then_created(tasks: Conn) -> None:
    insert_tasks(tasks, 1200)
    expand(tasks)
    tasks.execute("UPDATE tasks SET account_id = 'globex', title = 'moved' WHERE id > 1100")
    assert expand(tasks) == 200
    moved = events(tasks)[1200:]
    assert [(e["op"], e["account"], e["key"]) for e in moved[:2]] == [
        ("deleted", "acme", "1101"),
        ("created", "globex", "1101"),
    ]
    deleted = [e for e in moved if e["op"] == "deleted"]
    assert all(e["data"]["title"] != "moved" and e["previous"] is None for e in deleted)


def test_excluded_columns_are_never_written_into_rowhooks_tables(tasks: Conn) -> None:
    insert_tasks(tasks, 5)
    tasks.execute("UPDATE tasks SET title = title || '!', password_hash = 'hunter3'")
    tasks.execute("DELETE FROM tasks WHERE id = 1")
    raw = tasks.execute("SELECT string_agg(c::text, ' ') AS dump FROM rowhook.changes c").fetchone()
    assert raw is not None and "hunter" not in raw["dump"] and "password_hash" not in raw["dump"]
    expand(tasks)
    assert "hunter" not in str(events(tasks))


def test_changes_captured_before_a_rename_expand_with_the_names_they_were_captured_with(tasks: Conn) -> None:
    insert_tasks(tasks, 2)
    tasks.execute("ALTER TABLE tasks RENAME COLUMN account_id TO owner")
    tasks.execute("ALTER TABLE tasks RENAME COLUMN project_id TO project")
    tasks.execute("INSERT INTO tasks (owner, project, title) VALUES ('globex', 'p9', 'after')")
    expand(tasks)
    found = events(tasks)
    assert [(e["account"], e["scope"]) for e in found] == [
        ("acme", {"project_id": "p1"}),
        ("acme", {"project_id": "p2"}),
        ("globex", {"project": "p9"}),
    ]


def test_columns_added_and_dropped_without_a_refresh_never_break_the_applications_writes(
    conn: Conn,
) -> None:
    # Without the event trigger (rowhook installed by a non-superuser), the capture function is not
    # regenerated after ALTER TABLE: a table with no excluded column is captured as a whole row.
    conn.execute(TASKS)
    conn.execute("SELECT rowhook.watch('tasks', account_column => 'account_id')")
    conn.execute("ALTER EVENT TRIGGER rowhook_follow_alter_table DISABLE")
    try:
        conn.execute("ALTER TABLE tasks ADD COLUMN due date, DROP COLUMN done")
        conn.execute("INSERT INTO tasks (account_id, title, due) VALUES ('acme', 'a', '2026-12-01')")
        conn.execute("UPDATE tasks SET due = '2026-12-02'")
    finally:
        conn.execute("ALTER EVENT TRIGGER rowhook_follow_alter_table ENABLE")
    expand(conn)
    created, updated = events(conn)
    assert created["data"]["due"] == "2026-12-01" and "done" not in created["data"]
    assert updated["previous"] == {"due": "2026-12-01"} and updated["changed"] == ["due"]


def test_expansion_waits_while_enough_events_are_undispatched(tasks: Conn) -> None:
    insert_tasks(tasks, 10)
    insert_tasks(tasks, 10)
    assert expand(tasks, max_events=5) == 10  # whole changes rows: at least max_events
    assert len(changes(tasks)) == 1
    assert expand(tasks, max_events=5) == 0  # 10 events wait to be fanned out already
    tasks.execute("UPDATE rowhook.outbox SET dispatched_at = now()")
    assert expand(tasks, max_events=5) == 10


def test_one_expander_at_a_time(tasks: Conn, db_url: str) -> None:
    insert_tasks(tasks, 3)
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as first:
        assert expand(first) == 3
        insert_tasks(tasks, 2)
        with psycopg.connect(db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as second:
            assert expand(second) == 0  # the first has not committed: its ids come first
        first.commit()
    assert expand(tasks) == 2
    assert [e["key"] for e in events(tasks)] == ["1", "2", "3", "4", "5"]


def test_status_counts_captured_changes_as_undispatched_events(tasks: Conn) -> None:
    insert_tasks(tasks, 1500)
    status = tasks.execute(query("status_summary")).fetchone()
    assert status is not None and status["undispatched_events"] == 1500 and status["outbox_lag_s"] >= 0
    expand(tasks, max_events=1000)
    status = tasks.execute(query("status_summary")).fetchone()
    assert status is not None and status["undispatched_events"] == 1500


def test_a_transaction_that_gives_event_ids_commits_synchronously(tasks: Conn) -> None:
    insert_tasks(tasks, 2)
    with tasks.transaction():
        tasks.execute("SET LOCAL synchronous_commit = off")  # as relay sessions run
        assert expand(tasks) == 2
        row = tasks.execute("SHOW synchronous_commit").fetchone()
        assert row is not None and row["synchronous_commit"] == "on"
    with tasks.transaction():
        tasks.execute("SET LOCAL synchronous_commit = off")
        assert expand(tasks) == 0  # nothing expanded: nothing to make durable first
        row = tasks.execute("SHOW synchronous_commit").fetchone()
        assert row is not None and row["synchronous_commit"] == "off"
