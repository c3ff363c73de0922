"""Flatness: one relay's steady delivery rate draining a large backlog, as a ratio to a small one; with
PostgreSQL and relay CPU per 1,000 deliveries and the bytes each finished delivery keeps on disk."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.common import (
    PgCpuSampler,
    ReceiverProcess,
    RelayProcess,
    Result,
    Subscription,
    add_subscriptions,
    bench_database,
    bench_server,
    bookkeeping_bytes,
    connect,
    create_tasks,
    insert_tasks,
    parse_args,
    steady_rate,
)

GOAL_RATIO = 0.8
GOAL_BYTES = 400
CONCURRENCY = 64  # the relay's default ROWHOOK_RELAY_CONCURRENCY, and the subscription's max_in_flight
# Once every outcome is written the relay stays up this long, idle, as it would in production: its
# housekeeping after a burst (the delivery queue's rebuild) is part of what a delivery leaves on disk.
IDLE_AFTER_DRAIN_S = 8.0
UNFINISHED = "SELECT count(*) AS n FROM rowhook.deliveries WHERE status IN ('pending', 'delivering', 'held')"


@dataclass
class Drain:
    events: int
    rate: float  # deliveries/s, 10th-90th percentile arrivals
    seconds: float  # commit of the backlog to the last arrival
    pg_cpu_s: float | None  # PostgreSQL, commit of the backlog to the relay's exit
    relay_cpu_s: float  # the relay, same span
    sizes: dict[str, int]  # bookkeeping tables after VACUUM, bytes

    def per_1000(self, seconds: float | None) -> float | None:
        return None if seconds is None else seconds * 1000 / self.events

    @property
    def bytes_per_delivery(self) -> float:
        return sum(self.sizes.values()) / self.events


def drain(admin_url: str, receiver: ReceiverProcess, events: int) -> Drain:
    """A fresh database; the relay waits asleep while `events` rows commit in one statement, then drains."""
    receiver.reset()
    with bench_database(admin_url) as url, connect(url) as conn:
        create_tasks(conn)
        add_subscriptions(conn, [Subscription(receiver.url("flat"), max_in_flight=CONCURRENCY)])
        with RelayProcess(url, relay_concurrency=CONCURRENCY) as relay:
            relay_before = relay.cpu_s()
            insert_tasks(conn, 1, events)  # one transaction: the backlog appears at once
            pg = PgCpuSampler(url).start()
            start = time.monotonic()
            receiver.wait_count(events, 60 + events / 50, relay=relay)
            seconds = time.monotonic() - start
            wait_recorded(conn, relay)
            time.sleep(IDLE_AFTER_DRAIN_S)
            # A graceful stop records every outcome: the bookkeeping of the last sends is counted.
            relay.stop()
            relay_cpu = relay.cpu_s() - relay_before
            pg_cpu = pg.stop()
        sizes = bookkeeping_bytes(conn)
    rate = steady_rate([a[0] for a in receiver.arrivals()])
    return Drain(events, rate, seconds, pg_cpu, relay_cpu, sizes)


def wait_recorded(
    conn: psycopg.Connection[dict[str, Any]], relay: RelayProcess, timeout_s: float = 60.0
) -> None:
    """Until the relay has written every delivery's outcome."""
    deadline = time.monotonic() + timeout_s
    while (row := conn.execute(UNFINISHED).fetchone()) and row["n"] and time.monotonic() < deadline:
        relay.check_alive()
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    small_n, large_n = (500, 5_000) if args.tiny else (2_000, 200_000)
    with bench_server() as admin_url, ReceiverProcess(keep_arrivals=True) as receiver:
        small = drain(admin_url, receiver, small_n)
        large = drain(admin_url, receiver, large_n)
    ratio = large.rate / small.rate
    bytes_met = large.bytes_per_delivery <= GOAL_BYTES
    result = Result(
        "relay_flat",
        args.tiny,
        f"deliveries/s at a {large_n:,} backlog >= {GOAL_RATIO} x at {small_n:,};"
        f" bytes per finished delivery <= {GOAL_BYTES}",
        met=ratio >= GOAL_RATIO and bytes_met,
    )
    for name, run in (("small", small), ("large", large)):
        result.add(
            f"{name}: events (one subscription, {CONCURRENCY} in flight)",
            run.events,
            "{:,}",
            f"{name}_events",
        )
        result.add(f"{name}: deliveries/s (steady, 10th-90th pct)", run.rate, "{:,.0f}", f"{name}_per_s")
        result.add(f"{name}: seconds, commit to last arrival", run.seconds, "{:.1f}", f"{name}_s")
        pg_per_1000 = run.per_1000(run.pg_cpu_s)
        if pg_per_1000 is None:
            result.add(f"{name}: PostgreSQL CPU s per 1,000 deliveries", "n/a (server not on this machine)")
        else:
            result.add(
                f"{name}: PostgreSQL CPU s per 1,000 deliveries",
                pg_per_1000,
                "{:.2f}",
                f"{name}_pg_cpu_s_per_1000",
            )
        result.add(
            f"{name}: relay CPU s per 1,000 deliveries",
            run.per_1000(run.relay_cpu_s),
            "{:.2f}",
            f"{name}_relay_cpu_s_per_1000",
        )
        result.add(
            f"{name}: bytes per finished delivery (after VACUUM)",
            run.bytes_per_delivery,
            "{:,.0f}",
            f"{name}_bytes_per_delivery",
        )
    for table, size in large.sizes.items():
        result.add(f"large: {table} bytes (tables + indexes)", size, "{:,}")
    result.figures["large_sizes"] = large.sizes
    result.add("ratio large / small deliveries/s", ratio, "{:.2f}", "ratio")
    result.add(f"bytes per finished delivery <= {GOAL_BYTES} (large)", "met" if bytes_met else "NOT MET")
    result.figures["bytes_met"] = bytes_met
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
