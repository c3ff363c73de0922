"""Operator mistakes, as a person makes them: the real CLI as a subprocess, one line that says what to do,
and the exit code. Each test backs a row of the table in docs/operations.md ("what went wrong")."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from rowhook.embedded import EmbeddedPostgres
from rowhook.preflight import required_schema_version
from tests.integration.api_harness import free_port
from tests.pgserver import embedded_server

ROOT = Path(__file__).resolve().parents[2]
# Generous bounds for "stops within a second": a busy CI machine must not make these flaky.
STOP_BOUND_S = 5.0
NO_DATABASE = "rowhook: no database configured: set ROWHOOK_DATABASE_URL or pass --database-url"


def env_without_database(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ROWHOOK_DATABASE_URL"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def rowhook(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rowhook.cli", *args],
        env=env_without_database(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with `code` and printed one line (no traceback) holding every word."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def spawn(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rowhook.cli", *args],
        env=env_without_database(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def stop_within_bound(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, then the exit code and stderr; fails if the process takes longer than STOP_BOUND_S."""
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"still running {STOP_BOUND_S} s after SIGTERM:\n{stderr}")
    return process.returncode, stderr


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout_s: float = 60) -> list[str]:
    """Read stderr until a line holding `needle` arrives; the lines read so far."""
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    pytest.fail(f"no line with {needle!r} in:\n{''.join(seen)}")


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["token", "create", "--account", "acme"],
        ["serve"],
        ["relay"],
        ["migrate"],
        ["watch", "tasks", "--public"],
        ["prune"],
    ],
)
def test_without_a_database_a_command_says_so_and_exits_2(command: list[str]) -> None:
    done = rowhook(*command)
    assert one_line_error(done, 2) == NO_DATABASE
    assert "embedded" not in done.stderr.lower()  # no server was started behind the user's back


def test_database_url_is_taken_after_the_subcommand_by_every_command(db_url: str) -> None:
    created = rowhook("token", "create", "--account", "acme", "--database-url", db_url)
    assert created.returncode == 0 and created.stdout.startswith("rh_"), created.stderr
    before = rowhook("token", "--database-url", db_url, "list")
    assert before.returncode == 0 and "acme" in before.stdout, before.stderr
    for command in (["status"], ["prune"], ["migrate"]):
        done = rowhook(*command, "--database-url", db_url)
        assert done.returncode == 0, (command, done.stderr)


def test_bad_arguments_are_one_line_and_help_shows_defaults() -> None:
    done = rowhook("serve", "--port", "99999")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --port: 99999 is out of range (use from 1 to 65535)" in done.stderr.splitlines()[-1]
    batch = rowhook("prune", "--batch-size", "0")
    assert batch.returncode == 2 and "argument --batch-size: 0 is out of range" in batch.stderr
    helped = rowhook("serve", "--help")
    assert helped.returncode == 0
    assert "(default: 8000)" in helped.stdout and "(default: 127.0.0.1)" in helped.stdout


def remove_newest_migration_record(db_url: str) -> int:
    needed = required_schema_version()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM rowhook.migrations WHERE version = %s", (needed,))
    return needed


@pytest.mark.parametrize("command", [["serve"], ["relay"], ["status"]])
def test_a_database_without_the_schema_is_refused_at_start(
    empty_db_url: str, db_url: str, command: list[str]
) -> None:
    needed = required_schema_version()
    empty = rowhook(*command, "--database-url", empty_db_url)
    one_line_error(
        empty, 2, f"has no rowhook schema, this rowhook needs version {needed}: run `rowhook migrate`"
    )
    remove_newest_migration_record(db_url)
    old = rowhook(*command, "--database-url", db_url)
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    one_line_error(
        old,
        2,
        f"database {name} has rowhook schema version {needed - 1}, this rowhook needs {needed}:"
        " run `rowhook migrate`",
    )


@pytest.mark.parametrize("command", [["serve"], ["relay"], ["migrate"]])
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"dbname": "rowhook_no_such_database"}, 'database "rowhook_no_such_database" does not exist'),
        ({"sslmode": "bogus"}, 'invalid sslmode value: "bogus"'),
        ({"user": "rowhook_no_such_role"}, 'role "rowhook_no_such_role" does not exist'),
    ],
)
def test_connection_errors_that_retrying_cannot_fix_end_the_process_at_start(
    db_url: str, command: list[str], change: dict[str, str], words: str
) -> None:
    url = make_conninfo(db_url, **change)
    started = time.monotonic()
    done = rowhook(*command, "--database-url", url, timeout=30)
    one_line_error(done, 2, words, "ROWHOOK_DATABASE_URL")
    assert time.monotonic() - started < 30  # not retried forever (the bound is generous on purpose)


