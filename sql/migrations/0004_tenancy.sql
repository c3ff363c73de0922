-- rowhook 0004: tenant safety. Account columns must be NOT NULL; a row moving to another account is
-- deleted for one and created for the other; capture follows ALTER TABLE (renames keep a column's role,
-- an allow-list alternative to exclusions); collision-free capture function names; fan-out that costs
-- one index probe per scope value (not per subset of them) and tells a row leaving a filter; paused
-- subscriptions hold their deliveries; delivery ids derived from (event, subscription).

-- Resources remember the attribute number of every column they name, so a column keeps its role
-- (key, account, scope, label, excluded, allowed) through ALTER TABLE ... RENAME COLUMN.
ALTER TABLE rowhook.resources
    ADD COLUMN columns text[],  -- allow-list: only these columns are captured; NULL: all but the excluded
    ADD COLUMN attnums jsonb NOT NULL DEFAULT '{}';  -- column name -> pg_attribute.attnum

-- Column names the resource names in any role.
CREATE FUNCTION rowhook.named_columns(r rowhook.resources) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY(SELECT DISTINCT c FROM unnest(r.key_columns || r.scope_columns || r.exclude_columns
                                               || coalesce(r.columns, '{}')
                                               || array_remove(ARRAY[r.account_column, r.label_column], NULL)) AS c
                 ORDER BY c)
$$;

-- Columns that travel outside the row data (key, account, scope, label), so they are always captured.
CREATE FUNCTION rowhook.exposed_columns(r rowhook.resources) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT r.key_columns || array_remove(ARRAY[r.account_column, r.label_column], NULL) || r.scope_columns
$$;

CREATE FUNCTION rowhook.column_attnums(tbl regclass, names text[]) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(attname, attnum), '{}')
    FROM pg_attribute WHERE attrelid = tbl AND attname = ANY (names) AND attnum > 0 AND NOT attisdropped
$$;

