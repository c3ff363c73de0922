-- Access tokens. Only SHA-256 digests are stored.

-- name: insert_token
INSERT INTO rowhook.tokens (account, name, token_hash)
VALUES (%(account)s, %(name)s, %(token_hash)s)
RETURNING id, account, name, created_at;

-- name: list_tokens
SELECT id, account, name, created_at, last_used_at, revoked_at
FROM rowhook.tokens
WHERE %(account)s::text IS NULL OR account = %(account)s
ORDER BY account, created_at, id;

-- name: revoke_token
UPDATE rowhook.tokens SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id, account;

-- name: authenticate_token
-- last_used_at is refreshed at most once a minute so that reads do not turn into a write per request.
WITH found AS (
    SELECT id, account FROM rowhook.tokens WHERE token_hash = %(token_hash)s AND revoked_at IS NULL
), touched AS (
    UPDATE rowhook.tokens t SET last_used_at = now()
    FROM found WHERE t.id = found.id
      AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
)
SELECT id, account FROM found;
