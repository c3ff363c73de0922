"""The extra headers a subscription sends with its pushes: which are allowed, and how they are shown."""

from __future__ import annotations

import re

from api.errors import Unprocessable
from api.schemas import MAX_HEADERS_BYTES
from rowhook.webhooks import reserved_header

# RFC 9110 token: what a field name may be made of.
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Visible ASCII, space and tab: a field value with no control character (CR, LF, NUL: header injection)
# and nothing a client library might encode differently.
FIELD_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
# Authentication scheme words that stay readable in a masked value ("Bearer ****abcd").
SCHEMES = frozenset({"basic", "bearer", "digest", "token", "apikey", "api-key", "key", "hmac", "dpop"})
MASK = "****"
# Values at least this long show their last SHOWN_CHARS characters; shorter ones are masked entirely.
SHOW_TAIL_FROM_CHARS = 8
SHOWN_CHARS = 4


def refusal(name: str, value: str) -> str | None:
    """Why a header may not be set (None if it may)."""
    if not TOKEN.fullmatch(name):
        return "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    if (why := reserved_header(name)) is not None:
        return f"{why} and cannot be chosen"
    if not value:
        return "must have a value"
    if not FIELD_VALUE.fullmatch(value):
        return "value must be printable ASCII (no CR, LF, NUL or other control characters)"
    if value != value.strip(" \t"):
        return "value must not begin or end with whitespace"
    if MASK in value:
        return "value looks masked (****): send the whole value, as a PATCH replaces every header"
    return None


def check_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The headers to store; Unprocessable naming the first header refused."""
    seen: set[str] = set()
    size = 0
    for name, value in (headers or {}).items():
        field = f"headers.{name}"
        if (reason := refusal(name, value)) is not None:
            raise Unprocessable(f"header {name!r} {reason}", field=field)
        if name.lower() in seen:
            raise Unprocessable(f"header {name!r} is given twice (names are case-insensitive)", field=field)
        seen.add(name.lower())
        size += len(name) + len(value)
    if size > MAX_HEADERS_BYTES:
        raise Unprocessable(
            f"headers may take at most {MAX_HEADERS_BYTES} bytes of names and values together",
            field="headers",
        )
    return dict(headers or {})


def mask(value: str) -> str:
    """A header value as shown back: a scheme word stays, the last characters of a long secret too."""
    scheme, space, secret = value.partition(" ")
    if space and scheme.lower() in SCHEMES:
        return f"{scheme} {mask(secret.lstrip(' '))}"
    if len(value) >= SHOW_TAIL_FROM_CHARS:
        return MASK + value[-SHOWN_CHARS:]
    return MASK


def masked(headers: dict[str, str] | None) -> dict[str, str]:
    return {name: mask(value) for name, value in (headers or {}).items()}
