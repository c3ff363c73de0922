"""`rowhook serve` under 200 concurrent clients making mixed requests: 1 worker vs 2 (reported, no goal)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import psutil

from bench.common import (
    REPO_ROOT,
    Result,
    Subscription,
    add_subscriptions,
    bench_database,
    connect,
    create_tasks,
    parse_args,
    percentile,
)
from bench.relay_stale_stats import fill_history
from rowhook.tokens import create_token

CLIENTS = 200
SUBSCRIPTIONS = 5  # with a delivery log each (fill_history spreads over the first five)
# What each client picks, by weight: mostly reads, now and then a subscription created and deleted.
MIX = (("list", 30), ("get", 30), ("deliveries", 25), ("resources", 10), ("create_delete", 5))
SERVE_COMMAND = [
    sys.executable,
    "-c",
    "import sys; from rowhook.cli import main; sys.exit(main(sys.argv[1:]))",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Load:
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    by_kind: dict[str, list[float]] = field(default_factory=dict)


async def run_clients(base: str, token: str, ids: list[str], seconds: float, warmup_s: float) -> Load:
    """CLIENTS loops, each one request at a time over a shared keep-alive pool; requests that end between
    the warm-up's end and the end of the run are counted (throughput: completions per second)."""
    load = Load()
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def call(
        session: aiohttp.ClientSession, kind: str, method: str, path: str, **kw: object
    ) -> dict | None:
        began = loop.time()
        async with session.request(method, base + path, **kw) as response:  # type: ignore[arg-type]
            body = await response.json() if response.status in (200, 201) else await response.read()
            ended = loop.time()
            if measure_from <= ended <= stop_at:
                load.requests += 1
                load.latencies_s.append(ended - began)
                load.by_kind.setdefault(kind, []).append(ended - began)
                if response.status >= 400:
                    key = f"{method} {path.split('/')[1]} {response.status}"
                    load.errors[key] = load.errors.get(key, 0) + 1
            return body if isinstance(body, dict) else None

    async def client(session: aiohttp.ClientSession, rng: random.Random) -> None:
        while loop.time() < stop_at:
            kind = rng.choices(names, weights)[0]
            sub = rng.choice(ids)
            if kind == "list":
                await call(session, kind, "GET", "/subscriptions")
            elif kind == "get":
                await call(session, kind, "GET", f"/subscriptions/{sub}")
            elif kind == "deliveries":
                await call(session, kind, "GET", f"/subscriptions/{sub}/deliveries")
            elif kind == "resources":
                await call(session, kind, "GET", "/resources")
            else:
                created = await call(
                    session,
                    kind,
                    "POST",
                    "/subscriptions",
                    json={"target_url": "http://127.0.0.1:9/hook", "resource": "tasks"},
                )
                if created:
                    await call(session, kind, "DELETE", f"/subscriptions/{created['id']}")

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        await asyncio.gather(*(client(session, random.Random(n)) for n in range(CLIENTS)))
    return load


def tree_cpu_s(process: psutil.Process) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def serve_run(url: str, token: str, ids: list[str], workers: int, seconds: float, warmup_s: float) -> dict:
    """`rowhook serve --workers N` as a subprocess, loaded for `seconds`, then stopped with SIGTERM."""
    port = free_port()
    env = {
        **os.environ,
        "ROWHOOK_DATABASE_URL": url,
        "ROWHOOK_ALLOW_PRIVATE_TARGETS": "1",
        "ROWHOOK_LOG_LEVEL": "WARNING",
    }
    command = [*SERVE_COMMAND, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rowhook serve did not start: {process.communicate()[1][-3000:]}")
            time.sleep(0.05)
        time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish its start-up
        tree = psutil.Process(process.pid)
        cpu_before = tree_cpu_s(tree)
        load = asyncio.run(run_clients(base, token, ids, seconds, warmup_s))
        cpu = tree_cpu_s(tree) - cpu_before
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return {
        "per_s": load.requests / seconds,
        "p50_ms": percentile(load.latencies_s, 50) * 1000,
        "p99_ms": percentile(load.latencies_s, 99) * 1000,
        "errors": load.errors,
        "requests": load.requests,
        "cpu_s_per_1000": cpu * 1000 / max(1, load.requests),
        "exit_code": exit_code,
        "p50_ms_by_kind": {
            kind: round(percentile(values, 50) * 1000, 1) for kind, values in sorted(load.by_kind.items())
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seconds", type=float, help="measured seconds per run (default 20; tiny 3)")

    args = parse_args(__doc__, argv, options)
    seconds = args.seconds or (3.0 if args.tiny else 20.0)
    warmup_s = 1.0 if args.tiny else 3.0
    with bench_database() as url:
        with connect(url) as conn:
            create_tasks(conn)
            add_subscriptions(conn, [Subscription("http://127.0.0.1:9/hook") for _ in range(SUBSCRIPTIONS)])
            fill_history(conn, 2_000 if args.tiny else 20_000)
            ids = [r["id"] for r in conn.execute("SELECT id FROM rowhook.subscriptions ORDER BY id")]
            token, _ = create_token(conn, "acme", "bench")
        runs = {workers: serve_run(url, token, ids, workers, seconds, warmup_s) for workers in (1, 2)}
    ratio = runs[2]["per_s"] / runs[1]["per_s"]
    result = Result(
        "serve_load", args.tiny, f"rowhook serve, {CLIENTS} clients: 2 workers vs 1 (reported)", met=None
    )
    result.add("concurrent clients / measured seconds per run", f"{CLIENTS} / {seconds:g}")
    result.add("mix (weights)", ", ".join(f"{name} {weight}" for name, weight in MIX))
    for workers, run in runs.items():
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        result.add(f"{label}: requests/s", run["per_s"], "{:,.0f}", f"w{workers}_per_s")
        result.add(f"{label}: p50 latency ms", run["p50_ms"], "{:.1f}", f"w{workers}_p50_ms")
        result.add(f"{label}: p99 latency ms", run["p99_ms"], "{:.1f}", f"w{workers}_p99_ms")
        result.add(
            f"{label}: serve CPU s per 1,000 requests",
            run["cpu_s_per_1000"],
            "{:.2f}",
            f"w{workers}_cpu_s_per_1000",
        )
        result.add(f"{label}: error answers", sum(run["errors"].values()), "{:,}", f"w{workers}_errors")
        result.add(f"{label}: exit code after SIGTERM", run["exit_code"], "{}", f"w{workers}_exit_code")
        result.add(f"{label}: p50 ms by request kind", run["p50_ms_by_kind"])
        result.figures[f"w{workers}_p50_ms_by_kind"] = run["p50_ms_by_kind"]
    result.add("ratio requests/s 2 workers / 1", ratio, "{:.2f}", "ratio")
    result.print()
    for workers, run in runs.items():
        if run["errors"]:
            print(f"{workers} worker(s) error answers: {run['errors']}", file=sys.stderr)
    return 0 if all(run["exit_code"] == 0 for run in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
