-- The relay's queries: registration and wake-up handshake, fan-out, claims with leases, outcomes.

-- name: relay_forget_dead
-- A relay is gone when its LISTEN session is dead and it has not beaten its heart for grace_s: a live
-- relay whose session dropped registers again well within that time, also after a server restart
-- (hence the grace after the server's start too). Its leases are then reaped (relay_reap_expired).
DELETE FROM rowhook.relays
WHERE backend_pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
  AND heartbeat_at < now() - make_interval(secs => %(grace_s)s)
  AND pg_postmaster_start_time() < now() - make_interval(secs => %(grace_s)s)
RETURNING id;

-- name: relay_register
-- Run on the LISTEN connection, so backend_pid names the connection that receives the NOTIFY.
INSERT INTO rowhook.relays (id, backend_pid, sleeping)
VALUES (%(relay_id)s, pg_backend_pid(), false)
ON CONFLICT (id) DO UPDATE SET backend_pid = excluded.backend_pid, sleeping = false, heartbeat_at = now();

-- name: relay_set_sleeping
UPDATE rowhook.relays SET sleeping = %(sleeping)s, heartbeat_at = now() WHERE id = %(relay_id)s;

-- name: relay_try_sleep_lock
SELECT rowhook.try_sleep_lock() AS held, rowhook.some_relay_asleep() AS some_relay_asleep;

-- name: relay_wait_sleep_lock
-- Waits at most the session's lock_timeout for writers that still hold the lock shared.
SELECT rowhook.wait_sleep_lock();

-- name: relay_release_sleep_lock
SELECT rowhook.release_sleep_lock() AS released;

-- name: relay_unregister
DELETE FROM rowhook.relays WHERE id = %(relay_id)s;

-- name: relay_expand_changes
-- Captured statements become outbox events, in capture order, when fewer than %(batch)s events wait
-- (rowhook.expand_changes in migration 0011). Runs in the fan-out's transaction, just before it.
SELECT rowhook.expand_changes(%(batch)s) AS expanded;

-- name: relay_fan_out
-- One transaction: claim a batch of undispatched events (no cursor by id: late committers are simply
-- the next batch), insert one delivery per matching subscription, mark the events dispatched.
-- A filter matches when the event's scope values contain it; an update is also told to subscriptions
-- whose filter its old scope values matched (a row leaving the filter). Candidates are found through
-- index subscriptions_fanout by filter anchor: one probe per scope value (new and old) plus one for
-- empty filters, so the cost follows the matching subscriptions, not all of them.
-- Account-less events go to every account's subscriptions only for resources watched public.
-- A subscription with `columns` hears an update only when one of them changed, or when the row entered
-- or left its filter (one side of the update matches it, the other not).
-- Delivery ids derive from (event, subscription): a fan-out redone after a crash gives the same ids.
-- Returns one row per delivery leased to this relay, with what the sender needs (as relay_take gives
-- it: no second round trip, and no re-planned id array, before the first POST), the counts repeated
-- on each; one row with a null id when none was leased.
WITH events AS (
    SELECT id, resource, op, account, key, scope, changed, occurred_at, data, previous,
           CASE WHEN op = 'updated' THEN rowhook.old_scope(scope, previous) ELSE scope END AS old_scope
    FROM rowhook.outbox
    WHERE dispatched_at IS NULL
    ORDER BY id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE rowhook.outbox o SET dispatched_at = now()
    FROM events e WHERE o.id = e.id
    RETURNING o.id
), anchors AS (
    SELECT e.id AS event_id, '{}'::jsonb AS anchor FROM events e
    UNION
    SELECT e.id, jsonb_build_object(kv.key, kv.value)
    FROM events e CROSS JOIN LATERAL jsonb_each(e.scope) AS kv
    UNION
    SELECT e.id, jsonb_build_object(kv.key, kv.value)
    FROM events e CROSS JOIN LATERAL jsonb_each(e.old_scope) AS kv
    WHERE e.op = 'updated'
), candidates AS (
    SELECT e.id AS event_id, e.resource, e.op, e.key, e.scope, e.old_scope, s.id AS subscription_id,
           s.account, s.status, s.events, s.filter, e.changed, s.columns
    FROM events e
    JOIN anchors a ON a.event_id = e.id
    JOIN rowhook.subscriptions s
      ON s.resource = e.resource AND s.filter_anchor = a.anchor AND s.account = e.account
     AND s.status IN ('active', 'paused') AND s.deleted_at IS NULL
    UNION ALL
    SELECT e.id, e.resource, e.op, e.key, e.scope, e.old_scope, s.id, s.account, s.status, s.events, s.filter,
           e.changed, s.columns
    FROM events e
    JOIN rowhook.resources r ON r.name = e.resource AND r.public
    JOIN anchors a ON a.event_id = e.id
    JOIN rowhook.subscriptions s
      ON s.resource = e.resource AND s.filter_anchor = a.anchor
     AND s.status IN ('active', 'paused') AND s.deleted_at IS NULL
    WHERE e.account IS NULL
), matched AS (
    SELECT c.*
    FROM candidates c
    WHERE c.op = ANY (c.events) AND (c.scope @> c.filter OR c.old_scope @> c.filter)
      AND (c.columns IS NULL OR c.op <> 'updated' OR c.changed && c.columns
           OR (c.scope @> c.filter) <> (c.old_scope @> c.filter))
), locked AS MATERIALIZED (
    -- Subscriptions whose fresh deliveries this relay leases at once, so that they are written once
    -- as in flight instead of pending and then leased: active and unordered ones (ordered ones are
    -- claimed, which checks older work per key) that no other relay is claiming for right now (their
    -- row lock serialises the in-flight count across relays, as in relay_take), and unlimited ones:
    -- a rate-limited one's are claimed, whose statements read its token bucket only after taking
    -- the lock (this statement's snapshot predates the lock, and could hold tokens spent since).
    SELECT s.id, rowhook.in_flight_cap(s) AS cap
    FROM rowhook.subscriptions s
    WHERE s.id IN (SELECT m.subscription_id FROM matched m WHERE m.status = 'active')
      AND s.status = 'active' AND s.deleted_at IS NULL AND NOT s.ordered AND s.rate_limit_per_s IS NULL
      AND %(free)s > 0
    FOR NO KEY UPDATE SKIP LOCKED
), room AS MATERIALIZED (
    SELECT l.id, l.cap - (SELECT count(*) FROM rowhook.deliveries f
                          WHERE f.subscription_id = l.id AND f.status = 'delivering'
                            AND f.lease_until > now()) AS room
    FROM locked l
), fitting AS (
    SELECT m.*, coalesce(row_number() OVER (PARTITION BY m.subscription_id ORDER BY m.event_id) <= r.room,
                         false) AS fits
    FROM matched m LEFT JOIN room r ON r.id = m.subscription_id
), planned AS (
    -- At most %(free)s leased: the relay's free send slots.
    SELECT f.*, f.fits AND sum(f.fits::int) OVER (ORDER BY f.event_id, f.subscription_id) <= %(free)s AS leased
    FROM fitting f
), inserted AS (
    -- clock_timestamp() keeps creation order in next_attempt_at, which claims sort by. A paused
    -- subscription's deliveries are held until it resumes. Into the queue partition itself: fresh
    -- deliveries are unfinished, and only there is the id unique, which ON CONFLICT needs (0015).
    INSERT INTO rowhook.delivery_queue (id, subscription_id, account, event_id, event_type, key, status,
                                    next_attempt_at, lease_until, leased_by)
    SELECT rowhook.delivery_id(event_id, subscription_id), subscription_id, account, event_id,
           resource || '.' || op, key,
           CASE WHEN status = 'paused' THEN 'held' WHEN leased THEN 'delivering' ELSE 'pending' END,
           clock_timestamp(),
           CASE WHEN leased THEN now() + make_interval(secs => %(lease_s)s) END,
           CASE WHEN leased THEN %(relay_id)s END
    FROM (SELECT * FROM planned ORDER BY event_id, subscription_id) AS ordered_matches
    ON CONFLICT (id) DO NOTHING
    RETURNING id, status, subscription_id, event_id, event_type, body, attempts
), counts AS (
    SELECT (SELECT count(*) FROM marked) AS events, (SELECT count(*) FROM inserted) AS created
)
SELECT c.events, c.created, l.*
FROM counts c
LEFT JOIN (
    -- Each subscription looked up by key (OFFSET 0: never a scan of all subscriptions).
    SELECT i.id, i.subscription_id, i.event_id, i.event_type, i.body, i.attempts,
           s.target_url, s.secret, s.previous_secret, s.headers,
           e.resource, e.op, e.key, e.occurred_at, e.account,
           CASE WHEN r.name IS NULL THEN e.data ELSE rowhook.visible_data(r, e.data) END AS data,
           CASE WHEN r.name IS NULL THEN e.previous ELSE rowhook.visible_data(r, e.previous) END AS previous,
           true AS has_event
    FROM inserted i
    JOIN events e ON e.id = i.event_id
    CROSS JOIN LATERAL (
        SELECT x.target_url, x.secret, x.headers,
               CASE WHEN x.previous_secret_expires_at > now() THEN x.previous_secret END AS previous_secret
        FROM rowhook.subscriptions x WHERE x.id = i.subscription_id OFFSET 0) AS s
    LEFT JOIN rowhook.resources r ON r.name = e.resource
    WHERE i.status = 'delivering'
) AS l ON true
ORDER BY l.event_id, l.subscription_id;

-- name: relay_capped_subscriptions
-- Subscriptions whose live leases already reach their in-flight cap (across all relays): skip their
-- work, a finished send frees room. And every rate-limited one (`rate_limited`), with the whole tokens
-- its bucket holds and whether it has due work (`has_due`, one probe of delivery_queue_waiting as in
-- relay_next_due): the time-ordered scans skip them too, and relay_scan_due_rate_limited takes no
-- more of each one's rows than it has tokens, so that a limited backlog does not fill the claims.
-- And every failing subscription waiting for its next probe (`waiting_probe`, from index
-- subscriptions_waiting_probe): none of its rows is read until then (0012).
SELECT s.id, false AS rate_limited, NULL::integer AS tokens, false AS has_due, false AS waiting_probe
FROM rowhook.deliveries f
JOIN rowhook.subscriptions s ON s.id = f.subscription_id
WHERE f.status = 'delivering' AND f.lease_until > now()
GROUP BY s.id
HAVING count(*) >= rowhook.in_flight_cap(s)
UNION ALL
SELECT s.id, true, floor(rowhook.rate_tokens(s.rate_limit_per_s, b.tokens, b.refilled_at, now()))::integer,
       coalesce(first.subscription_id = s.id AND first.status = 'pending' AND first.next_attempt_at <= now(),
                false),
       false
FROM rowhook.subscriptions s
LEFT JOIN rowhook.rate_buckets b ON b.subscription_id = s.id
LEFT JOIN LATERAL (SELECT d.subscription_id, d.status, d.next_attempt_at
                   FROM rowhook.deliveries d
                   WHERE d.status IN ('pending', 'held') AND (d.subscription_id, d.status) >= (s.id, 'pending')
                   ORDER BY d.subscription_id, d.status, d.next_attempt_at
                   LIMIT 1) AS first ON true
WHERE s.rate_limit_per_s IS NOT NULL AND s.deleted_at IS NULL
UNION ALL
SELECT s.id, false, NULL, false, true
FROM rowhook.subscriptions s
WHERE s.next_probe_at > now();

-- name: relay_scan_due
-- The earliest due deliveries, read from index delivery_queue_due alone and only then joined to their
-- subscriptions: a plan that started from a subscription would read its whole backlog to return a few
-- (and so would any plan chosen with statistics from before a burst). The read is bounded
-- (%(window)s rows): rows of subscriptions to skip (at their cap) are passed over, and `crowded` says
-- when they filled the window, so that the caller claims by subscription instead.
WITH front AS MATERIALIZED (
    SELECT d.id, d.subscription_id, d.next_attempt_at
    FROM rowhook.deliveries d
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at
    LIMIT %(window)s
), due AS MATERIALIZED (
    SELECT x.id, x.subscription_id
    FROM (SELECT w.id FROM front w WHERE w.subscription_id <> ALL (%(skip_subscriptions)s::text[])
          ORDER BY w.next_attempt_at LIMIT %(limit)s) AS picked
    CROSS JOIN LATERAL (SELECT * FROM rowhook.delivery_queue x WHERE x.id = picked.id OFFSET 0) AS x
    WHERE x.status = 'pending'
    FOR UPDATE OF x SKIP LOCKED
)
-- One row at least: with no due row, id is NULL and `crowded` still tells.
SELECT found.id, found.subscription_id, found.subscription_status,
       (SELECT count(*) FROM front) = %(window)s AS crowded
FROM (SELECT 1) AS one
LEFT JOIN (SELECT due.id, due.subscription_id, s.status AS subscription_status
           FROM due JOIN rowhook.subscriptions s ON s.id = due.subscription_id) AS found ON true;

-- name: relay_scan_due_by_subscription
-- Due deliveries taken subscription by subscription: the subscriptions with waiting work are found by
-- a skip scan of index delivery_queue_waiting (one probe each), those to skip are left out before any of
-- their rows is read, and each other one gives its earliest due rows. For when the time-ordered
-- scan's window is crowded with rows of subscriptions at their cap.
-- The skip scan tests `status IN ('pending', 'held')`, the index's own predicate: with `= 'pending'`,
-- statistics from before a burst made delivery_queue_due (every pending row, sorted) look cheaper.
-- Each subscription's rows are read the same way, from its first entry at or after (subscription,
-- 'pending'), at most %(limit)s entries, and only then locked by key (as in relay_scan_due_rate_limited):
-- read by subscription and due time, the planner could read delivery_queue_due in time order and filter by
-- subscription, passing every due row of the others (1,500 rows per subscription, 4.6 ms per claim,
-- beside five failing receivers' backlogs).
WITH RECURSIVE heads(subscription_id) AS (
    (SELECT d.subscription_id FROM rowhook.deliveries d
     WHERE d.status IN ('pending', 'held') ORDER BY d.subscription_id LIMIT 1)
    UNION ALL
    SELECT n.subscription_id
    FROM heads h CROSS JOIN LATERAL (
        SELECT d.subscription_id FROM rowhook.deliveries d
        WHERE d.status IN ('pending', 'held') AND d.subscription_id > h.subscription_id
        ORDER BY d.subscription_id LIMIT 1) AS n
), picked AS MATERIALIZED (
    SELECT f.id, f.next_attempt_at
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT d.id, d.subscription_id, d.status, d.next_attempt_at FROM rowhook.deliveries d
        WHERE d.status IN ('pending', 'held')
          AND (d.subscription_id, d.status) >= (h.subscription_id, 'pending')
        ORDER BY d.subscription_id, d.status, d.next_attempt_at
        LIMIT %(limit)s) AS f
    WHERE h.subscription_id <> ALL (%(skip_subscriptions)s::text[])
      AND f.subscription_id = h.subscription_id AND f.status = 'pending' AND f.next_attempt_at <= now()
), due AS MATERIALIZED (
    -- Only the earliest %(limit)s of them are locked (a lock writes the row).
    SELECT x.id, x.subscription_id, x.next_attempt_at
    FROM (SELECT p.id FROM picked p ORDER BY p.next_attempt_at LIMIT %(limit)s) AS first
    CROSS JOIN LATERAL (SELECT * FROM rowhook.delivery_queue x WHERE x.id = first.id OFFSET 0) AS x
    WHERE x.status = 'pending'
    FOR UPDATE OF x SKIP LOCKED
)
SELECT due.id, due.subscription_id, s.status AS subscription_status
FROM due JOIN rowhook.subscriptions s ON s.id = due.subscription_id
ORDER BY due.next_attempt_at;

-- name: relay_scan_due_rate_limited
-- The earliest due deliveries of the given rate-limited subscriptions, at most %(tokens)s (the whole
-- tokens each one's bucket holds) of each; relay_take checks the tokens again under the subscription's
-- lock. Each one's rows are read from index delivery_queue_waiting alone, from its first entry at or after
-- (subscription, 'pending'), at most its tokens' worth of entries, and only then locked by key, as in
-- relay_scan_due. The row comparison in that index's column order, with its own predicate and no upper
-- bound, lets no other index serve: with statistics from before a burst, `status = 'pending'` made
-- delivery_queue_due (every pending row in time order) look cheaper, and a bound by subscription
-- delivery_queue_ordering (all of the subscription's rows, then sorted).
WITH picked AS MATERIALIZED (
    SELECT f.id
    FROM unnest(%(subscription_ids)s::text[], %(tokens)s::integer[]) AS l(id, tokens)
    CROSS JOIN LATERAL (
        SELECT d.id, d.subscription_id, d.status, d.next_attempt_at FROM rowhook.deliveries d
        WHERE d.status IN ('pending', 'held') AND (d.subscription_id, d.status) >= (l.id, 'pending')
        ORDER BY d.subscription_id, d.status, d.next_attempt_at
        LIMIT l.tokens) AS f
    WHERE f.subscription_id = l.id AND f.status = 'pending' AND f.next_attempt_at <= now()
), due AS MATERIALIZED (
    SELECT x.id, x.subscription_id, x.next_attempt_at
    FROM picked CROSS JOIN LATERAL (SELECT * FROM rowhook.delivery_queue x WHERE x.id = picked.id OFFSET 0) AS x
    WHERE x.status = 'pending'
    FOR UPDATE OF x SKIP LOCKED
)
SELECT due.id, due.subscription_id, s.status AS subscription_status
FROM due JOIN rowhook.subscriptions s ON s.id = due.subscription_id
ORDER BY due.next_attempt_at
LIMIT %(limit)s;

-- name: relay_lock_subscriptions
-- Serialises the in-flight count of a subscription across relays: a relay that finds the row locked
-- leaves that subscription to the relay holding it for this claim.
SELECT id FROM rowhook.subscriptions
WHERE id = ANY (%(subscription_ids)s::text[])
ORDER BY id
FOR NO KEY UPDATE SKIP LOCKED;

-- name: relay_take
-- Lease the given pending deliveries of the locked subscriptions, up to each one's free room and, for
-- ordered subscriptions, only when no older delivery of the same key is still pending, held or in
-- flight. Pending deliveries met here of disabled or deleted subscriptions are cancelled, of paused
-- ones held. Returns the leased deliveries with what the sender needs (no second statement
-- and round trip per claim; bodies show only what the resource shows now, rowhook.visible_data: a
-- column excluded after its events were captured does not leave the database either), oldest first.
-- Every step starts from the given ids or subscriptions (primary keys, MATERIALIZED so that each is
-- computed once): no plan can start from a subscription's backlog, whatever the statistics say.
WITH wanted AS MATERIALIZED (
    -- OFFSET 0 keeps the status test out of the lookup: a lookup by id alone can only use the primary
    -- key (with the test, stale statistics made index delivery_queue_due look cheaper, read in full).
    -- row_id: where the row is, for the updates below (a TID scan, whatever the statistics say; the
    -- rows were locked by the scan that found them, in this transaction, so they stay where they are).
    SELECT d.row_id, d.id, d.subscription_id, d.key, d.event_id, d.next_attempt_at
    -- The ids come as a JSON array (see relay_record_outcomes); LIMIT tells the planner how many.
    FROM (SELECT * FROM jsonb_array_elements_text(%(ids)s::jsonb) LIMIT jsonb_array_length(%(ids)s::jsonb)) AS w(id)
    CROSS JOIN LATERAL (SELECT x.ctid AS row_id, x.* FROM rowhook.delivery_queue x WHERE x.id = w.id OFFSET 0) AS d
    WHERE d.status = 'pending'
), room AS MATERIALIZED (
    -- A rate-limited subscription also takes no more than its bucket's whole tokens (an unlimited one
    -- has no bucket row, and `tokens` is NULL).
    SELECT s.id, s.ordered,
           least(rowhook.in_flight_cap(s) - (SELECT count(*) FROM rowhook.deliveries f
                                    WHERE f.subscription_id = s.id AND f.status = 'delivering'
                                      AND f.lease_until > now()),
                 floor(t.tokens)) AS room,
           t.tokens, b.refilled_at
    FROM unnest(%(subscription_ids)s::text[]) AS l(id)
    JOIN rowhook.subscriptions s ON s.id = l.id
    LEFT JOIN rowhook.rate_buckets b ON b.subscription_id = s.id AND s.rate_limit_per_s IS NOT NULL
    CROSS JOIN LATERAL (SELECT rowhook.rate_tokens(s.rate_limit_per_s, b.tokens, b.refilled_at, now())
                        AS tokens) AS t
    WHERE s.status = 'active' AND s.deleted_at IS NULL
), candidates AS (
    SELECT w.row_id, w.id, w.subscription_id, room.room,
           row_number() OVER (PARTITION BY w.subscription_id ORDER BY w.next_attempt_at, w.event_id) AS rank
    FROM wanted w
    JOIN room ON room.id = w.subscription_id
    WHERE NOT (room.ordered AND w.key IS NOT NULL AND EXISTS (
          SELECT 1 FROM rowhook.deliveries older
          WHERE older.subscription_id = w.subscription_id AND older.key = w.key
            AND older.event_id < w.event_id AND older.status IN ('pending', 'delivering', 'held')))
), set_aside AS (
    UPDATE rowhook.deliveries d
    SET status = CASE WHEN s.deleted_at IS NULL AND s.status = 'paused' THEN 'held' ELSE 'cancelled' END,
        finished_at = CASE WHEN s.deleted_at IS NULL AND s.status = 'paused' THEN NULL ELSE now() END,
        last_error = CASE WHEN s.deleted_at IS NOT NULL THEN 'subscription deleted'
                          WHEN s.status = 'disabled' THEN 'subscription disabled' ELSE d.last_error END
    FROM wanted w JOIN rowhook.subscriptions s ON s.id = w.subscription_id
    -- The status test is the queue partition's bound (0015): it leaves the log out of the plan (a
    -- cancelled row moves there), and the row is found where `wanted` read it.
    WHERE d.ctid = w.row_id AND d.status IN ('pending', 'delivering', 'held')
      AND (s.status IN ('disabled', 'paused') OR s.deleted_at IS NOT NULL)
), taken AS (
    -- No status test here: `wanted` read the rows after relay_scan_due locked them in this same
    -- transaction, and with one, statistics from before a burst made the planner read every pending
    -- row through delivery_queue_due and join them to the candidates (130 ms for 40 rows). The queue
    -- partition itself, where a lease keeps the row (0015), found where `wanted` read it: joined by
    -- id, statistics of an empty queue made the planner read the whole queue once per candidate.
    UPDATE rowhook.delivery_queue d
    SET status = 'delivering', lease_until = now() + make_interval(secs => %(lease_s)s),
        leased_by = %(relay_id)s
    FROM candidates c
    WHERE d.ctid = c.row_id AND c.rank <= c.room
    RETURNING d.id, d.subscription_id, d.event_id, d.event_type, d.body, d.attempts, d.next_attempt_at
), spent AS (
    -- One token per lease of a rate-limited subscription. The subscription's row lock (taken by
    -- relay_lock_subscriptions) serialises this across relays; refilled_at never moves back, even for
    -- a transaction that started before the last write.
    INSERT INTO rowhook.rate_buckets AS b (subscription_id, tokens, refilled_at)
    SELECT r.id, r.tokens - count(*), greatest(r.refilled_at, now())
    FROM taken t JOIN room r ON r.id = t.subscription_id
    WHERE r.tokens IS NOT NULL
    GROUP BY r.id, r.tokens, r.refilled_at
    ON CONFLICT (subscription_id) DO UPDATE SET tokens = excluded.tokens, refilled_at = excluded.refilled_at
)
-- Subscriptions and events looked up by key (OFFSET 0: never a scan, whatever the statistics say).
SELECT t.id, t.subscription_id, t.event_id, t.event_type, t.body, t.attempts,
       s.target_url, s.secret, s.previous_secret, s.headers,
       o.resource, o.op, o.key, o.occurred_at, o.account,
       CASE WHEN r.name IS NULL THEN o.data ELSE rowhook.visible_data(r, o.data) END AS data,
       CASE WHEN r.name IS NULL THEN o.previous ELSE rowhook.visible_data(r, o.previous) END AS previous,
       o.id IS NOT NULL OR t.event_id IS NULL AS has_event
