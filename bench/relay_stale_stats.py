"""Stale statistics: drain rate of a burst on a database analysed before it (many finished deliveries,
no pending ones), as a ratio to the same burst with fresh statistics; and the same with autovacuum off.

The rate is over the whole drain (relay start to last arrival), not the steady 10th-90th percentile of
the other benchmarks: stale plans show as a slow start (until autovacuum analyses the table, if it does),
which the steady rate would leave out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    steady_rate,
)
from rowhook.sqlfiles import query

GOAL_RATIO = 0.8
SUBSCRIPTIONS = 5
# The stale phases are stopped after this many times the fresh phase's drain (their ratio is then below
# 1 / CAP_FACTOR, far from the goal): a few minutes at full size, seconds at --tiny.
CAP_FACTOR = 2.5

# The history: `count` dispatched outbox events, each with one succeeded delivery (round robin over the
# subscriptions) and its attempt. Only the columns a finished delivery needs are named, so that columns
# added later with defaults do not break it; if the schema moves finished deliveries elsewhere, this is
# the one place to change.
HISTORY_SQL = (
    """
    INSERT INTO rowhook.outbox (resource, op, account, key, scope, data, occurred_at, dispatched_at)
    SELECT 'tasks', 'created', 'acme', g::text, '{"project_id": "p1"}',
           jsonb_build_object('id', g, 'account', 'acme', 'project_id', 'p1', 'title', %(title)s::text,
                              'done', false),
           now() - interval '1 day' + g * interval '1 ms', now() - interval '1 day' + g * interval '1 ms'
    FROM generate_series(1, %(count)s::bigint) AS g
    """,
    """
    INSERT INTO rowhook.deliveries (subscription_id, account, event_id, event_type, key, status, attempts,
                                    next_attempt_at, created_at, finished_at, last_status_code)
    SELECT s.id, o.account, o.id, 'tasks.created', o.key, 'succeeded', 1,
           o.occurred_at, o.occurred_at, o.occurred_at + interval '5 ms', 200
    FROM rowhook.outbox o
    JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM rowhook.subscriptions) AS s
      ON s.n = o.id %% %(subscriptions)s
    ORDER BY o.id
    """,
    """
    INSERT INTO rowhook.delivery_attempts (delivery_id, attempted_at, duration_ms, status_code)
    SELECT id, finished_at, 3, 200 FROM rowhook.deliveries
    """,
    "UPDATE rowhook.subscriptions SET last_success_at = now()",
)


def fill_history(conn: psycopg.Connection[Any], count: int) -> int:
    """Writes the finished deliveries set-based; returns how many the deliveries table holds."""
    for sql in HISTORY_SQL:
        conn.execute(sql, {"count": count, "subscriptions": SUBSCRIPTIONS, "title": "x" * 200})
    conn.execute("ANALYZE")
    row = conn.execute("SELECT count(*) AS n FROM rowhook.deliveries").fetchone()
    assert row is not None
    return int(row["n"])


def fan_out_held(conn: psycopg.Connection[Any], url: str, events: int) -> float:
    """The burst, fanned out by the relay itself while the subscriptions are paused (so it is held, not
    sent), then released as the API's resume does: the deliveries are in the table before any send.
    Returns the seconds the relay took to fan out."""
    conn.execute("UPDATE rowhook.subscriptions SET status = 'paused', updated_at = now()")
    insert_tasks(conn, 1, events)
    start = time.monotonic()
    with RelayProcess(url, wait_asleep=False) as relay:
        deadline = start + 60 + events / 20
        while True:
            row = conn.execute(
                "SELECT count(*) + rowhook.unexpanded_events() AS n"
                " FROM rowhook.outbox WHERE dispatched_at IS NULL"
            ).fetchone()
            if row and row["n"] == 0:
                break
            relay.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{row and row['n']} events still not fanned out")
            time.sleep(0.05)
        seconds = time.monotonic() - start
    ids = [r["id"] for r in conn.execute("SELECT id FROM rowhook.subscriptions")]
    conn.execute("UPDATE rowhook.subscriptions SET status = 'active', updated_at = now()")
    for subscription_id in ids:
        conn.execute(query("api_release_held_deliveries"), {"subscription_id": subscription_id})
    return seconds


@dataclass
class Drain:
    rate: float  # deliveries / seconds from the relay's start to the last arrival (or to the cap)
    steady: float  # 10th-90th percentile arrivals: hides a slow start that autovacuum later cures
    seconds: float
    drained: bool


def drain_burst(
    admin_url: str, template_url: str, receiver: ReceiverProcess, events: int, phase: str, cap_s: float
) -> Drain:
    """A copy of the history database, the burst, then one relay drains it for at most `cap_s`."""
    receiver.reset()
    expected = events * SUBSCRIPTIONS
    with bench_database(admin_url, template=template_url) as url, connect(url) as conn:
        if phase == "autovacuum off":
            for r in conn.execute(
                "SELECT format('rowhook.%I', relname) AS name FROM pg_class"
                " WHERE relnamespace = 'rowhook'::regnamespace AND relkind = 'r'"
            ).fetchall():
                conn.execute(f"ALTER TABLE {r['name']} SET (autovacuum_enabled = off)")
        fan_out_held(conn, url, events)
        if phase == "fresh":
            conn.execute("ANALYZE")
        start_ns = time.monotonic_ns()
        with RelayProcess(url, wait_asleep=False) as relay:
            try:
                stats = receiver.wait_count(expected, cap_s, relay=relay)
                seconds = (stats["last_ns"] - start_ns) / 1e9
                drained = True
            except TimeoutError:
                seconds = (time.monotonic_ns() - start_ns) / 1e9
                drained = False
    arrivals = [a[0] for a in receiver.arrivals()]
    return Drain(len(arrivals) / seconds, steady_rate(arrivals), seconds, drained)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    history, events = (20_000, 400) if args.tiny else (500_000, 10_000)
    with (
        bench_server() as admin_url,
        ReceiverProcess() as receiver,
        bench_database(admin_url) as template_url,
    ):
        with connect(template_url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, [Subscription(receiver.url("burst")) for _ in range(SUBSCRIPTIONS)])
            start = time.monotonic()
            finished = fill_history(conn, history)
            fill_s = time.monotonic() - start
        # Each phase runs on a copy of this database (made while nothing is connected to it). Fresh
        # first: a phase below the goal would take 1 / ratio times as long, so the others are capped.
        runs = {"fresh": drain_burst(admin_url, template_url, receiver, events, "fresh", 60 + events / 4)}
        cap_s = max(5.0, CAP_FACTOR * runs["fresh"].seconds)
        for phase in ("stale", "autovacuum off"):
            runs[phase] = drain_burst(admin_url, template_url, receiver, events, phase, cap_s)
    ratios = {phase: run.rate / runs["fresh"].rate for phase, run in runs.items()}
    result = Result(
        "relay_stale_stats",
        args.tiny,
        f"deliveries/s of a burst with statistics from before it >= {GOAL_RATIO} x with fresh statistics;"
        " the same with autovacuum off",
        met=ratios["stale"] >= GOAL_RATIO
        and ratios["autovacuum off"] >= GOAL_RATIO
        and all(run.drained for run in runs.values()),
    )
    result.add("finished deliveries before the burst (analysed)", finished, "{:,}", "history")
    result.add("seconds to write and analyse them", fill_s, "{:.1f}", "history_s")
    result.add(f"burst: events, each to {SUBSCRIPTIONS} subscriptions", events, "{:,}", "events")
    for phase, run in runs.items():
        key = phase.replace(" ", "_")
        how = "relay start to last arrival" if run.drained else f"NOT drained within the cap of {cap_s:.0f} s"
        result.add(f"{phase}: deliveries/s ({how})", run.rate, "{:,.0f}", f"{key}_per_s")
        result.add(f"{phase}: seconds", run.seconds, "{:.1f}", f"{key}_s")
        result.add(
            f"{phase}: steady deliveries/s (10th-90th pct)", run.steady, "{:,.0f}", f"{key}_steady_per_s"
        )
        result.figures[f"{key}_drained"] = run.drained
    result.add("ratio stale / fresh", ratios["stale"], "{:.2f}", "ratio_stale")
    result.add("ratio autovacuum off / fresh", ratios["autovacuum off"], "{:.2f}", "ratio_autovacuum_off")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
