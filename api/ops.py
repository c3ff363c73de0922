"""Operations routes: /health (with a database check) and /metrics (Prometheus), plus request metrics."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from litestar import Controller, MediaType, Response, get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from api.auth import EXCLUDE_FROM_AUTH
from api.database import ConnDep, pool_of
from api.errors import UNAVAILABLE, ApiError, SchemaBehind, Unauthorized, responses
from api.schemas import Health
from api.store import fetch_optional
from rowhook.preflight import required_schema_version, schema_problem
from rowhook.statuses import SUBSCRIPTION_STATUSES

HEALTH_POOL_WAIT_S = 2.0
# status_summary column -> gauge name and help.
SUMMARY_GAUGES: dict[str, tuple[str, str]] = {
    "outbox_lag_s": (
        "rowhook_outbox_lag_seconds",
        "Age of the oldest undispatched outbox event (0 when none)",
    ),
    "undispatched_events": ("rowhook_outbox_undispatched_events", "Outbox events not fanned out yet"),
    "pending_deliveries": ("rowhook_deliveries_pending", "Deliveries pending or in flight"),
    "failed_deliveries": ("rowhook_deliveries_failed", "Deliveries that failed for good"),
    "held_deliveries": ("rowhook_deliveries_held", "Deliveries held by paused subscriptions"),
    "relays": ("rowhook_relays", "Registered relay processes"),
}


@dataclass
class Metrics:
    """One registry per app, so that several apps in one process (tests) do not collide."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self.requests = Counter(
            "rowhook_api_requests",
            "API requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rowhook_api_request_duration_seconds",
            "API request latency by route",
            ["method", "route"],
            registry=self.registry,
        )
        self.gauges = {
            column: Gauge(name, help_text, registry=self.registry)
            for column, (name, help_text) in SUMMARY_GAUGES.items()
        }
        self.subscriptions = Gauge(
            "rowhook_subscriptions", "Live subscriptions by status", ["status"], registry=self.registry
        )

    def read_summary(self, summary: dict[str, Any]) -> None:
        for column, gauge in self.gauges.items():
            gauge.set(summary[column] or 0)
        for status in SUBSCRIPTION_STATUSES:
            self.subscriptions.labels(status=status).set(summary[f"{status}_subscriptions"])


def require_metrics_token(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    expected = connection.app.state.settings.metrics_token
    if not expected:
        return
    scheme, _, token = (connection.headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <ROWHOOK_METRICS_TOKEN>'")


def status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, ApiError):
        return int(exc.status)
    return 500


class MetricsMiddleware:
    """Counts requests and times them by route template (/subscriptions/{subscription_id}), not raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        metrics: Metrics = scope["litestar_app"].state.metrics
        route = scope.get("path_template") or "unmatched"
        method = scope["method"]
        status = 500
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        except Exception as exc:  # answered by the app's exception handlers further out
            status = status_of(exc)
            raise
        finally:
            metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            metrics.latency.labels(method=method, route=route).observe(time.perf_counter() - started)


class OpsController(Controller):
    tags = ["operations"]

    @get(
        "/health",
        operation_id="health",
        summary="Liveness, database and schema version check (no token needed)",
        description="503 when the database is unreachable or its rowhook schema is older than this"
        " rowhook needs (run `rowhook migrate`).",
        opt={EXCLUDE_FROM_AUTH: True},
        security=[],
        responses=UNAVAILABLE,
    )
    async def health(self, state: State) -> Health:
        async with pool_of(state).connection(timeout=HEALTH_POOL_WAIT_S) as conn:
            installed = await fetch_optional(conn, "schema_installed")
            version = 0
            if installed and installed["installed"]:
                row = await fetch_optional(conn, "schema_version")
                version = int(row["version"]) if row else 0
            dbname = conn.info.dbname
        needed = required_schema_version()
        if problem := schema_problem(dbname, version, needed):
            raise SchemaBehind(problem)
        return Health(status="ok", database="ok", schema_version=version, schema_needed=needed)

    @get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics: requests, latency, delivery gauges (all accounts)",
        description="Takes no account token: it needs `Authorization: Bearer $ROWHOOK_METRICS_TOKEN` when"
        " that setting is given, and is open otherwise (restrict it by network).",
        media_type=MediaType.TEXT,
        opt={EXCLUDE_FROM_AUTH: True},
        security=[],
        responses=responses(),
        guards=[require_metrics_token],
    )
    async def metrics(self, conn: ConnDep, state: State) -> Response[bytes]:
        summary = await fetch_optional(conn, "status_summary")
        metrics: Metrics = state.metrics
        metrics.read_summary(summary or {})
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
