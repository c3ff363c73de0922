"""Fan-out of one event to 1,000 subscriptions, with and without 100,000 non-matching subscriptions."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

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
)

GOAL_RATIO = 1.2
# Share of the non-matching subscriptions sitting on other accounts; the rest are the hard case:
# same resource and account as the event, filtered on other projects.
OTHER_ACCOUNT_SHARE = 0.1


def matching(receiver: ReceiverProcess, count: int) -> Iterator[Subscription]:
    """Half filter on the event's project, half take every task of the account."""
    for i in range(count):
        yield Subscription(receiver.url("fan"), filter={"project_id": "p1"} if i % 2 else {})


def non_matching(receiver: ReceiverProcess, count: int) -> Iterator[Subscription]:
    other_accounts = int(count * OTHER_ACCOUNT_SHARE)
    for i in range(count - other_accounts):
        # Three subscriptions per other project, as when several integrations watch the same project.
        yield Subscription(receiver.url("never"), filter={"project_id": f"p_other_{i // 3}"})
    for i in range(other_accounts):
        # Other tenants with the very filter the event carries: only the account tells them apart.
        yield Subscription(
            receiver.url("never"), account=f"other_{i}", filter={"project_id": "p1"} if i % 2 else {}
        )


def wait_dispatched(conn: psycopg.Connection[Any], key: int, timeout_s: float) -> int:
    """Monotonic ns when the event's fan-out transaction became visible (dispatched_at set with it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT dispatched_at IS NOT NULL AS done FROM rowhook.outbox"
            " WHERE resource = 'tasks' AND key = %s",
            (str(key),),
        ).fetchone()
        if row and row["done"]:
            return time.monotonic_ns()
        time.sleep(0.0005)
    raise TimeoutError(f"event {key} not dispatched after {timeout_s} s")


def measure(
    url: str, receiver: ReceiverProcess, first_key: int, repeats: int, fan: int
) -> tuple[list[float], list[float]]:
    """Fresh relay; one event at a time: ms until fanned out, ms until all `fan` deliveries received."""
    fanned_ms, received_ms = [], []
    with RelayProcess(url) as relay, connect(url) as writer, connect(url) as watcher:
        for key in range(first_key, first_key + repeats):
            receiver.reset()
            start = time.monotonic_ns()
            insert_tasks(writer, key, 1)
            fanned_ms.append((wait_dispatched(watcher, key, 60) - start) / 1e6)
            stats = receiver.wait_count(fan, 60, group="fan", relay=relay)
            received_ms.append((stats["last_ns"] - start) / 1e6)
            created = watcher.execute(
                "SELECT count(*) AS n FROM rowhook.deliveries d JOIN rowhook.outbox o ON o.id = d.event_id"
                " WHERE o.resource = 'tasks' AND o.key = %s",
                (str(key),),
            ).fetchone()
            if not created or created["n"] != fan:
                raise AssertionError(f"event {key}: {created and created['n']} deliveries, expected {fan}")
            time.sleep(0.2)  # let the relay go back to sleep, as an idle relay would be
    return fanned_ms, received_ms


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    fan, crowd, repeats = (100, 2_000, 2) if args.tiny else (1_000, 100_000, 7)
    with bench_database() as url, ReceiverProcess() as receiver:
        with connect(url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, matching(receiver, fan))
        alone_fanned, alone_received = measure(url, receiver, 1, repeats, fan)
        with connect(url) as conn:
            loaded_s = time.monotonic()
            add_subscriptions(conn, non_matching(receiver, crowd))
            conn.execute("VACUUM ANALYZE rowhook.subscriptions")
            loaded_s = time.monotonic() - loaded_s
        crowd_fanned, crowd_received = measure(url, receiver, 1_000, repeats, fan)
        never = receiver.stats()["by_group"].get("never", 0)
    median = statistics.median
    ratio = median(crowd_fanned) / median(alone_fanned)
    result = Result(
        "relay_fanout",
        args.tiny,
        f"fan-out time with {crowd:,} non-matching subscriptions <= {GOAL_RATIO} x without",
        met=ratio <= GOAL_RATIO and never == 0,
    )
    result.add("matching subscriptions per event", fan, "{:,}", "fan")
    result.add("non-matching subscriptions added", crowd, "{:,}", "non_matching")
    result.add("events measured per setup (median shown)", repeats, "{}", "repeats")
    result.add("seconds to COPY + ANALYZE the non-matching ones", loaded_s, "{:.1f}", "load_s")
    result.add("alone: commit -> fanned out (ms)", median(alone_fanned), "{:.1f}", "alone_fanout_ms")
    result.add("alone: commit -> all received (ms)", median(alone_received), "{:.1f}", "alone_received_ms")
    result.add("crowd: commit -> fanned out (ms)", median(crowd_fanned), "{:.1f}", "crowd_fanout_ms")
    result.add("crowd: commit -> all received (ms)", median(crowd_received), "{:.1f}", "crowd_received_ms")
    result.add("deliveries to non-matching subscriptions", never, "{:,}", "wrongly_delivered")
    result.add("fan-out ratio crowd / alone", ratio, "{:.2f}", "ratio")
    result.add(
        "all-received ratio crowd / alone",
        median(crowd_received) / median(alone_received),
        "{:.2f}",
        "received_ratio",
    )
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
