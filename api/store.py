"""The API's database side: named queries run on the request's connection, as rows, one row or a page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.cursors import split_page
from api.database import Conn
from api.errors import NotFound
from rowhook.sqlfiles import query

Row = dict[str, Any]
Params = dict[str, Any]


async def execute(conn: Conn, name: str, params: Params | None = None) -> None:
    await conn.execute(query(name), params or {})


async def fetch_all(conn: Conn, name: str, params: Params | None = None) -> list[Row]:
    return await (await conn.execute(query(name), params or {})).fetchall()


async def fetch_optional(conn: Conn, name: str, params: Params | None = None) -> Row | None:
    return await (await conn.execute(query(name), params or {})).fetchone()


async def fetch_one(
    conn: Conn, name: str, params: Params | None = None, *, missing: str | None = None
) -> Row:
    """The query's first row. Without one: NotFound(missing) when a missing row is the caller's 404,
    else an error (a query that always returns a row, such as INSERT ... RETURNING, returned none)."""
    row = await fetch_optional(conn, name, params)
    if row is None:
        if missing is not None:
            raise NotFound(missing)
        raise AssertionError(f"query {name} returned no row")
    return row


async def fetch_page(
    conn: Conn,
    name: str,
    params: Params,
    size: int,
    kind: str,
    position: Callable[[Row], list[Any]],
) -> tuple[list[Row], str | None]:
    """A page of `size` rows (the query is given %(limit)s = size + 1) and the cursor after it."""
    rows = await fetch_all(conn, name, {**params, "limit": size + 1})
    return split_page(rows, size, kind, position)
