"""Subscription `headers`: set on create (both routes) and PATCH, refused names, shown masked, cleared."""

from __future__ import annotations

from typing import Any

from tests.integration.api_harness import TARGET, Api, assert_problem

TOKEN = "Bearer s3cr3t-t0ken-abcd"
HEADERS = {"Authorization": TOKEN, "X-Api-Key": "k-0123456789", "X-Tenant": "acme"}
SHOWN = {"Authorization": "Bearer ****abcd", "X-Api-Key": "****6789", "X-Tenant": "****"}


def stored_headers(api: Api, subscription_id: str) -> dict[str, str]:
    row = api.conn.execute(
        "SELECT headers FROM rowhook.subscriptions WHERE id = %s", (subscription_id,)
    ).fetchone()
    assert row is not None
    return row["headers"]  # type: ignore[no-any-return]


def patch(api: Api, subscription_id: str, **body: Any) -> dict[str, Any]:
    response = api.acme.patch(f"/subscriptions/{subscription_id}", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_headers_are_stored_whole_and_shown_masked_in_every_answer(api: Api) -> None:
    sub = api.subscribe(headers=HEADERS)
    assert sub["headers"] == SHOWN
    assert stored_headers(api, sub["id"]) == HEADERS
    assert api.acme.get(f"/subscriptions/{sub['id']}").json()["headers"] == SHOWN
    listed = api.acme.get("/subscriptions").json()["items"]
    assert [s["headers"] for s in listed] == [SHOWN]
    rotated = api.acme.post(f"/subscriptions/{sub['id']}/secret/rotate").json()
    assert rotated["headers"] == SHOWN
    changed = patch(api, sub["id"], description="other")  # headers not given: kept
    assert changed["headers"] == SHOWN and stored_headers(api, sub["id"]) == HEADERS
    for answer in (sub, rotated, changed):
        assert "s3cr3t" not in str(answer) and "0123456789" not in str(answer)
    assert api.subscribe()["headers"] == {}  # none given


def test_patch_replaces_the_whole_map_and_null_or_empty_clears_it(api: Api) -> None:
    sub = api.subscribe(headers=HEADERS)
    replaced = patch(api, sub["id"], headers={"X-Other": "value-12345"})
    assert replaced["headers"] == {"X-Other": "****2345"}
    assert stored_headers(api, sub["id"]) == {"X-Other": "value-12345"}
    assert patch(api, sub["id"], headers=None)["headers"] == {}
    assert stored_headers(api, sub["id"]) == {}
    patch(api, sub["id"], headers=HEADERS)
    assert patch(api, sub["id"], headers={})["headers"] == {}
    assert stored_headers(api, sub["id"]) == {}


def test_refused_headers_are_a_422_naming_the_header_on_create_and_patch(api: Api) -> None:
    sub = api.subscribe(headers=HEADERS)
    cases = [
        ({"Content-Type": "text/plain"}, "headers.Content-Type", "set by rowhook"),
        ({"webhook-id": "msg_x"}, "headers.webhook-id", "set by rowhook"),
        ({"Host": "evil.example"}, "headers.Host", "set by rowhook"),
        ({"Transfer-Encoding": "chunked"}, "headers.Transfer-Encoding", "hop-by-hop"),
        ({"X-Key": "a\r\nX-Injected: yes"}, "headers.X-Key", "control characters"),
        ({"Bad Name": "v"}, "headers.Bad Name", "not a valid header name"),
        ({"X-Key": "a", "x-KEY": "b"}, "headers.x-KEY", "twice"),
        ({"X-Key": "Bearer ****abcd"}, "headers.X-Key", "masked"),
    ]
    for headers, field, reason in cases:
        for response in (
            api.acme.post(
                "/subscriptions", json={"target_url": TARGET, "resource": "tasks", "headers": headers}
            ),
            api.acme.patch(f"/subscriptions/{sub['id']}", json={"headers": headers}),
            api.acme.post(
                "/hooks", json={"target_url": TARGET, "event": "tasks.created", "headers": headers}
            ),
        ):
            problem = assert_problem(response, 422, field, reason)
            assert problem["errors"][0]["field"] == field
    assert stored_headers(api, sub["id"]) == HEADERS  # a refused PATCH changed nothing
    too_many = {f"X-{i}": "v" for i in range(21)}
    assert_problem(api.acme.patch(f"/subscriptions/{sub['id']}", json={"headers": too_many}), 400, "headers")
    too_large = {f"X-{i}": "v" * 1000 for i in range(5)}
    assert_problem(api.acme.patch(f"/subscriptions/{sub['id']}", json={"headers": too_large}), 422, "4096")
    assert_problem(api.acme.patch(f"/subscriptions/{sub['id']}", json={"headers": {"X": 1}}), 400, "headers")
    assert api.acme.get("/subscriptions").json()["items"] == [
        api.acme.get(f"/subscriptions/{sub['id']}").json()
    ]


def test_rest_hooks_take_headers_and_deleting_clears_them(api: Api) -> None:
    created = api.acme.post(
        "/hooks", json={"target_url": TARGET, "event": "tasks.created", "headers": HEADERS}
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["headers"] == SHOWN and stored_headers(api, hook["id"]) == HEADERS
    assert api.globex.get(f"/subscriptions/{hook['id']}").status_code == 404
    assert api.acme.delete(f"/hooks/{hook['id']}").status_code == 204
    assert stored_headers(api, hook["id"]) == {}  # a secret: gone with the subscription
