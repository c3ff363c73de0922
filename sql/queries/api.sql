-- Queries of the subscription API. Every query on subscriptions and deliveries is scoped to the
-- caller's account: another account's rows are simply not found.

-- name: api_list_resources
-- A resource whose table was dropped behind rowhook's back is not listed.
SELECT r.name, r.key_columns, r.scope_columns, r.label_column, r.public
FROM rowhook.resources r
JOIN pg_class c ON c.oid = r.table_oid
WHERE %(after)s::text IS NULL OR r.name > %(after)s
ORDER BY r.name
LIMIT %(limit)s;

-- name: api_get_resource
SELECT r.name, r.table_oid::oid AS table_oid, n.nspname::text AS table_schema, c.relname::text AS table_name,
       r.key_columns, r.account_column, r.scope_columns, r.label_column, r.public
FROM rowhook.resources r
JOIN pg_class c ON c.oid = r.table_oid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.name = %(name)s;

-- name: api_sample_rows
-- The sample of a resource (GET /resources/NAME/sample): the account's rows, newest key first, each
-- with the data a push of it carries (rowhook.visible_data: excluded columns, and those outside an
-- allow-list, never leave the database). A template: api/samples.py fills in the braced placeholders
-- (so no braces elsewhere here) with quoted identifiers, and casts the account, filter values and
-- cursor position to their columns' types, so that indexes on those columns serve.
-- Plans: with an index on (account column, key columns), an ordered scan of it reads one page of rows.
-- Without one, `fence` is OFFSET 0, so that the account's rows are read first (through an index on the
-- account column when there is one) and then sorted: otherwise the planner may walk the primary key
-- backwards, filtering out other accounts' rows, which reads most of the table for a small account.
SELECT {key} AS key, {account} AS account, rowhook.visible_data(r, to_jsonb(t)) AS data,
       ARRAY[{positions}] AS position
FROM (SELECT * FROM {table} AS t WHERE {conditions} {fence}) AS t, rowhook.resources AS r
WHERE r.name = %(resource)s
ORDER BY {order}
LIMIT %(limit)s;

-- name: api_has_ordered_index
-- Whether a valid, non-partial index of the table starts with the given columns in this order.
WITH wanted AS (
    SELECT array_agg(a.attnum ORDER BY c.n) AS attnums
    FROM unnest(%(columns)s::text[]) WITH ORDINALITY AS c(name, n)
    JOIN pg_attribute a ON a.attrelid = %(table_oid)s::oid AND a.attname = c.name
)
SELECT EXISTS (
    SELECT 1 FROM pg_index i, wanted w
    WHERE i.indrelid = %(table_oid)s::oid AND i.indisvalid AND i.indpred IS NULL
      AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(w.attnums)] = w.attnums
) AS found;

-- name: api_castable
-- Whether a text casts to a column's type (read in a savepoint by api/samples.py; a template too).
SELECT %(value)s::{type} IS NOT NULL AS ok;

-- name: api_column_types
-- SQL type names (as format_type spells them) of some columns of a resource's table.
SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a
WHERE a.attrelid = %(table_oid)s::oid AND a.attname = ANY(%(columns)s::text[])
  AND a.attnum > 0 AND NOT a.attisdropped;

-- name: api_key_expression
SELECT rowhook.key_expression('t', %(key_columns)s::text[]) AS expression;

-- name: api_insert_subscription
INSERT INTO rowhook.subscriptions (account, resource, target_url, events, filter, description, secret,
                                   ordered, max_in_flight,
                                   headers, columns, rate_limit_per_s)
VALUES (%(account)s, %(resource)s, %(target_url)s, %(events)s, %(filter)s, %(description)s, %(secret)s,
        %(ordered)s, %(max_in_flight)s,
        %(headers)s, %(columns)s, %(rate_limit_per_s)s)
RETURNING *;

-- name: api_list_subscriptions
SELECT *, rowhook.held_deliveries(id) AS held_deliveries FROM rowhook.subscriptions
WHERE account = %(account)s AND deleted_at IS NULL
  AND (%(resource)s::text IS NULL OR resource = %(resource)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(after_created)s::timestamptz IS NULL OR (created_at, id) > (%(after_created)s, %(after_id)s))
ORDER BY created_at, id
LIMIT %(limit)s;

-- name: api_get_subscription
SELECT *, rowhook.held_deliveries(id) AS held_deliveries FROM rowhook.subscriptions
WHERE id = %(id)s AND account = %(account)s AND deleted_at IS NULL;

-- name: api_lock_subscription
SELECT * FROM rowhook.subscriptions
WHERE id = %(id)s AND account = %(account)s AND deleted_at IS NULL
FOR UPDATE;

-- name: api_update_subscription
-- Re-activating a disabled subscription clears why it was disabled and how long it has failed.
UPDATE rowhook.subscriptions SET
    target_url = %(target_url)s,
    events = %(events)s,
    filter = %(filter)s,
    description = %(description)s,
    ordered = %(ordered)s,
    max_in_flight = %(max_in_flight)s,
    headers = %(headers)s,
    columns = %(columns)s,
    rate_limit_per_s = %(rate_limit_per_s)s,
    disabled_reason = CASE WHEN %(status)s = 'disabled' THEN disabled_reason END,
    failing_since = CASE WHEN status = 'disabled' AND %(status)s = 'active' THEN NULL ELSE failing_since END,
    next_probe_at = CASE WHEN status = 'disabled' AND %(status)s = 'active' THEN NULL ELSE next_probe_at END,
    status = %(status)s,
    updated_at = now()
