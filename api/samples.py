"""GET /resources/{name}/sample: the account's newest rows of a resource, shaped as pushes of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from litestar.datastructures import MultiDict
from psycopg import sql

from api.cursors import decode_cursor
from api.database import Conn
from api.errors import Unprocessable
from api.resources import coerce_filter, column_types, filter_text, keyset_page
from api.schemas import SampleOut, SamplePage
from api.store import fetch_one
from rowhook.sqlfiles import query

PAGING_PARAMETERS = frozenset({"limit", "cursor"})
# A sample is each row as the push of its creation would carry it.
SAMPLE_OP = "created"


def sample_filter(resource: dict[str, Any], params: MultiDict[str]) -> dict[str, str]:
    """The query parameters other than paging, each a scope column given once; else a 422 naming it."""
    wanted: dict[str, str] = {}
    for name in params:
        if name in PAGING_PARAMETERS or name in wanted:
            continue
        if name not in resource["scope_columns"]:
            allowed = ", ".join(resource["scope_columns"]) or "none"
            raise Unprocessable(
                f"{name!r} is neither limit, cursor nor a scope column of resource {resource['name']!r}"
                f" (scope columns: {allowed})",
                field=name or "(empty name)",
            )
        values = params.getall(name)
        if len(values) > 1:
            raise Unprocessable(f"give {name} once (a sample filters on one value per column)", field=name)
        wanted[name] = values[0]
    return wanted


@dataclass(frozen=True)
class SampleQuery:
    """What one page of a sample reads; `statement` builds the SQL (tests EXPLAIN the very same)."""

    resource: dict[str, Any]
    types: dict[str, str]  # SQL type of each key, account and filter column
    key_expression: str  # from rowhook.key_expression: quoted identifiers only
    account: str | None  # None: a public resource, every row
    filter: dict[str, str]  # column -> value as PostgreSQL input
    position: list[Any] | None  # the cursor's key values, as text
    ordered_index: bool  # an index on (account column, key columns) gives the rows in order

    def statement(self, limit: int) -> tuple[sql.Composed, dict[str, Any]]:
        keys: list[str] = self.resource["key_columns"]
        account_column = self.resource["account_column"]
        params: dict[str, Any] = {"resource": self.resource["name"], "limit": limit}
        conditions = self._conditions(params)
        statement = sql.SQL(query("api_sample_rows")).format(
            key=sql.SQL(self.key_expression),
            account=sql.SQL("{}::text").format(sql.Identifier("t", account_column))
            if account_column
            else sql.SQL("NULL::text"),
            positions=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in keys),
            table=sql.Identifier(self.resource["table_schema"], self.resource["table_name"]),
            conditions=sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
            fence=sql.SQL("" if self.ordered_index else "OFFSET 0"),
            order=sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier("t", c)) for c in keys),
        )
        return statement, params

    def _conditions(self, params: dict[str, Any]) -> list[sql.Composable]:
        """The account, the filter and the cursor position, adding their values to `params`."""
        conditions: list[sql.Composable] = []
        if account_column := self.resource["account_column"]:
            conditions.append(self._equals(account_column, "account"))
            params["account"] = self.account
        for i, (column, value) in enumerate(sorted(self.filter.items())):
            conditions.append(self._equals(column, f"f{i}"))
            params[f"f{i}"] = value
        if self.position is not None:
            keys: list[str] = self.resource["key_columns"]
            key_columns = sql.SQL(", ").join(sql.Identifier("t", c) for c in keys)
            bounds = sql.SQL(", ").join(self._typed(f"k{i}", c) for i, c in enumerate(keys))
            conditions.append(sql.SQL("({}) < ({})").format(key_columns, bounds))
            params.update({f"k{i}": str(v) for i, v in enumerate(self.position)})
        return conditions

    def _typed(self, placeholder: str, column: str) -> sql.Composable:
        return sql.SQL("{}::{}").format(sql.Placeholder(placeholder), sql.SQL(self.types[column]))

    def _equals(self, column: str, placeholder: str) -> sql.Composable:
        # The parameter is cast to the column's type, never the column to text: an index on it serves.
        return sql.SQL("{} = {}").format(sql.Identifier("t", column), self._typed(placeholder, column))


async def castable(conn: Conn, value: str, sql_type: str) -> bool:
    statement = sql.SQL(query("api_castable")).format(type=sql.SQL(sql_type))
    try:
        async with conn.transaction():  # a savepoint: a failed cast must not abort the request
            await conn.execute(statement, {"value": value})
    except psycopg.DataError:
        return False
    return True


async def build_query(
    conn: Conn, resource: dict[str, Any], account: str, params: MultiDict[str], cursor: str | None
) -> SampleQuery | None:
    """The query of this request; None when the account can own no row (its name does not cast to the
    account column's type)."""
    wanted = sample_filter(resource, params)
    try:
        await coerce_filter(conn, resource, dict(wanted))  # checks each value against its column's type
    except Unprocessable as exc:  # named by query parameter here, not as a body's filter.<column>
        raise Unprocessable(exc.detail, field=(exc.field or "").removeprefix("filter.") or None) from None
    keys: list[str] = resource["key_columns"]
    position = decode_cursor(f"sample:{resource['name']}", cursor, len(keys))
    account_column = resource["account_column"]
    columns = [*keys, *([account_column] if account_column else []), *wanted]
    types = await column_types(conn, resource, columns)
    if account_column and not await castable(conn, account, types[account_column]):
        return None
    expression = await fetch_one(conn, "api_key_expression", {"key_columns": keys})
    index = {"table_oid": resource["table_oid"], "columns": [account_column, *keys]}
    ordered_index = not account_column or (await fetch_one(conn, "api_has_ordered_index", index))["found"]
    return SampleQuery(
        resource=resource,
        types=types,
        key_expression=expression[
            "expression"
        ],  # generated by rowhook.key_expression from quoted identifiers
        account=account if account_column else None,
        filter={column: filter_text(value) for column, value in wanted.items()},
        position=position,
        ordered_index=ordered_index,
    )


async def list_sample(
    conn: Conn, resource: dict[str, Any], account: str, params: MultiDict[str], limit: int, cursor: str | None
) -> SamplePage:
    sample = await build_query(conn, resource, account, params, cursor)
    if sample is None:
        return SamplePage(items=[], next_cursor=None)
    statement, values = sample.statement(limit + 1)
    rows, next_cursor = await keyset_page(conn, statement, values, limit, f"sample:{resource['name']}")
    kind = f"{resource['name']}.{SAMPLE_OP}"
    return SamplePage(
        items=[
            SampleOut(
                type=kind, resource=resource["name"], key=r["key"], account=r["account"], data=r["data"]
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )
