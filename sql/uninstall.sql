-- Removes rowhook entirely: the triggers on every watched table, then the rowhook schema with its
-- outbox, subscriptions and delivery history. Application tables and their rows are untouched.
--   psql -1 -v ON_ERROR_STOP=1 -f sql/uninstall.sql "$DATABASE_URL"
DO $$
DECLARE
    tbl regclass;
BEGIN
    IF to_regnamespace('rowhook') IS NULL THEN
        RETURN;
    END IF;
    FOR tbl IN EXECUTE 'SELECT table_oid FROM rowhook.resources' LOOP
        EXECUTE 'SELECT rowhook.unwatch($1)' USING tbl;
    END LOOP;
END
$$;
DROP EVENT TRIGGER IF EXISTS rowhook_follow_alter_table;
DROP SCHEMA IF EXISTS rowhook CASCADE;