WHERE id = %(id)s AND account = %(account)s AND deleted_at IS NULL
RETURNING *, rowhook.held_deliveries(id) AS held_deliveries;

-- name: api_hold_deliveries
UPDATE rowhook.deliveries SET status = 'held'
WHERE subscription_id = %(subscription_id)s AND status = 'pending';

-- name: api_release_held_deliveries
-- next_attempt_at is kept: claims take due work oldest first, so what was held goes out in order.
UPDATE rowhook.deliveries SET status = 'pending'
WHERE subscription_id = %(subscription_id)s AND status = 'held';

-- name: api_delete_subscription
-- A deleted subscription signs nothing any more: its secrets (and its headers' values) are cleared with it.
UPDATE rowhook.subscriptions SET deleted_at = now(), updated_at = now(),
    secret = NULL, previous_secret = NULL, previous_secret_expires_at = NULL,
    headers = '{}'
WHERE id = %(id)s AND account = %(account)s AND deleted_at IS NULL
RETURNING id;

-- name: api_cancel_pending_deliveries
UPDATE rowhook.deliveries SET status = 'cancelled', finished_at = now(), last_error = 'subscription deleted'
WHERE subscription_id = %(subscription_id)s AND status IN ('pending', 'held');

-- name: api_rotate_secret
UPDATE rowhook.subscriptions SET
    previous_secret = secret,
    previous_secret_expires_at = now() + make_interval(secs => %(grace_s)s),
    secret = %(secret)s,
    updated_at = now()
WHERE id = %(id)s AND account = %(account)s AND deleted_at IS NULL
RETURNING *, rowhook.held_deliveries(id) AS held_deliveries;

-- name: api_probe_now
-- A retry or a ping asks for a send now: a failing subscription waiting for its next probe (0012) is
-- probed at once instead. Still one delivery at a time until one succeeds.
UPDATE rowhook.subscriptions SET next_probe_at = NULL
WHERE id = %(subscription_id)s AND next_probe_at > now();

-- name: api_insert_ping
INSERT INTO rowhook.deliveries (subscription_id, account, event_type, body, status)
VALUES (%(subscription_id)s, %(account)s, 'ping', %(body)s, %(status)s)
RETURNING *, '[]'::jsonb AS attempt_log;

-- name: api_list_deliveries
-- Newest first, with each delivery's latest attempts and its event (the body is built as relay_take does:
-- only what the resource shows now; nothing once the event was pruned).
SELECT d.*, rowhook.attempt_log(d.id, %(attempts_shown)s) AS attempt_log,
       o.id IS NOT NULL AS event_kept, o.resource AS event_resource, o.op AS event_op,
       o.occurred_at AS event_occurred_at, o.key AS event_key, o.account AS event_account,
       CASE WHEN r.name IS NULL THEN o.data ELSE rowhook.visible_data(r, o.data) END AS event_data,
       CASE WHEN r.name IS NULL THEN o.previous ELSE rowhook.visible_data(r, o.previous) END AS event_previous
FROM rowhook.deliveries d
LEFT JOIN rowhook.outbox o ON o.id = d.event_id
LEFT JOIN rowhook.resources r ON r.name = o.resource
WHERE d.subscription_id = %(subscription_id)s AND d.account = %(account)s
  AND (%(status)s::text IS NULL OR d.status = %(status)s)
  AND (%(before_created)s::timestamptz IS NULL OR (d.created_at, d.id) < (%(before_created)s, %(before_id)s))
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s;

-- name: api_get_delivery
SELECT d.*, rowhook.attempt_log(d.id, %(attempts_shown)s) AS attempt_log,
       o.id IS NOT NULL AS event_kept, o.resource AS event_resource, o.op AS event_op,
       o.occurred_at AS event_occurred_at, o.key AS event_key, o.account AS event_account,
       CASE WHEN r.name IS NULL THEN o.data ELSE rowhook.visible_data(r, o.data) END AS event_data,
       CASE WHEN r.name IS NULL THEN o.previous ELSE rowhook.visible_data(r, o.previous) END AS event_previous
FROM rowhook.deliveries d
JOIN rowhook.subscriptions s ON s.id = d.subscription_id AND s.deleted_at IS NULL
LEFT JOIN rowhook.outbox o ON o.id = d.event_id
LEFT JOIN rowhook.resources r ON r.name = o.resource
WHERE d.id = %(id)s AND d.account = %(account)s;

-- name: api_lock_delivery
SELECT d.id, d.status, d.subscription_id
FROM rowhook.deliveries d
JOIN rowhook.subscriptions s ON s.id = d.subscription_id AND s.deleted_at IS NULL
WHERE d.id = %(id)s AND d.account = %(account)s
FOR UPDATE OF d;

