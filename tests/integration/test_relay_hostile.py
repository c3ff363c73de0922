"""Hostile receivers on real sockets: none can stop the relay or starve a healthy receiver meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.integration.relay_harness import (
    Conn,
    create_tasks,
    insert_tasks,
    new_secret,
    receiver,
    running_relay,
    subscribe,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]
HUGE_BODY_BYTES = 300 * 1024 * 1024
CHUNK = b"x" * 65536
# More than this growth of the test process's peak RSS (the relay runs in it) fails a case.
RSS_GROWTH_LIMIT_KB = 100 * 1024


@dataclass
class RawServer:
    """An asyncio TCP server on 127.0.0.1 that does whatever its handler does with each connection."""

    handler: Handler
    port: int = 0
    connections: int = 0
    bytes_sent: int = 0
    open_spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per connection
    _writers: dict[asyncio.StreamWriter, float] = field(default_factory=dict)  # open ones: their start
    _server: asyncio.Server | None = None

    def open_now(self) -> int:
        return len(self._writers)

    def opened_within(self, seconds: float) -> bool:
        """Whether a connection that is open now was opened less than `seconds` ago."""
        now = asyncio.get_running_loop().time()
        return any(now - started < seconds for started in self._writers.values())

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        # Connections still open count with their span so far: their handlers may never finish now.
        for writer in list(self._writers):
            self._end_span(writer)
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.connections += 1
        self._writers[writer] = started
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the relay hung up on us, as it should
        finally:
            self._end_span(writer)
            writer.transport.abort()

    def _end_span(self, writer: asyncio.StreamWriter) -> None:
        started = self._writers.pop(writer, None)
        if started is not None:  # once per connection, whichever ends it first
            self.open_spans.append((started, asyncio.get_running_loop().time()))

    async def send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.bytes_sent += len(data)


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


def retry_after(value: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        await server.send(
            writer, b"HTTP/1.1 503 Busy\r\nRetry-After: " + value + b"\r\nContent-Length: 0\r\n\r\n"
        )

    return handle


async def huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
    await read_request(reader)
    await server.send(writer, b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % HUGE_BODY_BYTES)
    for _ in range(HUGE_BODY_BYTES // len(CHUNK)):  # streamed: never built in memory
        await server.send(writer, CHUNK)


async def trickled_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    await read_request(reader)
    await server.send(writer, b"HTTP/1.1 500 Slow\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        await server.send(writer, b"x")
        await asyncio.sleep(1)


async def endless_headers(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    await read_request(reader)
    await server.send(writer, b"HTTP/1.1 200 OK\r\n")
    for n in range(100_000):
        await server.send(writer, b"X-Header-%d: %s\r\n" % (n, b"y" * 100))
        await asyncio.sleep(0.01)


async def invalid_status_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    await read_request(reader)
    await server.send(
        writer, b"HTTP/1.1 99999999999999999999 \x00\xff\xfe garbage\r\nContent-Length: 0\r\n\r\n"
    )


async def reset_mid_response(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    await read_request(reader)
    await server.send(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    sock = writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    writer.transport.abort()


@cache
def gzip_bomb() -> bytes:
    """About 1 MB that inflates to 1 GiB: ten gzip members of 100 MiB of zeros each."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    member = b"".join(compressor.compress(zeros) for _ in range(100)) + compressor.flush()
    return member * 10


