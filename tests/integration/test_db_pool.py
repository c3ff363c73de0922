"""The pool's check before handing out a connection: always by default, not for one that came back less
than trust_recent_s ago (the relay's: a query on a connection broken since is a database error it retries)."""

from __future__ import annotations

import os

import psycopg

from rowhook.db import async_pool


async def break_and_reuse(db_url: str, role: str, trust_recent_s: float) -> list[str]:
    """Use the pool's one connection, terminate its backend, then use the pool twice more; what each
    use gave: 'ok' or the error's class name."""
    pool = async_pool(db_url, role=role, max_size=1, trust_recent_s=trust_recent_s)
    await pool.open(wait=True)
    outcomes = []
    try:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                (f"rowhook-{role}",),
            )
        for _ in range(2):
            try:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
                outcomes.append("ok")
            except psycopg.OperationalError as exc:
                outcomes.append(type(exc).__name__)
    finally:
        await pool.close()
    return outcomes


async def test_a_checked_pool_hands_out_no_broken_connection(db_url: str) -> None:
    role = f"pooltest{os.getpid()}c"
    assert await break_and_reuse(db_url, role, trust_recent_s=0.0) == ["ok", "ok"]


async def test_a_connection_used_moments_ago_is_handed_out_unchecked_and_replaced_once_broken(
    db_url: str,
) -> None:
    role = f"pooltest{os.getpid()}u"
    outcomes = await break_and_reuse(db_url, role, trust_recent_s=60.0)
    assert outcomes[0] != "ok", "the broken connection was checked"
    assert outcomes[1] == "ok", "the pool did not replace the broken connection"