FROM taken t
CROSS JOIN LATERAL (
    SELECT x.target_url, x.secret, x.headers,
           CASE WHEN x.previous_secret_expires_at > now() THEN x.previous_secret END AS previous_secret
    FROM rowhook.subscriptions x WHERE x.id = t.subscription_id OFFSET 0) AS s
LEFT JOIN LATERAL (SELECT * FROM rowhook.outbox e WHERE e.id = t.event_id OFFSET 0) AS o ON true
LEFT JOIN rowhook.resources r ON r.name = o.resource
ORDER BY t.next_attempt_at, t.event_id, t.id;

-- name: relay_reap_expired
-- Leases no live relay holds: expired (the relay stopped answering) or held by a relay that is no longer
-- registered (gone: see relay_forget_dead). Each counts as an attempt, because the push itself may be
-- what killed the relay: a delivery that keeps killing relays ends failed after attempts_max attempts,
-- like one that keeps failing. Otherwise it is due again at once (same webhook-id).
WITH dead AS (
    SELECT d.ctid AS row_id, d.id, d.attempts, d.last_attempt_at, d.last_duration_ms, d.last_status_code,
           d.last_error, d.last_response, d.attempts + 1 >= %(attempts_max)s AS exhausted,
           CASE WHEN d.lease_until < now() THEN format('lease expired: relay %%s stopped answering', d.leased_by)
                ELSE format('relay %%s went away while delivering (lease released)', d.leased_by) END AS error
    FROM rowhook.deliveries d
    WHERE d.status = 'delivering'
      AND (d.lease_until < now() OR NOT EXISTS (SELECT 1 FROM rowhook.relays r WHERE r.id = d.leased_by))
    FOR UPDATE OF d SKIP LOCKED
), history AS (
    -- The attempt this one replaces as the latest moves to the history.
    INSERT INTO rowhook.delivery_attempts (delivery_id, attempted_at, duration_ms, status_code, error, response_body)
    SELECT d.id, d.last_attempt_at, d.last_duration_ms, d.last_status_code, d.last_error, d.last_response
    FROM dead d
    WHERE d.last_attempt_at IS NOT NULL
)
UPDATE rowhook.deliveries d
SET status = CASE WHEN dead.exhausted THEN 'failed' ELSE 'pending' END,
    attempts = d.attempts + 1, next_attempt_at = now(),
    lease_until = NULL, leased_by = NULL,
    last_attempt_at = now(), last_duration_ms = 0, last_status_code = NULL, last_error = dead.error,
    last_response = NULL,
    finished_at = CASE WHEN dead.exhausted THEN now() END
FROM dead
-- Where `dead` locked it; the status test is the queue's bound (0015), so only the queue is looked at.
WHERE d.ctid = dead.row_id AND d.status IN ('pending', 'delivering', 'held')
RETURNING d.id, d.subscription_id, d.status, dead.error;

-- name: relay_release
-- Graceful stop: in-flight work this relay could not finish goes back to pending at once.
UPDATE rowhook.deliveries
SET status = 'pending', lease_until = NULL, leased_by = NULL, next_attempt_at = now()
WHERE id = ANY (%(ids)s::text[]) AND status = 'delivering' AND leased_by = %(relay_id)s;

-- name: relay_release_stale
-- A relay whose session was lost (a database crash or restart) gives back at once the leases it holds but
-- no longer works on: their outcomes died with the session (synchronous_commit=off). Not an attempt: the
-- relay's session went away, not the receiver. Held until they expired, they would count against the
-- subscription's in-flight cap and stall it.
UPDATE rowhook.deliveries
SET status = 'pending', lease_until = NULL, leased_by = NULL, next_attempt_at = now()
WHERE leased_by = %(relay_id)s AND status = 'delivering' AND id <> ALL (%(keep)s::text[])
RETURNING id;

-- name: relay_record_outcomes
-- Every attempt is recorded. While this relay still holds the lease, the attempt becomes the
-- delivery's latest (in its row) and the one it replaces moves to delivery_attempts; an outcome that
-- came after the lease was lost goes to delivery_attempts directly. Each delivery is found and locked
-- by id alone (behind OFFSET 0, so only the primary key can serve, whatever the statistics say).
-- The outcomes come as one JSON array of [id, status, ...] arrays: the relay dumps it in one C call,
-- where eight array parameters cost it a Python loop over every element (a third of what recording
-- cost it). The planner takes a set-returning function for 100 rows, and then joined the updates below
-- to a hashed read of the whole queue: LIMIT tells it how many there are (a custom plan folds the
-- length; a generic plan guesses a few), so they stay lookups by row address.
WITH o AS MATERIALIZED (
    SELECT e ->> 0 AS id, e ->> 1 AS status, (e ->> 2)::float8 AS retry_in_s,
           (e ->> 3)::timestamptz AS attempted_at, (e ->> 4)::int AS duration_ms,
           (e ->> 5)::int AS status_code, e ->> 6 AS error, e ->> 7 AS response_body
    FROM jsonb_array_elements(%(outcomes)s::jsonb) AS e
    LIMIT jsonb_array_length(%(outcomes)s::jsonb)
), current AS MATERIALIZED (
    -- Locked here, so that the lease test holds until the update below, which then needs no status
    -- test of its own (one would let stale statistics pick a scan of delivery_queue_in_flight, which keeps
    -- an entry for every lease ever taken until vacuum runs).
    -- Only the queue holds leased rows (0015); one no longer there (finished since: its lease was lost
    -- and the delivery failed or was cancelled) has its attempt written to the history all the same.
    SELECT o.id, d.row_id, d.attempts,
           coalesce(d.status = 'delivering' AND d.leased_by = %(relay_id)s, false) AS leased,
           d.last_attempt_at, d.last_duration_ms, d.last_status_code, d.last_error, d.last_response
    FROM o LEFT JOIN LATERAL (SELECT x.ctid AS row_id, x.* FROM rowhook.delivery_queue x
                              WHERE x.id = o.id FOR UPDATE OFFSET 0) AS d ON true
), history AS (
    INSERT INTO rowhook.delivery_attempts (delivery_id, attempted_at, duration_ms, status_code, error, response_body)
    SELECT c.id, c.last_attempt_at, c.last_duration_ms, c.last_status_code, c.last_error, c.last_response
    FROM current c WHERE c.leased AND c.last_attempt_at IS NOT NULL
    UNION ALL
    SELECT o.id, o.attempted_at, o.duration_ms, o.status_code, o.error, o.response_body
    FROM o JOIN current c ON c.id = o.id WHERE NOT c.leased
)
UPDATE rowhook.deliveries d
SET status = o.status,
    attempts = c.attempts + 1,
    next_attempt_at = CASE WHEN o.status = 'pending' THEN now() + make_interval(secs => o.retry_in_s)
                           ELSE d.next_attempt_at END,
    lease_until = NULL, leased_by = NULL,
    last_attempt_at = o.attempted_at, last_duration_ms = o.duration_ms, last_status_code = o.status_code,
    last_error = o.error, last_response = o.response_body,
    finished_at = CASE WHEN o.status IN ('succeeded', 'failed') THEN now() END
