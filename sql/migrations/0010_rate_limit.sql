-- rowhook 0010: a rate limit per subscription (issue 13), honoured by all relays together.
-- `rate_limit_per_s` (NULL: unlimited) caps how many deliveries of the subscription start per second.
-- Each limited subscription has a token bucket: it holds at most one second's worth of tokens (at
-- least one), refills continuously and gives one token per delivery leased. Claims (relay_take)
-- read and update it while they hold the subscription's row lock, the lock that already serialises
-- its in-flight count across relays, so no two relays spend one token. Fan-out leases no fresh
-- delivery of a limited subscription: it waits for a claim.
ALTER TABLE rowhook.subscriptions
    ADD COLUMN rate_limit_per_s double precision,
    -- NaN sorts above Infinity in PostgreSQL: this refuses both.
    ADD CONSTRAINT subscriptions_rate_limit_per_s_check
        CHECK (rate_limit_per_s > 0 AND rate_limit_per_s < 'Infinity');

-- The limited subscriptions, for the relay to know when to wake for their tokens (relay_next_due).
CREATE INDEX subscriptions_rate_limited ON rowhook.subscriptions (id)
    WHERE rate_limit_per_s IS NOT NULL AND deleted_at IS NULL;

-- Rows only for limited subscriptions that have leased something: an unlimited subscription has none
-- and costs the claims nothing. A missing row is a full bucket. Updated in place (HOT: no indexed
-- column changes), hence the free space left in each page.
CREATE TABLE rowhook.rate_buckets (
    subscription_id text PRIMARY KEY REFERENCES rowhook.subscriptions (id) ON DELETE CASCADE,
    tokens double precision NOT NULL,
    refilled_at timestamptz NOT NULL
) WITH (fillfactor = 50);

-- The tokens a bucket holds at `at`: what was left when it was last written, plus what has come in
-- since at the subscription's rate, up to its size. NULL for an unlimited subscription. The elapsed
-- time is never negative: a claim whose transaction started before the last write sees no refill.
CREATE FUNCTION rowhook.rate_tokens(rate_limit_per_s double precision, tokens double precision,
                                    refilled_at timestamptz, at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN rate_limit_per_s IS NOT NULL THEN
        least(greatest(1, rate_limit_per_s),
              coalesce(tokens + greatest(0, extract(epoch FROM at - refilled_at)::float8) * rate_limit_per_s,
                       greatest(1, rate_limit_per_s)))
    END
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (10, 'rate_limit');
