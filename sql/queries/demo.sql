-- `rowhook demo`: a small sample app (accounts, projects, tasks) in schema rowhook_demo, and the writes
-- the demo's "app" makes. The demo prints each write's SQL as it runs it.

-- name: demo_resource_conflicts
-- Resource names the demo needs that are already taken by tables of another schema.
SELECT name, table_oid::text AS table_name FROM rowhook.resources
WHERE name IN ('accounts', 'projects', 'tasks')
  AND (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = table_oid) <> 'rowhook_demo';

-- name: demo_drop_schema
-- A previous demo run's tables: unwatch them (their triggers live in rowhook), then drop them.
DO $$
DECLARE
    tbl regclass;
BEGIN
    FOR tbl IN SELECT r.table_oid FROM rowhook.resources r JOIN pg_class c ON c.oid = r.table_oid
               WHERE c.relnamespace = 'rowhook_demo'::regnamespace LOOP
        PERFORM rowhook.unwatch(tbl);
    END LOOP;
EXCEPTION WHEN invalid_schema_name THEN
    NULL;  -- no previous run
END
$$;
DROP SCHEMA IF EXISTS rowhook_demo CASCADE;

-- name: demo_create_schema
CREATE SCHEMA rowhook_demo;
CREATE TABLE rowhook_demo.accounts (
    id   text PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE rowhook_demo.projects (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text NOT NULL REFERENCES rowhook_demo.accounts,
    name       text NOT NULL
);
CREATE TABLE rowhook_demo.tasks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  text NOT NULL REFERENCES rowhook_demo.accounts,
    project_id  bigint NOT NULL REFERENCES rowhook_demo.projects,
    title       text NOT NULL,
    done        boolean NOT NULL DEFAULT false,
    secret_note text  -- excluded: never leaves the database
);
INSERT INTO rowhook_demo.accounts VALUES ('demo-acme', 'Acme'), ('demo-globex', 'Globex');
INSERT INTO rowhook_demo.projects (account_id, name)
VALUES ('demo-acme', 'Website'), ('demo-acme', 'Mobile app'), ('demo-globex', 'Launch');
SELECT rowhook.watch('rowhook_demo.accounts', account_column => 'id', label_column => 'name');
SELECT rowhook.watch('rowhook_demo.projects', account_column => 'account_id', label_column => 'name');
SELECT rowhook.watch('rowhook_demo.tasks', account_column => 'account_id', scope_columns => '{project_id}',
                     exclude_columns => '{secret_note}', label_column => 'title');

-- name: demo_project_id
SELECT id FROM rowhook_demo.projects WHERE account_id = %(account)s AND name = %(name)s;

-- name: demo_create_task
INSERT INTO tasks (account_id, project_id, title, secret_note)
VALUES ('demo-acme', %(website)s, 'Draft the launch post', 'ask legal first')
RETURNING id;

-- name: demo_create_two_tasks
INSERT INTO tasks (account_id, project_id, title)
VALUES ('demo-acme', %(website)s, 'Buy the domain'), ('demo-acme', %(website)s, 'Pick a font')
RETURNING id;

-- name: demo_complete_task
UPDATE tasks SET done = true WHERE title = 'Draft the launch post' RETURNING id;

-- name: demo_change_excluded_column
UPDATE tasks SET secret_note = 'legal said yes' WHERE title = 'Draft the launch post' RETURNING id;

-- name: demo_task_in_other_project
INSERT INTO tasks (account_id, project_id, title)
VALUES ('demo-acme', %(mobile)s, 'Fix the login screen')
RETURNING id;

-- name: demo_task_in_other_account
INSERT INTO tasks (account_id, project_id, title)
VALUES ('demo-globex', %(launch)s, 'Globex keeps its secrets')
RETURNING id;

-- name: demo_rolled_back_task
INSERT INTO tasks (account_id, project_id, title)
VALUES ('demo-acme', %(website)s, 'This transaction rolls back')
RETURNING id;

-- name: demo_delete_task
DELETE FROM tasks WHERE title = 'Buy the domain' RETURNING id;
