"""The one connection helper: psycopg connections and pools configured the same way everywhere."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from rowhook.errors import DatabaseUnavailable

APPLICATION_NAME = "rowhook"
Row = dict[str, Any]


def connect(url: str, *, autocommit: bool = False, role: str = "cli") -> psycopg.Connection[Row]:
    try:
        return psycopg.connect(
            url, autocommit=autocommit, row_factory=dict_row, application_name=f"{APPLICATION_NAME}-{role}"
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip()) from exc


async def async_connect(url: str, *, autocommit: bool = False, role: str) -> psycopg.AsyncConnection[Row]:
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=autocommit, row_factory=dict_row, application_name=f"{APPLICATION_NAME}-{role}"
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip()) from exc


def async_pool(url: str, *, role: str, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    """A pool that is not open yet: open it with `await pool.open(wait=True)` in a lifespan."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"row_factory": dict_row, "application_name": f"{APPLICATION_NAME}-{role}"},
        check=AsyncConnectionPool.check_connection,
    )
