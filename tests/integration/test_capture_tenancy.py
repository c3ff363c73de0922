"""Capture and tenancy: account columns, rows moving between accounts, ALTER TABLE and allow-lists."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[dict[str, Any]]

NOTES = """
CREATE TABLE notes (
    id bigint PRIMARY KEY,
    account_id text NOT NULL,
    project_id text,
    title text,
    password_hash text
)"""


def events(conn: Conn) -> list[dict[str, Any]]:
    conn.execute("SELECT rowhook.expand_changes()")  # what the relay does before fanning out
    return conn.execute("SELECT * FROM rowhook.outbox ORDER BY id").fetchall()


@pytest.fixture
def notes(conn: Conn) -> Conn:
    conn.execute(NOTES)
    conn.execute(
        "SELECT rowhook.watch('notes', account_column => 'account_id', scope_columns => '{project_id}',"
        " exclude_columns => '{password_hash}')"
    )
    return conn


def test_watch_refuses_a_nullable_account_column_with_the_fix_as_hint(conn: Conn) -> None:
    conn.execute("CREATE TABLE loose (id int PRIMARY KEY, account_id text)")
    with pytest.raises(psycopg.errors.NotNullViolation) as caught:
        conn.execute("SELECT rowhook.watch('loose', account_column => 'account_id')")
    assert 'account column "account_id" of table loose allows NULL' in str(caught.value)
    assert caught.value.diag.message_hint == "ALTER TABLE loose ALTER COLUMN account_id SET NOT NULL"
    conn.execute("ALTER TABLE loose ALTER COLUMN account_id SET NOT NULL")
    conn.execute("SELECT rowhook.watch('loose', account_column => 'account_id')")


def test_dropping_not_null_from_a_watched_account_column_is_refused(notes: Conn) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation, match="allows NULL"):
        notes.execute("ALTER TABLE notes ALTER COLUMN account_id DROP NOT NULL")
    row = notes.execute(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attname = 'account_id'"
    ).fetchone()
    assert row == {"attnotnull": True}


def test_a_row_moving_to_another_account_is_deleted_for_one_and_created_for_the_other(notes: Conn) -> None:
    notes.execute("INSERT INTO notes VALUES (1, 'acme', 'p1', 'acme secret plan', 'pw')")
    notes.execute("UPDATE notes SET account_id = 'globex', title = 'globex title' WHERE id = 1")
    _, deleted, created = events(notes)
    assert (deleted["op"], deleted["account"], deleted["key"]) == ("deleted", "acme", "1")
    assert deleted["data"]["title"] == "acme secret plan" and deleted["previous"] is None
    assert (created["op"], created["account"], created["key"]) == ("created", "globex", "1")
    assert created["data"]["title"] == "globex title" and created["previous"] is None
    assert "acme" not in str(created)
    assert "globex" not in str(deleted)


def test_a_bulk_update_moving_some_rows_keeps_the_others_as_updates(notes: Conn) -> None:
    notes.execute("INSERT INTO notes VALUES (1, 'acme', 'p1', 'a', NULL), (2, 'acme', 'p1', 'b', NULL)")
    notes.execute(
        "UPDATE notes SET account_id = CASE id WHEN 1 THEN 'globex' ELSE account_id END, title = 'x'"
    )
    changes = sorted((e["op"], e["account"], e["key"]) for e in events(notes)[2:])
    assert changes == [("created", "globex", "1"), ("deleted", "acme", "1"), ("updated", "acme", "2")]


def test_renaming_an_excluded_column_keeps_it_excluded(notes: Conn) -> None:
    notes.execute("ALTER TABLE notes RENAME COLUMN password_hash TO pw")
    notes.execute("INSERT INTO notes VALUES (1, 'acme', 'p1', 't', 'hunter2')")
    notes.execute("UPDATE notes SET pw = 'hunter3'")  # only the excluded column: no event
    [created] = events(notes)
    assert "hunter2" not in str(created) and "pw" not in created["data"]
    resource = notes.execute("SELECT exclude_columns FROM rowhook.resources").fetchone()
    assert resource is not None and set(resource["exclude_columns"]) == {"pw", "password_hash"}


def test_renaming_account_and_scope_columns_keeps_capture_working(notes: Conn) -> None:
    notes.execute("ALTER TABLE notes RENAME COLUMN account_id TO tenant")
    notes.execute("ALTER TABLE notes RENAME COLUMN project_id TO board")
    notes.execute("INSERT INTO notes (id, tenant, board, title) VALUES (1, 'acme', 'b1', 't')")
    [created] = events(notes)
    assert created["account"] == "acme" and created["scope"] == {"board": "b1"}
    resource = notes.execute("SELECT account_column, scope_columns FROM rowhook.resources").fetchone()
    assert resource == {"account_column": "tenant", "scope_columns": ["board"]}


def test_dropping_a_key_account_or_scope_column_is_refused(notes: Conn) -> None:
    for column in ("account_id", "project_id"):
        with pytest.raises(psycopg.errors.DependentObjectsStillExist, match=column):
            notes.execute(f"ALTER TABLE notes DROP COLUMN {column}")
    notes.execute("ALTER TABLE notes DROP COLUMN title")  # a plain column may go
    notes.execute("INSERT INTO notes (id, account_id) VALUES (1, 'acme')")
    assert events(notes)[0]["data"] == {"id": 1, "account_id": "acme", "project_id": None}


def test_allow_list_captures_only_its_columns_and_never_columns_added_later(conn: Conn) -> None:
    conn.execute(NOTES)
    conn.execute(
        "SELECT rowhook.watch('notes', account_column => 'account_id', scope_columns => '{project_id}',"
        " columns => '{title}')"
    )
    conn.execute("ALTER TABLE notes ADD COLUMN api_key text")
    conn.execute("INSERT INTO notes VALUES (1, 'acme', 'p1', 't', 'pw', 'key')")
    conn.execute("UPDATE notes SET password_hash = 'pw2', api_key = 'key2'")  # nothing captured changed
    conn.execute("UPDATE notes SET title = 'u'")
    created, updated = events(conn)
    # The key, account and scope columns are always part of the row data.
    assert created["data"] == {"id": 1, "account_id": "acme", "project_id": "p1", "title": "t"}
    assert updated["previous"] == {"title": "t"}
    conn.execute("ALTER TABLE notes RENAME COLUMN title TO headline")
    conn.execute("UPDATE notes SET headline = 'v'")
    assert events(conn)[-1]["data"]["headline"] == "v"


def test_allow_list_and_exclusions_cannot_be_combined(conn: Conn) -> None:
    conn.execute(NOTES)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="either columns"):
        conn.execute(
            "SELECT rowhook.watch('notes', account_column => 'account_id', columns => '{title}',"
            " exclude_columns => '{password_hash}')"
        )
    with pytest.raises(psycopg.errors.UndefinedColumn, match="nope"):
        conn.execute("SELECT rowhook.watch('notes', account_column => 'account_id', columns => '{nope}')")


def test_long_resource_names_get_capture_functions_of_their_own(conn: Conn) -> None:
    stem = "r" * 55
    for suffix in ("_aaaaaaa", "_bbbbbbb"):  # 63 characters each, equal in the first 55
        conn.execute(f"CREATE TABLE {stem}{suffix} (id int PRIMARY KEY, account_id text NOT NULL)")
        conn.execute(f"SELECT rowhook.watch('{stem}{suffix}', account_column => 'account_id')")
    functions = conn.execute(
        "SELECT count(DISTINCT tgfoid) AS n FROM pg_trigger WHERE tgname = 'rowhook_capture_insert'"
    ).fetchone()
    assert functions == {"n": 2}
    for suffix in ("_aaaaaaa", "_bbbbbbb"):
        conn.execute(f"INSERT INTO {stem}{suffix} VALUES (1, 'acme')")
    assert [e["resource"] for e in events(conn)] == [stem + "_aaaaaaa", stem + "_bbbbbbb"]
    conn.execute(f"SELECT rowhook.unwatch('{stem}_aaaaaaa')")
    conn.execute(f"INSERT INTO {stem}_bbbbbbb VALUES (2, 'acme')")  # the other one still captures
    assert len(events(conn)) == 3


def test_refresh_by_hand_follows_a_rename_where_no_event_trigger_runs(notes: Conn) -> None:
    notes.execute("ALTER EVENT TRIGGER rowhook_follow_alter_table DISABLE")
    notes.execute("ALTER TABLE notes RENAME COLUMN password_hash TO pw")
    assert notes.execute("SELECT rowhook.refresh('notes') AS name").fetchone() == {"name": "notes"}
    notes.execute("INSERT INTO notes VALUES (1, 'acme', 'p1', 't', 'hunter2')")
    assert "hunter2" not in str(events(notes))
