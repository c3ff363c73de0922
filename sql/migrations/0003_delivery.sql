-- rowhook 0003: delivery rules shared by the relay's queries.

-- How many deliveries of a subscription may be in flight at once, across all relays. An endpoint that
-- has never answered yet, or is failing (timing out, refusing, answering 5xx), is probed one request at
-- a time, so that dead endpoints cannot take the send capacity that healthy ones need.
CREATE FUNCTION rowhook.in_flight_cap(s rowhook.subscriptions) RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s.failing_since IS NULL AND s.last_success_at IS NOT NULL THEN s.max_in_flight ELSE 1 END
$$;

-- A delivery's latest attempts, oldest first, as the API shows them.
CREATE FUNCTION rowhook.attempt_log(delivery_id text, shown integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'attempted_at', x.attempted_at, 'duration_ms', x.duration_ms, 'status_code', x.status_code,
               'error', x.error, 'response_body', x.response_body) ORDER BY x.id), '[]')
    FROM (SELECT * FROM rowhook.delivery_attempts a WHERE a.delivery_id = attempt_log.delivery_id
          ORDER BY a.id DESC LIMIT shown) AS x
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (3, 'delivery');
