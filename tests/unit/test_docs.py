"""The user guides stay true to the code: settings, commands, defaults and links they mention exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rowhook.cli import build_parser
from rowhook.settings import DEFAULT_RETRY_SCHEDULE_S, Settings, env_names, parse_duration

DOCS = Path(__file__).resolve().parents[2] / "docs"
GUIDES = ["payload.md", "dba.md", "operations.md"]
SUBCOMMANDS = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def text(name: str) -> str:
    return (DOCS / name).read_text()


@pytest.mark.parametrize("guide", GUIDES)
def test_every_variable_a_guide_names_is_read_by_the_settings(guide: str) -> None:
    named = set(re.findall(r"ROWHOOK_[A-Z_]+[A-Z]", text(guide)))
    assert named - env_names() == set()


def test_operations_lists_every_setting_with_its_real_default() -> None:
    rows = dict(
        re.findall(r"^\| `(ROWHOOK_[A-Z_]+)` \| `?([^|`]*)`? \|", text("operations.md"), re.MULTILINE)
    )
    assert set(rows) == env_names()
    defaults = Settings()
    for variable, shown in rows.items():
        if shown.strip() == "(none)":
            continue
        parsed = Settings.from_env({variable: shown.strip()})
        field = variable.removeprefix("ROWHOOK_").lower()
        assert getattr(parsed, field) == getattr(defaults, field), variable


@pytest.mark.parametrize("guide", GUIDES)
def test_every_rowhook_command_a_guide_shows_exists(guide: str) -> None:
    code = "\n".join(re.findall(r"```\w*\n(.*?)```", text(guide), re.DOTALL))
    used = set(re.findall(r"`rowhook ([a-z]+)", text(guide))) | set(
        re.findall(r"^rowhook ([a-z]+)", code, re.MULTILINE)
    )
    assert used - SUBCOMMANDS == set()


def test_the_retry_table_is_the_default_schedule() -> None:
    row = re.search(r"^\| after the previous one \|(.+)\|$", text("payload.md"), re.MULTILINE)
    assert row is not None
    cells = [cell.strip() for cell in row.group(1).split("|")]
    seconds = tuple(
        0.0 if cell == "at once" else parse_duration(cell.replace(" min", "m").replace(" ", ""))
        for cell in cells
    )
    assert seconds == DEFAULT_RETRY_SCHEDULE_S


@pytest.mark.parametrize("guide", GUIDES)
def test_relative_links_point_at_existing_files(guide: str) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text(guide)):
        assert (DOCS / target).exists(), f"{guide} links to missing {target}"
