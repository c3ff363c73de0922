"""The columns a subscription's `updated` events must touch: checked against what the resource captures."""

from __future__ import annotations

from typing import Any

from api.database import Conn
from api.errors import Unprocessable
from api.schemas import MAX_COLUMNS_BYTES
from api.store import fetch_one

# The captured columns listed in an error, at most.
LISTED_IN_ERRORS = 30


async def check_columns(conn: Conn, resource: dict[str, Any], columns: list[str] | None) -> list[str] | None:
    """`columns` as stored (None: every update); Unprocessable naming the first column refused."""
    if columns is None:
        return None
    if not columns:
        raise Unprocessable("must name at least one column, or be null for every update", field="columns")
    row = await fetch_one(conn, "api_captured_columns", {"name": resource["name"]})
    captured: list[str] = row["columns"]
    for i, column in enumerate(columns):
        if column not in captured:
            shown = ", ".join(captured[:LISTED_IN_ERRORS])
            if len(captured) > LISTED_IN_ERRORS:
                shown += ", ..."
            raise Unprocessable(
                f"{column!r} is not a captured column of resource {resource['name']!r} (captured: {shown})",
                field=f"columns[{i}]",
            )
        if column in columns[:i]:
            raise Unprocessable(f"{column!r} is listed twice", field=f"columns[{i}]")
    if sum(len(column.encode()) + 1 for column in columns) > MAX_COLUMNS_BYTES:
        raise Unprocessable(f"the column names may take at most {MAX_COLUMNS_BYTES} bytes", field="columns")
    return list(columns)
