"""Standard Webhooks v1 signatures: HMAC-SHA256 of "id.timestamp.body" with the whsec_ secret."""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The raw key behind a 'whsec_<base64>' secret."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: one 'v1,<sig>' per live secret (two during a rotation)."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets)
