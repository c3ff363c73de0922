"""Writes attempt results back in batches; holds them through database outages so none is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from relay.listener import DATABASE_ERRORS
from relay.store import Result, Store

log = logging.getLogger("rowhook.relay")

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0


class Recorder:
    """Results queue up while a batch is being written, so the batch size follows the load."""

    def __init__(
        self,
        store: Store,
        on_disabled: Callable[[dict[str, str]], None],
        on_recorded: Callable[[], None],
    ) -> None:
        self.store = store
        self.on_disabled = on_disabled
        self.on_recorded = on_recorded
        self._pending: list[Result] = []
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
            try:
                disabled = await self.store.record(batch)
            except DATABASE_ERRORS as exc:
                self._pending = batch + self._pending
                failures += 1
                delay = self._backoff_s(failures)
                log.warning("recording %d results failed (%s); retrying in %.1f s", len(batch), exc, delay)
                await asyncio.sleep(delay)
                self._ready.set()
                continue
            failures = 0
            if disabled:
                self.on_disabled(disabled)
            self.on_recorded()
            if not self._pending:
                self._idle.set()
            else:
                self._ready.set()

    @staticmethod
    def _backoff_s(failures: int) -> float:
        return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures, 10)))

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
