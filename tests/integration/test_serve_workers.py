"""`rowhook serve --workers N` as a real process tree: answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.integration.api_harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_rowhook_serve_with_two_workers_answers_and_exits_0_on_sigterm(db_url: str) -> None:
    port = free_port()
    env = {**os.environ, "ROWHOOK_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    command = "import sys; from rowhook.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            command,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "rowhook serve --workers 2 did not answer /health"
            time.sleep(0.05)
        workers = psutil.Process(process.pid).children()
        assert len(workers) >= 2  # the two workers (plus, perhaps, multiprocessing's resource tracker)
        for _ in range(20):  # every answer comes from one worker or the other, all healthy
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.communicate()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"worker processes left running: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
