"""Opaque cursors: they round-trip, and anything else is a 400 naming the cursor."""

from __future__ import annotations

import pytest

from api.cursors import decode_cursor, decode_time_cursor, encode_cursor
from api.errors import BadRequest


def test_a_cursor_round_trips_and_is_opaque() -> None:
    cursor = encode_cursor("subscriptions", ["2026-01-01T00:00:00+00:00", "sub_1"])
    assert "sub_1" not in cursor
    assert decode_cursor("subscriptions", cursor, 2) == ["2026-01-01T00:00:00+00:00", "sub_1"]
    assert decode_cursor("subscriptions", None, 2) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "bm90IGpzb24",
        encode_cursor("resources", ["a"]),
        encode_cursor("subscriptions", ["only one"]),
        encode_cursor("subscriptions", [{"a": 1}, "b"]),
    ],
)
def test_foreign_or_damaged_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BadRequest) as refused:
        decode_time_cursor("subscriptions", cursor)
    assert refused.value.field == "cursor"
