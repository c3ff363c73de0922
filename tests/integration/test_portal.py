"""The delivery portal at /portal, in headless Chromium against the real API, a relay and a receiver."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web

from rowhook.settings import Settings
from tests.integration.api_harness import Api, Conn, running_api
from tests.integration.portal_harness import (
    assert_no_script_errors,
    chromium,
    chromium_path,
    eventually,
    focused_text,
    new_page,
    refresh_until,
    screenshot_path,
    tab_to,
)
from tests.integration.relay_harness import Receiver, receiver, running_relay

# Quick failures: three attempts 0.2 s apart, then `failed`.
RELAY = {"retry_schedule_s": (0.0, 0.2, 0.2)}


@pytest.fixture
def portal_api(conn: Conn, db_url: str) -> Iterator[Api]:
    with running_api(conn, db_url, Settings(allow_private_targets=True)) as api:
        yield api


def token_of(client: httpx.Client) -> str:
    return str(client.headers["authorization"]).removeprefix("Bearer ")


async def explode(_: int) -> web.StreamResponse:
    return web.Response(status=500, text="upstream exploded")


async def create_subscription(page: Any, target_url: str, project_id: int) -> str:
    """Through the form: a bad filter value first (its refusal shows next to the field), then a good one."""
    await page.get_by_role("button", name="New subscription").click()
    dialog = page.get_by_role("dialog", name="New subscription")
    await dialog.get_by_label("Target URL").fill(target_url)
    await dialog.get_by_label("Resource").select_option("tasks")
    await dialog.get_by_label("project_id").fill("seven")
    await dialog.get_by_label("Description").fill("Zap 42")
    await dialog.get_by_role("button", name="Save").click()
    error = dialog.locator("[data-error-for='filter.project_id']")
    await error.wait_for()
    assert "not a valid bigint" in await error.inner_text()
    assert await dialog.get_by_label("project_id").get_attribute("aria-invalid") == "true"
    await dialog.get_by_label("project_id").fill(str(project_id))
    await dialog.get_by_role("button", name="Save").click()
    secret_dialog = page.get_by_role("dialog", name="Signing secret")
    await secret_dialog.wait_for()
    secret = await secret_dialog.get_by_label("Secret").input_value()
    assert secret.startswith("whsec_")
    await secret_dialog.get_by_role("button", name="Done").click()
    return secret


async def test_portal_with_a_relay_and_a_receiver(portal_api: Api, db_url: str, tmp_path: Path) -> None:
    api = portal_api
    project = api.project("acme", "proj1")
    async with receiver() as server, running_relay(db_url, **RELAY), chromium() as browser:
        page = await new_page(browser)
        requests = record_requests(page)
        # A magic link: the token is taken from the fragment, which then leaves the address bar.
        await page.goto(f"{api.url}/portal#token={token_of(api.acme)}")
        await page.get_by_text("No subscriptions yet.").wait_for()
        assert page.url == f"{api.url}/portal"
        assert await page.evaluate("sessionStorage.getItem('rowhook.portal.token')") == token_of(api.acme)
        # Kept for this tab only: a second tab of the same browser profile is asked for a token.
        tab = await page.context.new_page()
        await tab.goto(f"{api.url}/portal")
        await tab.get_by_label("Access token").wait_for()
        assert await tab.evaluate("sessionStorage.getItem('rowhook.portal.token')") is None
        assert await page.evaluate("localStorage.length") == 0 and await page.context.cookies() == []
        await tab.close()

        target = f"http://127.0.0.1:{server.port}/in"
        secret = await create_subscription(page, target, project)
        server.secrets["/in"] = secret
        [sub] = api.acme.get("/subscriptions").json()["items"]
        assert (sub["target_url"], sub["description"]) == (target, "Zap 42")
        assert sub["filter"] == {"project_id": project}
        await page.get_by_role("heading", name="Zap 42").wait_for()

        # A pushed event appears in the log, with its attempt and body.
        api.task("acme", project, "write the docs")
        created = ".delivery:has(.badge.succeeded):has-text('tasks.created')"
        row = await refresh_until(page, created, "a delivery")
        await row.locator("summary").click()
        attempt = await row.locator("tbody tr").first.locator("td").all_inner_texts()
        assert attempt[1:] == ["200", attempt[2], "", "ok"] and re.fullmatch(r"\d+ ms", attempt[2]), attempt
        health = page.locator(f"[data-sub='{sub['id']}']")
        await eventually(
            lambda: has_no_text(health.locator("[data-health=last-success]"), "—"), "last success"
        )
        assert await health.locator("[data-health=failing-since]").inner_text() == "—"
        assert [r.signature_ok for r in server.received] == [True]
        assert json.loads(await row.locator("pre.body").inner_text()) == server.received[0].body

        # The receiver fails: the delivery fails, then a retry succeeds once it is fixed.
        server.responders["/in"] = explode
        api.task("acme", project, "break the receiver")
        failed = await refresh_until(page, ".delivery:has(.badge.failed)", "a failed delivery")
        await failed.locator("summary").click()
        assert "upstream exploded" in await failed.locator("table").inner_text()
        assert "500" in await failed.locator("table").inner_text()
        # Its health says so, in the list and in the details, refreshed with the log.
        since = health.locator("[data-health=failing-since]")
        await eventually(lambda: has_no_text(since, "—"), "failing since in the list")
        assert (
            await page.locator(".facts [data-health=failing-since]").inner_text() == await since.inner_text()
        )
        await page.get_by_role("heading", name="Subscriptions").scroll_into_view_if_needed()
        counts = page.locator(f"[data-counts='{sub['id']}']")
        await page.get_by_role("button", name="Refresh", exact=True).click()
        await eventually(lambda: has_text(counts, "failed 1"), "the failed count in the list")
        del server.responders["/in"]
        await failed.get_by_role("button", name=re.compile("^Retry delivery")).click()
        await refresh_until(page, ".delivery:has(.badge.succeeded):has-text('4 attempts')", "the retried one")
        assert not await page.locator(".delivery:has(.badge.failed)").count()
        await eventually(lambda: has_text(since, "—"), "failing since cleared by the success")

        # Pause holds new deliveries; resume sends them.
        await page.get_by_role("button", name="Pause").click()
        await page.get_by_role("button", name="Resume").wait_for()
        assert api.acme.get(f"/subscriptions/{sub['id']}").json()["status"] == "paused"
        api.task("acme", project, "held while paused")
        await refresh_until(page, ".delivery:has(.badge.held)", "a held delivery")
        await eventually(lambda: has_text(counts, "held 1 · pending 0 · failed 0"), "the held count")
        await page.get_by_role("button", name="Resume").click()
        await page.get_by_role("button", name="Pause").wait_for()
        await refresh_until(page, f"{created} >> nth=2", "the held one sent")
        await eventually(lambda: has_received(server, 4), "four pushes at the receiver")

        # A test event, and a rotated secret shown once (the old one keeps signing during the grace).
        await page.get_by_role("button", name="Send test event").click()
        await refresh_until(page, ".delivery:has(.badge.succeeded):has-text('ping')", "the ping")
        rotate = page.get_by_role("button", name="Rotate secret")
        await rotate.click()
        secret_dialog = page.get_by_role("dialog", name="Signing secret")
        new_secret = await secret_dialog.get_by_label("Secret").input_value()
        assert new_secret.startswith("whsec_") and new_secret != secret
        await page.keyboard.press("Escape")
        await eventually(lambda: focused_is(page, "Rotate secret"), "focus back on the opener")
        # Shown once: once closed, neither secret is anywhere in the page (nor does the API show it again).
        await secret_dialog.wait_for(state="hidden")
        await eventually(lambda: value_is(page.locator("#secret-value"), ""), "the secret gone from the page")
        html = await page.content()
        assert new_secret not in html and secret not in html
        assert "secret" not in api.acme.get(f"/subscriptions/{sub['id']}").json()

        # Edit: events and description change; nothing else is sent (no columns, no headers).
        await page.get_by_role("button", name="Edit").click()
        edit = page.get_by_role("dialog", name="Edit subscription")
        await edit.get_by_label("deleted").uncheck()
        await edit.get_by_label("Description").fill("Zap 43")
        await edit.get_by_role("button", name="Save").click()
        await page.get_by_role("heading", name="Zap 43").wait_for()
        edited = api.acme.get(f"/subscriptions/{sub['id']}").json()
        assert (edited["events"], edited["description"]) == (["created", "updated"], "Zap 43")
        assert edited["filter"] == {"project_id": project} and edited["target_url"] == target
        assert (edited["columns"], edited["headers"]) == (None, {})

        # Replay a window: a window that ends before it starts is refused next to From; then every event
        # of the subscription is queued again.
        await page.get_by_label("From").fill("2000-01-02T00:00")
        await page.get_by_label("Until (empty: now)").fill("2000-01-01T00:00")
        await page.get_by_role("button", name="Replay").click()
        since_error = page.locator("[data-error-for='since']")
        await eventually(
            lambda: has_text(since_error, "must be earlier than until"), "the refusal next to From"
        )
        assert await page.get_by_label("From").get_attribute("aria-invalid") == "true"
        await page.get_by_label("Until (empty: now)").fill("")
        await page.get_by_label("From").fill("2000-01-01T00:00")
        await page.get_by_role("button", name="Replay").click()
        await page.get_by_text("3 events queued again").wait_for()

        # The picture in the README: the retried delivery opened, with its attempts and body.
        await page.locator(".delivery:has-text('4 attempts') summary").click()
        await page.screenshot(path=str(screenshot_path(tmp_path)), full_page=True)
        assert_no_script_errors(page)
        # The same page on a phone, with the attempts table open: nothing is wider than the screen.
        await page.set_viewport_size({"width": 375, "height": 740})
        await eventually(lambda: fits(page, 375), "the page to fit 375 px")

        # The token went in the Authorization header of every API call, never in a URL the server saw.
        assert_token_only_in_header(requests, token_of(api.acme), api.url)
        assert any(r.method == "POST" and r.url.endswith("/retry") for r in requests)

        # Another account's token sees none of it, in the page and through the API the page uses.
        other = await new_page(browser)
        await other.goto(f"{api.url}/portal#token={token_of(api.globex)}")
        await other.get_by_text("No subscriptions yet.").wait_for()
        assert await other.get_by_text("Zap 42").count() == 0
        delivery_id = api.acme.get(f"/subscriptions/{sub['id']}/deliveries").json()["items"][0]["id"]
        statuses = await other.evaluate(
            """async ([sub, delivery]) => {
                const auth = {authorization: `Bearer ${sessionStorage.getItem('rowhook.portal.token')}`};
                const get = (p, init = {}) => fetch(p, {...init, headers: auth}).then((r) => r.status);
                return [await get(`/subscriptions/${sub}`), await get(`/deliveries/${delivery}`),
                        await get(`/deliveries/${delivery}/retry`, {method: 'POST'}),
                        await get(`/subscriptions/${sub}/deliveries`)];
            }""",
            [sub["id"], delivery_id],
        )
        assert statuses == [404, 404, 404, 404]

        # Delete, after a confirmation that Cancel (or Escape) leaves everything as it was.
        await page.get_by_role("button", name="Delete").click()
        confirm = page.get_by_role("dialog", name="Are you sure?")
        await confirm.get_by_role("button", name="Cancel").click()
        assert api.acme.get(f"/subscriptions/{sub['id']}").status_code == 200
        await page.get_by_role("button", name="Delete").click()
        await confirm.get_by_role("button", name="Delete").click()
        await page.get_by_text("No subscriptions yet.").wait_for()
        assert api.acme.get(f"/subscriptions/{sub['id']}").status_code == 404
        assert_no_script_errors(page)


async def has_text(locator: Any, text: str) -> bool:
    return text in await locator.inner_text()


async def value_is(locator: Any, value: str) -> bool:
    return bool(await locator.input_value() == value)


async def has_no_text(locator: Any, text: str) -> bool:
    return text not in await locator.inner_text()


async def fits(page: Any, width: int) -> bool:
    return bool(await page.evaluate("document.documentElement.scrollWidth") <= width)


def record_requests(page: Any) -> list[Any]:
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request))
    return requests


def assert_token_only_in_header(requests: list[Any], token: str, base: str) -> None:
    """No request line carries the token (a fragment is not part of what is sent); each API call has it
    as `Authorization: Bearer`, and the portal's own files are fetched without it."""
    assert requests
    for request in requests:
        sent = request.url.split("#")[0]
        assert token not in sent, sent
        auth = request.headers.get("authorization")
        if sent.startswith(f"{base}/portal"):
            assert auth is None, sent
        else:
            assert auth == f"Bearer {token}", (request.method, sent, auth)


