"""Shared benchmark helpers: a fresh database, the receiver and relay processes, and result printing."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from rowhook.migrate import migrate
from rowhook.webhooks import new_secret

BENCH_URL_ENV = "ROWHOOK_BENCH_DATABASE_URL"
REPO_ROOT = Path(__file__).resolve().parent.parent
_database_names = itertools.count()


def parse_args(
    description: str | None,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """--tiny for every benchmark; `extra` adds a benchmark's own options."""
    parser = argparse.ArgumentParser(description=description)
    if extra:
        extra(parser)
    parser.add_argument("--tiny", action="store_true", help="a few seconds for CI (figures not meaningful)")
    return parser.parse_args(argv)


# -- database -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_server() -> Iterator[str]:
    """An admin URL: $ROWHOOK_BENCH_DATABASE_URL if set, else a throwaway embedded PostgreSQL."""
    if url := os.environ.get(BENCH_URL_ENV):
        yield url
        return
    from rowhook.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="rowhook-bench-") as tmp:
        server = start_embedded(Path(tmp) / "data", delete_on_stop=True)
        try:
            yield server.url()
        finally:
            server.stop()


@contextlib.contextmanager
def bench_database(admin_url: str | None = None, *, template: str | None = None) -> Iterator[str]:
    """A fresh database migrated with rowhook.migrate (on admin_url if given), dropped afterwards.

    With `template` (the URL of another bench database, which must have no open connection), a copy of
    that database: its rows and its planner statistics."""
    with contextlib.ExitStack() as stack:
        admin_url = admin_url or stack.enter_context(bench_server())
        name = f"rowhook_bench_{os.getpid()}_{next(_database_names)}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            copy_of = ""
            if template:
                copy_of = f' TEMPLATE "{psycopg.conninfo.conninfo_to_dict(template)["dbname"]}"'
                if admin.info.server_version >= 150000:  # no WAL for the whole copy
                    copy_of += " STRATEGY FILE_COPY"
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"{copy_of}')
        url = make_conninfo(admin_url, dbname=name)
        try:
            migrate(url)
            yield url
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


TASKS_DDL = """
CREATE TABLE tasks (
    id bigint PRIMARY KEY,
    account text NOT NULL,
    project_id text NOT NULL,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false
);
SELECT rowhook.watch('tasks', account_column => 'account', scope_columns => ARRAY['project_id']);
"""
# A title of this length gives webhook bodies of roughly 400 bytes, a typical small row.
TITLE = "x" * 200


def create_tasks(conn: psycopg.Connection[Any]) -> None:
    conn.execute(TASKS_DDL)


def insert_tasks(
    conn: psycopg.Connection[Any], first_id: int, count: int, *, account: str = "acme", project: str = "p1"
) -> None:
    """One statement (so one trigger call) writing `count` rows in one transaction."""
    conn.execute(
        "INSERT INTO tasks (id, account, project_id, title)"
        " SELECT g, %s, %s, %s FROM generate_series(%s::bigint, %s::bigint) AS g",
        (account, project, TITLE, first_id, first_id + count - 1),
    )


@dataclass
class Subscription:
    target_url: str
    account: str = "acme"
    resource: str = "tasks"
    filter: dict[str, Any] = field(default_factory=dict)
    events: tuple[str, ...] = ("created", "updated", "deleted")
    max_in_flight: int | None = None
    columns: tuple[str, ...] | None = None  # updates only of these columns; None: every update


def add_subscriptions(conn: psycopg.Connection[Any], subscriptions: Iterable[Subscription]) -> int:
    """Plain SQL, as a DBA or the API would write them; COPY so that 100,000 take a second or two."""
    count = 0
    columns = "account, resource, target_url, events, filter, secret, max_in_flight, columns"
    with conn.cursor() as cur, cur.copy(f"COPY rowhook.subscriptions ({columns}) FROM STDIN") as copy:
        for sub in subscriptions:
            events = "{" + ",".join(sub.events) + "}"
            copy.write_row(
                (
                    sub.account,
                    sub.resource,
                    sub.target_url,
                    events,
                    json.dumps(sub.filter),
                    new_secret(),
                    sub.max_in_flight or 8,
                    None if sub.columns is None else "{" + ",".join(sub.columns) + "}",
                )
            )
            count += 1
    conn.execute("ANALYZE rowhook.subscriptions")
    return count