FROM current c JOIN o ON o.id = c.id
-- Where `current` locked it; the status test is the queue's bound (0015), so only the queue is looked at.
WHERE c.leased AND d.ctid = c.row_id AND d.status IN ('pending', 'delivering', 'held');

-- name: relay_clear_failing
-- Written only when something changes (at most once a minute for last_success_at): claims lock
-- subscription rows with SKIP LOCKED, so needless updates would make them skip work.
UPDATE rowhook.subscriptions SET failing_since = NULL, next_probe_at = NULL, last_success_at = now()
WHERE id = ANY (%(subscription_ids)s::text[])
  AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < now() - interval '1 minute');

-- name: relay_mark_failing
-- Failing since its first failed attempt, and no delivery of it leased before its next probe:
-- %(probe_in_s)s seconds from now (relay/policy.py: the earliest retry of its failed deliveries, at most
-- ROWHOOK_PROBE_WAIT_MAX_S), or NULL when none of them is retried (its due work is then probed at once).
UPDATE rowhook.subscriptions s
SET failing_since = coalesce(s.failing_since, now()),
    next_probe_at = CASE WHEN f.probe_in_s IS NULL THEN s.next_probe_at
                         ELSE now() + make_interval(secs => f.probe_in_s) END
FROM unnest(%(subscription_ids)s::text[], %(probe_in_s)s::float8[]) AS f(id, probe_in_s)
WHERE s.id = f.id AND (s.failing_since IS NULL OR f.probe_in_s IS NOT NULL);

-- name: relay_failing_since
-- Subscriptions whose deliveries just failed, with how long each has failed by the database's clock:
-- relay/policy.py failing_too_long decides which to disable.
SELECT id, status, deleted_at IS NOT NULL AS deleted, failing_since,
       extract(epoch FROM now() - failing_since)::float8 AS failing_for_s
FROM rowhook.subscriptions
WHERE id = ANY (%(subscription_ids)s::text[]);

-- name: relay_disable_failing
-- Disables each subscription with its reason, unless it changed since relay_failing_since read it
-- (paused, deleted, or a success cleared its failing streak meanwhile).
UPDATE rowhook.subscriptions s
SET status = 'disabled', disabled_reason = d.reason, updated_at = now()
FROM unnest(%(subscription_ids)s::text[], %(reasons)s::text[], %(failing_since)s::timestamptz[])
     AS d(id, reason, failing_since)
WHERE s.id = d.id AND s.status = 'active' AND s.deleted_at IS NULL AND s.failing_since = d.failing_since
RETURNING s.id;

-- name: relay_disable
UPDATE rowhook.subscriptions
SET status = 'disabled', disabled_reason = %(reason)s, updated_at = now()
WHERE id = ANY (%(subscription_ids)s::text[]) AND status <> 'disabled'
RETURNING id;

