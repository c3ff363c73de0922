"""Target URL rules without I/O (rowhook.targets, shared by API and relay): addresses and URL shapes."""

from __future__ import annotations

import pytest

from rowhook.targets import BLOCKED_NETWORKS, TargetRefused, blocked_reason, check_url_shape

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
