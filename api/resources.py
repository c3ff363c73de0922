"""GET /resources and /resources/{name}/items: what an account may subscribe to, and its rows to pick from."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
from litestar import Controller, Request, get
from litestar.params import FromPath
from psycopg import sql

from api.cursors import Cursor, Limit, decode_cursor, page_size, split_page
from api.database import AccountDep, Conn, ConnDep, SettingsDep
from api.errors import NOT_FOUND, UNPROCESSABLE, BadRequest, NotFound, Unprocessable, responses
from api.models import to_response
from api.schemas import (
    EVENTS,
    MAX_FILTER_BYTES,
    MAX_FILTER_VALUE_CHARS,
    ItemOut,
    ItemPage,
    ResourceOut,
    ResourcePage,
    SamplePage,
)
from api.store import fetch_all, fetch_one, fetch_optional, fetch_page
from api.strict import FILTERS_IN_QUERY

RESOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


async def get_resource(conn: Conn, name: str, field: str | None = None) -> dict[str, Any]:
    """The resource row; unknown is a 404 in a path and a 422 naming `field` in a body."""
    row = None
    if RESOURCE_NAME.fullmatch(name):
        row = await fetch_optional(conn, "api_get_resource", {"name": name})
    if row is None:
        if field:
            raise Unprocessable(f"no resource named {name!r}; GET /resources lists them", field=field)
        raise NotFound(f"no resource named {name!r}; GET /resources lists them")
    return row


async def column_types(conn: Conn, resource: dict[str, Any], columns: list[str]) -> dict[str, str]:
    rows = await fetch_all(conn, "api_column_types", {"table_oid": resource["table_oid"], "columns": columns})
    return {row["name"]: row["type"] for row in rows}


async def coerce_filter(conn: Conn, resource: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The filter with each value as the JSON of its column's native type, as the capture triggers
    write it into outbox.scope (the relay matches by jsonb containment, so "7" must become 7)."""
    scope = resource["scope_columns"]
    for column in sorted(wanted):
        if column not in scope:
            allowed = ", ".join(scope) or "none"
            raise Unprocessable(
                f"{column!r} is not a scope column of resource {resource['name']!r} "
                f"(scope columns: {allowed})",
                field=f"filter.{column}",
            )
    for column in sorted(wanted):
        if len(filter_text(wanted[column])) > MAX_FILTER_VALUE_CHARS:
            raise Unprocessable(
                f"a filter value may have at most {MAX_FILTER_VALUE_CHARS} characters",
                field=f"filter.{column}",
            )
    types = await column_types(conn, resource, list(wanted))
    coerced: dict[str, Any] = {}
    for column, value in wanted.items():
        text = filter_text(value)
        statement = sql.SQL("SELECT to_jsonb(%s::{}) AS value").format(sql.SQL(types[column]))
        try:
            async with conn.transaction():  # a savepoint: a failed cast must not abort the request
                row = await (await conn.execute(statement, (text,))).fetchone()
        except psycopg.DataError:
            raise Unprocessable(
                f"{value!r} is not a valid {types[column]}", field=f"filter.{column}"
            ) from None
        assert row is not None
        coerced[column] = row["value"]
    if len(json.dumps(coerced, ensure_ascii=False).encode()) > MAX_FILTER_BYTES:
        raise Unprocessable(
            f"the filter may take at most {MAX_FILTER_BYTES} bytes as JSON; use fewer or shorter values",
            field="filter",
        )
    return coerced


def filter_text(value: str | float | bool) -> str:
    """A filter value as PostgreSQL input: 7.0 -> '7' (so it casts to an integer column), True -> 'true'."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return json.dumps(value)


def to_resource_out(row: dict[str, Any]) -> ResourceOut:
    return to_response(ResourceOut, row, events=list(EVENTS))


async def keyset_page(
    conn: Conn, statement: sql.Composed, params: dict[str, Any], limit: int, kind: str
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of rows of an app table, read `limit + 1` at a time, each with its key `position`; a
    cursor whose values do not cast to the key's types is a 400."""
    try:
        async with conn.transaction():
            rows = await (await conn.execute(statement, params)).fetchall()
    except psycopg.DataError:
        raise BadRequest("not a cursor issued by this API for this resource", field="cursor") from None
    return split_page(rows, limit, kind, lambda r: r["position"])


