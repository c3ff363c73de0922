"""The demo receiver's signature check agrees with the standardwebhooks library and rejects forgeries."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from rowhook.demo.receiver import latency_since
from rowhook.webhooks import new_secret, verify_signature

SECRET = new_secret()
BODY = b'{"type":"tasks.created","key":"1"}'


def signed(secret: str = SECRET, at: float | None = None) -> tuple[str, str]:
    moment = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign("msg_1", moment, BODY.decode())
    return str(int(moment.timestamp())), signature


def test_a_standard_webhooks_signature_verifies() -> None:
    timestamp, signature = signed()
    assert verify_signature(SECRET, "msg_1", timestamp, signature, BODY)


def test_any_of_several_signatures_verifies_as_during_a_rotation() -> None:
    old = new_secret()
    timestamp, signature = signed()
    _, old_signature = signed(old, at=float(timestamp))
    assert verify_signature(SECRET, "msg_1", timestamp, f"{old_signature} {signature}", BODY)


def test_tampering_a_stale_timestamp_or_the_wrong_secret_fails() -> None:
    timestamp, signature = signed()
    assert not verify_signature(SECRET, "msg_1", timestamp, signature, BODY + b" ")
    assert not verify_signature(SECRET, "msg_2", timestamp, signature, BODY)
    other = new_secret()
    assert not verify_signature(other, "msg_1", timestamp, signature, BODY)
    stale_ts, stale_sig = signed(at=time.time() - 3600)
    assert not verify_signature(SECRET, "msg_1", stale_ts, stale_sig, BODY)
    assert not verify_signature(SECRET, "msg_1", "not-a-number", signature, BODY)
    assert not verify_signature(SECRET, "msg_1", timestamp, "v2," + signature.split(",", 1)[1], BODY)


def test_latency_is_measured_from_the_event_timestamp() -> None:
    assert (
        latency_since("2026-11-29T10:00:00.000000Z", datetime(2026, 11, 29, 10, 0, 1, tzinfo=UTC).timestamp())
        == 1.0
    )
    assert latency_since(None, 0) is None and latency_since("garbage", 0) is None
