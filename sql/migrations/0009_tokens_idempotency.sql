-- rowhook 0009: tokens the application mints itself (scopes, expiry), and idempotent creation.

-- Tokens made before this migration keep working as they did: every scope, no expiry.
ALTER TABLE rowhook.tokens
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{manage}'
        CONSTRAINT tokens_known_scopes CHECK (cardinality(scopes) > 0 AND scopes <@ '{read,manage}'),
    ADD COLUMN expires_at timestamptz;

-- What rowhook.create_token returns: the token itself appears here and nowhere else.
CREATE TYPE rowhook.new_token AS (
    id         text,
    token      text,
    account    text,
    name       text,
    scopes     text[],
    expires_at timestamptz
);

-- Mints a token for `account`; only its SHA-256 digest is stored. SECURITY DEFINER so that an
-- application role granted EXECUTE on it (and on revoke_token) can mint tokens without any privilege on
-- rowhook's tables. The token is "rh_" and 43 base64url characters, as the CLI made them before: the
-- bytes of two random UUIDs (244 random bits from the server's strong random source, no extension).
CREATE FUNCTION rowhook.create_token(
    account text, name text DEFAULT NULL, scopes text[] DEFAULT '{manage}', expires_at timestamptz DEFAULT NULL
) RETURNS rowhook.new_token
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    token text := 'rh_' || rtrim(translate(encode(
        uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 'base64'), '+/', '-_'), '=');
    unknown text;
    made rowhook.new_token;
BEGIN
    IF create_token.account IS NULL OR btrim(create_token.account) = '' THEN
        RAISE EXCEPTION 'account must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF create_token.scopes IS NULL OR cardinality(create_token.scopes) = 0 THEN
        RAISE EXCEPTION 'scopes must name at least one scope'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'known scopes: read, manage';
    END IF;
    SELECT s INTO unknown FROM unnest(create_token.scopes) AS s
    WHERE s IS NULL OR s NOT IN ('read', 'manage') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown scope %', coalesce(quote_literal(unknown), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'known scopes: read, manage';
    END IF;
    IF create_token.expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at % is not in the future', create_token.expires_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO rowhook.tokens AS t (account, name, token_hash, scopes, expires_at)
    VALUES (create_token.account, create_token.name, sha256(convert_to(token, 'UTF8')),
            ARRAY(SELECT DISTINCT s FROM unnest(create_token.scopes) AS s ORDER BY s),
            create_token.expires_at)
    RETURNING t.id, token, t.account, t.name, t.scopes, t.expires_at INTO made;
    RETURN made;
END
$$;

-- Revokes a token by id; false when there is no such token or it was revoked already.
CREATE FUNCTION rowhook.revoke_token(id text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH revoked AS (
        UPDATE rowhook.tokens t SET revoked_at = now()
        WHERE t.id = revoke_token.id AND t.revoked_at IS NULL
        RETURNING t.id
    )
    SELECT EXISTS (SELECT FROM revoked)
$$;

-- Functions are executable by PUBLIC by default: only roles granted EXECUTE may mint or revoke.
REVOKE ALL ON FUNCTION rowhook.create_token(text, text, text[], timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION rowhook.revoke_token(text) FROM PUBLIC;

-- Idempotency-Key of POST /subscriptions and POST /hooks, per account, kept 24 hours (`rowhook prune`).
-- The first request inserts its row and stores its answer in the same transaction, so a concurrent
-- request with the same key waits on the row and then finds the answer. The answer is stored without
-- its signing secret: a replay takes the secret from the subscription while it is still the one that
-- was minted (secret_sha256), so no copy of a secret lives here.
CREATE TABLE rowhook.idempotency_keys (
    account         text NOT NULL,
    key             text NOT NULL CHECK (key ~ '^[ -~]{1,255}$'),
    fingerprint     bytea NOT NULL,  -- SHA-256 of method, path and canonical body
    status_code     integer,         -- NULL only inside the first request's transaction
    response        jsonb,
    subscription_id text,
    secret_sha256   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, key)
);
CREATE INDEX idempotency_keys_created ON rowhook.idempotency_keys (created_at);

INSERT INTO rowhook.migrations (version, name) VALUES (9, 'tokens_idempotency');
