"""Start-up checks of `rowhook serve` and `rowhook relay`: the database answers, the schema is current.

Errors that retrying cannot fix (unknown database, failed authentication, an invalid connection
string, a schema older than this rowhook) end the process at start with one line (StartupError,
exit 2). Errors that pass by themselves (server not up yet, restarting) are retried with a log line
per backoff step; SIGTERM/SIGINT interrupt the wait at once."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from functools import cache

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from rowhook.db import Row
from rowhook.errors import DatabaseUnavailable, StartupError
from rowhook.migrate import migration_version
from rowhook.sqlfiles import migration_files, query

log = logging.getLogger("rowhook")

CONNECT_TIMEOUT_S = 5
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
# libpq messages of connection failures that a retry cannot fix, each with what to do about it.
_PERMANENT: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r'database "[^"]*" does not exist'),
        "create it, or fix the database name in ROWHOOK_DATABASE_URL / --database-url",
    ),
    (
        re.compile(r'role "[^"]*" does not exist|authentication failed|no pg_hba\.conf entry|password'),
        "fix the user or password in ROWHOOK_DATABASE_URL / --database-url, or the server's pg_hba.conf",
    ),
    (
        re.compile(
            r"invalid (?:\w+ )*value|invalid connection option|invalid URI|invalid dsn|missing \"=\""
            r"|unterminated quoted string|invalid percent-encoded|invalid integer"
        ),
        "fix ROWHOOK_DATABASE_URL / --database-url (a libpq URL: postgresql://user@host:5432/dbname)",
    ),
    (
        re.compile(r"SSL|certificate", re.IGNORECASE),
        "fix the sslmode / certificate options of ROWHOOK_DATABASE_URL, or the server's SSL setup",
    ),
]
_TRANSIENT = re.compile(
    r"Connection refused|could not connect|timeout expired|starting up|shutting down|recovery mode"
    r"|Is the server running|No such file or directory|resolve host|could not translate host name"
    r"|server closed the connection|too many clients|SSL SYSCALL",
    re.IGNORECASE,
)


@cache
def required_schema_version() -> int:
    """The newest migration this rowhook ships: the schema version its code is written for."""
    return max(migration_version(path) for path in migration_files())


def installed_schema_version(conn: psycopg.Connection[Row]) -> int:
    """The newest migration applied to this database; 0 when rowhook is not installed."""
    found = conn.execute(query("schema_installed")).fetchone()
    if not found or not found["installed"]:
        return 0
    row = conn.execute(query("schema_version")).fetchone()
    return int(row["version"]) if row else 0


def database_name(url: str) -> str:
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "?"
    return str(params.get("dbname") or params.get("user") or "?")


def schema_problem(dbname: str, installed: int, needed: int) -> str | None:
    """The one-line complaint about a schema older than the code; None when it is current (or newer)."""
    if installed >= needed:
        return None
    if installed == 0:
        return (
            f"database {dbname} has no rowhook schema, this rowhook needs version {needed}:"
            " run `rowhook migrate`"
        )
    return (
        f"database {dbname} has rowhook schema version {installed}, this rowhook needs {needed}:"
        " run `rowhook migrate`"
    )


def check_schema(conn: psycopg.Connection[Row]) -> None:
    problem = schema_problem(conn.info.dbname, installed_schema_version(conn), required_schema_version())
    if problem:
        raise StartupError(problem)


def one_line(message: str) -> str:
    """libpq's message without its 'connection to server at ... failed: FATAL:' prefix and hint lines."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    first = re.sub(r"^connection (?:failed|is bad): ", "", first)
    return re.sub(r"^connection to server (?:at|on) .*? failed: (?:FATAL:\s+)?", "", first).strip()


def permanent_fix(message: str) -> str | None:
    """What to do about a connection error that retrying cannot fix; None if it may pass by itself."""
    if _TRANSIENT.search(message) and "does not exist" not in message:
        return None
    for pattern, fix in _PERMANENT:
        if pattern.search(message):
            return fix
    return None


def connect_checked(url: str, *, role: str) -> psycopg.Connection[Row]:
    """A connection, or StartupError with one line when the error is one that retrying cannot fix."""
    try:
        return psycopg.connect(
            url, row_factory=dict_row, application_name=f"rowhook-{role}", connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.ProgrammingError as exc:  # the connection string itself does not parse
        raise StartupError(
            f"invalid database URL: {one_line(str(exc))}: fix ROWHOOK_DATABASE_URL / --database-url"
        ) from None
    except psycopg.OperationalError as exc:
        if fix := permanent_fix(str(exc)):
            raise StartupError(f"cannot connect to the database: {one_line(str(exc))}: {fix}") from None
        raise DatabaseUnavailable(one_line(str(exc))) from exc


def wait_for_database(url: str, *, role: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once the database answers and carries the schema this rowhook needs.
    Raises StartupError at once for what retrying cannot fix; waits out the rest, logging each step."""
    delay = BACKOFF_FIRST_S
    while True:
        try:
            with connect_checked(url, role=role) as conn:
                check_schema(conn)
            return
        except DatabaseUnavailable as exc:
            log.warning("database not reachable yet (%s); retrying in %.1f s", exc, delay)
        sleep(delay)
        delay = min(BACKOFF_MAX_S, delay * 2)


def check_database(url: str, *, role: str = "cli") -> psycopg.Connection[Row]:
    """For one-shot commands: a connection to a database with the current schema, or a one-line error."""
    conn = connect_checked(url, role=role)
    try:
        check_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn
