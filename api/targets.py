"""Target URL checks at subscribe time: absolute https, a host that resolves, no private addresses."""

from __future__ import annotations

import asyncio
import socket

from rowhook.targets import TargetRefused, check_address, check_url_shape

RESOLVE_TIMEOUT_S = 3.0


async def resolve(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, TimeoutError):
        raise TargetRefused(f"host {host!r} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


async def check_target_url(url: str, allow_private: bool) -> None:
    """Refuse (TargetRefused) a URL that is malformed, does not resolve or reaches a private address.
    The relay checks again at connect time: DNS answers may change after subscribing."""
    host = check_url_shape(url, allow_private)
    addresses = await resolve(host)
    if not allow_private:
        for address in addresses:
            check_address(host, address)
