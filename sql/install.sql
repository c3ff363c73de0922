-- Fresh install of rowhook for psql users (no Python needed on the database host):
--   psql -1 -v ON_ERROR_STOP=1 -f sql/install.sql "$DATABASE_URL"
-- Upgrades: apply, in order, each file of sql/migrations/ whose number is above
--   SELECT max(version) FROM rowhook.migrations;
-- `rowhook migrate` does exactly that with the same files.
\ir migrations/0001_schema.sql
\ir migrations/0002_capture.sql
\ir migrations/0003_delivery.sql
\ir migrations/0004_tenancy.sql
\ir migrations/0005_deleted_subscriptions.sql
\ir migrations/0006_delivery_bookkeeping.sql
\ir migrations/0007_claim_by_subscription.sql
\ir migrations/0008_push_headers_columns.sql
\ir migrations/0009_tokens_idempotency.sql
\ir migrations/0010_rate_limit.sql
\ir migrations/0011_statement_capture.sql
\ir migrations/0012_failing_probe.sql
\ir migrations/0013_update_capture.sql
\ir migrations/0014_expand_generic_plans.sql
\ir migrations/0015_delivery_queue_and_log.sql
\ir migrations/0016_pg_cost_per_delivery.sql
