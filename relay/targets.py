"""Which webhook targets are refused (SSRF rules): self-contained, no relay-internal imports."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints, named even where a wider range below already covers them.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# Ranges refused beyond what the `ipaddress` flags say: CGNAT (RFC 6598) and IPv6 ULA, spelled out
# because older Pythons classify them inconsistently.
REFUSED_NETWORKS = (
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fc00::/7"),
    ipaddress.ip_network("0.0.0.0/8"),
)


class TargetRefused(OSError):
    """A target URL or the address it resolves to is not allowed; the message says why."""


def address_refusal(address: str | IPAddress) -> str | None:
    """Why an address must not be connected to, or None when it is a public unicast address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped)
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (any(ip in net for net in REFUSED_NETWORKS if net.version == ip.version), "private (CGNAT/ULA)"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    for refused, kind in checks:
        if refused:
            return f"{ip} is a {kind} address"
    return None


def url_refusal(url: str) -> str | None:
    """Why a target URL is refused before any lookup (scheme, missing host, literal address), or None."""
    parts = urlsplit(url)
    if parts.scheme == "http":
        return "plain http:// targets are refused; use https:// (or set ROWHOOK_ALLOW_PRIVATE_TARGETS=1)"
    if parts.scheme != "https":
        return f"target scheme {parts.scheme!r} is not allowed; use https://"
    host = parts.hostname
    if not host:
        return "target URL has no host"
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked against each address it resolves to, at connect time
    return address_refusal(literal)
