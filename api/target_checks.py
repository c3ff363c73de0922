"""Target URL checks at subscribe time: absolute https, a host that resolves, no private addresses.
They run before the request takes a database connection: a name whose DNS never answers holds nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rowhook.target_rules import TargetRefused, check_address, check_url_shape, literal_address

RESOLVE_TIMEOUT_S = 3.0
# Lookups run in threads of their own: getaddrinfo cannot be cancelled, so a lookup that never answers
# keeps its thread after the timeout; here it takes a DNS thread, not one asyncio and psycopg need.
DNS_THREADS = 8
_dns_executor = ThreadPoolExecutor(max_workers=DNS_THREADS, thread_name_prefix="rowhook-dns")

# host -> the addresses it resolves to; raises TargetRefused when it does not resolve.
Resolve = Callable[[str], Awaitable[list[str]]]


async def resolve(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    lookup = loop.run_in_executor(_dns_executor, socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM)
    try:
        infos = await asyncio.wait_for(lookup, RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, TimeoutError):
        raise TargetRefused(f"host {host!r} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


async def check_target_url(url: str, allow_private: bool, resolver: Resolve = resolve) -> None:
    """Refuse (TargetRefused) a URL that is malformed, does not resolve or reaches a private address.
    The relay checks again at connect time: DNS answers may change after subscribing."""
    host = check_url_shape(url, allow_private)
    if (address := literal_address(host)) is not None:
        if not allow_private:
            check_address(host, address)
        return
    addresses = await resolver(host)
    if not addresses:
        raise TargetRefused(f"host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            check_address(host, address)


@dataclass(frozen=True)
class TargetChecker:
    """The target rules of one app: its settings and its resolver (tests give one that never answers)."""

    allow_private: bool
    resolver: Resolve = resolve

    async def check(self, url: str) -> None:
        await check_target_url(url, self.allow_private, self.resolver)
