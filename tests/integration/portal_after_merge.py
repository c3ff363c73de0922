"""A browser test of the portal for API fields not on main yet: subscription `columns` and `headers`
(issue 13, push authentication and column-specific updates; branch sub-headers). pytest does not collect
this module (its name has no test_ prefix); once that branch is merged, move the function into
test_portal.py (it uses its `portal_api` fixture). The `read`-token test has moved there already."""

from __future__ import annotations

from tests.integration.api_harness import Api
from tests.integration.portal_harness import assert_no_script_errors, chromium, eventually, new_page
from tests.integration.test_portal import has_text, token_of


async def test_portal_edits_columns_and_headers(portal_api: Api) -> None:
    api = portal_api
    sub = api.subscribe(description="with headers")
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(f"{api.url}/portal#token={token_of(api.acme)}")
        await page.locator(".sub-open").first.click()
        await page.get_by_role("button", name="Edit").click()
        edit = page.get_by_role("dialog", name="Edit subscription")
        # A name rowhook owns is refused, and the API's reason shows next to the Headers field.
        headers = edit.get_by_label("Headers")
        await headers.fill("Host: example.com")
        await edit.get_by_role("button", name="Save").click()
        error = edit.locator("[data-error-for='headers']")
        await eventually(lambda: has_text(error, "Host"), "the refusal next to Headers")
        assert "set by rowhook itself" in await error.inner_text()
        assert await headers.get_attribute("aria-invalid") == "true"
        await headers.fill("X-Api-Key: k-secret-1234")
        await edit.get_by_label("Columns").fill("title, done")
        await edit.get_by_role("button", name="Save").click()
        await edit.wait_for(state="hidden")
        facts = page.locator(".facts")
        await eventually(lambda: has_text(facts, "title, done"), "the saved columns in the facts")
        saved = api.acme.get(f"/subscriptions/{sub['id']}").json()
        assert saved["columns"] == ["title", "done"]
        assert saved["headers"] == {"X-Api-Key": "****1234"}
        text = await facts.inner_text()
        assert "X-Api-Key" in text and "k-secret-1234" not in text
        row = api.conn.execute("SELECT headers FROM rowhook.subscriptions WHERE id = %s", (sub["id"],))
        assert row.fetchone() == {"headers": {"X-Api-Key": "k-secret-1234"}}  # stored as typed

        # Reopened: columns are there to edit, headers are not prefilled (neither value nor mask).
        await page.get_by_role("button", name="Edit").click()
        assert await edit.get_by_label("Columns").input_value() == "title, done"
        assert await headers.input_value() == ""
        # A column the resource does not capture is refused next to Columns; nothing is saved.
        await edit.get_by_label("Columns").fill("title, no_such_column")
        await edit.get_by_role("button", name="Save").click()
        columns_error = edit.locator("[data-error-for='columns']")
        await eventually(lambda: has_text(columns_error, "no_such_column"), "the refusal next to Columns")
        assert await edit.get_by_label("Columns").get_attribute("aria-invalid") == "true"
        assert api.acme.get(f"/subscriptions/{sub['id']}").json()["columns"] == ["title", "done"]
        # Editing something else leaves the stored headers and columns alone (nothing masked is sent back).
        await edit.get_by_label("Columns").fill("title, done")
        await edit.get_by_label("Description").fill("still with headers")
        await edit.get_by_role("button", name="Save").click()
        await page.get_by_role("heading", name="still with headers").wait_for()
        again = api.acme.get(f"/subscriptions/{sub['id']}").json()
        assert (again["columns"], again["headers"]) == (saved["columns"], saved["headers"])
        row = api.conn.execute("SELECT headers FROM rowhook.subscriptions WHERE id = %s", (sub["id"],))
        assert row.fetchone() == {"headers": {"X-Api-Key": "k-secret-1234"}}
        assert_no_script_errors(page)
