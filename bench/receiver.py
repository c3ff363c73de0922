"""A fast webhook receiver run as its own process: timestamps each arrival; a second port never answers."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from aiohttp import web

# Arrival records: (monotonic ns, group from the URL path, event key, webhook-id). CLOCK_MONOTONIC is
# system-wide on Linux, so these compare directly with timestamps taken in the benchmark process.
Arrival = tuple[int, str, str, str]


class Receiver:
    def __init__(self, keep_arrivals: bool) -> None:
        self.keep_arrivals = keep_arrivals
        self.arrivals: list[Arrival] = []
        self.count = 0
        self.body_bytes = 0
        self.by_group: dict[str, int] = {}
        self.first_ns = 0
        self.last_ns = 0
        self.dead_connections = 0

    async def accept(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic_ns()
        group = request.match_info["group"]
        self.count += 1
        self.body_bytes += len(body)
        self.by_group[group] = self.by_group.get(group, 0) + 1
        self.first_ns = self.first_ns or now
        self.last_ns = now
        if self.keep_arrivals:
            key = str(json.loads(body).get("key", ""))
            self.arrivals.append((now, group, key, request.headers.get("webhook-id", "")))
        return web.Response(status=200)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": self.count,
                "body_bytes": self.body_bytes,
                "by_group": self.by_group,
                "first_ns": self.first_ns,
                "last_ns": self.last_ns,
                "dead_connections": self.dead_connections,
            }
        )

    async def list_arrivals(self, request: web.Request) -> web.Response:
        return web.json_response(self.arrivals)

    async def reset(self, request: web.Request) -> web.Response:
        self.__init__(self.keep_arrivals)  # type: ignore[misc]
        return web.Response(status=204)

    async def never_answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept the connection and read what comes, but never write a byte back."""
        self.dead_connections += 1
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()


async def serve(keep_arrivals: bool) -> None:
    receiver = Receiver(keep_arrivals)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/ok/{group}", receiver.accept)
    app.router.add_get("/stats", receiver.stats)
    app.router.add_get("/arrivals", receiver.list_arrivals)
    app.router.add_post("/reset", receiver.reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    dead = await asyncio.start_server(receiver.never_answer, "127.0.0.1", 0, backlog=1024)
    dead_port = dead.sockets[0].getsockname()[1]
    print(f"PORTS {port} {dead_port}", flush=True)
    # The parent closes our stdin to stop us; that also covers the parent dying.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-arrivals", action="store_true", help="count only, keep no per-arrival records")
    args = parser.parse_args()
    asyncio.run(serve(keep_arrivals=not args.no_arrivals))


if __name__ == "__main__":
    main()