-- name: api_retry_delivery
-- attempts is kept: a manual retry gets one more try, and the attempt log keeps the whole history.
-- A paused subscription holds the retry until it resumes.
UPDATE rowhook.deliveries d
SET status = CASE WHEN s.status = 'paused' THEN 'held' ELSE 'pending' END, next_attempt_at = now(),
    finished_at = NULL, lease_until = NULL, leased_by = NULL
FROM rowhook.subscriptions s
WHERE d.id = %(id)s AND s.id = d.subscription_id AND d.status NOT IN ('pending', 'delivering', 'held');

-- name: api_expand_changes
-- Before a replay: statements captured before the window's end become outbox events now (as the relay
-- would on its next pass), waiting for a relay that is expanding at this moment.
SELECT rowhook.expand_changes(NULL, wait => true) AS expanded
WHERE EXISTS (SELECT FROM rowhook.changes WHERE occurred_at < %(until)s);

-- name: api_replay
-- Events of the window that the subscription matches now, by the relay's fan-out rules: same resource,
-- own account (account-less events only of a public resource), op among its events, filter contained
-- in the event's new or (for an update) old scope values, an update touching one of its columns (if it
-- lists any) or entering or leaving its filter. Ids derive from (event, subscription,
-- replay): a replayed event is a new message to the receiver.
WITH matching AS (
    SELECT o.id, o.op, o.key
    FROM rowhook.outbox o
    WHERE o.resource = %(resource)s
      AND o.occurred_at >= %(since)s AND o.occurred_at < %(until)s
      AND (o.account = %(account)s OR (o.account IS NULL AND EXISTS (
              SELECT 1 FROM rowhook.resources r WHERE r.name = o.resource AND r.public)))
      AND o.op = ANY(%(events)s::text[])
      AND (o.scope @> %(filter)s::jsonb
           OR (o.op = 'updated' AND rowhook.old_scope(o.scope, o.previous) @> %(filter)s::jsonb))
      AND (%(columns)s::text[] IS NULL OR o.op <> 'updated' OR o.changed && %(columns)s::text[]
           OR (o.scope @> %(filter)s::jsonb) <> (rowhook.old_scope(o.scope, o.previous) @> %(filter)s::jsonb))
    ORDER BY o.id
    LIMIT %(cap)s + 1
), inserted AS (
    INSERT INTO rowhook.deliveries (id, subscription_id, account, event_id, event_type, key, status)
    SELECT rowhook.delivery_id(m.id, %(subscription_id)s, %(replay_id)s), %(subscription_id)s, %(account)s,
           m.id, %(resource)s || '.' || m.op, m.key, %(status)s
    FROM (SELECT * FROM matching ORDER BY id LIMIT %(cap)s) AS m
    ORDER BY m.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS count, (SELECT count(*) FROM matching) > %(cap)s AS truncated;

-- name: api_wake_relays
-- Work the API made due (a retry, a replay, a ping, a resumed or less limited subscription) is sent at
-- once rather than at the relays' next poll: the notification reaches them when this transaction
-- commits. The payload tells a relay to forget which subscriptions it saw paused.
SELECT pg_notify('rowhook', 'subscriptions');

-- name: api_ping_database
SELECT 1 AS ok;

-- name: api_lock_quota
-- Serialises one account's checks of one quota across API processes, until the transaction ends: the
-- next check counts what this one added.
SELECT pg_advisory_xact_lock(hashtext('rowhook quota ' || %(quota)s), hashtext(%(account)s));

-- name: api_count_live_subscriptions
SELECT count(*) AS n FROM rowhook.subscriptions WHERE account = %(account)s AND deleted_at IS NULL;

-- name: api_use_quota
-- Records one use of a rate-limited action if the account made fewer than %(limit)s in the window, and
-- says when the oldest counted use leaves the window. The account's expired uses are trimmed meanwhile.
WITH trimmed AS (
    DELETE FROM rowhook.quota_uses
    WHERE account = %(account)s AND action = %(quota)s AND used_at < now() - make_interval(secs => %(window_s)s)
), recent AS (
    SELECT count(*) AS n, min(used_at) AS oldest FROM rowhook.quota_uses
    WHERE account = %(account)s AND action = %(quota)s AND used_at >= now() - make_interval(secs => %(window_s)s)
), used AS (
    INSERT INTO rowhook.quota_uses (account, action)
    SELECT %(account)s, %(quota)s FROM recent WHERE n < %(limit)s
    RETURNING 1
)
SELECT n < %(limit)s AS allowed,
       greatest(1, ceil(extract(epoch FROM oldest + make_interval(secs => %(window_s)s) - now())))::int
           AS retry_after_s
FROM recent;

-- name: api_captured_columns
-- The columns of a resource whose changes are captured (what `changed` of its updates may name): its
-- allow-list, or every column of its table but the excluded ones.
SELECT coalesce(r.columns, ARRAY(SELECT c FROM unnest(rowhook.table_columns(r.table_oid)) AS c
                                 WHERE c <> ALL (r.exclude_columns))) AS columns
FROM rowhook.resources r
WHERE r.name = %(name)s;
