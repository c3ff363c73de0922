"""Tenant isolation: another account's subscriptions and deliveries answer 404, exactly like absent ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.api_harness import TARGET, Api, assert_problem

ABSENT_SUB = "sub_" + "0" * 32
ABSENT_MSG = "msg_" + "0" * 32


def routes(sub_id: str, msg_id: str) -> list[tuple[str, str, dict[str, object] | None]]:
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    return [
        ("GET", f"/subscriptions/{sub_id}", None),
        ("PATCH", f"/subscriptions/{sub_id}", {"status": "paused"}),
        ("POST", f"/subscriptions/{sub_id}/secret/rotate", None),
        ("POST", f"/subscriptions/{sub_id}/test", None),
        ("GET", f"/subscriptions/{sub_id}/deliveries", None),
        ("POST", f"/subscriptions/{sub_id}/replay", {"since": since}),
        ("GET", f"/deliveries/{msg_id}", None),
        ("POST", f"/deliveries/{msg_id}/retry", None),
        ("DELETE", f"/hooks/{sub_id}", None),
        ("DELETE", f"/subscriptions/{sub_id}", None),
    ]


def test_another_accounts_objects_answer_exactly_like_absent_ones(api: Api) -> None:
    sub = api.subscribe()
    ping = api.acme.post(f"/subscriptions/{sub['id']}/test").json()
    api.conn.execute("UPDATE rowhook.deliveries SET status = 'failed' WHERE id = %s", (ping["id"],))
    before = api.conn.execute("SELECT * FROM rowhook.subscriptions").fetchall()
    for (method, path, body), (_, absent_path, _) in zip(
        routes(sub["id"], ping["id"]), routes(ABSENT_SUB, ABSENT_MSG), strict=True
    ):
        theirs = api.globex.request(method, path, json=body)
        absent = api.globex.request(method, absent_path, json=body)
        assert_problem(theirs, 404)
        assert_problem(absent, 404)
        assert theirs.json()["detail"].replace(sub["id"], "X").replace(ping["id"], "X") == absent.json()[
            "detail"
        ].replace(ABSENT_SUB, "X").replace(ABSENT_MSG, "X"), (method, path)
    assert api.conn.execute("SELECT * FROM rowhook.subscriptions").fetchall() == before
    deliveries = api.conn.execute("SELECT status FROM rowhook.deliveries").fetchall()
    assert deliveries == [{"status": "failed"}]  # no retry, no ping, no replay happened for globex


def test_lists_show_only_the_accounts_own_objects(api: Api) -> None:
    mine = api.subscribe()
    theirs = api.subscribe(api.globex)
    assert [s["id"] for s in api.acme.get("/subscriptions").json()["items"]] == [mine["id"]]
    assert [s["id"] for s in api.globex.get("/subscriptions").json()["items"]] == [theirs["id"]]
    api.acme.post(f"/subscriptions/{mine['id']}/test")
    assert api.globex.get(f"/subscriptions/{theirs['id']}/deliveries").json()["items"] == []


def test_a_subscription_never_replays_another_accounts_events(api: Api) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    project = api.project("globex", "shared-looking")
    api.task("globex", project, "secret plan")
    # Same filter value as globex's project: the account still separates them.
    sub = api.subscribe(filter={"project_id": project})
    assert api.acme.post(f"/subscriptions/{sub['id']}/replay", json={"since": since}).json()["count"] == 0
    theirs = api.subscribe(api.globex, filter={"project_id": project})
    assert (
        api.globex.post(f"/subscriptions/{theirs['id']}/replay", json={"since": since}).json()["count"] == 1
    )


def test_a_hook_of_another_account_cannot_be_deleted(api: Api) -> None:
    hook = api.acme.post("/hooks", json={"target_url": TARGET, "event": "tasks.created"}).json()
    assert_problem(api.globex.delete(f"/hooks/{hook['id']}"), 404)
    assert api.acme.get(f"/subscriptions/{hook['id']}").status_code == 200