def wait_for_deliveries(
    conn: psycopg.Connection[Any],
    event_filter_sql: str,
    params: Sequence[Any],
    expected: int,
    timeout_s: float,
) -> int:
    """Poll until `expected` delivery rows matching the condition are visible; returns monotonic ns."""
    deadline = time.monotonic() + timeout_s
    query = f"SELECT count(*) AS n FROM rowhook.deliveries WHERE {event_filter_sql}"
    while True:
        row = conn.execute(query, params).fetchone()
        now = time.monotonic_ns()
        if row and row["n"] >= expected:
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {row and row['n']} of {expected} deliveries after {timeout_s} s")
        time.sleep(0.001)


# -- receiver -------------------------------------------------------------------------------------------


class ReceiverProcess:
    """bench/receiver.py in its own process, so that it does not share a core's GIL with the writer."""

    def __init__(self, *, keep_arrivals: bool = True) -> None:
        cmd = [sys.executable, "-m", "bench.receiver"] + ([] if keep_arrivals else ["--no-arrivals"])
        self.process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 2 + len(self.PORT_NAMES) or line[0] != "PORTS":
            self.close()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.ports = dict(zip(("main", *self.PORT_NAMES), map(int, line[1:]), strict=True))
        self.port, self.dead_port = self.ports["main"], self.ports["dead"]
        self.base = f"http://127.0.0.1:{self.port}"

    # What bench/receiver.py serves besides the receiver, in the order it prints the ports.
    PORT_NAMES = ("dead", "fail500", "reset_headers", "reset_body", "refused")

    def url(self, group: str = "main") -> str:
        return f"{self.base}/ok/{group}"

    def dead_url(self, group: str = "dead") -> str:
        return f"http://127.0.0.1:{self.dead_port}/ok/{group}"

    def misbehaving_url(self, name: str) -> str:
        """A target that fails one way: `dead` (accepts, never answers), `fail500` (500 at once),
        `reset_headers` / `reset_body` (TCP reset mid-headers / mid-body), `refused` (nothing listens)."""
        return f"http://127.0.0.1:{self.ports[name]}/ok/{name}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._get("/stats")
        return stats

    def arrivals(self) -> list[tuple[int, str, str, str]]:
        return [tuple(a) for a in self._get("/arrivals")]

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(self.base + "/reset", method="POST"), timeout=30
        ).close()

    def wait_count(
        self, expected: int, timeout_s: float, *, group: str | None = None, relay: RelayProcess | None = None
    ) -> dict[str, Any]:
        """Poll until `expected` arrivals (in `group` if given); TimeoutError with the figure if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            got = stats["by_group"].get(group, 0) if group else stats["count"]
            if got >= expected:
                return stats
            if relay is not None:
                relay.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver got {got} of {expected} after {timeout_s:.0f} s")
            time.sleep(0.02)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- relay ----------------------------------------------------------------------------------------------

# `rowhook relay` from this checkout's interpreter; ROWHOOK_BENCH_RELAY_COMMAND may name another build.
RELAY_COMMAND_ENV = "ROWHOOK_BENCH_RELAY_COMMAND"
KEEP_LOGS_ENV = "ROWHOOK_BENCH_KEEP_LOGS"  # set to keep each relay's log file for a post-mortem
RELAY_COMMAND = [
    sys.executable,
    "-c",
    "import sys; from rowhook.cli import main; sys.exit(main(sys.argv[1:]))",
    "relay",
]


def relay_command() -> list[str]:
    override = os.environ.get(RELAY_COMMAND_ENV)
    return shlex.split(override) if override else RELAY_COMMAND


class RelayCrashed(RuntimeError):
    """The relay process exited while a benchmark still needed it."""


class RelayProcess:
    """`rowhook relay` as a black box: started with ROWHOOK_* settings, stopped with SIGTERM."""

    def __init__(self, url: str, *, wait_asleep: bool = True, **settings: Any) -> None:
        """Starts the relay; with `wait_asleep` returns once it idles (not for a backlog it would drain)."""
        self.url = url
        env = dict(os.environ)
        env.update(
            {
                "ROWHOOK_DATABASE_URL": url,
                "ROWHOOK_ALLOW_PRIVATE_TARGETS": "1",
                "ROWHOOK_LOG_LEVEL": "WARNING",
            }
        )
        if os.environ.get(RELAY_COMMAND_ENV):
            # The relay runs in this checkout (cwd), which `python -m`/`-c` put first on sys.path: the
            # other build given by PYTHONPATH would lose to this checkout's packages (A/B runs of main
            # measured this branch twice). Python 3.11+ leaves the cwd out with this.
            env.setdefault("PYTHONSAFEPATH", "1")
        env.update({f"ROWHOOK_{name.upper()}": str(value) for name, value in settings.items()})
        self.log = tempfile.NamedTemporaryFile(prefix="rowhook-relay-", suffix=".log", delete=False)  # noqa: SIM115
        with connect(url) as conn:
            known = {r["id"] for r in conn.execute("SELECT id FROM rowhook.relays")}
        self.process = subprocess.Popen(
            relay_command(), cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.pid = self.process.pid
        self.exit_code: int | None = None
        self.cpu_at_exit_s: float | None = None
        if wait_asleep:
            self._wait_asleep(known)

    def _wait_asleep(self, known: set[str], timeout_s: float = 30.0) -> None:
        """Ready = registered in rowhook.relays and asleep, i.e. the capture trigger will NOTIFY it."""
        deadline = time.monotonic() + timeout_s
        with connect(self.url) as conn:
            while time.monotonic() < deadline:
                self.check_alive()
                ids = {r["id"] for r in conn.execute("SELECT id FROM rowhook.relays WHERE sleeping")}
                if ids - known:
                    return
                time.sleep(0.02)
        self.stop()
        raise RelayCrashed(
            f"relay did not register as sleeping in rowhook.relays within {timeout_s:.0f} s;"
            f" log:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RelayCrashed(f"relay exited with code {code}; log:\n{self.log_tail()}")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the relay has used so far; after stop(), all it used."""
        if self.cpu_at_exit_s is not None:
            return self.cpu_at_exit_s
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited in time; returns the exit code."""
        if self.process.poll() is None:
            # The CPU time of the children this process reaps: the relay's whole, graceful stop included.
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cpu_at_exit_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        self.exit_code = self.process.returncode
        return self.exit_code

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        if os.environ.get(KEEP_LOGS_ENV):
            print(f"relay log kept: {self.log.name}", file=sys.stderr)
        else:
            os.unlink(self.log.name)


class RssSampler:
    """Samples the resident set size of a process and its children from a thread."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current_bytes(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.current_bytes()
            except psutil.Error:
                return
            self.peak_bytes = max(self.peak_bytes, rss)
            self.samples += 1
            self._stop.wait(self.interval_s)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


