"""Capture triggers: what a committed change writes into rowhook.outbox, and what writes nothing."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[dict[str, Any]]

TASKS = """
CREATE TABLE tasks (
    id bigserial PRIMARY KEY,
    account_id text NOT NULL,
    project_id text,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    password_hash text
)"""


@pytest.fixture
def tasks(conn: Conn) -> Conn:
    conn.execute(TASKS)
    conn.execute(
        "SELECT rowhook.watch('tasks', account_column => 'account_id', scope_columns => '{project_id}',"
        " exclude_columns => '{password_hash}', label_column => 'title')"
    )
    return conn


def events(conn: Conn) -> list[dict[str, Any]]:
    conn.execute("SELECT rowhook.expand_changes()")  # what the relay does before fanning out
    return conn.execute("SELECT * FROM rowhook.outbox ORDER BY id").fetchall()


def test_insert_writes_created_event_with_scope_and_without_excluded_columns(tasks: Conn) -> None:
    tasks.execute(
        "INSERT INTO tasks (account_id, project_id, title, password_hash)"
        " VALUES ('acme', 'proj1', 'a', 'secret')"
    )
    [event] = events(tasks)
    assert event["op"] == "created"
    assert event["resource"] == "tasks"
    assert event["account"] == "acme"
    assert event["key"] == "1"
    assert event["scope"] == {"project_id": "proj1"}
    assert event["data"] == {
        "id": 1,
        "account_id": "acme",
        "project_id": "proj1",
        "title": "a",
        "done": False,
    }
    assert event["previous"] is None and event["changed"] is None
    assert event["dispatched_at"] is None
    assert "secret" not in str(event)


def test_update_carries_previous_values_and_changed_columns(tasks: Conn) -> None:
    tasks.execute("INSERT INTO tasks (account_id, project_id, title) VALUES ('acme', 'proj1', 'old')")
    tasks.execute("UPDATE tasks SET title = 'new', done = true")
    updated = events(tasks)[-1]
    assert updated["op"] == "updated"
    assert updated["data"]["title"] == "new"
    assert updated["previous"] == {"title": "old", "done": False}
    assert updated["changed"] == ["done", "title"]


def test_delete_carries_the_row_as_it_was(tasks: Conn) -> None:
    tasks.execute("INSERT INTO tasks (account_id, project_id, title) VALUES ('acme', 'proj1', 'gone')")
    tasks.execute("DELETE FROM tasks")
    deleted = events(tasks)[-1]
    assert deleted["op"] == "deleted"
    assert deleted["data"]["title"] == "gone"
    assert deleted["scope"] == {"project_id": "proj1"}
    assert deleted["account"] == "acme"


def test_update_of_only_excluded_or_no_columns_writes_nothing(tasks: Conn) -> None:
    tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'a')")
    tasks.execute("UPDATE tasks SET password_hash = 'changed'")
    tasks.execute("UPDATE tasks SET title = title")
    assert [e["op"] for e in events(tasks)] == ["created"]


def test_rolled_back_transaction_and_savepoint_write_nothing(tasks: Conn) -> None:
    with pytest.raises(RuntimeError), tasks.transaction():
        tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'rolled back')")
        raise RuntimeError("abort")
    with tasks.transaction():
        tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'kept')")
        with pytest.raises(RuntimeError), tasks.transaction():  # a savepoint
            tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'savepoint rolled back')")
            raise RuntimeError("abort savepoint")
    assert [e["data"]["title"] for e in events(tasks)] == ["kept"]


def test_bulk_statement_writes_one_event_per_row(tasks: Conn) -> None:
    tasks.execute(
        "INSERT INTO tasks (account_id, project_id, title)"
        " SELECT 'acme', 'p' || (i % 3), 't' || i FROM generate_series(1, 500) i"
    )
    tasks.execute("UPDATE tasks SET done = true WHERE project_id = 'p1'")
    rows = events(tasks)
    assert sum(e["op"] == "created" for e in rows) == 500
    assert sum(e["op"] == "updated" for e in rows) == sum(1 for i in range(1, 501) if i % 3 == 1)
    assert all(e["scope"] == {"project_id": "p1"} for e in rows if e["op"] == "updated")


def test_key_change_is_a_delete_and_a_create(tasks: Conn) -> None:
    tasks.execute("INSERT INTO tasks (id, account_id, title) VALUES (1, 'acme', 'a')")
    tasks.execute("UPDATE tasks SET id = 2")
    created, *key_change = [(e["op"], e["key"]) for e in events(tasks)]
    assert created == ("created", "1")
    assert sorted(key_change) == [("created", "2"), ("deleted", "1")]


def test_events_of_one_transaction_share_its_txid(tasks: Conn) -> None:
    with tasks.transaction():
        tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'a')")
        tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'b')")
    tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'c')")
    txids = [e["txid"] for e in events(tasks)]
    assert txids[0] == txids[1] != txids[2]


def test_composite_primary_key_is_rendered_as_a_stable_json_array(conn: Conn) -> None:
    conn.execute("CREATE TABLE memberships (org text, user_id int, role text, PRIMARY KEY (org, user_id))")
    conn.execute("SELECT rowhook.watch('memberships', account_column => 'org')")
    conn.execute("INSERT INTO memberships VALUES ('acme', 7, 'admin')")
    conn.execute("UPDATE memberships SET role = 'owner'")
    assert [(e["op"], e["key"]) for e in events(conn)] == [
        ("created", '["acme", 7]'),
        ("updated", '["acme", 7]'),
    ]


def test_public_resource_events_have_no_account(conn: Conn) -> None:
    conn.execute("CREATE TABLE countries (code text PRIMARY KEY, name text)")
    conn.execute("SELECT rowhook.watch('countries', public => true)")
    conn.execute("INSERT INTO countries VALUES ('fr', 'France')")
    [event] = events(conn)
    assert event["account"] is None and event["resource"] == "countries"


def test_truncate_of_a_watched_table_is_refused(tasks: Conn) -> None:
    tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'a')")
    with pytest.raises(
        psycopg.errors.FeatureNotSupported, match="TRUNCATE of watched table tasks is refused"
    ):
        tasks.execute("TRUNCATE tasks")
    assert tasks.execute("SELECT count(*) AS n FROM tasks").fetchone() == {"n": 1}


def test_unwatch_stops_capture_and_keeps_the_table(tasks: Conn) -> None:
    assert tasks.execute("SELECT rowhook.unwatch('tasks') AS name").fetchone() == {"name": "tasks"}
    tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'not captured')")
    tasks.execute("TRUNCATE tasks")
    assert events(tasks) == []
    assert tasks.execute("SELECT count(*) AS n FROM rowhook.resources").fetchone() == {"n": 0}


def test_resource_name_defaults_to_table_name_and_can_be_chosen(conn: Conn) -> None:
    conn.execute("CREATE TABLE app_projects (id int PRIMARY KEY, account_id text NOT NULL, name text)")
    conn.execute(
        "SELECT rowhook.watch('app_projects', resource => 'projects', account_column => 'account_id')"
    )
    conn.execute("INSERT INTO app_projects VALUES (1, 'acme', 'Proj 1')")
    assert events(conn)[0]["resource"] == "projects"


def test_notify_is_sent_only_while_a_relay_holds_the_sleep_lock(tasks: Conn, db_url: str) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as listener,
        psycopg.connect(db_url, autocommit=True) as relay,
    ):
        listener.execute("LISTEN rowhook")
        tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'nobody asleep')")
        assert list(listener.notifies(timeout=0.3)) == []
        assert relay.execute("SELECT rowhook.try_sleep_lock()").fetchone() == (True,)
        tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'a relay asleep')")
        assert [n.channel for n in listener.notifies(timeout=2, stop_after=1)] == ["rowhook"]
        assert tasks.execute("SELECT rowhook.some_relay_asleep() AS s").fetchone() == {"s": True}
        relay.close()  # a relay that dies releases the lock with its session
        deadline = time.monotonic() + 10  # the server ends the session a moment after the client goes
        while tasks.execute("SELECT rowhook.some_relay_asleep() AS s").fetchone() == {"s": True}:
            assert time.monotonic() < deadline, "the closed session kept the sleep lock"
            time.sleep(0.02)
        tasks.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'relay gone')")
        assert list(listener.notifies(timeout=0.3)) == []


def test_a_relay_going_to_sleep_waits_for_writers_that_saw_it_awake(tasks: Conn, db_url: str) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as writer,
        psycopg.connect(db_url, autocommit=True) as relay,
    ):
        relay.execute("SET lock_timeout = 200")
        with writer.transaction():
            writer.execute("INSERT INTO tasks (account_id, title) VALUES ('acme', 'in flight')")
            assert relay.execute("SELECT rowhook.try_sleep_lock()").fetchone() == (False,)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                relay.execute("SELECT rowhook.wait_sleep_lock()")
        # Committed: the relay now gets the lock, and its next drain sees the writer's event.
        relay.execute("SELECT rowhook.wait_sleep_lock()")
        assert [e["data"]["title"] for e in events(tasks)] == ["in flight"]


WATCH_ERRORS = [
    (
        "SELECT rowhook.watch('nope', account_column => 'a')",
        psycopg.errors.UndefinedTable,
        'relation "nope" does not exist',
    ),
    (
        "SELECT rowhook.watch('no_pk', account_column => 'account_id')",
        psycopg.errors.InvalidTableDefinition,
        "has no primary key",
    ),
    (
        "SELECT rowhook.watch('tasks', account_column => 'acct')",
        psycopg.errors.UndefinedColumn,
        r"account column\(s\) \{acct\} not found",
    ),
    (
        "SELECT rowhook.watch('tasks', account_column => 'account_id', scope_columns => '{project, x}')",
        psycopg.errors.UndefinedColumn,
        r"scope column\(s\) \{project,x\} not found",
    ),
    (
        "SELECT rowhook.watch('tasks', account_column => 'account_id', exclude_columns => '{pw}')",
        psycopg.errors.UndefinedColumn,
        r"exclude column\(s\) \{pw\} not found",
    ),
    (
        "SELECT rowhook.watch('tasks', account_column => 'account_id', label_column => 'name')",
        psycopg.errors.UndefinedColumn,
        r"label column\(s\) \{name\} not found",
    ),
    (
        "SELECT rowhook.watch('tasks')",
        psycopg.errors.InvalidParameterValue,
        "needs account_column, or public => true",
    ),
    (
        "SELECT rowhook.watch('tasks', account_column => 'account_id', public => true)",
        psycopg.errors.InvalidParameterValue,
        "cannot have both",
    ),
    (
        "SELECT rowhook.watch('tasks', account_column => 'account_id', exclude_columns => '{id}')",
        psycopg.errors.InvalidParameterValue,
        "cannot be excluded",
    ),
    (
        "SELECT rowhook.watch('tasks', resource => 'Bad Name', account_column => 'account_id')",
        psycopg.errors.InvalidParameterValue,
        "is not valid",
    ),
    (
        "SELECT rowhook.watch('a_view', public => true)",
        psycopg.errors.WrongObjectType,
        "is not a plain table",
    ),
    ("SELECT rowhook.unwatch('tasks')", psycopg.errors.UndefinedObject, "is not watched"),
]


@pytest.mark.parametrize(("sql", "error", "message"), WATCH_ERRORS, ids=[m for _, _, m in WATCH_ERRORS])
def test_watch_refuses_bad_input_with_a_clear_error(conn: Conn, sql: str, error: type, message: str) -> None:
    conn.execute(TASKS)
    conn.execute("CREATE TABLE no_pk (account_id text, title text)")
    conn.execute("CREATE VIEW a_view AS SELECT 1 AS id")
    with pytest.raises(error, match=message):
        conn.execute(sql)  # type: ignore[arg-type]
    assert conn.execute("SELECT count(*) AS n FROM rowhook.resources").fetchone() == {"n": 0}


def test_watching_twice_or_reusing_a_name_is_refused(tasks: Conn) -> None:
    with pytest.raises(psycopg.errors.DuplicateObject, match='already watched as resource "tasks"'):
        tasks.execute("SELECT rowhook.watch('tasks', account_column => 'account_id')")
    tasks.execute("CREATE TABLE other (id int PRIMARY KEY, account_id text NOT NULL)")
    with pytest.raises(psycopg.errors.DuplicateObject, match='resource name "tasks" is already used'):
        tasks.execute("SELECT rowhook.watch('other', resource => 'tasks', account_column => 'account_id')")
