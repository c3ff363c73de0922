"""Two relays vs one draining the same backlog, to one subscription and to eight (reported, no goal)."""

from __future__ import annotations

import argparse
import contextlib
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

MAX_IN_FLIGHT = 64  # per subscription; each relay keeps its default concurrency (64)
SCENARIOS = {"one subscription": 1, "8 subscriptions": 8}


def drain(admin_url: str, receiver: ReceiverProcess, subscriptions: int, relays: int, events: int) -> float:
    """A fresh database; `relays` relays wait asleep while the backlog commits, then drain it: steady
    deliveries/s over all of them."""
    receiver.reset()
    expected = events * subscriptions
    with bench_database(admin_url) as url, connect(url) as conn:
        create_tasks(conn)
        add_subscriptions(
            conn,
            [Subscription(receiver.url("two"), max_in_flight=MAX_IN_FLIGHT) for _ in range(subscriptions)],
        )
        with contextlib.ExitStack() as stack:
            running = [stack.enter_context(RelayProcess(url)) for _ in range(relays)]
            insert_tasks(conn, 1, events)  # one transaction: the backlog appears at once, every relay wakes
            deadline = time.monotonic() + 60 + expected / 50
            for relay in running:
                receiver.wait_count(expected, max(1.0, deadline - time.monotonic()), relay=relay)
    return steady_rate([a[0] for a in receiver.arrivals()])


def main(argv: Sequence[str] | None = None) -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--events", type=int, help="events in each backlog (default 20,000; tiny 500)")

    args = parse_args(__doc__, argv, options)
    events = args.events or (500 if args.tiny else 20_000)
    rates: dict[tuple[str, int], float] = {}
    with bench_server() as admin_url, ReceiverProcess() as receiver:
        for scenario, subscriptions in SCENARIOS.items():
            for relays in (1, 2):
                rates[scenario, relays] = drain(admin_url, receiver, subscriptions, relays, events)
    result = Result("relay_two", args.tiny, "two relays vs one on the same backlog (reported)", met=None)
    result.add(f"events in each backlog (max_in_flight {MAX_IN_FLIGHT})", events, "{:,}", "events")
    for scenario, subscriptions in SCENARIOS.items():
        key = f"subs{subscriptions}"
        one, two = rates[scenario, 1], rates[scenario, 2]
        result.add(f"{scenario}: one relay, deliveries/s", one, "{:,.0f}", f"{key}_one_per_s")
        result.add(f"{scenario}: two relays, deliveries/s", two, "{:,.0f}", f"{key}_two_per_s")
        result.add(f"{scenario}: ratio two / one", two / one, "{:.2f}", f"{key}_ratio")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
