"""Retry policy: what an attempt's result means for its delivery and its subscription (pure functions, no
I/O): when to retry, and when a subscription is disabled."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from rowhook.statuses import AttemptOutcome

# A Retry-After further out than this is treated as this (a receiver cannot park a delivery for weeks).
MAX_RETRY_AFTER_S = 24 * 3600.0
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410
GONE_REASON = "target answered 410 Gone"
# ASCII digits only: str.isdigit() also accepts digits that float() refuses, such as "²".
DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)


@dataclass(frozen=True)
class Outcome:
    """What to write back for one attempt."""

    status: AttemptOutcome  # 'pending': retry later
    retry_in_s: float | None = None  # for 'pending'
    disable_reason: str | None = None  # set when the subscription must be disabled now


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped at MAX_RETRY_AFTER_S; None
    for anything else. Whatever a receiver sends, this returns and never raises."""
    if not value:
        return None
    value = value.strip()
    if DELTA_SECONDS.fullmatch(value):
        return min(float(value), MAX_RETRY_AFTER_S)  # float(): no digit limit, a huge one is inf
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):  # the year or zone of a date out of range
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def jittered(delay_s: float, jitter: float, rng: random.Random | None = None) -> float:
    """delay_s spread by ±jitter (a fraction), so retries of many deliveries do not arrive in lockstep."""
    if delay_s <= 0 or jitter <= 0:
        return max(delay_s, 0.0)
    return delay_s * (1 + (rng or random).uniform(-jitter, jitter))


def decide(
    *,
    attempts_done: int,
    status_code: int | None,
    retry_after: str | None,
    schedule_s: tuple[float, ...],
    jitter: float,
    rng: random.Random | None = None,
) -> Outcome:
    """Outcome of attempt number `attempts_done` (1-based); schedule_s[i] is the wait before attempt i+1."""
    if status_code is not None and 200 <= status_code < 300:
        return Outcome("succeeded")
    if status_code == GONE:
        return Outcome("failed", disable_reason=GONE_REASON)
    if attempts_done >= len(schedule_s):
        return Outcome("failed")
    delay = jittered(schedule_s[attempts_done], jitter, rng)
    if status_code in RETRY_AFTER_STATUSES:
        asked = parse_retry_after(retry_after)
        if asked is not None:
            delay = max(delay, asked)
    return Outcome("pending", retry_in_s=delay)


@dataclass(frozen=True)
class SubscriptionChanges:
    """What a batch of outcomes means for their subscriptions."""

    succeeded: set[str] = field(default_factory=set)  # a delivery succeeded: no longer failing
    failing: set[str] = field(default_factory=set)  # deliveries failed and none succeeded
    disable: dict[str, str] = field(default_factory=dict)  # to disable now (410), with the reason
    # Of the failing ones whose failed deliveries are retried: seconds until the next probe.
    probe_in_s: dict[str, float] = field(default_factory=dict)


def subscription_changes(
    outcomes: Iterable[tuple[str, Outcome]], probe_wait_max_s: float
) -> SubscriptionChanges:
    """From (subscription id, outcome) pairs of a batch. A failing subscription is probed by one delivery
    at a time: after a failed probe, none of its deliveries is leased until the earliest retry of its
    failed ones, but for no longer than probe_wait_max_s, so that a receiver that is back is found soon
    even late in the retry schedule."""
    changes = SubscriptionChanges()
    failed: set[str] = set()
    retry_in_s: dict[str, float] = {}
    for subscription_id, outcome in outcomes:
        if outcome.status == "succeeded":
            changes.succeeded.add(subscription_id)
        else:
            failed.add(subscription_id)
            if outcome.status == "pending" and outcome.retry_in_s is not None:
                earliest = retry_in_s.get(subscription_id, outcome.retry_in_s)
                retry_in_s[subscription_id] = min(earliest, outcome.retry_in_s)
        if outcome.disable_reason:
            changes.disable[subscription_id] = outcome.disable_reason
    changes.failing.update(failed - changes.succeeded)
    changes.probe_in_s.update(
        (subscription_id, min(seconds, probe_wait_max_s))
        for subscription_id, seconds in retry_in_s.items()
        if subscription_id in changes.failing
    )
    return changes


def failing_too_long(
    *,
    status: str,
    deleted: bool,
    failing_since: datetime | None,
    failing_for_s: float | None,
    disable_after_s: float,
) -> str | None:
    """Why a subscription whose deliveries keep failing is disabled now, or None: an active one is, once
    it has failed continuously (failing_for_s, by the database's clock) for disable_after_s."""
    if status != "active" or deleted or failing_since is None or failing_for_s is None:
        return None
    if failing_for_s < disable_after_s:
        return None
    return f"failing continuously since {failing_since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
