"""A fast webhook receiver run as its own process: timestamps each arrival; other ports misbehave.

Ports printed on the first line, in this order: the receiver; one that accepts and never answers
(`dead`); one answering 500 at once (`fail500`); one resetting the connection in the middle of the
response headers (`reset_headers`) or of the body (`reset_body`); one bound but not listening, so that
connecting is refused (`refused`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable

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
        self.misbehaving: dict[str, int] = {}

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
                "misbehaving": self.misbehaving,
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

    def misbehave(self, name: str, answer: bytes, reset: bool) -> Callable[..., Awaitable[None]]:
        """A raw HTTP/1.1 server that reads each request and writes `answer`; with `reset`, then hangs up
        with a TCP reset (SO_LINGER 0), else keeps the connection alive for the next request."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await read_request(reader)
                    self.misbehaving[name] = self.misbehaving.get(name, 0) + 1
                    writer.write(answer)
                    await writer.drain()
                    if reset:
                        sock = writer.transport.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        break
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.transport.abort()

        return handle


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    await reader.readexactly(length)


MISBEHAVIOURS: dict[str, tuple[bytes, bool]] = {
    "fail500": (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", False),
    "reset_headers": (b"HTTP/1.1 200 OK\r\nContent-Type: text/pl", True),
    "reset_body": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial", True),
}


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
    ports = [port, dead_port]
    servers = [dead]
    for name, (answer, reset) in MISBEHAVIOURS.items():
        server = await asyncio.start_server(
            receiver.misbehave(name, answer, reset), "127.0.0.1", 0, backlog=1024
        )
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    # Bound but never listening: connecting is refused (RST), and no other program can take the port.
    refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refused.bind(("127.0.0.1", 0))
    ports.append(refused.getsockname()[1])
    print("PORTS " + " ".join(map(str, ports)), flush=True)
    # The parent closes our stdin to stop us; that also covers the parent dying.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    refused.close()
    for server in servers:
        server.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-arrivals", action="store_true", help="count only, keep no per-arrival records")
    args = parser.parse_args()
    asyncio.run(serve(keep_arrivals=not args.no_arrivals))


if __name__ == "__main__":
    main()
