"""End-to-end latency from commit to receipt at a steady 200 events/s, against a LISTEN/NOTIFY round trip."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import psycopg

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
    percentile,
)

RATE_PER_S = 200
GOAL_P50_MS = 2.0  # issue 9 (was 10 ms)
GOAL_P99_MS = 10.0  # issue 9 (was 100 ms)
WARMUP_EVENTS = 20


def paced(count: int, rate_per_s: float, write: Callable[[int], None]) -> tuple[dict[int, int], float]:
    """Open-loop writer: event i is due at start + i/rate, whatever happened to earlier ones.

    Returns the monotonic ns taken just before each write's commit was sent, and the achieved rate."""
    sent: dict[int, int] = {}
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate_per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[i] = time.monotonic_ns()
        write(i)
    elapsed = time.monotonic() - start
    return sent, count / elapsed if elapsed > 0 else float("nan")


def notify_round_trip(url: str, count: int) -> list[float]:
    """Latencies (ms) of NOTIFY sent in autocommit by one connection and read by a LISTENing other."""
    received: dict[int, int] = {}
    listening = threading.Event()

    def listen() -> None:
        with psycopg.connect(url, autocommit=True) as listener:
            listener.execute("LISTEN bench")
            listening.set()
            deadline = time.monotonic() + 60
            while len(received) < count and time.monotonic() < deadline:
                for note in listener.notifies(timeout=0.5):
                    received[int(note.payload)] = time.monotonic_ns()
                    if len(received) >= count:
                        break

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    listening.wait(10)
    with psycopg.connect(url, autocommit=True) as sender:

        def notify(i: int) -> None:
            sender.execute("SELECT pg_notify('bench', %s)", (str(i),))

        sent, _ = paced(count, RATE_PER_S, notify)
    thread.join(70)
    return [(received[i] - sent[i]) / 1e6 for i in sent if i in received]


def relay_latencies(url: str, receiver: ReceiverProcess, count: int) -> tuple[list[float], float, int]:
    """Latencies (ms) commit -> first receipt of each event; also the achieved write rate and duplicates."""
    with RelayProcess(url) as relay, connect(url) as conn:
        # Warm-up: connections and pools on both sides are open before the measured run.
        insert_tasks(conn, 1_000_000, WARMUP_EVENTS)
        receiver.wait_count(WARMUP_EVENTS, 60, relay=relay)
        receiver.reset()
        sent, rate = paced(count, RATE_PER_S, lambda i: insert_tasks(conn, i, 1))
        receiver.wait_count(count, 60, relay=relay)
        arrivals = receiver.arrivals()
    first: dict[int, int] = {}
    for t_ns, _group, key, _webhook_id in arrivals:
        first.setdefault(int(key), t_ns)
    latencies = [(first[i] - sent[i]) / 1e6 for i in sent if i in first]
    return latencies, rate, len(arrivals) - len(first)


def summarise(result: Result, label: str, key: str, latencies: Sequence[float]) -> None:
    for p in (50, 90, 99):
        result.add(f"{label} p{p} (ms)", percentile(latencies, p), "{:.2f}", f"{key}_p{p}_ms")
    result.add(f"{label} max (ms)", max(latencies), "{:.2f}", f"{key}_max_ms")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(
        __doc__,
        argv,
        lambda parser: parser.add_argument(
            "--max-in-flight", type=int, default=8, help="the subscription's cap (default: the schema's, 8)"
        ),
    )
    count = RATE_PER_S * (1 if args.tiny else 30)
    with bench_database() as url, ReceiverProcess() as receiver:
        with connect(url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, [Subscription(receiver.url(), max_in_flight=args.max_in_flight)])
        baseline = notify_round_trip(url, count)
        latencies, rate, duplicates = relay_latencies(url, receiver, count)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    result = Result(
        "relay_latency",
        args.tiny,
        f"commit -> receipt at {RATE_PER_S} events/s: p50 <= {GOAL_P50_MS:g} ms, p99 <= {GOAL_P99_MS:g} ms",
        met=p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS and len(latencies) == count,
    )
    result.add("events written (one transaction each)", count, "{:,}", "events")
    result.add("subscription max_in_flight", args.max_in_flight, "{}", "max_in_flight")
    result.add("achieved write rate (events/s)", rate, "{:.0f}", "write_rate_per_s")
    result.add("events received", len(latencies), "{:,}", "received")
    result.add("duplicate receipts", duplicates, "{:,}", "duplicates")
    summarise(result, "relay: commit -> receipt", "relay", latencies)
    summarise(result, "baseline: NOTIFY -> LISTEN", "notify", baseline)
    result.add("p50 relay / p50 NOTIFY", p50 / percentile(baseline, 50), "{:.1f}x", "p50_ratio_to_notify")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
