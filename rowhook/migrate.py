"""The migration runner: applies pending sql/migrations files in order (the files a DBA runs with psql)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from rowhook.db import Row, connect
from rowhook.errors import translate
from rowhook.sqlfiles import migration_files

# Serialises concurrent `rowhook migrate` runs against one database (any constant unique to rowhook).
MIGRATE_LOCK_ID = 0x726F77686F6F6B  # "rowhook"


def migration_version(path: Path) -> int:
    return int(path.name.split("_", 1)[0])


def applied_versions(conn: psycopg.Connection[Row]) -> set[int]:
    found = conn.execute("SELECT to_regclass('rowhook.migrations') IS NOT NULL AS installed").fetchone()
    if not found or not found["installed"]:
        return set()
    return {row["version"] for row in conn.execute("SELECT version FROM rowhook.migrations")}


def migrate(url: str) -> list[str]:
    """Apply every pending migration in one transaction; return the names of those applied."""
    applied_now: list[str] = []
    with connect(url) as conn:
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_ID,))
            done = applied_versions(conn)
            for path in migration_files():
                version = migration_version(path)
                if version in done:
                    continue
                conn.execute(path.read_text())  # a trusted file, not user input
                if version not in applied_versions(conn):
                    raise RuntimeError(f"{path.name} did not record itself in rowhook.migrations")
                applied_now.append(path.stem)
        except psycopg.Error as exc:
            raise translate(exc) from exc
    return applied_now
