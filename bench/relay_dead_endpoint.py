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
    bench_server,
    connect,
    create_tasks,
    insert_tasks,
    parse_args,
    steady_rate,
)

GOAL_RATIO = 0.8


def healthy_rate(
    admin_url: str,
    receiver: ReceiverProcess,
    per_half: int,
    with_dead: bool,
    events: int,
    cap_s: float,
    **settings: object,
) -> tuple[float, float, bool]:
    """A fresh database and relay drain one backlog: healthy deliveries/s (steady), seconds, finished?"""
    receiver.reset()
    with bench_database(admin_url) as url:
        with connect(url) as conn:
            create_tasks(conn)
            subscriptions = [Subscription(receiver.url("healthy")) for _ in range(per_half)]
            if with_dead:
                subscriptions += [Subscription(receiver.dead_url()) for _ in range(per_half)]
            add_subscriptions(conn, subscriptions)
            insert_tasks(conn, 1, events)
        start = time.monotonic()
        with RelayProcess(url, wait_asleep=False, **settings) as relay:
            try:
                receiver.wait_count(events * per_half, cap_s, group="healthy", relay=relay)
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
    with bench_server() as admin_url, ReceiverProcess() as receiver:
        alone, alone_s, alone_done = healthy_rate(
            admin_url, receiver, per_half, False, events, cap_s, **settings
        )
        # Enough time to tell: below the goal, draining takes longer than alone_s / GOAL_RATIO.
        mixed_cap_s = min(cap_s, max(30.0, 3 * alone_s))
        mixed, mixed_s, mixed_done = healthy_rate(
            admin_url, receiver, per_half, True, events, mixed_cap_s, **settings
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
    result.add(f"with dead: seconds to drain healthy (cap {mixed_cap_s:.0f} s)", mixed_s, "{:.1f}", "mixed_s")
    result.add("with dead: healthy half fully delivered", mixed_done, "{}", "mixed_finished")
    result.add("connections the dead endpoint accepted", dead_connections, "{:,}", "dead_connections")
    result.add("ratio with / without", ratio, "{:.2f}", "ratio")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
