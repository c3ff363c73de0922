"""How the relay's parts wait and retry: the errors that mean the database is unavailable, and backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass

import psycopg
from tenacity import RetryCallState

from rowhook.errors import DatabaseUnavailable

# The database is unavailable: wait and try again. psycopg_pool's PoolTimeout is an OperationalError.
DATABASE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: base_s * 2**step (step capped at 10) plus up to jitter_s, at most max_s."""

    base_s: float
    max_s: float
    jitter_s: float = 0.0

    def delay_s(self, step: int) -> float:
        delay = self.base_s * 2 ** min(step, 10)
        if self.jitter_s > 0:
            delay += random.uniform(0, self.jitter_s)
        return float(min(self.max_s, delay))

    def __call__(self, retry_state: RetryCallState) -> float:
        """As a tenacity wait: after attempt n, step n - 1 (the first retry waits base_s)."""
        return self.delay_s(retry_state.attempt_number - 1)