async def decompression_bomb(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    await read_request(reader)
    bomb = gzip_bomb()
    head = b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    await server.send(writer, head)
    for start in range(0, len(bomb), len(CHUNK)):
        await server.send(writer, bomb[start : start + len(CHUNK)])


async def junk_instead_of_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    await reader.read(1)  # the ClientHello has begun
    for _ in range(20):
        await server.send(writer, b"\x16\x03\x01\xff\xff this is not TLS \x00\xff" * 20)
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Case:
    handler: Handler
    check: Callable[[list[dict[str, Any]], RawServer], None]
    scheme: str = "http"
    slow: bool = False  # each attempt keeps the connection open about request_timeout_s


def retried_503(attempts: list[dict[str, Any]], _: RawServer) -> None:
    assert all(a["status_code"] == 503 and a["error"] is None for a in attempts)


def capped_and_dropped(attempts: list[dict[str, Any]], server: RawServer) -> None:
    assert all(a["status_code"] == 500 and a["response_body"] == "x" * 1024 for a in attempts)
    # The relay read 1 KiB and hung up: of 300 MB per attempt, a few socket buffers' worth left.
    assert server.bytes_sent < server.connections * 32 * 1024 * 1024


def timed_out(attempts: list[dict[str, Any]], _: RawServer) -> None:
    assert all(a["status_code"] is None and a["error"] == "timed out after 1 s" for a in attempts)


def failed_without_status(attempts: list[dict[str, Any]], _: RawServer) -> None:
    assert all(a["status_code"] is None and a["error"] and "\x00" not in a["error"] for a in attempts)
    assert not any(a["error"].startswith("internal error") for a in attempts)


def compressed_bytes_kept(attempts: list[dict[str, Any]], _: RawServer) -> None:
    # Not inflated (auto_decompress=False): the first bytes are the gzip header, \x1f\x8b.
    assert all(a["status_code"] == 500 and a["response_body"].startswith("\x1f\ufffd\x08") for a in attempts)
    assert all(len(a["response_body"]) <= 1024 for a in attempts)


CASES = {
    "retry-after year 99999999999": Case(retry_after(b"Mon, 01 Jan 99999999999 00:00:00 GMT"), retried_503),
    "retry-after zone overflow": Case(retry_after(b"Mon, 01 Jan 2020 00:00:00 +99999999999999"), retried_503),
    "retry-after huge number": Case(retry_after(b"9" * 4000), retried_503),
    "retry-after negative": Case(retry_after(b"-86400"), retried_503),
    "retry-after float": Case(retry_after(b"1.5e308"), retried_503),
    "retry-after non-ascii": Case(retry_after("²٣ ünïcode".encode() + b"\xff\xfe"), retried_503),
    "300 MB body": Case(huge_body, capped_and_dropped),
    "body trickled 1 byte/s": Case(trickled_body, timed_out, slow=True),
    "headers that never end": Case(endless_headers, failed_without_status, slow=True),
    "invalid status line": Case(invalid_status_line, failed_without_status),
    "reset mid-response": Case(reset_mid_response, failed_without_status),
    "gzip decompression bomb": Case(decompression_bomb, compressed_bytes_kept),
    "junk instead of TLS": Case(junk_instead_of_tls, failed_without_status, scheme="https"),
}


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    server = RawServer(handler)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def attempts_of(conn: Conn, subscription_id: str) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT a.* FROM rowhook.attempts a JOIN rowhook.deliveries d ON d.id = a.delivery_id"
        " WHERE d.subscription_id = %s ORDER BY a.attempted_at, a.seq NULLS LAST",
        (subscription_id,),
    ).fetchall()


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_receiver_cannot_stop_the_relay_or_starve_a_healthy_one(
    db_url: str, conn: Conn, name: str
) -> None:
    case = CASES[name]
    if case.handler is decompression_bomb:
        gzip_bomb()  # built before the baseline
    create_tasks(conn)
    secret = new_secret()
    async with receiver() as healthy_server, raw_server(case.handler) as hostile_server:
        subscribe(conn, healthy_server.url("healthy", secret), secret)
        hostile = subscribe(conn, f"{case.scheme}://127.0.0.1:{hostile_server.port}/hook?key=k", secret)
        peak_before_kb = peak_rss_kb()
        # A failing subscription waits for its retry before its next probe: a Retry-After of a day
        # would hold it a minute (ROWHOOK_PROBE_WAIT_MAX_S).
        async with running_relay(db_url, request_timeout_s=1.0, probe_wait_max_s=0.5) as relay:
            insert_tasks(conn, 3)
            await wait_until(lambda: len(healthy_server.event_ids()) == 3, what="the healthy subscription")
            await wait_until(lambda: len(attempts_of(conn, hostile)) >= 2, what="hostile attempts")
            served_before = len(attempts_of(conn, hostile))
            if case.slow:  # the later events come while a hostile connection is open (not between probes)
                # Just opened: it stays open about a second, for the healthy events to arrive in.
                await wait_until(
                    lambda: hostile_server.opened_within(0.1), what="a hostile connection opening"
                )
            insert_tasks(conn, 3)
            await wait_until(lambda: len(healthy_server.event_ids()) == 6, what="later events")
            await wait_until(
                lambda: len(attempts_of(conn, hostile)) > served_before, what="more hostile attempts"
            )
            assert relay.failure is None
        peak_after_kb = peak_rss_kb()
    assert all(r.signature_ok for r in healthy_server.received)
    assert len(set(healthy_server.event_ids())) == 6
    attempts = attempts_of(conn, hostile)
    case.check(attempts, hostile_server)
    assert peak_after_kb - peak_before_kb < RSS_GROWTH_LIMIT_KB, "the relay's memory grew by hundreds of MB"
    if case.slow:  # the healthy subscription was served while a hostile connection was open
        assert any(
            start <= r.at <= end
            for r in healthy_server.received[3:]
            for start, end in hostile_server.open_spans
        ), ([r.at for r in healthy_server.received], hostile_server.open_spans)
