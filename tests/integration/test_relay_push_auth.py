"""Push authentication chosen by the receiver: a header it requires, or a key in the query string."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from rowhook.sqlfiles import query
from tests.integration.api_harness import Api
from tests.integration.relay_harness import running_relay, wait_until

pytestmark = pytest.mark.timeout(60)

TOKEN = "Bearer s3cr3t-t0ken-abcd"
API_KEY = "api-key-0123456789"
QUERY_KEY = "q-key-9876543210"


@dataclass
class AuthReceiver:
    """/auth wants the Authorization header, /query the key in its query string (401 otherwise); /echo
    answers 500 quoting the request's headers, as debugging endpoints do."""

    port: int = 0
    requests: list[tuple[str, dict[str, str], bytes, bool]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        authorized = (
            request.headers.get("Authorization") == TOKEN
            if request.path == "/auth"
            else request.query.get("key") == QUERY_KEY
        )
        self.requests.append((request.path, headers, raw, authorized))
        if request.path == "/echo":
            return web.Response(status=500, text=json.dumps({"you sent": headers}))
        return web.Response(text="ok") if authorized else web.Response(status=401, text="who are you?")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def authorized(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, raw) for p, h, raw, authorized in self.requests if p == path and authorized]


@contextlib.asynccontextmanager
async def auth_receiver() -> AsyncIterator[AuthReceiver]:
    server = AuthReceiver()
    app = web.Application()
    app.router.add_route("POST", "/{path:.*}", server.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


def deliveries(api: Api, subscription_id: str) -> list[dict[str, Any]]:
    return api.conn.execute(
        "SELECT event_type, status, last_status_code, last_error, last_response FROM rowhook.deliveries"
        " WHERE subscription_id = %s ORDER BY created_at",
        (subscription_id,),
    ).fetchall()


def settled(api: Api, subscription_id: str, count: int, status: str | None = None) -> bool:
    rows = deliveries(api, subscription_id)
    return len(rows) == count and all(
        r["status"] == status if status else r["last_status_code"] is not None for r in rows
    )


async def test_a_receiver_requiring_a_header_gets_it_on_every_push_and_pings(
    api: Api, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="rowhook")
    project = api.project("acme", "p")
    async with auth_receiver() as server:
        authed = api.subscribe(target_url=server.url("/auth"), headers={"Authorization": TOKEN})
        anonymous = api.subscribe(target_url=server.url("/auth"))
        echoed = api.subscribe(
            target_url=server.url("/echo"), headers={"Authorization": TOKEN, "X-Api-Key": API_KEY}
        )
        api.task("acme", project, "t")
        assert api.acme.post(f"/subscriptions/{authed['id']}/test").status_code == 201
        async with running_relay(db_url):
            await wait_until(lambda: settled(api, authed["id"], 2, "succeeded"), what="authorized pushes")
            await wait_until(lambda: settled(api, anonymous["id"], 1), what="an unauthorized attempt")
            await wait_until(lambda: settled(api, echoed["id"], 1), what="an echoed attempt")
    pushes = server.authorized("/auth")
    assert len(pushes) == 2
    bodies = [Webhook(authed["secret"]).verify(raw, headers) for headers, raw in pushes]
    assert sorted(b["type"] for b in bodies) == ["ping", "tasks.created"]
    assert all(b["account"] == "acme" for b in bodies)
    assert {r["last_status_code"] for r in deliveries(api, anonymous["id"])} == {401}
    [echo] = deliveries(api, echoed["id"])
    assert echo["last_status_code"] == 500 and "****" in echo["last_response"]
    assert "s3cr3t" not in echo["last_response"] and API_KEY not in echo["last_response"]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("rowhook"))
    assert "status=500" in logged and "s3cr3t" not in logged and API_KEY not in logged


async def test_a_receiver_requiring_a_query_key_gets_it_and_the_key_is_never_logged(
    api: Api, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="rowhook")
    project = api.project("acme", "p")
    async with auth_receiver() as server:
        keyed = api.subscribe(target_url=server.url(f"/query?key={QUERY_KEY}"))
        wrong = api.subscribe(target_url=server.url("/query?key=not-the-key-4242"))
        since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        api.task("acme", project, "t")
        api.conn.execute(query("relay_expand_changes"), {"batch": 1000})  # as the relay does first
        replayed = api.acme.post(f"/subscriptions/{keyed['id']}/replay", json={"since": since})
        assert replayed.status_code == 201 and replayed.json()["count"] == 1
        async with running_relay(db_url):
            await wait_until(lambda: settled(api, keyed["id"], 2, "succeeded"), what="the keyed pushes")
            await wait_until(lambda: settled(api, wrong["id"], 1), what="a refused attempt")
    pushes = [json.loads(raw) for _, raw in server.authorized("/query")]
    assert len(pushes) == 2 and pushes[0]["id"] == pushes[1]["id"]  # the event, and its replay
    assert [p["account"] for p in pushes] == ["acme", "acme"]
    assert {r["last_status_code"] for r in deliveries(api, wrong["id"])} == {401}
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("rowhook"))
    assert "/query?key=***" in logged  # the failed attempt's line, with the URL redacted
    assert "not-the-key-4242" not in logged and QUERY_KEY not in logged
