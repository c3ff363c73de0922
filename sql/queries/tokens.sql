-- Access tokens. Only SHA-256 digests are stored; minting and revoking go through the functions of
-- 0009_tokens_idempotency.sql, the very ones an application calls.

-- name: create_token
-- The expiry is either a time or a duration from now (on the database's clock).
SELECT * FROM rowhook.create_token(
    %(account)s, %(name)s, %(scopes)s::text[],
    coalesce(%(expires_at)s::timestamptz, now() + %(expires_in_s)s::float8 * interval '1 second'));

-- name: list_tokens
SELECT id, account, name, scopes, created_at, expires_at, last_used_at, revoked_at,
       expires_at <= now() AS expired
FROM rowhook.tokens
WHERE %(account)s::text IS NULL OR account = %(account)s
ORDER BY account, created_at, id;

-- name: revoke_token
SELECT rowhook.revoke_token(%(id)s) AS revoked;

-- name: authenticate_token
-- Revoked and expired tokens are found too, so that the answer can say which; only a token that may be
-- used has last_used_at refreshed, at most once a minute so that reads do not turn into a write per
-- request.
WITH found AS (
    SELECT id, account, scopes, expires_at, revoked_at IS NOT NULL AS revoked,
           coalesce(expires_at <= now(), false) AS expired
    FROM rowhook.tokens WHERE token_hash = %(token_hash)s
), touched AS (
    UPDATE rowhook.tokens t SET last_used_at = now()
    FROM found WHERE t.id = found.id AND NOT found.revoked AND NOT found.expired
      AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
)
SELECT id, account, scopes, expires_at, revoked, expired FROM found;
