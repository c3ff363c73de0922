"""/subscriptions: create, list, read, change, delete, rotate the secret, ping, delivery log and replay."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Response, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import UNSET
from psycopg.types.json import Jsonb

from api.cursors import Cursor, Limit, decode_time_cursor, page_size, time_position
from api.database import AccountDep, Conn, ConnDep, LazyConn, LazyConnDep, SettingsDep, TargetsDep
from api.deliveries import to_delivery_out
from api.errors import NOT_FOUND, TOO_MANY, UNPROCESSABLE, NotFound, Unprocessable, responses
from api.idempotency import IdempotencyKey, create_once
from api.models import to_response
from api.push_headers import check_headers, masked
from api.quotas import check_subscription_quota, use_rate_quota
from api.resources import coerce_filter, get_resource
from api.schemas import (
    MAX_RATE_LIMIT_PER_S,
    MIN_RATE_LIMIT_PER_S,
    DeliveryOut,
    DeliveryPage,
    ReplayOut,
    ReplayRequest,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionPage,
    SubscriptionUpdate,
)
from api.store import execute, fetch_one, fetch_page
from api.target_checks import TargetChecker, TargetRefused
from api.update_columns import check_columns
from rowhook.settings import Settings
from rowhook.statuses import DeliveryStatus, SubscriptionStatus, new_delivery_status
from rowhook.webhooks import new_secret, ping_body

SUBSCRIPTION_ID = re.compile(r"^sub_[0-9a-f]{32}$")
# Attempts shown per delivery in the log; the table keeps them all.
ATTEMPTS_SHOWN = 20

DeliveryStatusFilter = Annotated[
    DeliveryStatus | None, QueryParameter(description="only deliveries in this status")
]
StatusFilter = Annotated[
    SubscriptionStatus | None, QueryParameter(description="only subscriptions in this status")
]
ResourceFilter = Annotated[
    str | None, QueryParameter(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="resource name")
]


def to_subscription_out(row: dict[str, Any], *, with_secret: bool = False) -> SubscriptionOut:
    # Straight from the row, as to_delivery_out (the table model's validation cost more than the rest).
    return to_response(
        SubscriptionOut,
        row,
        held_deliveries=row.get("held_deliveries") or 0,
        headers=masked(row["headers"]),
        secret=row["secret"] if with_secret and row.get("secret") is not None else UNSET,
    )


async def check_target(url: str, targets: TargetChecker) -> None:
    """Run it before taking a database connection: a lookup may take seconds."""
    try:
        await targets.check(url)
    except TargetRefused as exc:
        raise Unprocessable(str(exc), field="target_url") from None


def check_text(value: str | None, field: str) -> None:
    if value is not None and "\x00" in value:
        raise Unprocessable("must not contain NUL characters", field=field)


def check_rate_limit(value: float | None) -> None:
    if value is not None and not MIN_RATE_LIMIT_PER_S <= value <= MAX_RATE_LIMIT_PER_S:
        reason = f"must be from {MIN_RATE_LIMIT_PER_S} to {MAX_RATE_LIMIT_PER_S:g} per second, or null"
        raise Unprocessable(reason, field="rate_limit_per_s")


def unique_events(events: list[str]) -> list[str]:
    return list(dict.fromkeys(events))


async def load_subscription(
    conn: Conn, account: str, subscription_id: str, *, lock: bool = False
) -> dict[str, Any]:
    """The account's live subscription; anything else (absent, deleted, another account's) is a 404."""
    missing = f"no subscription {subscription_id!r} for this account"
    if not SUBSCRIPTION_ID.fullmatch(subscription_id):
        raise NotFound(missing)
    name = "api_lock_subscription" if lock else "api_get_subscription"
    return await fetch_one(conn, name, {"id": subscription_id, "account": account}, missing=missing)


async def create_subscription(
    lazy_conn: LazyConn,
    account: str,
    settings: Settings,
    targets: TargetChecker,
    data: SubscriptionCreate,
    resource_field: str = "resource",
) -> SubscriptionOut:
    check_text(data.description, "description")
    headers = check_headers(data.headers)
    check_rate_limit(data.rate_limit_per_s)
    await check_target(data.target_url, targets)
    conn = await lazy_conn()
    resource = await get_resource(conn, data.resource, field=resource_field)
    filter_values = await coerce_filter(conn, resource, data.filter)
    columns = await check_columns(conn, resource, data.columns)
    await check_subscription_quota(conn, account, settings)
    row = await fetch_one(
        conn,
        "api_insert_subscription",
        {
            "account": account,
            "resource": resource["name"],
            "target_url": data.target_url,
            "events": unique_events(list(data.events)),
            "filter": Jsonb(filter_values),
            "description": data.description,
            "secret": new_secret(),
            "ordered": data.ordered,
            "max_in_flight": data.max_in_flight,
            "headers": Jsonb(headers),
            "columns": columns,
            "rate_limit_per_s": data.rate_limit_per_s,
        },
    )
    return to_subscription_out(row, with_secret=True)


async def delete_subscription(conn: Conn, account: str, subscription_id: str) -> None:
    """Soft delete: the row stays for the delivery log's sake; its pending deliveries are cancelled."""
    await load_subscription(conn, account, subscription_id, lock=True)
    await execute(conn, "api_delete_subscription", {"id": subscription_id, "account": account})
    await execute(conn, "api_cancel_pending_deliveries", {"subscription_id": subscription_id})