-- name: relay_cancel_pending
UPDATE rowhook.deliveries
SET status = 'cancelled', finished_at = now(), last_error = %(reason)s
WHERE subscription_id = ANY (%(subscription_ids)s::text[]) AND status IN ('pending', 'held');

-- name: relay_release_held
-- A fan-out that read a subscription as paused just as the API resumed it inserts held deliveries after
-- the API released the held ones. Release them: only subscriptions changed lately can have such rows.
UPDATE rowhook.deliveries d SET status = 'pending'
FROM rowhook.subscriptions s
WHERE s.status = 'active' AND s.deleted_at IS NULL AND s.updated_at > now() - interval '10 minutes'
  AND d.subscription_id = s.id AND d.status = 'held';

-- name: relay_grown_tables
-- rowhook's busy tables changed by a fifth (at least 10,000 rows) since they were last analysed: a
-- burst outruns autovacuum (or there is none), and plans made with the old statistics, including the
-- generic plans of prepared statements, would stay. ANALYZE replaces both.
-- The delivery queue (0015) sooner: it is often analysed nearly empty, between bursts, and statistics
-- of an empty queue under a burst make every plan that reads it a guess.
SELECT t.relname AS name
FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
WHERE t.schemaname = 'rowhook'
  AND ((t.relname IN ('delivery_log', 'delivery_attempts', 'outbox', 'subscriptions')
        AND t.n_mod_since_analyze > greatest(10000, 0.2 * c.reltuples))
       OR (t.relname = 'delivery_queue' AND t.n_mod_since_analyze > greatest(1000, 0.5 * c.reltuples)));

