"""GET /resources and /resources/{name}/items: visible resources, the account's own rows, keyset pages."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.api_harness import Api, assert_problem


def all_pages(client: httpx.Client, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_resources_lists_every_resource_with_events_and_scope_columns(api: Api) -> None:
    pages = all_pages(api.acme, "/resources")  # page_size=2 in these tests: several pages
    assert len(pages) == 2
    resources = {r["name"]: r for page in pages for r in page}
    assert sorted(resources) == ["memberships", "plans", "projects", "tasks"]
    assert resources["tasks"]["events"] == ["created", "updated", "deleted"]
    assert resources["tasks"]["scope_columns"] == ["project_id"]
    assert resources["plans"]["public"] is True
    assert "exclude_columns" not in resources["tasks"]


def test_items_lists_only_the_accounts_rows_as_key_and_label(api: Api) -> None:
    mine = [api.project("acme", f"proj{i}") for i in range(5)]
    api.project("globex", "theirs")
    pages = all_pages(api.acme, "/resources/projects/items")
    assert [len(page) for page in pages] == [2, 2, 1]
    items = [item for page in pages for item in page]
    assert items == [{"key": str(pid), "label": f"proj{i}"} for i, pid in enumerate(mine)]
    theirs = [item for page in all_pages(api.globex, "/resources/projects/items") for item in page]
    assert [item["label"] for item in theirs] == ["theirs"]


def test_items_of_composite_keys_render_like_the_capture_triggers(api: Api) -> None:
    api.conn.execute(
        "INSERT INTO memberships VALUES ('acme', 2, 'bob'), ('acme', 1, 'zoe'), ('acme', 1, 'amy'),"
        " ('globex', 1, 'eve')"
    )
    items = [item for page in all_pages(api.acme, "/resources/memberships/items") for item in page]
    assert [item["key"] for item in items] == ['[1, "amy"]', '[1, "zoe"]', '[2, "bob"]']
    api.conn.execute("SELECT rowhook.expand_changes()")
    keys = {
        row["key"]
        for row in api.conn.execute("SELECT key FROM rowhook.outbox WHERE resource = 'memberships'")
    }
    assert {item["key"] for item in items} <= keys
    assert all(item["label"] is None for item in items)


def test_items_never_carry_excluded_columns(api: Api) -> None:
    project = api.project("acme", "p")
    api.task("acme", project, "write docs")
    [item] = api.acme.get("/resources/tasks/items").json()["items"]
    assert item == {"key": "1", "label": "write docs"}


def test_public_resource_items_are_visible_to_every_account(api: Api) -> None:
    api.conn.execute("INSERT INTO plans VALUES ('free', 'Free'), ('pro', 'Pro')")
    for client in (api.acme, api.globex):
        items = [i for page in all_pages(client, "/resources/plans/items") for i in page]
        assert items == [{"key": "free", "label": "Free"}, {"key": "pro", "label": "Pro"}]


def test_unknown_resource_and_bad_paging_are_clear_4xx(api: Api) -> None:
    assert_problem(api.acme.get("/resources/nope/items"), 404, "no resource named 'nope'")
    assert_problem(api.acme.get("/resources/projects/items", params={"limit": 0}), 400, "limit")
    assert_problem(api.acme.get("/resources/projects/items", params={"limit": 1000}), 400, "limit")
    assert_problem(api.acme.get("/resources/projects/items", params={"cursor": "garbage!"}), 400, "cursor")
    other_list_cursor = api.acme.get("/resources").json()["next_cursor"]
    assert_problem(
        api.acme.get("/resources/projects/items", params={"cursor": other_list_cursor}), 400, "cursor"
    )


def test_unknown_query_parameters_are_refused(api: Api) -> None:
    assert_problem(
        api.acme.get("/resources/projects/items", params={"limt": 5}), 400, "limt: unknown query parameter"
    )
    assert_problem(api.acme.get("/subscriptions", params={"statuss": "active"}), 400, "statuss")
