"""REST Hooks (Zapier-style) alias: POST /hooks {target_url, event} and DELETE /hooks/{id}."""

from __future__ import annotations

from litestar import Controller, Response, delete, post
from litestar.params import FromPath, JSONBody

from api.database import AccountDep, ConnDep, LazyConnDep, SettingsDep, TargetsDep
from api.errors import NOT_FOUND, TOO_MANY, UNPROCESSABLE, responses
from api.idempotency import IdempotencyKey, create_once
from api.schemas import HookCreate, SubscriptionCreate, SubscriptionOut
from api.subscriptions import create_subscription, delete_subscription


class HookController(Controller):
    path = "/hooks"
    tags = ["rest hooks"]

    @post(
        "/",
        operation_id="subscribeHook",
        summary="Subscribe to one event, e.g. tasks.created; answers the subscription with its id",
        responses=responses(UNPROCESSABLE, TOO_MANY),
    )
    async def subscribe(
        self,
        lazy_conn: LazyConnDep,
        account: AccountDep,
        settings: SettingsDep,
        targets: TargetsDep,
        data: JSONBody[HookCreate],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SubscriptionOut]:
        resource, op = data.event.rsplit(".", 1)
        request = SubscriptionCreate(
            target_url=data.target_url,
            resource=resource,
            events=[op],  # type: ignore[list-item]
            headers=data.headers,
            columns=data.columns,
        )
        return await create_once(
            lazy_conn,
            account,
            idempotency_key,
            "POST /hooks",
            data,
            lambda: create_subscription(
                lazy_conn, account, settings, targets, request, resource_field="event"
            ),
        )

    @delete(
        "/{subscription_id:str}",
        operation_id="unsubscribeHook",
        summary="Unsubscribe (deletes the subscription)",
        responses=responses(NOT_FOUND),
    )
    async def unsubscribe(self, conn: ConnDep, account: AccountDep, subscription_id: FromPath[str]) -> None:
        await delete_subscription(conn, account, subscription_id)
