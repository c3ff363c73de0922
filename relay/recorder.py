"""Writes attempt results back in batches; holds them through database outages so none is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from relay.retrying import DATABASE_ERRORS, Backoff
from relay.store import Result, Store

log = logging.getLogger("rowhook.relay")

BACKOFF = Backoff(base_s=0.05, max_s=2.0)


class Recorder:
    """Results queue up while a batch is being written, so the batch size follows the load."""

    def __init__(
        self,
        store: Store,
        on_disabled: Callable[[dict[str, str]], None],
        on_recorded: Callable[[], None],
        unrecordable: Callable[[Result, BaseException], Result],
    ) -> None:
        self.store = store
        self.on_disabled = on_disabled
        self.on_recorded = on_recorded
        self.unrecordable = unrecordable  # a plain failed attempt to write instead of a refused result
        self._pending: list[Result] = []
        self._writing: list[Result] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def add(self, result: Result) -> None:
        self._pending.append(result)
        self._idle.clear()
        self._ready.set()

    async def run(self) -> None:
        failures = 0
        while not (self._closing and not self._pending):
            await self._ready.wait()
            self._ready.clear()
            if not self._pending:
                self._idle.set()
                continue
            batch, self._pending = self._pending, []
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
            if not self._pending:
                self._idle.set()
            else:
                self._ready.set()

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

    def holding(self) -> set[str]:
        """Deliveries whose results wait to be written: their leases are still needed."""
        return {r.delivery_id for r in self._pending} | {r.delivery_id for r in self._writing}

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
