"""Entry point of `rowhook relay`: runs the relay until SIGTERM/SIGINT, then exits 0."""

from __future__ import annotations

import asyncio
import signal

from relay.worker import Relay
from rowhook.settings import Settings


async def serve(settings: Settings, database_url: str) -> int:
    relay = Relay(settings, database_url)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, relay.request_stop)
    return await relay.run()


def run(settings: Settings, database_url: str) -> int:
    return asyncio.run(serve(settings, database_url))