-- name: relay_churned_queue
-- Whether the delivery queue (0015) holds enough dead rows to vacuum now: every delivery passes through
-- it, and its index pages are reused only once vacuumed. Autovacuum looks at a table once a minute at
-- most (or never, where it is off); a drain at 1,000 deliveries/s would grow the queue's indexes to a
-- minute's worth of deliveries, kept on disk long after the queue is empty. Only the owner may vacuum
-- (others would be skipped with a warning): for other relays, autovacuum keeps up alone.
-- A fifth of its live rows at least: each pass reads every index of the queue whole.
SELECT coalesce(bool_or(t.n_dead_tup >= greatest(1000, 0.2 * t.n_live_tup) AND pg_has_role(c.relowner, 'USAGE')),
                false) AS churned
FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
WHERE t.relid = 'rowhook.delivery_queue'::regclass;

-- name: relay_queue_outgrown
-- Whether the delivery queue's indexes are worth rebuilding (`large`), and whether now is the time
-- (`drained`), asked by a relay that has just gone idle after a burst. The fan-out runs ahead of the
-- sends, so the queue's btrees grow to the whole backlog, and a btree never gives pages back: 200,000
-- deliveries left ~50 MB of index pages behind an empty queue (docs/benchmarks.md, "Queue and log").
-- Below %(min_index_bytes)s bytes the space is not worth a lock; above %(max_rows)s rows still queued
-- (retries waiting, paused subscriptions) a rebuild would hold the queue's writers too long, and the pages
-- are in use anyway. Only the owner may REINDEX. The rows are counted (up to the limit), not taken from
-- the statistics: a backend publishes its counts up to seconds late, and the sends that emptied the queue
-- have just been recorded. The CASE keeps that read for when the indexes are large at all.
SELECT large,
       CASE WHEN large
            THEN (SELECT count(*) FROM (SELECT FROM rowhook.delivery_queue LIMIT %(max_rows)s + 1) q)
                 <= %(max_rows)s
            ELSE false END AS drained
