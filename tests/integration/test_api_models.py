"""The sqlmodel table models match the schema that sql/ installs: columns, types, nullability, keys."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy.dialects import postgresql

from api.models import ROW_RESPONSES, TABLE_MODELS

Conn = psycopg.Connection[dict[str, Any]]


def installed_columns(conn: Conn, table: str) -> dict[str, tuple[str, bool]]:
    rows = conn.execute(
        "SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null"
        " FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        (table,),
    ).fetchall()
    return {r["name"]: (r["type"], not r["not_null"]) for r in rows}


def installed_primary_key(conn: Conn, table: str) -> set[str]:
    """The primary key; for a partitioned table (deliveries, 0015), which has none, the columns that
    every partition indexes alone with a unique or a hash index (ids unique by construction)."""
    row = conn.execute("SELECT rowhook.primary_key_columns(%s::regclass) AS k", (table,)).fetchone()
    assert row is not None
    if row["k"] is not None:
        return set(row["k"])
    keys = conn.execute(
        "SELECT p.inhrelid, array_agg(a.attname::text) AS k"
        " FROM pg_inherits p JOIN pg_index x ON x.indrelid = p.inhrelid AND x.indnatts = 1"
        " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am m ON m.oid = i.relam"
        " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
        " WHERE p.inhparent = %s::regclass AND (x.indisunique OR m.amname = 'hash')"
        " GROUP BY p.inhrelid",
        (table,),
    ).fetchall()
    assert keys, f"{table} has neither a primary key nor partitions with a key"
    return set.intersection(*(set(r["k"]) for r in keys))


def test_every_table_model_matches_the_installed_table(conn: Conn) -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    for model in TABLE_MODELS:
        table = model.__table__  # type: ignore[attr-defined]
        name = f"{table.schema}.{table.name}"
        modelled = {c.name: (c.type.compile(dialect=dialect).lower(), c.nullable) for c in table.columns}
        assert modelled == installed_columns(conn, name), name
        assert {c.name for c in table.primary_key.columns} == installed_primary_key(conn, name), name


def test_every_response_field_that_names_a_column_has_that_column(conn: Conn) -> None:
    for response, (model, not_columns) in ROW_RESPONSES.items():
        table = model.__table__  # type: ignore[attr-defined]
        columns = set(installed_columns(conn, f"{table.schema}.{table.name}"))
        fields = set(response.__struct_fields__)
        assert not_columns <= fields, response.__name__
        assert not_columns.isdisjoint(columns), response.__name__
        assert fields - not_columns <= columns & set(model.model_fields), response.__name__
