"""Shared fixtures: a real PostgreSQL, one migrated template database per session, a clone per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.pgserver import PgServer, pg_test_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with pg_test_server() as server:
        yield server


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_template()
    yield name
    pg_server.drop(name)


@pytest.fixture
def db_url(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    name = pg_server.clone(template_db)
    yield pg_server.url(name)
    pg_server.drop(name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """An autocommit connection to the test's database."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database without rowhook installed."""
    name = pg_server.clone("template0")
    yield pg_server.url(name)
    pg_server.drop(name)