async def list_items(
    conn: Conn, resource: dict[str, Any], account: str, limit: int, cursor: str | None
) -> ItemPage:
    keys: list[str] = resource["key_columns"]
    position = decode_cursor(f"items:{resource['name']}", cursor, len(keys))
    types = await column_types(conn, resource, keys)
    expression = await fetch_one(conn, "api_key_expression", {"key_columns": keys})
    key_columns = sql.SQL(", ").join(sql.Identifier("t", c) for c in keys)
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if resource["account_column"]:
        conditions.append(
            sql.SQL("{}::text = %(account)s").format(sql.Identifier("t", resource["account_column"]))
        )
        params["account"] = account
    if position is not None:
        bounds = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Placeholder(f"k{i}"), sql.SQL(types[c])) for i, c in enumerate(keys)
        )
        conditions.append(sql.SQL("({}) > ({})").format(key_columns, bounds))
        params.update({f"k{i}": str(v) for i, v in enumerate(position)})
    label = (
        sql.SQL("{}::text").format(sql.Identifier("t", resource["label_column"]))
        if resource["label_column"]
        else sql.SQL("NULL::text")
    )
    # Only key and label columns are read: excluded columns never leave the database.
    statement = sql.SQL(
        "SELECT {key} AS key, {label} AS label, ARRAY[{positions}] AS position FROM {table} AS t"
        " WHERE {where} ORDER BY {order} LIMIT %(limit)s"
    ).format(
        key=sql.SQL(expression["expression"]),  # generated by rowhook.key_expression from quoted identifiers
        label=label,
        positions=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in keys),
        table=sql.Identifier(resource["table_schema"], resource["table_name"]),
        where=sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
        order=key_columns,
    )
    rows, next_cursor = await keyset_page(conn, statement, params, limit, f"items:{resource['name']}")
    return ItemPage(items=[ItemOut(key=r["key"], label=r["label"]) for r in rows], next_cursor=next_cursor)


class ResourceController(Controller):
    path = "/resources"
    tags = ["resources"]

    @get(
        "/",
        operation_id="listResources",
        summary="Resources this account may subscribe to",
        responses=responses(),
    )
    async def list_resources(
        self, conn: ConnDep, settings: SettingsDep, limit: Limit = None, cursor: Cursor = None
    ) -> ResourcePage:
        size = page_size(limit, settings)
        position = decode_cursor("resources", cursor, 1)
        after = str(position[0]) if position else None
        rows, next_cursor = await fetch_page(
            conn, "api_list_resources", {"after": after}, size, "resources", lambda r: [r["name"]]
        )
        return ResourcePage(items=[to_resource_out(r) for r in rows], next_cursor=next_cursor)

    @get(
        "/{name:str}/items",
        operation_id="listResourceItems",
        summary="This account's rows of a resource as {key, label}",
        responses=responses(NOT_FOUND),
    )
    async def list_resource_items(
        self,
        conn: ConnDep,
        account: AccountDep,
        settings: SettingsDep,
        name: FromPath[str],
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> ItemPage:
        resource = await get_resource(conn, name)
        return await list_items(conn, resource, account, page_size(limit, settings), cursor)

    @get(
        "/{name:str}/sample",
        operation_id="sampleResource",
        summary="This account's newest rows of a resource, shaped as pushes (for field mapping)",
        description="Each row as the push of its creation carries it: `type` `<resource>.created`,"
        " `resource`, `key`, `account` and `data` without excluded columns. Newest first means by"
        " primary key, descending. Filter with any scope column of the resource as a query parameter,"
        " as a subscription's filter would, e.g. `?project_id=7`.",
        responses=responses(NOT_FOUND, UNPROCESSABLE),
        opt={FILTERS_IN_QUERY: True},
    )
    async def sample_resource(
        self,
        request: Request[Any, Any, Any],
        conn: ConnDep,
        account: AccountDep,
        settings: SettingsDep,
        name: FromPath[str],
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> SamplePage:
        from api.samples import list_sample  # api.samples builds on this module's filter helpers

        resource = await get_resource(conn, name)
        return await list_sample(
            conn, resource, account, request.query_params, page_size(limit, settings), cursor
        )
