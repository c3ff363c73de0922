"""rowhook's own exception types; driver errors are translated into these in one place."""

from __future__ import annotations

import psycopg


class RowhookError(Exception):
    """Base of every error rowhook raises on purpose; its message is meant for a person."""


class DatabaseUnavailable(RowhookError):
    """The database cannot be reached."""


class InvalidRequest(RowhookError):
    """The database refused the request as invalid (bad table, column, option)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message if not hint else f"{message}\nhint: {hint}")
        self.message = message
        self.hint = hint


def translate(exc: psycopg.Error) -> RowhookError:
    """Turn a driver error into a rowhook error carrying PostgreSQL's message and hint."""
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return DatabaseUnavailable(str(exc).strip())
    diag = exc.diag
    message = diag.message_primary or str(exc).strip()
    return InvalidRequest(message, diag.message_hint)


class StartupError(RowhookError):
    """A process cannot work with this configuration (no database, wrong schema, bad URL): exit 2.
    Retrying cannot help, so the message says what to change."""
