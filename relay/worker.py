"""The relay loop: drain (fan out, claim, send), then sleep until NOTIFY, a due retry, the poll or stop.

`Relay` is the worker of the relay package (as procrastinate's worker.py holds its Worker): the module is
named for its role, which relay/relay.py would not say, and the package's other modules are its parts."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from relay.listener import Listener
from relay.metrics import MetricsServer, RelayMetrics
from relay.policy import decide
from relay.recorder import Recorder
from relay.retrying import DATABASE_ERRORS, Backoff
from relay.sender import Attempt, Sender, internal_error, scrub, secret_values
from relay.sleeplock import SleepLock
from relay.stats import Stats
from relay.store import Claim, Result, Store
from rowhook.db import async_pool
from rowhook.errors import StartupError
from rowhook.settings import Settings
from rowhook.target_rules import redact_url

log = logging.getLogger("rowhook.relay")

DATABASE_BACKOFF = Backoff(base_s=0.1, max_s=5.0)
POOL_MAX_SIZE = 4
# A pooled connection used this recently is not checked before reuse (a round trip per transaction);
# a dead one fails its statement instead, which the loop and the recorder retry like any database error.
POOL_TRUST_RECENT_S = 1.0
# When all send slots are busy, claim again once this fraction (1/n) of them is free.
CLAIM_WHEN_FREE_DIVISOR = 4
# While a drain keeps claiming due work, a fan-out that found no event is repeated at most this often
# (a NOTIFY or a reconnection fans out at once). Writers NOTIFY only sleeping relays, so an awake relay
# polls: each empty poll is a transaction (expansion and fan-out) that a backlog's every claim round
# repeated (issue 9: ~460 empty fan-outs in a 20,000-delivery drain).
FAN_OUT_RECHECK_S = 0.05
# After a fan-out, a claim runs only when something may have become due that the fan-out did not lease
# (see Relay._claim_wanted); else at most this often while a drain goes on, for work made due that this
# relay is not told of (another relay's retries, a rate-limited subscription's tokens, a probe's time).
# At 200 events/s a claim after every fan-out was half of each round (issue 9: an event waited for it).
CLAIM_RECHECK_S = 0.05
# Event loop steps a fresh send needs to put its request on the wire (aiohttp on Python < 3.12 writes the
# body from a task of its own).
SEND_START_STEPS = 2
# A relay that could not take the sleep lock (writers in flight hold it) is not sure to be woken: it
# looks again this soon instead of waiting a whole poll interval.
UNCOVERED_SLEEP_S = 0.05
# The queue's indexes are looked at when the relay goes idle (nothing in flight) once this many deliveries
# passed through it since they last were: smaller bursts leave nothing worth a rebuild.
QUEUE_CHECK_AFTER_CREATED = 5000
# Rows still queued once the relay is idle (retries waiting) or its lock taken: look again later, at
# growing intervals while nothing changes.
QUEUE_CHECK_RETRY_S = (1.0, 60.0)
# A relay whose LISTEN session is dead and that has not beaten its heart (every poll interval at most)
# for this many poll intervals is gone, and its leases are reaped. Never less than GONE_AFTER_MIN_S.
GONE_AFTER_POLLS = 3
GONE_AFTER_MIN_S = 1.0


def gone_after_s(settings: Settings) -> float:
    return max(GONE_AFTER_MIN_S, GONE_AFTER_POLLS * settings.poll_interval_s)


def relay_session_url(url: str) -> str:
    """The URL with the relay's session settings.
    - jit=off: the fan-out's set-returning functions inflate cost estimates past the JIT threshold, and
      compiling then costs tens of milliseconds per short query.
    - synchronous_commit=off: the relay's commits need not wait for the WAL flush. A crash can lose
      only its last few transactions, and each loss is redone: undispatched events are fanned out
      again, a lost lease or outcome makes the delivery pending and sent again (same webhook-id), which
      at-least-once delivery allows. It spares a WAL flush per claim and per outcome on slow disks.
    - enable_bitmapscan=off: every relay query reads rows by key or in index order. With statistics
      from before a burst, the due-work scan chose a bitmap scan of every pending row plus a sort to
      return a few; an ordered index scan stops after the few."""
    params = conninfo_to_dict(url)
    settings = "jit=off synchronous_commit=off enable_bitmapscan=off"
    options = " ".join(f"-c {setting}" for setting in settings.split())
    params["options"] = f"{params.get('options') or ''} {options}".strip()
    return make_conninfo("", **params)


def log_unexpected(delivery: dict[str, Any], secrets: list[str]) -> None:
    """Log the exception being handled with its traceback, unless that quotes one of the subscription's
    header values: then the traceback's text is logged with them scrubbed."""
    what = "delivery=%s subscription=%s url=%s: unexpected error, recorded as a failed attempt"
    args = (delivery["id"], delivery["subscription_id"], redact_url(delivery["target_url"]))
    text = traceback.format_exc()
    if (scrubbed := scrub(text, secrets)) == text:
        log.error(what, *args, exc_info=True)
    else:
        log.error(what + "\n%s", *args, scrubbed)


