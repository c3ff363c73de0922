"""The webhook contract (Standard Webhooks v1): secrets, signatures and the JSON body of each push.

One home for what the API mints and stores (secrets, ping bodies), what the relay sends (event bodies,
signature headers) and what a receiver checks (signatures): the API, the relay, the demo receiver, the
benchmarks and the tests all use these functions. docs/payload.md describes the same contract.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
# Standard Webhooks receivers refuse timestamps further than this from their clock (replay protection).
TIMESTAMP_TOLERANCE_S = 300


# -- secrets and signatures -------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The raw key behind a 'whsec_<base64>' secret; ValueError when it is not base64."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def _digest(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """base64 of HMAC-SHA256("id.timestamp.body"), the timestamp as it stands in the header."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    return "v1," + _digest(secret_key(secret), message_id, str(timestamp), body)


def signature_header(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: one 'v1,<sig>' per live secret (two during a rotation)."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets)


def verify_signature(
    secret: str, msg_id: str, timestamp: str, signatures: str, body: bytes, *, now: float | None = None
) -> bool:
    """True when one of the space-separated 'v1,<base64>' signatures is HMAC-SHA256("id.timestamp.body")."""
    try:
        sent_at = int(timestamp)
        key = secret_key(secret)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > TIMESTAMP_TOLERANCE_S:
        return False
    expected = _digest(key, msg_id, timestamp, body)
    for candidate in signatures.split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


# -- headers ---------------------------------------------------------------------------------------

# Headers rowhook sets itself (the body, its signature, the connection) and hop-by-hop headers, which
# belong to one connection and not to the push: a subscription's own headers may not name them.
OWNED_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "host", "user-agent"})
OWNED_HEADER_PREFIX = "webhook-"
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def reserved_header(name: str) -> str | None:
    """Why a subscription may not set this header (None if it may)."""
    lowered = name.lower()
    if lowered in OWNED_HEADERS or lowered.startswith(OWNED_HEADER_PREFIX):
        return "is set by rowhook itself"
    if lowered in HOP_BY_HOP_HEADERS:
        return "is a hop-by-hop header"
    return None


# -- bodies -----------------------------------------------------------------------------------------


def iso_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a Z, e.g. 2026-11-29T10:00:00.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_head(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of an event body that precede its row data, in order."""
    return {
        "id": f"evt_{event['event_id']}",
        "type": f"{event['resource']}.{event['op']}",
        "timestamp": iso_timestamp(event["occurred_at"]),
        "resource": event["resource"],
        "account": event["account"],
        "key": event["key"],
    }


def event_body(event: dict[str, Any]) -> dict[str, Any]:
    """The body of an event delivery, from its joined outbox row."""
    body = event_head(event)
    body["data"] = event["data"]
    if event["op"] == "updated":
        body["previous"] = event["previous"]
    return body


def ping_body(subscription_id: str, resource: str, account: str) -> dict[str, Any]:
    """The complete body of a test ping, shaped like an event body; the API stores it as it is sent.
    It belongs to the subscription's account."""
    return {
        "id": f"evt_ping_{uuid.uuid4().hex}",
        "type": "ping",
        "timestamp": iso_timestamp(datetime.now(UTC)),
        "account": account,
        "data": {"subscription_id": subscription_id, "resource": resource, "message": "rowhook test event"},
    }


# One encoder for every body (json.dumps() builds a new one per call when given options).
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def delivery_body(delivery: dict[str, Any]) -> bytes:
    """Bytes to POST, from a delivery as the relay reads it, its JSON columns (body, data, previous) as
    JSON text: a ping's stored body as is, else event_body() of the joined outbox row, with the row's
    data spliced in as it came from the database (parsing and re-encoding it cost more than the rest)."""
    if delivery["event_id"] is None:
        return str(delivery["body"]).encode()
    parts = [_encode_json(event_head(delivery))[:-1], ',"data":', delivery["data"] or "null"]
    if delivery["op"] == "updated":
        parts += [',"previous":', delivery["previous"] or "null"]
    parts.append("}")
    return "".join(parts).encode()
