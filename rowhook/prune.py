"""`rowhook prune`: batched deletion of finished deliveries and old dispatched outbox events."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from rowhook.db import Row, connect
from rowhook.settings import Settings
from rowhook.sqlfiles import query

DEFAULT_BATCH_SIZE = 5000
# Quota uses count over the last minute; older ones are kept this long, then pruned.
KEEP_QUOTA_USES_S = 3600.0
# An Idempotency-Key answers its first result for this long (api/idempotency.py), then it is pruned.
KEEP_IDEMPOTENCY_KEYS_S = 24 * 3600.0


@dataclass(frozen=True)
class Retention:
    """How long to keep things, in seconds."""

    succeeded_s: float
    failed_s: float

    @property
    def deleted_subscriptions_s(self) -> float:
        """A deleted subscription goes once the longest retention has passed since its deletion."""
        return max(self.succeeded_s, self.failed_s)

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Retention:
        succeeded = args.older_than if args.older_than is not None else settings.keep_succeeded_s
        if args.failed_older_than is not None:
            failed = args.failed_older_than
        else:
            # Failed deliveries are never kept for less time than succeeded ones unless asked explicitly.
            failed = max(settings.keep_failed_s, succeeded)
        return cls(succeeded_s=succeeded, failed_s=failed)


@dataclass
class PruneCounts:
    succeeded_deliveries: int = 0
    failed_deliveries: int = 0
    deleted_subscriptions: int = 0
    events: int = 0
    idempotency_keys: int = 0


def _delete_in_batches(
    conn: psycopg.Connection[Row], name: str, cutoff: datetime, batch_size: int, **params: Any
) -> int:
    total = 0
    while True:
        with conn.transaction():
            deleted = conn.execute(
                query(name), {"cutoff": cutoff, "batch_size": batch_size, **params}
            ).rowcount
        total += deleted
        if deleted < batch_size:
            return total


def _prune_events(conn: psycopg.Connection[Row], cutoff: datetime, batch_size: int) -> int:
    total, after_id = 0, 0
    while True:
        with conn.transaction():
            row = conn.execute(
                query("prune_outbox_events"),
                {"cutoff": cutoff, "batch_size": batch_size, "after_id": after_id},
            ).fetchone()
        assert row is not None
        total += row["deleted"]
        if row["last_id"] is None:
            return total
        after_id = row["last_id"]


def prune(
    url: str, retention: Retention, *, batch_size: int = DEFAULT_BATCH_SIZE, now: datetime | None = None
) -> PruneCounts:
    """Delete, batch by batch, what is older than the retention; each batch commits on its own."""
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    now = now or datetime.now(UTC)
    succeeded_cutoff = now - timedelta(seconds=retention.succeeded_s)
    failed_cutoff = now - timedelta(seconds=retention.failed_s)
    deleted_cutoff = now - timedelta(seconds=retention.deleted_subscriptions_s)
    counts = PruneCounts()
    with connect(url, autocommit=True, role="prune") as conn:
        # Deliveries first: an event is deleted only once no pending, in-flight or failed delivery needs it.
        counts.succeeded_deliveries = _delete_in_batches(
            conn, "prune_deliveries", succeeded_cutoff, batch_size, statuses=["succeeded", "cancelled"]
        )
        counts.failed_deliveries = _delete_in_batches(
            conn, "prune_deliveries", failed_cutoff, batch_size, statuses=["failed"]
        )
        counts.deleted_subscriptions = _delete_in_batches(
            conn, "prune_deleted_subscriptions", deleted_cutoff, batch_size
        )
        counts.events = _prune_events(conn, succeeded_cutoff, batch_size)
        quota_cutoff = now - timedelta(seconds=KEEP_QUOTA_USES_S)
        _delete_in_batches(conn, "prune_quota_uses", quota_cutoff, batch_size)
        keys_cutoff = now - timedelta(seconds=KEEP_IDEMPOTENCY_KEYS_S)
        counts.idempotency_keys = _delete_in_batches(conn, "prune_idempotency_keys", keys_cutoff, batch_size)
    return counts


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} d" if seconds >= 86400 else f"{seconds:g} s"


def run_prune(url: str, args: argparse.Namespace, settings: Settings) -> int:
    if args.batch_size < 1:
        print("rowhook: --batch-size must be at least 1", file=sys.stderr)
        return 2
    retention = Retention.from_args(args, settings)
    counts = prune(url, retention, batch_size=args.batch_size)
    kept, kept_failed = _days(retention.succeeded_s), _days(retention.failed_s)
    print(
        f"deleted {counts.succeeded_deliveries} succeeded/cancelled deliveries older than {kept},"
        f" {counts.failed_deliveries} failed deliveries older than {kept_failed},"
        f" {counts.deleted_subscriptions} subscriptions deleted more than"
        f" {_days(retention.deleted_subscriptions_s)} ago,"
        f" {counts.events} dispatched events older than {kept},"
        f" {counts.idempotency_keys} idempotency keys older than {_days(KEEP_IDEMPOTENCY_KEYS_S)}"
    )
    return 0
