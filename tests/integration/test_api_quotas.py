"""Account quotas hold across API processes: live subscriptions, pings and replays per minute (429)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from rowhook.settings import Settings
from tests.integration.api_harness import (
    TARGET,
    Api,
    Conn,
    assert_problem,
    bearer_client,
    running_api,
    serve_api,
)

QUOTAS = Settings(
    allow_private_targets=True, max_subscriptions_per_account=3, pings_per_minute=2, replays_per_minute=1
)


@dataclass
class TwoApis:
    """Two API processes' worth of apps on one database, and acme's client for the second one."""

    api: Api
    second: httpx.Client


@pytest.fixture
def apis(conn: Conn, db_url: str) -> Iterator[TwoApis]:
    with running_api(conn, db_url, QUOTAS) as api, serve_api(QUOTAS, db_url) as second_url:
        token = api.acme.headers["authorization"].removeprefix("Bearer ")
        with bearer_client(second_url, token) as second:
            yield TwoApis(api=api, second=second)


def test_pings_per_minute_count_across_processes_and_accounts_apart(apis: TwoApis) -> None:
    api, second = apis.api, apis.second
    sub = api.subscribe()
    assert api.acme.post(f"/subscriptions/{sub['id']}/test").status_code == 201
    assert second.post(f"/subscriptions/{sub['id']}/test").status_code == 201
    refused = api.acme.post(f"/subscriptions/{sub['id']}/test")
    assert_problem(refused, 429, "at most 2 pings a minute", "ROWHOOK_PINGS_PER_MINUTE")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert_problem(second.post(f"/subscriptions/{sub['id']}/test"), 429, "ROWHOOK_PINGS_PER_MINUTE")
    # Another account has quotas of its own; an unknown subscription is a 404, not a use.
    other = api.subscribe(api.globex)
    assert api.globex.post(f"/subscriptions/{other['id']}/test").status_code == 201
    assert_problem(api.acme.post(f"/subscriptions/{other['id']}/test"), 404)
    # A minute later (the uses are moved back in time rather than waited for) pings are allowed again.
    api.conn.execute("UPDATE rowhook.quota_uses SET used_at = used_at - interval '61 seconds'")
    assert api.acme.post(f"/subscriptions/{sub['id']}/test").status_code == 201


def test_replays_per_minute(apis: TwoApis) -> None:
    api, second = apis.api, apis.second
    sub = api.subscribe()
    window = {"since": "2020-01-01T00:00:00Z"}
    assert api.acme.post(f"/subscriptions/{sub['id']}/replay", json=window).status_code == 201
    refused = second.post(f"/subscriptions/{sub['id']}/replay", json=window)
    assert_problem(refused, 429, "at most 1 replays a minute", "ROWHOOK_REPLAYS_PER_MINUTE")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # A refused request does not count: bad input is told as such, not as a quota.
    assert_problem(
        api.acme.post(f"/subscriptions/{sub['id']}/replay", json={"since": "2999-01-01T00:00:00Z"}),
        422,
        "since",
    )


def test_live_subscriptions_per_account_hold_under_concurrent_creates(apis: TwoApis) -> None:
    api, second = apis.api, apis.second
    body = {"target_url": TARGET, "resource": "tasks"}
    with ThreadPoolExecutor(8) as pool:
        clients = [api.acme, second] * 4
        answers = list(pool.map(lambda client: client.post("/subscriptions", json=body), clients))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [429] * 5
    refused = next(a for a in answers if a.status_code == 429)
    assert_problem(refused, 429, "at most 3", "ROWHOOK_MAX_SUBSCRIPTIONS_PER_ACCOUNT", "delete one")
    assert "retry-after" not in refused.headers  # waiting frees nothing
    assert_problem(
        api.acme.post("/hooks", json={"target_url": TARGET, "event": "tasks.created"}),
        429,
        "ROWHOOK_MAX_SUBSCRIPTIONS_PER_ACCOUNT",
    )
    assert api.globex.post("/subscriptions", json=body).status_code == 201  # another account's count
    first = next(a for a in answers if a.status_code == 201).json()
    assert api.acme.delete(f"/subscriptions/{first['id']}").status_code == 204
    assert api.acme.post("/subscriptions", json=body).status_code == 201


def test_default_quotas() -> None:
    defaults = Settings()
    assert (
        defaults.max_subscriptions_per_account,
        defaults.pings_per_minute,
        defaults.replays_per_minute,
    ) == (
        100,
        30,
        10,
    )
    from_env = Settings.from_env({"ROWHOOK_PINGS_PER_MINUTE": "5", "ROWHOOK_REPLAYS_PER_MINUTE": "2"})
    assert (from_env.pings_per_minute, from_env.replays_per_minute) == (5, 2)
