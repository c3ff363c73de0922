"""Writes attempt results back in batches; holds them through database outages so none is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from relay.retrying import DATABASE_ERRORS, Backoff
from relay.store import Result, Store

log = logging.getLogger("rowhook.relay")

BACKOFF = Backoff(base_s=0.05, max_s=2.0)
# Successes left for the next claim to write (see Recorder.lend) are written by the recorder itself
# once the oldest has waited this long: the delivery log is never much behind the receivers.
DEFER_MAX_S = 0.05


class Recorder:
    """Results queue up while a batch is being written, so the batch size follows the load.

    While more claims are coming (`claims_coming`), successes wait for the next claim, which writes
    them in its own transaction before it leases (lend): with a backlog that is one transaction per
    claim instead of one more per batch of outcomes, and the room they free is seen by that claim."""

    def __init__(
        self,
        store: Store,
        on_disabled: Callable[[dict[str, str]], None],
        on_recorded: Callable[[], None],
        unrecordable: Callable[[Result, BaseException], Result],
        claims_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.on_disabled = on_disabled
        self.on_recorded = on_recorded
        self.unrecordable = unrecordable  # a plain failed attempt to write instead of a refused result
        self.claims_coming = claims_coming
        self._deferred_since: float | None = None  # when the oldest success left for a claim came
        self._given_back = False
        self._pending: list[Result] = []
        self._writing: list[Result] = []
        self._lent: list[Result] = []  # handed to a claim, which writes them in its own transaction
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def add(self, result: Result) -> None:
        self._pending.append(result)
        self._idle.clear()
        if result.outcome.status == "succeeded" and self.claims_coming():
            # Left for the next claim: the recorder is woken once, to start the clock (DEFER_MAX_S).
            if self._deferred_since is None:
                self._deferred_since = time.monotonic()
                self._ready.set()
            return
        self._ready.set()

    async def run(self) -> None:
        failures = 0
        while not (self._closing and not self._pending):
            await self._wait_ready()
            batch = self._take_batch()
            if not batch:
                self._settle()
                continue
            self._writing = batch
            try:
                disabled = await self._write(batch)
            except DATABASE_ERRORS as exc:
                self._pending = batch + self._pending  # what is left of it: see _write_one_by_one
                failures += 1
                delay = BACKOFF.delay_s(failures)
                log.warning("recording %d results failed (%s); retrying in %.1f s", len(batch), exc, delay)
                await asyncio.sleep(delay)
                self._ready.set()
                continue
            finally:
                self._writing = []
            failures = 0
            if disabled:
                self.on_disabled(disabled)
            self.on_recorded()
            if self._pending:
                self._ready.set()
            self._settle()

    async def _write(self, batch: list[Result]) -> dict[str, str]:
        """Database outages propagate (the caller holds the batch); any other error is one bad result,
        which must not cost the batch or stop the relay."""
        try:
            return await self.store.record(batch)
        except DATABASE_ERRORS:
            raise
        except Exception:
            log.error("recording %d results failed; recording them one at a time", len(batch), exc_info=True)
        return await self._write_one_by_one(batch)

    async def _write_one_by_one(self, batch: list[Result]) -> dict[str, str]:
        # Written results leave `batch` at once, so an outage midway holds only the unwritten ones.
        disabled: dict[str, str] = {}
        while batch:
            try:
                disabled.update(await self.store.record(batch[:1]))
            except DATABASE_ERRORS:
                raise
            except Exception as exc:
                log.error(
                    "result of delivery %s cannot be recorded; recording a failed attempt instead",
                    batch[0].delivery_id,
                    exc_info=True,
                )
                disabled.update(await self.store.record([self.unrecordable(batch[0], exc)]))
            batch.pop(0)
        return disabled

    async def _wait_ready(self) -> None:
        """Until results came, or the oldest success left for a claim waited its longest."""
        if self._deferred_since is None:
            await self._ready.wait()
        else:
            wait_s = self._deferred_since + DEFER_MAX_S - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), max(wait_s, 0.0))
        self._ready.clear()

    def _take_batch(self) -> list[Result]:
        """What to write now: everything, or only failures while a claim will soon write the successes."""
        now = time.monotonic()
        waited_long = self._deferred_since is not None and now - self._deferred_since >= DEFER_MAX_S
        if self._closing or waited_long or self._given_back or not self.claims_coming():
            self._given_back = False
            batch, self._pending, self._deferred_since = self._pending, [], None
            return batch
        batch = [r for r in self._pending if r.outcome.status != "succeeded"]
        self._pending = [r for r in self._pending if r.outcome.status == "succeeded"]
        if self._pending and self._deferred_since is None:
            self._deferred_since = now
        return batch

    def holding(self) -> set[str]:
        """Deliveries whose results wait to be written: their leases are still needed."""
        waiting = self._pending + self._writing + self._lent
        return {r.delivery_id for r in waiting}

    def lend(self) -> list[Result]:
        """The pending results a claim writes before it claims: successes only (a failure's bookkeeping
        reads and decides in between). The recorder's own batch left the pending list when it began,
        so the two never write the same result. The claim calls returned() once they are written, or
        give_back() when it failed."""
        if self._lent or self._closing:
            return []
        self._lent = [r for r in self._pending if r.outcome.status == "succeeded"]
        if self._lent:
            self._pending = [r for r in self._pending if r.outcome.status != "succeeded"]
            self._deferred_since = None
        return self._lent

    def returned(self) -> None:
        """The lent results are written."""
        self._lent = []
        self.on_recorded()
        self._settle()

    def give_back(self) -> None:
        """The claim that borrowed the results failed: the recorder writes them (and copes with a bad one)."""
        self._pending = self._lent + self._pending
        self._lent = []
        self._given_back = True  # the recorder writes them itself, next
        self._ready.set()

    def _settle(self) -> None:
        if not (self._pending or self._writing or self._lent):
            self._idle.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is written; False when the deadline passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self._closing = True
        self._ready.set()
