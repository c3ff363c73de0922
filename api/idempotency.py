"""Idempotency-Key on POST /subscriptions and POST /hooks: a retried create answers its first result."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import msgspec
from litestar import Response
from litestar.params import HeaderParameter
from psycopg.types.json import Jsonb

from api.database import Conn, LazyConn
from api.errors import Conflict, Unprocessable
from api.schemas import SubscriptionOut
from api.store import execute, fetch_optional
from rowhook.prune import KEEP_IDEMPOTENCY_KEYS_S

HEADER = "Idempotency-Key"
# Stripe's limits: up to 255 characters; printable ASCII, as a header value can carry it unchanged.
_VALID_KEY = re.compile(r"[ -~]{1,255}")
# Set on an answer that repeats the stored first one (as Stripe does).
REPLAYED_HEADER = "idempotent-replayed"

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name=HEADER,
        required=False,
        description="any 1-255 printable ASCII characters, unique per create request of this account:"
        " a retry with the same key and body within 24 h answers the first result (same id and"
        " secret) instead of creating again; the same key with another body is a 422",
    ),
]


def checked_key(key: str | None) -> str | None:
    if key is not None and not _VALID_KEY.fullmatch(key):
        raise Unprocessable("must be 1 to 255 printable ASCII characters", field=HEADER)
    return key


def fingerprint(request_line: str, body: msgspec.Struct) -> bytes:
    """SHA-256 of the method and path and of the body as parsed (so key order and spacing do not count)."""
    canonical = json.dumps(msgspec.to_builtins(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{request_line}\n{canonical}".encode()).digest()


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Replayed(Exception):
    """The key was used before with this very request: its stored answer is the answer."""

    def __init__(self, answer: SubscriptionOut, status_code: int) -> None:
        super().__init__("idempotent replay")
        self.answer = answer
        self.status_code = status_code


@dataclass(frozen=True)
class KeyClaim:
    account: str
    key: str
    request_line: str
    fingerprint: bytes

    def params(self) -> dict[str, object]:
        return {"account": self.account, "key": self.key, "keep_s": KEEP_IDEMPOTENCY_KEYS_S}

    async def claim(self, conn: Conn) -> None:
        """Take the key for this request, or raise what a repeated key answers (it waits for a
        concurrent request holding the key to finish)."""
        params = {**self.params(), "fingerprint": self.fingerprint}
        if await fetch_optional(conn, "api_claim_idempotency_key", params) is not None:
            return
        stored = await fetch_optional(conn, "api_idempotent_answer", self.params())
        if stored is None:  # its retention ended between the two statements
            raise Conflict(f"{HEADER} {self.key!r} is being reused; retry the request")
        if bytes(stored["fingerprint"]) != self.fingerprint:
            raise Unprocessable(
                f"{self.key!r} was already used in the last 24 h with another request; a new request"
                f" ({self.request_line} with this body) needs a new key",
                field=HEADER,
            )
        answer = {**stored["response"], **({"secret": stored["secret"]} if stored["secret"] else {})}
        raise Replayed(msgspec.convert(answer, SubscriptionOut), stored["status_code"])

    async def store(self, conn: Conn, answer: SubscriptionOut, status_code: int) -> None:
        """Kept without the secret (see api_idempotent_answer), in the transaction that created."""
        response = msgspec.to_builtins(answer)
        secret = response.pop("secret", None)
        await execute(
            conn,
            "api_store_idempotent_answer",
            {
                **self.params(),
                "status_code": status_code,
                "response": Jsonb(response),
                "subscription_id": answer.id,
                "secret_sha256": sha256(secret) if secret else None,
            },
        )


async def create_once(
    lazy_conn: LazyConn,
    account: str,
    key: str | None,
    request_line: str,
    body: msgspec.Struct,
    create: Callable[[], Awaitable[SubscriptionOut]],
) -> Response[SubscriptionOut]:
    """Run `create` (which takes its connection from `lazy_conn`) at most once per key: the key is
    claimed on that connection before anything is written, and the answer stored in the same
    transaction, so a retry, even a concurrent one, gets the first answer and creates nothing."""
    key = checked_key(key)
    if key is None:
        return Response(await create(), status_code=201)
    claim = KeyClaim(account, key, request_line, fingerprint(request_line, body))
    lazy_conn.when_taken = claim.claim
    try:
        answer = await create()
    except Replayed as replay:
        return Response(replay.answer, status_code=replay.status_code, headers={REPLAYED_HEADER: "true"})
    await claim.store(await lazy_conn(), answer, 201)
    return Response(answer, status_code=201)
