"""The delivery portal: static HTML, CSS and JavaScript under /portal that call the public API."""

from __future__ import annotations

from pathlib import Path

from litestar import Response
from litestar.datastructures import CacheControlHeader
from litestar.router import Router
from litestar.static_files import create_static_files_router

from api.auth import EXCLUDE_FROM_AUTH

PORTAL_DIR = Path(__file__).parent / "portal"
PORTAL_PATH = "/portal"
# The page loads nothing from elsewhere and cannot be framed; its token never goes in a Referer header.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


async def add_security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def portal_router() -> Router:
    """`/portal` serves index.html (no token needed: the page asks for one and sends it to the API)."""
    return create_static_files_router(
        path=PORTAL_PATH,
        directories=[PORTAL_DIR],
        html_mode=True,
        name="portal",
        include_in_schema=False,
        opt={EXCLUDE_FROM_AUTH: True},
        # A new rowhook version's files are picked up at once; they are small.
        cache_control=CacheControlHeader(no_cache=True),
        after_request=add_security_headers,
    )
