"""Target URLs in logs and `rowhook status`: query values and credentials never shown."""

from __future__ import annotations

import pytest

from rowhook.target_rules import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/in", "https://hooks.example.com/in"),
        (
            "https://hooks.example.com:8443/in/acme?key=SECRET123",
            "https://hooks.example.com:8443/in/acme?key=***",
        ),
        ("https://h.example/in?a=1&b=&c=x=y&&d", "https://h.example/in?a=***&b=***&c=***&***"),
        ("https://SECRET123@h.example/in", "https://h.example/in"),
        ("https://user:SECRET123@h.example:444/in", "https://h.example:444/in"),
        ("https://h.example/in?SECRET123", "https://h.example/in?***"),
        ("https://h.example/in#SECRET123", "https://h.example/in"),
        ("https://[::1]:8443/in?token=SECRET123", "https://[::1]:8443/in?token=***"),
        ("http://127.0.0.1:9/in?key=SECRET123%20x", "http://127.0.0.1:9/in?key=***"),
        ("https://h.example:99999/in?key=SECRET123", "(unparseable URL)"),
        ("https://[::1/in?key=SECRET123", "(unparseable URL)"),
        ("not a url?key=SECRET123", "not a url?key=***"),
    ],
)
def test_query_values_and_userinfo_are_hidden(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "SECRET123" not in redact_url(url)
