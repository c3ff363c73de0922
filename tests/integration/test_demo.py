"""`rowhook demo` end to end, as a person runs it: a subprocess, real API, relay and receiver."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

DEMO_TIMEOUT_S = 240
OK_LINE = (
    "OK: all 5 expected pushes arrived, signed;"
    " nothing from the rollback, the other project or the other account"
)


def demo_env(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ROWHOOK_DATABASE_URL"}
    if database_url:
        env["ROWHOOK_DATABASE_URL"] = database_url
    return env


def run_demo(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rowhook", "demo", *args],
        env=demo_env(database_url),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )


def assert_summary(done: subprocess.CompletedProcess[str], embedded_in: Path | None = None) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert OK_LINE in done.stdout, output
    assert "5 of 5" in done.stdout  # expected pushes received, and signatures verified
    assert done.stdout.count("signature verified") == 5
    assert "BAD SIGNATURE" not in done.stdout and "UNEXPECTED" not in done.stdout
    assert re.search(r"excluded column \(secret_note\) in any payload\s*│\s*no\b", done.stdout)
    for event in ("tasks.created", "tasks.updated", "tasks.deleted"):
        assert f"◂ push {event}" in done.stdout
    assert "token rh_" in done.stdout  # the token and API URL are printed for a person...
    assert "curl" not in done.stdout  # ...but no invitation to try an API that has stopped already
    if embedded_in is not None:  # where the data stays, and how to remove it
        assert f"the embedded PostgreSQL's data stays in {embedded_in.resolve()}" in done.stdout
        assert "`rowhook demo --reset` deletes it" in done.stdout


def test_demo_on_an_embedded_server_runs_to_a_clean_summary(tmp_path: Path) -> None:
    assert_summary(run_demo("--data-dir", str(tmp_path / "pgdata")), embedded_in=tmp_path / "pgdata")
    # Run again on the same data directory: the demo replaces its own previous state.
    assert_summary(run_demo("--data-dir", str(tmp_path / "pgdata")), embedded_in=tmp_path / "pgdata")
    # --reset deletes the data directory, and says so; a second --reset finds nothing to delete.
    reset = run_demo("--reset", "--data-dir", str(tmp_path / "pgdata"))
    assert reset.returncode == 0 and f"deleted {(tmp_path / 'pgdata').resolve()}" in reset.stdout
    assert not (tmp_path / "pgdata").exists()
    again = run_demo("--reset", "--data-dir", str(tmp_path / "pgdata"))
    assert again.returncode == 0 and "nothing to delete" in again.stdout


def test_demo_uses_rowhook_database_url_when_set(db_url: str) -> None:
    assert_summary(run_demo(database_url=db_url))
    assert_summary(run_demo("--database-url", db_url))  # the option works too, and a rerun replaces the last
    with psycopg.connect(db_url) as conn:
        count = conn.execute("SELECT count(*) FROM rowhook.resources WHERE name = 'tasks'").fetchone()
    assert count == (1,)


def test_keep_running_serves_until_ctrl_c_then_stops_everything_and_exits_0(db_url: str) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "rowhook", "demo", "--keep-running"],
        env=demo_env(db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        for line in demo.stdout:
            seen.append(line)
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        assert "Ctrl-C stops everything" in "".join(seen), "".join(seen)
        assert "curl -H 'Authorization: Bearer rh_" in "".join(seen)  # the API is up: try it
        portal = re.search(r"portal (http://127\.0\.0\.1:\d+)/portal#token=(rh_\S+)", "".join(seen))
        assert portal, "".join(seen)
        with urllib.request.urlopen(f"{portal[1]}/portal", timeout=10) as page:
            assert page.status == 200 and b"rowhook delivery portal" in page.read()
        request = urllib.request.Request(
            f"{portal[1]}/subscriptions", headers={"authorization": f"Bearer {portal[2]}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # the link's token opens the account
            assert json.load(answer)["items"], "the demo's subscription is not in the portal's account"
        time.sleep(1)
        assert demo.poll() is None, "the demo exited although --keep-running was given"
        with psycopg.connect(db_url) as conn:
            running = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name IN ('rowhook-relay', 'rowhook-api')"
            ).fetchone()
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, "".join(seen) + rest
    assert "stopping" in rest
    assert running is not None and running[0] > 0, "no API or relay connection while the demo ran"
    assert connections_left(db_url) == 0, "the API or relay is still connected after Ctrl-C"


def connections_left(db_url: str) -> int:
    """Other sessions on the database, given a few seconds for backends of closed connections to exit."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(50):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if row is not None and row[0] == 0:
                return 0
            time.sleep(0.1)
    return int(row[0]) if row else -1
