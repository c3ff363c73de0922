-- rowhook 0016: less database work per delivery on the relay's drain path (docs/benchmarks.md,
-- "PostgreSQL CPU per delivery on the drain path"). Only function bodies change; what they return is the
-- same.
--
-- The expander read each row's key as keys[ord], and keys (a chunk's 1,000 keys, TOASTed) were detoasted
-- and walked from the start for every row: 16 of its 28 ms per 1,000 events. Keys and rows are now read
-- side by side in one pass (ROWS FROM: position i of the keys is the key of row i, as the trigger wrote
-- them). Each row's json is parsed once (OFFSET 0 keeps the parse from being copied into each use), and
-- the scope of the common one-column case is built inline instead of by a call per event: 7 ms now.

CREATE OR REPLACE FUNCTION rowhook.expand_changes(max_events integer DEFAULT NULL, wait boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql
-- As 0014 set it (CREATE OR REPLACE resets a function's settings).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    taken bigint[] := '{}';
    rows_taken bigint := 0;
    change record;
    written integer;
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock((rowhook.expand_lock_key())[1], (rowhook.expand_lock_key())[2]);
    ELSIF NOT pg_try_advisory_xact_lock((rowhook.expand_lock_key())[1], (rowhook.expand_lock_key())[2]) THEN
        RETURN 0;
    END IF;
    -- In id order, as the fan-out reads them: an index scan, which marks the entries of events dispatched
    -- since the last vacuum dead as it passes them (a bitmap scan read 30,000 of them on every call).
    IF max_events IS NOT NULL AND (SELECT count(*) FROM (SELECT id FROM rowhook.outbox WHERE dispatched_at IS NULL
                                                          ORDER BY id LIMIT max_events) AS waiting) >= max_events THEN
        RETURN 0;
    END IF;
    FOR change IN SELECT id, row_count FROM rowhook.changes ORDER BY id FOR UPDATE LOOP
        taken := taken || change.id;
        rows_taken := rows_taken + change.row_count;
        EXIT WHEN rows_taken >= max_events;
    END LOOP;
    IF cardinality(taken) = 0 THEN
        RETURN 0;
    END IF;
    WITH batch AS (
        SELECT * FROM rowhook.changes WHERE id = ANY (taken)
    ), new_rows AS (
        -- Keys beside rows, in one pass: keys[ord] detoasted and walked all of the chunk's keys per row.
        SELECT b.id AS change_id, x.ord, x.key, j.data, coalesce(j.data ->> b.account_column, '') AS owner
        FROM batch b
        CROSS JOIN LATERAL ROWS FROM (json_array_elements(b.new_rows), unnest(b.new_keys))
            WITH ORDINALITY AS x(row, key, ord)
        CROSS JOIN LATERAL (SELECT x.row::jsonb AS data OFFSET 0) AS j
    ), old_rows AS (
        SELECT b.id AS change_id, x.ord, x.key, j.data, coalesce(j.data ->> b.account_column, '') AS owner
        FROM batch b
        CROSS JOIN LATERAL ROWS FROM (json_array_elements(b.old_rows), unnest(b.old_keys))
            WITH ORDINALITY AS x(row, key, ord)
        CROSS JOIN LATERAL (SELECT x.row::jsonb AS data OFFSET 0) AS j
    ), pairs AS MATERIALIZED (
        -- Old and new rows pair on key AND account, as the trigger paired them: a row whose account
        -- changed has no partner, so it is deleted for the old account and created for the new one.
        SELECT coalesce(n.change_id, o.change_id) AS change_id, coalesce(n.ord, o.ord) AS ord,
               CASE WHEN o.change_id IS NULL THEN 'created' WHEN n.change_id IS NULL THEN 'deleted'
                    ELSE 'updated' END AS op,
               coalesce(n.key, o.key) AS key, n.data AS new_data, o.data AS old_data
        FROM new_rows n FULL JOIN old_rows o ON o.change_id = n.change_id AND o.key = n.key AND o.owner = n.owner
    ), diff AS (
        SELECT x.change_id, x.ord, jsonb_object_agg(x.k, x.old_data -> x.k) AS previous,
               array_agg(x.k ORDER BY x.k) AS changed
        FROM (SELECT p.change_id, p.ord, p.old_data, p.new_data, jsonb_object_keys(p.old_data) AS k
              FROM pairs AS p WHERE p.op = 'updated' AND p.new_data <> p.old_data) AS x
        WHERE x.new_data -> x.k IS DISTINCT FROM x.old_data -> x.k
        GROUP BY x.change_id, x.ord
    )
    INSERT INTO rowhook.outbox (txid, occurred_at, resource, op, account, key, scope, data, previous, changed)
    SELECT b.txid, b.occurred_at, b.resource, p.op,
           coalesce(p.new_data, p.old_data) ->> b.account_column, p.key,
           CASE cardinality(b.scope_columns)
                WHEN 0 THEN '{}'::jsonb
                WHEN 1 THEN jsonb_build_object(
                    b.scope_columns[1],
                    coalesce(coalesce(p.new_data, p.old_data) -> b.scope_columns[1], 'null'))
                ELSE rowhook.scope_of(coalesce(p.new_data, p.old_data), b.scope_columns) END,
           coalesce(p.new_data, p.old_data), d.previous, d.changed
    FROM pairs p
    JOIN batch b ON b.id = p.change_id
    LEFT JOIN diff d ON d.change_id = p.change_id AND d.ord = p.ord AND p.op = 'updated'
    -- An UPDATE that changed no captured column is no event.
    WHERE p.op <> 'updated' OR d.change_id IS NOT NULL
    ORDER BY p.change_id, p.ord, p.op = 'created';
    GET DIAGNOSTICS written = ROW_COUNT;
    DELETE FROM rowhook.changes WHERE id = ANY (taken);
    -- Event ids are given here, and webhook-ids derive from them: a commit lost in a crash (relays
    -- commit with synchronous_commit off) would expand the same changes again under other ids after
    -- their deliveries were sent. So a transaction that gave ids waits for its WAL to be flushed.
    IF written > 0 THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    RETURN written;
END
$$;

-- Ids as before, by an expression that the planner can inline: concat_ws is only stable (it takes
-- any type), so an immutable function over it was called once per delivery (about 1.2 µs each). Each
-- non-null part is put after a '/' and the first '/' dropped, as concat_ws('/', ...) joins them.
CREATE OR REPLACE FUNCTION rowhook.delivery_id(event_id bigint, subscription_id text,
                                               replay_id text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'msg_' || md5(substr(coalesce('/' || event_id::text, '') || coalesce('/' || subscription_id, '')
                                || coalesce('/' || replay_id, ''), 2))
$$;

-- The allow-list case of visible_data, apart: a subquery in visible_data kept the planner from inlining
-- it, and every body the relay built called it twice (data, previous: about 3.6 µs each).
CREATE FUNCTION rowhook.only_columns(data jsonb, columns text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(kv.key, kv.value), '{}')
    FROM jsonb_each(data) AS kv WHERE kv.key = ANY (columns)
$$;

-- As in 0004, now inlined where its arguments are plain columns (the relay's bodies).
CREATE OR REPLACE FUNCTION rowhook.visible_data(r rowhook.resources, data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN data IS NULL THEN NULL
        -- ?| only tests for the keys: most rows hold none of them, and need no copy.
        WHEN r.columns IS NULL THEN CASE WHEN data ?| r.exclude_columns THEN data - r.exclude_columns ELSE data END
        ELSE rowhook.only_columns(data, r.columns)
    END
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (16, 'pg_cost_per_delivery');
