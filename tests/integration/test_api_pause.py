"""Pause holds deliveries (counted on the subscription), resume releases them, delete cancels them."""

from __future__ import annotations

from typing import Any

from rowhook.sqlfiles import query
from tests.integration.api_harness import Api, assert_problem


def fan_out(api: Api) -> None:
    """What the relay's fan-out does, without sending (no relay runs in the API tests)."""
    api.conn.execute(query("relay_expand_changes"), {"batch": 1000})
    api.conn.execute(query("relay_fan_out"), {"batch": 1000, "free": 0, "lease_s": 60, "relay_id": "none"})


def statuses(api: Api, subscription_id: str) -> list[str]:
    rows = api.conn.execute(
        "SELECT status FROM rowhook.deliveries WHERE subscription_id = %s ORDER BY next_attempt_at",
        (subscription_id,),
    ).fetchall()
    return [row["status"] for row in rows]


def patch(api: Api, subscription_id: str, **body: Any) -> dict[str, Any]:
    response = api.acme.patch(f"/subscriptions/{subscription_id}", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_pause_holds_pending_and_new_deliveries_and_resume_releases_them(api: Api) -> None:
    project = api.project("acme", "p")
    sub = api.subscribe()
    assert sub["held_deliveries"] == 0
    api.task("acme", project, "before pause")
    fan_out(api)
    assert statuses(api, sub["id"]) == ["pending"]
    paused = patch(api, sub["id"], status="paused")
    assert paused["held_deliveries"] == 1
    api.task("acme", project, "while paused")
    fan_out(api)
    ping = api.acme.post(f"/subscriptions/{sub['id']}/test")
    assert ping.status_code == 201 and ping.json()["status"] == "held"
    assert statuses(api, sub["id"]) == ["held"] * 3
    assert api.acme.get(f"/subscriptions/{sub['id']}").json()["held_deliveries"] == 3
    listed = api.acme.get("/subscriptions").json()["items"]
    assert [s["held_deliveries"] for s in listed if s["id"] == sub["id"]] == [3]
    held = api.acme.get(f"/subscriptions/{sub['id']}/deliveries", params={"status": "held"}).json()
    assert len(held["items"]) == 2  # the API test settings' page size
    resumed = patch(api, sub["id"], status="active")
    assert resumed["held_deliveries"] == 0
    assert statuses(api, sub["id"]) == ["pending"] * 3


def test_a_held_delivery_is_not_retried_by_hand_and_delete_cancels_held_work(api: Api) -> None:
    project = api.project("acme", "p")
    sub = api.subscribe()
    patch(api, sub["id"], status="paused")
    api.task("acme", project, "t")
    fan_out(api)
    [delivery] = api.acme.get(f"/subscriptions/{sub['id']}/deliveries").json()["items"]
    assert delivery["status"] == "held"
    assert_problem(api.acme.post(f"/deliveries/{delivery['id']}/retry"), 409, "held")
    assert api.acme.delete(f"/subscriptions/{sub['id']}").status_code == 204
    assert statuses(api, sub["id"]) == ["cancelled"]


def test_a_failed_delivery_retried_while_paused_is_held(api: Api) -> None:
    project = api.project("acme", "p")
    sub = api.subscribe()
    api.task("acme", project, "t")
    fan_out(api)
    api.conn.execute("UPDATE rowhook.deliveries SET status = 'failed', finished_at = now()")
    patch(api, sub["id"], status="paused")
    [delivery] = api.acme.get(f"/subscriptions/{sub['id']}/deliveries").json()["items"]
    retried = api.acme.post(f"/deliveries/{delivery['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "held"
