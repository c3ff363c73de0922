-- rowhook 0013: an UPDATE's change carries of each old row only what the expander reads from it.
-- The capture trigger stored every old row whole beside its new version, so an UPDATE of one flag of a
-- table with a 2 kB text column serialised that text twice (bulk UPDATE 5.2-6.4x bare time; docs/
-- benchmarks.md). The expander reads of an old row only its key and account (to pair it with its new
-- version) and the old values of the columns that changed (`previous`, `changed`); an old row left
-- unpaired (its key or account changed) becomes a `deleted` event, and needs all of itself. The trigger
-- now pairs old and new rows itself, by position (an UPDATE fills both transition tables row by row
-- together; 0011 already relies on it for its chunks), and stores of a paired old row its key, account
-- and scope columns and every column whose value is not the same bytes as in the new row; an unpaired
-- old row stays whole. Events are what they were: the expander builds them from the same values.
-- The first 100 rows of an UPDATE are still captured as 0011 did (pairing costs a small statement more
-- than it saves). The pairing statement names the table's columns: it runs only while the table has the
-- columns it was generated for (one catalog query per UPDATE of more than 100 rows compares them), else
-- the rest of the UPDATE is captured as 0011 did, whole old rows, until the function is regenerated (the
-- event trigger that follows ALTER TABLE, or rowhook.refresh by hand): DDL never breaks the application's
-- writes. A primary key that is DEFERRABLE (two rows of one key within a statement) keeps 0011's capture.

-- Whether two values of one column are the same bytes, so that their JSON is the same: `=` for types
-- whose equality is byte equality, else the binary image comparison of records (numeric 1.0 = 1.00,
-- float -0 = 0 and case-insensitive text compare equal, yet print differently).
CREATE FUNCTION rowhook.same_value_expression(a text, b text, type_oid oid, collation_oid oid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN type_oid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'bool'::regtype, 'uuid'::regtype,
                          'date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype, 'bytea'::regtype,
                          'oid'::regtype)
             OR (type_oid IN ('text'::regtype, 'varchar'::regtype)
                 AND coalesce((SELECT c.collisdeterministic FROM pg_collation c WHERE c.oid = collation_oid), true))
        THEN format('%s IS NOT DISTINCT FROM %s', a, b)
        ELSE format('record_image_eq(ROW(%s), ROW(%s))', a, b)
    END
$$;

-- The columns captured in rows of the resource, in table order, with their type and collation.
CREATE FUNCTION rowhook.captured_columns(r rowhook.resources)
RETURNS TABLE (name text, type_oid oid, collation_oid oid)
LANGUAGE sql STABLE AS $$
    SELECT a.attname::text, a.atttypid, a.attcollation
    FROM pg_attribute a
    WHERE a.attrelid = r.table_oid AND a.attnum > 0 AND NOT a.attisdropped
      AND (r.columns IS NULL OR a.attname = ANY (r.columns))
      AND NOT (a.attname = ANY (r.exclude_columns))
    ORDER BY a.attnum
$$;

-- Whether UPDATE may store old rows without their unchanged columns: not where the primary key is
-- DEFERRABLE (a statement may leave two rows with one key, and the expander pairs by key), nor where a
-- column bears one of the names the pairing query gives its own columns.
CREATE FUNCTION rowhook.diffs_old_rows(r rowhook.resources) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = r.table_oid AND contype = 'p' AND condeferrable)
       AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = r.table_oid AND NOT attisdropped
                       AND attname IN ('rowhook row', 'rowhook n', 'rowhook chunk'))
$$;

-- The table's columns as the capture function was generated for them (name, type, collation). The
-- function compares them with the table's at each UPDATE: a function generated for other columns (DDL
-- where no event trigger regenerates it, or before a refresh by hand) must not name a column that is
-- gone, nor miss one that was added; it then captures as 0011 did, whole old rows.
CREATE FUNCTION rowhook.column_signature_query(tbl oid) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('SELECT array_agg(a.attname::text || '' '' || a.atttypid::text || '' '' || a.attcollation::text'
                  ' ORDER BY a.attnum) FROM pg_catalog.pg_attribute AS a'
                  ' WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped', tbl)
$$;

-- A row of the pairing subquery (columns alias.*, whole row alias."rowhook row") as
-- captured_row_expression gives it from a transition table.
CREATE FUNCTION rowhook.update_row_expression(alias text, r rowhook.resources) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN r.columns IS NOT NULL THEN rowhook.allowed_data_expression(alias, r.columns)
        WHEN cardinality(r.exclude_columns) > 0
            THEN rowhook.data_expression(format('%s."rowhook row"', alias), r.exclude_columns)
        ELSE format('%s."rowhook row"', alias)
    END
$$;

