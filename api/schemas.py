"""Request and response bodies of the API (msgspec), kept apart from the table models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from rowhook.statuses import DeliveryStatus, SettableSubscriptionStatus, SubscriptionStatus

EVENTS: tuple[str, ...] = ("created", "updated", "deleted")
MAX_PAGE_SIZE = 200
MAX_FILTER_KEYS = 16
# A filter is a key of the fan-out index, whose entries PostgreSQL caps at about 2.7 kB: values are
# bounded one by one (characters) and the whole filter as stored (bytes of its JSON).
MAX_FILTER_VALUE_CHARS = 256
MAX_FILTER_BYTES = 2000

Event = Literal["created", "updated", "deleted"]
Events = Annotated[
    list[Event],
    Meta(min_length=1, max_length=3, description="a non-empty subset of created, updated, deleted"),
]
TargetUrl = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=2048,
        description="absolute https URL",
        examples=["https://hooks.example.com/rowhook"],
    ),
]
ResourceName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$", examples=["tasks"])]
Description = Annotated[str, Meta(max_length=1000)]
# No separate int: an int is also a JSON Schema number, which would break oneOf. Whole numbers are
# sent to PostgreSQL without the fraction, so 7 still casts to a bigint column.
FilterValue = str | float | bool
Filter = Annotated[
    dict[Annotated[str, Meta(min_length=1, max_length=63)], FilterValue],
    Meta(
        max_length=MAX_FILTER_KEYS,
        description="scope column -> value; an event matches when its scope values contain all of these."
        f" A value has at most {MAX_FILTER_VALUE_CHARS} characters, the filter at most {MAX_FILTER_BYTES}"
        " bytes as JSON",
        examples=[{"project_id": 7}],
    ),
]
MaxInFlight = Annotated[int, Meta(ge=1, le=100, description="deliveries in flight at once across relays")]
# Checked in api/subscriptions.py, not by the schema: a number out of range is well-formed but refused
# (422), like a filter value, where the schema's bounds would make it a 400.
MIN_RATE_LIMIT_PER_S = 0.01
MAX_RATE_LIMIT_PER_S = 10000.0
RateLimit = Annotated[
    float,
    Meta(
        description=f"deliveries started per second at most, by all relays together, {MIN_RATE_LIMIT_PER_S}"
        f" to {MAX_RATE_LIMIT_PER_S:g} (after a quiet second up to one second's worth at once);"
        " null: unlimited",
        examples=[10],
    ),
]
AwareDatetime = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a time zone")]
MAX_HEADERS = 20
MAX_HEADERS_BYTES = 4096
HeaderName = Annotated[str, Meta(min_length=1, max_length=256)]
Headers = Annotated[
    dict[HeaderName, Annotated[str, Meta(max_length=MAX_HEADERS_BYTES)]],
    Meta(
        max_length=MAX_HEADERS,
        description="extra request headers sent with every push, e.g. to authenticate it: name -> value,"
        f" at most {MAX_HEADERS}, at most {MAX_HEADERS_BYTES} bytes of names and values together. Names"
        " rowhook sets itself (content-type, content-length, content-encoding, host, user-agent,"
        " webhook-*) and hop-by-hop headers are refused. Shown back masked; null or {} clears them",
        examples=[{"Authorization": "Bearer s3cr3t-t0ken-abcd"}],
    ),
]
# Column names are PostgreSQL identifiers (at most 63 bytes); the list is also bounded in bytes, as
# it is part of the fan-out index's entries (with the filter).
MAX_COLUMNS = 32
MAX_COLUMNS_BYTES = 512
UpdateColumns = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=63)]],
    Meta(
        max_length=MAX_COLUMNS,
        description="captured columns of the resource: an `updated` event is sent only when one of them"
        " changed (or the row entered or left the filter); null: every update",
        examples=[["done"]],
    ),
]
HookEvent = Annotated[
    str, Meta(pattern=r"^[a-z][a-z0-9_]{0,62}\.(created|updated|deleted)$", examples=["tasks.created"])
]


class Request(Struct, forbid_unknown_fields=True):
    """Base of every request body: unknown fields are refused, never ignored."""


class SubscriptionCreate(Request):
    target_url: TargetUrl
    resource: ResourceName
    events: Events = field(default_factory=lambda: list(EVENTS))  # type: ignore[arg-type]
    filter: Filter = field(default_factory=dict)
    description: Description | None = None
    ordered: bool = False
    max_in_flight: MaxInFlight = 8
    headers: Headers | None = None
    columns: UpdateColumns | None = None
    rate_limit_per_s: RateLimit | None = None


class SubscriptionUpdate(Request):
    """Only the fields given change. Setting status to active re-enables a disabled subscription."""

    target_url: TargetUrl | UnsetType = UNSET
    events: Events | UnsetType = UNSET
    filter: Filter | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    status: SettableSubscriptionStatus | UnsetType = UNSET
    ordered: bool | UnsetType = UNSET
    max_in_flight: MaxInFlight | UnsetType = UNSET
    # The whole map is replaced; null or {} clears it.
    headers: Headers | UnsetType | None = UNSET
    columns: UpdateColumns | UnsetType | None = UNSET
    rate_limit_per_s: RateLimit | UnsetType | None = UNSET  # null removes the limit


class HookCreate(Request):
    """REST Hooks (Zapier) style: one event of one resource."""

    target_url: TargetUrl
    event: HookEvent
    headers: Headers | None = None
    columns: UpdateColumns | None = None


class ReplayRequest(Request):
    since: AwareDatetime
    until: AwareDatetime | None = None


class ResourceOut(Struct):
    name: str
    events: list[str]
    scope_columns: list[str]
    key_columns: list[str]
    label_column: str | None
    public: bool


class ItemOut(Struct):
    key: str
    label: str | None


class SampleOut(Struct):
    """A row as the push of its creation carries it (no id or timestamp: it is not an event)."""

    type: str
    resource: str
    key: str
    account: str | None
    data: dict[str, Any]


class SubscriptionOut(Struct):
    id: str
    resource: str
    target_url: str
    events: list[str]
    filter: dict[str, Any]
    description: str | None
    status: SubscriptionStatus
    disabled_reason: str | None
    ordered: bool
    max_in_flight: int
    rate_limit_per_s: float | None
    failing_since: datetime | None
    last_success_at: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Deliveries kept unsent while the subscription is paused; they go out when it resumes.
    held_deliveries: int
    # Values masked: the scheme word (e.g. Bearer) and the last 4 characters of long values show.
    headers: dict[str, str]
    columns: list[str] | None
    # Shown on creation and rotation only.
    secret: str | UnsetType = UNSET


class AttemptOut(Struct):
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


class DeliveryOut(Struct):
    id: str
    subscription_id: str
    event_id: int | None
    event_type: str
    key: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptOut]
    # The JSON body as the relay sends it (a ping's, or the event's with what the resource shows now);
    # null once `rowhook prune` removed the event.
    payload: dict[str, Any] | None


class ReplayOut(Struct):
    count: int
    truncated: bool
    since: datetime
    until: datetime


class ResourcePage(Struct):
    items: list[ResourceOut]
    next_cursor: str | None


class ItemPage(Struct):
    items: list[ItemOut]
    next_cursor: str | None


class SamplePage(Struct):
    items: list[SampleOut]
    next_cursor: str | None


class SubscriptionPage(Struct):
    items: list[SubscriptionOut]
    next_cursor: str | None


class DeliveryPage(Struct):
    items: list[DeliveryOut]
    next_cursor: str | None


class Health(Struct):
    status: Literal["ok"]
    database: Literal["ok"]
    # The newest migration applied to the database, and the one this rowhook needs (503 when behind).
    schema_version: int
    schema_needed: int
