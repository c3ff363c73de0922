-- rowhook 0015: deliveries split by status into a small hot queue and an append-only log, under the
-- same table name. Every delivery used to cost two full row versions and an entry in every index for
-- each (inserted, then finished: a status change is never a HOT update, since the partial indexes'
-- predicates read status): 744 bytes per finished delivery after a vacuum (docs/benchmarks.md). Now
-- `rowhook.deliveries` is partitioned by status: unfinished rows (pending, delivering, held) live in
-- rowhook.delivery_queue, which carries the claim indexes and is emptied as fast as deliveries finish;
-- finishing moves a row into rowhook.delivery_log (finished: succeeded, failed, cancelled), written once
-- and indexed only for the delivery log and lookups by id. Queries keep naming rowhook.deliveries.
--
-- Upgrading copies every delivery into the new table under an exclusive lock: stop the relays and the
-- API, or expect them to wait, for as long as the copy takes (about a second per 100,000 deliveries on a
-- small machine; `rowhook prune` first makes it shorter).

-- Grants on the table and on the view over it, to give again on what replaces them.
CREATE TEMPORARY TABLE rowhook_0015_grants AS
SELECT c.relname, a.privilege_type,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END AS grantee
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
LEFT JOIN pg_roles g ON g.oid = a.grantee
WHERE c.oid IN ('rowhook.deliveries'::regclass, 'rowhook.attempts'::regclass) AND a.grantee <> c.relowner;

DROP VIEW rowhook.attempts;
ALTER TABLE rowhook.deliveries RENAME TO deliveries_before_0015;
ALTER INDEX rowhook.deliveries_pkey RENAME TO deliveries_before_0015_pkey;
ALTER INDEX rowhook.deliveries_due RENAME TO deliveries_before_0015_due;
ALTER INDEX rowhook.deliveries_event RENAME TO deliveries_before_0015_event;
ALTER INDEX rowhook.deliveries_in_flight RENAME TO deliveries_before_0015_in_flight;
ALTER INDEX rowhook.deliveries_log RENAME TO deliveries_before_0015_log;
ALTER INDEX rowhook.deliveries_ordering RENAME TO deliveries_before_0015_ordering;
ALTER INDEX rowhook.deliveries_waiting RENAME TO deliveries_before_0015_waiting;

-- The same columns, in the same order, with the same defaults and checks.
CREATE TABLE rowhook.deliveries (
    LIKE rowhook.deliveries_before_0015 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE
) PARTITION BY LIST (status);

-- The queue changes by a burst's worth in seconds and is nearly empty between bursts: vacuum it after
-- a thousand dead rows whatever its size (its index pages are reused only once vacuumed).
CREATE TABLE rowhook.delivery_queue PARTITION OF rowhook.deliveries
    FOR VALUES IN ('pending', 'delivering', 'held')
    WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
          autovacuum_analyze_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.02);
-- The log is appended to; its rows change again only when retried (moved back into the queue) or pruned.
CREATE TABLE rowhook.delivery_log PARTITION OF rowhook.deliveries
    FOR VALUES IN ('succeeded', 'failed', 'cancelled')
    WITH (autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);

INSERT INTO rowhook.deliveries SELECT * FROM rowhook.deliveries_before_0015;

DROP TABLE rowhook.deliveries_before_0015;

-- Indexes are made on each partition, for what is looked up there: the claim indexes on the queue
-- alone (with their predicates as before), the delivery log and lookups by id on both.
--
-- Ids are unique by construction (derived from event, subscription and replay, or random for pings).
-- The queue enforces it, as the fan-out's guard against a second delivery of one event to one
-- subscription (ON CONFLICT), where a conflict could only come from a fan-out redone.
CREATE UNIQUE INDEX delivery_queue_id ON rowhook.delivery_queue (id);
CREATE INDEX delivery_queue_due ON rowhook.delivery_queue (next_attempt_at) WHERE status = 'pending';
CREATE INDEX delivery_queue_in_flight ON rowhook.delivery_queue (subscription_id, lease_until)
    WHERE status = 'delivering';
CREATE INDEX delivery_queue_ordering ON rowhook.delivery_queue (subscription_id, key, event_id);
CREATE INDEX delivery_queue_waiting ON rowhook.delivery_queue (subscription_id, status, next_attempt_at)
    WHERE status IN ('pending', 'held');
-- Prune's question whether an event is still needed, with the predicate it had (a query's status test
-- must imply an index's predicate for the index to serve, and partition bounds do not count).
CREATE INDEX delivery_queue_event ON rowhook.delivery_queue (event_id)
    WHERE event_id IS NOT NULL AND status IN ('pending', 'delivering', 'held', 'failed');
-- The log is looked up by id one at a time (the API, a retry, prune's batches, the relay's lookups of
-- leased ids, which find nothing there): a hash index, a fraction of a btree's size on these random
-- 36-character ids.
CREATE INDEX delivery_log_id ON rowhook.delivery_log USING hash (id);
CREATE INDEX delivery_log_event ON rowhook.delivery_log (event_id)
    WHERE event_id IS NOT NULL AND status IN ('pending', 'delivering', 'held', 'failed');
-- The delivery log, newest first. Without the id, the entries of one fan-out (one subscription, one
-- created_at) deduplicate into one; a page's few ties are sorted by id after the index scan. On the log
-- only: on the queue it would be one more index that every claim's plan could pick (with statistics
-- of an empty queue, an index whose first column is subscription_id looks as good as the one a claim
-- needs); the API lists a subscription's unfinished deliveries through the queue's other indexes.
CREATE INDEX delivery_log_log ON rowhook.delivery_log (subscription_id, created_at DESC);

CREATE VIEW rowhook.attempts AS
SELECT a.delivery_id, a.id AS seq, a.attempted_at, a.duration_ms, a.status_code, a.error, a.response_body
FROM rowhook.delivery_attempts a
UNION ALL
SELECT d.id, NULL, d.last_attempt_at, d.last_duration_ms, d.last_status_code, d.last_error, d.last_response
FROM rowhook.deliveries d
WHERE d.last_attempt_at IS NOT NULL;

-- Whoever could read or write deliveries can on the new table, and on its partitions directly (the
-- relay's fan-out inserts into the queue itself); the same for the view.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM rowhook_0015_grants LOOP
        EXECUTE format('GRANT %s ON %s TO %s', g.privilege_type,
                       CASE g.relname WHEN 'attempts' THEN 'rowhook.attempts'
                            ELSE 'rowhook.deliveries, rowhook.delivery_queue, rowhook.delivery_log' END,
                       g.grantee);
    END LOOP;
END
$$;

DROP TABLE rowhook_0015_grants;

ANALYZE rowhook.deliveries;

INSERT INTO rowhook.migrations (version, name) VALUES (15, 'delivery_queue_and_log');
