"""The relay's Prometheus metrics (one registry per relay) and the small HTTP server that exposes them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, get_args

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rowhook import __version__
from rowhook.statuses import AttemptOutcome

log = logging.getLogger("rowhook.relay")

# Why a sleeping relay woke up: a NOTIFY from a writer, its sleep timer ran out (poll interval or the
# next known due time), its LISTEN connection came back (notifications may have been missed), it
# scheduled a retry itself, or a send finished while work was left unclaimed.
WAKE_CAUSES = ("notify", "poll", "reconnect", "retry", "work")
# Attempts end within ROWHOOK_REQUEST_TIMEOUT_S (15 s by default), plus the quick reconnects.
ATTEMPT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
# From milliseconds (a relay keeping up) to hours (relays down, a backlog drained later).
LAG_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
QUERY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def fanned_out_id(event_id: int, subscription_id: str) -> str:
    """The id the fan-out gives a delivery (rowhook.delivery_id without a replay id): a delivery with
    another id for an event is a replay, whose event is old by design and says nothing about lag."""
    return "msg_" + hashlib.md5(f"{event_id}/{subscription_id}".encode()).hexdigest()


class RelayMetrics:
    """The metrics of one relay. Label children are bound once here, so that counting an attempt is a
    counter increment and a histogram observation, with no label lookup."""

    def __init__(self, relay_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge(
            "rowhook_relay_info",
            "This relay: its id and version (always 1)",
            ["relay_id", "version"],
            registry=r,
        ).labels(relay_id=relay_id, version=__version__).set(1)
        attempts = Counter(
            "rowhook_relay_attempts_total",
            "Delivery attempts by the status they leave the delivery in: succeeded, pending (a retry is"
            " scheduled) or failed (given up, dead)",
            ["outcome"],
            registry=r,
        )
        self.attempts = {outcome: attempts.labels(outcome=outcome) for outcome in get_args(AttemptOutcome)}
        self.attempt_seconds = Histogram(
            "rowhook_relay_attempt_duration_seconds",
            "Duration of one delivery attempt (connect, POST, read the answer)",
            buckets=ATTEMPT_BUCKETS_S,
            registry=r,
        )
        self.lag_seconds = Histogram(
            "rowhook_relay_commit_to_send_seconds",
            "From an event's capture in the database to the start of its first delivery attempt"
            " (replays and pings excluded)",
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
        self.in_flight = Gauge("rowhook_relay_in_flight", "Deliveries this relay is sending now", registry=r)
        self.claim_seconds = Histogram(
            "rowhook_relay_claim_duration_seconds",
            "Duration of one claim of due deliveries (scan, lock, lease, load)",
            buckets=QUERY_BUCKETS_S,
            registry=r,
        )
        self.fan_out_seconds = Histogram(
            "rowhook_relay_fan_out_duration_seconds",
            "Duration of one fan-out transaction (claim events, insert deliveries, lease the first)",
            buckets=QUERY_BUCKETS_S,
            registry=r,
        )
        self.events = Counter("rowhook_relay_events_fanned_out_total", "Outbox events fanned out", registry=r)
        self.created = Counter(
            "rowhook_relay_deliveries_created_total", "Deliveries created by fan-out", registry=r
        )
        self.disabled = Counter(
            "rowhook_relay_subscriptions_disabled_total",
            "Subscriptions this relay disabled (410 Gone, or failing for ROWHOOK_DISABLE_AFTER_S)",
            registry=r,
        )
        wakeups = Counter(
            "rowhook_relay_wakeups_total", "Sleeps of the relay loop ended, by cause", ["cause"], registry=r
        )
        self.wakeups = {cause: wakeups.labels(cause=cause) for cause in WAKE_CAUSES}

    def watch_in_flight(self, count: Callable[[], int]) -> None:
        self.in_flight.set_function(count)  # read at scrape time: nothing to do per delivery

    def attempted(self, duration_s: float, outcome: str) -> None:
        self.attempts[outcome].inc()
        self.attempt_seconds.observe(duration_s)

    def starting(self, deliveries: list[dict[str, Any]], fanned_out: bool) -> None:
        """Lag of the first attempts about to start, one clock read per batch. Deliveries fresh from
        fan-out are never replays; claimed ones are checked by id."""
        now = datetime.now(UTC)
        for delivery in deliveries:
            if delivery["attempts"] or delivery["occurred_at"] is None:
                continue  # a retry, or a ping
            if fanned_out or delivery["id"] == fanned_out_id(
                delivery["event_id"], delivery["subscription_id"]
            ):
                self.lag_seconds.observe(max((now - delivery["occurred_at"]).total_seconds(), 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """GET /metrics over HTTP in the relay's event loop (aiohttp, which the relay already uses to send)."""

    def __init__(self, metrics: RelayMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port  # the bound port once started (port 0 picks a free one)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        self.port = int(self._runner.addresses[0][1])
        log.info("relay metrics on http://%s:%d/metrics", self.host, self.port)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