FROM (SELECT pg_has_role(c.relowner, 'USAGE') AND pg_indexes_size(c.oid) > %(min_index_bytes)s AS large
      FROM pg_class c
      WHERE c.oid = 'rowhook.delivery_queue'::regclass) q;

-- name: relay_next_due
-- When the earliest scheduled retry falls due, a failing subscription's next probe comes, or a
-- rate-limited subscription with due work and room under its cap will have %(rate_wake_s)s seconds' worth
-- of tokens (one at least, its bucket's size at most), so the relay can wake for it before the poll
-- interval. Never sooner than %(rate_wake_s)s s
-- from now for the latter: a claim that found tokens but took nothing (another relay or the API held
-- the subscription's row, or its rows wait for older ones of their key) is tried again then, and a
-- relay never spins on it. A subscription at its cap is woken for by its finished sends instead.
SELECT extract(epoch FROM least(
    (SELECT min(next_attempt_at) FROM rowhook.deliveries WHERE status = 'pending' AND next_attempt_at > now()),
    -- A failing subscription's next probe (its due work waits for it).
    (SELECT min(next_probe_at) FROM rowhook.subscriptions WHERE next_probe_at > now()),
    (SELECT min(greatest(now() + make_interval(secs => %(rate_wake_s)s),
                         b.refilled_at + make_interval(secs => (w.tokens - b.tokens) / s.rate_limit_per_s)))
     FROM rowhook.subscriptions s
     LEFT JOIN rowhook.rate_buckets b ON b.subscription_id = s.id
     CROSS JOIN LATERAL (SELECT least(greatest(1, s.rate_limit_per_s),
                                      greatest(1, s.rate_limit_per_s * %(rate_wake_s)s)) AS tokens) AS w
     -- Whether it has due work: one probe of index delivery_queue_waiting, for the first entry at or after
     -- (subscription, 'pending'), its earliest pending row if it has one. The row comparison in that
     -- index's column order (and its own predicate) lets no other index serve: with statistics from
     -- before a burst, a plain EXISTS read every pending row, and a probe by subscription through
     -- another index passes its rows that are not due.
     CROSS JOIN LATERAL (SELECT d.subscription_id, d.status, d.next_attempt_at
                         FROM rowhook.deliveries d
                         WHERE d.status IN ('pending', 'held')
                           AND (d.subscription_id, d.status) >= (s.id, 'pending')
                         ORDER BY d.subscription_id, d.status, d.next_attempt_at
                         LIMIT 1) AS first
     WHERE s.rate_limit_per_s IS NOT NULL AND s.deleted_at IS NULL AND s.status = 'active'
       AND first.subscription_id = s.id AND first.status = 'pending' AND first.next_attempt_at <= now()
       AND (SELECT count(*) FROM rowhook.deliveries f
            WHERE f.subscription_id = s.id AND f.status = 'delivering' AND f.lease_until > now())
           < rowhook.in_flight_cap(s))
) - now())::float8 AS due_in_s;
