-- rowhook 0008: subscriptions that choose how their pushes authenticate and which updates they hear.
-- - headers: extra request headers sent with every push to the subscription (e.g. Authorization), set
--   by the integrator. The values are secrets like the signing secret: kept in the row, shown back
--   masked by the API, cleared when the subscription is deleted, never logged.
-- - columns: captured columns of the resource; an `updated` reaches the subscription only when one of
--   them changed (or the row entered or left its filter). NULL: every update.
ALTER TABLE rowhook.subscriptions
    ADD COLUMN headers jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    ADD COLUMN columns text[] CHECK (cardinality(columns) > 0);

-- Fan-out reads `columns` of every candidate: INCLUDE it, so that candidates are still checked from
-- the index alone (see 0004). The API bounds the list's size, so that entries stay below btree's limit.
DROP INDEX rowhook.subscriptions_fanout;
CREATE INDEX subscriptions_fanout ON rowhook.subscriptions (resource, filter_anchor, account)
    INCLUDE (id, events, filter, status, columns)
    WHERE status IN ('active', 'paused') AND deleted_at IS NULL;

INSERT INTO rowhook.migrations (version, name) VALUES (8, 'push_headers_columns');
