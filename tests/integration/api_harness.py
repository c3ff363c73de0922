"""Helpers of the API tests: watched tables, tokens and the API served by uvicorn on 127.0.0.1 (the
fixtures `api` and `strict_api` built on them are in conftest.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import uvicorn

from api.app import create_app
from rowhook.settings import Settings
from rowhook.tokens import create_token

Conn = psycopg.Connection[dict[str, Any]]
TARGET = "http://127.0.0.1:9/hook"  # never contacted by the API; the relay is not running here
PUBLIC_TARGET = "https://93.184.215.14/hook"  # a public address literal: accepted without DNS

TABLES = """
CREATE TABLE projects (
    id bigserial PRIMARY KEY,
    account_id text NOT NULL,
    name text NOT NULL
);
CREATE TABLE tasks (
    id bigserial PRIMARY KEY,
    account_id text NOT NULL,
    project_id bigint REFERENCES projects,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    password_hash text
);
CREATE TABLE memberships (
    account_id text NOT NULL,
    project_id bigint NOT NULL,
    user_name text NOT NULL,
    PRIMARY KEY (project_id, user_name)
);
CREATE TABLE plans (code text PRIMARY KEY, title text NOT NULL);
SELECT rowhook.watch('projects', account_column => 'account_id', label_column => 'name');
SELECT rowhook.watch('tasks', account_column => 'account_id', scope_columns => '{project_id}',
                     exclude_columns => '{password_hash}', label_column => 'title');
SELECT rowhook.watch('memberships', account_column => 'account_id', scope_columns => '{project_id}');
SELECT rowhook.watch('plans', public => true, label_column => 'title');
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_api(settings: Settings, db_url: str, **app_options: Any) -> Iterator[str]:
    """The real app under a real uvicorn server in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, db_url, **app_options),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def bearer_client(url: str, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


@dataclass
class Api:
    url: str
    conn: Conn
    acme: httpx.Client
    globex: httpx.Client

    def client(self, token: str | None = None) -> httpx.Client:
        return bearer_client(self.url, token)

    def project(self, account: str, name: str) -> int:
        row = self.conn.execute(
            "INSERT INTO projects (account_id, name) VALUES (%s, %s) RETURNING id", (account, name)
        ).fetchone()
        assert row is not None
        return int(row["id"])

    def task(self, account: str, project_id: int | None, title: str) -> int:
        row = self.conn.execute(
            "INSERT INTO tasks (account_id, project_id, title, password_hash) VALUES (%s, %s, %s, 'pw')"
            " RETURNING id",
            (account, project_id, title),
        ).fetchone()
        assert row is not None
        return int(row["id"])

    def subscribe(self, client: httpx.Client | None = None, **body: Any) -> dict[str, Any]:
        response = (client or self.acme).post(
            "/subscriptions", json={"target_url": TARGET, "resource": "tasks", **body}
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]


@contextlib.contextmanager
def running_api(conn: Conn, db_url: str, settings: Settings, **app_options: Any) -> Iterator[Api]:
    conn.execute(TABLES)
    acme_token, _ = create_token(conn, "acme", "tests")
    globex_token, _ = create_token(conn, "globex", "tests")
    with (
        serve_api(settings, db_url, **app_options) as url,
        bearer_client(url, acme_token) as acme,
        bearer_client(url, globex_token) as globex,
    ):
        yield Api(url=url, conn=conn, acme=acme, globex=globex)


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """A problem+json answer of `status` whose detail mentions every word given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.json()
    assert problem["status"] == status
    for word in words:
        assert word in problem["detail"], (word, problem)
    return problem  # type: ignore[no-any-return]
