"""Opaque keyset-pagination cursors: the sort key of the last item seen, as base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from api.errors import BadRequest

CURSOR_VERSION = 1


def encode_cursor(kind: str, position: list[Any]) -> str:
    raw = json.dumps([CURSOR_VERSION, kind, position], separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


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