@pytest.mark.parametrize("command", [["serve"], ["relay"]])
def test_an_unreachable_server_is_retried_with_a_line_per_step_and_sigterm_stops_the_wait(
    command: list[str],
) -> None:
    closed = free_port()  # nothing listens there: "connection refused", as while a server restarts
    process = spawn(*command, "--database-url", f"postgresql://rowhook@127.0.0.1:{closed}/app")
    try:
        seen = wait_for_line(process, "retrying in 1.0 s")
        assert any("retrying in 0.5 s" in line for line in seen), seen
        code, rest = stop_within_bound(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, rest
    assert "Traceback" not in "".join(seen) + rest


def test_the_relay_stops_within_a_second_of_sigterm_once_running(db_url: str) -> None:
    process = spawn("relay", "--database-url", db_url)
    try:
        wait_for_line(process, "started")
        code, rest = stop_within_bound(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, rest


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, str]]:
    """`rowhook serve` as a subprocess on a free port: (base URL, a token of account acme)."""
    token = rowhook("token", "create", "--account", "acme", "--database-url", db_url).stdout.strip()
    port = free_port()
    process = spawn("serve", "--port", str(port), "--database-url", db_url)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "rowhook serve did not answer /health"
            time.sleep(0.05)
        yield base, token
        code, stderr = stop_within_bound(process)
        assert code == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_health_reports_the_schema_version_and_answers_503_when_it_falls_behind(
    served: tuple[str, str], db_url: str
) -> None:
    base, _ = served
    needed = required_schema_version()
    assert httpx.get(f"{base}/health").json() == {
        "status": "ok",
        "database": "ok",
        "schema_version": needed,
        "schema_needed": needed,
    }
    remove_newest_migration_record(db_url)  # as if an older schema were restored under a running API
    behind = httpx.get(f"{base}/health")
    assert behind.status_code == 503
    assert behind.json()["detail"] == (
        f"database {psycopg.conninfo.conninfo_to_dict(db_url)['dbname']} has rowhook schema version"
        f" {needed - 1}, this rowhook needs {needed}: run `rowhook migrate`"
    )


def test_only_real_query_parameters_are_listed_and_accepted(served: tuple[str, str]) -> None:
    base, token = served
    auth = {"authorization": f"Bearer {token}"}
    unknown = httpx.get(f"{base}/subscriptions?page=2", headers=auth)
    assert unknown.status_code == 400
    assert unknown.json()["detail"] == (
        "page: unknown query parameter (this route takes: cursor, limit, resource, status)"
    )
    for internal in ("account", "conn", "settings"):
        refused = httpx.get(f"{base}/subscriptions?{internal}=globex", headers=auth)
        assert refused.status_code == 400, (internal, refused.text)
        assert refused.json()["detail"].startswith(f"{internal}: unknown query parameter")
    assert httpx.get(f"{base}/subscriptions?limit=1", headers=auth).status_code == 200


