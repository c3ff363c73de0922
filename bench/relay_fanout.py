"""Fan-out of one event to 1,000 subscriptions, with and without 100,000 non-matching subscriptions.

A share of both kinds lists update `columns` (issue 13), as integrations wanting "task completed" do:
the fan-out index carries them, and must stay as fast with them.

The setups live in separate databases, each with its own idle relay, and are measured in turns (one
event each per round), so that load from the rest of the machine falls on all of them alike."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

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
)

GOAL_RATIO = 1.2
# Share of the non-matching subscriptions sitting on other accounts; the rest are the hard case:
# same resource and account as the event, filtered on other projects.
OTHER_ACCOUNT_SHARE = 0.1
# One subscription in COLUMNS_EVERY lists update columns (the event, a creation, still reaches it).
COLUMNS_EVERY = 4
COLUMNS = ("done", "title")


def columns_of(i: int) -> tuple[str, ...] | None:
    return COLUMNS if i % COLUMNS_EVERY == 0 else None


def matching(receiver: ReceiverProcess, count: int) -> Iterator[Subscription]:
    """Half filter on the event's project, half take every task of the account."""
    for i in range(count):
        yield Subscription(
            receiver.url("fan"), filter={"project_id": "p1"} if i % 2 else {}, columns=columns_of(i)
        )


def other_projects(receiver: ReceiverProcess, count: int) -> Iterator[Subscription]:
    """The hard case: same resource and account as the event, filtered on other projects."""
    for i in range(count):
        # Three subscriptions per other project, as when several integrations watch the same project.
        yield Subscription(
            receiver.url("never"), filter={"project_id": f"p_other_{i // 3}"}, columns=columns_of(i)
        )


def other_accounts(receiver: ReceiverProcess, count: int) -> Iterator[Subscription]:
    """Other tenants with the very filters the event matches: only the account tells them apart."""
    for i in range(count):
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


@dataclass
class Setup:
    """One database with its subscriptions and relay, and the times measured on it."""

    name: str
    url: str
    relay: RelayProcess
    writer: psycopg.Connection[Any]
    watcher: psycopg.Connection[Any]
    fanned_ms: list[float] = field(default_factory=list)
    received_ms: list[float] = field(default_factory=list)


def measure_one(setup: Setup, receiver: ReceiverProcess, key: int, fan: int) -> None:
    """One event: ms until its fan-out committed, ms until all `fan` deliveries were received."""
    receiver.reset()
    start = time.monotonic_ns()
    insert_tasks(setup.writer, key, 1)
    setup.fanned_ms.append((wait_dispatched(setup.watcher, key, 60) - start) / 1e6)
    stats = receiver.wait_count(fan, 60, group="fan", relay=setup.relay)
    setup.received_ms.append((stats["last_ns"] - start) / 1e6)
    created = setup.watcher.execute(
        "SELECT count(*) AS n FROM rowhook.deliveries d JOIN rowhook.outbox o ON o.id = d.event_id"
        " WHERE o.resource = 'tasks' AND o.key = %s",
        (str(key),),
    ).fetchone()
    if not created or created["n"] != fan:
        raise AssertionError(f"{setup.name}, event {key}: {created and created['n']} deliveries, not {fan}")
    time.sleep(0.2)  # let the relay go back to sleep, as an idle relay would be


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    fan, crowd, rounds = (100, 2_000, 1) if args.tiny else (1_000, 100_000, 11)
    other_account_count = int(crowd * OTHER_ACCOUNT_SHARE)
    with contextlib.ExitStack() as stack:
        admin_url = stack.enter_context(bench_server())
        receiver = stack.enter_context(ReceiverProcess())
        setups: list[Setup] = []
        load_s = 0.0
        for name, projects, accounts in (
            ("alone", 0, 0),
            ("other projects", crowd - other_account_count, 0),
            ("all non-matching", crowd - other_account_count, other_account_count),
        ):
            url = stack.enter_context(bench_database(admin_url))
            with connect(url) as conn:
                create_tasks(conn)
                add_subscriptions(conn, matching(receiver, fan))
                started = time.monotonic()
                add_subscriptions(conn, other_projects(receiver, projects))
                add_subscriptions(conn, other_accounts(receiver, accounts))
                conn.execute("VACUUM ANALYZE rowhook.subscriptions")
                load_s = max(load_s, time.monotonic() - started)
            relay = stack.enter_context(RelayProcess(url))
            writer = stack.enter_context(connect(url))
            watcher = stack.enter_context(connect(url))
            setups.append(Setup(name, url, relay, writer, watcher))
        for round_no in range(rounds):
            # Rotate who goes first, so that no setup always follows the same neighbour.
            for setup in setups[round_no % 3 :] + setups[: round_no % 3]:
                measure_one(setup, receiver, round_no + 1, fan)
        never = receiver.stats()["by_group"].get("never", 0)
    alone, projects_only, crowded = (statistics.median(s.fanned_ms) for s in setups)
    received_alone, _, received_crowded = (statistics.median(s.received_ms) for s in setups)
    ratio = crowded / alone
    result = Result(
        "relay_fanout",
        args.tiny,
        f"fan-out time with {crowd:,} non-matching subscriptions <= {GOAL_RATIO} x without",
        met=ratio <= GOAL_RATIO and never == 0,
    )
    result.add("matching subscriptions per event", fan, "{:,}", "fan")
    result.add(
        "non-matching: same account, other projects",
        crowd - other_account_count,
        "{:,}",
        "non_matching_other_projects",
    )
    result.add(
        "non-matching: other accounts, same filters",
        other_account_count,
        "{:,}",
        "non_matching_other_accounts",
    )
    result.add(
        "subscriptions listing update columns (both kinds)",
        sum(1 for i in range(fan) if columns_of(i))
        + sum(1 for i in range(crowd - other_account_count) if columns_of(i)),
        "{:,}",
        "with_columns",
    )
    result.add("events per setup, in interleaved rounds (median shown)", rounds, "{}", "rounds")
    result.add("seconds to COPY + VACUUM ANALYZE 100,000 subscriptions", load_s, "{:.1f}", "load_s")
    result.add("alone: commit -> fanned out (ms)", alone, "{:.1f}", "alone_fanout_ms")
    result.add("+ other projects: commit -> fanned out (ms)", projects_only, "{:.1f}", "projects_fanout_ms")
    result.add("+ other accounts too: commit -> fanned out (ms)", crowded, "{:.1f}", "crowd_fanout_ms")
    result.add("alone: commit -> all received (ms)", received_alone, "{:.1f}", "alone_received_ms")
    result.add(
        "+ all non-matching: commit -> all received (ms)", received_crowded, "{:.1f}", "crowd_received_ms"
    )
    result.add("deliveries to non-matching subscriptions", never, "{:,}", "wrongly_delivered")
    result.add("fan-out ratio other projects only / alone", projects_only / alone, "{:.2f}", "projects_ratio")
    result.add("fan-out ratio all non-matching / alone", ratio, "{:.2f}", "ratio")
    result.add(
        "all-received ratio all non-matching / alone",
        received_crowded / received_alone,
        "{:.2f}",
        "received_ratio",
    )
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
