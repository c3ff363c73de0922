"""`rowhook serve`: the API under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from rowhook.settings import Settings

log = logging.getLogger("rowhook.api")


def serve(settings: Settings, database_url: str, host: str, port: int) -> int:
    """Run the API; uvicorn handles SIGTERM/SIGINT by finishing in-flight requests. 0 on a clean stop."""
    config = uvicorn.Config(
        create_app(settings, database_url),
        host=host,
        port=port,
        lifespan="on",
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        log.error("the API did not start (port %s in use, or the database unreachable)", port)
        return 1
    return 0
