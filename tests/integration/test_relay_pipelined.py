"""The relay's pipelined transactions (relay/store.py pipelined_transaction): all or nothing, and the
connection handed back as it came (idle, not in autocommit), whether explicit (BEGIN/COMMIT sent with
the statements) or implicit (the pipeline's Sync commits)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from relay.store import pipelined_transaction


async def connect(db_url: str) -> psycopg.AsyncConnection[dict[str, object]]:
    conn = await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row)
    await conn.set_autocommit(True)
    await conn.execute("CREATE TABLE IF NOT EXISTS pipelined (x int PRIMARY KEY)")
    await conn.execute("TRUNCATE pipelined")
    await conn.set_autocommit(False)
    return conn


async def kept(conn: psycopg.AsyncConnection[dict[str, object]]) -> list[int]:
    assert conn.info.transaction_status == TransactionStatus.IDLE and not conn.autocommit
    cursor = await conn.execute("SELECT x FROM pipelined ORDER BY x")
    rows = [row["x"] for row in await cursor.fetchall()]
    await conn.rollback()
    return rows


@pytest.mark.parametrize("implicit", [False, True])
async def test_statements_commit_together_and_rows_read_after_the_block(db_url: str, implicit: bool) -> None:
    conn = await connect(db_url)
    try:
        async with pipelined_transaction(conn, implicit=implicit):
            await conn.execute("INSERT INTO pipelined VALUES (1)")
            inside = await (await conn.execute("SELECT count(*) AS n FROM pipelined")).fetchall()
            await conn.execute("INSERT INTO pipelined VALUES (2)")
            last = await conn.execute("SELECT txid_current() AS tx, count(*) AS n FROM pipelined")
        [row] = await last.fetchall()
        assert inside == [{"n": 1}] and row["n"] == 2
        assert await kept(conn) == [1, 2]
    finally:
        await conn.close()


@pytest.mark.parametrize("implicit", [False, True])
async def test_a_failed_statement_rolls_back_every_statement(db_url: str, implicit: bool) -> None:
    conn = await connect(db_url)
    try:
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with pipelined_transaction(conn, implicit=implicit):
                await conn.execute("INSERT INTO pipelined VALUES (1)")
                await (await conn.execute("SELECT 1 AS one")).fetchall()  # a round trip in between
                await conn.execute("INSERT INTO pipelined VALUES (1)")
                await conn.execute("INSERT INTO pipelined VALUES (3)")
        assert await kept(conn) == []
    finally:
        await conn.close()


async def test_an_exception_in_an_explicit_block_rolls_back_what_was_sent(db_url: str) -> None:
    conn = await connect(db_url)
    try:
        with pytest.raises(RuntimeError):
            async with pipelined_transaction(conn):
                await conn.execute("INSERT INTO pipelined VALUES (1)")
                await (await conn.execute("SELECT 1 AS one")).fetchall()  # the insert reached the server
                raise RuntimeError("between two statements")
        assert await kept(conn) == []
    finally:
        await conn.close()
