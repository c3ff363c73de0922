"""Counters for the relay's periodic summary line (successes are counted, never logged one by one)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class Stats:
    events: int = 0
    deliveries_created: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    subscriptions_disabled: int = 0

    def line(self, in_flight: int) -> str:
        counts = " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))
        return f"relay summary: {counts} in_flight={in_flight}"

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)
