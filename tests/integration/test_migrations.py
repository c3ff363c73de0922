"""Installing, upgrading and uninstalling rowhook: the runner and the plain psql path give one schema."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from rowhook.migrate import migrate, migration_version
from rowhook.sqlfiles import migration_files, query, sql_dir
from tests.pgserver import psql_command

# A fingerprint of everything rowhook installs, to compare two installations.
SCHEMA_FINGERPRINT = """
SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '') AS item
FROM information_schema.columns WHERE table_schema = 'rowhook'
UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'rowhook'
UNION ALL SELECT 'function', p.oid::regprocedure::text || md5(p.prosrc)
FROM pg_proc p WHERE p.pronamespace = 'rowhook'::regnamespace
UNION ALL SELECT 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'rowhook'::regnamespace
ORDER BY 1, 2
"""


def fingerprint(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(SCHEMA_FINGERPRINT).fetchall()  # type: ignore[return-value]


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM rowhook.migrations ORDER BY version")]


def test_migrate_applies_every_file_once_and_is_idempotent(empty_db_url: str) -> None:
    applied = migrate(empty_db_url)
    assert applied == [p.stem for p in migration_files()]
    assert migrate(empty_db_url) == []
    assert versions(empty_db_url) == [migration_version(p) for p in migration_files()]


def test_two_concurrent_migrations_do_not_collide(empty_db_url: str) -> None:
    results: list[list[str] | BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db_url))
        except BaseException as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sorted(len(r) for r in results) == [0, 0, len(migration_files())]  # type: ignore[arg-type]


def test_install_sql_lists_every_migration_in_order() -> None:
    lines = [
        line for line in (sql_dir() / "install.sql").read_text().splitlines() if line.startswith("\\ir ")
    ]
    assert lines == [f"\\ir migrations/{p.name}" for p in migration_files()]


def test_every_migration_records_its_own_version() -> None:
    for path in migration_files():
        version = migration_version(path)
        assert f"VALUES ({version}, " in path.read_text(), f"{path.name} does not record version {version}"


def test_psql_install_gives_the_schema_the_runner_gives(empty_db_url: str, db_url: str) -> None:
    psql(empty_db_url, sql_dir() / "install.sql")
    assert fingerprint(empty_db_url) == fingerprint(db_url)
    assert migrate(empty_db_url) == []  # the runner recognises what psql installed


def test_uninstall_removes_rowhook_and_its_triggers_but_keeps_app_data(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tasks (id int PRIMARY KEY, account_id text NOT NULL)")
        conn.execute("SELECT rowhook.watch('tasks', account_column => 'account_id')")
        conn.execute("INSERT INTO tasks VALUES (1, 'acme')")
    psql(db_url, sql_dir() / "uninstall.sql")
    psql(db_url, sql_dir() / "uninstall.sql")  # running it twice is harmless
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('rowhook')").fetchone() == (None,)
        triggers = conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'tasks'::regclass").fetchall()
        assert triggers == []
        conn.execute("INSERT INTO tasks VALUES (2, 'acme')")
        conn.execute("TRUNCATE tasks")  # no longer refused


def test_migrate_reports_an_unreachable_database_clearly() -> None:
    from rowhook.errors import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable):
        migrate("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def psql(url: str, path: Path) -> None:
    subprocess.run(
        [*psql_command(), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )


def apply_migrations(url: str, versions: Callable[[int], bool]) -> None:
    """Apply, in order and as psql would, the migration files whose version passes `versions`."""
    for path in migration_files():
        if versions(migration_version(path)):
            psql(url, path)


def test_0005_keeps_data_clears_deleted_secrets_and_requires_live_ones(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 5)  # 0003 on main, 0004 once it lands
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowhook.subscriptions (id, account, resource, target_url, secret, previous_secret,"
            " previous_secret_expires_at, deleted_at) VALUES"
            " ('sub_live', 'acme', 'tasks', 'https://a.example/', 'whsec_live', 'whsec_old', now(), NULL),"
            " ('sub_gone', 'acme', 'tasks', 'https://b.example/', 'whsec_gone', 'whsec_old', now(), now())"
        )
        conn.execute(
            "INSERT INTO rowhook.deliveries (id, subscription_id, account, event_type, status) VALUES"
            " ('msg_1', 'sub_live', 'acme', 'ping', 'pending'),"
            " ('msg_2', 'sub_gone', 'acme', 'ping', 'failed')"
        )
    apply_migrations(empty_db_url, lambda version: version == 5)
    apply_migrations(empty_db_url, lambda version: version > 5)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        subs = conn.execute(
            "SELECT id, secret, previous_secret, previous_secret_expires_at IS NULL, deleted_at IS NULL"
            " FROM rowhook.subscriptions ORDER BY id"
        ).fetchall()
        assert subs == [
            ("sub_gone", None, None, True, False),
            ("sub_live", "whsec_live", "whsec_old", False, True),
        ]
        assert conn.execute("SELECT id, status FROM rowhook.deliveries ORDER BY id").fetchall() == [
            ("msg_1", "pending"),
            ("msg_2", "failed"),
        ]
        with pytest.raises(psycopg.errors.CheckViolation, match="subscriptions_live_have_a_secret"):
            conn.execute("UPDATE rowhook.subscriptions SET secret = NULL WHERE id = 'sub_live'")
        conn.execute(
            "UPDATE rowhook.subscriptions SET secret = NULL, deleted_at = now() WHERE id = 'sub_live'"
        )
        assert 5 in {v for (v,) in conn.execute("SELECT version FROM rowhook.migrations")}
    assert migrate(empty_db_url) == []  # the runner sees everything applied


def test_0004_upgrades_resources_subscriptions_and_paused_work_in_place(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 4)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tasks (id int PRIMARY KEY, account_id text, project_id int, pw text)")
        conn.execute(
            "SELECT rowhook.watch('tasks', account_column => 'account_id', scope_columns => '{project_id}',"
            " exclude_columns => '{pw}')"
        )
        conn.execute("INSERT INTO tasks VALUES (1, 'acme', 7, 'x')")
        for status in ("active", "paused"):
            conn.execute(
                "INSERT INTO rowhook.subscriptions"
                " (id, account, resource, target_url, filter, status, secret) VALUES"
                " (%s, 'acme', 'tasks', 'https://example.com/h', '{\"project_id\": 7}', %s, 'whsec_x')",
                (f"sub_{status}", status),
            )
            conn.execute(
                "INSERT INTO rowhook.deliveries (subscription_id, account, event_id, event_type)"
                " VALUES (%s, 'acme', 1, 'tasks.created')",
                (f"sub_{status}",),
            )
    apply_migrations(empty_db_url, lambda version: version == 4)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT subscription_id, status FROM rowhook.deliveries").fetchall())
        assert statuses == {"sub_active": "pending", "sub_paused": "held"}
        anchors = conn.execute("SELECT DISTINCT filter_anchor FROM rowhook.subscriptions").fetchall()
        assert anchors == [({"project_id": 7},)]
        functions = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'rowhook'::regnamespace"
            " AND proname LIKE 'capture%%' AND proname NOT LIKE 'capture_function%%'"
        ).fetchall()
        assert [name for (name,) in functions] == ["capture_tasks_" + md5_hex("tasks")]
        # The upgraded trigger captures by key and account; the nullable account column was kept
        # (with a warning), its account-less rows are never delivered.
        conn.execute("UPDATE tasks SET account_id = 'globex', pw = 'y'")
        ops = conn.execute("SELECT op, account, data FROM rowhook.outbox ORDER BY id").fetchall()
        assert [(op, account) for op, account, _ in ops] == [
            ("created", "acme"),
            ("deleted", "acme"),
            ("created", "globex"),
        ]
        assert all("pw" not in data for _, _, data in ops)
        assert conn.execute("SELECT attnums FROM rowhook.resources").fetchone() == (
            {"id": 1, "account_id": 2, "project_id": 3, "pw": 4},
        )
    assert versions(empty_db_url) == [1, 2, 3, 4]


def md5_hex(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


def test_0006_keeps_deliveries_and_attempts_and_drops_the_per_attempt_lock(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 6)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowhook.deliveries (id, subscription_id, account, event_id, event_type, status)"
            " VALUES ('msg_a', 'sub_x', 'acme', 7, 'tasks.created', 'succeeded'),"
            "        ('msg_b', 'sub_x', 'acme', 8, 'tasks.created', 'failed')"
        )
        conn.execute(
            "INSERT INTO rowhook.delivery_attempts (delivery_id, duration_ms, status_code)"
            " VALUES ('msg_a', 3, 200), ('msg_b', 4, 500)"
        )
    apply_migrations(empty_db_url, lambda version: version == 6)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        kept = conn.execute(
            "SELECT d.id, a.status_code FROM rowhook.deliveries d"
            " JOIN rowhook.delivery_attempts a ON a.delivery_id = d.id ORDER BY d.id"
        ).fetchall()
        assert kept == [("msg_a", 200), ("msg_b", 500)]
        foreign_keys = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'rowhook.delivery_attempts'::regclass"
            " AND contype = 'f'"
        ).fetchone()
        assert foreign_keys == (0,)
        # The event index keeps only what prune asks about: the failed delivery, not the succeeded one.
        conn.execute("SET enable_seqscan = off")
        needed = conn.execute(
            "SELECT event_id FROM rowhook.deliveries WHERE event_id IS NOT NULL"
            " AND status IN ('pending', 'delivering', 'held', 'failed')"
        ).fetchall()
        assert needed == [(8,)]
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'rowhook.deliveries'::regclass"
        ).fetchone()
        assert options is not None and "autovacuum_analyze_scale_factor=0.01" in options[0]


def test_0007_keeps_held_deliveries_counted_and_claimable_by_subscription(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 7)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowhook.deliveries (id, subscription_id, account, event_type, status)"
            " VALUES ('msg_h1', 'sub_p', 'acme', 'ping', 'held'),"
            "        ('msg_h2', 'sub_p', 'acme', 'ping', 'held'),"
            "        ('msg_p1', 'sub_a', 'acme', 'ping', 'pending')"
        )
        conn.execute(
            "INSERT INTO rowhook.subscriptions (id, account, resource, target_url, secret)"
            " VALUES ('sub_a', 'acme', 'tasks', 'https://example.com/h', 'whsec_x')"
        )
    apply_migrations(empty_db_url, lambda version: version == 7)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT rowhook.held_deliveries('sub_p')").fetchone() == (2,)
        indexes = {
            name for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'rowhook'")
        }
        assert "deliveries_waiting" in indexes and "deliveries_held" not in indexes
    apply_migrations(empty_db_url, lambda version: version > 7)  # today's relay queries need the rest
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        due = conn.execute(query("relay_scan_due_by_subscription"), {"limit": 10, "skip_subscriptions": []})
        assert [row[0] for row in due] == ["msg_p1"]


def test_0008_keeps_subscriptions_with_no_headers_and_every_update(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 8)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowhook.subscriptions (id, account, resource, target_url, secret, filter)"
            " VALUES ('sub_a', 'acme', 'tasks', 'https://example.com/h', 'whsec_x', '{\"project_id\": 7}')"
        )
        conn.execute(
            "INSERT INTO rowhook.outbox (resource, op, account, key, scope, data, previous, changed)"
            " VALUES ('tasks', 'updated', 'acme', '1', '{\"project_id\": 7}', '{}', '{\"title\": \"a\"}',"
            " '{title}')"
        )
    apply_migrations(empty_db_url, lambda version: version == 8)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        kept = conn.execute(
            "SELECT filter, headers, columns, filter_anchor FROM rowhook.subscriptions WHERE id = 'sub_a'"
        ).fetchone()
        assert kept == ({"project_id": 7}, {}, None, {"project_id": 7})
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'subscriptions_fanout'"
        ).fetchone()
        assert index is not None and "INCLUDE (id, events, filter, status, columns)" in index[0]
    apply_migrations(empty_db_url, lambda version: version > 8)  # today's fan-out query needs them all
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        # The event captured before the upgrade still reaches the subscription, which takes every update.
        fanned = conn.execute(
            query("relay_fan_out"), {"batch": 10, "free": 0, "lease_s": 60, "relay_id": "none"}
        ).fetchone()
        assert fanned is not None and fanned[:2] == (1, 1)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE rowhook.subscriptions SET columns = '{}' WHERE id = 'sub_a'")


def test_0011_keeps_undispatched_events_and_moves_capture_to_changes(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 11)
    app_role = f"rowhook_app_{os.getpid()}"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        # An application role with what docs/dba.md asked for before 0011: INSERT on the outbox.
        conn.execute(f"DROP ROLE IF EXISTS {app_role}")
        conn.execute(f"CREATE ROLE {app_role} NOLOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA rowhook TO {app_role}")
        conn.execute(f"GRANT INSERT ON rowhook.outbox TO {app_role}")
        conn.execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, account_id text NOT NULL, project_id int, pw text)"
        )
        conn.execute(
            "SELECT rowhook.watch('tasks', account_column => 'account_id', scope_columns => '{project_id}',"
            " exclude_columns => '{pw}')"
        )
        conn.execute("INSERT INTO tasks VALUES (1, 'acme', 7, 'x'), (2, 'acme', 8, 'y')")
        conn.execute(
            "INSERT INTO rowhook.subscriptions (id, account, resource, target_url, secret)"
            " VALUES ('sub_a', 'acme', 'tasks', 'https://example.com/h', 'whsec_x')"
        )
        conn.execute(f"GRANT SELECT, UPDATE ON tasks TO {app_role}")
    apply_migrations(empty_db_url, lambda version: version >= 11)  # and every later one
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        # The existing trigger now calls the new capture function, and the application's role may
        # write what it writes: the next write is a changes row.
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {app_role}")
            conn.execute("UPDATE tasks SET project_id = 9, pw = 'z' WHERE id = 1")
        conn.execute(f"DROP OWNED BY {app_role}")
        conn.execute(f"DROP ROLE {app_role}")
        assert conn.execute("SELECT statement, row_count FROM rowhook.changes").fetchall() == [("UPDATE", 1)]
        conn.execute(query("relay_expand_changes"), {"batch": 100})
        conn.execute(query("relay_fan_out"), {"batch": 100, "free": 0, "lease_s": 60, "relay_id": "none"})
        events = conn.execute(
            "SELECT op, key, scope, previous, dispatched_at IS NOT NULL FROM rowhook.outbox ORDER BY id"
        )
        assert events.fetchall() == [
            ("created", "1", {"project_id": 7}, None, True),  # captured before the upgrade
            ("created", "2", {"project_id": 8}, None, True),
            ("updated", "1", {"project_id": 9}, {"project_id": 7}, True),
        ]
        deliveries = conn.execute("SELECT count(*) FROM rowhook.deliveries WHERE subscription_id = 'sub_a'")
        assert deliveries.fetchone() == (3,)


def test_0009_keeps_tokens_working_with_every_scope_and_no_expiry(empty_db_url: str) -> None:
    from rowhook.tokens import hash_token

    apply_migrations(empty_db_url, lambda version: version < 9)
    old_token = "rh_" + "a" * 43  # made by the CLI before 0009: the digest is all that is stored
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowhook.tokens (id, account, name, token_hash) VALUES"
            " ('tok_old', 'acme', 'zapier', %s), ('tok_gone', 'acme', NULL, 'x')",
            (hash_token(old_token),),
        )
        conn.execute("UPDATE rowhook.tokens SET revoked_at = now() WHERE id = 'tok_gone'")
    apply_migrations(empty_db_url, lambda version: version == 9)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, account, name, scopes, expires_at, revoked_at IS NULL FROM rowhook.tokens ORDER BY id"
        ).fetchall()
        assert rows == [
            ("tok_gone", "acme", None, ["manage"], None, False),
            ("tok_old", "acme", "zapier", ["manage"], None, True),
        ]
        found = conn.execute(query("authenticate_token"), {"token_hash": hash_token(old_token)}).fetchone()
        assert found is not None and found[1:] == ("acme", ["manage"], None, False, False)
        made = conn.execute("SELECT token FROM rowhook.create_token('acme')").fetchone()
        assert made is not None and made[0].startswith("rh_") and len(made[0]) == len(old_token)
    assert all(migration_version(Path(name)) > 9 for name in migrate(empty_db_url))


def test_0010_leaves_subscriptions_unlimited_and_their_pending_work_claimable(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 10)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowhook.subscriptions (id, account, resource, target_url, secret, max_in_flight)"
            " VALUES ('sub_a', 'acme', 'tasks', 'https://example.com/h', 'whsec_x', 3)"
        )
        conn.execute(
            "INSERT INTO rowhook.deliveries (id, subscription_id, account, event_type, status)"
            " VALUES ('msg_p1', 'sub_a', 'acme', 'ping', 'pending'),"
            "        ('msg_p2', 'sub_a', 'acme', 'ping', 'pending')"
        )
        conn.execute(
            "UPDATE rowhook.deliveries SET next_attempt_at = next_attempt_at + interval '1 ms'"
            " WHERE id = 'msg_p2'"
        )
    # And the later ones, which today's relay queries need.
    apply_migrations(empty_db_url, lambda version: version >= 10)  # and every later one
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        row = conn.execute("SELECT max_in_flight, rate_limit_per_s FROM rowhook.subscriptions").fetchone()
        assert row == (3, None)
        # Unlimited: no bucket, nothing skipped, and a claim takes both (its probe cap aside: one).
        assert conn.execute(query("relay_capped_subscriptions")).fetchall() == []
        params = {
            "ids": Jsonb(["msg_p1", "msg_p2"]),
            "subscription_ids": ["sub_a"],
            "lease_s": 60,
            "relay_id": "r",
        }
        assert [r[0] for r in conn.execute(query("relay_take"), params)] == ["msg_p1"]
        assert conn.execute("SELECT count(*) FROM rowhook.rate_buckets").fetchone() == (0,)
        for bad in ("0", "-1", "NaN", "Infinity"):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("UPDATE rowhook.subscriptions SET rate_limit_per_s = %s::float8", (bad,))


def test_0012_leaves_failing_subscriptions_probed_at_once_then_waiting_after_a_failure(
    empty_db_url: str,
) -> None:
    apply_migrations(empty_db_url, lambda version: version < 12)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowhook.subscriptions (id, account, resource, target_url, secret, max_in_flight,"
            " failing_since, last_success_at) VALUES"
            " ('sub_f', 'acme', 'tasks', 'https://example.com/h', 'whsec_x', 3, now(), now())"
        )
        conn.execute(
            "INSERT INTO rowhook.deliveries (id, subscription_id, account, event_type, status)"
            " VALUES ('msg_p1', 'sub_f', 'acme', 'ping', 'pending'),"
            "        ('msg_p2', 'sub_f', 'acme', 'ping', 'pending')"
        )
    apply_migrations(empty_db_url, lambda version: version >= 12)  # and every later one
    take = {"ids": Jsonb(["msg_p1", "msg_p2"]), "subscription_ids": ["sub_f"], "lease_s": 60, "relay_id": "r"}
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        cap = "SELECT next_probe_at, rowhook.in_flight_cap(s) AS cap FROM rowhook.subscriptions s"
        assert conn.execute(cap).fetchone() == (None, 1)  # failing: probed one delivery at a time, now
        assert conn.execute(query("relay_capped_subscriptions")).fetchall() == []
        # A failed probe: nothing of it is skipped or leased until its next probe is due.
        conn.execute(query("relay_mark_failing"), {"subscription_ids": ["sub_f"], "probe_in_s": [30.0]})
        assert conn.execute(query("relay_capped_subscriptions")).fetchall() == [
            ("sub_f", False, None, False, True)
        ]
        with conn.transaction():
            assert conn.execute(query("relay_take"), take).fetchall() == []
            raise psycopg.Rollback()
        # A success elsewhere (here: the clear a success writes) gives it its whole cap again.
        conn.execute(query("relay_clear_failing"), {"subscription_ids": ["sub_f"]})
        assert conn.execute(cap).fetchone() == (None, 3)
        assert sorted(r[0] for r in conn.execute(query("relay_take"), take)) == ["msg_p1", "msg_p2"]


def test_0013_keeps_of_old_rows_what_changed_and_expands_what_0011_captured(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 13)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE notes (id int PRIMARY KEY, account_id text NOT NULL, project_id int,"
            " body text NOT NULL, done boolean NOT NULL DEFAULT false, amount numeric)"
        )
        conn.execute(
            "SELECT rowhook.watch('notes', account_column => 'account_id', scope_columns => '{project_id}')"
        )
        conn.execute(
            "INSERT INTO notes SELECT i, 'acme', 7, repeat('x', 3000), false, 1.0"
            " FROM generate_series(1, 101) AS i"
        )
        conn.execute("UPDATE notes SET done = true")  # captured by 0011, expanded after the upgrade
    apply_migrations(empty_db_url, lambda version: version >= 13)  # and every later one
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        # The existing trigger now calls the new function: after the first 100, an old row carries key,
        # account, scope and what changed (1.0 -> 1.00 prints differently: it travels), not the body.
        conn.execute("UPDATE notes SET done = false, amount = 1.00")
        old_rows = conn.execute(
            "SELECT old_rows::text FROM rowhook.changes WHERE old_rows IS NOT NULL ORDER BY id"
        ).fetchall()
        assert [len(json.loads(rows)) for (rows,) in old_rows] == [101, 100, 1]
        assert "x" * 3000 in old_rows[1][0]
        assert json.loads(old_rows[2][0]) == [
            {"id": 101, "account_id": "acme", "project_id": 7, "done": True, "amount": 1.0}
        ]
        # A key change keeps the old row whole: it becomes a deleted event.
        conn.execute("UPDATE notes SET id = id + 1000")
        # DDL where no event trigger regenerates the function never breaks the application's writes.
        conn.execute("ALTER EVENT TRIGGER rowhook_follow_alter_table DISABLE")
        try:
            conn.execute("ALTER TABLE notes DROP COLUMN amount, ADD COLUMN due date")
            conn.execute("UPDATE notes SET due = '2026-12-01'")
        finally:
            conn.execute("ALTER EVENT TRIGGER rowhook_follow_alter_table ENABLE")
        conn.execute("SELECT rowhook.expand_changes()")
        events = conn.execute(
            "SELECT op, key, previous, changed, data ->> 'body' = repeat('x', 3000) FROM rowhook.outbox"
            " WHERE key IN ('101', '1101') ORDER BY id"
        )
        assert events.fetchall() == [
            ("created", "101", None, None, True),
            ("updated", "101", {"done": False}, ["done"], True),
            # 1.0 and 1.00 are one jsonb number: the event is what 0011 made of it.
            ("updated", "101", {"done": True}, ["done"], True),
            ("deleted", "101", None, None, True),
            ("created", "1101", None, None, True),
            ("updated", "1101", {"due": None}, ["due"], True),
        ]


def test_0015_moves_every_delivery_into_the_queue_or_the_log_with_its_grants(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 15)
    reader = f"reader_{uuid.uuid4().hex[:12]}"  # roles are the server's: one of this test's own
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {reader}")
        conn.execute(f"GRANT USAGE ON SCHEMA rowhook TO {reader}")
        conn.execute(f"GRANT SELECT, UPDATE ON rowhook.deliveries, rowhook.attempts TO {reader}")
        conn.execute(
            "INSERT INTO rowhook.deliveries (id, subscription_id, account, event_type, status, attempts,"
            " finished_at, last_attempt_at, last_status_code) VALUES"
            " ('msg_p', 'sub_a', 'acme', 'ping', 'pending', 0, NULL, NULL, NULL),"
            " ('msg_d', 'sub_a', 'acme', 'ping', 'delivering', 0, NULL, NULL, NULL),"
            " ('msg_h', 'sub_a', 'acme', 'ping', 'held', 0, NULL, NULL, NULL),"
            " ('msg_s', 'sub_a', 'acme', 'ping', 'succeeded', 1, now(), now(), 200),"
            " ('msg_f', 'sub_a', 'acme', 'ping', 'failed', 3, now(), now(), 500),"
            " ('msg_c', 'sub_a', 'acme', 'ping', 'cancelled', 0, now(), NULL, NULL)"
        )
        before = conn.execute("SELECT * FROM rowhook.deliveries ORDER BY id").fetchall()
    try:
        apply_migrations(empty_db_url, lambda version: version >= 15)
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            assert conn.execute("SELECT * FROM rowhook.deliveries ORDER BY id").fetchall() == before
            where = dict(
                conn.execute("SELECT id, tableoid::regclass::text FROM rowhook.deliveries").fetchall()
            )
            assert where == {
                "msg_p": "rowhook.delivery_queue",
                "msg_d": "rowhook.delivery_queue",
                "msg_h": "rowhook.delivery_queue",
                "msg_s": "rowhook.delivery_log",
                "msg_f": "rowhook.delivery_log",
                "msg_c": "rowhook.delivery_log",
            }
            attempts = conn.execute("SELECT delivery_id, status_code FROM rowhook.attempts ORDER BY 1")
            assert attempts.fetchall() == [("msg_f", 500), ("msg_s", 200)]
            # The role that could read and change deliveries still can, through the table and the view.
            conn.execute(f"SET ROLE {reader}")
            assert conn.execute("SELECT count(*) FROM rowhook.deliveries").fetchone() == (6,)
            assert conn.execute("SELECT count(*) FROM rowhook.attempts").fetchone() == (2,)
            # A retry moves a finished delivery back into the queue; finishing moves it to the log.
            conn.execute("UPDATE rowhook.deliveries SET status = 'pending' WHERE id = 'msg_f'")
            conn.execute("UPDATE rowhook.deliveries SET status = 'succeeded' WHERE id = 'msg_d'")
            conn.execute("RESET ROLE")
            moved = dict(
                conn.execute(
                    "SELECT id, tableoid::regclass::text FROM rowhook.deliveries"
                    " WHERE id IN ('msg_f', 'msg_d')"
                ).fetchall()
            )
            assert moved == {"msg_f": "rowhook.delivery_queue", "msg_d": "rowhook.delivery_log"}
            assert conn.execute("SELECT count(*) FROM rowhook.migrations WHERE version = 15").fetchone() == (
                1,
            )
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {reader}")
            conn.execute(f"DROP ROLE {reader}")


def test_0014_plans_the_expander_generically_and_expands_changes_captured_before(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 14)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tasks (id int PRIMARY KEY, account_id text NOT NULL)")
        conn.execute("SELECT rowhook.watch('tasks', account_column => 'account_id')")
        conn.execute("INSERT INTO tasks VALUES (1, 'acme')")
    apply_migrations(empty_db_url, lambda version: version >= 14)  # and every later one
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        config = conn.execute(
            "SELECT proconfig FROM pg_proc"
            " WHERE oid = 'rowhook.expand_changes(integer, boolean)'::regprocedure"
        ).fetchone()
        assert config == (["plan_cache_mode=force_generic_plan"],)
        # The change captured before the upgrade, and one after, become events in capture order; the
        # setting is the function's own, not left behind in the session.
        conn.execute("UPDATE tasks SET account_id = 'acme' WHERE id = 1")
        conn.execute("INSERT INTO tasks VALUES (2, 'acme')")
        assert conn.execute(query("relay_expand_changes"), {"batch": 100}).fetchone() == (2,)
        assert conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)
        events = conn.execute("SELECT op, key FROM rowhook.outbox ORDER BY id").fetchall()
        assert events == [("created", "1"), ("created", "2")]


def test_0016_expands_ids_and_bodies_as_0015_did(empty_db_url: str) -> None:
    apply_migrations(empty_db_url, lambda version: version < 16)
    events = (
        "SELECT txid, occurred_at, resource, op, account, key, scope, data, previous, changed"
        " FROM rowhook.outbox ORDER BY id"
    )
    ids = (
        "SELECT rowhook.delivery_id(e, s, r)"
        " FROM (VALUES (1::bigint), (NULL), (9223372036854775807)) AS a(e),"
        " (VALUES ('sub_a'), (NULL), ('')) AS b(s), (VALUES ('rpl_1'), (NULL)) AS c(r) ORDER BY e, s, r"
    )
    bodies = (
        "SELECT rowhook.visible_data(r, o.data), rowhook.visible_data(r, o.previous)"
        " FROM rowhook.outbox o JOIN rowhook.resources r ON r.name = o.resource ORDER BY o.id"
    )
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        # Scope of one column, of two, of none; an allow-list and an exclusion list.
        conn.execute("CREATE TABLE one (id int PRIMARY KEY, account text NOT NULL, p text, body text, n int)")
        conn.execute(
            "CREATE TABLE two (id int PRIMARY KEY, account text NOT NULL, p text, q int, secret text)"
        )
        conn.execute("CREATE TABLE bare (a int, b int, account text NOT NULL, PRIMARY KEY (a, b))")
        conn.execute("SELECT rowhook.watch('one', account_column => 'account', scope_columns => '{p}')")
        conn.execute(
            "SELECT rowhook.watch('two', account_column => 'account', scope_columns => '{p,q}',"
            " exclude_columns => '{secret}')"
        )
        conn.execute("SELECT rowhook.watch('bare', account_column => 'account', columns => '{a,account}')")
        conn.execute(
            "INSERT INTO one SELECT i, 'acme', 'p' || i % 3, 'x', i FROM generate_series(1, 2500) AS i"
        )
        conn.execute("UPDATE one SET n = n + 1, p = 'p9' WHERE id % 7 = 0")
        conn.execute("UPDATE one SET account = 'other' WHERE id % 11 = 0")
        conn.execute("DELETE FROM one WHERE id % 13 = 0")
        conn.execute("INSERT INTO two SELECT i, 'acme', NULL, i, 's' FROM generate_series(1, 30) AS i")
        conn.execute("UPDATE two SET q = q + 1, secret = 't' WHERE id < 10")
        conn.execute("INSERT INTO bare SELECT i, i, 'acme' FROM generate_series(1, 5) AS i")
        conn.execute("UPDATE bare SET a = a + 100 WHERE a < 3")
        # What 0015's expander makes of these changes, rolled back so that 0016's gets the same ones.
        with conn.transaction(force_rollback=True):
            [(written,)] = conn.execute("SELECT rowhook.expand_changes()").fetchall()
            before = conn.execute(events).fetchall()
            before_bodies = conn.execute(bodies).fetchall()
        before_ids = conn.execute(ids).fetchall()
    apply_migrations(empty_db_url, lambda version: version >= 16)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        config = conn.execute(
            "SELECT proconfig FROM pg_proc"
            " WHERE oid = 'rowhook.expand_changes(integer, boolean)'::regprocedure"
        ).fetchone()
        assert config == (["plan_cache_mode=force_generic_plan"],)
        assert conn.execute("SELECT rowhook.expand_changes()").fetchone() == (written,)
        assert conn.execute(events).fetchall() == before
        assert len(before) == written > 2500
        assert conn.execute(bodies).fetchall() == before_bodies
        assert conn.execute(ids).fetchall() == before_ids
        assert conn.execute("SELECT max(version) FROM rowhook.migrations").fetchone() == (16,)
