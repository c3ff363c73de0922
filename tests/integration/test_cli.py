"""The CLI end to end as a user runs it: subprocesses against a real database."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from psycopg.rows import dict_row

from rowhook.tokens import hash_token


def rowhook(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROWHOOK_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "rowhook.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_migrate_is_idempotent_from_the_cli(empty_db_url: str) -> None:
    first = rowhook(empty_db_url, "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied: 0001_schema")
    second = rowhook(empty_db_url, "migrate")
    assert second.stdout.strip() == "rowhook schema is up to date"


def test_watch_and_unwatch_with_options(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, account_id text NOT NULL, project_id text, pw text)"
        )
    done = rowhook(
        db_url, "watch", "tasks", "--account-column", "account_id", "--scope", "project_id", "--exclude", "pw"
    )
    assert done.returncode == 0, done.stderr
    assert "watching tasks as resource tasks" in done.stdout
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT scope_columns, exclude_columns FROM rowhook.resources").fetchone()
    assert row == (["project_id"], ["pw"])
    assert rowhook(db_url, "unwatch", "tasks").returncode == 0


def test_watch_with_an_allow_list(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tasks (id int PRIMARY KEY, account_id text NOT NULL, title text, pw text)")
    done = rowhook(db_url, "watch", "tasks", "--account-column", "account_id", "--columns", "title")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT columns FROM rowhook.resources").fetchone()
    assert row == (["id", "account_id", "title"],)


def test_watch_refuses_a_nullable_account_column_with_the_fix(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, account_id text)")
    refused = rowhook(db_url, "watch", "notes", "--account-column", "account_id")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "hint: ALTER TABLE notes ALTER COLUMN account_id SET NOT NULL" in refused.stderr


def test_watch_errors_are_clear_and_exit_1(db_url: str) -> None:
    missing = rowhook(db_url, "watch", "nope", "--public")
    assert missing.returncode == 1
    assert 'relation "nope" does not exist' in missing.stderr
    assert "Traceback" not in missing.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tasks (id int PRIMARY KEY, account_id text NOT NULL)")
    unknown = rowhook(db_url, "watch", "tasks", "--account-column", "acct")
    assert unknown.returncode == 1
    assert "account column(s) {acct} not found in table tasks" in unknown.stderr
    assert "hint: Columns of tasks: {id,account_id}" in unknown.stderr


def test_token_create_prints_only_the_token_and_stores_its_hash(db_url: str) -> None:
    created = rowhook(db_url, "token", "create", "--account", "ACME", "--name", "zapier")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("rh_") and "\n" not in token
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT id, account, name, token_hash FROM rowhook.tokens").fetchone()
    assert stored is not None
    token_id, account, name, digest = stored
    assert (account, name, bytes(digest)) == ("ACME", "zapier", hash_token(token))
    assert token not in str(stored)

    listed = rowhook(db_url, "token", "list")
    assert token_id in listed.stdout and "active" in listed.stdout and token not in listed.stdout
    assert rowhook(db_url, "token", "revoke", token_id).returncode == 0
    assert "revoked" in rowhook(db_url, "token", "list", "--account", "ACME").stdout
    again = rowhook(db_url, "token", "revoke", token_id)
    assert again.returncode == 1 and "no active token" in again.stderr


def test_bad_setting_is_reported_without_a_traceback(db_url: str) -> None:
    env = {**os.environ, "ROWHOOK_DATABASE_URL": db_url, "ROWHOOK_POLL_INTERVAL_S": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "rowhook.cli", "status"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "ROWHOOK_POLL_INTERVAL_S='soon'" in done.stderr and "Traceback" not in done.stderr


def test_status_runs_on_an_empty_installation(db_url: str) -> None:
    done = rowhook(db_url, "status")
    assert done.returncode == 0, done.stderr
    assert "outbox lag:             none (0 undispatched events)" in done.stdout


def test_status_counts_only_relays_whose_session_is_alive(db_url: str) -> None:
    from rowhook.status import read_status

    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("INSERT INTO rowhook.relays (id, backend_pid) VALUES ('live', pg_backend_pid())")
        conn.execute("INSERT INTO rowhook.relays (id, backend_pid) VALUES ('killed', 2147483647)")
        assert read_status(conn)["relays"] == 1
