"""Tenancy as a property: random writes over three accounts, every pushed body checked against a model.

Hypothesis draws transactions of inserts, updates (moving rows between accounts and projects),
deletes, rolled-back savepoints and rolled-back transactions; a real relay pushes the captured changes
to a real receiver; the bodies each subscription received must be exactly the events the model says its
account may see, and no body may hold a byte of an excluded column."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from tests.integration.relay_harness import Receiver, new_secret, running_relay, subscribe

ACCOUNTS = ("acme", "globex", "initech")
PROJECTS = (1, 2, 3)
IDS = range(1, 6)
EXAMPLES = 60
SECRET_MARK = "SECRET-"

Row = dict[str, Any]
Expected = tuple[str, str, str, str, str]  # path, type, key, data JSON, previous JSON


@dataclass(frozen=True)
class Sub:
    account: str
    events: tuple[str, ...]
    project: int | None  # the filter on project_id, None for no filter


@dataclass
class Model:
    """The table as committed, and the events each account may see, in capture terms."""

    rows: dict[int, Row] = field(default_factory=dict)
    events: list[tuple[str, str, Row, Row | None, Row | None]] = field(default_factory=list)
    # (op, account, data, previous, old scope row for updates)

    def apply(self, op: tuple[Any, ...]) -> None:
        kind, row_id = op[0], op[1]
        old = self.rows.get(row_id)
        if kind == "insert" and old is None:
            new = {"id": row_id, "account_id": op[2], "project_id": op[3], "title": op[4]}
            self.rows[row_id] = new
            self.events.append(("created", op[2], new, None, None))
        elif kind == "update" and old is not None:
            new = {**old, "account_id": op[2], "project_id": op[3], "title": op[4]}
            self.rows[row_id] = new
            if new["account_id"] != old["account_id"]:
                self.events.append(("deleted", old["account_id"], old, None, None))
                self.events.append(("created", new["account_id"], new, None, None))
            elif new != old:
                previous = {k: old[k] for k in old if old[k] != new[k]}
                self.events.append(("updated", new["account_id"], new, previous, old))
        elif kind == "delete" and old is not None:
            del self.rows[row_id]
            self.events.append(("deleted", old["account_id"], old, None, None))

    def expected(self, subs: dict[str, Sub], resource: str) -> Counter[Expected]:
        found: Counter[Expected] = Counter()
        for op, account, data, previous, old in self.events:
            for path, sub in subs.items():
                scopes = [data["project_id"]] + ([old["project_id"]] if old else [])
                if sub.account != account or op not in sub.events:
                    continue
                if sub.project is not None and sub.project not in scopes:
                    continue
                found[(path, f"{resource}.{op}", str(data["id"]), canonical(data), canonical(previous))] += 1
        return found


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


ops = st.one_of(
    st.tuples(
        st.just("insert"),
        st.sampled_from(IDS),
        st.sampled_from(ACCOUNTS),
        st.sampled_from(PROJECTS),
        st.text("ab", max_size=3),
    ),
    st.tuples(
        st.just("update"),
        st.sampled_from(IDS),
        st.sampled_from(ACCOUNTS),
        st.sampled_from(PROJECTS),
        st.text("ab", max_size=3),
    ),
    st.tuples(st.just("delete"), st.sampled_from(IDS)),
    st.tuples(st.just("secret"), st.sampled_from(IDS)),  # changes only the excluded column
)
mostly = st.sampled_from((False, False, False, True))  # rolled back one time in four
# A transaction: its statements, each maybe inside a savepoint that is rolled back; then commit or not.
transactions = st.lists(
    st.tuples(
        st.lists(st.tuples(ops, mostly), min_size=1, max_size=4), mostly.map(lambda rollback: not rollback)
    ),
    min_size=1,
    max_size=8,
)
# Every example starts from committed rows, so that updates and deletes find something.
first_rows = st.lists(
    st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(PROJECTS)), min_size=len(IDS), max_size=len(IDS)
)
subscriptions = st.lists(
    st.builds(
        Sub,
        st.sampled_from(ACCOUNTS),
        st.sets(st.sampled_from(("created", "updated", "deleted")), min_size=1).map(
            lambda s: tuple(sorted(s))
        ),
        st.one_of(st.none(), st.sampled_from(PROJECTS)),
    ),
    min_size=1,
    max_size=5,
)


class Background:
    """A receiver and a relay running in an event loop of their own thread, for a synchronous test."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.receiver = Receiver()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        await self.receiver.start()
        try:
            async with running_relay(self.db_url):
                self.ready.set()
                await self.stop.wait()
        finally:
            await self.receiver.stop()

    def __enter__(self) -> Background:
        self.thread.start()
        assert self.ready.wait(30), "relay and receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture
