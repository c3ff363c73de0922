"""The JSON body of an event delivery, built at send time from its outbox row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def iso_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a Z, e.g. 2026-11-29T10:00:00.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(event: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"evt_{event['event_id']}",
        "type": f"{event['resource']}.{event['op']}",
        "timestamp": iso_timestamp(event["occurred_at"]),
        "resource": event["resource"],
        "key": event["key"],
        "data": event["data"],
    }
    if event["op"] == "updated":
        body["previous"] = event["previous"]
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def delivery_body(delivery: dict[str, Any]) -> bytes:
    """Bytes to POST: a ping's stored body as is, else the event body of the joined outbox row."""
    if delivery["event_id"] is None:
        return encode(delivery["body"])
    return encode(event_body(delivery))
