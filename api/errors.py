"""Every error a request can meet, answered as application/problem+json (RFC 9457) in one place."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
import psycopg
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from psycopg_pool import PoolTimeout

from rowhook.errors import DatabaseUnavailable

log = logging.getLogger("rowhook.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
# msgspec ends its messages with the JSON path of the culprit: "Expected `str`, got `int` - at `$.events[0]`".
_MSGSPEC_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


class FieldError(msgspec.Struct):
    field: str
    reason: str


class Problem(msgspec.Struct, omit_defaults=True):
    """An error answer: `detail` says what to change; `errors` lists each offending field."""

    status: int
    title: str
    detail: str
    type: str = "about:blank"
    errors: list[FieldError] = msgspec.field(default_factory=list)


class ApiError(Exception):
    """An error meant for the client; `field` names the part of the request it is about."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def headers(self) -> dict[str, str] | None:
        return None


class Unauthorized(ApiError):
    status = HTTPStatus.UNAUTHORIZED

    def headers(self) -> dict[str, str] | None:
        return {"www-authenticate": 'Bearer realm="rowhook"'}


class Forbidden(ApiError):
    status = HTTPStatus.FORBIDDEN


class NotFound(ApiError):
    status = HTTPStatus.NOT_FOUND


class Conflict(ApiError):
    status = HTTPStatus.CONFLICT


class Unprocessable(ApiError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class BadRequest(ApiError):
    status = HTTPStatus.BAD_REQUEST


class TooManyRequests(ApiError):
    """Over a quota; `retry_after_s` is when the next use will be allowed, if waiting helps at all."""

    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after_s is None else {"retry-after": str(self.retry_after_s)}


class SchemaBehind(ApiError):
    """The database's rowhook schema is older than this rowhook needs: `rowhook migrate` fixes it."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


def problem_response(
    status: int, detail: str, errors: list[FieldError] | None = None, headers: dict[str, str] | None = None
) -> Response[Problem]:
    body = Problem(status=status, title=HTTPStatus(status).phrase, detail=detail, errors=errors or [])
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def field_error_of(message: str, key: str | None, source: str | None) -> FieldError:
    """Turn one Litestar/msgspec validation message into a field name and a reason."""
    match = _MSGSPEC_PATH.match(message.strip())
    reason = match["reason"] if match else message
    path = match["path"] if match and match["path"] is not None else None
    if unknown := _UNKNOWN_FIELD.search(reason):
        field = ".".join(filter(None, [path, unknown["field"]]))
        return FieldError(field=field, reason="unknown field; this API refuses fields it does not know")
    if missing := _MISSING_FIELD.search(reason):
        return FieldError(field=".".join(filter(None, [path, missing["field"]])), reason="required")
    field = path or key or source or "request"
    return FieldError(field=field, reason=reason)


def handle_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [
        field_error_of(str(e.get("message", "")), e.get("key"), e.get("source"))
        for e in extra
        if isinstance(e, dict)
    ]
    if not errors:
        errors = [field_error_of(exc.detail, None, None)]
    detail = "; ".join(f"{e.field}: {e.reason}" for e in errors)
    return problem_response(HTTPStatus.BAD_REQUEST, detail, errors)


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    detail = (
        exc.detail
        if exc.detail and exc.detail != HTTPStatus(exc.status_code).phrase
        else {
            404: "no such route; see /schema for the routes of this API",
            405: "method not allowed on this route; see /schema",
        }.get(exc.status_code, exc.detail)
    )
    return problem_response(exc.status_code, detail, headers=exc.headers)


def handle_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Problem]:
    errors = [FieldError(field=exc.field, reason=exc.detail)] if exc.field else []
    detail = f"{exc.field}: {exc.detail}" if exc.field else exc.detail
    return problem_response(exc.status, detail, errors, exc.headers())


def handle_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.warning("database unavailable: %s", exc)
    return problem_response(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "the database is unavailable; retry shortly",
        headers={"retry-after": "5"},
    )


def handle_concurrent_change(_: Request[Any, Any, Any], exc: psycopg.Error) -> Response[Problem]:
    # A relay changed the same delivery at the same moment (e.g. finished it, moving its row from
    # the queue to the log, 0015): nothing was written; the same request again sees the new state.
    log.info("request rolled back by a concurrent change: %s", exc)
    return problem_response(
        HTTPStatus.CONFLICT,
        "changed by the relay at the same moment; nothing was done, retry the request",
        headers={"retry-after": "1"},
    )


def handle_data_error(_: Request[Any, Any, Any], exc: psycopg.DataError) -> Response[Problem]:
    # Safety net: inputs are checked before they reach SQL; one that slipped through is still a 400.
    log.warning("database refused a value from a request: %s", exc)
    return problem_response(
        HTTPStatus.BAD_REQUEST,
        "a value in the request is not valid here (e.g. a NUL character or an out-of-range number)",
    )


def handle_too_large(
    _: Request[Any, Any, Any], exc: psycopg.errors.ProgramLimitExceeded
) -> Response[Problem]:
    # Safety net: sizes are bounded before they reach SQL (e.g. filter values, an index key).
    log.warning("database refused a value from a request as too large: %s", exc)
    return problem_response(HTTPStatus.BAD_REQUEST, "a value in the request is too large to be stored")


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    # A 500 is a bug in rowhook: log it loudly, tell the client nothing internal.
    log.exception("unexpected error while answering a request", exc_info=exc)
    return problem_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; it has been logged")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ValidationException: handle_validation,
    HTTPException: handle_http,
    ApiError: handle_api_error,
    psycopg.DataError: handle_data_error,
    psycopg.errors.ProgramLimitExceeded: handle_too_large,  # an OperationalError, but not an outage
    # OperationalErrors too, but not outages: the server rolled back for a concurrent change.
    psycopg.errors.TransactionRollback: handle_concurrent_change,
    psycopg.errors.SerializationFailure: handle_concurrent_change,
    psycopg.errors.DeadlockDetected: handle_concurrent_change,
    psycopg.OperationalError: handle_unavailable,
    PoolTimeout: handle_unavailable,
    DatabaseUnavailable: handle_unavailable,
    Exception: handle_unexpected,
}


def problem_spec(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
    )


BAD_REQUEST = {
    400: problem_spec("The request does not match the schema (unknown field, wrong type, bad cursor)")
}
UNAUTHORIZED = {401: problem_spec("Missing, malformed, unknown, revoked or expired bearer token")}
FORBIDDEN = {403: problem_spec("The token lacks the scope this route needs (read: GET; manage: the rest)")}
NOT_FOUND = {404: problem_spec("No such object for this account")}
CONFLICT = {409: problem_spec("The object is not in a state that allows this")}
UNPROCESSABLE = {
    422: problem_spec(
        "Well-formed but refused, e.g. a private target URL or a filter on a "
        "column that is not a scope column"
    )
}
UNAVAILABLE = {503: problem_spec("The database is unavailable (or, on /health, its schema is too old)")}
TOO_MANY = {
    429: problem_spec(
        "Over an account quota (subscriptions, pings or replays per minute); the detail names the limit"
        " and its setting, and Retry-After says when to try again when waiting helps"
    )
}


def responses(*groups: dict[int, ResponseSpec]) -> dict[int, ResponseSpec]:
    """The documented error answers of a route: always 400, 401, 403 and 503, plus the groups given."""
    merged: dict[int, ResponseSpec] = {**BAD_REQUEST, **UNAUTHORIZED, **FORBIDDEN, **UNAVAILABLE}
    for group in groups:
        merged.update(group)
    return merged
