"""`rowhook serve`: the API under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from api.app import create_app
from rowhook.settings import Settings

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


def serve(settings: Settings, database_url: str, host: str, port: int) -> int:
    """Run the API; on SIGTERM/SIGINT finish in-flight requests, close the pool and return 0."""
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
