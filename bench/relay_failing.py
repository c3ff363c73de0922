"""Isolation from fast failures: healthy throughput beside five receivers that fail five ways, as a ratio
to the same backlog without them."""

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
HEALTHY = 5
# 500 at once, TCP reset in the middle of the headers / of the body, accepts and never answers, refused.
FAILING = ("fail500", "reset_headers", "reset_body", "dead", "refused")
REQUEST_TIMEOUT_S = 5.0


def healthy_rate(
    admin_url: str, receiver: ReceiverProcess, with_failing: bool, events: int, cap_s: float
) -> tuple[float, float, bool]:
    """A fresh database and relay drain one backlog: healthy deliveries/s (steady), seconds, finished?"""
    receiver.reset()
    with bench_database(admin_url) as url:
        with connect(url) as conn:
            create_tasks(conn)
            subscriptions = [Subscription(receiver.url("healthy")) for _ in range(HEALTHY)]
            if with_failing:
                subscriptions += [Subscription(receiver.misbehaving_url(name)) for name in FAILING]
            add_subscriptions(conn, subscriptions)
            insert_tasks(conn, 1, events)
        start = time.monotonic()
        # A short grace only shortens the stop after each run, which no figure includes.
        with RelayProcess(
            url, wait_asleep=False, request_timeout_s=REQUEST_TIMEOUT_S, shutdown_grace_s=2.0
        ) as relay:
            try:
                receiver.wait_count(events * HEALTHY, cap_s, group="healthy", relay=relay)
                finished = True
            except TimeoutError:
                finished = False
            elapsed = time.monotonic() - start
    arrivals = [a[0] for a in receiver.arrivals() if a[1] == "healthy"]
    rate = steady_rate(arrivals) if finished else len(arrivals) / elapsed
    return rate, elapsed, finished


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    events, cap_s = (200, 30.0) if args.tiny else (2_000, 240.0)
    with bench_server() as admin_url, ReceiverProcess() as receiver:
        alone, alone_s, alone_done = healthy_rate(admin_url, receiver, False, events, cap_s)
        # Enough time to tell: below the goal, draining takes longer than alone_s / GOAL_RATIO.
        mixed_cap_s = min(cap_s, max(15.0, 3 * alone_s))
        mixed, mixed_s, mixed_done = healthy_rate(admin_url, receiver, True, events, mixed_cap_s)
        stats = receiver.stats()
    ratio = mixed / alone
    result = Result(
        "relay_failing",
        args.tiny,
        f"healthy deliveries/s beside {len(FAILING)} fast-failing receivers >= {GOAL_RATIO} x without them",
        met=ratio >= GOAL_RATIO and alone_done and mixed_done,
    )
    result.add("healthy / failing subscriptions", f"{HEALTHY} / {len(FAILING)}")
    result.add("failing receivers", ", ".join(FAILING))
    result.add("events in each backlog (each to every subscription)", events, "{:,}", "events")
    result.add("ROWHOOK_REQUEST_TIMEOUT_S", REQUEST_TIMEOUT_S, "{:g}", "request_timeout_s")
    result.add("without failing: healthy deliveries/s", alone, "{:,.0f}", "alone_per_s")
    result.add("without failing: seconds to drain", alone_s, "{:.1f}", "alone_s")
    result.add("with failing: healthy deliveries/s", mixed, "{:,.0f}", "mixed_per_s")
    result.add(
        f"with failing: seconds to drain healthy (cap {mixed_cap_s:.0f} s)", mixed_s, "{:.1f}", "mixed_s"
    )
    result.add("with failing: healthy fully delivered", mixed_done, "{}", "mixed_finished")
    # Requests each failing receiver read (for `dead`, connections it accepted; `refused` takes none).
    requests = {**stats["misbehaving"], "dead": stats["dead_connections"]}
    for name in FAILING[:-1]:
        result.add(f"with failing: requests to {name}", requests.get(name, 0), "{:,}")
    result.figures["failing_requests"] = requests
    result.add("ratio with / without", ratio, "{:.2f}", "ratio")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
