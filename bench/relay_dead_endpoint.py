"""Isolation: throughput to healthy subscriptions while a dead endpoint holds half of all subscriptions."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.common import (
    ReceiverProcess,
    RelayProcess,
    Result,
    Subscription,
    add_subscriptions,
    bench_database,
    connect,
    create_tasks,
    insert_tasks,
    parse_args,
    steady_rate,
)

GOAL_RATIO = 0.8


def healthy_rate(
    url: str,
    receiver: ReceiverProcess,
    first_key: int,
    events: int,
    healthy: int,
    timeout_s: float,
    **settings: object,
) -> tuple[float, float, bool]:
    """Drain a backlog with a fresh relay: healthy deliveries/s (steady), seconds to drain, finished?"""
    receiver.reset()
    with connect(url) as conn:
        insert_tasks(conn, first_key, events)
    expected = events * healthy
    start = time.monotonic()
    with RelayProcess(url, **settings) as relay:
        try:
            receiver.wait_count(expected, timeout_s, group="healthy", relay=relay)
            finished = True
        except TimeoutError:
            finished = False
        elapsed = time.monotonic() - start
    arrivals = [a[0] for a in receiver.arrivals() if a[1] == "healthy"]
    rate = steady_rate(arrivals) if finished else len(arrivals) / elapsed
    return rate, elapsed, finished


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    if args.tiny:
        per_half, events, timeout_s, cap_s = 2, 100, 1.0, 30.0
    else:
        per_half, events, timeout_s, cap_s = 10, 2_000, 5.0, 240.0
    # A short grace only shortens the stop after each run, which no figure includes.
    settings = {"request_timeout_s": timeout_s, "shutdown_grace_s": 2.0}
    with bench_database() as url, ReceiverProcess() as receiver:
        with connect(url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, (Subscription(receiver.url("healthy")) for _ in range(per_half)))
        alone, alone_s, alone_done = healthy_rate(url, receiver, 1, events, per_half, cap_s, **settings)
        with connect(url) as conn:
            add_subscriptions(conn, (Subscription(receiver.dead_url()) for _ in range(per_half)))
        mixed, mixed_s, mixed_done = healthy_rate(
            url, receiver, 1_000_000, events, per_half, cap_s, **settings
        )
        dead_connections = receiver.stats()["dead_connections"]
    ratio = mixed / alone
    result = Result(
        "relay_dead_endpoint",
        args.tiny,
        f"healthy deliveries/s with a dead endpoint holding half the subscriptions >= {GOAL_RATIO} x without",
        met=ratio >= GOAL_RATIO and alone_done and mixed_done,
    )
    result.add("healthy / dead subscriptions", f"{per_half} / {per_half}")
    result.add("events in each backlog (each to every subscription)", events, "{:,}", "events")
    result.add("ROWHOOK_REQUEST_TIMEOUT_S", timeout_s, "{:g}", "request_timeout_s")
    result.add("without dead: healthy deliveries/s", alone, "{:,.0f}", "alone_per_s")
    result.add("without dead: seconds to drain", alone_s, "{:.1f}", "alone_s")
    result.add("with dead: healthy deliveries/s", mixed, "{:,.0f}", "mixed_per_s")
    result.add(f"with dead: seconds to drain healthy (cap {cap_s:g} s)", mixed_s, "{:.1f}", "mixed_s")
    result.add("with dead: healthy half fully delivered", mixed_done, "{}", "mixed_finished")
    result.add("connections the dead endpoint accepted", dead_connections, "{:,}", "dead_connections")
    result.add("ratio with / without", ratio, "{:.2f}", "ratio")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
