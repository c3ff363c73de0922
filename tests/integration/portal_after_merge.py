"""A browser test of the portal for API fields not on main yet: subscription `columns` and `headers`
(issue 13, push authentication and column-specific updates; branch sub-headers). pytest does not collect
this module (its name has no test_ prefix); once that branch is merged, move the function into
test_portal.py (it uses its `portal_api` fixture). The `read`-token test has moved there already."""

from __future__ import annotations

from tests.integration.api_harness import Api
from tests.integration.portal_harness import assert_no_script_errors, chromium, new_page
from tests.integration.test_portal import token_of


async def test_portal_edits_columns_and_headers(portal_api: Api) -> None:
    api = portal_api
    sub = api.subscribe(description="with headers")
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(f"{api.url}/portal#token={token_of(api.acme)}")
        await page.locator(".sub-open").first.click()
        await page.get_by_role("button", name="Edit").click()
        edit = page.get_by_role("dialog", name="Edit subscription")
        # A name rowhook owns is refused, and the refusal shows next to the headers field.
        await edit.get_by_label("Headers").fill("Host: example.com")
        await edit.get_by_role("button", name="Save").click()
        error = edit.locator("[data-error-for='headers']")
        await error.wait_for()
        assert "host" in (await error.inner_text()).lower()
        await edit.get_by_label("Headers").fill("X-Api-Key: k-secret-1234")
        await edit.get_by_label("Columns").fill("title, done")
        await edit.get_by_role("button", name="Save").click()
        await page.get_by_role("heading", name="with headers").wait_for()
        saved = api.acme.get(f"/subscriptions/{sub['id']}").json()
        assert saved["columns"] == ["title", "done"]
        assert list(saved["headers"]) == ["X-Api-Key"] and "k-secret-1234" not in str(saved["headers"])
        facts = await page.locator(".facts").inner_text()
        assert "title, done" in facts and "X-Api-Key" in facts and "k-secret-1234" not in facts
        # Editing something else leaves the stored headers and columns alone (nothing masked is sent back).
        await page.get_by_role("button", name="Edit").click()
        await edit.get_by_label("Description").fill("still with headers")
        await edit.get_by_role("button", name="Save").click()
        await page.get_by_role("heading", name="still with headers").wait_for()
        again = api.acme.get(f"/subscriptions/{sub['id']}").json()
        assert (again["columns"], again["headers"]) == (saved["columns"], saved["headers"])
        assert_no_script_errors(page)