-- Row data as the resource may show it: the allowed columns, or all but the excluded ones. Applied by
-- the capture triggers, and again by the relay when it builds a body, so that a column excluded after
-- its events were captured (rename, longer exclusion list) does not leave the database either.
CREATE FUNCTION rowhook.visible_data(r rowhook.resources, data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN data IS NULL THEN NULL
        -- ?| only tests for the keys: most rows hold none of them, and need no copy.
        WHEN r.columns IS NULL THEN CASE WHEN data ?| r.exclude_columns THEN data - r.exclude_columns ELSE data END
        ELSE (SELECT coalesce(jsonb_object_agg(kv.key, kv.value), '{}')
              FROM jsonb_each(data) AS kv WHERE kv.key = ANY (r.columns))
    END
$$;

-- For the capture triggers: the allow-list built column by column (jsonb_build_object takes at most
-- 100 arguments, hence chunks of 50 pairs), so a column added later is never captured by accident.
CREATE FUNCTION rowhook.allowed_data_expression(alias text, columns text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(chunk, ' || '), '''{}''::jsonb')
    FROM (SELECT format('jsonb_build_object(%s)', string_agg(format('%L, %s.%I', c, alias, c), ', ' ORDER BY n)) AS chunk
          FROM unnest(columns) WITH ORDINALITY AS x(c, n)
          GROUP BY (n - 1) / 50 ORDER BY (n - 1) / 50) AS chunks
$$;

-- Scope values an updated row had before the change: the new ones overlaid with the previous values of
-- changed scope columns (scope columns are always captured, so `previous` holds them when they change).
CREATE FUNCTION rowhook.old_scope(scope jsonb, previous jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT scope || coalesce((SELECT jsonb_object_agg(kv.key, kv.value) FROM jsonb_each(previous) AS kv
                              WHERE scope ? kv.key), '{}')
$$;

-- Capture: the same statement-level function as in 0002, with these changes. Data honours the
-- allow-list. An UPDATE pairs old and new rows on key AND account: a row whose account changed has no
-- partner, so it becomes `deleted` for the old account and `created` for the new one, and none of its
-- values crosses accounts (not even in `previous`).
CREATE OR REPLACE FUNCTION rowhook.capture_function_body(r rowhook.resources) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    pair_columns text[] := r.key_columns || array_remove(ARRAY[r.account_column], NULL);
    key_join  text := (SELECT string_agg(format('o.%I = n.%I', c, c), ' AND ') FROM unnest(pair_columns) AS c);
    old_gone  text := format('o.%I IS NULL', r.key_columns[1]);  -- key columns are NOT NULL
    new_gone  text := format('n.%I IS NULL', r.key_columns[1]);
    columns   text := 'INSERT INTO rowhook.outbox (resource, op, account, key, scope, data, previous, changed) ';
    new_data  text := CASE WHEN r.columns IS NULL THEN rowhook.data_expression('n', r.exclude_columns)
                           ELSE rowhook.allowed_data_expression('n', r.columns) END;
    old_data  text := CASE WHEN r.columns IS NULL THEN rowhook.data_expression('o', r.exclude_columns)
                           ELSE rowhook.allowed_data_expression('o', r.columns) END;
BEGIN
    RETURN format($body$
BEGIN
    IF TG_OP = 'INSERT' THEN
        %1$s SELECT %2$L, 'created', %3$s, %4$s, %5$s, %6$s, NULL, NULL
        FROM rowhook_new AS n;
    ELSIF TG_OP = 'DELETE' THEN
        %1$s SELECT %2$L, 'deleted', %7$s, %8$s, %9$s, %10$s, NULL, NULL
        FROM rowhook_old AS o;
    ELSE
        WITH pairs AS MATERIALIZED (
            SELECT row_number() OVER () AS ord,
                CASE WHEN %11$s THEN 'created' WHEN %12$s THEN 'deleted' ELSE 'updated' END AS op,
                CASE WHEN %12$s THEN %7$s ELSE %3$s END AS account,
                CASE WHEN %12$s THEN %8$s ELSE %4$s END AS key,
                CASE WHEN %12$s THEN %9$s ELSE %5$s END AS scope,
                CASE WHEN NOT %12$s THEN %6$s END AS new_data,
                CASE WHEN NOT %11$s THEN %10$s END AS old_data
            FROM rowhook_old AS o FULL JOIN rowhook_new AS n ON %13$s
        ), diff AS (
            SELECT x.ord, jsonb_object_agg(x.k, x.old_data -> x.k) AS previous,
                   array_agg(x.k ORDER BY x.k) AS changed
            FROM (SELECT p.ord, p.old_data, p.new_data, jsonb_object_keys(p.old_data) AS k
                  FROM pairs AS p WHERE p.op = 'updated' AND p.new_data <> p.old_data) AS x
            WHERE x.new_data -> x.k IS DISTINCT FROM x.old_data -> x.k
            GROUP BY x.ord
        )
        %1$s SELECT %2$L, p.op, p.account, p.key, p.scope, coalesce(p.new_data, p.old_data), d.previous, d.changed
        FROM pairs AS p LEFT JOIN diff AS d ON d.ord = p.ord
        WHERE p.op <> 'updated' OR d.ord IS NOT NULL
        ORDER BY p.ord;
    END IF;
    -- The sleep lock, tried as a plain expression: no query, so no planner or executor on this path.
    IF NOT pg_try_advisory_xact_lock_shared(%14$s, %15$s) THEN
        PERFORM pg_notify('rowhook', '');
    END IF;
    RETURN NULL;
END
$body$,
        columns, r.name,
        rowhook.account_expression('n', r.account_column), rowhook.key_expression('n', r.key_columns),
        rowhook.scope_expression('n', r.scope_columns), new_data,
        rowhook.account_expression('o', r.account_column), rowhook.key_expression('o', r.key_columns),
        rowhook.scope_expression('o', r.scope_columns), old_data,
        old_gone, new_gone, key_join, (rowhook.sleep_lock_key())[1], (rowhook.sleep_lock_key())[2]);
END
$$;

-- Function names are at most 63 bytes: 'capture_' || a long resource name was truncated, so two
-- resources could share one function. The md5 of the name makes the name unique; its head keeps it
-- readable in \df.
CREATE FUNCTION rowhook.capture_function_name_0002(resource text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT format('rowhook.%I', 'capture_' || resource) $$;

CREATE OR REPLACE FUNCTION rowhook.capture_function_name(resource text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('rowhook.%I', 'capture_' || left(resource, 22) || '_' || md5(resource))
$$;

CREATE FUNCTION rowhook.drop_triggers(tbl regclass, function_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS rowhook_capture_insert ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS rowhook_capture_update ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS rowhook_capture_delete ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS rowhook_refuse_truncate ON %s', tbl);
    EXECUTE format('DROP FUNCTION IF EXISTS %s()', function_name);
END
$$;

-- A resource's account column must hold a tenant for every row: NULL would be nobody's, and so risk
-- being everybody's.
CREATE FUNCTION rowhook.check_account_column(tbl regclass, account_column text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF account_column IS NOT NULL AND NOT (SELECT attnotnull FROM pg_attribute
                                           WHERE attrelid = tbl AND attname = account_column) THEN
        RAISE EXCEPTION 'rowhook: account column "%" of table % allows NULL: a row without an account would belong to no tenant',
            account_column, tbl
            USING ERRCODE = 'not_null_violation',
                  HINT = format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', tbl, account_column);
    END IF;
END
$$;

-- After ALTER TABLE on a watched table: follow renamed columns into every role, refuse changes that
-- would break capture or tenancy (dropping a key/account/scope/label column, a nullable account column),
-- and regenerate the capture function. Called by the event trigger below, and by hand where it could
-- not be installed.
CREATE FUNCTION rowhook.refresh(tbl regclass) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r rowhook.resources;
    renamed jsonb;
    gone text[];
BEGIN
    SELECT * INTO r FROM rowhook.resources WHERE table_oid = tbl FOR UPDATE;
    IF r.name IS NULL THEN
        RAISE EXCEPTION 'rowhook.refresh: table % is not watched', tbl USING ERRCODE = 'undefined_object';
    END IF;
    SELECT coalesce(jsonb_object_agg(k.key, a.attname) FILTER (WHERE a.attname <> k.key), '{}'),
           array_agg(k.key) FILTER (WHERE a.attname IS NULL)
    INTO renamed, gone
    FROM jsonb_each_text(r.attnums) AS k
    LEFT JOIN pg_attribute a ON a.attrelid = tbl AND a.attnum = k.value::smallint AND NOT a.attisdropped;
    IF gone && rowhook.exposed_columns(r) THEN
        RAISE EXCEPTION 'rowhook: column(s) % of table % are its key, account, scope or label columns',
            ARRAY(SELECT unnest(gone) INTERSECT SELECT unnest(rowhook.exposed_columns(r))), tbl
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Run rowhook.unwatch() on the table first, then watch it again with other columns.';
    END IF;
    IF renamed <> '{}' THEN
        r.key_columns := rowhook.rename_all(r.key_columns, renamed);
        r.scope_columns := rowhook.rename_all(r.scope_columns, renamed);
        r.columns := rowhook.rename_all(r.columns, renamed);
        r.account_column := coalesce(renamed ->> r.account_column, r.account_column);
        r.label_column := coalesce(renamed ->> r.label_column, r.label_column);
        -- An excluded column keeps its old name excluded too: events captured before the rename carry
        -- nothing under it, and a new column reusing the name stays hidden until the DBA decides.
        r.exclude_columns := ARRAY(SELECT DISTINCT c FROM unnest(r.exclude_columns
                                   || rowhook.rename_all(r.exclude_columns, renamed)) AS c ORDER BY c);
    END IF;
    PERFORM rowhook.check_account_column(tbl, r.account_column);
    r.attnums := rowhook.column_attnums(tbl, rowhook.named_columns(r));
    UPDATE rowhook.resources x
    SET key_columns = r.key_columns, scope_columns = r.scope_columns, columns = r.columns,
        account_column = r.account_column, label_column = r.label_column,
        exclude_columns = r.exclude_columns, attnums = r.attnums
    WHERE x.name = r.name;
    EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',
                   rowhook.capture_function_name(r.name), rowhook.capture_function_body(r));
    RETURN r.name;
END
$$;

CREATE FUNCTION rowhook.rename_all(names text[], renamed jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN names IS NULL THEN NULL ELSE
        ARRAY(SELECT coalesce(renamed ->> c, c) FROM unnest(names) WITH ORDINALITY AS x(c, n) ORDER BY n) END
$$;

-- SECURITY DEFINER: the role running the application's ALTER TABLE need not own rowhook's objects.
CREATE FUNCTION rowhook.on_alter_table() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl regclass;
BEGIN
    FOR tbl IN
        SELECT DISTINCT r.table_oid
        FROM pg_event_trigger_ddl_commands() AS c
        JOIN rowhook.resources r ON r.table_oid = c.objid
        WHERE c.classid = 'pg_class'::regclass
    LOOP
        PERFORM rowhook.refresh(tbl);
    END LOOP;
END
$$;

-- Only superusers may create event triggers. Without one, a DBA runs SELECT rowhook.refresh('table')
-- after ALTER TABLE; the relay still drops currently excluded columns from every body it sends.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER rowhook_follow_alter_table ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION rowhook.on_alter_table();
    ELSE
        RAISE WARNING 'rowhook: not a superuser, so no event trigger follows ALTER TABLE on watched tables'
            USING HINT = 'After ALTER TABLE on a watched table run SELECT rowhook.refresh(''table''), or install as a superuser.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION rowhook.install_triggers(r rowhook.resources) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    fn text := rowhook.capture_function_name(r.name);
BEGIN
    EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',
                   fn, rowhook.capture_function_body(r));
    -- Transition tables require one trigger per operation.
    EXECUTE format('CREATE TRIGGER rowhook_capture_insert AFTER INSERT ON %s
                    REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                   r.table_oid, fn);
    EXECUTE format('CREATE TRIGGER rowhook_capture_update AFTER UPDATE ON %s
                    REFERENCING OLD TABLE AS rowhook_old NEW TABLE AS rowhook_new
                    FOR EACH STATEMENT EXECUTE FUNCTION %s()', r.table_oid, fn);
    EXECUTE format('CREATE TRIGGER rowhook_capture_delete AFTER DELETE ON %s
                    REFERENCING OLD TABLE AS rowhook_old FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                   r.table_oid, fn);
    EXECUTE format('CREATE TRIGGER rowhook_refuse_truncate BEFORE TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION rowhook.refuse_truncate()', r.table_oid);
END
$$;

DROP FUNCTION rowhook.watch(regclass, text, text, text[], text[], text, boolean);

CREATE FUNCTION rowhook.watch(
    tbl regclass,
    resource text DEFAULT NULL,
    account_column text DEFAULT NULL,
    scope_columns text[] DEFAULT '{}',
    exclude_columns text[] DEFAULT '{}',
    label_column text DEFAULT NULL,
    public boolean DEFAULT false,
    columns text[] DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r rowhook.resources;
    key_columns text[] := rowhook.primary_key_columns(tbl);
    exposed text[];
BEGIN
    resource := coalesce(resource, (SELECT relname::text FROM pg_class WHERE oid = tbl));
    scope_columns := coalesce(scope_columns, '{}');
    exclude_columns := coalesce(exclude_columns, '{}');
    IF resource !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'rowhook.watch: resource name "%" is not valid', resource
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use lower-case letters, digits and underscores, starting with a letter (pass resource => ''name'').';
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = tbl) <> 'r' THEN
        RAISE EXCEPTION 'rowhook.watch: % is not a plain table', tbl
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF EXISTS (SELECT 1 FROM rowhook.resources WHERE table_oid = tbl) THEN
        RAISE EXCEPTION 'rowhook.watch: table % is already watched as resource "%"', tbl,
            (SELECT name FROM rowhook.resources WHERE table_oid = tbl)
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Run rowhook.unwatch() on it first to change its options; subscriptions are kept.';
    END IF;
    IF EXISTS (SELECT 1 FROM rowhook.resources WHERE name = resource) THEN
        RAISE EXCEPTION 'rowhook.watch: resource name "%" is already used by table %', resource,
            (SELECT table_oid FROM rowhook.resources WHERE name = resource)
            USING ERRCODE = 'duplicate_object', HINT = 'Pass another name with resource => ''...''.';
    END IF;
    IF key_columns IS NULL THEN
        RAISE EXCEPTION 'rowhook.watch: table % has no primary key', tbl
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Events identify rows by primary key; add one with ALTER TABLE ... ADD PRIMARY KEY.';
    END IF;
    IF account_column IS NULL AND NOT public THEN
        RAISE EXCEPTION 'rowhook.watch: table % needs account_column, or public => true', tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'account_column names the column holding the tenant; public resources go to every account.';
    END IF;
    IF account_column IS NOT NULL AND public THEN
        RAISE EXCEPTION 'rowhook.watch: table % cannot have both account_column and public => true', tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF columns IS NOT NULL AND cardinality(exclude_columns) > 0 THEN
        RAISE EXCEPTION 'rowhook.watch: pass either columns (an allow-list) or exclude_columns, not both'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With columns => ''{...}'' every other column is left out already.';
    END IF;
    PERFORM rowhook.check_columns(tbl, 'account', array_remove(ARRAY[account_column], NULL));
    PERFORM rowhook.check_columns(tbl, 'scope', scope_columns);
    PERFORM rowhook.check_columns(tbl, 'exclude', exclude_columns);
    PERFORM rowhook.check_columns(tbl, 'label', array_remove(ARRAY[label_column], NULL));
    PERFORM rowhook.check_columns(tbl, 'allowed', coalesce(columns, '{}'));
    PERFORM rowhook.check_account_column(tbl, account_column);
    -- Key, account, scope and label values travel outside the row data, so they cannot be excluded,
    -- and an allow-list always includes them.
    exposed := key_columns || array_remove(ARRAY[account_column, label_column], NULL) || scope_columns;
    IF exclude_columns && exposed THEN
        RAISE EXCEPTION 'rowhook.watch: column(s) % cannot be excluded: they are key, account, scope or label columns',
            ARRAY(SELECT unnest(exclude_columns) INTERSECT SELECT unnest(exposed))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF columns IS NOT NULL THEN
        columns := ARRAY(SELECT c FROM unnest(rowhook.table_columns(tbl)) WITH ORDINALITY AS t(c, n)
                         WHERE c = ANY (columns || exposed) ORDER BY n);
    END IF;

    INSERT INTO rowhook.resources AS x (name, table_oid, key_columns, account_column, scope_columns,
                                        exclude_columns, label_column, public, columns)
    VALUES (resource, tbl, key_columns, account_column, scope_columns, exclude_columns, label_column,
            public, columns)
    RETURNING x.* INTO r;
    r.attnums := rowhook.column_attnums(tbl, rowhook.named_columns(r));
    UPDATE rowhook.resources x SET attnums = r.attnums WHERE x.name = r.name;
    PERFORM rowhook.install_triggers(r);
    RETURN resource;
END
$$;

CREATE OR REPLACE FUNCTION rowhook.unwatch(tbl regclass) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    resource text;
BEGIN
    DELETE FROM rowhook.resources WHERE table_oid = tbl RETURNING name INTO resource;
    IF resource IS NULL THEN
        RAISE EXCEPTION 'rowhook.unwatch: table % is not watched', tbl USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM rowhook.drop_triggers(tbl, rowhook.capture_function_name(resource));
    RETURN resource;
END
$$;

-- Existing resources: new function names, attribute numbers, and capture by key and account. A
-- resource whose account column allows NULL is still upgraded (refusing would stop the app's writes
-- being captured at all); fan-out and replay never send its account-less events, and the warning says
-- how to fix the table.
DO $$
DECLARE
    r rowhook.resources;
BEGIN
    FOR r IN SELECT * FROM rowhook.resources x WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.table_oid) LOOP
        PERFORM rowhook.drop_triggers(r.table_oid, rowhook.capture_function_name_0002(r.name));
        r.attnums := rowhook.column_attnums(r.table_oid, rowhook.named_columns(r));
        UPDATE rowhook.resources x SET attnums = r.attnums WHERE x.name = r.name;
        PERFORM rowhook.install_triggers(r);
        IF r.account_column IS NOT NULL AND NOT (SELECT attnotnull FROM pg_attribute
                WHERE attrelid = r.table_oid AND attname = r.account_column) THEN
            RAISE WARNING 'rowhook: account column "%" of table % allows NULL; rows without an account are not delivered',
                r.account_column, r.table_oid
                USING HINT = format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', r.table_oid, r.account_column);
        END IF;
    END LOOP;
END
$$;
DROP FUNCTION rowhook.capture_function_name_0002(text);

-- Fan-out by filter anchor. A filter matches an event when the event's scope values contain it. The
-- anchor is one of the filter's key-value pairs (the first key), so an event finds every candidate
-- subscription with one index probe per scope value plus one for empty filters: linear in the number
-- of scope columns, where 0001 probed every subset of them (2^n).
CREATE FUNCTION rowhook.filter_anchor(filter jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT jsonb_build_object(kv.key, kv.value) FROM jsonb_each(filter) AS kv
                     ORDER BY kv.key LIMIT 1), '{}')
$$;

ALTER TABLE rowhook.subscriptions
    ADD COLUMN filter_anchor jsonb GENERATED ALWAYS AS (rowhook.filter_anchor(filter)) STORED;
DROP INDEX rowhook.subscriptions_fanout;
-- Paused subscriptions are fanned out too: their deliveries are held until they resume. INCLUDE lets
-- fan-out check candidates from the index alone (subscriptions change rarely, so their pages are
-- all-visible): heap reads were what grew with many other subscriptions present. The API bounds filters
-- so that an entry stays far below btree's limit (~2.7 kB).
CREATE INDEX subscriptions_fanout ON rowhook.subscriptions (resource, filter_anchor, account)
    INCLUDE (id, events, filter, status)
    WHERE status IN ('active', 'paused') AND deleted_at IS NULL;

-- 'held': a delivery of a paused subscription, kept unsent until the subscription resumes.
ALTER TABLE rowhook.deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE rowhook.deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'cancelled', 'held'));
DROP INDEX rowhook.deliveries_ordering;
CREATE INDEX deliveries_ordering ON rowhook.deliveries (subscription_id, key, event_id)
    WHERE status IN ('pending', 'delivering', 'held');
CREATE INDEX deliveries_held ON rowhook.deliveries (subscription_id, next_attempt_at) WHERE status = 'held';

-- Pending deliveries of subscriptions paused before this version are held from now on.
UPDATE rowhook.deliveries d SET status = 'held'
FROM rowhook.subscriptions s
WHERE s.id = d.subscription_id AND s.status = 'paused' AND d.status = 'pending';

-- A delivery's id is derived from what it delivers, so a fan-out redone after a database crash (the
-- relay commits without waiting for the WAL flush) gives the receiver the same webhook-id again.
-- A replay has an id of its own: replayed events are new messages to the receiver.
CREATE FUNCTION rowhook.delivery_id(event_id bigint, subscription_id text, replay_id text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'msg_' || md5(concat_ws('/', event_id::text, subscription_id, replay_id))
$$;

CREATE FUNCTION rowhook.held_deliveries(subscription_id text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM rowhook.deliveries d
    WHERE d.subscription_id = held_deliveries.subscription_id AND d.status = 'held'
$$;

INSERT INTO rowhook.migrations (version, name) VALUES (4, 'tenancy');
