"""Fixtures of the integration tests: the API under uvicorn with two accounts (see api_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rowhook.settings import Settings
from tests.integration.api_harness import Api, Conn, running_api


@pytest.fixture
def api(conn: Conn, db_url: str) -> Iterator[Api]:
    """The API allowing private targets (so 127.0.0.1 receivers are accepted), with two accounts."""
    with running_api(
        conn, db_url, Settings(allow_private_targets=True, page_size=2, replay_max_events=3)
    ) as api:
        yield api


@pytest.fixture
def strict_api(conn: Conn, db_url: str) -> Iterator[Api]:
    """The API with default target rules: https only, no private addresses."""
    with running_api(conn, db_url, Settings()) as api:
        yield api