class PgCpuSampler:
    """CPU seconds the PostgreSQL server spends for one database between start() and stop().

    Counts the postmaster, every backend connected to the database and the server's background processes
    (checkpointer, WAL writer, autovacuum...), found through pg_stat_activity and read with psutil every
    `interval_s` (so a connection opened and closed between two samples is missed; the relay's are not).
    Needs the server on this machine: `available` is False otherwise. On a server shared with other
    databases, their share of the background processes' work is counted too."""

    def __init__(self, url: str, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.conn = connect(url)
        row = self.conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert row is not None
        self.own_pid = row["pid"]
        self.procs: dict[int, psutil.Process] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.started_at = 0.0
        self.postmaster: psutil.Process | None = None
        with contextlib.suppress(psutil.Error):
            backend = psutil.Process(self.own_pid)
            if "postgres" in backend.name() or "postgres" in " ".join(backend.cmdline()[:1]):
                self.postmaster = backend.parent()
        self.available = self.postmaster is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pids = {
            r["pid"]
            for r in self.conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE (datname = current_database() OR datname IS NULL) AND pid <> pg_backend_pid()"
            )
        }
        if self.postmaster is not None:
            pids.add(self.postmaster.pid)
        for pid in pids:
            try:
                proc = self.procs.get(pid) or self.procs.setdefault(pid, psutil.Process(pid))
                times = proc.cpu_times()
                cpu = times.user + times.system
                if pid not in self.first:
                    # Born since start(): all its CPU counts; older: only what it uses from now on.
                    self.first[pid] = 0.0 if proc.create_time() >= self.started_at else cpu
                self.last[pid] = cpu
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(psutil.Error, psycopg.Error):
                self._sample()

    def start(self) -> PgCpuSampler:
        self.started_at = time.time() - 0.5  # create_time() has a coarse resolution
        if self.available:
            self._sample()
            self._thread.start()
        return self

    def stop(self) -> float | None:
        """CPU seconds since start(), or None where the server's processes cannot be seen."""
        if not self.available:
            self.conn.close()
            return None
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error, psycopg.Error):
            self._sample()
        self.conn.close()
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


