"""Relay rules without I/O: SSRF address classification, signatures, bodies and the retry policy."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from relay.policy import (
    MAX_RETRY_AFTER_S,
    Outcome,
    decide,
    jittered,
    parse_retry_after,
    subscription_changes,
)
from relay.sender import Sender
from rowhook.target_rules import blocked_reason
from rowhook.webhooks import (
    SECRET_PREFIX,
    delivery_body,
    event_body,
    iso_timestamp,
    ping_body,
    signature_header,
)

SCHEDULE = (0.0, 5.0, 300.0)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "::",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert blocked_reason(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "100.128.0.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(address) is None


def test_metadata_and_cgnat_are_named_in_the_reason() -> None:
    assert "metadata" in (blocked_reason("169.254.169.254") or "")
    assert "metadata" in (blocked_reason("fd00:ec2::254") or "")
    assert "CGNAT" in (blocked_reason("100.64.1.1") or "")


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://example.com/hook", False),
        ("http://example.com/hook", True),
        ("ftp://example.com/hook", True),
        ("https:///nohost", True),
        ("https://127.0.0.1/hook", True),
        ("https://[::1]:8443/hook", True),
        ("https://8.8.8.8/hook", False),
    ],
)
def test_url_refusal(url: str, refused: bool) -> None:
    assert (Sender.refusal(url) is not None) == refused


def test_signature_verifies_with_standardwebhooks_for_both_secrets_during_rotation() -> None:
    new, old = (SECRET_PREFIX + base64.b64encode(bytes([n]) * 24).decode() for n in (1, 2))
    body = b'{"id":"evt_1"}'
    timestamp = int(datetime.now(UTC).timestamp())
    header = signature_header([new, old], "msg_1", timestamp, body)
    assert header.count("v1,") == 2
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(timestamp), "webhook-signature": header}
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers) == {"id": "evt_1"}
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET_PREFIX + base64.b64encode(bytes([3]) * 24).decode()).verify(body, headers)


def test_event_body_and_ping_body() -> None:
    event = {
        "event_id": 42,
        "resource": "tasks",
        "op": "updated",
        "key": "7",
        "account": "acme",
        "occurred_at": datetime(2026, 11, 29, 11, 0, 0, 123456, tzinfo=UTC) + timedelta(hours=0),
        "data": {"id": 7, "title": "new"},
        "previous": {"title": "old"},
    }
    assert event_body(event) == {
        "id": "evt_42",
        "type": "tasks.updated",
        "timestamp": "2026-11-29T11:00:00.123456Z",
        "resource": "tasks",
        "account": "acme",
        "key": "7",
        "data": {"id": 7, "title": "new"},
        "previous": {"title": "old"},
    }
    assert event_body({**event, "account": None})["account"] is None  # a public resource's event
    assert "previous" not in event_body({**event, "op": "created"})
    # The relay reads JSON columns as text: a ping's stored body goes out as stored.
    assert delivery_body({"event_id": None, "body": '{"type": "ping"}'}) == b'{"type": "ping"}'
    assert iso_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"
    ping = ping_body("sub_1", "tasks", "acme")
    assert ping["type"] == "ping" and ping["id"].startswith("evt_ping_") and ping["account"] == "acme"
    assert ping["data"] == {"subscription_id": "sub_1", "resource": "tasks", "message": "rowhook test event"}
    assert ping["timestamp"] == iso_timestamp(datetime.fromisoformat(ping["timestamp"]))


def test_policy_success_retry_exhaustion_and_gone() -> None:
    common = {"retry_after": None, "schedule_s": SCHEDULE, "jitter": 0.0}
    assert decide(attempts_done=1, status_code=204, **common).status == "succeeded"
    retry = decide(attempts_done=1, status_code=500, **common)
    assert (retry.status, retry.retry_in_s) == ("pending", 5.0)
    assert decide(attempts_done=2, status_code=None, **common).retry_in_s == 300.0
    assert decide(attempts_done=3, status_code=500, **common).status == "failed"
    assert decide(attempts_done=1, status_code=302, **common).status == "pending"  # redirects are failures
    gone = decide(attempts_done=1, status_code=410, **common)
    assert gone.status == "failed" and gone.disable_reason and "410" in gone.disable_reason


def test_retry_after_is_honoured_on_429_and_503_only() -> None:
    def retry_in(status: int, header: str | None) -> float | None:
        return decide(
            attempts_done=1, status_code=status, retry_after=header, schedule_s=SCHEDULE, jitter=0.0
        ).retry_in_s

    assert retry_in(429, "120") == 120.0
    assert retry_in(503, "1") == 5.0  # never earlier than the schedule
    assert retry_in(500, "120") == 5.0
    assert retry_in(429, "soon") == 5.0
    assert retry_in(429, str(10**9)) == MAX_RETRY_AFTER_S


def test_retry_after_http_date_and_jitter_bounds() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    rng = random.Random(1)
    spread = [jittered(100.0, 0.2, rng) for _ in range(200)]
    assert 80.0 <= min(spread) < 90.0 and 110.0 < max(spread) <= 120.0


def test_a_failing_subscription_waits_for_its_earliest_retry_at_most_the_maximum() -> None:
    retry = Outcome("pending", retry_in_s=5.0)
    changes = subscription_changes(
        [
            ("sub_a", Outcome("pending", retry_in_s=9.0)),
            ("sub_a", retry),  # the earliest of its retries
            ("sub_b", Outcome("pending", retry_in_s=7200.0)),  # late in the schedule: a minute
            ("sub_c", Outcome("failed")),  # exhausted, nothing retried: probed again at once
            ("sub_d", retry),
            ("sub_d", Outcome("succeeded")),  # a success in the batch: not failing, no wait
        ],
        probe_wait_max_s=60.0,
    )
    assert changes.failing == {"sub_a", "sub_b", "sub_c"} and changes.succeeded == {"sub_d"}
    assert changes.probe_in_s == {"sub_a": 5.0, "sub_b": 60.0}


@pytest.mark.parametrize("op", ["created", "updated", "deleted"])
@pytest.mark.parametrize(
    ("data", "previous"),
    [
        ({"id": 7, "title": 'é \\ " \u2028', "n": 1.5, "tags": ["a", None]}, {"title": "old"}),
        (None, None),
        ({}, {}),
    ],
)
def test_the_relay_splices_json_text_into_exactly_the_event_body(
    op: str, data: dict[str, Any] | None, previous: dict[str, Any] | None
) -> None:
    """delivery_body() takes the row's data as the database's JSON text and does not parse it: what it
    posts must still parse to event_body() of the parsed row, the API's payload of that delivery."""
    event = {
        "event_id": 42,
        "resource": "tasks",
        "op": op,
        "key": "7",
        "account": "acme",
        "occurred_at": datetime(2026, 11, 29, 11, 0, 0, 123456, tzinfo=UTC),
        "data": data,
        "previous": previous,
    }
    as_read = {
        **event,
        "data": None if data is None else json.dumps(data, ensure_ascii=False),
        "previous": None if previous is None else json.dumps(previous),
    }
    posted = delivery_body(as_read)
    assert json.loads(posted) == event_body(event)
    assert list(json.loads(posted)) == list(event_body(event)), "fields in the documented order"
