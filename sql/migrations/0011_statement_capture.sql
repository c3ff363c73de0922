-- rowhook 0011: capture that costs the application's transaction one small row per statement.
-- The capture triggers wrote one outbox row per changed row, each with its jsonb (built in the trigger),
-- a heap tuple and three index entries: about as much work as the application's own row (bulk INSERT
-- 2.9x bare time, bulk UPDATE 3.0x; docs/benchmarks.md). They now write one rowhook.changes row per
-- statement (per 1,000 rows of it): the rows as one json array (text, no parsing or key sorting), their
-- keys as text[], and only a primary key to maintain. The relay expands changes into outbox events
-- (rowhook.expand_changes) just before it fans them out, in the order they were captured, and builds
-- there what the trigger used to build: jsonb data, the scope, the pairing and diff of updated rows.
-- What is captured, event ids (one per row, in capture order per key) and every guarantee stay as they
-- were; outbox rows written before this migration are fanned out as before.

CREATE TABLE rowhook.changes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    resource       text NOT NULL,
    statement      text NOT NULL CHECK (statement IN ('INSERT', 'UPDATE', 'DELETE')),
    -- The roles of columns as they were named at capture: a rename before expansion changes nothing.
    account_column text,
    scope_columns  text[] NOT NULL,
    row_count      integer NOT NULL,
    old_keys       text[],
    old_rows       json,  -- json, not jsonb: the trigger only writes it; the relay parses it once
    new_keys       text[],
    new_rows       json
);
-- lz4 where the server has it (PostgreSQL 14+ built --with-lz4): a chunk of rows is one large json
-- value, and compressing it with pglz cost about as much as building it (bulk INSERT 1.87x -> 1.64x
-- bare time, UPDATE of 2 kB rows 8.0x -> 5.3x, in backend CPU; docs/benchmarks.md).
DO $$
BEGIN
    ALTER TABLE rowhook.changes ALTER COLUMN old_rows SET COMPRESSION lz4,
                                ALTER COLUMN new_rows SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'rowhook: this server has no lz4; captured rows are compressed with pglz';
END
$$;
-- A queue: every row is deleted within moments of its commit, so vacuum it early and often.
ALTER TABLE rowhook.changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                                 autovacuum_vacuum_insert_threshold = 1000);

-- Row data as the capture trigger stores it: the whole row when nothing is excluded (a record turns
-- into json without a function call per column, and columns added or dropped later never break the
-- application's writes); otherwise the same jsonb expressions as before, so that an excluded column
-- is never written into rowhook's tables at all.
CREATE FUNCTION rowhook.captured_row_expression(alias text, r rowhook.resources) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN r.columns IS NOT NULL THEN rowhook.allowed_data_expression(alias, r.columns)
        WHEN cardinality(r.exclude_columns) > 0 THEN rowhook.data_expression(alias, r.exclude_columns)
        ELSE alias
    END
$$;

-- A transition table's rows as changes rows of at most 1,000 rows each: keys and rows aggregated in
-- the same pass, so position i of the keys is the key of row i. Chunks bound the size of one json
-- value (at most 1 GB) and the work of one expansion. The first chunk is a plain aggregate over a
-- LIMIT, the cheapest plan for the common single-row statement; only a statement of more than 1,000
-- rows runs the numbered chunks of the rest. (The trigger learns the count from the head query itself,
-- not from RETURNING, which would need SELECT on rowhook.changes: the application's role needs INSERT.)
CREATE FUNCTION rowhook.capture_chunk_size() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

CREATE FUNCTION rowhook.capture_head(transition text, r rowhook.resources) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('SELECT count(*) AS row_count, array_agg(c.k) AS keys, json_agg(c.v) AS rows'
                  ' FROM (SELECT %s AS k, %s AS v FROM %I AS rowhook_transition LIMIT %s) AS c',
                  rowhook.key_expression('rowhook_transition', r.key_columns),
                  rowhook.captured_row_expression('rowhook_transition', r), transition,
                  rowhook.capture_chunk_size())
$$;

CREATE FUNCTION rowhook.capture_rest(transition text, r rowhook.resources) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('SELECT c.chunk, count(*) AS row_count, array_agg(c.k) AS keys, json_agg(c.v) AS rows'
                  ' FROM (SELECT (row_number() OVER () - 1) / %4$s AS chunk, %1$s AS k, %2$s AS v'
                  ' FROM %3$I AS rowhook_transition OFFSET %4$s) AS c'
                  ' GROUP BY c.chunk',
                  rowhook.key_expression('rowhook_transition', r.key_columns),
                  rowhook.captured_row_expression('rowhook_transition', r), transition,
                  rowhook.capture_chunk_size())
$$;

CREATE OR REPLACE FUNCTION rowhook.capture_function_body(r rowhook.resources) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    columns text := 'INSERT INTO rowhook.changes (resource, statement, account_column, scope_columns, row_count, ';
BEGIN
    RETURN format($body$
DECLARE
    captured integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH n AS (%5$s), written AS (
            %1$s new_keys, new_rows)
            SELECT %2$L, 'INSERT', %3$L, %4$L, n.row_count, n.keys, n.rows FROM n WHERE n.row_count > 0
        )
        SELECT n.row_count INTO captured FROM n;
        IF captured = %9$s THEN
            %1$s new_keys, new_rows)
            SELECT %2$L, 'INSERT', %3$L, %4$L, n.row_count, n.keys, n.rows
            FROM (%7$s) AS n ORDER BY n.chunk;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        WITH o AS (%6$s), written AS (
            %1$s old_keys, old_rows)
            SELECT %2$L, 'DELETE', %3$L, %4$L, o.row_count, o.keys, o.rows FROM o WHERE o.row_count > 0
        )
        SELECT o.row_count INTO captured FROM o;
        IF captured = %9$s THEN
            %1$s old_keys, old_rows)
            SELECT %2$L, 'DELETE', %3$L, %4$L, o.row_count, o.keys, o.rows
            FROM (%8$s) AS o ORDER BY o.chunk;
        END IF;
    ELSE
        -- An UPDATE fills both transition tables row by row together, so chunk i of the old rows holds
        -- the previous versions of chunk i of the new ones: pairs meet in one changes row.
        WITH o AS (%6$s), n AS (%5$s), written AS (
            %1$s old_keys, old_rows, new_keys, new_rows)
            SELECT %2$L, 'UPDATE', %3$L, %4$L, greatest(o.row_count, n.row_count), o.keys, o.rows, n.keys, n.rows
            FROM o, n WHERE greatest(o.row_count, n.row_count) > 0
        )
        SELECT greatest(o.row_count, n.row_count) INTO captured FROM o, n;
        IF captured = %9$s THEN
            %1$s old_keys, old_rows, new_keys, new_rows)
            SELECT %2$L, 'UPDATE', %3$L, %4$L, greatest(o.row_count, n.row_count), o.keys, o.rows, n.keys, n.rows
            FROM (%8$s) AS o FULL JOIN (%7$s) AS n ON n.chunk = o.chunk
            ORDER BY coalesce(o.chunk, n.chunk);
        END IF;
    END IF;
    -- The sleep lock, tried as a plain expression: no query, so no planner or executor on this path.
    IF NOT pg_try_advisory_xact_lock_shared(%10$s, %11$s) THEN
        PERFORM pg_notify('rowhook', '');
    END IF;
    RETURN NULL;
