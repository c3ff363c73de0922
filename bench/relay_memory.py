"""Peak resident memory of the relay process while it drains a backlog of 200,000 events."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.common import (
    ReceiverProcess,
    RelayProcess,
    Result,
    RssSampler,
    Subscription,
    add_subscriptions,
    bench_database,
    connect,
    create_tasks,
    insert_tasks,
    parse_args,
)

GOAL_PEAK_MB = 200.0
MB = 1024 * 1024
# In flight for the one subscription: the relay's default total, so the backlog drains at full speed.
MAX_IN_FLIGHT = 64


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    events, cap_s = (1_000, 30.0) if args.tiny else (200_000, 600.0)
    with bench_database() as url, ReceiverProcess(keep_arrivals=False) as receiver:
        with connect(url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, [Subscription(receiver.url(), max_in_flight=MAX_IN_FLIGHT)])
        with RelayProcess(url) as relay:
            sampler = RssSampler(relay.pid).start()
            time.sleep(1.0)
            idle_bytes = sampler.peak_bytes  # the baseline: the same process, started and idle
            with connect(url) as conn:
                written_s = time.monotonic()
                insert_tasks(conn, 1, events)  # one transaction: the whole backlog appears at once
                written_s = time.monotonic() - written_s
            start = time.monotonic()
            try:
                stats = receiver.wait_count(events, cap_s, relay=relay)
            except TimeoutError:
                stats = receiver.stats()
            drain_s = time.monotonic() - start
            peak_bytes = sampler.stop()
    drained = min(stats["count"], events)
    peak_mb = peak_bytes / MB
    result = Result(
        "relay_memory",
        args.tiny,
        f"peak RSS of the relay draining {events:,} events <= {GOAL_PEAK_MB:g} MB",
        met=peak_mb <= GOAL_PEAK_MB and drained == events,
    )
    result.add("backlog events (committed in one transaction)", events, "{:,}", "events")
    result.add("seconds to write the backlog", written_s, "{:.1f}", "write_s")
    result.add("events delivered", drained, "{:,}", "delivered")
    result.add(f"seconds to drain (cap {cap_s:g} s)", drain_s, "{:.1f}", "drain_s")
    result.add("drain rate (deliveries/s)", drained / drain_s, "{:,.0f}", "drain_per_s")
    result.add("baseline: RSS of the idle relay (MB)", idle_bytes / MB, "{:.1f}", "idle_rss_mb")
    result.add("peak RSS while draining (MB)", peak_mb, "{:.1f}", "peak_rss_mb")
    result.add("peak / idle", peak_bytes / idle_bytes, "{:.2f}", "peak_to_idle")
    result.add("RSS samples taken", sampler.samples, "{:,}", "samples")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
