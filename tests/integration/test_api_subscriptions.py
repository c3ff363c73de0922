"""/subscriptions: creation and its validation, reads, changes, deletion, secret rotation, test ping."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from tests.integration.api_harness import TARGET, Api, assert_problem


def test_create_answers_201_with_id_secret_and_the_whole_object(api: Api) -> None:
    project = api.project("acme", "proj1")
    sub = api.subscribe(events=["created", "updated"], filter={"project_id": project}, description="zap")
    assert sub["id"].startswith("sub_")
    assert sub["secret"].startswith("whsec_") and len(base64.b64decode(sub["secret"][6:])) == 24
    assert sub["events"] == ["created", "updated"] and sub["filter"] == {"project_id": project}
    assert sub["status"] == "active" and sub["disabled_reason"] is None
    read = api.acme.get(f"/subscriptions/{sub['id']}").json()
    assert "secret" not in read
    assert read == {k: v for k, v in sub.items() if k != "secret"}


def test_filter_values_are_stored_in_the_columns_native_type_and_match_captured_scope(api: Api) -> None:
    project = api.project("acme", "proj1")
    sub = api.subscribe(filter={"project_id": str(project)})  # "1" from a form field
    assert sub["filter"] == {"project_id": project}
    api.task("acme", project, "t")
    api.conn.execute("SELECT rowhook.expand_changes()")
    match = api.conn.execute(
        "SELECT count(*) AS n FROM rowhook.outbox o, rowhook.subscriptions s"
        " WHERE s.id = %s AND o.resource = 'tasks' AND o.scope @> s.filter",
        (sub["id"],),
    ).fetchone()
    assert match is not None and match["n"] == 1


def test_refusals_name_the_field_and_the_reason(api: Api) -> None:
    base = {"target_url": TARGET, "resource": "tasks"}
    cases = [
        ({**base, "colour": "red"}, 400, "colour: unknown field"),
        ({**base, "events": []}, 400, "events"),
        ({**base, "events": ["created", "exploded"]}, 400, "events"),
        ({**base, "resource": "missing"}, 422, "resource: no resource named 'missing'"),
        ({**base, "filter": {"title": "x"}}, 422, "filter.title: 'title' is not a scope column"),
        ({**base, "filter": {"password_hash": "x"}}, 422, "filter.password_hash"),
        (
            {**base, "filter": {"project_id": "seven"}},
            422,
            "filter.project_id: 'seven' is not a valid bigint",
        ),
        ({**base, "filter": {"project_id": 1.5}}, 422, "filter.project_id"),
        ({**base, "filter": {"project_id": "1\x00"}}, 422, "filter.project_id"),
        ({**base, "description": "a\x00b"}, 422, "description: must not contain NUL"),
        ({**base, "target_url": "ftp://example.com/x"}, 422, "target_url"),
        ({**base, "max_in_flight": 0}, 400, "max_in_flight"),
        ({"resource": "tasks"}, 400, "target_url"),
    ]
    for body, status, words in cases:
        problem = assert_problem(api.acme.post("/subscriptions", json=body), status, words)
        assert problem["errors"], problem
    assert_problem(api.acme.post("/subscriptions", content=b"{not json"), 400, "JSON")
    assert api.acme.get("/subscriptions").json()["items"] == []


def test_list_is_paginated_and_filterable(api: Api) -> None:
    ids = [api.subscribe(resource=r)["id"] for r in ("tasks", "projects", "tasks", "tasks", "projects")]
    seen, cursor = [], None
    while True:
        body = api.acme.get("/subscriptions", params={"cursor": cursor} if cursor else {}).json()
        assert len(body["items"]) <= 2
        seen += [s["id"] for s in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == ids
    only = api.acme.get("/subscriptions", params={"resource": "projects", "limit": 10}).json()["items"]
    assert [s["id"] for s in only] == [ids[1], ids[4]]
    assert_problem(api.acme.get("/subscriptions", params={"status": "sleeping"}), 400, "status")


def test_patch_changes_only_the_given_fields(api: Api) -> None:
    project = api.project("acme", "p")
    sub = api.subscribe(description="old")
    changed = api.acme.patch(
        f"/subscriptions/{sub['id']}",
        json={
            "events": ["deleted"],
            "filter": {"project_id": project},
            "status": "paused",
            "description": None,
        },
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["events"] == ["deleted"] and body["filter"] == {"project_id": project}
    assert body["status"] == "paused" and body["description"] is None and body["target_url"] == TARGET
    assert body["updated_at"] > sub["updated_at"]
    assert_problem(api.acme.patch(f"/subscriptions/{sub['id']}", json={"status": "disabled"}), 400, "status")
    assert_problem(
        api.acme.patch(f"/subscriptions/{sub['id']}", json={"filter": {"done": True}}), 422, "filter.done"
    )
    assert_problem(api.acme.patch(f"/subscriptions/{sub['id']}", json={"secret": "x"}), 400, "secret")
    assert api.acme.get(f"/subscriptions/{sub['id']}").json()["status"] == "paused"


def test_rate_limit_is_set_shown_changed_and_removed_and_bad_values_name_the_field(api: Api) -> None:
    unlimited = api.subscribe()
    assert unlimited["rate_limit_per_s"] is None
    created = api.acme.post(
        "/subscriptions", json={"target_url": TARGET, "resource": "tasks", "rate_limit_per_s": 20}
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["rate_limit_per_s"] == 20
    path = f"/subscriptions/{sub['id']}"
    assert api.acme.get(path).json()["rate_limit_per_s"] == 20
    changed = api.acme.patch(path, json={"rate_limit_per_s": 0.5})
    assert changed.status_code == 200 and changed.json()["rate_limit_per_s"] == 0.5, changed.text
    # A PATCH that does not name it keeps it; null removes it.
    assert api.acme.patch(path, json={"description": "x"}).json()["rate_limit_per_s"] == 0.5
    row = api.conn.execute("SELECT rate_limit_per_s FROM rowhook.subscriptions WHERE id = %s", (sub["id"],))
    assert row.fetchone() == {"rate_limit_per_s": 0.5}
    assert api.acme.patch(path, json={"rate_limit_per_s": None}).json()["rate_limit_per_s"] is None
    base = {"target_url": TARGET, "resource": "tasks"}
    for bad in (0, -1, 0.001, 10001):
        assert_problem(
            api.acme.post("/subscriptions", json={**base, "rate_limit_per_s": bad}), 422, "rate_limit_per_s"
        )
        assert_problem(api.acme.patch(path, json={"rate_limit_per_s": bad}), 422, "rate_limit_per_s")
    for malformed in ("fast", True, [20]):
        assert_problem(
            api.acme.post("/subscriptions", json={**base, "rate_limit_per_s": malformed}),
            400,
            "rate_limit_per_s",
        )
    assert api.acme.get(path).json()["rate_limit_per_s"] is None
    # Another account's subscription stays out of reach, limit or not.
    assert api.globex.patch(path, json={"rate_limit_per_s": 5}).status_code == 404


def test_reactivating_a_disabled_subscription_clears_the_reason(api: Api) -> None:
    sub = api.subscribe()
    api.conn.execute(
        "UPDATE rowhook.subscriptions SET status = 'disabled', disabled_reason = '410 Gone',"
        " failing_since = now() WHERE id = %s",
        (sub["id"],),
    )
    assert api.acme.get(f"/subscriptions/{sub['id']}").json()["disabled_reason"] == "410 Gone"
    body = api.acme.patch(f"/subscriptions/{sub['id']}", json={"status": "active"}).json()
    assert body["status"] == "active" and body["disabled_reason"] is None and body["failing_since"] is None


def test_delete_is_soft_cancels_pending_deliveries_and_then_answers_404(api: Api) -> None:
    sub = api.subscribe()
    ping = api.acme.post(f"/subscriptions/{sub['id']}/test").json()
    assert api.acme.delete(f"/subscriptions/{sub['id']}").status_code == 204
    row = api.conn.execute("SELECT status FROM rowhook.deliveries WHERE id = %s", (ping["id"],)).fetchone()
    assert row is not None and row["status"] == "cancelled"
    kept = api.conn.execute(
        "SELECT deleted_at FROM rowhook.subscriptions WHERE id = %s", (sub["id"],)
    ).fetchone()
    assert kept is not None and kept["deleted_at"] is not None
    for method, path in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/test"),
        ("GET", "/deliveries"),
    ]:
        response = api.acme.request(
            method, f"/subscriptions/{sub['id']}{path}", json={} if method == "PATCH" else None
        )
        assert_problem(response, 404, "no subscription")
    assert api.acme.get("/subscriptions").json()["items"] == []


def test_rotation_returns_a_new_secret_and_keeps_the_old_one_for_the_grace_period(api: Api) -> None:
    sub = api.subscribe()
    rotated = api.acme.post(f"/subscriptions/{sub['id']}/secret/rotate")
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != sub["secret"]
    row = api.conn.execute(
        "SELECT secret, previous_secret, previous_secret_expires_at - now() AS grace"
        " FROM rowhook.subscriptions WHERE id = %s",
        (sub["id"],),
    ).fetchone()
    assert row is not None
    assert row["secret"] == body["secret"] and row["previous_secret"] == sub["secret"]
    assert timedelta(hours=23) < row["grace"] <= timedelta(hours=24)
    expires = datetime.fromisoformat(body["previous_secret_expires_at"])
    assert expires > datetime.now(UTC) + timedelta(hours=23)


def test_test_ping_queues_a_complete_ping_body_for_the_relay(api: Api) -> None:
    sub = api.subscribe()
    response = api.acme.post(f"/subscriptions/{sub['id']}/test")
    assert response.status_code == 201
    ping = response.json()
    assert ping["event_type"] == "ping" and ping["status"] == "pending" and ping["event_id"] is None
    row = api.conn.execute("SELECT * FROM rowhook.deliveries WHERE id = %s", (ping["id"],)).fetchone()
    assert row is not None and row["account"] == "acme" and row["next_attempt_at"] <= datetime.now(UTC)
    body = row["body"]
    assert body["type"] == "ping" and body["id"].startswith("evt_ping_")
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert body["data"]["subscription_id"] == sub["id"]
    assert body["account"] == "acme"  # a ping belongs to the subscription's account


def test_rest_hooks_alias_subscribes_to_one_event_and_unsubscribes(api: Api) -> None:
    created = api.acme.post("/hooks", json={"target_url": TARGET, "event": "tasks.created"})
    assert created.status_code == 201, created.text
    hook = created.json()
    sub = api.acme.get(f"/subscriptions/{hook['id']}").json()
    assert sub["resource"] == "tasks" and sub["events"] == ["created"]
    assert_problem(
        api.acme.post("/hooks", json={"target_url": TARGET, "event": "nope.created"}),
        422,
        "event: no resource named 'nope'",
    )
    assert_problem(
        api.acme.post("/hooks", json={"target_url": TARGET, "event": "tasks.exploded"}), 400, "event"
    )
    assert api.acme.delete(f"/hooks/{hook['id']}").status_code == 204
    assert_problem(api.acme.get(f"/subscriptions/{hook['id']}"), 404)
    assert_problem(api.acme.delete(f"/hooks/{hook['id']}"), 404)


def test_forged_cursors_are_400_not_500(api: Api) -> None:
    from api.cursors import encode_cursor

    forged = {
        "/subscriptions": encode_cursor("subscriptions", ["yesterday", "sub_x"]),
        "/resources/projects/items": encode_cursor("items:projects", ["not-a-number"]),
        "/resources/tasks/items": encode_cursor("items:tasks", ["99999999999999999999999"]),
    }
    for path, cursor in forged.items():
        assert_problem(api.acme.get(path, params={"cursor": cursor}), 400, "cursor")


def test_filter_values_are_bounded_so_the_fanout_index_takes_them(api: Api) -> None:
    api.conn.execute(
        "CREATE TABLE labels (id bigserial PRIMARY KEY, account_id text NOT NULL, tag text, color text);"
        " SELECT rowhook.watch('labels', account_column => 'account_id', scope_columns => '{tag,color}')"
    )
    base = {"target_url": TARGET, "resource": "labels"}
    assert_problem(
        api.acme.post("/subscriptions", json={**base, "filter": {"tag": "x" * 3000}}),
        422,
        "filter.tag: a filter value may have at most 256 characters",
    )
    sub = api.acme.patch(
        f"/subscriptions/{api.subscribe(resource='labels')['id']}", json={"filter": {"color": "y" * 3000}}
    )
    assert_problem(sub, 422, "filter.color")
    # 256 characters of 4 bytes each: each value fits, the two together exceed what the index takes.
    wide = "\U0001f600" * 256
    assert_problem(
        api.acme.post("/subscriptions", json={**base, "filter": {"tag": wide, "color": wide}}),
        422,
        "filter: the filter may take at most 2000 bytes",
    )
    near_limit = {"tag": wide, "color": "\U0001f600" * 200}  # about 1,850 bytes: fits the index
    assert api.acme.post("/subscriptions", json={**base, "filter": near_limit}).status_code == 201
    created = api.acme.post("/subscriptions", json={**base, "filter": {"tag": "t" * 256}})
    assert created.status_code == 201, created.text
    assert created.json()["filter"] == {"tag": "t" * 256}


def test_deleting_clears_the_secrets_by_either_route(api: Api) -> None:
    rotated = api.subscribe()
    api.acme.post(f"/subscriptions/{rotated['id']}/secret/rotate").raise_for_status()  # two secrets now
    hook = api.acme.post("/hooks", json={"target_url": TARGET, "event": "tasks.created"}).json()
    assert api.acme.delete(f"/subscriptions/{rotated['id']}").status_code == 204
    assert api.acme.delete(f"/hooks/{hook['id']}").status_code == 204
    rows = api.conn.execute(
        "SELECT secret, previous_secret, previous_secret_expires_at, deleted_at IS NOT NULL AS deleted"
        " FROM rowhook.subscriptions WHERE id = ANY(%s)",
        ([rotated["id"], hook["id"]],),
    ).fetchall()
    assert (
        rows
        == [{"secret": None, "previous_secret": None, "previous_secret_expires_at": None, "deleted": True}]
        * 2
    )
