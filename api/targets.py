"""Target URL checks at subscribe time: absolute https, a host that resolves, no private addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

# Address ranges a webhook must never reach, with the reason given to the client. The relay checks
# the same ranges again at connect time; keep both tables identical (a test compares them if both exist).
BLOCKED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network' address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "carrier-grade NAT address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.0.0/16", "link-local address (cloud metadata lives here)"),
    ("172.16.0.0/12", "private address"),
    ("192.0.0.0/24", "IETF protocol address"),
    ("192.0.2.0/24", "documentation address"),
    ("192.168.0.0/16", "private address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("224.0.0.0/4", "multicast address"),
    ("240.0.0.0/4", "reserved address"),
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("64:ff9b::/96", "NAT64 address"),
    ("100::/64", "discard-only address"),
    ("2001::/23", "IETF protocol address (includes Teredo)"),
    ("2001:db8::/32", "documentation address"),
    ("fc00::/7", "unique local address (ULA; AWS metadata fd00:ec2::254 lives here)"),
    ("fe80::/10", "link-local address"),
    ("ff00::/8", "multicast address"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), reason) for net, reason in BLOCKED_NETWORKS)
RESOLVE_TIMEOUT_S = 3.0


class TargetRefused(ValueError):
    """The target URL may not receive webhooks; the message says why."""


def blocked_reason(address: str) -> str | None:
    """Why `address` may not be a webhook target, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    for network, reason in _NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    return None


def check_url_shape(url: str, allow_private: bool) -> str:
    """The host of an acceptable URL; raises TargetRefused for anything else."""
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise TargetRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused(
            "must be an absolute https:// URL"
            + (" (or http://)" if allow_private else "")
            + ("" if allow_private else "; plain http is refused")
        )
    if not parts.hostname:
        raise TargetRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials; authenticate receivers with the webhook signature")
    return parts.hostname


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
    """Refuse (TargetRefused) a URL that is malformed, does not resolve or reaches a private address."""
    host = check_url_shape(url, allow_private)
    addresses = await resolve(host)
    if allow_private:
        return
    for address in addresses:
        if reason := blocked_reason(address):
            raise TargetRefused(
                f"host {host!r} resolves to {address}, a {reason}; such targets are refused "
                "unless ROWHOOK_ALLOW_PRIVATE_TARGETS=1"
            )
