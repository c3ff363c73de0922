"""`rowhook serve`: the API under uvicorn until SIGTERM/SIGINT, limiting connections and slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from litestar import Litestar
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors.multiprocess import Multiprocess

from api.app import create_app
from rowhook.settings import ENV_PREFIX, Settings

log = logging.getLogger("rowhook.api")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Repeated complaints (refused connections, accept() out of file descriptors) are logged once this often.
COMPLAINT_INTERVAL_S = 10.0
OVERLOADED = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Complaints:
    """Logs each kind of complaint once per interval, with how many were left out meanwhile."""

    def __init__(self, interval_s: float = COMPLAINT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.last: dict[str, float] = {}
        self.left_out: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -self.interval_s) < self.interval_s:
            self.left_out[kind] = self.left_out.get(kind, 0) + 1
            return
        self.last[kind] = now
        more = self.left_out.pop(kind, 0)
        log.warning("%s%s", message, f" ({more} more since the last such line)" if more else "")


class OncePerInterval(logging.Filter):
    """Lets uvicorn's per-request warnings (e.g. "Exceeded concurrency limit.") through once per interval."""

    def __init__(self, complaints: Complaints) -> None:
        super().__init__()
        self.complaints = complaints

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.exc_info:
            return True
        self.complaints.warn(f"uvicorn:{record.msg}", f"uvicorn: {record.getMessage()}")
        return False


def guarded_protocol(settings: Settings, complaints: Complaints) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with two guards it lacks: a connection over the limit is answered 503
    and closed at once (it holds no file descriptor), and a client gets `api_read_timeout_s` to send a
    whole request (head and body) from its first byte or connection, so silent clients cannot pile up."""

    class GuardedProtocol(H11Protocol):
        read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > settings.api_max_connections:
                complaints.warn(
                    "connections",
                    f"refusing connections: {settings.api_max_connections} are open"
                    " (ROWHOOK_API_MAX_CONNECTIONS); put a proxy with its own limits in front",
                )
                transport.write(OVERLOADED)
                transport.close()
                return
            self._start_read_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self._start_read_timer()  # a request under way, or the first bytes of the next one
            else:
                self._stop_read_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_read_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            self._stop_read_timer()  # from here the keep-alive timeout applies
            super().on_response_complete()

        def _start_read_timer(self) -> None:
            if self.read_timer is None:
                self.read_timer = self.loop.call_later(settings.api_read_timeout_s, self._read_timed_out)

        def _stop_read_timer(self) -> None:
            if self.read_timer is not None:
                self.read_timer.cancel()
                self.read_timer = None

        def _read_timed_out(self) -> None:
            self.read_timer = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                complaints.warn(
                    "slow",
                    f"closed a connection that sent no whole request within {settings.api_read_timeout_s:g} s"
                    " (ROWHOOK_API_READ_TIMEOUT_S)",
                )
                self.transport.close()

    return GuardedProtocol


class Server(uvicorn.Server):
    """uvicorn re-raises the stop signal after its graceful shutdown, so the process would die of it;
    rowhook treats SIGTERM/SIGINT as the normal way to stop and exits 0 instead."""

    complaints: Complaints

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: Any = None) -> None:
        # Out of file descriptors, asyncio logs a traceback per accept() attempt: once per interval here.
        asyncio.get_running_loop().set_exception_handler(self.loop_exception)
        await super().startup(sockets)

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            self.complaints.warn(
                "accept",
                f"cannot accept connections: {context.get('exception')}; raise `ulimit -n`, lower"
                " ROWHOOK_API_MAX_CONNECTIONS, or put a proxy in front",
            )
            return
        if self.should_exit and self._accept_retry_after_close(context):
            # After EMFILE asyncio retries accept() a moment later; stopping in that moment closed the
            # listening socket first, and the retry finds it gone. Nothing was lost: we are stopping.
            log.debug("the accept() retry found the listening socket closed at shutdown")
            return
        loop.default_exception_handler(context)

    @staticmethod
    def _accept_retry_after_close(context: dict[str, Any]) -> bool:
        return isinstance(context.get("exception"), ValueError) and "_start_serving" in repr(
            context.get("handle")
        )


def app_from_env() -> Litestar:
    """The app of one worker process of `rowhook serve --workers N`: settings from the environment,
    which the parent process completed with the database URL it resolved."""
    settings = Settings.from_env()
    if not settings.database_url:
        raise RuntimeError(f"{ENV_PREFIX}DATABASE_URL is not set in the worker process")
    return create_app(settings, settings.database_url)


def serve(settings: Settings, database_url: str, host: str, port: int, workers: int = 1) -> int:
    """Run the API; on SIGTERM/SIGINT finish in-flight requests, close the pool and return 0."""
    if workers > 1:
        return serve_workers(settings, database_url, host, port, workers)
    complaints = Complaints()
    logging.getLogger("uvicorn.error").addFilter(OncePerInterval(complaints))
    config = uvicorn.Config(
        create_app(settings, database_url),
        host=host,
        port=port,
        lifespan="on",
        log_level=settings.log_level.lower(),
        server_header=False,
        http=guarded_protocol(settings, complaints),
        limit_concurrency=settings.api_max_connections + 1,  # the protocol above refuses the excess
        timeout_keep_alive=max(1, round(settings.api_keep_alive_s)),
    )
    server = Server(config)
    server.complaints = complaints
    server.run()
    if not server.started:
        log.error("the API did not start on %s:%s (port in use, or the database unreachable)", host, port)
        return 1
    return 0


def serve_workers(settings: Settings, database_url: str, host: str, port: int, workers: int) -> int:
    """`workers` uvicorn worker processes sharing one listening socket, under uvicorn's supervisor:
    SIGTERM/SIGINT stop the workers gracefully (each finishes its requests) and then return 0."""
    # Workers are spawned, not forked: they build the app from the environment (app_from_env).
    os.environ[ENV_PREFIX + "DATABASE_URL"] = database_url
    config = uvicorn.Config(
        "api.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        lifespan="on",
        log_level=settings.log_level.lower(),
        server_header=False,
        # Per worker. The guarded protocol of a single process (503 at once over the limit, read
        # timeout) is a class made at run time, which spawned workers cannot import: behind a proxy.
        limit_concurrency=settings.api_max_connections,
        timeout_keep_alive=max(1, round(settings.api_keep_alive_s)),
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        log.error("the API workers did not start on %s:%s (the database unreachable?)", host, port)
        return 1
    return 0
