-- rowhook 0007: claims that reach due work behind the rows of subscriptions at their in-flight cap.
-- A failing endpoint is probed one request at a time; its other due deliveries sit at the front of
-- the due index, and a claim that reads the index in time order had to pass all of them every time
-- (bench/relay_failing.py: healthy throughput at 0.38 of a run without five failing receivers). This
-- index lists waiting deliveries per subscription, so a claim can take each subscription's earliest
-- due rows directly (relay_scan_due_by_subscription). It replaces deliveries_held (held rows keep
-- their entries here, under status 'held').
DROP INDEX rowhook.deliveries_held;
CREATE INDEX deliveries_waiting ON rowhook.deliveries (subscription_id, status, next_attempt_at)
    WHERE status IN ('pending', 'held');

INSERT INTO rowhook.migrations (version, name) VALUES (7, 'claim_by_subscription');
