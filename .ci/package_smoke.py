"""Smoke test of an installed rowhook, run by the venv's python outside any checkout (package_smoke.sh)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

import rowhook
from rowhook.embedded import start_embedded
from rowhook.sqlfiles import sql_dir
from rowhook.tokens import hash_token


def run(rowhook_bin: str, *args: str, url: str) -> str:
    env = {**os.environ, "ROWHOOK_DATABASE_URL": url}
    done = subprocess.run([rowhook_bin, *args], env=env, capture_output=True, text=True, timeout=120)
    print(f"$ rowhook {' '.join(args)}\n{done.stdout}{done.stderr}", end="")
    if done.returncode != 0:
        raise SystemExit(f"rowhook {' '.join(args)} exited {done.returncode}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_serve(rowhook_bin: str, url: str) -> None:
    port = free_port()
    env = {**os.environ, "ROWHOOK_DATABASE_URL": url}
    server = subprocess.Popen([rowhook_bin, "serve", "--port", str(port)], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("rowhook serve did not answer GET /health") from None
                time.sleep(0.2)
        print(f"rowhook serve answered GET /health on port {port}")
        check_portal(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        code = server.wait(timeout=30)
        assert code == 0, f"rowhook serve exited {code} on SIGTERM, not 0"


PORTAL_FILES = {
    "/portal": "text/html",
    "/portal/portal.js": "javascript",
    "/portal/api.js": "javascript",
    "/portal/portal.css": "text/css",
}


def check_portal(base: str) -> None:
    """The delivery portal's files come from the installed package, served without a token."""
    for path, kind in PORTAL_FILES.items():
        with urllib.request.urlopen(base + path, timeout=5) as answer:
            assert answer.status == 200 and kind in answer.headers["content-type"], (path, answer.headers)
            assert answer.read(), f"{path} is empty"
    print(f"rowhook serve served the portal: {', '.join(PORTAL_FILES)}")


def check_demo(rowhook_bin: str) -> None:
    """The demo on its own embedded server, as on a machine with nothing but Python and the package."""
    env = {k: v for k, v in os.environ.items() if k != "ROWHOOK_DATABASE_URL"}
    with tempfile.TemporaryDirectory(prefix="rowhook-smoke-demo-") as tmp:
        done = subprocess.run(
            [rowhook_bin, "demo", "--data-dir", f"{tmp}/pgdata"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    print(done.stdout[-2000:], done.stderr[-2000:])
    if done.returncode != 0 or "OK: all 5 expected pushes arrived" not in done.stdout:
        raise SystemExit(f"rowhook demo exited {done.returncode} without its OK summary")
    print("rowhook demo ran to its OK summary")


def smoke(rowhook_bin: str, url: str) -> None:
    installed = Path(rowhook.__file__).parent
    assert sql_dir() == installed / "sql", f"sql/ not taken from the installed package: {sql_dir()}"
    version = run(rowhook_bin, "--version", url=url).strip()
    assert version == f"rowhook {rowhook.__version__}" and "checkout" not in version, version

    run(rowhook_bin, "migrate", url=url)
    assert "up to date" in run(rowhook_bin, "migrate", url=url)

    schema, resource = f"rowhook_smoke_{os.getpid()}", f"smoke_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(
            f"CREATE TABLE {schema}.items (id int PRIMARY KEY, account_id text NOT NULL, secret text)"
        )
    token = ""
    try:
        run(
            rowhook_bin,
            "watch",
            f"{schema}.items",
            "--resource",
            resource,
            "--account-column",
            "account_id",
            "--exclude",
            "secret",
            url=url,
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {schema}.items VALUES (1, 'smoke', 'hidden')")
            conn.execute("SELECT rowhook.expand_changes()")  # what the relay does before fanning out
            captured = "SELECT op, data FROM rowhook.outbox WHERE resource = %s"
            row = conn.execute(captured, (resource,)).fetchone()
        assert row == ("created", {"id": 1, "account_id": "smoke"}), row
        token = run(rowhook_bin, "token", "create", "--account", "smoke", "--name", "package smoke", url=url)
        assert token.strip().startswith("rh_"), token
        run(rowhook_bin, "status", url=url)
        run(rowhook_bin, "prune", "--older-than", "7d", url=url)
        check_serve(rowhook_bin, url)
        run(rowhook_bin, "unwatch", f"{schema}.items", url=url)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute("DELETE FROM rowhook.outbox WHERE resource = %s", (resource,))
            if token:
                revoke = "UPDATE rowhook.tokens SET revoked_at = now() WHERE token_hash = %s"
                conn.execute(revoke, (hash_token(token.strip()),))
    check_demo(rowhook_bin)
    print("smoke test passed")


def main() -> None:
    rowhook_bin = sys.argv[1]
    if len(sys.argv) > 2:
        smoke(rowhook_bin, sys.argv[2])
        return
    with tempfile.TemporaryDirectory(prefix="rowhook-smoke-pg-") as tmp:
        server = start_embedded(Path(tmp) / "data", delete_on_stop=True)
        try:
            smoke(rowhook_bin, server.url())
        finally:
            server.stop()


if __name__ == "__main__":
    main()
