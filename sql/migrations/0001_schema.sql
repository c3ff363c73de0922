-- rowhook 0001: schema, tables and indexes.
-- Apply in one transaction: psql -1 -v ON_ERROR_STOP=1 -f sql/migrations/0001_schema.sql
-- (or `rowhook migrate`, which runs this very file). Needs PostgreSQL 14 or newer.

CREATE SCHEMA IF NOT EXISTS rowhook;

CREATE TABLE IF NOT EXISTS rowhook.migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Stripe-style prefixed ids ("sub_…", "msg_…") so an id says what it names.
CREATE FUNCTION rowhook.new_id(prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT prefix || '_' || replace(gen_random_uuid()::text, '-', '')
$$;

-- One row per watched table. The table is stored as regclass so a rename keeps the link.
CREATE TABLE rowhook.resources (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    table_oid       regclass NOT NULL UNIQUE,
    key_columns     text[] NOT NULL,
    account_column  text,
    scope_columns   text[] NOT NULL DEFAULT '{}',
    exclude_columns text[] NOT NULL DEFAULT '{}',
    label_column    text,
    public          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((account_column IS NULL) = public)
);

-- Every captured change. Rows are written by the capture triggers only; the relay marks them
-- dispatched once it has fanned them out. Old rows serve replays until `rowhook prune` removes them.
CREATE TABLE rowhook.outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    resource      text NOT NULL,
    op            text NOT NULL CHECK (op IN ('created', 'updated', 'deleted')),
    account       text,
    key           text NOT NULL,
    scope         jsonb NOT NULL DEFAULT '{}',
    data          jsonb NOT NULL,
    previous      jsonb,
    changed       text[],
    dispatched_at timestamptz
);
-- The relay's claim query reads only this small partial index.
CREATE INDEX outbox_undispatched ON rowhook.outbox (id) WHERE dispatched_at IS NULL;
-- Replays select events in a time window. BRIN costs next to nothing on the write path, and
-- occurred_at grows with the table's physical order.
CREATE INDEX outbox_occurred ON rowhook.outbox USING brin (occurred_at);

CREATE TABLE rowhook.subscriptions (
    id                  text PRIMARY KEY DEFAULT rowhook.new_id('sub'),
    account             text NOT NULL,
    resource            text NOT NULL,
    target_url          text NOT NULL,
    events              text[] NOT NULL DEFAULT '{created,updated,deleted}'
        CHECK (cardinality(events) > 0 AND events <@ '{created,updated,deleted}'),
    filter              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(filter) = 'object'),
    description         text,
    status              text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'disabled')),
    disabled_reason     text,
    secret              text NOT NULL,
    previous_secret     text,
    previous_secret_expires_at timestamptz,
    ordered             boolean NOT NULL DEFAULT false,
    max_in_flight       integer NOT NULL DEFAULT 8 CHECK (max_in_flight > 0),
    failing_since       timestamptz,
    last_success_at     timestamptz,  -- refreshed at most once a minute
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
-- Fan-out looks subscriptions up by equality on (resource, filter): the relay enumerates the few
-- subsets of an event's scope values, so the cost follows the matching subscriptions only.
-- INCLUDE lets fan-out answer from the index alone (subscriptions change rarely, so their pages are
-- all-visible): with many other subscriptions present, heap reads are what would grow.
CREATE INDEX subscriptions_fanout ON rowhook.subscriptions (resource, filter, account) INCLUDE (id, events)
    WHERE status = 'active' AND deleted_at IS NULL;
CREATE INDEX subscriptions_account ON rowhook.subscriptions (account, created_at, id)
    WHERE deleted_at IS NULL;

CREATE TABLE rowhook.deliveries (
    id              text PRIMARY KEY DEFAULT rowhook.new_id('msg'),
    -- No foreign key: subscriptions are never deleted (DELETE is a soft delete), and the per-row check
    -- measured at a third of fan-out time (1,000 deliveries), growing with the number of subscriptions.
    subscription_id text NOT NULL,
    account         text NOT NULL,
    event_id        bigint,          -- rowhook.outbox id; NULL for a ping
    event_type      text NOT NULL,   -- "tasks.created", "ping"
    key             text,
    body            jsonb,           -- only for pings; event bodies are built from the outbox
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    leased_by       text,
    last_status_code integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- Claim: due pending deliveries in time order.
CREATE INDEX deliveries_due ON rowhook.deliveries (next_attempt_at) WHERE status = 'pending';
-- Per-subscription concurrency cap and expired leases.
CREATE INDEX deliveries_in_flight ON rowhook.deliveries (subscription_id, lease_until)
    WHERE status = 'delivering';
-- Delivery log of a subscription, newest first; ordered delivery looks up older pending work per key.
CREATE INDEX deliveries_log ON rowhook.deliveries (subscription_id, created_at DESC, id);
-- Prune keeps events that a pending, in-flight or failed delivery still needs.
CREATE INDEX deliveries_event ON rowhook.deliveries (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX deliveries_ordering ON rowhook.deliveries (subscription_id, key, event_id)
    WHERE status IN ('pending', 'delivering');

CREATE TABLE rowhook.delivery_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   text NOT NULL REFERENCES rowhook.deliveries (id) ON DELETE CASCADE,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms   integer NOT NULL,
    status_code   integer,
    error         text,
    response_body text
);
CREATE INDEX delivery_attempts_delivery ON rowhook.delivery_attempts (delivery_id, id);

-- Access tokens are stored as SHA-256 digests; the token itself is shown once at creation.
CREATE TABLE rowhook.tokens (
    id           text PRIMARY KEY DEFAULT rowhook.new_id('tok'),
    account      text NOT NULL CHECK (account <> ''),
    name         text,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Running relays, for `rowhook status` and tests: `sleeping` says a relay is waiting for work. (What
-- makes writers NOTIFY is the sleep lock of 0002_capture.sql, which dies with a crashed relay.)
CREATE TABLE rowhook.relays (
    id           text PRIMARY KEY,
    backend_pid  integer NOT NULL,
    sleeping     boolean NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO rowhook.migrations (version, name) VALUES (1, 'schema');
