"""`rowhook serve`: the API under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

import uvicorn
from litestar import Litestar
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from api.app import create_app
from rowhook.settings import ENV_PREFIX, Settings

log = logging.getLogger("rowhook.api")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(uvicorn.Server):
    """uvicorn re-raises the stop signal after its graceful shutdown, so the process would die of it;
    rowhook treats SIGTERM/SIGINT as the normal way to stop and exits 0 instead."""

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
    config = uvicorn.Config(
        create_app(settings, database_url),
        host=host,
        port=port,
        lifespan="on",
        log_level=settings.log_level.lower(),
        server_header=False,
    )
    server = Server(config)
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
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        log.error("the API workers did not start on %s:%s (the database unreachable?)", host, port)
        return 1
    return 0
