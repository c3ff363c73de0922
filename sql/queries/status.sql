-- Operational figures shared by `rowhook status` and the API's /metrics gauges.

-- name: status_summary
SELECT
    -- Captured statements not expanded into outbox events yet (rowhook.changes) count as undispatched.
    (SELECT extract(epoch FROM now() - least(
        (SELECT min(occurred_at) FROM rowhook.outbox WHERE dispatched_at IS NULL),
        (SELECT min(occurred_at) FROM rowhook.changes)))::float8)                         AS outbox_lag_s,
    (SELECT count(*) FROM rowhook.outbox WHERE dispatched_at IS NULL)
      + rowhook.unexpanded_events()                                                      AS undispatched_events,
    (SELECT count(*) FROM rowhook.deliveries WHERE status IN ('pending', 'delivering')) AS pending_deliveries,
    (SELECT count(*) FROM rowhook.deliveries WHERE status = 'failed')                   AS failed_deliveries,
    (SELECT count(*) FROM rowhook.deliveries WHERE status = 'held')                     AS held_deliveries,
    (SELECT count(*) FROM rowhook.subscriptions WHERE status = 'active' AND deleted_at IS NULL)   AS active_subscriptions,
    (SELECT count(*) FROM rowhook.subscriptions WHERE status = 'paused' AND deleted_at IS NULL)   AS paused_subscriptions,
    (SELECT count(*) FROM rowhook.subscriptions WHERE status = 'disabled' AND deleted_at IS NULL) AS disabled_subscriptions,
    -- Only relays whose LISTEN session is alive: a killed relay leaves its row until another starts.
    (SELECT count(*) FROM rowhook.relays r
      WHERE EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid))         AS relays;

-- name: failing_subscriptions
SELECT id, account, resource, target_url, status, disabled_reason, failing_since
FROM rowhook.subscriptions
WHERE deleted_at IS NULL AND (status = 'disabled' OR failing_since IS NOT NULL)
ORDER BY status, failing_since NULLS LAST, id
LIMIT %(limit)s;

-- name: refused_targets
-- Attempts a relay refused because the target is private or plain http although the API accepted the
-- subscription: the relay and the API disagree about ROWHOOK_ALLOW_PRIVATE_TARGETS.
SELECT count(DISTINCT a.delivery_id) AS deliveries, count(DISTINCT d.subscription_id) AS subscriptions,
       (array_agg(a.error ORDER BY a.id DESC))[1] AS last_error
FROM rowhook.delivery_attempts a
JOIN rowhook.deliveries d ON d.id = a.delivery_id
WHERE a.error LIKE 'refused target:%%' AND a.attempted_at > now() - make_interval(secs => %(within_s)s);
