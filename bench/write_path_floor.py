"""What writing the outbox row costs without any trigger: the floor of a same-transaction table outbox.

    python -m bench.write_path_floor            # full size; --forms, --pgbench choose the forms
    python -m bench.write_path_floor --tiny     # CI smoke run

Single-row INSERT transactions on the narrow table of bench/write_path.py, in these forms:
- bare: the application's INSERT alone;
- trigger: the same INSERT into a table watched by rowhook (what ships);
- stmt: the application itself running, in the same transaction (one simple-protocol message), a
  second statement `INSERT INTO rowhook.changes (...) VALUES (...)` with the same columns and a json
  of the same size as the trigger writes; no trigger anywhere;
- cte: `WITH t AS (INSERT ... RETURNING *) INSERT INTO rowhook.changes ... SELECT ... FROM t`, the
  json built from the returned row as the trigger builds it;
- stmt variants into copies of rowhook.changes, to find what in the floor costs: the same copy (check),
  without the primary-key index, with the identity sequence cached (CACHE 100), without json (keys
  only), unlogged (a measurement only), without CHECK, with the same columns and nothing else (no
  identity, default, CHECK or index), and a bare minimum (an unindexed one-column table);
- `_prepared`: some of the above as server-side prepared statements (no parse or plan per transaction,
  as the trigger's cached plans);
- `trig_*`: hand-made PL/pgSQL triggers on copies of the app table, to split the trigger's cost: empty
  ones, the shipped INSERT branch with and without its sleep-lock test, the same without its CTE, a
  plain INSERT ... SELECT of the aggregates, ARRAY() sublinks instead of aggregates, one outbox row per
  transition row (no aggregate), a count only, a literal row (the transition table not read), and a
  FOR EACH ROW trigger inserting NEW.

Not in bench/run_all.py: an experiment, it prints a table rather than a Result.

Two measurements, each reporting ratios against bare in the same run:
- backend CPU per transaction (/proc/<pid>/schedstat of the server backend; the server must run on this
  machine): batches of `--batch` transactions, forms interleaved, `--batches` rounds; the minimum per
  form (the least disturbed by other work on a shared machine) and the median;
- 8 concurrent writers (`pgbench -c 8 -j 2 -T 5`, as bench/write_path.py): throughput / bare,
  median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics

import psycopg

from bench.common import bench_database
from bench.write_path import NARROW_DDL, WATCH, backend_cpu_ns, pgbench_script_tps

VALUES = "('acct' || (random() * 50)::int, 'proj' || (random() * 10)::int, 'task')"
APP_INSERT = "INSERT INTO {table} (account_id, project_id, title) VALUES " + VALUES
COLUMNS = "resource, statement, account_column, scope_columns, row_count, new_keys, new_rows"
OUTBOX_STMT = (
    "INSERT INTO {outbox} (" + COLUMNS + ") VALUES "
    "('floor', 'INSERT', 'account_id', '{{project_id}}', 1, '{{{key}}}', '{json}')"
)
OUTBOX_NO_JSON = (
    "INSERT INTO {outbox} (resource, statement, account_column, scope_columns, row_count, new_keys) "
    "VALUES ('floor', 'INSERT', 'account_id', '{{project_id}}', 1, '{{{key}}}')"
)
CTE = (
    "WITH t AS (" + APP_INSERT + " RETURNING *) "
    "INSERT INTO rowhook.changes (" + COLUMNS + ") "
    "SELECT 'floor', 'INSERT', 'account_id', '{{project_id}}', 1, ARRAY[t.id::text], json_agg(t)"
    " FROM t GROUP BY t.id"
)
# Copies of rowhook.changes (columns, defaults, identity, storage and compression), one per variant.
COPIES = {
    "copy": "CREATE TABLE floor.copy (LIKE rowhook.changes INCLUDING ALL)",
    "nopk": "CREATE TABLE floor.nopk (LIKE rowhook.changes INCLUDING ALL EXCLUDING INDEXES)",
    "cache": "CREATE TABLE floor.cache (LIKE rowhook.changes INCLUDING ALL);"
    " ALTER TABLE floor.cache ALTER COLUMN id SET CACHE 100",
    "nopk_cache": "CREATE TABLE floor.nopk_cache (LIKE rowhook.changes INCLUDING ALL EXCLUDING INDEXES);"
    " ALTER TABLE floor.nopk_cache ALTER COLUMN id SET CACHE 100",
    "unlogged": "CREATE UNLOGGED TABLE floor.unlogged (LIKE rowhook.changes INCLUDING ALL)",
    "minimal": "CREATE TABLE floor.minimal (n int)",
    # The same columns without identity, defaults, CHECK or index: every value given in the statement.
    "plain": "CREATE TABLE floor.plain (id bigint, txid xid8, occurred_at timestamptz, resource text,"
    " statement text, account_column text, scope_columns text[], row_count int, old_keys text[],"
    " old_rows json, new_keys text[], new_rows json)",
    "nocheck": "CREATE TABLE floor.nocheck (LIKE rowhook.changes INCLUDING ALL EXCLUDING CONSTRAINTS)",
}
# Hand-made triggers on copies of the app table, to split the trigger's cost.
OUTBOX_FROM_NEW = (
    "INSERT INTO rowhook.changes (" + COLUMNS + ") "
    "VALUES ('floor', 'INSERT', 'account_id', '{project_id}', 1, ARRAY[NEW.id::text], json_build_array(NEW))"
)
OUTBOX_FROM_TABLE = (
    "INSERT INTO rowhook.changes (" + COLUMNS + ") "
    "SELECT 'floor', 'INSERT', 'account_id', '{project_id}', count(*), array_agg(t.id::text), json_agg(t)"
    " FROM rowhook_new AS t"
)
HEAD = (
    "SELECT count(*) AS row_count, array_agg(c.k) AS keys, json_agg(c.v) AS rows"
    " FROM (SELECT t.id::text AS k, t AS v FROM rowhook_new AS t LIMIT 1000) AS c"
)
# The shipped INSERT branch (without the part for statements of more than 1,000 rows).
CURRENT = (
    "DECLARE captured integer; BEGIN IF TG_OP = 'INSERT' THEN WITH n AS (" + HEAD + "), written AS ("
    " INSERT INTO rowhook.changes (" + COLUMNS + ") SELECT 'floor', 'INSERT', 'account_id', '{project_id}',"
    " n.row_count, n.keys, n.rows FROM n WHERE n.row_count > 0) SELECT n.row_count INTO captured FROM n;"
    " END IF; {lock} RETURN NULL; END"
)
LOCK = "IF NOT pg_try_advisory_xact_lock_shared(1, 2) THEN PERFORM pg_notify('rowhook', ''); END IF;"
# No CTE: the aggregate inserted directly, nothing when the statement changed no row.
LEAN = (
    "DECLARE captured integer; BEGIN INSERT INTO rowhook.changes (" + COLUMNS + ") SELECT 'floor', 'INSERT',"
    " 'account_id', '{project_id}', n.row_count, n.keys, n.rows FROM ("
    + HEAD
    + ") AS n WHERE n.row_count > 0"
    " RETURNING row_count INTO captured; {lock} RETURN NULL; END"
)
TRIGGERS = {
    "trig_current": (
        CURRENT.replace("{lock}", LOCK),
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    "trig_current_nolock": (
        CURRENT.replace("{lock}", ""),
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    "trig_lean": (LEAN.replace("{lock}", LOCK), "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT"),
    "trig_lean_nolock": (
        LEAN.replace("{lock}", ""),
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    "trig_scan_row": (
        "BEGIN INSERT INTO rowhook.changes ("
        + COLUMNS
        + ") SELECT 'floor', 'INSERT', 'account_id', '{project_id}',"
        " 1, ARRAY[t.id::text], json_build_array(t) FROM rowhook_new AS t; RETURN NULL; END",
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    "trig_scan_count": (
        "BEGIN INSERT INTO rowhook.changes ("
        + COLUMNS
        + ") SELECT 'floor', 'INSERT', 'account_id', '{project_id}',"
        " count(*), NULL, NULL FROM rowhook_new AS t; RETURN NULL; END",
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    # No aggregate (ExecInitAgg builds its transition expressions at every executor start-up): ARRAY()
    # sublinks, the rows' json from the array of records, the row count from the array of keys.
    "trig_sublink": (
        "BEGIN INSERT INTO rowhook.changes ("
        + COLUMNS
        + ") SELECT 'floor', 'INSERT', 'account_id', '{project_id}',"
        " cardinality(c.keys), c.keys, array_to_json(c.rows)"
        " FROM (SELECT ARRAY(SELECT t.id::text FROM rowhook_new AS t LIMIT 1000) AS keys,"
        " ARRAY(SELECT t FROM rowhook_new AS t LIMIT 1000) AS rows) AS c"
        " WHERE cardinality(c.keys) > 0; RETURN NULL; END",
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    "trig_stmt_values": (
        "BEGIN " + OUTBOX_STMT.format(outbox="rowhook.changes", key="1", json="[]") + "; RETURN NULL; END",
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    "trig_empty_stmt": ("BEGIN RETURN NULL; END", "FOR EACH STATEMENT"),
    "trig_empty_stmt_tt": (
        "BEGIN RETURN NULL; END",
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
    "trig_empty_row": ("BEGIN RETURN NULL; END", "FOR EACH ROW"),
    "trig_row_insert": (f"BEGIN {OUTBOX_FROM_NEW}; RETURN NULL; END", "FOR EACH ROW"),
    "trig_stmt_insert": (
        f"BEGIN {OUTBOX_FROM_TABLE}; RETURN NULL; END",
        "REFERENCING NEW TABLE AS rowhook_new FOR EACH STATEMENT",
    ),
}
PLAIN_STMT = (
    "INSERT INTO floor.plain (id, txid, occurred_at, " + COLUMNS + ") VALUES "
    "(1, '1', '2026-11-30 00:00:00+00', 'floor', 'INSERT', 'account_id', '{{project_id}}', 1, '{{{key}}}',"
    " '{json}')"
)


def forms(json_literal: str, key: str) -> dict[str, tuple[str, ...]]:
    """Form name -> (app table, one transaction as one simple-protocol message)."""

    def stmt(table: str, outbox: str, template: str = OUTBOX_STMT) -> str:
        return (
            APP_INSERT.format(table=table) + "; " + template.format(outbox=outbox, key=key, json=json_literal)
        )

    result: dict[str, tuple[str, ...]] = {
        "bare": ("bare_narrow", APP_INSERT.format(table="bare_narrow")),
        "trigger": ("watched_narrow", APP_INSERT.format(table="watched_narrow")),
        "stmt": ("app_stmt", stmt("app_stmt", "rowhook.changes")),
        "cte": ("app_cte", CTE.format(table="app_cte")),
        "stmt_no_json": ("app_no_json", stmt("app_no_json", "rowhook.changes", OUTBOX_NO_JSON)),
        "minimal": (
            "app_minimal",
            APP_INSERT.format(table="app_minimal") + "; INSERT INTO floor.minimal VALUES (1)",
        ),
    }
    result["stmt_plain"] = ("app_plain", stmt("app_plain", "floor.plain", PLAIN_STMT))
    # Prepared forms: no parse or plan per transaction, as the trigger's cached SPI plan.
    for name in ("bare", "trigger", "stmt", "stmt_no_json", "minimal", "stmt_plain"):
        table, sql = result[name]
        names = [f"s{i}" for i, _ in enumerate(sql.split("; "))]
        setup = "; ".join(f"PREPARE {n} AS {part}" for n, part in zip(names, sql.split("; "), strict=True))
        result[f"{name}_prepared"] = (table, "; ".join(f"EXECUTE {n}" for n in names), setup)
    for trigger in TRIGGERS:
        result[trigger] = (f"app_{trigger}", APP_INSERT.format(table=f"app_{trigger}"))
    for copy in COPIES:
        if copy not in ("minimal", "plain"):
            result[f"stmt_{copy}"] = (f"app_{copy}", stmt(f"app_{copy}", f"floor.{copy}"))
    return result


def prepare(url: str) -> dict[str, tuple[str, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA floor")
        for ddl in COPIES.values():
            conn.execute(ddl)  # type: ignore[arg-type]
        conn.execute(NARROW_DDL.format(name="watched_narrow"))  # type: ignore[arg-type]
        conn.execute(WATCH.format(table="watched_narrow"))  # type: ignore[arg-type]
        # The json the trigger writes for one row, to write a literal of the same size.
        conn.execute(APP_INSERT.format(table="watched_narrow"))  # type: ignore[arg-type]
        row = conn.execute("SELECT new_keys[1], new_rows::text FROM rowhook.changes").fetchone()
        assert row
        key, json_literal = row
        all_forms = forms(json_literal, key)
        for table in {form[0] for form in all_forms.values()}:
            if table != "watched_narrow":
                conn.execute(NARROW_DDL.format(name=table))  # type: ignore[arg-type]
        for trigger, (body, kind) in TRIGGERS.items():
            conn.execute(
                f"CREATE FUNCTION floor.{trigger}() RETURNS trigger LANGUAGE plpgsql AS $f$ {body} $f$"  # type: ignore[arg-type]
            )
            conn.execute(
                f"CREATE TRIGGER t AFTER INSERT ON app_{trigger} {kind} EXECUTE FUNCTION floor.{trigger}()"  # type: ignore[arg-type]
            )
    return all_forms


def reset(url: str, all_forms: dict[str, tuple[str, ...]]) -> None:
    tables = sorted({form[0] for form in all_forms.values()})
    tables += ["rowhook.changes", "rowhook.outbox"] + [f"floor.{c}" for c in COPIES]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT rowhook.unwatch('watched_narrow')")
        conn.execute(f"TRUNCATE {', '.join(tables)}")  # type: ignore[arg-type]
        conn.execute(WATCH.format(table="watched_narrow"))  # type: ignore[arg-type]
        conn.execute(f"VACUUM ANALYZE {', '.join(tables)}")  # type: ignore[arg-type]


def cpu_per_transaction(
    url: str, all_forms: dict[str, tuple[str, ...]], batches: int, batch: int
) -> dict[str, list[float]]:
    """Backend CPU µs per transaction of each batch, forms interleaved, one connection per form."""
    conns = {name: psycopg.connect(url, autocommit=True) for name in all_forms}
    try:
        pids = {}
        for name, conn in conns.items():
            if len(all_forms[name]) > 2:
                conn.execute(all_forms[name][2])  # type: ignore[arg-type]
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            pids[name] = row[0] if row else 0
        per_tx: dict[str, list[float]] = {name: [] for name in all_forms}
        for round_ in range(batches + 1):
            for name, form in all_forms.items():
                sql = form[1]
                pgconn = conns[name].pgconn
                query = sql.encode()
                before = backend_cpu_ns(pids[name])
                for _ in range(batch):
                    # Simple protocol, one message per transaction: several statements run as one
                    # implicit transaction, as pgbench's `\;` sends them.
                    pgconn.send_query(query)
                    while (result := pgconn.get_result()) is not None:
                        if result.status not in (1, 2):  # COMMAND_OK, TUPLES_OK
                            raise RuntimeError(result.error_message.decode())
                after = backend_cpu_ns(pids[name])
                if round_ and before is not None and after is not None:  # round 0 warms up
                    per_tx[name].append((after - before) / batch / 1000)
        return per_tx
    finally:
        for conn in conns.values():
            conn.close()


def pgbench_tps(url: str, sql: str, seconds: int) -> float:
    return pgbench_script_tps(url, sql.replace("; ", " \\; ") + ";\n", seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="smallest sizes, for CI")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="pgbench rounds")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--pgbench", default="bare,trigger,stmt,cte,trig_row_insert")
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument(
        "--forms", default="", help="comma-separated forms for the CPU measurement (default all)"
    )
    args = parser.parse_args()
    if args.tiny:
        args.batches, args.batch, args.rounds, args.seconds = 2, 5, 1, 1

    with bench_database() as url:
        all_forms = prepare(url)
        with psycopg.connect(url) as conn:
            version = conn.info.server_version
        print(f"server {version}, {len(all_forms)} forms")
        if not args.no_cpu:
            reset(url, all_forms)
            measured = args.forms.split(",") if args.forms else list(all_forms)
            chosen_forms = {name: all_forms[name] for name in ["bare", *measured] if name in all_forms}
            per_tx = cpu_per_transaction(url, chosen_forms, args.batches, args.batch)
            if all(per_tx.values()):
                bare_min = min(per_tx["bare"])
                bare_med = statistics.median(per_tx["bare"])
                print(f"backend CPU per transaction, µs ({args.batches} batches of {args.batch}):")
                print(f"  {'form':18} {'min':>7} {'median':>7} {'min-bare':>9} {'min/bare':>9}")
                for name, values in per_tx.items():
                    low = min(values)
                    print(
                        f"  {name:18} {low:7.1f} {statistics.median(values):7.1f}"
                        f" {low - bare_min:9.1f} {low / bare_min:9.2f}"
                    )
                print(f"  (bare median {bare_med:.1f})")
        chosen = [name for name in args.pgbench.split(",") if name]
        ratios: dict[str, list[float]] = {name: [] for name in chosen if name != "bare"}
        tps: dict[str, list[float]] = {name: [] for name in chosen}
        # Each form right after its own bare run (a pair), pairs in turn: the load other work puts on a
        # shared machine moves within seconds, so only adjacent runs compare.
        for _ in range(args.rounds):
            for name in chosen:
                if name == "bare":
                    continue
                for form in ("bare", name):
                    reset(url, all_forms)
                    tps[form].append(pgbench_tps(url, all_forms[form][1], args.seconds))
                ratios[name].append(tps[name][-1] / tps["bare"][-1])
        print(f"pgbench -c 8 -j 2 -T {args.seconds}, {args.rounds} rounds of pairs: median tps, median ratio")
        for name in chosen:
            line = f"  {name:18} {statistics.median(tps[name]):8.0f}"
            if ratios.get(name):
                each = ", ".join(f"{r:.2f}" for r in ratios[name])
                line += f" {statistics.median(ratios[name]):6.2f}  ({each})"
            print(line)
        # The one JSON line every benchmark ends with (`python -m bench` reads it); no goal of its own.
        figures = {f"{name}_ratio": statistics.median(values) for name, values in ratios.items() if values}
        size = "tiny" if args.tiny else "full"
        print(json.dumps({"benchmark": "write_path_floor", "size": size, "met": None, **figures}))


if __name__ == "__main__":
    main()
