"""The HTTP side: signed POSTs with aiohttp through an SSRF-guarded resolver, one attempt at a time."""

from __future__ import annotations

import asyncio
import errno
import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay

from relay.retrying import Backoff
from rowhook import __version__
from rowhook.settings import Settings
from rowhook.target_rules import (
    TargetRefused,
    blocked_reason,
    check_address,
    check_url_shape,
    literal_address,
)
from rowhook.webhooks import delivery_body, reserved_header, signature_header

USER_AGENT = f"rowhook/{__version__}"
# Short in-process retries of errors where nothing reached the receiver (refused, reset before a response).
QUICK_RETRIES = 3
QUICK_RETRY_BACKOFF = Backoff(base_s=0.05, max_s=0.5, jitter_s=1.0)
QUICK_RETRY_FIRST_WAIT_S = 0.05
# An internal error's text is a diagnosis, not a dump: its traceback goes to the log.
ERROR_TEXT_MAX_CHARS = 1000
# A subscription's header values are secrets: recorded text (errors, a receiver echoing them in its
# answer) shows them as this. Shorter values are left alone: masking them would garble the text.
SCRUBBED = "****"
SCRUB_FROM_CHARS = 4


@dataclass(frozen=True)
class Attempt:
    """What one attempt did: a status code, or an error, and the first bytes of the response."""

    attempted_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class GuardedResolver(AbstractResolver):
    """Resolves names and keeps only allowed addresses, so the connection goes to a checked address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if blocked_reason(r["host"]) is None]
        if not allowed:
            if not results:
                raise TargetRefused(f"{host.rstrip('.')!r} resolves to no address")
            check_address(host.rstrip("."), results[0]["host"])
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures worth retrying at once; never SSRF refusals or TLS errors."""
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorDNSError):
        return False
    if isinstance(exc, aiohttp.ClientConnectorError):
        return not isinstance(exc.os_error, TargetRefused)
    if isinstance(exc, aiohttp.ClientOSError):  # reset before the response began (mid-body: a payload error)
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)
    return isinstance(exc, aiohttp.ServerDisconnectedError)


def describe(exc: BaseException, settings: Settings) -> str:
    return printable_text(_describe(exc, settings))


def internal_error(exc: BaseException) -> str:
    """The error recorded for an attempt that failed inside the relay rather than at the receiver."""
    return printable_text(f"internal error: {type(exc).__name__}: {exc}")[:ERROR_TEXT_MAX_CHARS]


def _describe(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {settings.request_timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, TargetRefused):
        return f"refused target: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed: {exc.os_error or exc}"
    # These two quote the URL, whose query may hold the receiver's key: the error is logged.
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: {exc.status}, message={exc.message!r}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"{type(exc).__name__}: {exc.description or 'invalid URL'}"
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


async def read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = await content.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def printable(raw: bytes) -> str:
    return printable_text(raw.decode("utf-8", errors="replace"))


def printable_text(text: str) -> str:
    """Text a PostgreSQL text column accepts: error messages may quote what a receiver sent."""
    return text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")


def secret_values(delivery: dict[str, Any]) -> list[str]:
    """The subscription's header values worth scrubbing, longest first (one may contain another)."""
    values = (delivery.get("headers") or {}).values()
    return sorted({v for v in values if len(v) >= SCRUB_FROM_CHARS}, key=len, reverse=True)


def scrub(text: str | None, secrets: list[str]) -> str | None:
    """`text` without the subscription's header values, before it is recorded or logged."""
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, SCRUBBED)
        # A captured answer cut short may end with the start of one.
        for length in range(len(secret) - 1, SCRUB_FROM_CHARS - 1, -1):
            if text.endswith(secret[:length]):
                text = text[:-length] + SCRUBBED
                break
    return text


class Sender:
    """A keep-alive aiohttp session; open() and close() inside the relay's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.relay_concurrency,
            limit_per_host=0,
            resolver=None if self.settings.allow_private_targets else GuardedResolver(),
        )
        timeout = aiohttp.ClientTimeout(
            total=self.settings.request_timeout_s, sock_connect=self.settings.connect_timeout_s
        )
        # No cookie jar: a cookie one receiver sets is not sent to the next (another subscription's,
        # perhaps another account's, on the same host); and none is looked up per request.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"user-agent": USER_AGENT},
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    @functools.lru_cache(maxsize=4096)  # the same few URLs, checked before every attempt
    def refusal(url: str) -> str | None:
        """Why a URL is refused before connecting: its shape, or a host that is an IP literal (aiohttp
        does not pass those through the resolver). Names are checked by GuardedResolver."""
        try:
            host = check_url_shape(url, allow_private=False)
            if (address := literal_address(host)) is not None:
                check_address(host, address)
        except TargetRefused as exc:
            return str(exc)
        return None

    def headers(self, delivery: dict[str, Any], body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        secrets = [delivery["secret"]]
        if delivery["previous_secret"]:  # during a rotation the old secret signs too
            secrets.append(delivery["previous_secret"])
        # The API refuses reserved names; one written into the table by hand is not sent either.
        own = {k: v for k, v in (delivery.get("headers") or {}).items() if reserved_header(k) is None}
        return {
            **own,
            "content-type": "application/json",
            "webhook-id": delivery["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, delivery["id"], timestamp, body),
        }

    async def send(self, delivery: dict[str, Any]) -> Attempt:
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()

        secrets = secret_values(delivery)

        def finished(error: str | None = None, response_body: str | None = None, **fields: Any) -> Attempt:
            duration_ms = int((time.perf_counter() - started) * 1000)
            return Attempt(
                attempted_at=attempted_at,
                duration_ms=duration_ms,
                error=scrub(error, secrets),
                response_body=scrub(response_body, secrets),
                **fields,
            )

        url = delivery["target_url"]
        if not self.settings.allow_private_targets and (refusal := self.refusal(url)):
            return finished(error=f"refused target: {refusal}")
        if not delivery["has_event"]:
            return finished(error=f"event {delivery['event_id']} is no longer in the outbox (pruned)")
        body = delivery_body(delivery)
        headers = self.headers(delivery, body)
        try:
            try:
                status, captured, retry_after = await self._post(url, body, headers)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                status, captured, retry_after = await self._post_again(url, body, headers)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            return finished(error=describe(exc, self.settings))
        return finished(status_code=status, response_body=printable(captured), retry_after=retry_after)

    async def _post_again(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, str | None]:
        """Short in-process retries after a transient connection error (tenacity stays off the happy path)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(QUICK_RETRIES - 1) | stop_after_delay(self.settings.connect_timeout_s),
            wait=QUICK_RETRY_BACKOFF,
            reraise=True,
        ):
            with attempt:
                await asyncio.sleep(QUICK_RETRY_FIRST_WAIT_S)
                return await self._post(url, body, headers)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        assert self._session is not None, "Sender.open() was not called"
        async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            captured = await read_capped(response.content, self.settings.response_capture_bytes)
            return response.status, captured, response.headers.get("Retry-After")
