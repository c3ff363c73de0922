"""/deliveries/{id}: one delivery with its attempts, and a manual retry."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.params import FromPath

from api.database import AccountDep, Conn, ConnDep
from api.errors import CONFLICT, NOT_FOUND, Conflict, NotFound, responses
from api.models import to_response
from api.schemas import AttemptOut, DeliveryOut
from api.store import execute, fetch_one
from rowhook.statuses import UNFINISHED_DELIVERY_STATUSES
from rowhook.webhooks import event_body

DELIVERY_ID = re.compile(r"^msg_[0-9a-f]{32}$")
ATTEMPTS_SHOWN = 20


def payload_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON body the relay sends: a ping's stored body, or the event's built from its outbox row
    (None once the event was pruned)."""
    if row["event_id"] is None:
        return row["body"]
    if not row.get("event_kept"):
        return None
    names = ("resource", "op", "occurred_at", "key", "account", "data", "previous")
    event = {name: row[f"event_{name}"] for name in names}
    return event_body({**event, "event_id": row["event_id"]})


def to_delivery_out(row: dict[str, Any]) -> DeliveryOut:
    # Straight from the row: validating it into the table model first (SQLAlchemy-instrumented
    # attributes) was a quarter of the API's CPU under load (py-spy, bench.serve_load), and the
    # query's columns already have the model's types (tests/integration/test_api_models.py).
    return to_response(
        DeliveryOut,
        row,
        attempt_log=msgspec.convert(row["attempt_log"], list[AttemptOut], strict=False),
        payload=payload_of(row),
    )


async def load_delivery(conn: Conn, account: str, delivery_id: str) -> dict[str, Any]:
    missing = f"no delivery {delivery_id!r} for this account"
    if not DELIVERY_ID.fullmatch(delivery_id):
        raise NotFound(missing)
    params = {"id": delivery_id, "account": account, "attempts_shown": ATTEMPTS_SHOWN}
    return await fetch_one(conn, "api_get_delivery", params, missing=missing)


class DeliveryController(Controller):
    path = "/deliveries"
    tags = ["deliveries"]

    @get(
        "/{delivery_id:str}",
        operation_id="getDelivery",
        summary="One delivery with its latest attempts",
        responses=responses(NOT_FOUND),
    )
    async def read(self, conn: ConnDep, account: AccountDep, delivery_id: FromPath[str]) -> DeliveryOut:
        return to_delivery_out(await load_delivery(conn, account, delivery_id))

    @post(
        "/{delivery_id:str}/retry",
        status_code=200,
        operation_id="retryDelivery",
        summary="Send a finished delivery again now (the relay picks it up)",
        responses=responses(NOT_FOUND, CONFLICT),
    )
    async def retry(self, conn: ConnDep, account: AccountDep, delivery_id: FromPath[str]) -> DeliveryOut:
        missing = f"no delivery {delivery_id!r} for this account"
        if not DELIVERY_ID.fullmatch(delivery_id):
            raise NotFound(missing)
        params = {"id": delivery_id, "account": account}
        locked = await fetch_one(conn, "api_lock_delivery", params, missing=missing)
        if locked["status"] in UNFINISHED_DELIVERY_STATUSES:
            raise Conflict(
                f"delivery {delivery_id} is {locked['status']} already; retry it once it has finished"
            )
        await execute(conn, "api_retry_delivery", {"id": delivery_id})
        await execute(conn, "api_probe_now", {"subscription_id": locked["subscription_id"]})
        await execute(conn, "api_wake_relays")
        return to_delivery_out(await load_delivery(conn, account, delivery_id))
