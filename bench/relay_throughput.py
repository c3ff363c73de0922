"""Sustained throughput of one relay to a fast local receiver, as a ratio to a plain aiohttp client loop."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import psutil

from bench.common import (
    TITLE,
    PgCpuSampler,
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
    steady_rate,
)

GOAL_RATIO = 0.5  # issue 9: half of a plain aiohttp loop (0.3 a first milestone)
# The relay's default ROWHOOK_RELAY_CONCURRENCY; the baseline keeps as many requests in flight.
CONCURRENCY = 64


def event_body(key: int) -> bytes:
    """A body shaped like the relay's (DESIGN.md), so that both loops post the same bytes per request."""
    return json.dumps(
        {
            "id": f"evt_{key}",
            "type": "tasks.created",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "resource": "tasks",
            "key": str(key),
            "data": {"id": key, "account": "acme", "project_id": "p1", "title": TITLE, "done": False},
        }
    ).encode()


async def post_all(url: str, bodies: Sequence[bytes], concurrency: int) -> None:
    """The baseline: `concurrency` workers posting from one queue over one keep-alive pool, nothing else."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    # Headers as large as the relay's (webhook-id, -timestamp, -signature) but not computed per request.
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_" + secrets.token_hex(16),
        "webhook-timestamp": "1764374400",
        "webhook-signature": "v1," + base64.b64encode(secrets.token_bytes(32)).decode(),
    }

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                response.raise_for_status()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def receiver_cpu_s(receiver: ReceiverProcess) -> float:
    times = psutil.Process(receiver.process.pid).cpu_times()
    return float(times.user + times.system)


def baseline_rate(receiver: ReceiverProcess, count: int) -> tuple[float, float, float, float]:
    """Steady posts/s of the plain client loop, its mean body size in bytes, and the CPU seconds the loop
    and the receiver used for them."""
    receiver.reset()
    bodies = [event_body(i) for i in range(count)]
    receiver_before, loop_before = receiver_cpu_s(receiver), time.process_time()
    asyncio.run(post_all(receiver.url("baseline"), bodies, CONCURRENCY))
    loop_cpu, receiver_cpu = time.process_time() - loop_before, receiver_cpu_s(receiver) - receiver_before
    stats = receiver.stats()
    rate = steady_rate([a[0] for a in receiver.arrivals()])
    return rate, stats["body_bytes"] / stats["count"], loop_cpu, receiver_cpu


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    count = 500 if args.tiny else 20_000
    with bench_database() as url, ReceiverProcess() as receiver:
        with connect(url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, [Subscription(receiver.url("relay"), max_in_flight=CONCURRENCY)])
        baseline_rate(receiver, min(count, 2_000))  # warm-up: imports, sockets, both processes' caches
        before, baseline_body, loop_cpu, loop_receiver_cpu = baseline_rate(receiver, count)
        receiver.reset()
        with connect(url) as conn:
            insert_tasks(conn, 1, count)  # the backlog, committed before the relay starts
        receiver_before = receiver_cpu_s(receiver)
        pg = PgCpuSampler(url).start()
        with RelayProcess(url, wait_asleep=False, relay_concurrency=CONCURRENCY) as relay:
            stats = receiver.wait_count(count, 60 + count / 50, relay=relay)
            cpu = psutil.Process(relay.pid).cpu_times()
        pg_cpu = pg.stop()
        relay_receiver_cpu = receiver_cpu_s(receiver) - receiver_before
        relay_rate = steady_rate([a[0] for a in receiver.arrivals()])
        relay_body = stats["body_bytes"] / stats["count"]
        after, _, _, _ = baseline_rate(receiver, count)
    baseline = (before + after) / 2
    ratio = relay_rate / baseline
    result = Result(
        "relay_throughput",
        args.tiny,
        f"relay deliveries/s >= {GOAL_RATIO} x a plain aiohttp loop (same bodies, {CONCURRENCY} in flight)",
        met=ratio >= GOAL_RATIO,
    )
    result.add("events (backlog drained by the relay)", count, "{:,}", "events")
    result.add("relay: deliveries/s (steady, 10th-90th pct)", relay_rate, "{:,.0f}", "relay_per_s")
    result.add(
        "relay: CPU seconds per 1,000 deliveries",
        (cpu.user + cpu.system) * 1000 / count,
        "{:.2f}",
        "relay_cpu_s_per_1000",
    )
    per_1000 = 1000 / count
    if pg_cpu is not None:
        result.add(
            "PostgreSQL: CPU seconds per 1,000 deliveries", pg_cpu * per_1000, "{:.2f}", "pg_cpu_s_per_1000"
        )
    result.add(
        "receiver: CPU seconds per 1,000 deliveries",
        relay_receiver_cpu * per_1000,
        "{:.2f}",
        "receiver_cpu_s_per_1000",
    )
    result.add("relay: mean body bytes", relay_body, "{:.0f}", "relay_body_bytes")
    result.add("baseline before: posts/s", before, "{:,.0f}", "baseline_before_per_s")
    result.add("baseline after: posts/s", after, "{:,.0f}", "baseline_after_per_s")
    result.add("baseline: mean body bytes", baseline_body, "{:.0f}", "baseline_body_bytes")
    result.add(
        "baseline: loop CPU seconds per 1,000 posts", loop_cpu * per_1000, "{:.2f}", "loop_cpu_s_per_1000"
    )
    result.add(
        "baseline: receiver CPU seconds per 1,000 posts",
        loop_receiver_cpu * per_1000,
        "{:.2f}",
        "loop_receiver_cpu_s_per_1000",
    )
    result.add("ratio relay / baseline", ratio, "{:.2f}", "ratio")
    result.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
