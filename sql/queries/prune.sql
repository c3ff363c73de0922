-- Retention (`rowhook prune`). Each query deletes at most one batch, and the caller runs each batch in
-- its own short transaction, so pruning never holds locks on millions of rows nor blocks the relay.
-- SKIP LOCKED leaves rows a relay is working on alone; they are pruned by a later run.

-- name: prune_deliveries
-- Finished deliveries in the given statuses, with their attempts. Failed ones get a later cutoff than
-- succeeded and cancelled ones: they are what an integrator inspects and retries.
WITH batch AS (
    SELECT id FROM rowhook.deliveries
    WHERE status = ANY (%(statuses)s::text[]) AND finished_at < %(cutoff)s
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM rowhook.delivery_attempts a USING batch WHERE a.delivery_id = batch.id
)
DELETE FROM rowhook.deliveries d USING batch WHERE d.id = batch.id;

-- name: prune_deleted_subscriptions
-- Subscriptions deleted before the cutoff, with what is left of their deliveries and attempts, once
-- none of those is unfinished or finished after the cutoff. Nothing adds deliveries to a deleted
-- subscription (fan-out, ping, replay and retry all want a live one).
WITH batch AS (
    SELECT s.id FROM rowhook.subscriptions s
    WHERE s.deleted_at < %(cutoff)s
      AND NOT EXISTS (
          SELECT 1 FROM rowhook.deliveries d
          WHERE d.subscription_id = s.id
            AND (d.status IN ('pending', 'delivering', 'held') OR d.finished_at IS NULL
                 OR d.finished_at >= %(cutoff)s)
      )
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), their_deliveries AS (
    DELETE FROM rowhook.deliveries d USING batch WHERE d.subscription_id = batch.id RETURNING d.id
), their_attempts AS (
    DELETE FROM rowhook.delivery_attempts a USING their_deliveries d WHERE a.delivery_id = d.id
)
DELETE FROM rowhook.subscriptions s USING batch WHERE s.id = batch.id;

-- name: prune_quota_uses
-- Uses of rate-limited API actions that no window counts any more (the API trims them as it counts too).
WITH batch AS (
    SELECT id FROM rowhook.quota_uses WHERE used_at < %(cutoff)s LIMIT %(batch_size)s FOR UPDATE SKIP LOCKED
)
DELETE FROM rowhook.quota_uses q USING batch WHERE q.id = batch.id;

-- name: prune_outbox_events
-- One batch of old dispatched events, walked in id order from %(after_id)s so that events kept
-- (still needed by a pending, in-flight or failed delivery) are not re-read by every batch.
-- Undispatched events are never deleted, however old: the relay has not fanned them out yet.
-- Returns the last id examined (NULL once there is nothing left) and how many were deleted.
WITH candidates AS MATERIALIZED (
    SELECT id FROM rowhook.outbox
    WHERE id > %(after_id)s AND dispatched_at IS NOT NULL AND occurred_at < %(cutoff)s
    ORDER BY id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM rowhook.outbox o USING candidates c
    WHERE o.id = c.id
      AND NOT EXISTS (
          SELECT 1 FROM rowhook.deliveries d
          WHERE d.event_id = c.id AND d.status IN ('pending', 'delivering', 'held', 'failed')
      )
    RETURNING o.id
)
SELECT (SELECT max(id) FROM candidates) AS last_id, (SELECT count(*) FROM deleted) AS deleted;

-- name: prune_idempotency_keys
-- Idempotency keys whose retention (24 hours) has passed: the API ignores them already.
WITH batch AS (
    SELECT account, key FROM rowhook.idempotency_keys WHERE created_at < %(cutoff)s
    LIMIT %(batch_size)s FOR UPDATE SKIP LOCKED
)
DELETE FROM rowhook.idempotency_keys k USING batch WHERE k.account = batch.account AND k.key = batch.key;
