"""Webhook targets: SSRF rules (refused at subscribe time and at connect time), and URLs redacted for logs."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_HINT = "unless ROWHOOK_ALLOW_PRIVATE_TARGETS=1"

# Address ranges a webhook must never reach, with the reason given to people. Spelled out rather than
# taken from the `ipaddress` flags, whose answers differ between Python versions; anything else that is
# not globally routable is refused too.
BLOCKED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network' address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "carrier-grade NAT (CGNAT) address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.169.254/32", "cloud metadata address"),
    ("169.254.0.0/16", "link-local address"),
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
    ("fd00:ec2::254/128", "cloud metadata address"),
    ("fc00::/7", "unique local address (ULA)"),
    ("fe80::/10", "link-local address"),
    ("ff00::/8", "multicast address"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), reason) for net, reason in BLOCKED_NETWORKS)


class TargetRefused(OSError):
    """A target URL, or an address it resolves to, may not receive webhooks; the message says why.
    An OSError, so that aiohttp reports a refusal by the relay's resolver as a connection error."""


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why an address may not be a webhook target ("loopback address"), or None for a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    for network, reason in _NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    return None if ip.is_global else "address that is not globally routable"


def check_url_shape(url: str, allow_private: bool) -> str:
    """The host of an acceptable URL; raises TargetRefused for anything else (before any lookup)."""
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
            + (" (or http://)" if allow_private else f"; plain http is refused {ALLOW_HINT}")
        )
    if not parts.hostname:
        raise TargetRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials; authenticate receivers with the webhook signature")
    return parts.hostname


def check_address(host: str, address: str) -> None:
    """Raise TargetRefused when `host` resolved to (or is) an address webhooks may not reach."""
    if reason := blocked_reason(address):
        where = address if host == address else f"{host!r}, which resolves to {address}"
        raise TargetRefused(f"{where} is a {reason}; such targets are refused {ALLOW_HINT}")


def literal_address(host: str) -> str | None:
    """The host itself when it is an IP address literal (no lookup needed), else None."""
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """The URL fit for logs and operators' screens: receivers put keys in query strings, so every query
    value becomes *** (a bare query word too), and userinfo and fragment are dropped."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(unparseable URL)"
    netloc = (f"[{host}]" if ":" in host else host) + ("" if port is None else f":{port}")
    pairs = [f"{p.split('=', 1)[0]}=***" if "=" in p else "***" for p in parts.query.split("&") if p]
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(pairs), ""))
