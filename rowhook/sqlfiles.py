"""Locating rowhook's SQL files and reading named queries from sql/queries/*.sql."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_PACKAGED = Path(__file__).parent / "sql"  # inside an installed wheel
_CHECKOUT = Path(__file__).parent.parent / "sql"  # in a source checkout
_QUERY_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    for candidate in (_PACKAGED, _CHECKOUT):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("rowhook's sql/ directory is missing from this installation")


def migration_files() -> list[Path]:
    return sorted((sql_dir() / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))


@cache
def _all_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        parts = _QUERY_HEADER.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (second time in {path.name})")
            queries[name] = body.strip().rstrip(";")
    return queries


def query(name: str) -> str:
    """The SQL text of the query headed `-- name: <name>` in one of sql/queries/*.sql."""
    try:
        return _all_queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries/") from None
