"""The relay's database bookkeeping alone: claims and outcome records without HTTP, CPU per delivery."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.common import (
    PgCpuSampler,
    Result,
    Subscription,
    add_subscriptions,
    bench_database,
    connect,
    create_tasks,
    insert_tasks,
    parse_args,
)
from relay.policy import Outcome
from relay.sender import Attempt
from relay.store import Result as Outcomes
from relay.store import Store
from relay.worker import POOL_MAX_SIZE, relay_session_url
from rowhook.db import async_pool
from rowhook.settings import Settings
from rowhook.sqlfiles import query

RELAY_ID = "relay_bookkeeping"


@dataclass
class Spent:
    deliveries: int = 0
    seconds: float = 0.0
    claim_cpu_s: float = 0.0
    record_cpu_s: float = 0.0


def succeeded(deliveries: list[dict[str, object]]) -> list[Outcomes]:
    attempt = Attempt(attempted_at=datetime.now(UTC), duration_ms=1, status_code=200, response_body="")
    return [
        Outcomes(str(d["id"]), str(d["subscription_id"]), attempt, Outcome("succeeded"), 1)
        for d in deliveries
    ]


async def claim_and_record(url: str, batch: int) -> tuple[Spent, float | None]:
    """Fan the backlog out unleased, then claim `batch` and record them as sent, until none is left.
    CPU of this process (time.process_time: nothing else runs in it) and of PostgreSQL."""
    pool = async_pool(relay_session_url(url), role="relay", max_size=POOL_MAX_SIZE, trust_recent_s=1.0)
    await pool.open()
    try:
        async with pool.connection() as conn:  # registered, so that no reaper takes its leases
            await conn.execute(query("relay_register"), {"relay_id": RELAY_ID})
        store = Store(pool, RELAY_ID, Settings(database_url=url))
        while (await store.fan_out(free=0)).events:
            pass
        pg = PgCpuSampler(url).start()
        spent, started = Spent(), time.perf_counter()
        while True:
            before = time.process_time()
            claim = await store.claim_due(batch, set())
            spent.claim_cpu_s += time.process_time() - before
            if not claim.deliveries:
                break
            before = time.process_time()
            await store.record(succeeded(claim.deliveries))
            spent.record_cpu_s += time.process_time() - before
            spent.deliveries += len(claim.deliveries)
        spent.seconds = time.perf_counter() - started
        return spent, pg.stop()
    finally:
        await pool.close()


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=32, help="deliveries per claim and per record")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, options)
    count = 500 if args.tiny else 10_000
    with bench_database() as url:
        with connect(url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, [Subscription("http://127.0.0.1:9/none", max_in_flight=1_000_000)])
            insert_tasks(conn, 1, count)
        spent, pg_cpu_s = asyncio.run(claim_and_record(url, args.batch))
    per_delivery_us = 1e6 / max(spent.deliveries, 1)
    rate = spent.deliveries / spent.seconds
    result = Result("relay_bookkeeping", args.tiny, "reported (issue 9: CPU per delivery)", met=None)
    result.add("deliveries claimed and recorded", spent.deliveries, "{:,}", "deliveries")
    result.add("batch (deliveries per claim and per record)", args.batch, "{}", "batch")
    result.add("deliveries/s, one claim or record at a time", rate, "{:,.0f}", "per_s")
    result.add("relay CPU µs per delivery: claims", spent.claim_cpu_s * per_delivery_us, "{:.1f}", "claim_us")
    result.add(
        "relay CPU µs per delivery: records", spent.record_cpu_s * per_delivery_us, "{:.1f}", "record_us"
    )
    if pg_cpu_s is not None:
        result.add("PostgreSQL CPU µs per delivery", pg_cpu_s * per_delivery_us, "{:.1f}", "pg_us")
    result.print()
    return 0 if spent.deliveries == count else 1


if __name__ == "__main__":
    raise SystemExit(main())