# Tables that hold no per-delivery bookkeeping; every other table of schema rowhook does, whatever the
# schema becomes.
NOT_BOOKKEEPING = ("outbox", "subscriptions", "resources", "tokens", "relays", "migrations")


def bookkeeping_bytes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """VACUUM each table of schema rowhook that holds deliveries or attempts, then its size with indexes
    and TOAST (pg_total_relation_size), by table name."""
    tables = [
        r["name"]
        for r in conn.execute(
            "SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'rowhook' AND c.relkind = 'r' AND c.relname <> ALL (%s) ORDER BY 1",
            (list(NOT_BOOKKEEPING),),
        )
    ]
    sizes: dict[str, int] = {}
    for name in tables:
        conn.execute(f'VACUUM rowhook."{name}"')
        row = conn.execute(
            "SELECT pg_total_relation_size(%s::regclass) AS n", (f'rowhook."{name}"',)
        ).fetchone()
        assert row is not None
        sizes[name] = int(row["n"])
    return sizes


# -- figures --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def steady_rate(timestamps_ns: Sequence[int], trim: float = 0.1) -> float:
    """Arrivals per second between the 10th and 90th percentile arrival: start-up and tail excluded."""
    ordered = sorted(timestamps_ns)
    if len(ordered) < 10:
        span = (ordered[-1] - ordered[0]) / 1e9 if len(ordered) > 1 else 0.0
        return (len(ordered) - 1) / span if span > 0 else float("nan")
    lo, hi = int(len(ordered) * trim), int(len(ordered) * (1 - trim)) - 1
    return (hi - lo) / ((ordered[hi] - ordered[lo]) / 1e9)


@dataclass
class Result:
    """One benchmark's figures: a table for people and one JSON line for machines."""

    name: str
    tiny: bool
    goal: str
    met: bool | None
    rows: list[tuple[str, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, label: str, value: Any, fmt: str = "{}", key: str | None = None) -> None:
        self.rows.append((label, fmt.format(value) if isinstance(value, int | float) else str(value)))
        if key:
            self.figures[key] = round(value, 6) if isinstance(value, float) else value

    def print(self) -> None:
        verdict = "n/a" if self.met is None else ("MET" if self.met else "NOT MET")
        size = "tiny (figures not meaningful)" if self.tiny else "full"
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"{self.name} — {size}")
            table.add_column("measure")
            table.add_column("value", justify="right")
            for label, value in self.rows:
                table.add_row(label, value)
            Console(width=110).print(table)
        except ImportError:  # plain text where rich is missing
            print(f"{self.name} — {size}")
            for label, value in self.rows:
                print(f"  {label:<50} {value:>14}")
        print(f"goal: {self.goal} — {verdict}")
        payload = {
            "benchmark": self.name,
            "size": "tiny" if self.tiny else "full",
            "goal": self.goal,
            "met": self.met,
            **self.figures,
        }
        print(json.dumps(payload), flush=True)
