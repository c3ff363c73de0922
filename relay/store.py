"""The relay's database side: every query it runs, each in its own short transaction. It reads and
writes; what the results mean (retry, disable) is decided in relay/policy.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from relay.policy import Outcome, failing_too_long, subscription_changes
from relay.sender import Attempt
from rowhook.settings import Settings
from rowhook.sqlfiles import query

# A claim reads at most this many times its limit of due rows in time order before it goes round the
# subscriptions at their cap (relay_scan_due_by_subscription).
SCAN_WINDOW_FACTOR = 4
# How long a query waits for a pooled connection before the drain loop treats the database as down.
POOL_WAIT_S = 5.0
# A relay with nothing else to do wakes for a rate-limited subscription once its bucket holds this many
# seconds' worth of tokens (one at least): a few claims a second, not one per token.
RATE_WAKE_S = 0.1
# Rebuild the queue's indexes once a burst drained from it: at most this many rows left in it (a rebuild
# of some milliseconds), at least this many bytes of index (below that the space is not worth a lock).
REBUILD_QUEUE_MAX_ROWS = 10_000
REBUILD_QUEUE_MIN_INDEX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class FanOut:
    events: int
    created: int  # deliveries created
    leased: list[dict[str, Any]]  # created already leased to this relay, ready to send


@dataclass(frozen=True)
class Claim:
    deliveries: list[dict[str, Any]]
    scanned: int  # due rows locked by the scan; more than taken means some wait for room or order
    paused_subscriptions: set[str]
    capped: bool  # some subscription was skipped at its cap: its due work waits for a finished send


@dataclass(frozen=True)
class Result:
    """One finished attempt and what it means for its delivery."""

    delivery_id: str
    subscription_id: str
    attempt: Attempt
    outcome: Outcome
    attempt_number: int  # 1-based: the delivery's attempts before this one, plus one


Row = dict[str, Any]


async def rows(conn: Any, name: str, params: dict[str, Any] | None = None) -> list[Row]:
    """Run the named query on a connection (dict rows) and return its rows, if any."""
    cursor = await conn.execute(query(name), params or {})
    return await cursor.fetchall() if cursor.description else []


@contextlib.asynccontextmanager
async def pipelined_transaction(conn: Any, *, implicit: bool = False) -> AsyncIterator[None]:
    """A transaction whose statements travel together: BEGIN, the statements and COMMIT reach the server
    in one round trip, plus one for each statement whose rows are fetched inside the block (a cursor
    executed last can be fetched after the block: its rows come with the COMMIT's round trip).
    psycopg's conn.transaction() waits for the BEGIN, and in pipeline mode for the COMMIT apart too.
    An error, or an exception raised inside the block, rolls it all back.

    With `implicit`, no BEGIN and COMMIT statements: what the pipeline sends up to its closing Sync is
    one implicit transaction, committed by the Sync, rolled back by the server on a failed statement.
    But an exception raised inside the block (a cancellation, say) does not roll back the statements
    sent before it: only for blocks where that leaves nothing half done (a single write, or writes
    queued back to back with nothing that can raise in between)."""
    await conn.set_autocommit(True)  # BEGIN and COMMIT are ours: psycopg must not add its own
    try:
        async with conn.pipeline():
            if not implicit:
                await conn.execute("BEGIN")
            yield
            if not implicit:
                await conn.execute("COMMIT")
    except BaseException:
        # An explicit BEGIN: leaving the pipeline commits nothing by itself. A failed statement leaves
        # the transaction aborted (the server skipped the rest of the pipeline), an exception raised in
        # the block leaves it open: either way, roll it back.
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            with contextlib.suppress(psycopg.Error):
                await conn.execute("ROLLBACK")
        raise
    finally:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            await conn.set_autocommit(False)


async def fetched(conn: Any, name: str, params: dict[str, Any] | None = None) -> list[Row]:
    """Run the named query (one that returns rows) and fetch them: also in a pipeline, where a cursor
    has no description until its results have come back."""
    cursor = await conn.execute(query(name), params or {})
    result: list[Row] = await cursor.fetchall()
    return result


def sendable_cursor(conn: Any) -> Any:
    """A cursor (dict rows) that reads json and jsonb columns as text: the sender splices a delivery's
    data, previous and body into what it posts unparsed (rowhook.webhooks.delivery_body); parsing and
    re-encoding them cost the relay more CPU than the rest of the body."""
    cursor = conn.cursor()
    for json_type in ("json", "jsonb"):
        cursor.adapters.register_loader(json_type, TextLoader)
    return cursor


def parse_headers(deliveries: list[Row]) -> list[Row]:
    """Subscriptions' own headers, read as JSON text by sendable_cursor, as the dict the sender needs."""
    for delivery in deliveries:
        if delivery["headers"] is not None:
            delivery["headers"] = json.loads(delivery["headers"])
    return deliveries


def outcomes_json(results: list[Result]) -> Jsonb:
    """The outcomes as relay_record_outcomes reads them: one JSON array of [id, status, ...] arrays
    (dumped in one C call; eight array parameters were dumped element by element in Python)."""
    return Jsonb(
        [
            (
                r.delivery_id,
                r.outcome.status,
                r.outcome.retry_in_s,
                r.attempt.attempted_at.isoformat(),
                r.attempt.duration_ms,
                r.attempt.status_code,
                r.attempt.error,
                r.attempt.response_body,
            )
            for r in results
        ]
    )


class Store:
    def __init__(self, pool: AsyncConnectionPool, relay_id: str, settings: Settings) -> None:
        self.pool = pool
        self.relay_id = relay_id
        self.settings = settings

    async def execute(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        """One statement, in autocommit: its own transaction without a BEGIN and a COMMIT round trip."""
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            await conn.set_autocommit(True)
            try:
                return await rows(conn, name, params)
            finally:
                await conn.set_autocommit(False)

    async def set_sleeping(self, sleeping: bool) -> None:
        await self.execute("relay_set_sleeping", {"sleeping": sleeping, "relay_id": self.relay_id})

    async def unregister(self) -> None:
        await self.execute("relay_unregister", {"relay_id": self.relay_id})

    async def fan_out(self, free: int) -> FanOut:
        """Fan out a batch of events; up to `free` of the new deliveries come back leased, ready to send."""
        params = {
            "batch": self.settings.claim_batch,
            "free": free,
            "lease_s": self.settings.lease_s,
            "relay_id": self.relay_id,
        }
        # Pipelined, one implicit transaction (two writes queued back to back): one round trip.
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            async with pipelined_transaction(conn, implicit=True):
                await conn.execute(query("relay_expand_changes"), {"batch": params["batch"]})
                cursor = sendable_cursor(conn)
                await cursor.execute(query("relay_fan_out"), params)
            fanned: list[Row] = await cursor.fetchall()
        events, created = fanned[0]["events"], fanned[0]["created"]
        leased = [row for row in fanned if row["id"] is not None]
        for row in leased:
            del row["events"], row["created"]
        return FanOut(events, created, parse_headers(leased))

    async def claim_due(
        self, limit: int, skip_subscriptions: set[str], successes: list[Result] | None = None
    ) -> Claim:
        """Lease up to `limit` due deliveries, skipping subscriptions at their cap, out of rate tokens
        or paused. `successes` (finished sends that succeeded) are recorded first, in the same
        transaction: their subscriptions' room is free for this claim, and no transaction of their own."""
        # Pipelined: BEGIN goes with the first query, COMMIT with the last (relay_take, the lease, whose
        # rows are read after the block). Explicit: a lease sent but not yet read when a cancellation
        # comes is rolled back with the rest.
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            async with pipelined_transaction(conn):
                if successes:
                    await self._write_successes(conn, successes)
                due, capped = await self._claim_due(conn, limit, skip_subscriptions)
                paused = {row["subscription_id"] for row in due if row["subscription_status"] == "paused"}
                subscription_ids = sorted({row["subscription_id"] for row in due} - paused)
                # Paused subscriptions' rows go to _take too, which holds them until they resume.
                loading = (
                    await self._take(conn, [row["id"] for row in due], subscription_ids) if due else None
                )
            taken: list[Row] = await loading.fetchall() if loading is not None else []
        parse_headers(taken)
        scanned = sum(row["subscription_status"] != "paused" for row in due)
        return Claim(taken, scanned, paused, capped)

    async def _claim_due(self, conn: Any, limit: int, skip_subscriptions: set[str]) -> tuple[list[Row], bool]:
        """The due rows to take (locked), and whether some subscription was skipped at its cap."""
        # Rate-limited subscriptions are claimed first and apart, each up to its whole tokens (a
        # second's worth at most), so that neither their backlog fills the time-ordered scans nor
        # other backlogs starve them. Out of tokens is not `capped`: no finished send brings
        # tokens, time does (relay_next_due says when).
        # Failing subscriptions waiting for their next probe are skipped too, and are not `capped`
        # either: time brings their probe (relay_next_due says when).
        full = await fetched(conn, "relay_capped_subscriptions")
        capped = {row["id"] for row in full if not (row["rate_limited"] or row["waiting_probe"])}
        skip = skip_subscriptions | capped
        tokens = {
            row["id"]: min(row["tokens"], limit)
            for row in full
            if row["rate_limited"] and row["tokens"] >= 1 and row["id"] not in skip
        }
        due = await self._scan_rate_limited(conn, tokens, limit) if tokens else []
        skip |= {row["id"] for row in full}
        if len(due) < limit and any(row["has_due"] for row in full):
            # A limited backlog sits at the front of the time-ordered queue, where it would crowd
            # every claim's window (read, then gone round): go round it at once.
            params = {"limit": limit - len(due), "skip_subscriptions": sorted(skip)}
            due += await fetched(conn, "relay_scan_due_by_subscription", params)
        elif len(due) < limit:
            due += await self._scan_due(conn, limit - len(due), skip)
        return due, bool(capped)

    async def _scan_due(self, conn: Any, limit: int, skip: set[str]) -> list[Row]:
        """Up to `limit` due rows in time order, of subscriptions not in `skip`."""
        params = {"limit": limit, "skip_subscriptions": sorted(skip), "window": limit * SCAN_WINDOW_FACTOR}
        scanned = await fetched(conn, "relay_scan_due", params)
        due = [row for row in scanned if row["id"] is not None]
        if len(due) < limit and scanned[0]["crowded"]:
            # Rows of subscriptions at their cap fill the front of the queue: go round them.
            skip = skip | {row["subscription_id"] for row in due}
            params = {"limit": limit - len(due), "skip_subscriptions": sorted(skip)}
            due += await fetched(conn, "relay_scan_due_by_subscription", params)
        return due

    async def _scan_rate_limited(self, conn: Any, tokens: dict[str, int], limit: int) -> list[Row]:
        """Due rows of rate-limited subscriptions, no more of each than its whole tokens."""
        params = {"subscription_ids": list(tokens), "tokens": list(tokens.values()), "limit": limit}
        return await fetched(conn, "relay_scan_due_rate_limited", params)

    async def _take(self, conn: Any, ids: list[str], subscription_ids: list[str]) -> Any:
        """Lease what can be taken of `ids`: the cursor of relay_take, which returns the leased
        deliveries with what the sender needs (fetch it after the transaction)."""
        locked = await fetched(conn, "relay_lock_subscriptions", {"subscription_ids": subscription_ids})
        params = {
            "ids": Jsonb(ids),  # JSON: dumped in one C call, where a text[] is dumped in a Python loop
            "subscription_ids": [row["id"] for row in locked],
            "lease_s": self.settings.lease_s,
            "relay_id": self.relay_id,
        }
        cursor = sendable_cursor(conn)
        return await cursor.execute(query("relay_take"), params)

    async def forget_dead(self, grace_s: float) -> list[str]:
        """Unregister relays that are gone; returns their ids."""
        return [row["id"] for row in await self.execute("relay_forget_dead", {"grace_s": grace_s})]

    async def reap_expired(self) -> list[Row]:
        """Count an attempt for each lease no live relay holds, and free it; returns the deliveries."""
        return await self.execute("relay_reap_expired", {"attempts_max": len(self.settings.retry_schedule_s)})

    async def release_stale(self, keep: set[str]) -> list[str]:
        """Free this relay's leases other than `keep` (not an attempt); returns their ids."""
        params = {"relay_id": self.relay_id, "keep": sorted(keep)}
        return [row["id"] for row in await self.execute("relay_release_stale", params)]

    async def analyze_grown(self) -> list[str]:
        """ANALYZE rowhook's tables that grew since their statistics were gathered; their names."""
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            names = [row["name"] for row in await rows(conn, "relay_grown_tables")]
            for name in names:
                await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("rowhook", name)))
            await conn.commit()
        return names

    async def vacuum_churned_queue(self) -> bool:
        """VACUUM the delivery queue when it holds many dead rows; whether it did."""
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            [row] = await rows(conn, "relay_churned_queue")
            await conn.commit()
            if not row["churned"]:
                return False
            await conn.set_autocommit(True)  # VACUUM cannot run inside a transaction
            try:
                await conn.execute("VACUUM rowhook.delivery_queue")
            finally:
                await conn.set_autocommit(False)
        return True

    async def rebuild_outgrown_queue(self) -> str:
        """REINDEX the delivery queue when a drained burst left its indexes large: "rebuilt", "kept"
        (its indexes are small), "busy" (rows are still queued, or were visible to a snapshot until just
        now) or "locked" (another session held it)."""
        params = {"max_rows": REBUILD_QUEUE_MAX_ROWS, "min_index_bytes": REBUILD_QUEUE_MIN_INDEX_BYTES}
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            [row] = await rows(conn, "relay_queue_outgrown", params)
            await conn.commit()
            if not row["large"]:
                return "kept"
            if not row["drained"]:
                return "busy"
            await conn.set_autocommit(True)
            try:
                # A plain REINDEX blocks the queue's writers while it runs (milliseconds here), and so
                # does waiting for its lock: give up at once rather than queue them behind it.
                await conn.execute("SET lock_timeout = '50ms'")
                await conn.execute("REINDEX TABLE rowhook.delivery_queue")
            except psycopg.errors.LockNotAvailable:
                return "locked"
            finally:
                await conn.execute("RESET lock_timeout")
                await conn.set_autocommit(False)
            # A rebuild keeps the entries of rows that a snapshot taken before they left may still see
            # (any open transaction on the server, in any database): then it is worth another later.
            [row] = await rows(conn, "relay_queue_outgrown", {**params, "max_rows": 0})
            await conn.commit()
        return "busy" if row["large"] else "rebuilt"

    async def release_held(self) -> None:
        await self.execute("relay_release_held")

    async def release(self, ids: list[str]) -> None:
        await self.execute("relay_release", {"ids": ids, "relay_id": self.relay_id})

    async def next_due_in(self) -> float | None:
        [row] = await self.execute("relay_next_due", {"rate_wake_s": RATE_WAKE_S})
        due_in: float | None = row["due_in_s"]
        return due_in

    async def record(self, results: list[Result]) -> dict[str, str]:
        """Write attempts and outcomes; returns the subscriptions disabled now, with the reason."""
        outcomes = ((r.subscription_id, r.outcome) for r in results)
        changes = subscription_changes(outcomes, self.settings.probe_wait_max_s)
        disabled: dict[str, str] = {}
        # One round trip when every attempt succeeded: the outcomes and the subscriptions' success,
        # queued back to back, one implicit transaction. With failures, reads and decisions come in
        # between: BEGIN and COMMIT of its own, one more round trip per read.
        simple = not (changes.failing or changes.disable)
        async with (
            self.pool.connection(timeout=POOL_WAIT_S) as conn,
            pipelined_transaction(conn, implicit=simple),
        ):
            await self._write_outcomes(conn, results, changes.succeeded)
            if changes.failing:
                failing = sorted(changes.failing)
                probes = [changes.probe_in_s.get(subscription_id) for subscription_id in failing]
                await conn.execute(
                    query("relay_mark_failing"), {"subscription_ids": failing, "probe_in_s": probes}
                )
                disabled.update(await self._disable_failing_too_long(conn, failing))
            for subscription_id, reason in changes.disable.items():
                for row in await fetched(
                    conn, "relay_disable", {"subscription_ids": [subscription_id], "reason": reason}
                ):
                    disabled[row["id"]] = reason
            if disabled:
                cancel = {"subscription_ids": sorted(disabled), "reason": "subscription disabled"}
                await conn.execute(query("relay_cancel_pending"), cancel)
        return disabled

    async def _write_outcomes(self, conn: Any, results: list[Result], succeeded: set[str]) -> None:
        """Queue the outcomes' writes, and the end of the failing streaks of `succeeded` subscriptions."""
        params = {"relay_id": self.relay_id, "outcomes": outcomes_json(results)}
        await conn.execute(query("relay_record_outcomes"), params)
        if succeeded:
            await conn.execute(query("relay_clear_failing"), {"subscription_ids": sorted(succeeded)})

    async def _write_successes(self, conn: Any, successes: list[Result]) -> None:
        assert all(r.outcome.status == "succeeded" for r in successes), "failures are the recorder's"
        await self._write_outcomes(conn, successes, {r.subscription_id for r in successes})

    async def _disable_failing_too_long(self, conn: Any, subscription_ids: list[str]) -> dict[str, str]:
        """Read the failing streaks, let the policy decide, write the disables of rows still as read."""
        read = await fetched(conn, "relay_failing_since", {"subscription_ids": subscription_ids})
        disable_after_s = self.settings.disable_after_s
        reasons = {
            row["id"]: reason
            for row in read
            if (
                reason := failing_too_long(
                    status=row["status"],
                    deleted=row["deleted"],
                    failing_since=row["failing_since"],
                    failing_for_s=row["failing_for_s"],
                    disable_after_s=disable_after_s,
                )
            )
        }
        if not reasons:
            return {}
        since = {row["id"]: row["failing_since"] for row in read}
        params = {
            "subscription_ids": list(reasons),
            "reasons": list(reasons.values()),
            "failing_since": [since[subscription_id] for subscription_id in reasons],
        }
        disabled = await fetched(conn, "relay_disable_failing", params)
        return {row["id"]: reasons[row["id"]] for row in disabled}
