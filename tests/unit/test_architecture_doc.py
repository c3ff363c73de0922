"""docs/architecture.md stays a true map: every path, named query, code name and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rowhook.sqlfiles import query

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
NAMES = sorted(set(re.findall(r"`([^`\s]+)`", DOC)))
CODE = [p for d in ("api", "relay", "rowhook", "tests") for p in (ROOT / d).rglob("*.py")]
DEFINED = {
    name
    for path in CODE
    for name in re.findall(
        r"^\s*(?:async def|def|class) (\w+)|^\s*(\w+)(?:: [^=]+)? = ", path.read_text(), re.M
    )
    for name in name
    if name
}
SCHEMA = (ROOT / "sql" / "schema.sql").read_text()


def paths() -> list[str]:
    return [n for n in NAMES if re.fullmatch(r"[\w./-]+\.(py|sql|md)", n)]


def identifiers() -> list[str]:
    return [
        n
        for n in NAMES
        if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)?", n) and ("_" in n or n[0].isupper()) and n not in paths()
    ]


@pytest.mark.parametrize("path", paths())
def test_named_files_exist(path: str) -> None:
    if "/" in path:
        assert (ROOT / path).exists()
    else:
        assert list(ROOT.glob(f"**/{path}")), path


@pytest.mark.parametrize("name", identifiers())
def test_named_queries_code_and_tests_exist(name: str) -> None:
    if name.startswith("rowhook."):
        assert re.search(rf"\b{re.escape(name)}\b", SCHEMA), f"{name} is not in sql/schema.sql"
        return
    for part in name.split("."):
        assert part in DEFINED or is_query(part) or re.search(rf"\b{part}\b", SCHEMA), name


def is_query(name: str) -> bool:
    try:
        query(name)
    except KeyError:
        return False
    return True
