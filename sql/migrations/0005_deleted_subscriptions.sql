-- rowhook 0005: deleted subscriptions keep no secret and are pruned in time; rate-limited API actions.

-- A deleted subscription signs nothing any more, so it keeps no secret: DELETE clears both secrets, and
-- those of subscriptions deleted before this migration are cleared here. Live ones must have a secret.
ALTER TABLE rowhook.subscriptions ALTER COLUMN secret DROP NOT NULL;
UPDATE rowhook.subscriptions
SET secret = NULL, previous_secret = NULL, previous_secret_expires_at = NULL
WHERE deleted_at IS NOT NULL;
ALTER TABLE rowhook.subscriptions ADD CONSTRAINT subscriptions_live_have_a_secret
    CHECK (deleted_at IS NOT NULL OR secret IS NOT NULL);
-- `rowhook prune` removes deleted subscriptions once past the retention (with their deliveries).
CREATE INDEX subscriptions_deleted ON rowhook.subscriptions (deleted_at) WHERE deleted_at IS NOT NULL;

-- Uses of the API's rate-limited actions (pings, replays), counted per account over the last minute by
-- every API process alike. The API deletes an account's expired rows as it counts; prune the rest.
CREATE TABLE rowhook.quota_uses (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account text NOT NULL,
    action  text NOT NULL CHECK (action IN ('ping', 'replay')),
    used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quota_uses_window ON rowhook.quota_uses (account, action, used_at);

INSERT INTO rowhook.migrations (version, name) VALUES (5, 'deleted_subscriptions');
