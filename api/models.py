"""sqlmodel table models of the rowhook schema the API reads and writes (tests prove they match sql/),
and the response bodies built from their rows (to_response)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from msgspec import Struct
from sqlalchemy import ARRAY, BigInteger, Column, Double, Integer, LargeBinary, Text
from sqlalchemy.dialects.postgresql import JSONB, REGCLASS
from sqlalchemy.types import UserDefinedType
from sqlmodel import Field, SQLModel

from api.schemas import DeliveryOut, ResourceOut, SubscriptionOut
from rowhook.statuses import DeliveryStatus, SubscriptionStatus

SCHEMA = "rowhook"


class XID8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id type, unknown to SQLAlchemy."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


def text_array(nullable: bool = False) -> Any:
    return Field(sa_column=Column(ARRAY(Text), nullable=nullable))


def jsonb(nullable: bool = False) -> Any:
    return Field(sa_column=Column(JSONB, nullable=nullable))


class Resource(SQLModel, table=True):
    __tablename__ = "resources"
    __table_args__ = {"schema": SCHEMA}

    name: str = Field(primary_key=True, sa_type=Text)
    table_oid: str = Field(sa_column=Column(REGCLASS, nullable=False, unique=True))
    key_columns: list[str] = text_array()
    account_column: str | None = Field(default=None, sa_type=Text)
    scope_columns: list[str] = text_array()
    exclude_columns: list[str] = text_array()
    label_column: str | None = Field(default=None, sa_type=Text)
    public: bool = False
    created_at: datetime
    columns: list[str] | None = text_array(nullable=True)
    attnums: dict[str, Any] = jsonb()


class Outbox(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = {"schema": SCHEMA}

    id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    txid: int = Field(sa_column=Column(XID8, nullable=False))
    occurred_at: datetime
    resource: str = Field(sa_type=Text)
    op: str = Field(sa_type=Text)
    account: str | None = Field(default=None, sa_type=Text)
    key: str = Field(sa_type=Text)
    scope: dict[str, Any] = jsonb()
    data: dict[str, Any] = jsonb()
    previous: dict[str, Any] | None = jsonb(nullable=True)
    changed: list[str] | None = text_array(nullable=True)
    dispatched_at: datetime | None = None


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = {"schema": SCHEMA}

    id: str = Field(primary_key=True, sa_type=Text)
    account: str = Field(sa_type=Text)
    resource: str = Field(sa_type=Text)
    target_url: str = Field(sa_type=Text)
    events: list[str] = text_array()
    filter: dict[str, Any] = jsonb()
    description: str | None = Field(default=None, sa_type=Text)
    status: SubscriptionStatus = Field(sa_type=Text)
    disabled_reason: str | None = Field(default=None, sa_type=Text)
    secret: str | None = Field(default=None, sa_type=Text)  # NULL once deleted
    previous_secret: str | None = Field(default=None, sa_type=Text)
    previous_secret_expires_at: datetime | None = None
    ordered: bool = False
    max_in_flight: int = Field(sa_column=Column(Integer, nullable=False))
    rate_limit_per_s: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    failing_since: datetime | None = None
    last_success_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    next_probe_at: datetime | None = None  # failing: no delivery is leased before (the relay's, 0012)
    filter_anchor: dict[str, Any] | None = jsonb(nullable=True)  # generated from filter
    headers: dict[str, str] = jsonb()  # secrets: shown masked (api/push_headers.py), cleared on delete
    columns: list[str] | None = text_array(nullable=True)


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = {"schema": SCHEMA}

    id: str = Field(primary_key=True, sa_type=Text)
    subscription_id: str = Field(sa_type=Text)
    account: str = Field(sa_type=Text)
    event_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    event_type: str = Field(sa_type=Text)
    key: str | None = Field(default=None, sa_type=Text)
    body: dict[str, Any] | None = jsonb(nullable=True)
    status: DeliveryStatus = Field(sa_type=Text)
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    next_attempt_at: datetime
    lease_until: datetime | None = None
    leased_by: str | None = Field(default=None, sa_type=Text)
    last_status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime
    finished_at: datetime | None = None
    # The latest attempt (earlier ones are DeliveryAttempt rows).
    last_attempt_at: datetime | None = None
    last_duration_ms: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    last_response: str | None = Field(default=None, sa_type=Text)


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempts"
    __table_args__ = {"schema": SCHEMA}

    id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    delivery_id: str = Field(sa_type=Text)  # no foreign key: see 0006_delivery_bookkeeping.sql
    attempted_at: datetime
    duration_ms: int = Field(sa_column=Column(Integer, nullable=False))
    status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    error: str | None = Field(default=None, sa_type=Text)
    response_body: str | None = Field(default=None, sa_type=Text)


class Token(SQLModel, table=True):
    __tablename__ = "tokens"
    __table_args__ = {"schema": SCHEMA}

    id: str = Field(primary_key=True, sa_type=Text)
    account: str = Field(sa_type=Text)
    name: str | None = Field(default=None, sa_type=Text)
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    scopes: list[str] = text_array()
    expires_at: datetime | None = None


class QuotaUse(SQLModel, table=True):
    __tablename__ = "quota_uses"
    __table_args__ = {"schema": SCHEMA}

    id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    account: str = Field(sa_type=Text)
    action: str = Field(sa_type=Text)
    used_at: datetime


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = {"schema": SCHEMA}

    account: str = Field(primary_key=True, sa_type=Text)
    key: str = Field(primary_key=True, sa_type=Text)
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    response: dict[str, Any] | None = jsonb(nullable=True)  # the answer without its secret
    subscription_id: str | None = Field(default=None, sa_type=Text)
    secret_sha256: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime


TABLE_MODELS: tuple[type[SQLModel], ...] = (
    Resource,
    Outbox,
    Subscription,
    Delivery,
    DeliveryAttempt,
    Token,
    QuotaUse,
    IdempotencyKey,
)


ResponseT = TypeVar("ResponseT", bound=Struct)

# The response bodies that show a table's rows, with their fields that are not columns of it: every
# other field is the column of the same name (test_api_models.py checks that each one is a column).
ROW_RESPONSES: dict[type[Struct], tuple[type[SQLModel], frozenset[str]]] = {
    ResourceOut: (Resource, frozenset({"events"})),
    SubscriptionOut: (Subscription, frozenset({"held_deliveries"})),  # headers: the column, masked
    DeliveryOut: (Delivery, frozenset({"attempt_log", "payload"})),
}


def to_response(response: type[ResponseT], row: SQLModel | Mapping[str, Any], **other: Any) -> ResponseT:
    """`response` built from a row (a table model, or the columns a query selected): each field is the
    row's value of the same name, but for `other`, which gives the fields that are not columns (and may
    show a column otherwise)."""
    values = row.model_dump() if isinstance(row, SQLModel) else row
    fields = {name: values[name] for name in response.__struct_fields__ if name not in other}
    return response(**fields, **other)
