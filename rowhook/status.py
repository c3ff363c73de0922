"""`rowhook status`: outbox lag, pending and failed deliveries, failing and disabled subscriptions."""

from __future__ import annotations

from typing import Any

import psycopg

from rowhook.db import Row, connect
from rowhook.sqlfiles import query
from rowhook.target_rules import redact_url

FAILING_SHOWN = 20
REFUSED_TARGETS_WITHIN_S = 24 * 3600.0


def read_status(conn: psycopg.Connection[Row]) -> dict[str, Any]:
    summary = conn.execute(query("status_summary")).fetchone()
    assert summary is not None
    failing = conn.execute(query("failing_subscriptions"), {"limit": FAILING_SHOWN}).fetchall()
    refused = conn.execute(query("refused_targets"), {"within_s": REFUSED_TARGETS_WITHIN_S}).fetchone()
    return {**summary, "failing_subscriptions": failing, "refused_targets": refused}


def format_status(status: dict[str, Any]) -> str:
    lag = status["outbox_lag_s"]
    lines = [
        f"outbox lag:             {'none' if lag is None else f'{lag:.1f} s'}"
        f" ({status['undispatched_events']} undispatched events)",
        f"pending deliveries:     {status['pending_deliveries']}",
        f"failed deliveries:      {status['failed_deliveries']}",
        f"held deliveries:        {status['held_deliveries']} (of paused subscriptions)",
        f"subscriptions:          {status['active_subscriptions']} active,"
        f" {status['paused_subscriptions']} paused,"
        f" {status['disabled_subscriptions']} disabled",
        f"relays registered:      {status['relays']}",
    ]
    if status["failing_subscriptions"]:
        lines.append("failing or disabled subscriptions:")
        for sub in status["failing_subscriptions"]:
            why = sub["disabled_reason"] or f"failing since {sub['failing_since']:%Y-%m-%d %H:%M:%S}"
            lines.append(
                f"  {sub['id']}  {sub['account']}  {sub['resource']}  {redact_url(sub['target_url'])}"
                f"  {sub['status']}: {why}"
            )
    refused = status.get("refused_targets")
    if refused and refused["deliveries"]:
        lines.append(
            f"warning: relays refused {refused['deliveries']} deliveries of {refused['subscriptions']}"
            " subscriptions in the last 24 h to targets the API accepted: the relay and the API disagree"
            " about ROWHOOK_ALLOW_PRIVATE_TARGETS (set it on both, or on neither);"
            f" last refusal: {refused['last_error']}"
        )
    return "\n".join(lines)


def print_status(url: str) -> int:
    with connect(url) as conn:
        print(format_status(read_status(conn)))
    return 0
