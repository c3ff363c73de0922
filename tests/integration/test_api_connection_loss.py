"""A request whose database connection breaks before anything of it committed runs once more, from scratch,
on a fresh connection; nothing else is retried. A private embedded PostgreSQL: its backends are terminated."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from litestar.datastructures import State
from psycopg.rows import dict_row

from api.database import ATTEMPT_KEY, RequestAttempt, provide_conn
from rowhook.db import async_pool
from rowhook.embedded import EmbeddedPostgres
from rowhook.migrate import migrate
from rowhook.settings import Settings
from rowhook.sqlfiles import query
from tests.integration.api_harness import Api, running_api
from tests.pgserver import embedded_server

pytestmark = pytest.mark.slow
API_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE application_name = 'rowhook-api'"
WAITING_API_BACKEND = API_BACKENDS + " AND wait_event_type = 'Lock'"
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    with embedded_server() as server:
        yield server


@pytest.fixture
def db_url(server: EmbeddedPostgres) -> str:
    name = f"loss_{next(_names)}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]  # a name of our own
    url = server.url(name)
    migrate(url)
    return url


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with (
        psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn,
        running_api(conn, db_url, Settings(allow_private_targets=True)) as api,
    ):
        yield api


def pids(conn: psycopg.Connection[dict[str, Any]], sql: str) -> set[int]:
    return {row["pid"] for row in conn.execute(sql)}  # type: ignore[call-overload]


class InThread:
    """A request sent from a thread while the test holds the lock it will wait for."""

    def __init__(self, call: Callable[[], httpx.Response]) -> None:
        self._result: list[httpx.Response] = []
        self._thread = threading.Thread(target=lambda: self._result.append(call()), daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def response(self) -> httpx.Response:
        self._thread.join(timeout=60)
        assert self._result, "the request did not finish"
        return self._result[0]


def wait_for_waiting_backend(
    conn: psycopg.Connection[dict[str, Any]], request: InThread, not_in: set[int]
) -> int:
    """The pid of an API backend waiting for a lock, other than those in `not_in`."""
    deadline = time.monotonic() + 30
    while not (found := pids(conn, WAITING_API_BACKEND) - not_in):
        if request.done():
            pytest.fail(f"answered without waiting for the lock (again): {request.response().text}")
        assert time.monotonic() < deadline, "no API backend waited for the lock"
        time.sleep(0.02)
    return found.pop()


def test_a_request_right_after_its_connections_were_terminated_succeeds(api: Api) -> None:
    sub = api.subscribe()
    terminated = pids(api.conn, API_BACKENDS)
    assert terminated
    api.conn.execute("SELECT pg_terminate_backend(pid) FROM (" + API_BACKENDS + ") AS api")
    assert api.acme.get(f"/subscriptions/{sub['id']}").status_code == 200
    changed = api.acme.patch(f"/subscriptions/{sub['id']}", json={"description": "after"})
    assert changed.status_code == 200, changed.text
    assert not pids(api.conn, API_BACKENDS) & terminated


@pytest.mark.parametrize("method", ["patch", "ping"])
def test_a_request_whose_connection_breaks_midway_runs_again_from_scratch(
    api: Api, db_url: str, method: str
) -> None:
    sub = api.subscribe()
    path = f"/subscriptions/{sub['id']}"
    send: Callable[[], httpx.Response] = {  # one with a body on the lazy connection, one without
        "patch": lambda: api.acme.patch(path, json={"description": "retried"}),
        "ping": lambda: api.acme.post(f"{path}/test"),
    }[method]
    with psycopg.connect(db_url, row_factory=dict_row) as locker:
        if method == "patch":  # the subscription's row, which PATCH locks
            locker.execute("SELECT 1 FROM rowhook.subscriptions WHERE id = %s FOR UPDATE", (sub["id"],))
        else:  # the account's ping quota, which a ping locks
            locker.execute(query("api_lock_quota"), {"quota": "ping", "account": "acme"})
        request = InThread(send)
        # The request passed the pool's check and is inside its transaction: cut it there.
        first = wait_for_waiting_backend(api.conn, request, set())
        api.conn.execute("SELECT pg_terminate_backend(%s)", (first,))
        second = wait_for_waiting_backend(api.conn, request, {first})  # the second run, elsewhere
        locker.rollback()
    answer = request.response()
    assert answer.status_code in (200, 201), answer.text
    assert second != first
    if method == "patch":
        assert answer.json()["description"] == "retried"
    else:  # the first run's ping and quota use went with its transaction: one of each
        log = api.acme.get(f"{path}/deliveries").json()["items"]
        assert [d["event_type"] for d in log] == ["ping"], log
        used = api.conn.execute("SELECT count(*) AS n FROM rowhook.quota_uses").fetchone()
        assert used is not None and used["n"] == 1


def test_a_cancelled_query_on_a_live_connection_is_not_retried(api: Api, db_url: str) -> None:
    sub = api.subscribe()
    path = f"/subscriptions/{sub['id']}"
    with psycopg.connect(db_url, row_factory=dict_row) as locker:
        locker.execute("SELECT 1 FROM rowhook.subscriptions WHERE id = %s FOR UPDATE", (sub["id"],))
        request = InThread(lambda: api.acme.patch(path, json={"description": "cancelled"}))
        waiting = wait_for_waiting_backend(api.conn, request, set())
        api.conn.execute("SELECT pg_cancel_backend(%s)", (waiting,))
        answer = request.response()
        locker.rollback()
    assert answer.status_code == 503, answer.text
    assert api.acme.get(path).json()["description"] is None


async def test_a_commit_that_fails_is_never_marked_for_a_retry(db_url: str) -> None:
    """A lost connection inside the handler marks the request; one lost at COMMIT does not (the commit
    may have reached the server), so the request answers 503 instead of running twice."""
    pool = async_pool(db_url, role="api")
    await pool.open(wait=True)
    try:
        for at_commit in (False, True):
            scope: Any = {ATTEMPT_KEY: RequestAttempt()}
            dependency = provide_conn(State({"pool": pool}), scope)
            conn = await anext(dependency)
            await conn.execute("SELECT 1")
            with psycopg.connect(db_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            with pytest.raises(psycopg.OperationalError):
                if at_commit:
                    await anext(dependency)  # the handler returned: the dependency commits
                else:
                    try:
                        await conn.execute("SELECT 1")  # the handler's query
                    except psycopg.OperationalError as exc:
                        await dependency.athrow(exc)
            assert scope[ATTEMPT_KEY].connection_lost is not at_commit
    finally:
        await pool.close()
