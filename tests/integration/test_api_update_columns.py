"""Subscription `columns`: validation on create and PATCH, and the fan-out and replay rule it sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rowhook.sqlfiles import query
from tests.integration.api_harness import TARGET, Api, assert_problem


def fan_out(api: Api) -> None:
    """What the relay's fan-out does, without sending (no relay runs in the API tests)."""
    expand(api)
    api.conn.execute(query("relay_fan_out"), {"batch": 1000, "free": 0, "lease_s": 60, "relay_id": "none"})


def expand(api: Api) -> None:
    """Captured changes become outbox events, as the relay makes them before each fan-out."""
    api.conn.execute(query("relay_expand_changes"), {"batch": 1000})


def received(api: Api, subscription_id: str) -> list[str]:
    """The event types queued for a subscription, in event order, with what changed for updates."""
    rows = api.conn.execute(
        "SELECT d.event_type, o.changed FROM rowhook.deliveries d JOIN rowhook.outbox o ON o.id = d.event_id"
        " WHERE d.subscription_id = %s ORDER BY d.event_id",
        (subscription_id,),
    ).fetchall()
    return [r["event_type"] + (f" {','.join(r['changed'])}" if r["changed"] else "") for r in rows]


def patch(api: Api, subscription_id: str, **body: Any) -> dict[str, Any]:
    response = api.acme.patch(f"/subscriptions/{subscription_id}", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_columns_are_set_on_create_and_patch_and_null_means_every_update(api: Api) -> None:
    sub = api.subscribe(columns=["done", "title"])
    assert sub["columns"] == ["done", "title"]
    assert api.acme.get(f"/subscriptions/{sub['id']}").json()["columns"] == ["done", "title"]
    assert patch(api, sub["id"], description="kept")["columns"] == ["done", "title"]
    assert patch(api, sub["id"], columns=["project_id"])["columns"] == ["project_id"]
    assert patch(api, sub["id"], columns=None)["columns"] is None
    assert api.subscribe()["columns"] is None
    hook = api.acme.post("/hooks", json={"target_url": TARGET, "event": "tasks.updated", "columns": ["done"]})
    assert hook.status_code == 201 and hook.json()["columns"] == ["done"]


def test_unknown_excluded_duplicate_and_empty_columns_are_a_422_naming_the_column(api: Api) -> None:
    api.conn.execute(
        "CREATE TABLE notes (id int PRIMARY KEY, account_id text NOT NULL, title text, body text);"
        "SELECT rowhook.watch('notes', account_column => 'account_id', columns => '{title}')"
    )
    sub = api.subscribe(columns=["done"])
    cases = [
        ("tasks", ["done", "nope"], "columns[1]", "'nope' is not a captured column of resource 'tasks'"),
        ("tasks", ["password_hash"], "columns[0]", "'password_hash' is not a captured column"),
        ("tasks", ["done", "title", "done"], "columns[2]", "'done' is listed twice"),
        ("tasks", [], "columns", "at least one column"),
        ("notes", ["body"], "columns[0]", "'body' is not a captured column of resource 'notes'"),
    ]
    for resource, columns, field, reason in cases:
        body = {"target_url": TARGET, "resource": resource, "columns": columns}
        problem = assert_problem(api.acme.post("/subscriptions", json=body), 422, field, reason)
        assert problem["errors"][0]["field"] == field
        if resource == "tasks":
            patched = api.acme.patch(f"/subscriptions/{sub['id']}", json={"columns": columns})
            assert_problem(patched, 422, field, reason)
    assert "captured: id, account_id, project_id, title, done" in problem_detail(api, ["x"])
    assert api.subscribe(resource="notes", columns=["title"])["columns"] == ["title"]
    assert_problem(
        api.acme.patch(f"/subscriptions/{sub['id']}", json={"columns": ["c"] * 33}), 400, "columns"
    )
    assert api.acme.get(f"/subscriptions/{sub['id']}").json()["columns"] == [
        "done"
    ]  # refusals changed nothing


def problem_detail(api: Api, columns: list[str]) -> str:
    response = api.acme.post(
        "/subscriptions", json={"target_url": TARGET, "resource": "tasks", "columns": columns}
    )
    return str(assert_problem(response, 422)["detail"])


def test_an_update_reaches_a_column_subscription_when_a_listed_column_changed_or_it_left_the_filter(
    api: Api,
) -> None:
    p1, p2 = api.project("acme", "p1"), api.project("acme", "p2")
    done_only = api.subscribe(columns=["done"])["id"]
    filtered = api.subscribe(filter={"project_id": p1}, columns=["done"])["id"]
    every = api.subscribe()["id"]
    task = api.task("acme", p1, "t")
    api.conn.execute("UPDATE tasks SET title = 'renamed' WHERE id = %s", (task,))
    api.conn.execute("UPDATE tasks SET done = true, title = 'finished' WHERE id = %s", (task,))
    api.conn.execute("UPDATE tasks SET project_id = %s WHERE id = %s", (p2, task))  # leaves p1
    api.conn.execute("UPDATE tasks SET title = 'elsewhere' WHERE id = %s", (task,))
    api.conn.execute("UPDATE tasks SET project_id = %s WHERE id = %s", (p1, task))  # back into p1
    api.conn.execute("UPDATE tasks SET account_id = 'globex' WHERE id = %s", (task,))  # account move
    fan_out(api)
    assert received(api, done_only) == ["tasks.created", "tasks.updated done,title", "tasks.deleted"]
    assert received(api, filtered) == [
        "tasks.created",
        "tasks.updated done,title",
        "tasks.updated project_id",  # left the filter: told, as every subscription to p1 is
        "tasks.updated project_id",  # came back into it
        "tasks.deleted",  # the account move: deleted for acme, whatever the columns
    ]
    assert received(api, every) == [
        "tasks.created",
        "tasks.updated title",
        "tasks.updated done,title",
        "tasks.updated project_id",
        "tasks.updated title",
        "tasks.updated project_id",
        "tasks.deleted",
    ]


def test_replay_obeys_the_columns_as_the_fan_out_does(api: Api) -> None:
    p1, p2 = api.project("acme", "p1"), api.project("acme", "p2")
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    task = api.task("acme", p1, "t")
    for change in ("title = 'a'", "done = true", f"project_id = {p2}", "title = 'b'", f"project_id = {p1}"):
        api.conn.execute(f"UPDATE tasks SET {change} WHERE id = %s", (task,))
    expand(api)
    done_only = api.subscribe(events=["updated"], columns=["done"])["id"]
    filtered = api.subscribe(events=["updated"], filter={"project_id": p1}, columns=["done"])["id"]
    for sub, count in ((done_only, 1), (filtered, 3)):
        response = api.acme.post(f"/subscriptions/{sub}/replay", json={"since": since})
        assert response.status_code == 201, response.text
        assert response.json()["count"] == count
    assert received(api, done_only) == ["tasks.updated done"]
    assert received(api, filtered) == [
        "tasks.updated done",
        "tasks.updated project_id",
        "tasks.updated project_id",
    ]