async def wait_any(events: list[asyncio.Event], timeout_s: float) -> None:
    """Return when one of the events is set or the timeout passes."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Relay:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.url = database_url
        self.id = f"relay_{uuid.uuid4().hex[:16]}"
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.wake_cause = "work"  # what set `wake` first since it was cleared (see RelayMetrics.wakeups)
        self.fan_out_now = False  # a NOTIFY or reconnection since the last fan-out
        self.slot_free = asyncio.Event()
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.backlog_left = False  # due work was left unclaimed: a finished send should trigger a drain
        self.claim_wanted = True  # something may be due that no fan-out leased: claim in the next round
        self._next_claim_at = 0.0  # the next claim of a drain that nothing asked for (CLAIM_RECHECK_S)
        self.retries_due: list[float] = []  # monotonic times of retries this relay scheduled (a heap)
        self.paused_until: dict[str, float] = {}  # paused subscriptions skipped by claims, until re-checked
        self.stats = Stats()
        self.metrics = RelayMetrics(self.id)
        self.metrics.watch_in_flight(self.in_flight.__len__)
        self.metrics_server = (
            MetricsServer(self.metrics, settings.relay_metrics_host, settings.relay_metrics_port)
            if settings.relay_metrics_port
            else None
        )
        self.failure: BaseException | None = None
        self._next_maintenance = 0.0
        self.analyze_refused = False
        self.created_since_queue_check = 0
        self._next_queue_check = 0.0
        self._queue_check_retry_s = 0.0
        self.pool: AsyncConnectionPool = async_pool(
            relay_session_url(database_url),
            role="relay",
            max_size=POOL_MAX_SIZE,
            trust_recent_s=POOL_TRUST_RECENT_S,
        )
        self.store = Store(self.pool, self.id, settings)
        self.sleep_lock = SleepLock(database_url)
        self.sender = Sender(settings)
        self.listener = Listener(
            database_url,
            self.id,
            self._wake,
            self.stop,
            gone_after_s(settings),
            self._registered,
            self._subscriptions_changed,
        )
        self.release_stale = False  # set on each registration: leases held since are checked once
        self.recorder = Recorder(
            self.store, self._disabled, self._recorded, self._unrecordable, self._claims_coming
        )

    def _wake(self, cause: str) -> None:
        if cause in ("notify", "reconnect"):
            self.fan_out_now = True
        if cause != "notify":  # a writer's NOTIFY brings events, which the fan-out leases
            self.claim_wanted = True
        if not self.wake.is_set():
            self.wake_cause = cause
            self.wake.set()

    def request_stop(self) -> None:
        if not self.stop.is_set():
            log.info("relay %s stopping: no new claims, finishing in-flight work", self.id)
        self.stop.set()

    async def run(self) -> int:
        if self.settings.lease_s <= self.settings.request_timeout_s + self.settings.connect_timeout_s:
            log.warning(
                "lease_s (%g) should exceed request_timeout_s + connect_timeout_s, or a slow send "
                "may be sent again by another relay",
                self.settings.lease_s,
            )
        await self._start_metrics_server()
        await self.pool.open(wait=False)  # the drain loop waits for the database if it is down
        await self.sender.open()
        background = [
            asyncio.create_task(self.listener.run(), name="listener"),
            asyncio.create_task(self.recorder.run(), name="recorder"),
            asyncio.create_task(self._summaries(), name="summaries"),
        ]
        for task in background:
            task.add_done_callback(self._background_done)
        log.info(
            "relay %s started (poll every %g s, concurrency %d)",
            self.id,
            self.settings.poll_interval_s,
            self.settings.relay_concurrency,
        )
        try:
            await self._loop()
        finally:
            await self._shutdown(background)
        return 1 if self.failure else 0

    async def _start_metrics_server(self) -> None:
        if self.metrics_server is None:
            return
        try:
            await self.metrics_server.start()
        except OSError as exc:
            server = self.metrics_server
            raise StartupError(
                f"relay metrics cannot listen on {server.host}:{server.port} ({exc.strerror or exc});"
                " choose another ROWHOOK_RELAY_METRICS_PORT / --metrics-port"
            ) from None

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._fail(task.exception(), f"relay task {task.get_name()} failed")

    def _fail(self, exc: BaseException | None, what: str) -> None:
        log.error("%s; stopping the relay", what, exc_info=exc)
        self.failure = exc
        self.stop.set()

    async def _loop(self) -> None:
        db_failures = 0
        while not self.stop.is_set():
            if not self.listener.connected.is_set():
                # Unregistered, its leases could be taken for a dead relay's: claim nothing until then.
                await wait_any([self.listener.connected, self.stop], self.settings.poll_interval_s)
                continue
            try:
                # A drain ends with a round that found nothing: another would only repeat it. The sleep's
                # own drain, once the lock is taken, is the next look at the outbox.
                await self._drain()
                if not self.stop.is_set():
                    await self._drain_then_sleep()
                db_failures = 0
            except DATABASE_ERRORS as exc:
                db_failures += 1
                delay = DATABASE_BACKOFF.delay_s(db_failures)
                log.warning("relay: database unavailable (%s); retrying in %.1f s", str(exc).strip(), delay)
                await wait_any([self.stop], delay)

    async def _drain_then_sleep(self) -> None:
        """Writers NOTIFY only while a relay holds the sleep lock: take it, drain once more for events of
        writers that saw us awake, then wait. Without the lock (writers still hold it), wait briefly."""
        await self._rebuild_outgrown_queue()
        woken_by_writers = await self.sleep_lock.acquire()
        try:
            await self.store.set_sleeping(True)
            if not await self._drain():
                await self._sleep(None if woken_by_writers else UNCOVERED_SLEEP_S)
            await self.store.set_sleeping(False)
        finally:
            await self.sleep_lock.release()

    def _free_slots(self) -> int:
        return self.settings.relay_concurrency - len(self.in_flight)

    async def _drain(self) -> bool:
        """Fan out and send until nothing is left to claim; True when some work was done."""
        did_work = False
        found_none_at: float | None = None  # when this drain's last fan-out found no event
        while not self.stop.is_set():
            self.wake.clear()
            await self._maintain()
            progressed = False
            if (
                found_none_at is None
                or self.fan_out_now
                or time.monotonic() - found_none_at >= FAN_OUT_RECHECK_S
            ):
                self.fan_out_now = False
                # Fresh deliveries come back leased, straight to the sender, without a claim round.
                with self.metrics.fan_out_seconds.time():
                    fan = await self.store.fan_out(free=max(self._free_slots(), 0))
                progressed = fan.events > 0
                found_none_at = None if progressed else time.monotonic()
                self.stats.events += fan.events
                self.stats.deliveries_created += fan.created
                self.created_since_queue_check += fan.created
                self.metrics.events.inc(fan.events)
                self.metrics.created.inc(fan.created)
                if fan.created > len(fan.leased):  # some wait for a claim (cap, order, rate, pause)
                    self.claim_wanted = True
                self._start(fan.leased, fanned_out=True)
                if fan.leased:
                    await self._let_sends_out()
            if self._free_slots() < self._claim_threshold():
                # Saturated: claim again once a worthwhile number of slots is free, not one by one.
                self.backlog_left = True
                await self._wait_for_slots()
                did_work = True
                continue
            if not self._claim_wanted():
                if not progressed:
                    return did_work
                did_work = True
                continue
            limit = min(self._free_slots(), self.settings.claim_batch)
            claimed_at = time.monotonic()
            self._claimed(claimed_at)
            with self.metrics.claim_seconds.time():
                claim = await self._claim(limit)
            self._note_paused(claim.paused_subscriptions)
            self._start(claim.deliveries)
            self.backlog_left = (
                claim.capped or claim.scanned >= limit or len(claim.deliveries) < claim.scanned
            )
            if not (progressed or claim.deliveries):
                return did_work
            did_work = True
        return did_work

    async def _claim(self, limit: int) -> Claim:
        """Claim, writing the recorder's waiting successes in the same transaction first (issue 9: one
        transaction fewer per claim, and their room is free for it). Should the claim fail, the recorder
        gets them back; if it failed for another reason than the database being down, that may have been
        one of them (the recorder copes with a bad result), and the claim is made again without them."""
        successes = self.recorder.lend()
        try:
            claim = await self.store.claim_due(limit, self._paused_subscriptions(), successes)
        except DATABASE_ERRORS:
            self.recorder.give_back()
            raise
        except Exception:
            if not successes:
                raise
            self.recorder.give_back()
            log.warning("claim recording %d successes failed; claiming without them", len(successes))
            return await self.store.claim_due(limit, self._paused_subscriptions())
        except BaseException:  # cancelled: the transaction was rolled back
            self.recorder.give_back()
            raise
        if successes:
            self.recorder.returned()
        return claim

    def _claims_coming(self) -> bool:
        """Due work was left for a next claim, which will write the recorder's successes (Recorder)."""
        return self.backlog_left and not self.stop.is_set()

    def _claim_wanted(self) -> bool:
        """Whether something may be due that no fan-out leased: deliveries a fan-out could not lease, work
        left by the last claim (a subscription at its cap, a full batch), a wake-up other than a writer's
        NOTIFY (a finished send, a failed attempt, the API, a reconnection, the poll), a retry of this
        relay's due, or CLAIM_RECHECK_S since the last claim. A claim then, or right after a fan-out
        that found events, finds nothing a later one would not: an event waits for a fan-out round only."""
        now = time.monotonic()
        return (
            self.claim_wanted
            or self.backlog_left
            or now >= self._next_claim_at
            or bool(self.retries_due and self.retries_due[0] <= now)
        )

    def _claimed(self, now: float) -> None:
        """A claim starts: what asked for it is answered, unless a retry's outcome is not written yet."""
        self.claim_wanted = False
        self._next_claim_at = now + CLAIM_RECHECK_S
        if not self.recorder.holding():  # every due retry is written: this claim sees them
            while self.retries_due and self.retries_due[0] <= now:
                heapq.heappop(self.retries_due)

    async def _let_sends_out(self) -> None:
        """Let the sends just started write their requests before the loop's next database round trip:
        a send task runs up to its wait for the response, aiohttp's body writer one step later."""
        for _ in range(SEND_START_STEPS):
            await asyncio.sleep(0)

    def _claim_threshold(self) -> int:
        return max(
            1, min(self.settings.claim_batch, self.settings.relay_concurrency // CLAIM_WHEN_FREE_DIVISOR)
        )

    async def _wait_for_slots(self) -> None:
        deadline = time.monotonic() + self.settings.poll_interval_s
        while self._free_slots() < self._claim_threshold() and not self.stop.is_set():
            self.slot_free.clear()
            await wait_any([self.slot_free, self.stop], deadline - time.monotonic())
            if time.monotonic() >= deadline:
                return

    def _registered(self) -> None:
        self.release_stale = True

    def _subscriptions_changed(self) -> None:
        """The API's NOTIFY: it made work due (a retry, a replay, a resumed subscription)."""
        self.paused_until.clear()
        self.claim_wanted = True

    async def _maintain(self) -> None:
        """Heartbeat, stale leases after a (re)registration, and reaping, a few times per lease period."""
        if self.release_stale:
            self.release_stale = False
            if released := await self.store.release_stale(set(self.in_flight) | self.recorder.holding()):
                self.claim_wanted = True
                log.warning("relay %s released %d leases its lost session held", self.id, len(released))
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + min(self.settings.lease_s / 4, self.settings.poll_interval_s)
        await self.store.set_sleeping(False)
        for relay_id in await self.store.forget_dead(gone_after_s(self.settings)):
            log.warning("relay %s is gone (session dead, heartbeat stale); reaping its leases", relay_id)
        for row in await self.store.reap_expired():
            self.claim_wanted = True
            self.metrics.attempts[row["status"]].inc()  # a lost lease counts as an attempt
            log.warning(
                "delivery=%s subscription=%s: %s; counted as an attempt, now %s",
                row["id"],
                row["subscription_id"],
                row["error"],
                row["status"],
            )
        await self.store.release_held()
        await self._analyze_grown()

    async def _analyze_grown(self) -> None:
        if self.analyze_refused:
            return
        try:
            if analyzed := await self.store.analyze_grown():
                log.info(
                    "relay %s analysed %s: they grew since their statistics", self.id, ", ".join(analyzed)
                )
            if await self.store.vacuum_churned_queue():
                log.debug("relay %s vacuumed the delivery queue", self.id)
        except psycopg.errors.InsufficientPrivilege as exc:
            # Not the tables' owner: autovacuum (with the settings 0006 and 0015 install) has to keep
            # up alone.
            self.analyze_refused = True
            log.warning(
                "relay %s may not ANALYZE or VACUUM rowhook's tables (%s); leaving it to autovacuum",
                self.id,
                exc,
            )

    def _queue_check_due(self) -> bool:
        """After a burst, once the relay is idle: nothing in flight or waiting to be recorded (their rows
        left the queue), and its last claim left nothing due behind."""
        return (
            not self.analyze_refused
            and self.created_since_queue_check >= QUEUE_CHECK_AFTER_CREATED
            and not self.in_flight
            and not self.backlog_left
            and not self.recorder.holding()
        )

    async def _rebuild_outgrown_queue(self) -> None:
        """Idle after a burst: give back the index pages the backlog grew the queue's indexes to."""
        if not self._queue_check_due() or time.monotonic() < self._next_queue_check:
            return
        try:
            outcome = await self.store.rebuild_outgrown_queue()
        except psycopg.errors.InsufficientPrivilege as exc:
            self.analyze_refused = True
            log.warning("relay %s may not REINDEX the delivery queue (%s)", self.id, exc)
            return
        if outcome in ("busy", "locked"):
            first, most = QUEUE_CHECK_RETRY_S
            self._queue_check_retry_s = min(max(first, 2 * self._queue_check_retry_s), most)
            self._next_queue_check = time.monotonic() + self._queue_check_retry_s
            return
        self.created_since_queue_check = 0
        self._queue_check_retry_s = 0.0
        if outcome == "rebuilt":
            log.info("relay %s rebuilt the delivery queue's indexes, grown by a drained backlog", self.id)

    def _paused_subscriptions(self) -> set[str]:
        now = time.monotonic()
        self.paused_until = {sub: until for sub, until in self.paused_until.items() if until > now}
        return set(self.paused_until)

    def _note_paused(self, subscriptions: set[str]) -> None:
        # Re-checked after one poll interval, so a resumed subscription is served again promptly.
        until = time.monotonic() + self.settings.poll_interval_s
        self.paused_until.update(dict.fromkeys(subscriptions, until))

    async def _sleep(self, cap_s: float | None) -> None:
        timeout = (
            self.settings.poll_interval_s if cap_s is None else min(cap_s, self.settings.poll_interval_s)
        )
        due_in = await self.store.next_due_in()
        if due_in is not None:
            timeout = min(timeout, due_in)
        now = time.monotonic()
        while self.retries_due and self.retries_due[0] <= now:
            heapq.heappop(self.retries_due)
        if self.retries_due:
            timeout = min(timeout, self.retries_due[0] - now)
        if self._queue_check_due():  # the queue was busy or locked: look again then
            timeout = min(timeout, max(self._next_queue_check - now, 0.0))
        await wait_any([self.wake, self.stop], timeout)
        if not self.wake.is_set():  # the poll, or a retry's or rate limit's time: claim what is due
            self.claim_wanted = True
        if not self.stop.is_set():
            self.metrics.wakeups[self.wake_cause if self.wake.is_set() else "poll"].inc()

    def _start(self, deliveries: list[dict[str, Any]], fanned_out: bool = False) -> None:
        self.metrics.starting(deliveries, fanned_out)
        for delivery in deliveries:
            task = asyncio.create_task(self._deliver(delivery))
            self.in_flight[delivery["id"]] = task

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        try:
            self.recorder.add(await self._attempt(delivery))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # containment itself failed: a bug in the relay, stop loudly
            self._fail(exc, f"delivering {delivery['id']} raised")
        finally:
            self.in_flight.pop(delivery["id"], None)
            self.slot_free.set()
            if self.backlog_left:
                self._wake("work")

    async def _attempt(self, delivery: dict[str, Any]) -> Result:
        """Send one delivery and decide what comes next. Nothing a receiver sends may stop the relay, so
        an unexpected error while sending or deciding is a failed attempt of this delivery alone."""
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            attempt = await self.sender.send(delivery)
            result = self._result(delivery, attempt)
            self._account(delivery, result, time.perf_counter() - started)
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            secrets = secret_values(delivery)
            log_unexpected(delivery, secrets)
            duration_ms = int((time.perf_counter() - started) * 1000)
            error = scrub(internal_error(exc), secrets)
            attempt = Attempt(attempted_at=attempted_at, duration_ms=duration_ms, error=error)
            result = self._result(delivery, attempt)
            self._account(delivery, result, time.perf_counter() - started)
            return result

    def _result(self, delivery: dict[str, Any], attempt: Attempt) -> Result:
        attempt_number = delivery["attempts"] + 1
        outcome = decide(
            attempts_done=attempt_number,
            status_code=attempt.status_code,
            retry_after=attempt.retry_after,
            schedule_s=self.settings.retry_schedule_s,
            jitter=self.settings.retry_jitter,
        )
        return Result(delivery["id"], delivery["subscription_id"], attempt, outcome, attempt_number)

    def _unrecordable(self, result: Result, exc: BaseException) -> Result:
        """What the recorder writes instead of a result the database refused: a plain failed attempt."""
        attempt = Attempt(attempted_at=result.attempt.attempted_at, duration_ms=0, error=internal_error(exc))
        outcome = decide(
            attempts_done=result.attempt_number,
            status_code=None,
            retry_after=None,
            schedule_s=self.settings.retry_schedule_s,
            jitter=self.settings.retry_jitter,
        )
        return Result(result.delivery_id, result.subscription_id, attempt, outcome, result.attempt_number)

    def _account(self, delivery: dict[str, Any], result: Result, duration_s: float) -> None:
        attempt, outcome = result.attempt, result.outcome
        self.metrics.attempted(duration_s, outcome.status)
        if outcome.status == "succeeded":
            self.stats.succeeded += 1
            return
        self.stats.failed_attempts += 1
        if outcome.status == "pending" and outcome.retry_in_s is not None:
            heapq.heappush(self.retries_due, time.monotonic() + outcome.retry_in_s)
            self._wake("retry")  # let a sleeping loop shorten its timeout to this retry
            next_step = f"retry in {outcome.retry_in_s:.1f} s"
        else:
            self.stats.gave_up += 1
            next_step = "disabling subscription" if outcome.disable_reason else "gave up"
        log.warning(
            "delivery attempt failed delivery=%s subscription=%s attempt=%d url=%s status=%s error=%s "
            "duration_ms=%d next=%r",
            delivery["id"],
            delivery["subscription_id"],
            result.attempt_number,
            redact_url(delivery["target_url"]),
            attempt.status_code,
            attempt.error and repr(attempt.error),
            attempt.duration_ms,
            next_step,
        )

    def _recorded(self) -> None:
        # A subscription at its cap gets room only once finished sends are written back: claim again.
        # The last outcomes of a burst written: idle now, the queue may want its indexes rebuilt.
        if self.backlog_left or self._queue_check_due():
            self._wake("work")

    def _disabled(self, subscriptions: dict[str, str]) -> None:
        self.stats.subscriptions_disabled += len(subscriptions)
        self.metrics.disabled.inc(len(subscriptions))
        for subscription_id, reason in subscriptions.items():
            log.warning("subscription disabled subscription=%s reason=%r", subscription_id, reason)

    async def _summaries(self) -> None:
        while not self.stop.is_set():
            await wait_any([self.stop], self.settings.summary_interval_s)
            log.info(self.stats.line(len(self.in_flight)))
            self.stats.reset()

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        self.stop.set()
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        unfinished: list[str] = []
        if self.in_flight:
            ids_by_task = {task: delivery_id for delivery_id, task in self.in_flight.items()}
            _, pending = await asyncio.wait(list(ids_by_task), timeout=self.settings.shutdown_grace_s)
            unfinished = [ids_by_task[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.recorder.close()
        if not await self.recorder.flush(max(deadline - time.monotonic(), 1.0)):
            log.warning("relay stopping before all results were recorded; their leases will expire")
        try:
            if unfinished:
                await self.store.release(unfinished)
            await self.store.unregister()
        except DATABASE_ERRORS as exc:
            log.warning("relay could not release its work (%s); leases will expire", exc)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.sender.close()
        await self.sleep_lock.close()
        await self.pool.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        log.info("relay %s stopped (%d in-flight deliveries released)", self.id, len(unfinished))
