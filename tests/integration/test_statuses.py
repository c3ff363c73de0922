"""The status names of rowhook/statuses.py are exactly those the CHECK constraints of the schema allow."""

from __future__ import annotations

import re
from typing import Any, get_args

import psycopg
import pytest

from rowhook.statuses import (
    DELIVERY_STATUSES,
    SUBSCRIPTION_STATUSES,
    UNFINISHED_DELIVERY_STATUSES,
    AttemptOutcome,
    SettableSubscriptionStatus,
)

Conn = psycopg.Connection[dict[str, Any]]


def checked_statuses(conn: Conn, table: str) -> list[str]:
    """The values the CHECK constraints on `table`.status allow, in the order they are written."""
    rows = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND a.attname = 'status'",
        (table,),
    ).fetchall()
    assert len(rows) == 1, rows
    return re.findall(r"'([^']*)'::text", rows[0]["definition"])


@pytest.mark.parametrize(
    ("table", "names"),
    [("rowhook.deliveries", DELIVERY_STATUSES), ("rowhook.subscriptions", SUBSCRIPTION_STATUSES)],
)
def test_python_status_names_match_the_check_constraints(conn: Conn, table: str, names: tuple[str]) -> None:
    assert checked_statuses(conn, table) == list(names)


def test_status_subsets_are_statuses() -> None:
    assert set(get_args(AttemptOutcome)) <= set(DELIVERY_STATUSES)
    assert set(UNFINISHED_DELIVERY_STATUSES) <= set(DELIVERY_STATUSES)
    assert set(get_args(SettableSubscriptionStatus)) <= set(SUBSCRIPTION_STATUSES)
