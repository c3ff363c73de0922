"""create_app(): the Litestar application of the subscription API, wired in one place."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.static_files import create_static_files_router

from api.auth import BEARER, EXCLUDE_FROM_AUTH, SECURED, BearerTokenAuth, provide_account
from api.database import (
    RetryOnConnectionLoss,
    pool_lifespan,
    provide_conn,
    provide_lazy_conn,
    provide_settings,
    provide_targets,
)
from api.deliveries import DeliveryController
from api.errors import EXCEPTION_HANDLERS
from api.hooks import HookController
from api.ops import Metrics, MetricsMiddleware, OpsController
from api.portal import portal_router
from api.resources import ResourceController
from api.strict import refuse_unknown_query_parameters
from api.subscriptions import SubscriptionController
from api.target_checks import Resolve, resolve
from rowhook import __version__
from rowhook.settings import Settings

# The UI pages load these pinned files from the package (api/assets, see its README), never from a CDN.
ASSETS_DIR = Path(__file__).parent / "assets"
ASSETS_PATH = "/schema/assets"
SWAGGER_UI_VERSION = "5.35.0"
SCALAR_VERSION = "1.76.0"

DESCRIPTION = """Push subscriptions to row changes of an application's PostgreSQL tables.

Every route except `/health` and `/schema` needs `Authorization: Bearer <token>` (create one with
`rowhook token create --account ACME`). A token belongs to one account; another account's objects answer
404. A token with scope `read` may only GET (anything else is a 403 naming the scope it lacks); `manage`
may do everything. An expired token is a 401 that says so. Errors are `application/problem+json` whose
`detail` names the field and the reason. Lists answer
`{"items": [...], "next_cursor": "..." | null}`: pass `next_cursor` back as `cursor` for the next page.
Webhooks are signed per Standard Webhooks with the subscription's `whsec_` secret."""


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="rowhook subscription API",
        version=__version__,
        description=DESCRIPTION,
        path="/schema",
        render_plugins=[
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                version=SWAGGER_UI_VERSION,
                js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui.css",
                standalone_preset_js_url=(f"{ASSETS_PATH}/swagger-ui/swagger-ui-standalone-preset.js"),
                favicon="",
            ),
            ScalarRenderPlugin(
                path="/scalar",
                version=SCALAR_VERSION,
                js_url=f"{ASSETS_PATH}/scalar/standalone.js",
                css_url=f"{ASSETS_PATH}/scalar/scalar.css",
                options={"withDefaultFonts": False},
                favicon="",
            ),
            YamlRenderPlugin(),
        ],
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http", scheme="bearer", description="an access token of one account"
                ),
            }
        ),
        tags=[
            Tag(name="resources", description="What an account may subscribe to, and its rows"),
            Tag(name="subscriptions", description="Webhook subscriptions and their delivery logs"),
            Tag(name="deliveries", description="Single deliveries and manual retries"),
            Tag(name="rest hooks", description="REST Hooks / Zapier-style alias"),
            Tag(name="operations", description="Health and metrics"),
        ],
    )


def create_app(settings: Settings, database_url: str, *, resolver: Resolve = resolve) -> Litestar:
    """The app; `resolver` looks target hosts up (tests pass one whose DNS never answers)."""
    for controller in (ResourceController, SubscriptionController, DeliveryController, HookController):
        controller.security = SECURED
    state = State(
        {"settings": settings, "database_url": database_url, "metrics": Metrics(), "resolver": resolver}
    )
    return Litestar(
        route_handlers=[
            create_static_files_router(
                path=ASSETS_PATH, directories=[ASSETS_DIR], include_in_schema=False, name="schema-assets"
            ),
            portal_router(),
            OpsController,
            ResourceController,
            SubscriptionController,
            DeliveryController,
            HookController,
        ],
        dependencies={
            "conn": Provide(provide_conn),
            "lazy_conn": Provide(provide_lazy_conn),
            "targets": Provide(provide_targets, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "account": Provide(provide_account, sync_to_thread=False),
        },
        # Metrics first: it is the outer layer, so it also counts requests refused by the auth layer.
        middleware=[
            MetricsMiddleware,
            DefineMiddleware(BearerTokenAuth, exclude=["^/schema"], exclude_from_auth_key=EXCLUDE_FROM_AUTH),
            RetryOnConnectionLoss,  # innermost: a retried request is counted and authenticated once
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_unknown_query_parameters,
        lifespan=[pool_lifespan],
        state=state,
        openapi_config=openapi_config(),
    )
