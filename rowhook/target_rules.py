"""Webhook targets: SSRF rules (refused at subscribe time and at connect time), and URLs redacted for logs."""

from __future__ import annotations

import ipaddress
import unicodedata
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_HINT = "unless ROWHOOK_ALLOW_PRIVATE_TARGETS=1"

# Address ranges a webhook must never reach, with the reason given to people, most specific first.
# Spelled out rather than taken from the `ipaddress` flags (`is_global`, `is_private`), whose answers
# differ between Python versions. Every IPv4 address not listed is globally routable; an IPv6 address
# outside global unicast (2000::/3) is refused even when not listed (see blocked_reason).
#
# IPv6 ranges that carry an IPv4 address inside are refused whole, not unwrapped: 6to4 and Teredo reach
# their IPv4 end through relays rowhook does not control (and Teredo stores that address obfuscated),
# IPv4-compatible addresses are deprecated, and local-use NAT64 prefixes embed the address at a position
# only the local network knows. No real receiver publishes such addresses. The one exception is the
# well-known NAT64 prefix (see NAT64_PREFIX).
BLOCKED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network' address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "carrier-grade NAT (CGNAT) address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.169.254/32", "cloud metadata address"),
    ("169.254.0.0/16", "link-local address"),
    ("172.16.0.0/12", "private address"),
    ("192.0.0.0/24", "special-purpose (IETF protocol) address"),
    ("192.0.2.0/24", "documentation address"),
    ("192.88.99.0/24", "6to4 relay anycast address"),
    ("192.168.0.0/16", "private address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("224.0.0.0/4", "multicast address"),
    ("240.0.0.0/4", "reserved address"),  # includes the broadcast address 255.255.255.255
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("::/96", "deprecated IPv4-compatible IPv6 address"),
    ("64:ff9b:1::/48", "local-use NAT64 address"),
    ("100::/64", "discard-only address"),
    ("2001::/32", "Teredo tunnel address"),
    ("2001::/23", "special-purpose (IETF protocol) address"),
    ("2001:db8::/32", "documentation address"),
    ("2002::/16", "6to4 tunnel address"),
    ("3fff::/20", "documentation address"),
    ("5f00::/16", "segment routing (SRv6) address"),
    ("fd00:ec2::254/128", "cloud metadata address"),
    ("fc00::/7", "unique local address (ULA)"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "deprecated site-local address"),
    ("ff00::/8", "multicast address"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), reason) for net, reason in BLOCKED_NETWORKS)
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
# The well-known NAT64 prefix (RFC 6052) is unwrapped and its IPv4 address checked: DNS64 resolvers
# synthesise it for every IPv4-only name on IPv6-only hosts, so refusing it would refuse every such
# receiver there, and the NAT64 gateway reaches exactly the embedded address.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
# Full stops a resolver (IDNA) treats as "." : ideographic, fullwidth and halfwidth ideographic.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class TargetRefused(OSError):
    """A target URL, or an address it resolves to, may not receive webhooks; the message says why.
    An OSError, so that aiohttp reports a refusal by the relay's resolver as a connection error."""


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why an address may not be a webhook target ("loopback address"), or None for a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        elif ip in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            reason = blocked_reason(embedded)
            return f"{reason} behind NAT64" if reason else None
    for network, reason in _NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST_V6:
        return "non-global IPv6 address (outside 2000::/3)"
    return None


def normalise_host(host: str) -> str:
    """The host as a resolver and aiohttp (yarl) see it, in ASCII: NFKC and IDNA, so that 127.0.0.1 in
    fullwidth digits or with ideographic full stops is 127.0.0.1, and 'exämple.com' is punycode. Digits of
    any script count too (127.0.0.1 in Arabic-Indic digits is 127.0.0.1): what some parser could read as
    an address is checked as one."""
    if host.isascii():
        return host.lower()
    text = unicodedata.normalize("NFKC", host).translate(_DOTS)
    digits = "".join(str(d) if (d := unicodedata.decimal(ch, None)) is not None else ch for ch in text)
    if (address := literal_address(digits)) is not None:
        return address
    try:
        return text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise TargetRefused("has a host that is not a valid internationalised domain name") from None


def check_url_shape(url: str, allow_private: bool) -> str:
    """The normalised host of an acceptable URL; raises TargetRefused for anything else (before any
    lookup)."""
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
    return normalise_host(parts.hostname)


def check_address(host: str, address: str) -> None:
    """Raise TargetRefused when `host` resolved to (or is) an address webhooks may not reach. An address
    that a name resolved to is not told: it would map the internal network for whoever asks."""
    if reason := blocked_reason(address):
        where = f"{host} is" if literal_address(host) is not None else f"{host!r} resolves to"
        raise TargetRefused(f"{where} a {reason}; such targets are refused {ALLOW_HINT}")


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
