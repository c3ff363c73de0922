"""GET /resources/{name}/sample: newest rows shaped as pushes; filters, pages, tenancy and plans."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from litestar.datastructures import MultiDict
from psycopg.rows import dict_row

from api.resources import get_resource
from api.samples import build_query
from rowhook.tokens import create_token
from tests.integration.api_harness import Api, Conn, assert_problem
from tests.integration.test_api_resources import all_pages


def sample(api: Api, resource: str, client: Any = None, **params: Any) -> list[dict[str, Any]]:
    return [
        item
        for page in all_pages(client or api.acme, f"/resources/{resource}/sample", **params)
        for item in page
    ]


def created_event(conn: Conn, resource: str, key: str) -> dict[str, Any]:
    conn.execute("SELECT rowhook.expand_changes()")  # as the relay does before fanning out
    row = conn.execute(
        "SELECT resource, op, account, key, data FROM rowhook.outbox"
        " WHERE resource = %s AND key = %s AND op = 'created'",
        (resource, key),
    ).fetchone()
    assert row is not None
    return row


def test_rows_come_newest_first_shaped_as_their_created_pushes_without_excluded_columns(api: Api) -> None:
    project = api.project("acme", "p1")
    tasks = [api.task("acme", project, f"task {i}") for i in range(3)]
    api.task("globex", None, "theirs")
    pages = all_pages(api.acme, "/resources/tasks/sample")  # page_size=2 in these tests
    assert [len(page) for page in pages] == [2, 1]
    items = [item for page in pages for item in page]
    assert [item["key"] for item in items] == [str(t) for t in reversed(tasks)]
    for item in items:
        event = created_event(api.conn, "tasks", item["key"])
        # Exactly what the push of this row's creation carries (docs/payload.md).
        assert item == {
            "type": f"tasks.{event['op']}",
            "resource": event["resource"],
            "key": event["key"],
            "account": event["account"],
            "data": event["data"],
        }
        assert "password_hash" not in item["data"]
    assert items[0]["data"] == {
        "id": tasks[2],
        "account_id": "acme",
        "project_id": project,
        "title": "task 2",
        "done": False,
    }


def test_the_sample_shows_the_row_as_it_is_now(api: Api) -> None:
    task = api.task("acme", None, "old")
    api.conn.execute("UPDATE tasks SET title = 'new', done = true WHERE id = %s", (task,))
    [item] = sample(api, "tasks")
    assert item["data"]["title"] == "new" and item["data"]["done"] is True


def test_another_accounts_rows_never_appear(api: Api) -> None:
    ours = api.project("acme", "ours")
    theirs = api.project("globex", "theirs")
    api.task("acme", ours, "mine")
    api.task("globex", theirs, "secret")
    assert [item["data"]["title"] for item in sample(api, "tasks")] == ["mine"]
    # Filtering on the other account's project finds nothing rather than its rows.
    assert sample(api, "tasks", project_id=theirs) == []
    assert [item["data"]["title"] for item in sample(api, "tasks", api.globex)] == ["secret"]
    assert {item["account"] for item in sample(api, "projects", api.globex)} == {"globex"}


def test_scope_filters_as_query_parameters_like_a_subscriptions_filter(api: Api) -> None:
    one, two = api.project("acme", "one"), api.project("acme", "two")
    api.task("acme", one, "a")
    api.task("acme", two, "b")
    api.task("acme", one, "c")
    assert [item["data"]["title"] for item in sample(api, "tasks", project_id=one)] == ["c", "a"]
    assert [item["data"]["title"] for item in sample(api, "tasks", project_id=str(two), limit=5)] == ["b"]


def test_bad_filters_are_422_naming_the_parameter(api: Api) -> None:
    problem = assert_problem(api.acme.get("/resources/tasks/sample?project_id=abc"), 422, "bigint")
    assert problem["errors"][0]["field"] == "project_id"
    problem = assert_problem(
        api.acme.get("/resources/tasks/sample?title=x"), 422, "scope column", "project_id"
    )
    assert problem["errors"][0]["field"] == "title"
    problem = assert_problem(api.acme.get("/resources/tasks/sample?limt=5"), 422, "neither limit, cursor")
    assert problem["errors"][0]["field"] == "limt"
    assert_problem(api.acme.get("/resources/tasks/sample?project_id=1&project_id=2"), 422, "once")
    assert_problem(api.acme.get("/resources/tasks/sample?limit=0"), 400)


def test_unknown_resources_and_foreign_cursors_are_refused(api: Api) -> None:
    assert_problem(api.acme.get("/resources/nope/sample"), 404, "nope")
    assert_problem(api.acme.get("/resources/Bad-Name/sample"), 404)
    for i in range(3):
        api.project("acme", f"p{i}")
    items_cursor = api.acme.get("/resources/projects/items").json()["next_cursor"]
    assert_problem(api.acme.get("/resources/projects/sample", params={"cursor": items_cursor}), 400)
    sample_cursor = api.acme.get("/resources/projects/sample").json()["next_cursor"]
    assert_problem(api.acme.get("/resources/tasks/sample", params={"cursor": sample_cursor}), 400)
    assert api.acme.get("/resources/projects/sample", params={"cursor": sample_cursor}).status_code == 200


def test_composite_keys_page_newest_first_and_render_like_the_capture_triggers(api: Api) -> None:
    api.conn.execute(
        "INSERT INTO memberships VALUES ('acme', 2, 'bob'), ('acme', 1, 'zoe'), ('acme', 1, 'amy'),"
        " ('globex', 1, 'eve')"
    )
    items = sample(api, "memberships")
    assert [item["key"] for item in items] == ['[2, "bob"]', '[1, "zoe"]', '[1, "amy"]']
    assert all(
        item == {**item, "key": created_event(api.conn, "memberships", item["key"])["key"]} for item in items
    )
    assert [item["key"] for item in sample(api, "memberships", project_id=1)] == ['[1, "zoe"]', '[1, "amy"]']


def test_a_public_resource_shows_every_row_to_every_account_without_an_account(api: Api) -> None:
    api.conn.execute("INSERT INTO plans VALUES ('basic', 'Basic'), ('pro', 'Pro')")
    for client in (api.acme, api.globex):
        items = sample(api, "plans", client)
        assert [item["key"] for item in items] == ["pro", "basic"]
        assert items[0] == {
            "type": "plans.created",
            "resource": "plans",
            "key": "pro",
            "account": None,
            "data": {"code": "pro", "title": "Pro"},
        }


def test_an_allow_list_resource_shows_only_its_columns(api: Api) -> None:
    api.conn.execute(
        "CREATE TABLE users (id int PRIMARY KEY, org text NOT NULL, email text, name text, token text);"
        "SELECT rowhook.watch('users', account_column => 'org', columns => '{name}');"
        "INSERT INTO users VALUES (1, 'acme', 'a@x', 'Ann', 's3cret')"
    )
    [item] = sample(api, "users")
    assert item["data"] == {"id": 1, "org": "acme", "name": "Ann"}
    assert item["data"] == created_event(api.conn, "users", "1")["data"]


def test_an_account_column_of_another_type_is_compared_in_that_type(api: Api) -> None:
    api.conn.execute(
        "CREATE TABLE scores (id int PRIMARY KEY, account_id int NOT NULL, points int);"
        "SELECT rowhook.watch('scores', account_column => 'account_id');"
        "INSERT INTO scores VALUES (1, 7, 10), (2, 8, 20), (3, 7, 30)"
    )
    token, _ = create_token(api.conn, "7", "tests")
    with api.client(token) as seven:
        assert [item["key"] for item in sample(api, "scores", seven)] == ["3", "1"]
        assert {item["account"] for item in sample(api, "scores", seven)} == {"7"}
    assert sample(api, "scores") == []  # 'acme' is no integer: it owns no row, and that is no error


BIG = """
CREATE TABLE events_big (id bigint PRIMARY KEY, account_id text NOT NULL, kind int NOT NULL, body text);
CREATE INDEX events_big_account ON events_big (account_id);
SELECT rowhook.watch('events_big', account_column => 'account_id', scope_columns => '{kind}');
"""


def plan_reads(plan: dict[str, Any], table: str) -> tuple[int, set[str]]:
    """Rows read from `table` (returned plus removed by a filter) over the plan, and the node types."""
    rows, kinds = 0, set()
    if plan.get("Relation Name") == table:
        loops = plan.get("Actual Loops", 1)
        rows += (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * loops
        kinds.add(plan["Node Type"])
    for child in plan.get("Plans", []):
        child_rows, child_kinds = plan_reads(child, table)
        rows += child_rows
        kinds |= child_kinds
    return rows, kinds


async def explain_reads(db_url: str, account: str, params: MultiDict[str]) -> tuple[int, set[str], str]:
    """Rows of events_big the sample query of `account` reads, its scan node types, and the plan."""
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn:
        resource = await get_resource(conn, "events_big")
        query = await build_query(conn, resource, account, params, None)
        assert query is not None
        statement, values = query.statement(51)
        explain = await conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + statement.as_bytes(conn), values)
        row = await explain.fetchone()
    assert row is not None
    plan = row["QUERY PLAN"][0]["Plan"]
    rows, kinds = plan_reads(plan, "events_big")
    return rows, kinds, json.dumps(plan)


async def test_one_accounts_sample_reads_its_rows_through_an_index_never_the_whole_table(
    api: Api, db_url: str
) -> None:
    api.conn.execute(BIG)
    # 20,000 rows of 100 accounts, written with the capture triggers off (only the table matters here).
    api.conn.execute("ALTER TABLE events_big DISABLE TRIGGER USER")
    api.conn.execute(
        "INSERT INTO events_big SELECT n, 'acct' || (n % 100), n % 7, repeat('x', 50)"
        " FROM generate_series(1, 20000) n"
    )
    api.conn.execute("ANALYZE events_big")
    # An index on the account column: the account's 200 rows are read and sorted, not the primary key
    # walked backwards through other accounts' rows.
    for params in (MultiDict(), MultiDict({"kind": "3"})):
        rows, kinds, plan = await explain_reads(db_url, "acct7", params)
        assert "Seq Scan" not in kinds, plan
        assert rows <= 200, (rows, plan)
    # An index on (account, key): one page of rows, read in order.
    api.conn.execute("CREATE INDEX events_big_account_id ON events_big (account_id, id)")
    api.conn.execute("ANALYZE events_big")
    rows, kinds, plan = await explain_reads(db_url, "acct7", MultiDict())
    assert kinds == {"Index Scan"} and rows == 51, (rows, plan)
    assert '"Index Name": "events_big_account_id"' in plan and '"Scan Direction": "Backward"' in plan
    # And the endpoint answers with that account's rows, newest first.
    token, _ = create_token(api.conn, "acct7", "tests")
    with api.client(token) as client:
        first = client.get("/resources/events_big/sample", params={"limit": 3}).json()["items"]
    assert [item["key"] for item in first] == ["19907", "19807", "19707"]
