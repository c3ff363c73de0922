-- rowhook 0003: delivery rules shared by the relay's queries.

-- How many deliveries of a subscription may be in flight at once, across all relays. A subscription
-- whose endpoint is failing (timing out, refusing, answering 5xx) is probed one request at a time, so
-- that dead endpoints cannot take the send capacity that healthy ones need.
CREATE FUNCTION rowhook.in_flight_cap(max_in_flight integer, failing_since timestamptz) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN failing_since IS NULL THEN max_in_flight ELSE 1 END
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (3, 'delivery');
