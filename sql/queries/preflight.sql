-- Start-up checks (rowhook/preflight.py) and /health.

-- name: schema_installed
SELECT to_regclass('rowhook.migrations') IS NOT NULL AS installed;

-- name: schema_version
-- The newest migration applied (run only when schema_installed says the table exists).
SELECT coalesce(max(version), 0) AS version FROM rowhook.migrations;
