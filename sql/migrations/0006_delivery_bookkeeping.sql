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

INSERT INTO rowhook.migrations (version, name) VALUES (6, 'delivery_bookkeeping');
