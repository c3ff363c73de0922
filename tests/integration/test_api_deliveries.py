"""Delivery log with attempts, manual retry, and replay of a time window."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.integration.api_harness import Api, assert_problem


def finished_delivery(api: Api, sub: dict[str, Any], status: str, codes: list[int | None]) -> str:
    """A delivery as the relay leaves it: status, attempts and their log."""
    row = api.conn.execute(
        "INSERT INTO rowhook.deliveries (subscription_id, account, event_type, key, status, attempts,"
        " last_status_code, finished_at) VALUES (%s, 'acme', 'tasks.created', '1', %s, %s, %s,"
        " CASE WHEN %s IN ('succeeded', 'failed') THEN now() END) RETURNING id",
        (sub["id"], status, len(codes), codes[-1] if codes else None, status),
    ).fetchone()
    assert row is not None
    for code in codes:
        api.conn.execute(
            "INSERT INTO rowhook.delivery_attempts"
            " (delivery_id, duration_ms, status_code, error, response_body)"
            " VALUES (%s, 12, %s, %s, %s)",
            (row["id"], code, None if code else "connection refused", "nope" if code else None),
        )
    return str(row["id"])


def test_delivery_log_is_newest_first_with_attempts_and_filters_by_status(api: Api) -> None:
    sub = api.subscribe()
    failed = finished_delivery(api, sub, "failed", [500, None, 503])
    succeeded = finished_delivery(api, sub, "succeeded", [200])
    pending = finished_delivery(api, sub, "pending", [])
    log = api.acme.get(f"/subscriptions/{sub['id']}/deliveries", params={"limit": 10}).json()
    assert [d["id"] for d in log["items"]] == [pending, succeeded, failed]
    attempts = log["items"][2]["attempt_log"]
    assert [a["status_code"] for a in attempts] == [500, None, 503]
    assert attempts[1]["error"] == "connection refused" and attempts[0]["response_body"] == "nope"
    assert all(a["duration_ms"] == 12 for a in attempts)
    only_failed = api.acme.get(f"/subscriptions/{sub['id']}/deliveries", params={"status": "failed"}).json()
    assert [d["id"] for d in only_failed["items"]] == [failed]
    first = api.acme.get(f"/subscriptions/{sub['id']}/deliveries").json()  # page_size=2
    second = api.acme.get(
        f"/subscriptions/{sub['id']}/deliveries", params={"cursor": first["next_cursor"]}
    ).json()
    assert [d["id"] for d in first["items"] + second["items"]] == [pending, succeeded, failed]
    assert second["next_cursor"] is None
    one = api.acme.get(f"/deliveries/{failed}").json()
    assert one["status"] == "failed" and len(one["attempt_log"]) == 3


def test_retry_sets_a_finished_delivery_pending_now_and_refuses_one_in_progress(api: Api) -> None:
    sub = api.subscribe()
    failed = finished_delivery(api, sub, "failed", [500])
    api.conn.execute(
        "UPDATE rowhook.deliveries SET next_attempt_at = now() + interval '1 day' WHERE id = %s", (failed,)
    )
    response = api.acme.post(f"/deliveries/{failed}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending" and response.json()["finished_at"] is None
    row = api.conn.execute(
        "SELECT status, next_attempt_at, attempts FROM rowhook.deliveries WHERE id = %s", (failed,)
    ).fetchone()
    assert row is not None and row["status"] == "pending" and row["next_attempt_at"] <= datetime.now(UTC)
    assert row["attempts"] == 1  # history kept
    assert_problem(api.acme.post(f"/deliveries/{failed}/retry"), 409, "pending already")
    api.conn.execute("UPDATE rowhook.deliveries SET status = 'delivering' WHERE id = %s", (failed,))
    assert_problem(api.acme.post(f"/deliveries/{failed}/retry"), 409, "delivering already")
    assert_problem(api.acme.post("/deliveries/msg_nope/retry"), 404, "no delivery")


def test_replay_queues_the_matching_events_of_the_window_only(api: Api) -> None:
    mine, other = api.project("acme", "mine"), api.project("acme", "other")
    theirs = api.project("globex", "theirs")
    before = datetime.now(UTC) - timedelta(seconds=1)
    sub = api.subscribe(events=["created"], filter={"project_id": mine})
    wanted = [api.task("acme", mine, f"t{i}") for i in range(2)]
    api.task("acme", other, "other project")
    api.task("globex", theirs, "other account")
    api.conn.execute(
        "UPDATE tasks SET done = true WHERE project_id = %s", (mine,)
    )  # 'updated': not subscribed
    old = api.conn.execute(
        "INSERT INTO rowhook.outbox (occurred_at, resource, op, account, key, scope, data)"
        " VALUES (now() - interval '2 days', 'tasks', 'created', 'acme', '99',"
        " jsonb_build_object('project_id', %s::bigint), '{}') RETURNING id",
        (mine,),
    ).fetchone()
    assert old is not None
    response = api.acme.post(f"/subscriptions/{sub['id']}/replay", json={"since": before.isoformat()})
    assert response.status_code == 201, response.text
    assert response.json()["count"] == 2 and response.json()["truncated"] is False
    queued = api.conn.execute(
        "SELECT key, event_type, status, account, event_id FROM rowhook.deliveries"
        " WHERE subscription_id = %s ORDER BY event_id",
        (sub["id"],),
    ).fetchall()
    assert [q["key"] for q in queued] == [str(t) for t in wanted]
    assert {(q["event_type"], q["status"], q["account"]) for q in queued} == {
        ("tasks.created", "pending", "acme")
    }
    assert old["id"] not in [q["event_id"] for q in queued]


def test_replay_is_capped_and_says_so(api: Api) -> None:
    project = api.project("acme", "p")
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    sub = api.subscribe()
    for i in range(5):
        api.task("acme", project, f"t{i}")
    body = api.acme.post(f"/subscriptions/{sub['id']}/replay", json={"since": since}).json()
    assert body == {**body, "count": 3, "truncated": True}  # replay_max_events=3 in these tests


def test_replay_of_a_public_resource_includes_its_events(api: Api) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    sub = api.subscribe(resource="plans")
    api.conn.execute("INSERT INTO plans VALUES ('free', 'Free')")
    assert (
        api.globex.post("/subscriptions/" + sub["id"] + "/replay", json={"since": since}).status_code == 404
    )
    assert api.acme.post(f"/subscriptions/{sub['id']}/replay", json={"since": since}).json()["count"] == 1


def test_replay_refuses_bad_windows(api: Api) -> None:
    sub = api.subscribe()
    now = datetime.now(UTC)
    path = f"/subscriptions/{sub['id']}/replay"
    assert_problem(
        api.acme.post(path, json={"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()}),
        422,
        "since: must be earlier than until",
    )
    assert_problem(api.acme.post(path, json={"since": "2026-01-01T00:00:00"}), 400, "since")
    assert_problem(api.acme.post(path, json={"since": "yesterday"}), 400, "since")
    assert_problem(api.acme.post(path, json={}), 400, "since")


def test_each_delivery_shows_its_body_as_the_relay_sends_it(api: Api) -> None:
    project = api.project("acme", "p")
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    sub = api.subscribe(events=["created", "updated"])
    task = api.task("acme", project, "first title")
    api.conn.execute("UPDATE tasks SET title = 'second title' WHERE id = %s", (task,))
    assert api.acme.post(f"/subscriptions/{sub['id']}/replay", json={"since": since}).status_code == 201
    ping = api.acme.post(f"/subscriptions/{sub['id']}/test").json()
    assert ping["payload"]["type"] == "ping" and ping["payload"]["data"]["subscription_id"] == sub["id"]
    log = api.acme.get(f"/subscriptions/{sub['id']}/deliveries", params={"limit": 10}).json()["items"]
    by_type = {d["event_type"]: d for d in log}
    created, updated = by_type["tasks.created"]["payload"], by_type["tasks.updated"]["payload"]
    assert created["id"] == f"evt_{by_type['tasks.created']['event_id']}" and created["key"] == str(task)
    assert created["type"] == "tasks.created" and created["resource"] == "tasks"
    assert created["data"]["title"] == "first title" and "password_hash" not in created["data"]
    assert "previous" not in created
    assert updated["data"]["title"] == "second title" and updated["previous"] == {"title": "first title"}
    one = api.acme.get(f"/deliveries/{by_type['tasks.updated']['id']}").json()
    assert one["payload"] == updated
    # Once the event is pruned its body is gone; the delivery says null rather than inventing one.
    api.conn.execute("DELETE FROM rowhook.outbox WHERE id = %s", (by_type["tasks.created"]["event_id"],))
    assert api.acme.get(f"/deliveries/{by_type['tasks.created']['id']}").json()["payload"] is None


def test_a_retry_that_meets_the_relay_finishing_the_delivery_runs_again_and_succeeds(
    api: Api, db_url: str
) -> None:
    """The relay finishing a delivery moves its row from the queue to the log (0015); a request that
    waited on that row is rolled back by the server, and the API runs it once more on the new state."""
    sub = api.subscribe()
    delivering = finished_delivery(api, sub, "delivering", [])
    with psycopg.connect(db_url) as relay:
        relay.execute(  # the relay's outcome, not committed yet: the row is locked
            "UPDATE rowhook.deliveries SET status = 'failed', finished_at = now() WHERE id = %s",
            (delivering,),
        )
        with ThreadPoolExecutor(1) as pool:
            retry = pool.submit(api.acme.post, f"/deliveries/{delivering}/retry")
            waiting = "SELECT count(*) AS n FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            deadline = time.monotonic() + 10
            while api.conn.execute(waiting).fetchone() != {"n": 1}:
                assert time.monotonic() < deadline, "the retry never waited on the relay's lock"
                time.sleep(0.02)
            relay.commit()
            response = retry.result(timeout=20)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
