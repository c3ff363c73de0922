-- Idempotency keys of POST /subscriptions and POST /hooks (api/idempotency.py), per account.

-- name: api_claim_idempotency_key
-- Returns a row when this request may go ahead: the key is new, or its last use is older than the
-- retention (that row is taken over). A concurrent request holding the key (its transaction not yet
-- committed) makes this wait for it; then nothing is returned and the stored answer is read.
INSERT INTO rowhook.idempotency_keys AS k (account, key, fingerprint)
VALUES (%(account)s, %(key)s, %(fingerprint)s)
ON CONFLICT (account, key) DO UPDATE
    SET fingerprint = excluded.fingerprint, created_at = now(), status_code = NULL, response = NULL,
        subscription_id = NULL, secret_sha256 = NULL
    WHERE k.created_at <= now() - %(keep_s)s::float8 * interval '1 second'
RETURNING true AS claimed;

-- name: api_store_idempotent_answer
UPDATE rowhook.idempotency_keys
SET status_code = %(status_code)s, response = %(response)s, subscription_id = %(subscription_id)s,
    secret_sha256 = %(secret_sha256)s
WHERE account = %(account)s AND key = %(key)s;

-- name: api_idempotent_answer
-- The stored answer, with the subscription's secret only while it is still the one minted then (not
-- rotated since, subscription not deleted): the table keeps no secret of its own.
SELECT k.fingerprint, k.status_code, k.response, s.secret
FROM rowhook.idempotency_keys k
LEFT JOIN rowhook.subscriptions s
       ON s.id = k.subscription_id AND s.account = k.account AND s.deleted_at IS NULL
      AND sha256(convert_to(s.secret, 'UTF8')) = k.secret_sha256
WHERE k.account = %(account)s AND k.key = %(key)s
  AND k.created_at > now() - %(keep_s)s::float8 * interval '1 second'
  AND k.status_code IS NOT NULL;
