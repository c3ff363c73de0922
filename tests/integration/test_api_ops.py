"""/health, /metrics and `rowhook serve` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rowhook.settings import Settings
from tests.integration.api_harness import (
    Api,
    Conn,
    assert_problem,
    free_port,
    running_api,
)
from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_and_read_gauges_from_the_database(api: Api) -> None:
    sub = api.subscribe()
    paused = api.subscribe()
    api.acme.patch(f"/subscriptions/{paused['id']}", json={"status": "paused"})
    api.acme.post(f"/subscriptions/{sub['id']}/test")
    for _ in range(3):
        api.acme.get("/subscriptions/sub_nope")
    with api.client() as anonymous:
        anonymous.get("/subscriptions")
    api.project("acme", "p")  # one undispatched outbox event
    response = api.acme.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)

    def requests(method: str, route: str, status: str) -> float:
        key = frozenset({"method": method, "route": route, "status": status}.items())
        return found.get(("rowhook_api_requests_total", key), 0)

    assert requests("GET", "/subscriptions/{subscription_id}", "404") == 3
    assert requests("POST", "/subscriptions", "201") == 2
    assert requests("GET", "/subscriptions", "401") == 1
    latency = found[
        (
            "rowhook_api_request_duration_seconds_count",
            frozenset({"method": "GET", "route": "/subscriptions/{subscription_id}"}.items()),
        )
    ]
    assert latency == 3
    assert found[("rowhook_deliveries_pending", frozenset())] == 1
    assert found[("rowhook_outbox_undispatched_events", frozenset())] == 1
    assert found[("rowhook_outbox_lag_seconds", frozenset())] > 0
    assert found[("rowhook_subscriptions", frozenset({("status", "active")}))] == 1
    assert found[("rowhook_subscriptions", frozenset({("status", "paused")}))] == 1
    assert found[("rowhook_subscriptions", frozenset({("status", "disabled")}))] == 0


def test_health_answers_503_problem_while_the_database_refuses_connections(
    api: Api, pg_server: PgServer
) -> None:
    with api.client() as anonymous:
        assert anonymous.get("/health").status_code == 200
        database = api.conn.execute("SELECT current_database() AS name").fetchone()
        assert database is not None
        pg_server.admin(f'ALTER DATABASE "{database["name"]}" ALLOW_CONNECTIONS false')
        try:
            api.conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'rowhook-api'"
            )
            assert_problem(anonymous.get("/health"), 503, "database is unavailable")
        finally:
            pg_server.admin(f'ALTER DATABASE "{database["name"]}" ALLOW_CONNECTIONS true')
        assert anonymous.get("/health").status_code == 200  # the pool reconnects by itself


def test_rowhook_serve_runs_until_sigterm_and_exits_0(db_url: str) -> None:
    port = free_port()
    env = {**os.environ, "ROWHOOK_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from rowhook.cli import main; sys.exit(main())",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "rowhook serve did not answer /health"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_metrics_take_no_account_token_and_want_the_metrics_token_when_set(conn: Conn, db_url: str) -> None:
    # Figures cover every account, so an account's token must not be what opens them.
    with running_api(conn, db_url, Settings(metrics_token="m3tr1cs")) as guarded:
        assert_problem(guarded.acme.get("/metrics"), 401, "ROWHOOK_METRICS_TOKEN")
        with guarded.client() as anonymous:
            assert_problem(anonymous.get("/metrics"), 401, "ROWHOOK_METRICS_TOKEN")
        with guarded.client("m3tr1cs") as scraper:
            assert scraper.get("/metrics").status_code == 200
            # ...and the metrics token opens nothing else.
            assert_problem(scraper.get("/subscriptions"), 401, "unknown or revoked token")


def test_metrics_are_open_without_a_metrics_token(api: Api) -> None:
    with api.client() as anonymous:
        assert anonymous.get("/metrics").status_code == 200