def test_a_missing_field_is_named(served: tuple[str, str]) -> None:
    base, token = served
    answer = httpx.post(
        f"{base}/subscriptions",
        headers={"authorization": f"Bearer {token}"},
        json={"target_url": "https://93.184.215.14/hook"},
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == "resource: required"
    assert answer.json()["errors"] == [{"field": "resource", "reason": "required"}]


def test_the_openapi_documents_and_ui_pages_are_served_without_external_urls(
    served: tuple[str, str],
) -> None:
    base, _ = served
    yaml_doc = httpx.get(f"{base}/schema/openapi.yaml")
    assert yaml_doc.status_code == 200 and "openapi:" in yaml_doc.text
    for page in ("/schema", "/schema/swagger", "/schema/scalar"):
        html = httpx.get(f"{base}{page}")
        assert html.status_code == 200, page
        external = re.findall(r"""(?:src|href)=["']?((?:https?:)?//[^"' >]+)""", html.text)
        assert external == [], (page, external)
        for asset in re.findall(r"""(?:src|href)=["']?(/schema/assets/[^"' >]+)""", html.text):
            served_asset = httpx.get(f"{base}{asset}")
            assert served_asset.status_code == 200 and len(served_asset.content) > 10, asset


def serve_process(db_url: str, port: int, nofile: int | None = None, **env: str) -> subprocess.Popen[str]:
    def limit_files() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return subprocess.Popen(
        [sys.executable, "-m", "rowhook.cli", "serve", "--port", str(port), "--database-url", db_url],
        env=env_without_database(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=limit_files,
    )


def wait_for_health(base: str, process: subprocess.Popen[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"{base}/health did not answer 200 within {timeout_s} s")


def silent_connections(port: int, count: int) -> list[socket.socket]:
    """Clients that connect and never send a byte."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def test_connections_over_the_limit_are_refused_at_once_and_silent_clients_are_closed(db_url: str) -> None:
    port = free_port()
    process = serve_process(db_url, port, ROWHOOK_API_MAX_CONNECTIONS="5", ROWHOOK_API_READ_TIMEOUT_S="1s")
    base = f"http://127.0.0.1:{port}"
    silent: list[socket.socket] = []
    try:
        wait_for_health(base, process)
        silent = silent_connections(port, 8)
        for extra in silent[5:]:  # over the limit: a 503 answer and a closed connection, at once
            extra.settimeout(STOP_BOUND_S)
            assert extra.recv(200).startswith(b"HTTP/1.1 503")
        for sock in silent[:5]:  # silent: closed by the server after the read timeout (1 s; bound 5 s)
            sock.settimeout(STOP_BOUND_S)
            assert sock.recv(200) == b""
        wait_for_health(base, process, timeout_s=STOP_BOUND_S)
        code, stderr = stop_within_bound(process)
    finally:
        for sock in silent:
            sock.close()
        if process.poll() is None:
            process.kill()
    assert code == 0, stderr
    assert stderr.count("refusing connections: 5 are open (ROWHOOK_API_MAX_CONNECTIONS)") == 1, stderr
    assert stderr.count("closed a connection that sent no whole request within 1 s") == 1, stderr
    assert "Traceback" not in stderr


def test_out_of_file_descriptors_the_api_logs_once_per_interval_and_recovers(db_url: str) -> None:
    port = free_port()
    # 96 file descriptors, 200 silent clients: accept() runs out, as with 1,100 clients under ulimit 1024.
    process = serve_process(db_url, port, nofile=96, ROWHOOK_API_READ_TIMEOUT_S="1s")
    base = f"http://127.0.0.1:{port}"
    silent: list[socket.socket] = []
    try:
        wait_for_health(base, process)
        silent = silent_connections(port, 200)
        time.sleep(2)
        wait_for_health(base, process, timeout_s=60)  # silent clients closed: it accepts again
        code, stderr = stop_within_bound(process)
    finally:
        for sock in silent:
            sock.close()
        if process.poll() is None:
            process.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr[:5000]
    assert 1 <= stderr.count("cannot accept connections") <= 8, stderr
    assert len(stderr.splitlines()) < 40, stderr


def test_status_tells_when_the_relay_refuses_targets_the_api_accepted(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, account_id text NOT NULL)")
        conn.execute("SELECT rowhook.watch('notes', account_column => 'account_id')")
    token = rowhook("token", "create", "--account", "acme", "--database-url", db_url).stdout.strip()
    port = free_port()
    api = serve_process(db_url, port, ROWHOOK_ALLOW_PRIVATE_TARGETS="1")  # the API allows local targets
    relay = spawn("relay", "--database-url", db_url)  # ...the relay does not
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, api)
        auth = {"authorization": f"Bearer {token}"}
        sub = httpx.post(
            f"{base}/subscriptions",
            headers=auth,
            json={"target_url": f"http://127.0.0.1:{free_port()}/hook", "resource": "notes"},
        )
        assert sub.status_code == 201, sub.text
        assert httpx.post(f"{base}/subscriptions/{sub.json()['id']}/test", headers=auth).status_code == 201
        with psycopg.connect(db_url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while not conn.execute("SELECT count(*) FROM rowhook.delivery_attempts").fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "the relay made no attempt"
                time.sleep(0.1)
    finally:
        for process in (api, relay):
            if process.poll() is None:
                stop_within_bound(process)
    status = rowhook("status", "--database-url", db_url)
    assert status.returncode == 0, status.stderr
    assert (
        "warning: relays refused 1 deliveries of 1 subscriptions in the last 24 h to targets the API"
        " accepted: the relay and the API disagree about ROWHOOK_ALLOW_PRIVATE_TARGETS" in status.stdout
    ), status.stdout


def pg_ctl(server: EmbeddedPostgres, *args: str) -> None:
    server._module.pg_ctl(  # type: ignore[attr-defined]
        ["-w", *args], pgdata=server._server.pgdata, user=server._server.system_user, timeout=60
    )


@pytest.mark.slow
def test_the_first_request_after_the_database_comes_back_succeeds() -> None:
    with embedded_server() as server:
        url = server.url("postgres")
        assert rowhook("migrate", "--database-url", url).returncode == 0
        token = rowhook("token", "create", "--account", "acme", "--database-url", url).stdout.strip()
        port = free_port()
        process = serve_process(url, port)
        base = f"http://127.0.0.1:{port}"
        auth = {"authorization": f"Bearer {token}"}
        try:
            wait_for_health(base, process)
            assert httpx.get(f"{base}/subscriptions", headers=auth).status_code == 200
            # A restart while the API is idle: every pooled connection is cut.
            server.restart()
            assert httpx.get(f"{base}/subscriptions", headers=auth, timeout=30).status_code == 200
            assert httpx.get(f"{base}/health", timeout=30).status_code == 200
            # Down for a while, with requests meanwhile (503), then back: the first request succeeds.
            pg_ctl(server, "-m", "fast", "stop")
            for _ in range(3):
                down = httpx.get(f"{base}/subscriptions", headers=auth, timeout=30)
                assert down.status_code == 503 and down.json()["detail"].startswith("the database"), down.text
                time.sleep(1)
            socket_dir = psycopg.conninfo.conninfo_to_dict(url)["host"]
            pg_ctl(server, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server._server.log), "start")
            assert httpx.get(f"{base}/subscriptions", headers=auth, timeout=30).status_code == 200
            code, stderr = stop_within_bound(process)
        finally:
            if process.poll() is None:
                process.kill()
        assert code == 0, stderr