END
$body$,
        columns, r.name, r.account_column, r.scope_columns,
        rowhook.capture_head('rowhook_new', r), rowhook.capture_head('rowhook_old', r),
        rowhook.capture_rest('rowhook_new', r), rowhook.capture_rest('rowhook_old', r),
        rowhook.capture_chunk_size(), (rowhook.sleep_lock_key())[1], (rowhook.sleep_lock_key())[2]);
END
$$;

-- The scope values of a row, as the trigger used to build them with jsonb_build_object.
CREATE FUNCTION rowhook.scope_of(data jsonb, scope_columns text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(c, coalesce(data -> c, 'null')), '{}') FROM unnest(scope_columns) AS c
$$;

CREATE FUNCTION rowhook.expand_lock_key() RETURNS integer[]
LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[1919907688, 2] $$;

-- Turns captured changes into outbox events, oldest first, and returns how many events it wrote.
-- With max_events, it does nothing while that many events already wait to be fanned out, and
-- otherwise expands changes until about that many events are written; without it, everything.
-- One expander at a time (a relay that finds the lock taken fans out what is there): outbox ids are
-- given here, and two changes of one row are always captured, and so expanded, in commit order. The
-- expanding transaction commits synchronously (see below). With wait, it waits for the lock instead:
-- the API's replay must see every change captured before its window ends.
CREATE FUNCTION rowhook.expand_changes(max_events integer DEFAULT NULL, wait boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
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
        SELECT b.id AS change_id, x.ord, b.new_keys[x.ord] AS key, j.data, coalesce(j.data ->> b.account_column, '') AS owner
        FROM batch b CROSS JOIN LATERAL json_array_elements(b.new_rows) WITH ORDINALITY AS x(row, ord)
        CROSS JOIN LATERAL (SELECT x.row::jsonb AS data) AS j
    ), old_rows AS (
        SELECT b.id AS change_id, x.ord, b.old_keys[x.ord] AS key, j.data, coalesce(j.data ->> b.account_column, '') AS owner
        FROM batch b CROSS JOIN LATERAL json_array_elements(b.old_rows) WITH ORDINALITY AS x(row, ord)
        CROSS JOIN LATERAL (SELECT x.row::jsonb AS data) AS j
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
           rowhook.scope_of(coalesce(p.new_data, p.old_data), b.scope_columns),
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

-- Capture changes already made but not yet expanded count as undispatched events.
CREATE FUNCTION rowhook.unexpanded_events() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT coalesce(sum(row_count), 0)::bigint FROM rowhook.changes $$;

DO $$
DECLARE
    r rowhook.resources;
BEGIN
    FOR r IN SELECT * FROM rowhook.resources x WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.table_oid) LOOP
        -- The triggers stay; only the function they call changes.
        EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',
                       rowhook.capture_function_name(r.name), rowhook.capture_function_body(r));
    END LOOP;
END
$$;

-- The capture triggers run with the application's privileges: every role that could write events
-- into the outbox (docs/dba.md, "Roles and privileges") may now write changes, or its writes would fail.
DO $$
DECLARE
    grantee oid;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) AS a
                   WHERE c.oid = 'rowhook.outbox'::regclass AND a.privilege_type = 'INSERT' LOOP
        EXECUTE format('GRANT INSERT ON rowhook.changes TO %s',
                       CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE quote_ident(grantee::regrole::text) END);
    END LOOP;
END
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (11, 'statement_capture');