async def has_received(server: Receiver, count: int) -> bool:
    return len(server.received) >= count


async def test_portal_at_375_px_with_the_keyboard_only(portal_api: Api) -> None:
    api = portal_api
    async with chromium() as browser:
        page = await new_page(browser, width=375, height=740)
        requests = record_requests(page)
        await page.goto(f"{api.url}/portal")
        # The token form has focus; a wrong token is refused next to the field.
        await page.keyboard.type("rh_not_a_token")
        await page.keyboard.press("Enter")
        await page.get_by_text("unknown or revoked token").wait_for()
        assert await page.evaluate("sessionStorage.getItem('rowhook.portal.token')") is None
        await page.keyboard.type(token_of(api.acme))
        await page.keyboard.press("Enter")
        await page.get_by_text("No subscriptions yet.").wait_for()

        # Create with the keyboard: the dialog takes focus, a refusal is shown next to its field.
        await tab_to(page, "New subscription")
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "f-target_url"
        await page.keyboard.type("ftp://example.com/in")
        await page.keyboard.press("Enter")
        error = page.locator("[data-error-for='target_url']")
        await error.wait_for()
        assert await page.evaluate("document.activeElement.id") == "f-target_url"
        assert "http" in await error.inner_text()
        assert await page.get_attribute("#f-target_url", "aria-invalid") == "true"
        await page.keyboard.press("Control+A")
        await page.keyboard.type("http://127.0.0.1:9/in")
        await page.keyboard.press("Enter")
        await page.get_by_role("dialog", name="Signing secret").wait_for()
        await page.keyboard.press("Escape")

        # Pause it with the keyboard; focus lands on the button that undoes it.
        await tab_to(page, "Pause")
        await page.keyboard.press("Enter")
        await page.get_by_role("button", name="Resume").wait_for()
        await eventually(lambda: focused_is(page, "Resume"), "focus on Resume")
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", "the focused button shows no focus ring"
        [sub] = api.acme.get("/subscriptions").json()["items"]
        assert sub["status"] == "paused"

        # Nothing is wider than the phone's screen.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page scrolls sideways at 375 px ({width} px wide)"

        # Rotate with the keyboard: the secret dialog takes focus, Escape gives it back to the button.
        await tab_to(page, "Rotate secret")
        await page.keyboard.press("Enter")
        await page.get_by_role("dialog", name="Signing secret").wait_for()
        assert await page.evaluate("document.activeElement.id") == "secret-value"
        await page.keyboard.press("Escape")
        await eventually(lambda: focused_is(page, "Rotate secret"), "focus back on Rotate secret")

        # Delete with the keyboard: the confirmation opens on Cancel (the safe choice); Tab reaches Delete.
        await tab_to(page, "Delete")
        await page.keyboard.press("Enter")
        await page.get_by_role("dialog", name="Are you sure?").wait_for()
        assert await focused_text(page) == "Cancel"
        await page.keyboard.press("Tab")
        assert await focused_text(page) == "Delete"
        await page.keyboard.press("Enter")
        await page.get_by_text("No subscriptions yet.").wait_for()
        assert api.acme.get(f"/subscriptions/{sub['id']}").status_code == 404
        assert_no_script_errors(page)
        # The pasted token never went into a URL (the wrong one first, then the right one).
        assert_token_only_in_header(
            [r for r in requests if "rh_not_a_token" not in str(r.headers)], token_of(api.acme), api.url
        )
        assert all("rh_not_a_token" not in r.url for r in requests)


