"""The demo's webhook receiver: aiohttp on 127.0.0.1, checking Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from rowhook.webhooks import verify_signature


@dataclass
class Push:
    """One POST the receiver got."""

    webhook_id: str
    type: str
    key: str | None
    body: dict[str, Any]
    verified: bool
    latency_s: float | None
    received_at: float = field(default_factory=time.time)


def latency_since(timestamp: str | None, now: float) -> float | None:
    """Seconds from the event's timestamp (when the row changed) to now."""
    if not timestamp:
        return None
    try:
        return now - datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Receiver:
    """Runs in its own thread with its own event loop; calls `on_push` for every POST it receives."""

    def __init__(self, on_push: Callable[[Push], None]) -> None:
        self.secret: str | None = None
        self._on_push = on_push
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-receiver", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        verified = self.secret is not None and verify_signature(
            self.secret,
            headers.get("webhook-id", ""),
            headers.get("webhook-timestamp", ""),
            headers.get("webhook-signature", ""),
            body,
        )
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        now = time.time()
        push = Push(
            webhook_id=headers.get("webhook-id", ""),
            type=str(payload.get("type", "?")),
            key=payload.get("key"),
            body=payload,
            verified=verified,
            latency_s=latency_since(payload.get("timestamp"), now),
            received_at=now,
        )
        self._on_push(push)
        return web.Response(status=204 if verified else 401)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}/hooks"

    def start(self) -> str:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self.url

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