async def changed_headers_and_columns(
    conn: Conn, row: dict[str, Any], data: SubscriptionUpdate
) -> dict[str, Any]:
    """headers and columns after a PATCH: each is replaced as a whole when given, else kept."""
    values = {"headers": row["headers"], "columns": row["columns"]}
    if data.headers is not UNSET:
        values["headers"] = check_headers(data.headers)
    if data.columns is not UNSET:
        resource = await get_resource(conn, row["resource"], field="columns")
        values["columns"] = await check_columns(conn, resource, data.columns)
    return values


# Pausing holds the subscription's pending deliveries; resuming sends what was held, oldest first.
STATUS_MOVES: dict[tuple[SubscriptionStatus, SubscriptionStatus], str] = {
    ("active", "paused"): "api_hold_deliveries",
    ("paused", "active"): "api_release_held_deliveries",
}


def may_send_more(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether an update lets the relays send what they held back: a resume, a higher or removed rate
    limit, more sends in flight."""
    if before["status"] == "paused" and after["status"] == "active":
        return True
    limit_before, limit_after = before["rate_limit_per_s"], after["rate_limit_per_s"]
    if limit_before is not None and (limit_after is None or limit_after > limit_before):
        return True
    return bool(after["max_in_flight"] > before["max_in_flight"])


class SubscriptionController(Controller):
    path = "/subscriptions"
    tags = ["subscriptions"]

    @post(
        "/",
        operation_id="createSubscription",
        summary="Subscribe a target URL to a resource's events",
        responses=responses(UNPROCESSABLE, TOO_MANY),
    )
    async def create(
        self,
        lazy_conn: LazyConnDep,
        account: AccountDep,
        settings: SettingsDep,
        targets: TargetsDep,
        data: JSONBody[SubscriptionCreate],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SubscriptionOut]:
        return await create_once(
            lazy_conn,
            account,
            idempotency_key,
            "POST /subscriptions",
            data,
            lambda: create_subscription(lazy_conn, account, settings, targets, data),
        )

    @get(
        "/",
        operation_id="listSubscriptions",
        summary="This account's subscriptions, oldest first",
        responses=responses(),
    )
    async def list(
        self,
        conn: ConnDep,
        account: AccountDep,
        settings: SettingsDep,
        limit: Limit = None,
        cursor: Cursor = None,
        resource: ResourceFilter = None,
        status: StatusFilter = None,
    ) -> SubscriptionPage:
        size = page_size(limit, settings)
        after_created, after_id = decode_time_cursor("subscriptions", cursor)
        params = {
            "account": account,
            "resource": resource,
            "status": status,
            "after_created": after_created,
            "after_id": after_id,
        }
        rows, next_cursor = await fetch_page(
            conn, "api_list_subscriptions", params, size, "subscriptions", time_position
        )
        return SubscriptionPage(items=[to_subscription_out(r) for r in rows], next_cursor=next_cursor)

    @get(
        "/{subscription_id:str}",
        operation_id="getSubscription",
        summary="One subscription",
        responses=responses(NOT_FOUND),
    )
    async def read(
        self, conn: ConnDep, account: AccountDep, subscription_id: FromPath[str]
    ) -> SubscriptionOut:
        return to_subscription_out(await load_subscription(conn, account, subscription_id))

    @patch(
        "/{subscription_id:str}",
        operation_id="updateSubscription",
        summary="Change events, filter, target_url, description or status (active / paused)",
        responses=responses(NOT_FOUND, UNPROCESSABLE),
    )
    async def update(
        self,
        lazy_conn: LazyConnDep,
        account: AccountDep,
        targets: TargetsDep,
        subscription_id: FromPath[str],
        data: JSONBody[SubscriptionUpdate],
    ) -> SubscriptionOut:
        # The target is checked before the row is locked (and before a connection is taken); the refusal
        # counts only when the URL changes, as an unchanged one was accepted before.
        refusal: Unprocessable | None = None
        if data.target_url is not UNSET:
            try:
                await check_target(data.target_url, targets)
            except Unprocessable as exc:
                refusal = exc
        conn = await lazy_conn()
        row = await load_subscription(conn, account, subscription_id, lock=True)
        values = {
            key: row[key]
            for key in (
                "target_url",
                "events",
                "filter",
                "description",
                "status",
                "ordered",
                "max_in_flight",
                "rate_limit_per_s",
            )
        }
        values.update(await changed_headers_and_columns(conn, row, data))
        if data.target_url is not UNSET and data.target_url != row["target_url"]:
            if refusal is not None:
                raise refusal
            values["target_url"] = data.target_url
        if data.events is not UNSET:
            values["events"] = unique_events(list(data.events))
        if data.filter is not UNSET:
            resource = await get_resource(conn, row["resource"], field="filter")
            values["filter"] = await coerce_filter(conn, resource, data.filter)
        if data.description is not UNSET:
            check_text(data.description, "description")
            values["description"] = data.description
        if data.rate_limit_per_s is not UNSET:
            check_rate_limit(data.rate_limit_per_s)
        for key in ("status", "ordered", "max_in_flight", "rate_limit_per_s"):
            if (value := getattr(data, key)) is not UNSET:
                values[key] = value
        if move := STATUS_MOVES.get((row["status"], values["status"])):
            await execute(conn, move, {"subscription_id": subscription_id})
        updated = await fetch_one(
            conn,
            "api_update_subscription",
            {
                **values,
                "filter": Jsonb(values["filter"]),
                "headers": Jsonb(values["headers"]),
                "id": subscription_id,
                "account": account,
            },
        )
        if may_send_more(row, values):
            await execute(conn, "api_wake_relays")
        return to_subscription_out(updated)

    @delete(
        "/{subscription_id:str}",
        operation_id="deleteSubscription",
        summary="Delete a subscription; its pending deliveries are cancelled",
        responses=responses(NOT_FOUND),
    )
    async def remove(self, conn: ConnDep, account: AccountDep, subscription_id: FromPath[str]) -> None:
        await delete_subscription(conn, account, subscription_id)

    @post(
        "/{subscription_id:str}/secret/rotate",
        status_code=200,
        operation_id="rotateSubscriptionSecret",
        summary="New signing secret; the previous one keeps signing during the grace period",
        responses=responses(NOT_FOUND),
    )
    async def rotate_secret(
        self, conn: ConnDep, account: AccountDep, settings: SettingsDep, subscription_id: FromPath[str]
    ) -> SubscriptionOut:
        await load_subscription(conn, account, subscription_id, lock=True)
        row = await fetch_one(
            conn,
            "api_rotate_secret",
            {
                "id": subscription_id,
                "account": account,
                "secret": new_secret(),
                "grace_s": settings.secret_grace_s,
            },
        )
        return to_subscription_out(row, with_secret=True)

    @post(
        "/{subscription_id:str}/test",
        operation_id="pingSubscription",
        summary="Queue a ping event to the target (the relay sends it)",
        responses=responses(NOT_FOUND, TOO_MANY),
    )
    async def ping(
        self, conn: ConnDep, account: AccountDep, settings: SettingsDep, subscription_id: FromPath[str]
    ) -> DeliveryOut:
        subscription = await load_subscription(conn, account, subscription_id)
        await use_rate_quota(conn, account, settings, "ping")
        row = await fetch_one(
            conn,
            "api_insert_ping",
            {
                "subscription_id": subscription_id,
                "account": account,
                "body": Jsonb(ping_body(subscription["id"], subscription["resource"], account)),
                "status": new_delivery_status(subscription["status"]),
            },
        )
        await execute(conn, "api_probe_now", {"subscription_id": subscription_id})
        await execute(conn, "api_wake_relays")
        return to_delivery_out(row)

    @get(
        "/{subscription_id:str}/deliveries",
        operation_id="listSubscriptionDeliveries",
        summary="Delivery log, newest first, with the latest attempts of each",
        responses=responses(NOT_FOUND),
    )
    async def deliveries(
        self,
        conn: ConnDep,
        account: AccountDep,
        settings: SettingsDep,
        subscription_id: FromPath[str],
        limit: Limit = None,
        cursor: Cursor = None,
        status: DeliveryStatusFilter = None,
    ) -> DeliveryPage:
        await load_subscription(conn, account, subscription_id)
        size = page_size(limit, settings)
        before_created, before_id = decode_time_cursor("deliveries", cursor)
        params = {
            "subscription_id": subscription_id,
            "account": account,
            "status": status,
            "before_created": before_created,
            "before_id": before_id,
            "attempts_shown": ATTEMPTS_SHOWN,
        }
        rows, next_cursor = await fetch_page(
            conn, "api_list_deliveries", params, size, "deliveries", time_position
        )
        return DeliveryPage(items=[to_delivery_out(r) for r in rows], next_cursor=next_cursor)

    @post(
        "/{subscription_id:str}/replay",
        operation_id="replaySubscription",
        summary="Queue again the events of a time window that this subscription matches",
        responses=responses(NOT_FOUND, UNPROCESSABLE, TOO_MANY),
    )
    async def replay(
        self,
        conn: ConnDep,
        account: AccountDep,
        settings: SettingsDep,
        subscription_id: FromPath[str],
        data: JSONBody[ReplayRequest],
    ) -> ReplayOut:
        subscription = await load_subscription(conn, account, subscription_id)
        until = data.until or datetime.now(UTC)
        if data.since >= until:
            raise Unprocessable("must be earlier than until", field="since")
        await use_rate_quota(conn, account, settings, "replay")
        await execute(conn, "api_expand_changes", {"until": until})
        row = await fetch_one(
            conn,
            "api_replay",
            {
                "subscription_id": subscription_id,
                "account": account,
                "resource": subscription["resource"],
                "events": subscription["events"],
                "filter": Jsonb(subscription["filter"]),
                "columns": subscription["columns"],
                "since": data.since,
                "until": until,
                "cap": settings.replay_max_events,
                "replay_id": uuid.uuid4().hex,
                "status": new_delivery_status(subscription["status"]),
            },
        )
        if row["count"]:
            await execute(conn, "api_wake_relays")
        return ReplayOut(count=row["count"], truncated=row["truncated"], since=data.since, until=until)