async def focused_is(page: Any, text: str) -> bool:
    return await focused_text(page) == text


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
        # The filter is edited too: one value per scope column of the resource.
        assert await edit.get_by_label("project_id").input_value() == ""
        await edit.get_by_label("project_id").fill("7")
        await edit.get_by_role("button", name="Save").click()
        await page.get_by_role("heading", name="still with headers").wait_for()
        again = api.acme.get(f"/subscriptions/{sub['id']}").json()
        assert (again["columns"], again["headers"]) == (saved["columns"], saved["headers"])
        assert again["filter"] == {"project_id": 7}
        assert '{"project_id":7}' in await facts.inner_text()
        await page.get_by_role("button", name="Edit").click()
        assert await edit.get_by_label("project_id").input_value() == "7"
        await edit.get_by_label("project_id").fill("")
        await edit.get_by_role("button", name="Save").click()
        await edit.wait_for(state="hidden")
        await eventually(lambda: has_no_text(facts, "project_id"), "the filter removed")
        assert api.acme.get(f"/subscriptions/{sub['id']}").json()["filter"] == {}
        row = api.conn.execute("SELECT headers FROM rowhook.subscriptions WHERE id = %s", (sub["id"],))
        assert row.fetchone() == {"headers": {"X-Api-Key": "k-secret-1234"}}
        assert_no_script_errors(page)


