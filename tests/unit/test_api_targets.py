"""Target URL rules without I/O (rowhook.target_rules, shared by API and relay): addresses and URL shapes."""

from __future__ import annotations

import pytest
import yarl

from relay.sender import Sender
from rowhook.target_rules import (
    BLOCKED_NETWORKS,
    TargetRefused,
    blocked_reason,
    check_address,
    check_url_shape,
    literal_address,
)

BLOCKED = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.0",
    "::1",
    "fd00:ec2::254",
    "fc00::1",
    "fe80::1",
    "::ffff:10.0.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "::",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "2001:db8::1",
]
PUBLIC = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_addresses_have_a_reason(address: str) -> None:
    assert blocked_reason(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None


def test_every_table_entry_is_a_valid_network_with_a_reason() -> None:
    assert all(reason for _, reason in BLOCKED_NETWORKS)


@pytest.mark.parametrize(
    ("url", "allow_private", "words"),
    [
        ("http://example.com/", False, "plain http is refused"),
        ("ftp://example.com/", True, "absolute https:// URL (or http://)"),
        ("https://", False, "no host"),
        ("https://u:p@example.com/", False, "credentials"),
        ("https://example.com:70000/", False, "not a valid URL"),
        ("https://exa mple.com/", False, "spaces"),
    ],
)
def test_malformed_urls_are_refused_with_a_reason(url: str, allow_private: bool, words: str) -> None:
    with pytest.raises(TargetRefused, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_url_shape(url, allow_private)


def test_http_is_accepted_only_when_private_targets_are_allowed() -> None:
    assert check_url_shape("http://127.0.0.1:8000/hook", allow_private=True) == "127.0.0.1"


# One address inside each refused range, with a word of its reason; none depends on `ipaddress.is_global`.
RANGES = [
    ("0.1.2.3", "'this network'"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.254", "benchmarking"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("224.0.0.251", "multicast"),
    ("239.255.255.250", "multicast"),
    ("192.88.99.1", "6to4 relay"),
    ("192.0.0.9", "special-purpose"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("64:ff9b:1:ffff::8.8.8.8", "local-use NAT64"),
    ("2002:7f00:1::1", "6to4 tunnel"),
    ("2002:808:808::1", "6to4 tunnel"),  # a public IPv4 inside: refused all the same
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:2::1", "special-purpose"),
    ("::7f00:1", "IPv4-compatible"),
    ("::8.8.8.8", "IPv4-compatible"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:0:0", "'this network'"),
    ("64:ff9b::7f00:1", "loopback address behind NAT64"),
    ("64:ff9b::10.0.0.1", "private address behind NAT64"),
    ("64:ff9b::169.254.169.254", "cloud metadata address behind NAT64"),
    ("100::1", "discard-only"),
    ("3fff::1", "documentation"),
    ("5f00::1", "segment routing"),
    ("fec0::1", "site-local"),
    ("::2", "IPv4-compatible"),
    ("4000::1", "outside 2000::/3"),
    ("fe80::1%eth0", "link-local"),
]


@pytest.mark.parametrize(("address", "reason"), RANGES)
def test_each_refused_range_is_named(address: str, reason: str) -> None:
    assert reason in (blocked_reason(address) or "no reason"), blocked_reason(address)


@pytest.mark.parametrize("address", ["64:ff9b::93.184.215.14", "64:ff9b::808:808", "2a00:1450:4001::1"])
def test_nat64_of_a_public_address_and_global_ipv6_pass(address: str) -> None:
    assert blocked_reason(address) is None


# Hosts that a resolver and aiohttp (yarl) read as another address than the raw text says.
UNICODE_HOSTS = [
    ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),  # fullwidth digits
    ("127\u30020\u30020\u30021", "127.0.0.1"),  # ideographic full stops
    ("\U0001d7cf\U0001d7d0\U0001d7d5.0.0.1", "127.0.0.1"),  # mathematical bold digits
    ("\u2460\u2461\u2466.0.0.1", "127.0.0.1"),  # circled digits (NFKC makes them ASCII)
    ("\u0661\u0660.\u0660.\u0660.\u0665", "10.0.0.5"),  # Arabic-Indic digits
    ("\u06f1\u06f2\u06f7.\u06f0.\u06f0.\u06f1", "127.0.0.1"),  # extended Arabic-Indic digits
    ("\uff2c\uff2f\uff23\uff21\uff2c\uff28\uff2f\uff33\uff34", "localhost"),  # fullwidth letters
    ("ex\u00e4mple.com", "xn--exmple-cua.com"),
]


@pytest.mark.parametrize(("host", "normalised"), UNICODE_HOSTS)
def test_unicode_hosts_are_normalised_as_a_resolver_does(host: str, normalised: str) -> None:
    assert check_url_shape(f"https://{host}/hook", allow_private=False) == normalised


@pytest.mark.parametrize(("host", "_"), UNICODE_HOSTS)
def test_no_host_reaches_what_yarl_connects_to_unchecked(host: str, _: str) -> None:
    """Where aiohttp would connect to an IP literal (its URL's raw_host), rowhook sees that literal."""
    raw_host = yarl.URL(f"https://{host}/hook").raw_host
    assert raw_host is not None
    if literal_address(raw_host) is not None:
        assert check_url_shape(f"https://{host}/hook", allow_private=False) == raw_host


@pytest.mark.parametrize(
    "host", ["\uff11\uff12\uff17.\uff10.\uff10.\uff11", "\u0661\u0662\u0667.\u0660.\u0660.\u0661"]
)
def test_unicode_loopback_literals_are_refused_as_loopback(host: str) -> None:
    refusal = Sender.refusal(f"https://{host}/hook")
    assert refusal is not None and "loopback address" in refusal


def test_a_refusal_names_the_literal_typed_but_never_the_address_a_name_resolved_to() -> None:
    with pytest.raises(TargetRefused) as literal:
        check_address("10.0.0.5", "10.0.0.5")
    assert str(literal.value).startswith("10.0.0.5 is a private address")
    with pytest.raises(TargetRefused) as name:
        check_address("intranet.example", "10.0.0.5")
    assert "'intranet.example' resolves to a private address" in str(name.value)
    assert "10.0.0.5" not in str(name.value)


def test_an_invalid_internationalised_name_is_refused() -> None:
    with pytest.raises(TargetRefused, match="internationalised domain name"):
        check_url_shape("https://" + "\u00e4" * 70 + ".example/", allow_private=False)
