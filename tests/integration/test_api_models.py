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
    row = conn.execute("SELECT rowhook.primary_key_columns(%s::regclass) AS k", (table,)).fetchone()
    assert row is not None
    return set(row["k"])


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