-- The old row (columns o.*, whole row o."rowhook row") as stored for an UPDATE whose new row is n:
-- whole when its key or account changed, else its key, account and scope columns and the columns whose
-- value changed, each as the same JSON the whole row would give it (json for a row taken whole, jsonb
-- with exclusions or an allow-list). Columns are read from the subquery's own columns: a field of the
-- whole-row value of a transition table reads NULL for columns after a dropped one (PostgreSQL 15).
CREATE FUNCTION rowhook.old_row_expression(r rowhook.resources) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    whole boolean := r.columns IS NULL AND cardinality(r.exclude_columns) = 0;
    always text[] := r.key_columns || r.scope_columns || array_remove(ARRAY[r.account_column], NULL);
    unpaired text := format('%s IS DISTINCT FROM %s', rowhook.key_expression('o', r.key_columns),
                            rowhook.key_expression('n', r.key_columns));
    member_list text;
BEGIN
    IF r.account_column IS NOT NULL THEN
        unpaired := unpaired || ' OR NOT (' || (SELECT rowhook.same_value_expression(
                        format('o.%I', c.name), format('n.%I', c.name), c.type_oid, c.collation_oid)
                    FROM rowhook.captured_columns(r) AS c WHERE c.name = r.account_column) || ')';
    END IF;
    -- concat_ws skips NULLs: an unchanged column is a NULL member (a NULL value is JSON null). At most 100 arguments a call, so
    -- members go in groups of 90 (an empty group gives '' and is dropped as NULL).
    SELECT string_agg(format('nullif(concat_ws('','', %s), '''')', g.members), ', ' ORDER BY g.grp)
    INTO member_list
    FROM (SELECT (x.pos - 1) / 90 AS grp,
                 string_agg(CASE WHEN x.name = ANY (always)
                                 THEN format('%L || coalesce(%s(o.%I)::text, ''null'')', to_json(x.name)::text || ':',
                                             CASE WHEN whole THEN 'to_json' ELSE 'to_jsonb' END, x.name)
                                 ELSE format('CASE WHEN NOT (%s) THEN %L || coalesce(%s(o.%I)::text, ''null'') END',
                                             rowhook.same_value_expression(format('o.%I', x.name),
                                                 format('n.%I', x.name), x.type_oid, x.collation_oid),
                                             to_json(x.name)::text || ':',
                                             CASE WHEN whole THEN 'to_json' ELSE 'to_jsonb' END, x.name)
                            END, ', ' ORDER BY x.pos) AS members
          FROM (SELECT c.*, row_number() OVER () AS pos FROM rowhook.captured_columns(r) AS c) AS x
          GROUP BY (x.pos - 1) / 90) AS g;
    RETURN format('CASE WHEN %s THEN %s ELSE (''{'' || concat_ws('','', %s) || ''}'')::%s END',
                  unpaired,
                  CASE WHEN whole THEN 'row_to_json(o."rowhook row")' ELSE rowhook.update_row_expression('o', r) END,
                  coalesce(member_list, 'NULL'),
                  CASE WHEN whole THEN 'json' ELSE 'jsonb' END);
END
$$;

-- The first rows of an UPDATE are captured as 0011 captured them, whole old rows: pairing costs more per
-- statement than it saves on a few rows (a single-row UPDATE's trigger took 108 us instead of 69 us of
-- backend CPU on PostgreSQL 15, 145 instead of 81 on the wide table; docs/benchmarks.md).
CREATE FUNCTION rowhook.capture_update_head_size() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 100 $$;

CREATE FUNCTION rowhook.capture_update_head(transition text, r rowhook.resources) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('SELECT count(*) AS row_count, array_agg(c.k) AS keys, json_agg(c.v) AS rows'
                  ' FROM (SELECT %s AS k, %s AS v FROM %I AS rowhook_transition LIMIT %s) AS c',
                  rowhook.key_expression('rowhook_transition', r.key_columns),
                  rowhook.captured_row_expression('rowhook_transition', r), transition,
                  rowhook.capture_update_head_size())
$$;

-- The rest of the UPDATE, whole old rows, where the table no longer has the columns the function was
-- generated for.
CREATE FUNCTION rowhook.capture_update_rest(transition text, r rowhook.resources) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('SELECT c.chunk, count(*) AS row_count, array_agg(c.k) AS keys, json_agg(c.v) AS rows'
                  ' FROM (SELECT (row_number() OVER () - 1) / %4$s AS chunk, %1$s AS k, %2$s AS v'
                  ' FROM %3$I AS rowhook_transition OFFSET %5$s) AS c'
                  ' GROUP BY c.chunk',
                  rowhook.key_expression('rowhook_transition', r.key_columns),
                  rowhook.captured_row_expression('rowhook_transition', r), transition,
                  rowhook.capture_chunk_size(), rowhook.capture_update_head_size())
$$;

-- Old and new rows of an UPDATE after the first capture_update_head_size() (which are captured as 0011
-- captured them), paired by position, as changes rows of at most 1,000 pairs each, in the
-- order of the new rows (keys and rows of one changes row are aggregated in one pass: position i of each
-- is pair i). They join on chunk and row number: the planner, which knows nothing of row numbers, then
-- expects 2,500 pairs, not 500,000 (on row number alone it did, and a server with JIT compiled the plan:
-- 50 ms), and the merge join returns them in the order the grouping needs (sorting the pairs again
-- cost about as much as the rest of the capture; hashing them instead held all chunks' JSON at once).
CREATE FUNCTION rowhook.capture_update(r rowhook.resources) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('SELECT c.chunk, count(*) AS row_count, array_agg(c.ok) AS old_keys, json_agg(c.ov) AS old_rows,'
                  ' array_agg(c.nk) AS new_keys, json_agg(c.nv) AS new_rows'
                  ' FROM (SELECT n."rowhook chunk" AS chunk, %1$s AS ok, %2$s AS ov, %3$s AS nk, %4$s AS nv'
                  '  FROM (SELECT (row_number() OVER () - 1 - %6$s) / %5$s AS "rowhook chunk", row_number() OVER () AS "rowhook n",'
                  '        t AS "rowhook row", t.* FROM rowhook_old AS t) AS o'
                  '  JOIN (SELECT (row_number() OVER () - 1 - %6$s) / %5$s AS "rowhook chunk", row_number() OVER () AS "rowhook n",'
                  '        t AS "rowhook row", t.* FROM rowhook_new AS t) AS n'
                  '  ON n."rowhook chunk" = o."rowhook chunk" AND n."rowhook n" = o."rowhook n"'
                  '  WHERE n."rowhook n" > %6$s ORDER BY n."rowhook chunk", n."rowhook n") AS c'
                  ' GROUP BY c.chunk ORDER BY c.chunk',
                  rowhook.key_expression('o', r.key_columns), rowhook.old_row_expression(r),
                  rowhook.key_expression('n', r.key_columns), rowhook.update_row_expression('n', r),
                  rowhook.capture_chunk_size(), rowhook.capture_update_head_size())
$$;

CREATE OR REPLACE FUNCTION rowhook.capture_function_body(r rowhook.resources) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    columns text := 'INSERT INTO rowhook.changes (resource, statement, account_column, scope_columns, row_count, ';
    update_capture text;
    signature text[];
BEGIN
    update_capture := format($update$
        -- An UPDATE fills both transition tables row by row together, so chunk i of the old rows holds
        -- the previous versions of chunk i of the new ones: pairs meet in one changes row.
        WITH o AS (%5$s), n AS (%6$s), written AS (
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
        END IF;$update$,
        columns, r.name, r.account_column, r.scope_columns,
        rowhook.capture_head('rowhook_old', r), rowhook.capture_head('rowhook_new', r),
        rowhook.capture_rest('rowhook_new', r), rowhook.capture_rest('rowhook_old', r),
        rowhook.capture_chunk_size());
    IF rowhook.diffs_old_rows(r) THEN
        EXECUTE rowhook.column_signature_query(r.table_oid) INTO signature;
        update_capture := format($update$
        -- The first %9$s pairs as 0011 captured them; the rest, if any, paired here, old rows without
        -- their unchanged columns, while the table has the columns this function was generated for.
        WITH o AS (%5$s), n AS (%6$s), written AS (
            %1$s old_keys, old_rows, new_keys, new_rows)
            SELECT %2$L, 'UPDATE', %3$L, %4$L, greatest(o.row_count, n.row_count), o.keys, o.rows, n.keys, n.rows
            FROM o, n WHERE greatest(o.row_count, n.row_count) > 0
        )
        SELECT greatest(o.row_count, n.row_count) INTO captured FROM o, n;
        IF captured = %9$s THEN
            IF (%10$s) = %11$L::text[] THEN
                %1$s old_keys, old_rows, new_keys, new_rows)
                SELECT %2$L, 'UPDATE', %3$L, %4$L, u.row_count, u.old_keys, u.old_rows, u.new_keys, u.new_rows
                FROM (%12$s) AS u ORDER BY u.chunk;
            ELSE
                %1$s old_keys, old_rows, new_keys, new_rows)
                SELECT %2$L, 'UPDATE', %3$L, %4$L, greatest(o.row_count, n.row_count), o.keys, o.rows, n.keys, n.rows
                FROM (%8$s) AS o FULL JOIN (%7$s) AS n ON n.chunk = o.chunk
                ORDER BY coalesce(o.chunk, n.chunk);
            END IF;
        END IF;$update$,
            columns, r.name, r.account_column, r.scope_columns,
            rowhook.capture_update_head('rowhook_old', r), rowhook.capture_update_head('rowhook_new', r),
            rowhook.capture_update_rest('rowhook_new', r), rowhook.capture_update_rest('rowhook_old', r),
            rowhook.capture_update_head_size(), rowhook.column_signature_query(r.table_oid), signature,
            rowhook.capture_update(r));
    END IF;
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
    ELSE%12$s
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
        rowhook.capture_chunk_size(), (rowhook.sleep_lock_key())[1], (rowhook.sleep_lock_key())[2],
        update_capture);
END
$$;

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

INSERT INTO rowhook.migrations (version, name) VALUES (13, 'update_capture');
