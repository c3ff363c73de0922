"""A target whose DNS never answers holds no database connection: the API keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from api.target_checks import Resolve
from rowhook.settings import Settings
from tests.integration.api_harness import PUBLIC_TARGET, Api, Conn, assert_problem, running_api

HANGING_HOST = "hangs.example"
PUBLIC_ADDRESS = "93.184.215.14"


class HangingDns:
    """A resolver whose lookups of HANGING_HOST wait until released; other names answer at once."""

    def __init__(self) -> None:
        self.waiting = threading.Semaphore(0)
        self.released = threading.Event()

    async def resolve(self, host: str) -> list[str]:
        if host == HANGING_HOST:
            self.waiting.release()
            await asyncio.to_thread(self.released.wait)
        return [PUBLIC_ADDRESS]


def send(api: Api, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """One request on a client of its own (the test's clients are used by other threads meanwhile)."""
    with httpx.Client(base_url=api.url, headers=dict(api.acme.headers), timeout=60) as client:
        return client.request(method, path, json=body)


def test_a_hanging_target_lookup_holds_no_connection_nor_row_lock(conn: Conn, db_url: str) -> None:
    dns = HangingDns()
    resolver: Resolve = dns.resolve
    # One connection in the pool: a request holding it while it waits for DNS would stall all others.
    settings = Settings(api_pool_size=1)
    with running_api(conn, db_url, settings, resolver=resolver) as api, ThreadPoolExecutor(3) as pool:
        sub = api.subscribe(target_url=PUBLIC_TARGET)
        hanging_target = f"https://{HANGING_HOST}/hook"
        pending: list[Future[httpx.Response]] = [
            pool.submit(
                send, api, "POST", "/subscriptions", {"target_url": hanging_target, "resource": "tasks"}
            ),
            pool.submit(
                send, api, "POST", "/hooks", {"target_url": hanging_target, "event": "tasks.created"}
            ),
            pool.submit(send, api, "PATCH", f"/subscriptions/{sub['id']}", {"target_url": hanging_target}),
        ]
        for _ in pending:
            assert dns.waiting.acquire(timeout=30), "a request never reached the target lookup"

        # While all three wait for DNS, everything else is answered through the pool's one connection,
        # including a change of the very subscription whose PATCH is waiting (no row lock is held).
        assert api.acme.get("/subscriptions").status_code == 200
        assert api.globex.get("/resources").status_code == 200
        assert api.acme.get(f"/subscriptions/{sub['id']}").json()["target_url"] == PUBLIC_TARGET
        changed = api.acme.patch(f"/subscriptions/{sub['id']}", json={"description": "meanwhile"})
        assert changed.status_code == 200, changed.text
        other = api.subscribe(target_url="https://named.example/hook")  # resolves at once
        assert_problem(api.acme.get("/subscriptions/sub_nope"), 404)
        assert not any(request.done() for request in pending)

        dns.released.set()
        created, hooked, patched = (request.result(timeout=60) for request in pending)
    assert created.status_code == 201, created.text
    assert hooked.status_code == 201, hooked.text
    assert patched.status_code == 200, patched.text
    assert patched.json()["target_url"] == hanging_target and patched.json()["description"] == "meanwhile"
    assert other["target_url"] == "https://named.example/hook"
