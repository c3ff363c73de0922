-- rowhook 0012: a failing subscription is probed by one delivery at a time, and waits between probes.
-- Before, a failing endpoint got one request in flight (rowhook.in_flight_cap), but as soon as an
-- attempt failed the next of its due deliveries was sent: five fast-failing receivers each took tens of
-- attempts a second, every one a claim, a lease and an outcome written, and healthy subscriptions
-- got 0.45 of their throughput (bench/relay_failing.py). Now, when an attempt of a failing
-- subscription fails, `next_probe_at` is set to that delivery's retry time (its schedule step or
-- Retry-After; at most ROWHOOK_PROBE_WAIT_MAX_S, a minute, away): until then no delivery of the
-- subscription is leased, by a claim or at fan-out; then one delivery (its earliest due) probes the
-- endpoint. A success clears `failing_since` and `next_probe_at` together, and the subscription gets
-- its whole cap again.
ALTER TABLE rowhook.subscriptions ADD COLUMN next_probe_at timestamptz;

-- The subscriptions waiting for their next probe, for claims to skip them without reading their rows.
CREATE INDEX subscriptions_waiting_probe ON rowhook.subscriptions (next_probe_at)
    WHERE next_probe_at IS NOT NULL;

-- How many deliveries of a subscription may be in flight at once, across all relays. An endpoint that
-- has never answered yet, or is failing (timing out, refusing, answering 5xx), is probed one request at
-- a time, so that dead endpoints cannot take the send capacity that healthy ones need; a failing one
-- gets none until its next probe is due.
CREATE OR REPLACE FUNCTION rowhook.in_flight_cap(s rowhook.subscriptions) RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s.failing_since IS NULL AND s.last_success_at IS NOT NULL THEN s.max_in_flight
                WHEN s.next_probe_at > now() THEN 0
                ELSE 1 END
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (12, 'failing_probe');