async def test_a_read_token_sees_everything_and_its_actions_are_unavailable(
    portal_api: Api, db_url: str
) -> None:
    api = portal_api
    sub = api.subscribe(description="read me")
    assert api.acme.post(f"/subscriptions/{sub['id']}/test").status_code < 300  # a delivery to see
    link = magic_link_as_the_docs_show(db_url, api.url)
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(link)
        await page.locator(".sub-open").first.click()
        await page.get_by_role("heading", name="read me").wait_for()
        await page.locator(".delivery:has-text('ping')").first.wait_for()  # the log is readable
        # No relay runs: the ping waits, and the health counts it as pending.
        counts = page.locator(f"[data-counts='{sub['id']}']")
        await eventually(lambda: has_text(counts, "held 0 · pending 1 · failed 0"), "the pending count")
        await page.get_by_role("button", name="Pause").click()
        alert = page.locator("#action-error")
        await eventually(lambda: has_text(alert, "'manage' scope"), "the 403 detail under the buttons")
        lacks = "this token lacks the 'manage' scope that PATCH needs (it has: read)"
        assert await alert.inner_text() == lacks  # the detail as the API gave it, nothing else
        assert await page.get_by_role("button", name="Pause").is_disabled()
        assert await page.get_by_role("button", name="New subscription").is_disabled()
        assert await page.get_by_role("button", name="Edit").is_disabled()
        assert "can only read" in await page.locator("#who").inner_text()
        assert api.acme.get(f"/subscriptions/{sub['id']}").json()["status"] == "active"

        # Once it expires, the next call sends the page back to the token form with the API's reason.
        expired = api.conn.execute(
            "UPDATE rowhook.tokens SET expires_at = now() - interval '1 second'"
            " WHERE account = 'acme' AND name = 'portal link for amy' AND scopes = '{read}'"
            " AND expires_at < now() + interval '16 minutes'"  # the docs mint 15 minutes of read
        )
        assert expired.rowcount == 1
        await page.get_by_role("button", name="Refresh log").click()
        token_error = page.locator("#token-error")
        await eventually(lambda: has_text(token_error, "expired"), "the 401 on the token form")
        assert re.fullmatch(
            r"The token was refused: token expired at \S+Z; ask for a new one", await token_error.inner_text()
        )
        assert await page.locator("#token").is_visible() and not await page.locator("#portal").is_visible()
        assert await page.evaluate("sessionStorage.getItem('rowhook.portal.token')") is None
        assert_no_script_errors(page, allowed=("status of 403",))


