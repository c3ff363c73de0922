"""Opaque keyset-pagination cursors: the sort key of the last item seen, as base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from litestar.params import QueryParameter

from api.errors import BadRequest
from api.schemas import MAX_PAGE_SIZE
from rowhook.settings import Settings

CURSOR_VERSION = 1
# The paging parameters of every list route.
Limit = Annotated[
    int | None, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description=f"page size, 1-{MAX_PAGE_SIZE}")
]
Cursor = Annotated[
    str | None, QueryParameter(max_length=2000, description="next_cursor of the previous page")
]


def page_size(limit: int | None, settings: Settings) -> int:
    return limit or min(settings.page_size, MAX_PAGE_SIZE)


def encode_cursor(kind: str, position: list[Any]) -> str:
    raw = json.dumps([CURSOR_VERSION, kind, position], separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def split_page(
    rows: list[dict[str, Any]], size: int, kind: str, position: Callable[[dict[str, Any]], list[Any]]
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of `size` rows out of the `size + 1` fetched, and the cursor after it (None on the last)."""
    page = rows[:size]
    return page, encode_cursor(kind, position(page[-1])) if len(rows) > size else None


def time_position(row: dict[str, Any]) -> list[Any]:
    """The (created_at, id) position of lists sorted by creation time."""
    return [row["created_at"].isoformat(), row["id"]]


def decode_cursor(kind: str, cursor: str | None, length: int) -> list[Any] | None:
    """The position a cursor of `kind` holds; a cursor this API did not issue for this list is a 400."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, found_kind, position = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest(
            "not a cursor issued by this API; pass next_cursor from the previous page", field="cursor"
        ) from None
    valid = (
        version == CURSOR_VERSION
        and found_kind == kind
        and isinstance(position, list)
        and len(position) == length
        and all(isinstance(p, str | int) for p in position)
    )
    if not valid:
        raise BadRequest(
            "this cursor belongs to another list or version; start again without a cursor", field="cursor"
        )
    return position


def decode_time_cursor(kind: str, cursor: str | None) -> tuple[datetime, str] | tuple[None, None]:
    """A (created_at, id) position, checked here so that a forged one is a 400, not a database error."""
    position = decode_cursor(kind, cursor, 2)
    if position is None:
        return None, None
    try:
        created = datetime.fromisoformat(str(position[0]))
    except ValueError:
        created = None
    if created is None or created.tzinfo is None or "\x00" in str(position[1]):
        raise BadRequest(
            "this cursor was not issued by this API; start again without a cursor", field="cursor"
        )
    return created, str(position[1])
