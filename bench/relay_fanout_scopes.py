"""Fan-out of one event to 1,000 subscriptions on a table with 8 scope columns against one with 1.

Fan-out probes the subscription index once per scope value of an event (and once per old value of an
update), where it used to probe every subset of them (2^n). Both setups hold the same subscriptions,
matching and non-matching; they live in separate databases with their own relays and are measured in
interleaved rounds, as in bench/relay_fanout.py."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Sequence

from bench.common import (
    ReceiverProcess,
    RelayProcess,
    Result,
    add_subscriptions,
    bench_database,
    bench_server,
    connect,
    parse_args,
)
from bench.relay_fanout import Setup, matching, measure_one, other_projects

GOAL_RATIO = 1.2
EXTRA_SCOPES = [f"scope_{n}" for n in range(1, 8)]


def tasks_ddl(scope_columns: list[str]) -> str:
    extra = "".join(f", {c} text NOT NULL DEFAULT 'v'" for c in scope_columns[1:])
    scopes = ", ".join(f"'{c}'" for c in scope_columns)
    return f"""
CREATE TABLE tasks (id bigint PRIMARY KEY, account text NOT NULL, project_id text NOT NULL,
                    title text NOT NULL, done boolean NOT NULL DEFAULT false{extra});
SELECT rowhook.watch('tasks', account_column => 'account', scope_columns => ARRAY[{scopes}]);
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    fan, crowd, rounds = (100, 1_000, 1) if args.tiny else (1_000, 20_000, 11)
    with contextlib.ExitStack() as stack:
        admin_url = stack.enter_context(bench_server())
        receiver = stack.enter_context(ReceiverProcess())
        setups: list[Setup] = []
        for name, scopes in (
            ("1 scope column", ["project_id"]),
            ("8 scope columns", ["project_id", *EXTRA_SCOPES]),
        ):
            url = stack.enter_context(bench_database(admin_url))
            with connect(url) as conn:
                conn.execute(tasks_ddl(scopes))  # type: ignore[arg-type]
                add_subscriptions(conn, matching(receiver, fan))
                add_subscriptions(conn, other_projects(receiver, crowd))
                conn.execute("VACUUM ANALYZE rowhook.subscriptions")
            relay = stack.enter_context(RelayProcess(url))
            setups.append(
                Setup(name, url, relay, stack.enter_context(connect(url)), stack.enter_context(connect(url)))
            )
        for round_no in range(rounds):
            for setup in setups[round_no % 2 :] + setups[: round_no % 2]:
                measure_one(setup, receiver, round_no + 1, fan)
        never = receiver.stats()["by_group"].get("never", 0)
    one, eight = (statistics.median(s.fanned_ms) for s in setups)
    ratio = eight / one
    result = Result(
        "relay_fanout_scopes",
        args.tiny,
        f"fan-out time with 8 scope columns <= {GOAL_RATIO} x with 1",
        met=ratio <= GOAL_RATIO and never == 0,
    )
    result.add("matching subscriptions per event", fan, "{:,}", "fan")
    result.add("non-matching subscriptions (other projects)", crowd, "{:,}", "non_matching")
    result.add("events per setup, in interleaved rounds (median shown)", rounds, "{}", "rounds")
    result.add("1 scope column: commit -> fanned out (ms)", one, "{:.1f}", "one_scope_ms")
    result.add("8 scope columns: commit -> fanned out (ms)", eight, "{:.1f}", "eight_scopes_ms")
    result.add("deliveries to non-matching subscriptions", never, "{:,}", "wrongly_delivered")
    result.add("fan-out ratio 8 / 1 scope columns", ratio, "{:.2f}", "ratio")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
