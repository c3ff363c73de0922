-- rowhook 0014: the expander plans its statements once per session, not at every call.
-- rowhook.expand_changes runs in every fan-out transaction (0011), so once per event at low rates. Its
-- statements take the changes it locked as an array parameter; with plan_cache_mode auto, PL/pgSQL's
-- plan cache compares the generic plan with custom plans that know the array's length, never settles,
-- and plans the large expansion query again at every call: about 3 ms of a 3.5 ms call for one
-- single-row change, 0.9 ms with generic plans (PostgreSQL 15, docs/benchmarks.md, "Relay"). The
-- generic plans read changes by primary key and outbox rows through the unnest of one change's json,
-- whatever the batch: no statistics can make them read more.
ALTER FUNCTION rowhook.expand_changes(integer, boolean) SET plan_cache_mode = force_generic_plan;

INSERT INTO rowhook.migrations (version, name) VALUES (14, 'expand_generic_plans');
