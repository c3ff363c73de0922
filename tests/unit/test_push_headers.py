"""Subscription headers: which names and values are refused, how values are masked and scrubbed."""

from __future__ import annotations

import pytest

from api.errors import Unprocessable
from api.push_headers import check_headers, mask, masked
from relay.sender import Sender, scrub, secret_values
from relay.worker import log_unexpected
from rowhook.settings import Settings
from rowhook.webhooks import new_secret


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("Content-Type", "text/plain", "set by rowhook"),
        ("content-length", "3", "set by rowhook"),
        ("Content-Encoding", "gzip", "set by rowhook"),
        ("HOST", "evil.example", "set by rowhook"),
        ("User-Agent", "me", "set by rowhook"),
        ("Webhook-Signature", "v1,x", "set by rowhook"),
        ("webhook-anything", "x", "set by rowhook"),
        ("Connection", "close", "hop-by-hop"),
        ("Keep-Alive", "timeout=5", "hop-by-hop"),
        ("Proxy-Authorization", "Basic abc", "hop-by-hop"),
        ("Proxy-Authenticate", "Basic", "hop-by-hop"),
        ("TE", "trailers", "hop-by-hop"),
        ("Trailer", "x", "hop-by-hop"),
        ("Transfer-Encoding", "chunked", "hop-by-hop"),
        ("Upgrade", "websocket", "hop-by-hop"),
        ("X Key", "v", "not a valid header name"),
        ("X-Key:", "v", "not a valid header name"),
        ("X-Kéy", "v", "not a valid header name"),
        ("X-Key", "a\r\nX-Injected: 1", "control characters"),
        ("X-Key", "a\nb", "control characters"),
        ("X-Key", "a\x00b", "control characters"),
        ("X-Key", "é", "printable ASCII"),
        ("X-Key", "", "must have a value"),
        ("X-Key", " padded", "whitespace"),
        ("Authorization", "Bearer ****abcd", "looks masked"),
    ],
)
def test_refused_headers_name_the_header(name: str, value: str, reason: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        check_headers({"X-Fine": "ok", name: value})
    assert refused.value.field == f"headers.{name}"
    assert reason in refused.value.detail and repr(name) in refused.value.detail


def test_names_are_unique_case_insensitively_and_the_total_size_is_bounded() -> None:
    with pytest.raises(Unprocessable) as twice:
        check_headers({"X-Key": "a", "x-key": "b"})
    assert twice.value.field == "headers.x-key" and "twice" in twice.value.detail
    with pytest.raises(Unprocessable) as large:
        check_headers({f"X-{i}": "v" * 1000 for i in range(5)})
    assert large.value.field == "headers" and "4096 bytes" in large.value.detail
    accepted = {"Authorization": "Bearer t0ken", "X-Api-Key": "k", "Cookie": "a=b; c=d"}
    assert check_headers(accepted) == accepted
    assert check_headers(None) == {} and check_headers({}) == {}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("Bearer s3cr3t-t0ken-abcd", "Bearer ****abcd"),
        ("bearer s3cr3t-t0ken-abcd", "bearer ****abcd"),
        ("Basic dXNlcjpwYXNz", "Basic ****YXNz"),
        ("Bearer short", "Bearer ****"),
        ("12345678", "****5678"),
        ("1234567", "****"),
        ("x", "****"),
        ("my secret phrase here", "****here"),  # not a scheme word: nothing of the start shows
    ],
)
def test_values_are_masked_keeping_the_scheme_and_the_last_four_of_long_ones(value: str, shown: str) -> None:
    assert mask(value) == shown
    assert masked({"Authorization": value}) == {"Authorization": shown}


def test_recorded_text_is_scrubbed_of_header_values() -> None:
    delivery = {"headers": {"Authorization": "Bearer s3cr3t-t0ken", "X-Short": "abc", "X-Key": "s3cr3t"}}
    secrets = secret_values(delivery)
    assert secrets == ["Bearer s3cr3t-t0ken", "s3cr3t"]  # longest first; too short to scrub: left out
    echoed = '{"headers": {"Authorization": "Bearer s3cr3t-t0ken", "X-Key": "s3cr3t", "X-Short": "abc"}}'
    assert (
        scrub(echoed, secrets) == '{"headers": {"Authorization": "****", "X-Key": "****", "X-Short": "abc"}}'
    )
    assert scrub('{"token": "Bearer s3cr3t-t0', secrets) == '{"token": "****'  # a capture cut short
    assert scrub(None, secrets) is None
    assert secret_values({"headers": None}) == [] and secret_values({}) == []


def test_an_unexpected_error_quoting_a_header_value_is_logged_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivery = {"id": "msg_1", "subscription_id": "sub_1", "target_url": "https://h.example/in?key=k"}
    secrets = ["Bearer s3cr3t-t0ken"]
    for message in ("bad header: Bearer s3cr3t-t0ken", "nothing secret"):
        try:
            raise ValueError(message)
        except ValueError:
            log_unexpected(delivery, secrets)
    quoting, plain = caplog.records
    assert "s3cr3t" not in quoting.getMessage() and "bad header: ****" in quoting.getMessage()
    assert quoting.exc_info is None and "Traceback" in quoting.getMessage()
    assert (
        plain.exc_info is not None and "key=***" in plain.getMessage()
    )  # the usual record, traceback attached


def test_the_sender_adds_the_subscription_headers_but_never_a_reserved_one() -> None:
    delivery = {
        "id": "msg_1",
        "secret": new_secret(),
        "previous_secret": None,
        # As if written into the table by hand: the API refuses the last three.
        "headers": {
            "Authorization": "Bearer t",
            "Content-Type": "text/plain",
            "Webhook-Id": "x",
            "TE": "gzip",
        },
    }
    sent = Sender(Settings()).headers(delivery, b"{}")
    assert sent["Authorization"] == "Bearer t"
    assert {k.lower() for k in sent} == {
        "authorization",
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert sent["content-type"] == "application/json" and sent["webhook-id"] == "msg_1"