def background(db_url: str) -> Iterator[Background]:
    with Background(db_url) as running:
        yield running


def run_transaction(
    conn: psycopg.Connection[Row], table: str, statements: list[Any], commit: bool, model: Model
) -> None:
    staged = Model(rows=dict(model.rows))
    with conn.transaction(force_rollback=not commit):
        for op, rolled_back in statements:
            if rolled_back:
                with conn.transaction(force_rollback=True):  # a savepoint rolled back
                    execute(conn, table, op)
                continue
            execute(conn, table, op)
            staged.apply(op)
    if commit:
        model.rows = staged.rows
        model.events.extend(staged.events)


def execute(conn: psycopg.Connection[Row], table: str, op: tuple[Any, ...]) -> None:
    kind, row_id = op[0], op[1]
    if kind == "insert":
        conn.execute(
            f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",  # type: ignore[arg-type]
            (row_id, op[2], op[3], op[4], f"{SECRET_MARK}{row_id}"),
        )
    elif kind == "update":
        conn.execute(
            f"UPDATE {table} SET account_id = %s, project_id = %s, title = %s WHERE id = %s",  # type: ignore[arg-type]
            (op[2], op[3], op[4], row_id),
        )
    elif kind == "delete":
        conn.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,))  # type: ignore[arg-type]
    else:
        conn.execute(
            f"UPDATE {table} SET secret = secret || 'x' WHERE id = %s",  # type: ignore[arg-type]
            (row_id,),
        )


def settled(conn: psycopg.Connection[Row], resource: str) -> bool:
    row = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM rowhook.outbox WHERE resource = %s AND dispatched_at IS NULL)"
        " AND NOT EXISTS (SELECT 1 FROM rowhook.changes WHERE resource = %s)"
        " AND NOT EXISTS (SELECT 1 FROM rowhook.deliveries WHERE event_type LIKE %s"
        "                 AND status IN ('pending', 'delivering')) AS done",
        (resource, resource, f"{resource}.%"),
    ).fetchone()
    return bool(row and row["done"])


EXAMPLE_NUMBERS = itertools.count()
EXPECTED_TOTALS: list[int] = []  # bodies each example expected, checked by the test below


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(subs=subscriptions, first=first_rows, work=transactions)
def test_every_account_receives_exactly_what_it_may_see(
    background: Background, db_url: str, subs: list[Sub], first: list[tuple[str, int]], work: list[Any]
) -> None:
    number = next(EXAMPLE_NUMBERS)
    table = resource = f"items_{number}"  # a resource per example: examples cannot see each other's work
    secret = new_secret()
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, account_id text NOT NULL,"  # type: ignore[arg-type]
            " project_id int NOT NULL, title text NOT NULL, secret text)"
        )
        conn.execute(
            "SELECT rowhook.watch(%s, account_column => 'account_id', scope_columns => '{project_id}',"
            " exclude_columns => '{secret}')",
            (table,),
        )
        paths: dict[str, Sub] = {}
        for index, sub in enumerate(subs):
            url = background.receiver.url(f"{table}/{index}", secret)
            filter_ = {} if sub.project is None else {"project_id": sub.project}
            subscribe(
                conn,
                url,
                secret,
                account=sub.account,
                resource=resource,
                events=list(sub.events),
                filter=filter_,
            )
            paths[f"/{table}/{index}"] = sub
        model = Model()
        inserts = [
            (("insert", row_id, account, project, "t"), False)
            for row_id, (account, project) in zip(IDS, first, strict=True)
        ]
        for statements, commit in [(inserts, True), *work]:
            run_transaction(conn, table, statements, commit, model)
        deadline = time.monotonic() + 30
        while not settled(conn, resource):
            assert time.monotonic() < deadline, "deliveries did not settle"
            time.sleep(0.02)
    received = {r.webhook_id: r for r in list(background.receiver.received) if r.path in paths}
    assert all(r.signature_ok for r in received.values())
    got: Counter[Expected] = Counter(
        (r.path, r.body["type"], r.body["key"], canonical(r.body["data"]), canonical(r.body.get("previous")))
        for r in received.values()
    )
    expected = model.expected(paths, resource)
    assert got == expected
    EXPECTED_TOTALS.append(sum(expected.values()))
    assert not any(SECRET_MARK in json.dumps(r.body) for r in received.values())


def test_the_property_test_pushed_real_work() -> None:
    """Guards the test above against drawing only empty examples (run after it, in file order)."""
    assert len(EXPECTED_TOTALS) >= EXAMPLES // 2 and sum(EXPECTED_TOTALS) > EXAMPLES