def magic_link_as_the_docs_show(db_url: str, base: str) -> str:
    """Runs docs/portal.md's Python example as written (a plain psycopg connection) for acme's user amy."""
    docs = (Path(__file__).parents[2] / "docs" / "portal.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", docs, re.S)
    namespace: dict[str, Any] = {}
    exec(example, namespace)
    with psycopg.connect(db_url, autocommit=True) as conn:
        link = str(namespace["portal_link"](conn, "acme", "amy"))
    assert link.startswith("https://rowhook.example.com/portal#token=rh_"), link
    return link.replace("https://rowhook.example.com", base)


async def test_an_attempt_that_never_got_an_answer_shows_its_error(portal_api: Api, db_url: str) -> None:
    api = portal_api
    with socket.socket() as closed:  # a port nothing listens on: the connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sub = api.subscribe(target_url=f"http://127.0.0.1:{port}/in", description="nobody home")
    async with running_relay(db_url, **RELAY), chromium() as browser:
        assert api.acme.post(f"/subscriptions/{sub['id']}/test").status_code < 300
        page = await new_page(browser)
        await page.goto(f"{api.url}/portal#token={token_of(api.acme)}")
        await page.locator(".sub-open").first.click()
        await page.get_by_role("heading", name="nobody home").wait_for()
        failed = await refresh_until(
            page, ".delivery:has(.badge.failed):has-text('3 attempts')", "a failed ping"
        )
        await failed.locator("summary").click()
        rows = failed.locator("tbody tr")
        assert await rows.count() == 3
        when, status, duration, error, response = await rows.first.locator("td").all_inner_texts()
        assert (status, response) == ("—", "")
        assert re.fullmatch(r"\d+ ms", duration) and when
        stored = api.acme.get(f"/subscriptions/{sub['id']}/deliveries").json()["items"][0]["attempt_log"]
        assert error and error == stored[0]["error"], (error, stored[0])
        assert json.loads(await failed.locator("pre.body").inner_text())["type"] == "ping"
        assert_no_script_errors(page)


def test_portal_is_served_without_a_token_and_loads_nothing_from_elsewhere(portal_api: Api) -> None:
    with httpx.Client(base_url=portal_api.url) as client:
        page = client.get("/portal")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        # A form submitted before the script runs cannot put the token in a URL (`?token=...`).
        assert "form-action 'none'" in csp
        assert page.headers["referrer-policy"] == "no-referrer"
        assert not re.search(r"(src|href)=\"https?://", page.text), "the page loads something from elsewhere"
        for asset, kind in (("portal.js", "javascript"), ("api.js", "javascript"), ("portal.css", "css")):
            response = client.get(f"/portal/{asset}")
            assert response.status_code == 200 and kind in response.headers["content-type"], asset
            assert "https://" not in response.text, asset
        assert client.get("/portal/nothing.js").status_code == 404
        assert client.get("/subscriptions").status_code == 401  # the API itself still wants a token


def test_browser_tests_skip_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROWHOOK_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.skip.Exception, match=r"no Chromium found .*apt-get install -y chromium"):
        chromium_path()
