-- rowhook 0006: delivery bookkeeping with fewer writes per delivery, and statistics that keep up with
-- a burst. Measured on a 20,000-event drain (docs/benchmarks.md, "Delivery bookkeeping").

-- No foreign key from attempts to deliveries: its check locked the delivery row (FOR KEY SHARE, a
-- write to the row) once per attempt. Attempts are written only by the relay, for a delivery it holds
-- leased, and `rowhook prune` deletes them with their delivery.
ALTER TABLE rowhook.delivery_attempts DROP CONSTRAINT delivery_attempts_delivery_id_fkey;

-- Prune asks only whether an event is still needed by an unfinished or failed delivery: the index
-- need not hold the final version of every succeeded delivery.
DROP INDEX rowhook.deliveries_event;
CREATE INDEX deliveries_event ON rowhook.deliveries (event_id)
    WHERE event_id IS NOT NULL AND status IN ('pending', 'delivering', 'held', 'failed');

-- The queue tables change by a burst's worth in seconds: vacuum and analyse them after a few per cent
-- of change rather than the default 20 % (where autovacuum runs at all: the relay also ANALYZEs them
-- when they have grown, see relay_stale_tables).
ALTER TABLE rowhook.deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01,
                                    autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER TABLE rowhook.outbox SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01,
                                autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER TABLE rowhook.delivery_attempts SET (autovacuum_analyze_scale_factor = 0.02,
                                           autovacuum_vacuum_insert_scale_factor = 0.05);

-- A delivery's latest attempt lives in its own row (the row is rewritten for every outcome anyway);
-- delivery_attempts keeps the earlier ones. A delivery that succeeds at once, the common case, writes
-- no attempt row at all.
ALTER TABLE rowhook.deliveries
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN last_duration_ms integer,
    ADD COLUMN last_response text;

-- Every attempt of every delivery: the history, then the latest (seq NULL sorts it last).
CREATE VIEW rowhook.attempts AS
SELECT a.delivery_id, a.id AS seq, a.attempted_at, a.duration_ms, a.status_code, a.error, a.response_body
FROM rowhook.delivery_attempts a
UNION ALL
SELECT d.id, NULL, d.last_attempt_at, d.last_duration_ms, d.last_status_code, d.last_error, d.last_response
FROM rowhook.deliveries d
WHERE d.last_attempt_at IS NOT NULL;

CREATE OR REPLACE FUNCTION rowhook.attempt_log(delivery_id text, shown integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'attempted_at', x.attempted_at, 'duration_ms', x.duration_ms, 'status_code', x.status_code,
               'error', x.error, 'response_body', x.response_body) ORDER BY x.seq NULLS LAST), '[]')
    FROM (SELECT * FROM rowhook.attempts a WHERE a.delivery_id = attempt_log.delivery_id
          ORDER BY a.seq DESC NULLS FIRST LIMIT shown) AS x
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (6, 'delivery_bookkeeping');
