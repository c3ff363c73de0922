"""Idempotency-Key on POST /subscriptions and POST /hooks: a retry answers the first result."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from api.idempotency import fingerprint
from api.schemas import SubscriptionCreate
from rowhook.prune import Retention, prune
from tests.integration.api_harness import TARGET, Api, assert_problem

BODY = {"target_url": TARGET, "resource": "tasks", "events": ["created"]}


def post(
    client: httpx.Client, key: str | None, body: dict[str, Any] = BODY, path: str = "/subscriptions"
) -> httpx.Response:
    return client.post(path, json=body, headers={"idempotency-key": key} if key is not None else {})


def live_subscriptions(api: Api, account: str = "acme") -> int:
    row = api.conn.execute(
        "SELECT count(*) AS n FROM rowhook.subscriptions WHERE account = %s AND deleted_at IS NULL",
        (account,),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_a_retry_with_the_same_key_and_body_answers_the_first_result(api: Api) -> None:
    first = post(api.acme, "zap-1")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    # The same body with other key order and spacing is the same request.
    again = api.acme.post(
        "/subscriptions",
        content=b'{"events": ["created"],  "resource": "tasks", "target_url": "' + TARGET.encode() + b'"}',
        headers={"idempotency-key": "zap-1", "content-type": "application/json"},
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()  # same id, same secret: none minted
    assert first.json()["secret"].startswith("whsec_")
    assert live_subscriptions(api) == 1
    # Without a key, or with another one, a create is a create.
    assert post(api.acme, None).json()["id"] != first.json()["id"]
    assert post(api.acme, "zap-2").json()["id"] != first.json()["id"]
    assert live_subscriptions(api) == 3


def test_the_same_key_with_another_body_is_a_422_naming_the_key(api: Api) -> None:
    first = post(api.acme, "zap-1").json()
    other = post(api.acme, "zap-1", {**BODY, "events": ["updated"]})
    problem = assert_problem(other, 422, "Idempotency-Key", "'zap-1'", "another request")
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    # The same body on the other route is another request too.
    hook = post(api.acme, "zap-1", {"target_url": TARGET, "event": "tasks.created"}, "/hooks")
    assert_problem(hook, 422, "'zap-1'")
    assert live_subscriptions(api) == 1
    assert post(api.acme, "zap-1").json() == first


def test_keys_are_per_account(api: Api) -> None:
    mine = post(api.acme, "shared-key").json()
    theirs = post(api.globex, "shared-key", {**BODY, "resource": "projects"})
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine["id"] and theirs.json()["resource"] == "projects"
    assert (live_subscriptions(api, "acme"), live_subscriptions(api, "globex")) == (1, 1)


def test_hooks_take_a_key_too(api: Api) -> None:
    body = {"target_url": TARGET, "event": "tasks.created"}
    first = post(api.acme, "hook-1", body, "/hooks")
    again = post(api.acme, "hook-1", body, "/hooks")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert live_subscriptions(api) == 1


def test_a_malformed_key_is_a_422_naming_the_header(api: Api) -> None:
    for key in ["", "x" * 256, "caf\u00e9", "tab\there"]:
        response = api.acme.post(
            "/subscriptions", json=BODY, headers=[(b"idempotency-key", key.encode("latin-1"))]
        )
        assert_problem(response, 422, "Idempotency-Key", "printable ASCII")
    assert post(api.acme, "x" * 255).status_code == 201
    assert post(api.acme, "a b~!").status_code == 201
    assert live_subscriptions(api) == 2


def test_a_refused_request_does_not_use_up_its_key(api: Api) -> None:
    assert_problem(post(api.acme, "zap-1", {**BODY, "resource": "nope"}), 422, "resource")
    assert post(api.acme, "zap-1", {**BODY, "resource": "nope"}).status_code == 422  # checked again
    created = post(api.acme, "zap-1")
    assert created.status_code == 201 and "idempotent-replayed" not in created.headers


def test_concurrent_requests_with_one_key_create_one_subscription(api: Api) -> None:
    start = threading.Barrier(8)

    def attempt(_: int) -> httpx.Response:
        with api.client(api.acme.headers["authorization"].split()[1]) as client:
            start.wait()
            return post(client, "race")

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(attempt, range(8)))
    assert [r.status_code for r in responses] == [201] * 8
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.json()["secret"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert live_subscriptions(api) == 1


def test_a_request_waits_for_the_one_holding_its_key(api: Api, db_url: str) -> None:
    """A first request still in its transaction holds the key: a retry waits for its outcome (here the
    holder rolls back, so the retry goes ahead and creates)."""
    digest = fingerprint("POST /subscriptions", SubscriptionCreate(**BODY))  # type: ignore[arg-type]
    with psycopg.connect(db_url) as holder:
        holder.execute(
            "INSERT INTO rowhook.idempotency_keys (account, key, fingerprint) VALUES ('acme', 'held', %s)",
            (digest,),
        )
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(post, api.acme, "held")
            time.sleep(1.0)
            assert not waiting.done()
            holder.rollback()
            response = waiting.result(timeout=30)
    assert response.status_code == 201 and "idempotent-replayed" not in response.headers
    assert live_subscriptions(api) == 1


def test_no_secret_is_kept_with_the_key_and_a_rotated_or_deleted_secret_is_not_replayed(api: Api) -> None:
    first = post(api.acme, "zap-1").json()
    stored = api.conn.execute("SELECT * FROM rowhook.idempotency_keys").fetchone()
    assert stored is not None and stored["status_code"] == 201
    assert "whsec_" not in str(stored) and "secret" not in stored["response"]
    api.acme.post(f"/subscriptions/{first['id']}/secret/rotate")
    after_rotation = post(api.acme, "zap-1")
    assert after_rotation.status_code == 201 and after_rotation.headers["idempotent-replayed"] == "true"
    assert after_rotation.json() == {k: v for k, v in first.items() if k != "secret"}
    second = post(api.acme, "zap-2").json()
    api.acme.delete(f"/subscriptions/{second['id']}")
    assert "secret" not in post(api.acme, "zap-2").json()
    assert live_subscriptions(api) == 1


def test_a_key_older_than_24_hours_is_new_again_and_prune_removes_it(api: Api, db_url: str) -> None:
    old = post(api.acme, "old").json()
    post(api.acme, "fresh")
    api.conn.execute(
        "UPDATE rowhook.idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'"
    )
    reused = post(api.acme, "old")
    assert reused.status_code == 201 and reused.json()["id"] != old["id"]
    api.conn.execute(
        "INSERT INTO rowhook.idempotency_keys (account, key, fingerprint, created_at)"
        " VALUES ('acme', 'stale', 'x', now() - interval '24 hours 1 second'),"
        "        ('globex', 'young', 'x', now() - interval '23 hours 59 minutes')"
    )
    week = 7 * 86400.0
    counts = prune(db_url, Retention(succeeded_s=week, failed_s=week), batch_size=1)
    assert counts.idempotency_keys == 1
    kept = {(r["account"], r["key"]) for r in api.conn.execute("SELECT * FROM rowhook.idempotency_keys")}
    assert kept == {("acme", "old"), ("acme", "fresh"), ("globex", "young")}
    later = datetime.now(UTC) + timedelta(hours=25)
    assert prune(db_url, Retention(succeeded_s=week, failed_s=week), now=later).idempotency_keys == 3
