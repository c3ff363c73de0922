"""Runs every benchmark once (`python -m bench --tiny` in CI); fails only if a benchmark crashes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import BENCH_URL_ENV, REPO_ROOT, bench_server

BENCHMARKS = (
    "write_path",
    "write_path_floor",
    "relay_latency",
    "relay_throughput",
    "relay_bookkeeping",
    "relay_fanout",
    "relay_fanout_scopes",
    "relay_dead_endpoint",
    "relay_memory",
    "relay_flat",
    "relay_stale_stats",
    "relay_failing",
    "relay_two",
    "relay_rate_limit",
    "serve_load",
)


def available(names: Sequence[str]) -> list[str]:
    return [name for name in names if (Path(__file__).parent / f"{name}.py").exists()]


def run_one(name: str, tiny: bool, env: dict[str, str], timeout_s: float) -> tuple[bool, dict | None, float]:
    """Runs one benchmark in its own process; (crashed, its JSON line, seconds)."""
    cmd = [sys.executable, "-m", f"bench.{name}"] + (["--tiny"] if tiny else [])
    start = time.monotonic()
    try:
        done = subprocess.run(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        print(exc.stdout or "", end="")
        print(f"bench.{name}: no result after {timeout_s:.0f} s", file=sys.stderr)
        return True, None, time.monotonic() - start
    print(done.stdout, end="", flush=True)
    figures = None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            figures = json.loads(line)
            break
    return done.returncode != 0 or figures is None, figures, time.monotonic() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="each benchmark at its CI size")
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})"
    )
    args = parser.parse_args(argv)
    names = available(args.names or BENCHMARKS)
    timeout_s = 120.0 if args.tiny else 1800.0
    summary: list[tuple[str, str, float]] = []
    # One database server for all: each benchmark still makes its own fresh database on it.
    with bench_server() as admin_url:
        env = {**os.environ, BENCH_URL_ENV: admin_url}
        for name in names:
            crashed, figures, seconds = run_one(name, args.tiny, env, timeout_s)
            verdict = (
                "CRASHED"
                if crashed
                else {True: "met", False: "not met", None: "n/a"}[figures.get("met") if figures else None]
            )
            summary.append((name, verdict, seconds))
    print()
    for name, verdict, seconds in summary:
        print(f"{name:<24} {verdict:<8} {seconds:6.1f} s")
    crashed_names = [name for name, verdict, _ in summary if verdict == "CRASHED"]
    if crashed_names:
        print(f"crashed: {', '.join(crashed_names)}", file=sys.stderr)
    return 1 if crashed_names else 0


if __name__ == "__main__":
    raise SystemExit(main())
